"""``twostage ingest``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import CollectionOpt, DbOpt, EmbeddingOpt, HostOpt, PortOpt, app, friendly_errors, make_recall


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
) -> None:
    """Add files to a collection (.txt/.md split into passages; .jsonl one passage per line).

    Re-running is safe: passages already stored are skipped, so an interrupted ingest can simply be run again.
    """
    from ..ingest import read_passages

    passages = read_passages(paths, max_chars=max_chars, overlap_chars=overlap_chars)
    recall = make_recall(collection, db, host, port, embedding_model)
    result = recall.add_texts(
        [p.text for p in passages], metadatas=[p.metadata for p in passages], ids=[p.id for p in passages]
    )
    typer.echo(
        f"{collection}: {result.added} passages added, {result.updated} updated, "
        f"{result.unchanged} already present ({recall.count()} in the collection)"
    )
