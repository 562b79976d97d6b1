"""``twostage ingest``: files streamed into a collection, batch by batch (see docs/ingest.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..recall.chroma_write import STREAM_BATCH_SIZE
from .app import CollectionOpt, DbOpt, EmbeddingOpt, HostOpt, PortOpt, app, fail, friendly_errors, make_recall

if TYPE_CHECKING:
    from ..recall.base import AddResult
    from ..recall.chroma import ChromaRecall


@app.command()
@friendly_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help=".txt/.md/.jsonl files or folders.")],
    collection: CollectionOpt,
    db: DbOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    embedding_model: EmbeddingOpt = None,
    max_chars: Annotated[int, typer.Option(help="Passage size for .txt/.md, in characters.")] = 1000,
    overlap_chars: Annotated[int, typer.Option(help="Characters carried over between passages.")] = 150,
    no_bm25: Annotated[
        bool,
        typer.Option(
            "--no-bm25",
            help="Do not build and save the BM25 index after writing (for dense-only use: `twostage query --recall "
            "dense`). Without it, the default hybrid recall builds the index on its first query instead.",
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(help="Passages embedded and written per batch (the most held in memory at once).")
    ] = STREAM_BATCH_SIZE,
) -> None:
    """Add files to a collection (.txt/.md split into passages; .jsonl one passage per line).

    Each passage's metadata holds source (the path as given, e.g. notes/aspirin.md) and filename (aspirin.md),
    so `twostage query ... --filter '{"filename": "aspirin.md"}'` finds one file's passages. Files that are not
    UTF-8 text (binaries named .txt/.md) are skipped with a warning.

    Files are streamed: a first pass checks every line (a bad one is refused, with file:line, before anything is
    stored), then passages are embedded and written in batches.

    Re-running is safe: passages already stored are skipped, so an interrupted ingest can simply be run again.

    After writing, the collection's BM25 index is built and saved beside the database, stamped with the
    collection's version, so `twostage query` (hybrid recall by default) loads it instead of reading the corpus;
    --no-bm25 skips that.
    """
    from ..ingest import iter_passages, scan_documents
    from ..validation import check_positive_int

    check_positive_int(batch_size, "batch_size")
    scan = scan_documents(paths, max_chars=max_chars, overlap_chars=overlap_chars)
    for skipped in scan.skipped:
        typer.echo(f"warning: skipped {skipped.path}: {skipped.reason}", err=True)
    if not scan.passages:
        raise fail(f"no text to ingest: all {len(scan.skipped)} file(s) were skipped (see the warnings above)")
    recall: ChromaRecall = make_recall(collection, db, host, port, embedding_model)
    passages = iter_passages(scan.files, max_chars=max_chars, overlap_chars=overlap_chars)
    result = recall.add_stream(  # the bar the Python API leaves off by default: a CLI user watches a long ingest
        ((p.text, p.metadata, p.id) for p in passages),
        batch_size=batch_size,
        total=scan.passages,
        show_progress=True,
    )
    typer.echo(f"embedded {recall.embedded} passages", err=True)  # what a resumed run re-did: only the missing
    if not no_bm25:
        after_ingest(recall, result)
    skipped_note = f"; {len(scan.skipped)} non-text file(s) skipped" if scan.skipped else ""
    typer.echo(
        f"{collection}: {result.added} passages added, {result.updated} updated, "
        f"{result.unchanged} already present ({recall.count()} in the collection){skipped_note}"
    )


def after_ingest(recall: ChromaRecall, result: AddResult) -> None:
    """What runs once every batch is stored, before the summary: indexes derived from the whole collection are
    (re)built here (e.g. BM25), not per batch.

    Args:
        recall: The collection just written.
        result: What the ingest did (unused: the BM25 snapshot is rebuilt whenever its version stamp is stale,
            and written even when nothing changed so a collection ingested with --no-bm25 gets one).
    """
    from ..recall.factory import persist_bm25

    del result
    recall.embedder.unload()  # every passage is embedded: give its memory to the BM25 save (docs/ingest.md)
    persist_bm25(recall)
