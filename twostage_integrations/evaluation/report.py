"""What an evaluation returns: per-stage metrics and timings, as a table, a dict, or a plot."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError

# An absolute or ./ ../ ~ path inside a stage name ("/models/minilm-ce+rrf(0.9)"); hub ids are left alone.
_LOCAL_PATH = re.compile(r"(?<![\w.-])(?:~|\.{1,2})?/(?:[^\s/]+/)*([^\s/+→\[\]]+)")


def display_name(name: str) -> str:
    """A stage name for tables and plots: local model folders shortened to their last part (the full
    name stays in ``to_dict``)."""
    return _LOCAL_PATH.sub(r"\1", name)


@dataclass
class StageReport:
    """One stage's quality and cost. ``seconds`` is the total over all queries; ``qps`` counts this stage
    alone, ``cumulative_qps`` everything up to and including it (what a user of the pipeline would see)."""

    name: str
    metrics: dict[str, float]
    seconds: float
    n_queries: int
    mean_in: float
    mean_out: float
    cumulative_seconds: float

    @property
    def ms_per_query(self) -> float:
        return 1000 * self.seconds / max(self.n_queries, 1)

    @property
    def qps(self) -> float:
        return self.n_queries / self.seconds if self.seconds else float("inf")

    @property
    def cumulative_qps(self) -> float:
        return self.n_queries / self.cumulative_seconds if self.cumulative_seconds else float("inf")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ms_per_query=self.ms_per_query, qps=self.qps, cumulative_qps=self.cumulative_qps)
        return out


@dataclass
class EvalReport:
    """Everything ``twostage eval`` prints: the configuration and one :class:`StageReport` per stage."""

    dataset: str
    split: str
    recall: str
    limit: int
    top_k: int
    n_queries: int
    n_docs: int
    embedding_model: str
    stages: list[StageReport] = field(default_factory=list)
    index_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "stages"}
        out["stages"] = [s.to_dict() for s in self.stages]
        return out

    def table(self):
        """A rich ``Table`` of the stages (rows) by metrics and timings (columns)."""
        from rich.table import Table

        table = Table(
            title=f"{self.dataset} ({self.split}, {self.n_queries} queries, {self.n_docs} docs), recall={self.recall}, "
            f"limit={self.limit}",
            title_justify="left",
        )
        table.add_column("stage")
        table.add_column("kept", justify="right")
        names = list(self.stages[0].metrics) if self.stages else []
        for name in names:
            table.add_column(name, justify="right")
        table.add_column("ms/query", justify="right")
        table.add_column("queries/s (cum.)", justify="right")
        for s in self.stages:
            table.add_row(
                display_name(s.name),
                f"{s.mean_out:.0f}",
                *(f"{s.metrics[n]:.3f}" for n in names),
                f"{s.ms_per_query:.1f}",
                f"{s.cumulative_qps:.1f}",
            )
        return table


def plot_limits(reports: Sequence[EvalReport], path: str | os.PathLike[str], *, metric: str | None = None) -> Path:
    """nDCG@k (left axis) and end-to-end ms/query (right axis) of the last stage versus ``limit``; PNG/SVG/PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not reports:
        raise InvalidParameterError("nothing to plot: pass at least one report")
    metric = metric or f"nDCG@{reports[0].top_k}"
    limits = [r.limit for r in reports]
    quality = [r.stages[-1].metrics[metric] for r in reports]
    latency = [1000 * r.stages[-1].cumulative_seconds / r.n_queries for r in reports]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(limits, quality, "o-", color="tab:blue", label=metric)
    ax.set_xlabel("limit (candidates recalled)")
    ax.set_ylabel(metric, color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(limits, latency, "s--", color="tab:red", label="ms/query")
    ax2.set_ylabel("ms per query (all stages)", color="tab:red")
    r0 = reports[0]
    ax.set_title(f"{r0.dataset} {r0.split}: recall={r0.recall}, {display_name(r0.stages[-1].name)}", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
