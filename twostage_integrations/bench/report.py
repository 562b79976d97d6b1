"""What ``twostage bench`` measured: per-system results, the report, its JSON and its bar chart."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .machine import flops
from .systems import NATIVE, REFERENCE


@dataclass
class SystemResult:
    """Timings and top-k ids of one system. ``latencies_ms`` has ``repeat`` entries per query;
    ``recall_ms``/``rerank_ms`` (our pipeline only) the stage split of the same calls."""

    name: str
    description: str
    rerank_max_length: int | None = None
    latencies_ms: list[float] = field(default_factory=list)
    recall_ms: list[float] = field(default_factory=list)
    rerank_ms: list[float] = field(default_factory=list)
    top_ids: list[list[str]] = field(default_factory=list)
    agreement: float | None = None
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    backend: str | None = None  # our cross-encoder engine; None for the native stacks
    pairs: int = 0  # (query, passage) pairs reranked in the timed calls
    truncated: int | None = None  # of those, pairs cut at the token limit (our engines count; natives do not)
    tokens: int | None = None  # real (unpadded) tokens of the pairs, for the FLOP estimate
    engine_s: float | None = None  # seconds inside our engine (tokenising + forward passes)
    # twostage-cascade only: each stage's model and keep, and its seconds per call (ms, one list per stage)
    cascade: list[dict[str, Any]] = field(default_factory=list)
    cascade_ms: list[list[float]] = field(default_factory=list)
    model_shape: dict[str, int] | None = None  # None: the report's (the reference cross-encoder's)
    # The preset table (run_preset_benchmark): what ran the rerank, the row's spec, why a peer did not run
    # (then nothing was timed), and the share of queries whose top-k SET equals the reference row's.
    engine: str | None = None
    spec: str | None = None
    unavailable: str | None = None
    same_set: float | None = None

    @property
    def ran(self) -> bool:
        """Whether the system was timed (a peer that is not installed was not)."""
        return self.unavailable is None and bool(self.latencies_ms)

    @property
    def pairs_per_s(self) -> float:
        """Reranked pairs per second of end-to-end query time (recall included, so every stack is comparable)."""
        return self.pairs / (float(np.sum(self.latencies_ms)) / 1000.0)

    @property
    def median_ms(self) -> float:
        """Median end-to-end latency per query."""
        return float(np.median(self.latencies_ms))

    @property
    def p95_ms(self) -> float:
        """95th-percentile end-to-end latency per query."""
        return float(np.percentile(self.latencies_ms, 95))

    @property
    def queries_per_s(self) -> float:
        """Queries per second of end-to-end time, one at a time."""
        return 1000.0 * len(self.latencies_ms) / float(np.sum(self.latencies_ms))

    @property
    def p50_ms(self) -> float:
        """Same as :attr:`median_ms`."""
        return self.median_ms

    def stage_medians_ms(self) -> dict[str, float] | None:
        """Median ms of recall and rerank; for ``twostage-cascade`` also of each stage (``rerank 1``, ...).

        Returns:
            The medians by stage, or None for a system without our stage split (the native stacks).
        """
        if not self.recall_ms:
            return None
        out = {"recall": float(np.median(self.recall_ms)), "rerank": float(np.median(self.rerank_ms))}
        out.update({f"rerank {i}": float(np.median(ms)) for i, ms in enumerate(self.cascade_ms, 1) if ms})
        return out


@dataclass
class BenchReport:
    """What :func:`~twostage_integrations.bench.run_benchmark` measured at one limit; ``to_dict()`` is what
    ``twostage bench --json`` writes."""

    dataset: str
    n_docs: int
    n_queries: int
    limit: int
    top_k: int
    repeat: int
    warmup: int
    embedding_model: str
    rerank_model: str
    build_s: float
    systems: list[SystemResult]
    machine: dict[str, Any] = field(default_factory=dict)
    rerank_backend: str | None = None  # the engine of the ``twostage`` reference
    model_shape: dict[str, int] = field(default_factory=dict)  # layers, hidden, intermediate (for FLOPs)
    # Serve throughput (8 concurrent clients, batching on/off) from bench/serve.py's
    # run_serve_benchmark(...), attached by whoever runs it; printed under the table when set.
    serve: dict[str, Any] | None = None
    reference: str = REFERENCE  # the system whose top-k the others are compared with (``exact`` in a preset table)

    def gflops(self, s: SystemResult) -> float | None:
        """Achieved GFLOP/s of ``s``'s cross-encoder: useful FLOPs (unpadded tokens) over engine seconds.

        Args:
            s: One of this report's systems.

        Returns:
            The GFLOP/s, or None without our engine's counts or for a cascade whose models differ in shape
            (one estimate cannot cover them).
        """
        shape = self.model_shape if s.model_shape is None else s.model_shape
        if not s.tokens or not s.engine_s or not shape:
            return None
        return flops(shape, s.tokens, s.pairs) / s.engine_s / 1e9

    def peak_share(self, s: SystemResult) -> float | None:
        """:meth:`gflops` over this machine's measured fp32 matmul peak (int8 can exceed 1); None if unknown."""
        g, peak = self.gflops(s), self.machine.get("matmul_peak_gflops")
        return g / peak if g is not None and peak else None

    def system(self, name: str) -> SystemResult:
        """The result of system ``name``.

        Raises:
            KeyError: ``name`` was not run.
        """
        for s in self.systems:
            if s.name == name:
                return s
        raise KeyError(name)

    def ratio(self, name: str, baseline: str) -> float | None:
        """``name``'s median latency over ``baseline``'s (below 1: faster); None if either was not run."""
        names = {s.name for s in self.systems if s.ran}
        if name not in names or baseline not in names:
            return None
        return self.system(name).median_ms / self.system(baseline).median_ms

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready: the report's fields plus, per system, its summary and raw latencies."""
        out = {k: v for k, v in asdict(self).items() if k != "systems"}
        out["systems"] = [self._system_dict(s) for s in self.systems]
        return out

    def _system_dict(self, s: SystemResult) -> dict[str, Any]:
        if not s.ran:  # not installed (a peer): no numbers, the reason instead
            return {"name": s.name, "description": s.description, "engine": s.engine, "unavailable": s.unavailable}
        return {
            "name": s.name,
            "description": s.description,
            "rerank_max_length": s.rerank_max_length,
            "median_ms": s.median_ms,
            "p95_ms": s.p95_ms,
            "queries_per_s": s.queries_per_s,
            "stage_median_ms": s.stage_medians_ms(),
            "cascade": s.cascade or None,
            "ratio_vs": {b: self.ratio(s.name, b) for b in dict.fromkeys((self.reference, *NATIVE))},
            "agreement": s.agreement,
            "same_set": s.same_set,
            "engine": s.engine,
            "spec": s.spec,
            "mismatches": s.mismatches,
            "backend": s.backend,
            "pairs": s.pairs,
            "pairs_per_s": s.pairs_per_s,
            "truncated": s.truncated,
            "gflops": self.gflops(s),
            "peak_share": self.peak_share(s),
            "latencies_ms": s.latencies_ms,
            "top_ids": s.top_ids,
        }


def write_json(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Write :meth:`BenchReport.to_dict` as indented JSON.

    Args:
        report: The report to write.
        path: The file to (over)write.

    Returns:
        The path written.
    """
    out = Path(path)
    out.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return out


def plot_report(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Median (bar) and p95 (whisker) ms per query for each system; our stage split stacked.

    Args:
        report: The report to draw.
        path: Where to save it; the suffix picks the format (PNG, SVG or PDF).

    Returns:
        The path written.

    Raises:
        ImportError: matplotlib is not installed (it comes with the ``bench`` extra).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [s for s in report.systems if s.ran]  # a peer that is not installed has no bar
    names = [s.name for s in timed]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.6))
    for y, s in enumerate(timed):
        stages = s.stage_medians_ms()
        if stages:  # recall and rerank medians stacked; the rest of the median is adapter/framework overhead
            ax.barh(y, stages["recall"], color="tab:blue", label="recall" if y == 0 else None)
            ax.barh(y, stages["rerank"], left=stages["recall"], color="tab:orange", label="rerank" if y == 0 else None)
            rest = max(0.0, s.median_ms - stages["recall"] - stages["rerank"])
            ax.barh(y, rest, left=stages["recall"] + stages["rerank"], color="tab:gray")
        else:
            ax.barh(y, s.median_ms, color="tab:green" if s.name in NATIVE else "tab:gray")
        ax.errorbar(s.p95_ms, y, fmt="|", color="black", markersize=12)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("ms per query (bar: median; tick: p95)")
    ax.set_title(
        f"{report.dataset}: {report.n_queries} queries, {report.n_docs} docs, limit {report.limit}, "
        f"top_k {report.top_k}",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
