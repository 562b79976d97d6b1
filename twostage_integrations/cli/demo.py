"""``twostage demo``."""

from __future__ import annotations

from typing import Annotated

import typer

from ..recall.factory import DEFAULT_RECALL
from .app import (
    DbOpt,
    PipelineOpt,
    PresetOpt,
    RecallOpt,
    RerankBackendOpt,
    RerankMaxLengthOpt,
    RerankModelOpt,
    app,
    friendly_errors,
    pipeline_spec,
)
from .render import snippet


@app.command()
@friendly_errors
def demo(
    db: DbOpt = None,
    rerank_model: RerankModelOpt = None,
    rerank_backend: RerankBackendOpt = None,
    rerank_max_length: RerankMaxLengthOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-l", help="Candidates recalled per query.")] = 20,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Results shown per query.")] = 5,
    query: Annotated[list[str] | None, typer.Option("--query", "-q", help="Your own query (repeatable).")] = None,
    recall: RecallOpt = DEFAULT_RECALL,
    pipeline: PipelineOpt = None,
    preset: PresetOpt = None,
) -> None:
    """Index the bundled sample corpus (Python docs) into embedded Chroma and show, for a few queries,
    recall order next to reranked order (of the pipeline --pipeline / --preset names, if given)."""
    from rich.console import Console
    from rich.table import Table

    from ..demo import DEMO_COLLECTION, DEMO_QUERIES, load_sample_corpus, sample_corpus_path
    from ..pipeline import TwoStagePipeline
    from ..recall.chroma import ChromaRecall, default_db_path
    from ..spec import build_reranker, recall_over

    # bad numbers or specs fail before any model loads or passage is indexed
    spec = pipeline_spec(
        pipeline,
        preset,
        recall=recall,
        limit=limit,
        top_k=top_k,
        rerank_model=rerank_model,
        rerank_backend=rerank_backend,
        rerank_max_length=rerank_max_length,
    )
    limit, top_k = spec.recall.limit, spec.top_k
    console = Console()
    # Load first: a missing model stops before any indexing.
    reranker = build_reranker(spec)
    chroma = ChromaRecall(DEMO_COLLECTION, path=db)
    rows = load_sample_corpus()
    console.print(
        f"[bold]Indexing[/bold] {len(rows)} passages from {sample_corpus_path().name} into "
        f"collection {DEMO_COLLECTION!r} at {db or default_db_path()}"
    )
    added = chroma.add_texts(
        [r["text"] for r in rows],
        metadatas=[{k: v for k, v in r.items() if k not in ("id", "text")} for r in rows],
        ids=[r["id"] for r in rows],
        show_progress=True,
    )
    name = reranker.name if reranker else "none"
    console.print(f"{added.added} added, {added.unchanged} already there. Reranker: {name}. Pipeline: {spec}\n")
    pipe = TwoStagePipeline(recall_over(spec, chroma), reranker, limit=limit, top_k=top_k)
    order = "cosine" if spec.recall.kind == "dense" else f"{spec.recall.kind} recall"
    for q in query or DEMO_QUERIES:
        result = pipe.run(q)
        table = Table(title=f"[bold]{q}[/bold]", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column(f"stage 1 only: top {top_k} of {limit} by {order}")
        table.add_column("after rerank (recall rank → rerank rank)")
        for i in range(top_k):
            left = result.candidates[i] if i < len(result.candidates) else None
            right = result.hits[i] if i < len(result.hits) else None
            table.add_row(
                str(i + 1),
                f"{left.id}  [dim]{left.score:.2f}[/dim]\n[dim]{snippet(left.text, 60)}[/dim]" if left else "",
                f"{right.id}  [dim]{right.recall_rank} → {right.rerank_rank}, {right.score:.2f}[/dim]\n"
                f"[dim]{snippet(right.text, 60)}[/dim]"
                if right
                else "",
            )
        console.print(table)
        t = result.timings
        console.print(f"[dim]recall {t.recall_s * 1000:.0f} ms · rerank {t.rerank_s * 1000:.0f} ms[/dim]\n")
    console.print(
        'Next: `twostage ingest YOUR_FILES --collection NAME`, then `twostage query "..." --collection NAME`.'
    )
