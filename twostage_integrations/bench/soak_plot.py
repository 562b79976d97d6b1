"""The RSS-vs-requests chart of ``twostage bench-serve --soak`` (``--plot``, ``--compare``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import InvalidParameterError, MissingDependencyError
from .soak import BASELINE_AT, MIB, SoakReport


def plot_soak(reports: Sequence[SoakReport], path: str | os.PathLike[str]) -> Path:
    """Server RSS (MiB) against completed requests, one line per report, with each one's +10% band edge.

    Args:
        reports: One or more soak reports (e.g. the ONNX and the torch engine).
        path: Image file (PNG, SVG or PDF by its suffix).

    Returns:
        The path written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidParameterError: No reports.
    """
    if not reports:
        raise InvalidParameterError("plot_soak needs at least one report")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("plotting needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(8, 4.5 + 0.25 * len(reports)))
    for report in reports:
        xs = [n for n, _ in report.samples]
        line = ax.plot(xs, [rss / MIB for _, rss in report.samples], label=report.legend)
        if report.rss_baseline:
            ax.axhline(report.rss_baseline * 1.1 / MIB, color=line[0].get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("completed requests")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_ylim(bottom=0)
    first = reports[0]
    ax.set_title(f"twostage serve under load: {first.documents} documents/request; dotted: RSS@{BASELINE_AT} + 10%")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize="small")  # below: never over a line
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
