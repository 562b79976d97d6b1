"""Speed benchmarks (``twostage bench`` and ``twostage bench-serve``).

This package sits above the adapters and the server it measures: it builds our pipeline and the native
LangChain and LlamaIndex stacks (:mod:`.systems`, :mod:`.native`), times them (:mod:`.run`; one row per pipeline
spec next to sentence-transformers' own backends: :mod:`.preset_run`, :mod:`.specs`, :mod:`.peers`) and starts the
rerank server (:mod:`.serve`), so the evaluation package (quality metrics) never has to import them.

>>> from twostage_integrations.bench import run_benchmark
>>> report = run_benchmark(max_queries=10, rerank_model="path/to/cross-encoder")  # doctest: +SKIP
"""

from .built import BuiltSystem
from .data import BenchData, build_collection, load_bench_data
from .machine import PACKAGES, flops, machine_info, matmul_peak_gflops, model_shape
from .peers import PEERS, peer_unavailable
from .preset_run import PRESET_SYSTEMS, check_preset_systems, run_preset_benchmark
from .report import BenchReport, SystemResult, plot_report, write_json
from .run import run_benchmark, run_benchmarks
from .serve import ServeBenchReport, ServeModeResult, run_serve_benchmark
from .soak import SoakReport, read_soak_json, run_soak, run_soak_benchmark, write_soak_json
from .soak_plot import plot_soak
from .specs import REFERENCE_PRESET, SpecRow, default_spec, engine_label, spec_label, spec_rows
from .systems import (
    CASCADE,
    ENGINE_SYSTEMS,
    NATIVE,
    REFERENCE,
    SYSTEMS,
    StageArg,
    check_stages,
    check_systems,
    make_systems,
)

__all__ = [
    "CASCADE",
    "ENGINE_SYSTEMS",
    "NATIVE",
    "PACKAGES",
    "PEERS",
    "PRESET_SYSTEMS",
    "REFERENCE",
    "REFERENCE_PRESET",
    "SYSTEMS",
    "BenchData",
    "BenchReport",
    "BuiltSystem",
    "ServeBenchReport",
    "ServeModeResult",
    "SpecRow",
    "SoakReport",
    "StageArg",
    "SystemResult",
    "build_collection",
    "check_preset_systems",
    "check_stages",
    "check_systems",
    "default_spec",
    "engine_label",
    "flops",
    "load_bench_data",
    "machine_info",
    "make_systems",
    "matmul_peak_gflops",
    "model_shape",
    "peer_unavailable",
    "plot_report",
    "plot_soak",
    "read_soak_json",
    "run_benchmark",
    "run_benchmarks",
    "run_preset_benchmark",
    "run_serve_benchmark",
    "spec_label",
    "spec_rows",
    "run_soak",
    "run_soak_benchmark",
    "write_json",
    "write_soak_json",
]
