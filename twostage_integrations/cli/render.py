"""Rich tables for hits."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from ..hit import Hit


def snippet(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def hits_table(hits: Sequence[Hit], *, title: str = "", width: int = 90) -> Table:
    """rank, score, recall rank → rerank rank, id, snippet."""
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("recall → rerank", justify="center")
    table.add_column("id", overflow="fold", max_width=24)
    table.add_column("snippet")
    for rank, h in enumerate(hits, start=1):
        moved = f"{h.recall_rank} → {h.rerank_rank}" if h.rerank_rank is not None else f"{h.recall_rank}"
        table.add_row(str(rank), f"{h.score:.3f}", moved, h.id, snippet(h.text, width))
    return table
