"""``twostage eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..recall.factory import DEFAULT_RECALL
from .app import (
    DbOpt,
    EmbeddingOpt,
    FusionMethodOpt,
    FusionWeightOpt,
    LongDocsOpt,
    PipelineOpt,
    PresetOpt,
    RecallOpt,
    RerankBackendOpt,
    RerankMaxLengthOpt,
    RerankModelOpt,
    app,
    fail,
    friendly_errors,
    parse_fusion_weight,
    parse_stage,  # noqa: F401 - eval's --stage parser, read by pipeline_spec (one parser with bench's)
    pipeline_spec,
)

if TYPE_CHECKING:
    from ..evaluation import BeirDataset, EvalReport
    from ..evaluation.fusion_auto import FusionEstimate
    from ..rerank.cascade import Cascade
    from ..spec import PipelineSpec

DEFAULT_PLOT_LIMITS = "10,20,50,100"
MinScoreOpt = Annotated[
    float | None,
    typer.Option(
        help="Also report what this threshold on the final score keeps of each query's --top-k: precision, recall, "
        "and how often nothing is returned though a relevant document was among the candidates.",
    ),
]


def _engine_lines(console, rerankers) -> list[dict]:
    """Which engine ran each cross-encoder stage and how many pairs it cut at its token limit."""
    out = []
    for r in rerankers:
        inner = getattr(r, "reranker", r)  # a FusedReranker wraps the cross-encoder
        stats = getattr(inner, "total_stats", None)
        if stats is None:
            continue
        long_docs = getattr(inner, "long_docs", "first")
        windows = f", long_docs={long_docs} (pairs are windows)" if long_docs != "first" else ""
        console.print(
            f"{inner.name} [{inner.backend}{windows}]: {stats.truncated} of {stats.pairs} pairs cut at max_length="
            f"{inner.max_length} tokens",
            markup=False,  # the [engine, long_docs=...] part is text, not rich markup
        )
        out.append(
            {"model": inner.name, "backend": inner.backend, "max_length": inner.max_length, "long_docs": long_docs}
            | {"pairs": stats.pairs, "truncated": stats.truncated}
        )
    return out


@app.command("eval")
@friendly_errors
def eval_command(
    dataset_dir: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    split: Annotated[str, typer.Option(help="Which qrels/<split>.tsv to score against.")] = "test",
    recall: RecallOpt = DEFAULT_RECALL,
    limit: Annotated[int, typer.Option("--limit", "-l", help="Candidates recalled per query.")] = 100,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Cut-off of nDCG@k, Recall@k and MRR@k.")] = 10,
    rerank_model: RerankModelOpt = None,
    rerank_backend: RerankBackendOpt = None,
    rerank_max_length: RerankMaxLengthOpt = None,
    long_docs: LongDocsOpt = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Measure recall only.")] = False,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage",
            help="Cascade stage MODEL[:KEEP][@backend=B,max_length=N], repeatable, in order (instead of "
            "--rerank-model), e.g. --stage ce:30@backend=onnx-int8,max_length=64 --stage ce.",
        ),
    ] = None,
    fusion_weight: FusionWeightOpt = None,
    fusion_method: FusionMethodOpt = "rrf",
    rrf_k: Annotated[float, typer.Option(help="RRF constant for --recall hybrid.")] = 60.0,
    per_arm: Annotated[
        int | None, typer.Option(help="Hybrid: candidates from each arm before fusion (default: --limit).")
    ] = None,
    max_queries: Annotated[int | None, typer.Option(help="Evaluate only the first N judged queries.")] = None,
    min_score: MinScoreOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the numbers as JSON to this file.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also run every limit in --plot-limits and plot nDCG@k and latency versus limit (PNG)."),
    ] = None,
    plot_limits: Annotated[str, typer.Option(help="Comma-separated limits for --plot.")] = DEFAULT_PLOT_LIMITS,
    db: DbOpt = None,
    embedding_model: EmbeddingOpt = None,
    pipeline: PipelineOpt = None,
    preset: PresetOpt = None,
) -> None:
    """Measure recall and reranking on a BEIR-format dataset: nDCG@k, Recall@k, Recall@limit, MRR@k, MAP@100
    and time per stage. The corpus is indexed once into a cached Chroma collection (keyed by dataset and
    embedding model); re-runs reuse it.

    The pipeline is --pipeline / --preset (its top_k is the metrics' cut-off), or the options: --stage and
    --fusion-weight are shorthands of a spec's stages and fuse= (the --json file names the spec that ran)."""
    from ..evaluation import evaluate, load_beir
    from ..extras import check_eval_extras
    from ..spec import build_reranker

    if no_rerank and (rerank_model or rerank_backend or stage or fusion_weight is not None):
        raise fail("--no-rerank contradicts --rerank-model/--rerank-backend/--stage/--fusion-weight; pass one")
    if rerank_model and stage:
        raise fail("pass either --rerank-model or --stage (a cascade), not both")
    try:
        limits = sorted({int(x) for x in plot_limits.split(",") if x.strip()}) if plot else []
    except ValueError:
        raise fail(f"--plot-limits must be comma-separated integers, got {plot_limits!r}") from None
    fusion = (fusion_method, parse_fusion_weight(fusion_weight)) if fusion_weight is not None else None
    models: dict[str, Any] = {"rerank_model": rerank_model, "rerank_backend": rerank_backend, "stages": stage}
    models.update(rerank_max_length=rerank_max_length, long_docs=long_docs, fusion=fusion)
    hybrid: dict[str, Any] = {"rrf_k": rrf_k, "per_arm": per_arm}
    spec = pipeline_spec(
        pipeline, preset, recall=recall, limit=limit, top_k=top_k, no_rerank=no_rerank, **models, **hybrid
    )
    check_before_eval(dataset_dir, split, embedding_model, [json_out, plot])  # the options first, then the files
    check_eval_extras(spec.recall.kind, plot=plot is not None)  # a missing extra fails before any model or index work
    data = load_beir(dataset_dir, split, max_queries=max_queries)  # fail on a bad folder before loading models
    cascade = build_reranker(spec)
    options: dict[str, Any] = dict(recall=spec.recall.kind, top_k=spec.top_k, reranker=cascade, db=db)
    rrf = 60.0 if spec.recall.rrf_k is None else spec.recall.rrf_k  # evaluate's (and the spec's) default
    options.update(embedding_model=embedding_model, rrf_k=rrf, candidates_per_arm=spec.recall.per_arm)
    threshold = spec.min_score if min_score is None else min_score  # a --pipeline may carry min_score=X
    auto = _auto_fusion(data, cascade, spec, options)
    report = evaluate(data, limit=spec.recall.limit, min_score=threshold, **options)
    if auto is not None:
        report.config["fusion_auto"] = auto.to_dict()
    _write_results(report, data, cascade, options, limits, spec, plot=plot, json_out=json_out)


def score_lines(scores: dict[str, Any]) -> list[str]:
    """The final scores' calibration (ECE, Brier) and a --min-score's effect, one line each (docs/evaluation.md).

    Args:
        scores: ``EvalReport.scores``.

    Returns:
        The lines (none when there is nothing to say).
    """
    lines = []
    cal, kept = scores.get("calibration"), scores.get("min_score")
    if cal:
        where = f"{scores['pairs']} candidates labelled by qrels ({scores['relevant']} relevant), {cal['bins']} bins"
        if "before" in cal:
            b, a = cal["before"], cal["after"]
            lines.append(
                f"calibration ({scores['score_kind']}, {cal['fitted']}): ECE {b['ece']:.4f} -> {a['ece']:.4f}, "
                f"Brier {b['brier']:.4f} -> {a['brier']:.4f} on {where}"
            )
        else:
            s = cal["scores"]
            lines.append(f"calibration ({scores['score_kind']}): ECE {s['ece']:.4f}, Brier {s['brier']:.4f} on {where}")
    if kept:
        t, o = kept["threshold"], kept["top_k_only"]
        lines.append(
            f"min_score {kept['value']:g} within top {kept['top_k']}: precision {o['precision']:.3f} -> "
            f"{t['precision']:.3f}, recall {o['recall']:.3f} -> {t['recall']:.3f}, results/query "
            f"{o['results_per_query']:.2f} -> {t['results_per_query']:.2f}; nothing returned for "
            f"{kept['empty']:.1%} of queries ({kept['empty_with_relevant_candidate']:.1%} had a relevant candidate)"
        )
    return lines


def _auto_fusion(
    data: BeirDataset, cascade: Cascade | None, spec: PipelineSpec, options: dict[str, Any]
) -> FusionEstimate | None:
    """Choose a ``fuse=METHOD:auto`` weight on pseudo-queries of the dataset's corpus (no queries or labels
    read) and print the estimate; None when the spec has no ``auto`` weight. ``options`` are evaluate's: the
    embedder loaded here is passed on in them, so it loads once."""
    if spec.fusion is None or not spec.fusion.auto:
        return None
    from rich.console import Console

    from ..evaluation import index_corpus
    from ..evaluation.fusion_auto import apply_auto_fusion
    from ..recall.factory import recall_by_kind

    collection = index_corpus(data, db=options["db"], embedding_model=options["embedding_model"])
    options["embedding_model"] = collection.embedder
    kind, per_arm = spec.recall.kind, spec.recall.per_arm
    recall = recall_by_kind(kind, collection, rrf_k=options["rrf_k"], candidates_per_arm=per_arm)
    estimate = apply_auto_fusion(cascade, recall, limit=spec.recall.limit)
    if estimate is not None:
        Console(width=160).print(estimate.table(), markup=False, highlight=False)
    return estimate


def check_outputs(paths: list[Path | None]) -> None:
    """Refuse, before the long part, an output file that could not be written after it.

    Args:
        paths: ``--json``, ``--plot`` and the like (``None``: not asked for).

    Raises:
        typer.Exit: (exit 2, one ``error:`` line) a folder that does not exist, or a path that is a folder.
    """
    for path in paths:
        if path is None:
            continue
        parent = path.expanduser().parent
        if path.expanduser().is_dir():
            raise fail(f"{path} is a folder: pass a file path to write")
        if not parent.is_dir():
            raise fail(f"cannot write {path}: folder {parent} does not exist")


def check_before_eval(dataset_dir: Path, split: str, embedding_model: str | None, outputs: list[Path | None]) -> None:
    """Everything ``twostage eval`` reads or writes, checked before any model loads or any passage is indexed:
    the dataset's files and split, a model folder named by path, the output paths.

    Raises:
        InvalidDocumentError: a missing dataset file or split.
        ModelNotFoundError: an embedding model path that does not exist.
        typer.Exit: an output path that cannot be written (exit 2).
    """
    from ..evaluation.runner import require_beir
    from ..models import check_model_path

    require_beir(dataset_dir, split)
    if embedding_model:
        check_model_path(embedding_model, kind="embedding")
    check_outputs(outputs)


def _write_results(
    report: EvalReport,
    data: BeirDataset,
    cascade: Cascade | None,
    options: dict[str, Any],
    limits: list[int],
    spec: PipelineSpec,
    *,
    plot: Path | None,
    json_out: Path | None,
) -> None:
    """Print the table and the engines' lines; run and plot every limit for --plot; write --json (with the
    ``pipeline`` spec string)."""
    from rich.console import Console

    from ..evaluation import evaluate_limits
    from ..evaluation import plot_limits as plot_by_limit

    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=160)
    console.print(report.table())
    for line in score_lines(report.scores):
        console.print(line, markup=False, highlight=False)
    payload = {"pipeline": str(spec), **report.to_dict()}
    if cascade:
        payload["rerank_engines"] = _engine_lines(console, [r for r, _ in cascade.stages])
    if plot:
        reports = evaluate_limits(data, limits, progress=False, **options)
        plot_by_limit(reports, plot)
        payload["by_limit"] = [r.to_dict() for r in reports]
        console.print(f"plot written to {plot}")
    if json_out:
        json_out.write_text(json.dumps(payload, indent=2))
        console.print(f"JSON written to {json_out}")
