"""``twostage finetune``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import DbOpt, EmbeddingOpt, app, friendly_errors


@app.command("finetune")
@friendly_errors
def finetune_command(
    dataset_dir: Annotated[
        Path,
        typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (label-free: corpus only)."),
    ],
    base: Annotated[
        str,
        typer.Option(
            "--base", help="Model to start from: a 1-logit cross-encoder (continue) or a plain encoder (new head)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the fine-tuned reranker to.")],
    split: Annotated[str, typer.Option(help="Training qrels: qrels/<split>.tsv.")] = "train",
    pairs: Annotated[
        str,
        typer.Option(
            help="Positives: qrels (judged queries), or label-free title-body / first-sentence / last-sentence."
        ),
    ] = "qrels",
    negatives: Annotated[int, typer.Option(help="Hard negatives per query, from stage-1 recall.")] = 3,
    random_negatives: Annotated[int, typer.Option(help="Random negatives per query.")] = 3,
    mine_depth: Annotated[int, typer.Option(help="Hard negatives come from recall ranks up to this depth.")] = 40,
    mine_skip: Annotated[
        int, typer.Option(help="Skip this many top recall hits (likely unjudged positives) when mining.")
    ] = 10,
    recall: Annotated[
        str, typer.Option(help="Stage 1 used for mining (and evaluation): dense, bm25, hybrid.")
    ] = "dense",
    epochs: Annotated[float, typer.Option(help="Passes over the training pairs.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (overrides --epochs).")] = None,
    max_length: Annotated[int, typer.Option(help="Token limit per (query, passage) pair.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Pairs per training step.")] = 16,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default: 1e-4 for a plain encoder, 2e-5 for a cross-encoder).")
    ] = None,
    eval_split: Annotated[
        str, typer.Option(help="Held-back qrels to measure before/after on, read after training; 'none' to skip.")
    ] = "test",
    eval_limit: Annotated[int, typer.Option(help="Candidates recalled and reranked per query when evaluating.")] = 50,
    eval_max_queries: Annotated[int | None, typer.Option(help="Evaluate on the first N judged queries only.")] = None,
    max_queries: Annotated[
        int | None, typer.Option(help="Train on at most N queries (label-free: a seeded sample of documents).")
    ] = None,
    corpus_pairs: Annotated[
        int, typer.Option(help="With --pairs qrels: also train on N label-free title -> text pairs from the corpus.")
    ] = 0,
    corpus_negatives: Annotated[
        int | None, typer.Option(help="Hard and random negatives (N of each) per --corpus-pairs pair.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for mining, head initialisation and shuffling.")] = 0,
    layers: Annotated[
        str | None,
        typer.Option(
            help="A cheaper reranker with N layers, or the 0-based layers listed (0,5). From a cross-encoder, "
            "layers go one at a time (a count drops the least useful each time); a plain encoder keeps the first N."
        ),
    ] = None,
    shrink_steps: Annotated[
        int,
        typer.Option(help="With --layers on a cross-encoder: training steps after each layer removed but the last."),
    ] = 100,
    rounds: Annotated[
        int, typer.Option(help="Train N rounds, each from the last on fresh samples at half the learning rate.")
    ] = 1,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run in --out (finished rounds are kept).")
    ] = False,
    save_steps: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps.")] = 100,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")] = None,
    db: DbOpt = None,
    embedding_model: EmbeddingOpt = None,
) -> None:
    """Fine-tune the stage-2 cross-encoder on your data: mine hard negatives with stage 1, train with binary
    cross-entropy (sentence-transformers CrossEncoderTrainer), save a folder --rerank-model loads, and print
    nDCG@10 etc. on the held-back split before and after. Ctrl-C saves a checkpoint; --resume continues."""
    import json

    from rich.console import Console

    from ..finetune import finetune
    from ..finetune.model import parse_layers

    result = finetune(
        dataset_dir,
        base=base,
        out=out,
        split=split,
        pairs=pairs,
        negatives=negatives,
        random_negatives=random_negatives,
        mine_depth=mine_depth,
        mine_skip=mine_skip,
        recall=recall,
        epochs=epochs,
        max_steps=max_steps,
        max_length=max_length,
        batch_size=batch_size,
        lr=lr,
        eval_split=None if eval_split.lower() == "none" else eval_split,
        eval_limit=eval_limit,
        eval_max_queries=eval_max_queries,
        max_queries=max_queries,
        corpus_pairs=corpus_pairs,
        corpus_negatives=corpus_negatives,
        seed=seed,
        layers=None if layers is None else parse_layers(layers),
        shrink_steps=shrink_steps,
        rounds=rounds,
        resume=resume,
        save_steps=save_steps,
        db=db,
        embedding_model=embedding_model,
        command=shlex.join(["twostage", *sys.argv[1:]]),
    )
    console = Console() if Console().is_terminal else Console(width=160)
    console.print(
        f"{result.n_pairs} pairs ({result.n_positive} positive) from {result.n_queries} queries; "
        f"{result.steps} steps in {result.train_seconds / 60:.1f} min"
    )
    if result.interrupted:
        console.print(f"interrupted: a usable model is in {out}; re-run the same command with --resume to continue")
        raise typer.Exit(130)
    if result.metrics.get("after"):
        console.print(result.table())
    if json_out:
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
    console.print(f"model written to {out} (model card: {out / 'README.md'})")
    if not result.metrics.get("after"):
        console.print(f"evaluate it with: twostage eval {dataset_dir} --rerank-model {out}")
