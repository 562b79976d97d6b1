"""``twostage calibrate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .app import (
    DbOpt,
    EmbeddingOpt,
    LongDocsOpt,
    RerankBackendOpt,
    RerankMaxLengthOpt,
    RerankModelOpt,
    app,
    friendly_errors,
)
from .evaluate import check_outputs


@app.command("calibrate")
@friendly_errors
def calibrate_command(
    dataset_dir: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    rerank_model: RerankModelOpt = None,
    split: Annotated[str, typer.Option(help="The labelled split to fit on (not the one you evaluate on).")] = "train",
    recall: Annotated[str, typer.Option(help="Stage 1 mining the negatives: dense, bm25 or hybrid.")] = "hybrid",
    limit: Annotated[int, typer.Option("--limit", "-l", help="Candidates per query (use your pipeline's).")] = 50,
    max_queries: Annotated[int | None, typer.Option(help="Use only the first N judged queries.")] = None,
    method: Annotated[str, typer.Option(help="auto (lower held-out log-loss of the two), platt or isotonic.")] = "auto",
    out: Annotated[
        Path | None,
        typer.Option(help="Write calibration.json here (default: beside the model; hub/read-only: the ONNX cache)."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")] = None,
    rerank_backend: RerankBackendOpt = None,
    rerank_max_length: RerankMaxLengthOpt = None,
    long_docs: LongDocsOpt = None,
    db: DbOpt = None,
    embedding_model: EmbeddingOpt = None,
) -> None:
    """Fit a map from the cross-encoder's scores to P(relevant) on labelled pairs and save it as calibration.json;
    the reranker then applies it (score kind ce_calibrated, docs/scores.md). Pairs: each judged query's relevant
    documents (qrels) and every other candidate stage 1 returns at --limit. Platt and isotonic maps are fitted on
    70% of the pairs and the one with the lower log-loss on the rest is kept."""
    from rich.console import Console

    from ..evaluation.runner import require_beir
    from ..finetune.calibrate import calibrate

    require_beir(dataset_dir, split)  # no qrels for the split: one error line, exit 2, before any model loads
    check_outputs([out, json_out])
    result = calibrate(dataset_dir, rerank_model, split=split, recall=recall, limit=limit, max_queries=max_queries,
                       method=method, backend=rerank_backend, max_length=rerank_max_length,
                       long_docs=long_docs or "first", out=out, db=db,
                       embedding_model=embedding_model)  # fmt: skip
    cal = result.calibration
    console = Console() if Console().is_terminal else Console(width=160)
    before, after = cal.metrics["before"], cal.metrics["after"]
    console.print(f"{cal.describe()}: {cal.n_positive} relevant; {result.n_queries} queries, {result.seconds:.0f} s")
    console.print(
        f"held-out {cal.metrics['held_out_pairs']} pairs: ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
        f"Brier {before['brier']:.4f} -> {after['brier']:.4f}, log-loss {before['log_loss']:.4f} -> "
        f"{after['log_loss']:.4f}"
    )
    console.print(f"calibration written to {result.path}")
    if json_out:
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
