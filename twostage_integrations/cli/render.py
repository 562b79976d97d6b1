"""Rich tables for hits."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from ..hit import Hit

#: From this console width on, the table also shows the passage id; below it the source takes its place.
WIDE = 120


def snippet(text: str, width: int = 90) -> str:
    """``text`` on one line, cut to ``width`` characters with a trailing ``…``."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def hit_source(hit: Hit, width: int = 40) -> str | None:
    """Where a hit came from, in at most ``width`` characters: the file `twostage ingest` read it from with its
    location (``notes/aspirin.md #2`` for the third passage of a text file, ``rows.jsonl:12`` for a JSONL line),
    else a ``title``; None when the metadata has neither.

    A long path loses its leading folders, never its file name: ``…/notes/aspirin.md``.

    Args:
        hit: a hit whose metadata may hold ``source``/``filename`` (with ``passage`` or ``line``) or ``title``.
        width: the most characters the label may take.

    Returns:
        The label, or None.
    """
    meta = hit.metadata
    path = meta.get("source") or meta.get("filename")
    if not path:
        title = meta.get("title")
        return snippet(str(title), width) if title else None
    if "line" in meta:  # JSONL: a real line number, written like grep's file:line
        where = f":{meta['line']}"
    elif "passage" in meta:  # .txt/.md: the 0-based passage index, as stored (filterable as {"passage": N})
        where = f" #{meta['passage']}"
    else:
        where = ""
    room = max(width - len(where), 1)
    path = str(path)
    if len(path) > room:
        tail = path[-(room - 1) :] if room > 1 else ""
        sep = re.search(r"[/\\]", tail)  # start at a folder boundary when one is in sight
        path = "…" + (tail[sep.start() :] if sep else tail)
    return path + where


def hits_table(hits: Sequence[Hit], *, title: str = "", width: int = 90, console_width: int | None = None) -> Table:
    """rank, score, recall rank → rerank rank, source, id and snippet of each hit.

    Args:
        hits: the hits, best first.
        title: printed above the table.
        width: characters of passage text shown per hit.
        console_width: the terminal's width; below :data:`WIDE` the id column is dropped (the source says more
            and the snippet keeps its room). None means wide.

    Returns:
        A rich ``Table``; a hit without source metadata shows its id in the source column.
    """
    wide = console_width is None or console_width >= WIDE
    sources = [hit_source(h, 40 if wide else 22) for h in hits]
    has_source = any(sources)
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("rank" if wide else "#", justify="right")
    table.add_column("score", justify="right")
    # narrow: the header wraps to "recall →" / "rerank" instead of taking 15 columns
    table.add_column("recall → rerank", justify="center", max_width=None if wide else 8)
    if has_source:
        table.add_column("source", overflow="fold", max_width=40 if wide else 22)
    if wide or not has_source:
        table.add_column("id", overflow="fold", max_width=24)
    table.add_column("snippet", min_width=None if wide else 28)
    for rank, (h, source) in enumerate(zip(hits, sources, strict=True), start=1):
        moved = f"{h.recall_rank} → {h.rerank_rank}" if h.rerank_rank is not None else f"{h.recall_rank}"
        row = [str(rank), f"{h.score:.3f}", moved]
        if has_source:
            row.append(source or h.id)
        if wide or not has_source:
            row.append(h.id)
        table.add_row(*row, evidence_snippet(h, width))
    return table


def evidence_snippet(hit: Hit, width: int = 90) -> Text | str:
    """The snippet of a hit: its text's start, or, when a windowed reranker left ``metadata["evidence"]``, the
    start of that window in bold underline (``…`` before it when it is not the text's start).

    Args:
        hit: The hit.
        width: Characters shown.

    Returns:
        Plain text, or a rich ``Text`` with the evidence styled.
    """
    span = hit.metadata.get("evidence")
    if not isinstance(span, dict) or not (0 <= span.get("start", -1) < span.get("end", -1) <= len(hit.text)):
        return snippet(hit.text, width)
    lead = "…" if hit.text[: span["start"]].strip() else ""
    shown = snippet(hit.text[span["start"] : span["end"]], width - len(lead))
    return Text.assemble(lead, (shown, "bold underline"))
