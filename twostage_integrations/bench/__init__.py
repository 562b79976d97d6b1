"""Speed benchmarks (``twostage bench`` and ``twostage bench-serve``).

This package sits above the adapters and the server it measures: it builds the native LangChain and
LlamaIndex stacks next to ours (:mod:`.run`) and starts the rerank server (:mod:`.serve`), so the
evaluation package (quality metrics) never has to import them.

>>> from twostage_integrations.bench import run_benchmark
>>> report = run_benchmark(max_queries=10, rerank_model="path/to/cross-encoder")  # doctest: +SKIP
"""

from .run import (
    CASCADE,
    ENGINE_SYSTEMS,
    NATIVE,
    REFERENCE,
    SYSTEMS,
    BenchData,
    BenchReport,
    StageArg,
    SystemResult,
    build_collection,
    check_stages,
    check_systems,
    flops,
    load_bench_data,
    machine_info,
    make_systems,
    matmul_peak_gflops,
    model_shape,
    plot_report,
    run_benchmark,
    run_benchmarks,
    write_json,
)
from .serve import ServeBenchReport, ServeModeResult, run_serve_benchmark

__all__ = [
    "CASCADE",
    "ENGINE_SYSTEMS",
    "NATIVE",
    "REFERENCE",
    "SYSTEMS",
    "BenchData",
    "BenchReport",
    "ServeBenchReport",
    "ServeModeResult",
    "StageArg",
    "SystemResult",
    "build_collection",
    "check_stages",
    "check_systems",
    "flops",
    "load_bench_data",
    "machine_info",
    "make_systems",
    "matmul_peak_gflops",
    "model_shape",
    "plot_report",
    "run_benchmark",
    "run_benchmarks",
    "run_serve_benchmark",
    "write_json",
]
