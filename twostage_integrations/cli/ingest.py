"""``twostage ingest``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import CollectionOpt, DbOpt, EmbeddingOpt, HostOpt, PortOpt, app, fail, friendly_errors, make_recall


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
) -> None:
    """Add files to a collection (.txt/.md split into passages; .jsonl one passage per line).

    Each passage's metadata holds source (the path as given, e.g. notes/aspirin.md) and filename (aspirin.md),
    so `twostage query ... --filter '{"filename": "aspirin.md"}'` finds one file's passages. Files that are not
    UTF-8 text (binaries named .txt/.md) are skipped with a warning.

    Re-running is safe: passages already stored are skipped, so an interrupted ingest can simply be run again.

    After writing, the collection's BM25 index is built and saved beside the database, stamped with the
    collection's version, so `twostage query` (hybrid recall by default) loads it instead of reading the corpus;
    --no-bm25 skips that.
    """
    from ..ingest import read_documents

    read = read_documents(paths, max_chars=max_chars, overlap_chars=overlap_chars)
    for skipped in read.skipped:
        typer.echo(f"warning: skipped {skipped.path}: {skipped.reason}", err=True)
    passages = read.passages
    if not passages:
        raise fail(f"no text to ingest: all {len(read.skipped)} file(s) were skipped (see the warnings above)")
    recall = make_recall(collection, db, host, port, embedding_model)
    result = recall.add_texts(  # the bar the Python API leaves off by default: a CLI user watches a long ingest
        [p.text for p in passages],
        metadatas=[p.metadata for p in passages],
        ids=[p.id for p in passages],
        show_progress=True,
    )
    # --- BM25 snapshot at ingest (issue 22): one call after all batches are written; keep it last ---
    if not no_bm25:
        from ..recall.factory import persist_bm25

        persist_bm25(recall)
    # --- end BM25 snapshot ---
    skipped_note = f"; {len(read.skipped)} non-text file(s) skipped" if read.skipped else ""
    typer.echo(
        f"{collection}: {result.added} passages added, {result.updated} updated, "
        f"{result.unchanged} already present ({recall.count()} in the collection){skipped_note}"
    )
