"""``twostage query``."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..recall.factory import DEFAULT_RECALL
from ..scores import check_min_score, hit_score_kind, pipeline_score_kinds
from .app import (
    CollectionOpt,
    DbOpt,
    EmbeddingOpt,
    FusionMethodOpt,
    FusionWeightOpt,
    HostOpt,
    LongDocsOpt,
    PipelineOpt,
    PortOpt,
    PresetOpt,
    RecallOpt,
    RerankBackendOpt,
    RerankMaxLengthOpt,
    RerankModelOpt,
    app,
    fail,
    friendly_errors,
    make_recall,
    parse_fusion_weight,
    pipeline_spec,
)
from .render import hits_table

if TYPE_CHECKING:
    from ..pipeline import SearchResult, TwoStagePipeline

FILTER_EXAMPLE = '\'{"filename": "aspirin.md"}\''


def _no_results_hint(recall: Any, collection: str, where: dict[str, Any] | None) -> str:
    """Why nothing came back, and what to try: the filter, the metadata keys a stored passage has, an example."""
    sample = recall.collection.get(limit=1, include=["metadatas"])
    if not sample["ids"]:
        return f"no results: collection {collection!r} is empty; add files with `twostage ingest PATH -c {collection}`"
    if not where:
        return "no results for this query"
    meta = (sample["metadatas"] or [None])[0] or {}
    keys = ", ".join(sorted(meta)) or "(none)"
    key = "filename" if "filename" in meta else next(iter(sorted(meta)), None)
    example = json.dumps({key: meta[key]}, ensure_ascii=False) if key else '{"filename": "aspirin.md"}'
    return (
        f"no results: no passage matches --filter {json.dumps(where, ensure_ascii=False)}. Stored passages have the "
        f"metadata keys {keys} (values must match exactly); e.g. --filter '{example}'"
    )


@app.command()
@friendly_errors
def query(
    text: Annotated[str, typer.Argument(help="The query.")],
    collection: CollectionOpt,
    limit: Annotated[int, typer.Option("--limit", "-l", help="Candidates recalled by stage 1.")] = 20,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Results kept after reranking.")] = 5,
    rerank_model: RerankModelOpt = None,
    rerank_backend: RerankBackendOpt = None,
    rerank_max_length: RerankMaxLengthOpt = None,
    long_docs: LongDocsOpt = None,
    fusion_weight: FusionWeightOpt = None,
    fusion_method: FusionMethodOpt = "rrf",
    evidence_only: Annotated[
        bool,
        typer.Option(
            "--evidence-only",
            help="Print only each hit's evidence window (with --long-docs max/top2mean; else its whole text) and "
            "their token count: a compact context for an LLM prompt.",
        ),
    ] = False,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Skip stage 2: recall order, cut to --top-k.")] = False,
    recall_kind: RecallOpt = DEFAULT_RECALL,
    num_candidates: Annotated[
        int | None, typer.Option(help="ANN depth: fetch this many (min --limit) from Chroma, keep the best --limit.")
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help='Chroma metadata filter as JSON, e.g. \'{"filename": "aspirin.md"}\' or '
            '\'{"source": "notes/aspirin.md"}\' (ingest stores both).',
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="Drop results scored below this (in the final score's kind, see docs/scores.md; e.g. 0.5 with a "
            "calibrated reranker): fewer than --top-k, or 'nothing relevant', is then a valid answer.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    db: DbOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    embedding_model: EmbeddingOpt = None,
    pipeline: PipelineOpt = None,
    preset: PresetOpt = None,
) -> None:
    """Search a collection: recall --limit candidates, rerank them, print the best --top-k (or run the pipeline
    --pipeline / --preset names; --json says which spec ran).

    The table shows each hit's source (file and passage, or JSONL line); the id joins it on wide terminals.
    When nothing matches (a --filter no passage passes, an empty collection) one line says so instead of a
    table, stderr lists the metadata keys stored passages have, and the exit status is still 0, as for
    `vai query` and `gh search`: no hits is an answer, not an error (exit 2 is kept for bad input). Scripts
    test `--json` "hits" for [].

    Stage 1 is hybrid unless --recall says otherwise: its BM25 index is the one `twostage ingest` saved (no
    corpus read from Chroma); after writes by other means it is rebuilt once and saved again.
    """
    from ..pipeline import TwoStagePipeline

    where = _parse_filter(filter)
    if no_rerank and (rerank_model or rerank_backend or fusion_weight is not None):
        raise fail("--no-rerank contradicts --rerank-model/--rerank-backend/--fusion-weight; pass one")
    fusion = (fusion_method, parse_fusion_weight(fusion_weight)) if fusion_weight is not None else None
    options: dict[str, Any] = {"recall": recall_kind, "rerank_model": rerank_model, "rerank_backend": rerank_backend}
    options.update(rerank_max_length=rerank_max_length, long_docs=long_docs, fusion=fusion)
    spec = pipeline_spec(pipeline, preset, limit=limit, top_k=top_k, no_rerank=no_rerank, **options)
    if min_score is not None:  # the option over a --pipeline's min_score=X; the --json "pipeline" says which ran
        spec = replace(spec, min_score=min_score)
    if num_candidates is not None and spec.recall.kind == "bm25":
        raise fail("--num-candidates tunes dense (HNSW) search; it does not apply to --recall bm25")
    recall = make_recall(collection, db, host, port, embedding_model, spec)
    recall.collection  # noqa: B018 - fail on a missing collection before loading the reranker
    pipe = TwoStagePipeline.from_spec(spec, recall)
    check_min_score(pipe.min_score, pipe.final_score_kind())  # out of range: exit 2 before any search
    extra: dict[str, Any] = {"num_candidates": num_candidates} if num_candidates is not None else {}
    # Warm stage 1 (embedding model load, BM25 index load) so the timings printed are per-query costs.
    recall.search(text, 1, where=where)
    result = pipe.run(text, where=where, **extra)
    if not result.hits and not (pipe.min_score is not None and result.candidates):
        typer.echo(_no_results_hint(recall, collection, where), err=True)
    if evidence_only:
        _print_evidence(text, collection, pipe, result, as_json=as_json)
    elif as_json:
        typer.echo(json.dumps(_json_payload(text, collection, pipe, result), ensure_ascii=False, indent=2))
    else:
        _print_table(text, pipe, result, where)


def _parse_filter(filter_json: str | None) -> dict[str, Any] | None:
    """--filter as a Chroma ``where`` (None without one); a clear exit 2 when it is not a JSON object."""
    if not filter_json:
        return None
    try:
        where = json.loads(filter_json)
    except json.JSONDecodeError as exc:
        raise fail(f"--filter is not valid JSON ({exc.msg}); example: --filter {FILTER_EXAMPLE}") from None
    if not isinstance(where, dict):
        raise fail(f"--filter must be a JSON object, e.g. {FILTER_EXAMPLE}")
    return where


def _result_score_kind(pipe: TwoStagePipeline, result: SearchResult) -> str:
    """The kind of the printed scores: the best hit's (see docs/scores.md), or the last stage's with no hits."""
    recall_kind, rerank_kind = pipeline_score_kinds(pipe)
    if not result.hits:
        return rerank_kind or recall_kind
    return hit_score_kind(result.hits[0], recall_kind=recall_kind, rerank_kind=rerank_kind)


def _json_payload(text: str, collection: str, pipe: TwoStagePipeline, result: SearchResult) -> dict[str, Any]:
    return {
        "query": text,
        "collection": collection,
        "pipeline": str(pipe.spec) if pipe.spec is not None else None,
        "limit": pipe.limit,
        "top_k": pipe.top_k,
        "min_score": pipe.min_score,
        "rerank_model": pipe.reranker.name if pipe.reranker else None,
        "score_kind": _result_score_kind(pipe, result),
        "hits": [h.to_dict() for h in result.hits],
        "timings": result.timings.to_dict(),
    }


def _print_evidence(text: str, collection: str, pipe: TwoStagePipeline, result: SearchResult, *, as_json: bool) -> None:
    """--evidence-only: the hits' evidence windows (best first) and their token count, as JSON or plain text."""
    from ..rerank.windows import evidence_context

    splitter = _window_splitter(pipe.reranker)
    windows, tokens = evidence_context(result.hits, splitter.tokenizer if splitter is not None else None)
    if as_json:
        payload = {"query": text, "collection": collection, "ids": [h.id for h in result.hits]}
        typer.echo(json.dumps({**payload, "windows": windows, "tokens": tokens}, ensure_ascii=False, indent=2))
        return
    for hit, window in zip(result.hits, windows, strict=True):
        typer.echo(f"[{hit.id}] {window}\n")
    typer.echo(f"{len(windows)} windows, {tokens if tokens is not None else '?'} tokens", err=True)


def _window_splitter(reranker: Any) -> Any:
    """The window splitter of the pipeline's last cross-encoder stage (through a cascade or fusion), or None."""
    stages = getattr(reranker, "stages", None)
    if stages:
        reranker = stages[-1][0]
    reranker = getattr(reranker, "reranker", reranker)  # FusedReranker
    return getattr(reranker, "splitter", None)


def _print_table(text: str, pipe: TwoStagePipeline, result: SearchResult, where: dict[str, Any] | None) -> None:
    from rich.console import Console

    console = Console()
    reranker = pipe.reranker
    if not result.hits:
        # no empty table under a "0 recalled, reranked by ..." header: say what came back, and why
        why = f"no passage matches --filter {json.dumps(where, ensure_ascii=False)}" if where else "no results"
        if result.candidates and pipe.min_score is not None:  # recalled, but none scored high enough
            why = f"nothing relevant: none of the {len(result.candidates)} candidates scored >= {pipe.min_score:g}"
        console.print(f"{text!r} — {why}", markup=False, highlight=False)
    else:
        title = f"{text!r} — {len(result.candidates)} recalled, " + (
            f"reranked by {reranker.name}" if reranker else "no rerank"
        )
        title += f" (score: {_result_score_kind(pipe, result)}, see docs/scores.md)"
        console.print(hits_table(result.hits, title=title, console_width=console.width))
    t = result.timings
    console.print(
        f"recall {t.recall_s * 1000:.0f} ms · rerank {t.rerank_s * 1000:.0f} ms · total {t.total_s * 1000:.0f} ms"
    )
