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
    """A stage name for tables and plots.

    Args:
        name: The stage's full name.

    Returns:
        The name with local model folders shortened to their last part (the full name stays in ``to_dict``).
    """
    return _LOCAL_PATH.sub(r"\1", name)


@dataclass
class StageReport:
    """One stage's quality and cost.

    Attributes:
        name: The stage's name (recall kind, or reranker name and ``keep``).
        metrics: Display name -> mean over the queries (see :func:`compute_metrics`).
        seconds: This stage's total over all queries.
        n_queries: Queries run.
        mean_in: Mean hits the stage got per query.
        mean_out: Mean hits it kept per query.
        cumulative_seconds: Total over all queries of every stage up to and including this one.
    """

    name: str
    metrics: dict[str, float]
    seconds: float
    n_queries: int
    mean_in: float
    mean_out: float
    cumulative_seconds: float

    @property
    def ms_per_query(self) -> float:
        """This stage's mean milliseconds per query."""
        return 1000 * self.seconds / max(self.n_queries, 1)

    @property
    def qps(self) -> float:
        """Queries per second of this stage alone."""
        return self.n_queries / self.seconds if self.seconds else float("inf")

    @property
    def cumulative_qps(self) -> float:
        """Queries per second of every stage up to this one (what a user of the pipeline would see)."""
        return self.n_queries / self.cumulative_seconds if self.cumulative_seconds else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict.

        Returns:
            Every field, plus ``ms_per_query``, ``qps`` and ``cumulative_qps``.
        """
        out = asdict(self)
        out.update(ms_per_query=self.ms_per_query, qps=self.qps, cumulative_qps=self.cumulative_qps)
        return out


@dataclass
class EvalReport:
    """Everything ``twostage eval`` prints: the configuration and one :class:`StageReport` per stage.

    Attributes:
        dataset: The dataset's name.
        split: The qrels split.
        recall: The recall's name.
        limit: Candidates recalled per query.
        top_k: The cut-off of the @k metrics.
        n_queries: Queries run.
        n_docs: Documents in the corpus.
        embedding_model: The query embedder's name (``""`` for recalls that embed nothing).
        stages: Recall first, then each rerank stage.
        index_seconds: Seconds spent indexing (or loading the cached index).
        config: Other settings (``rrf_k``, ``candidates_per_arm``, the reranker's name).
        scores: The final scores' kind, ECE/Brier (before/after a calibration) and a ``min_score``'s effect.
    """

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
    scores: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``twostage eval --json`` writes).

        Returns:
            Every field, with each stage as :meth:`StageReport.to_dict`.
        """
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
    """Plot quality and latency versus ``limit``.

    Args:
        reports: One report per limit (see :func:`~twostage_integrations.evaluation.evaluate_limits`).
        path: The image file; its suffix picks the format (PNG, SVG, PDF).
        metric: The quality metric on the left axis; default ``nDCG@<top_k>``. The right axis is the last
            stage's end-to-end ms/query.

    Returns:
        ``path``.

    Raises:
        InvalidParameterError: If ``reports`` is empty.
    """
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
