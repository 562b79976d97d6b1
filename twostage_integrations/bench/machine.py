"""What ``twostage bench`` prints next to its numbers: the machine, its matmul peak, and the FLOPs of a
cross-encoder's forward passes (for "achieved GFLOP/s")."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from ..rerank.cross_encoder import CrossEncoderReranker

PACKAGES = (
    "torch",
    "onnxruntime",
    "sentence-transformers",
    "chromadb",
    "langchain-core",
    "langchain-chroma",
    "langchain-classic",
    "langchain-community",
    "llama-index-core",
    "llama-index-vector-stores-chroma",
    "optimum",  # the sentence-transformers peers' backends (see bench/peers.py)
    "optimum-onnx",
    "optimum-intel",
    "openvino",
    "nncf",
)


def matmul_peak_gflops(n: int = 1024, repeat: int = 8) -> float:
    """This machine's fp32 matmul throughput, the yardstick for "achieved GFLOP/s" of the cross-encoders.

    Args:
        n: Side of the square matrices.
        repeat: Timed products; the best one counts (BLAS, all cores).

    Returns:
        GFLOP/s of the fastest n×n product.
    """
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b  # warm the BLAS threads
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def model_shape(reranker: CrossEncoderReranker) -> dict[str, int]:
    """Layers, hidden and intermediate size of a BERT-style cross-encoder (from its config.json).

    Args:
        reranker: A loaded cross-encoder (ONNX: read from its folder; torch: from the loaded config).

    Returns:
        ``{"layers": ..., "hidden": ..., "intermediate": ...}``, or ``{}`` when the config lacks one of them.
    """
    from ..rerank.onnx import _read_json

    folder = getattr(reranker.model, "model_dir", None)  # the ONNX engine; torch: the loaded transformers config
    config = _read_json(Path(folder) / "config.json") if folder else reranker.model.model.config.to_dict()
    keys = {"layers": "num_hidden_layers", "hidden": "hidden_size", "intermediate": "intermediate_size"}
    if not all(config.get(v) for v in keys.values()):
        return {}
    return {k: int(config[v]) for k, v in keys.items()}


def flops(shape: dict[str, int], tokens: int, pairs: int) -> float:
    """FLOPs of BERT-style forward passes: 2 × weights × tokens for the dense layers, plus 4 × hidden × n² per
    layer for attention (QKᵀ and AV), n ≈ tokens/pairs.

    Args:
        shape: ``layers``, ``hidden`` and ``intermediate`` (see :func:`model_shape`).
        tokens: Real (unpadded) tokens over all sequences.
        pairs: Sequences (query, passage pairs).

    Returns:
        The estimated floating-point operations.

    Raises:
        KeyError: ``shape`` lacks one of its three sizes.
    """
    h, i, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    dense = layers * (4 * h * h + 2 * h * i) + h * h  # attention projections, FFN, pooler
    n = tokens / max(pairs, 1)
    return 2.0 * dense * tokens + 4.0 * layers * h * n * n * pairs


def cpu_model_and_cores(lscpu: str | None = None) -> tuple[str | None, int | None]:
    """The CPU model name and physical core count, as ``lscpu`` prints them.

    Args:
        lscpu: ``lscpu``'s output (default: run it; where there is no lscpu, ``/proc/cpuinfo`` and
            :func:`platform.processor` stand in).

    Returns:
        ``(model name, cores)``; either None when unknown.
    """
    if lscpu is None:
        import subprocess

        try:
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            lscpu = ""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lscpu.splitlines()) if v}
    model = fields.get("Model name")
    if model is None:  # no lscpu: /proc/cpuinfo (Linux), else whatever platform knows
        cpuinfo = Path("/proc/cpuinfo")
        text = cpuinfo.read_text(encoding="utf-8", errors="replace") if cpuinfo.is_file() else ""
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        model = names[0] if names else (platform.processor() or None)
    try:
        cores = int(fields["Core(s) per socket"]) * int(fields.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        cores = None
    return model, cores


def load_average() -> list[float] | None:
    """The 1/5/15-minute load average, None where the platform has none (Windows)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info() -> dict[str, Any]:
    """CPU, threads, load, matmul peak and library versions, to print next to the numbers.

    Returns:
        ``cpu_model`` and ``cores`` (see :func:`cpu_model_and_cores`), ``platform``, ``processor``,
        ``cpu_count``, ``torch_threads``, ``cuda``, ``python``, ``load_avg_start``,
        ``matmul_peak_gflops`` and ``versions`` (of :data:`PACKAGES`, None when not installed).
    """
    import torch

    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    cpu_model, cores = cpu_model_and_cores()
    return {
        "cpu_model": cpu_model,
        "cores": cores,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
        "load_avg_start": load_average(),
        "matmul_peak_gflops": matmul_peak_gflops(),
        "versions": versions,
    }
