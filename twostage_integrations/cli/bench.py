"""``twostage bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import EmbeddingOpt, RerankModelOpt, app, friendly_errors


def _split(values: list[str] | None) -> list[str] | None:
    # --systems a,b and --systems a --systems b both work
    return [v.strip() for value in values for v in value.split(",") if v.strip()] if values else None


@app.command("bench")
@friendly_errors
def bench_command(
    dataset_dir: Annotated[
        Path | None,
        typer.Argument(help="BEIR folder (test split). Default: the bundled sample corpus and demo queries."),
    ] = None,
    max_queries: Annotated[int, typer.Option(help="Queries to time (the demo queries are cycled).")] = 50,
    max_docs: Annotated[
        int | None,
        typer.Option(help="Keep N documents: the chosen queries' relevant ones plus seeded random others."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-l", help="Candidates recalled per query.")] = 20,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Results kept after reranking.")] = 5,
    rerank_model: RerankModelOpt = None,
    rerank_max_length: Annotated[
        int | None,
        typer.Option(help="Token limit for every system's cross-encoder. Default: each stack's own."),
    ] = None,
    embedding_model: EmbeddingOpt = None,
    repeat: Annotated[int, typer.Option(help="Timed runs of each query per system.")] = 1,
    warmup: Annotated[int, typer.Option(help="Untimed queries through every system first.")] = 2,
    systems: Annotated[
        list[str] | None,
        typer.Option(help="Comma-separated systems to run. Default: all (twostage always runs)."),
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="Keep the embedded collection here for re-runs. Default: a temp dir.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every number as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also save a bar chart (PNG, SVG or PDF) here.")] = None,
) -> None:
    """Time the two-stage pipeline next to the same pipeline built natively in LangChain and LlamaIndex
    (same collection, models and queries, one process), and check they return the same top-k ids."""
    from rich.console import Console

    from ..evaluation.bench import plot_report, run_benchmark, write_json

    console = Console()
    report = run_benchmark(
        dataset_dir,
        max_queries=max_queries,
        max_docs=max_docs,
        limit=limit,
        top_k=top_k,
        rerank_model=rerank_model,
        rerank_max_length=rerank_max_length,
        embedding_model=embedding_model,
        repeat=repeat,
        warmup=warmup,
        systems=_split(systems),
        db=db,
    )
    console.print(report_table(report))
    for s in report.systems:
        for m in s.mismatches:
            console.print(f"[yellow]{s.name} differs on {m['query_id']!r}[/yellow]: {m[s.name]} vs {m['twostage']}")
    if json_out:
        console.print(f"JSON: {write_json(report, json_out)}")
    if plot:
        console.print(f"plot: {plot_report(report, plot)}")


def report_table(report):
    """The rich table ``twostage bench`` prints."""
    from rich.table import Table

    m = report.machine
    load = "/".join(f"{x:.1f}" for x in (m.get("load_avg_start") or [])[:1] + (m.get("load_avg_end") or [])[:1])
    table = Table(
        title=(
            f"{report.dataset}: {report.n_queries} queries × {report.repeat}, {report.n_docs} docs, "
            f"limit {report.limit}, top_k {report.top_k}\n"
            f"{m.get('cpu_count')} CPUs, torch {m['versions'].get('torch')} ({m.get('torch_threads')} threads), "
            f"load {load} (start/end)"
        ),
        title_justify="left",
    )
    for col in ("system", "median ms", "p95 ms", "q/s", "× LangChain", "× LlamaIndex", "recall / rerank ms"):
        table.add_column(col, justify="left" if col == "system" else "right")
    table.add_column("same top-k", justify="right")
    table.add_column("max tokens", justify="right")
    for s in report.systems:
        stages = s.stage_medians_ms()
        ratios = [report.ratio(s.name, b) for b in ("langchain", "llamaindex")]
        table.add_row(
            s.name,
            f"{s.median_ms:.1f}",
            f"{s.p95_ms:.1f}",
            f"{s.queries_per_s:.2f}",
            *(f"{r:.2f}" if r is not None else "-" for r in ratios),
            f"{stages['recall']:.1f} / {stages['rerank']:.1f}" if stages else "-",
            f"{s.agreement:.0%}",
            str(s.rerank_max_length),
        )
    return table
