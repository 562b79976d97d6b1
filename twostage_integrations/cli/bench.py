"""``twostage bench``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .app import (
    SPEC_RULE,
    EmbeddingOpt,
    LongDocsOpt,
    RerankBackendOpt,
    RerankModelOpt,
    app,
    check_long_docs_flag,
    fail,
    friendly_errors,
    parse_stage,
    pipeline_spec,
)

if TYPE_CHECKING:
    from rich.table import Table

    from ..bench import BenchReport


def _split(values: list[str] | None) -> list[str] | None:
    # --systems a,b and --systems a --systems b both work
    return [v.strip() for value in values for v in value.split(",") if v.strip()] if values else None


# The longer options, named so bench_command's signature stays readable.
DatasetArg = Annotated[
    Path | None,
    typer.Argument(help="BEIR folder (test split). Default: the bundled sample corpus and demo queries."),
]
MaxDocsOpt = Annotated[
    int | None,
    typer.Option(help="Keep N documents: the chosen queries' relevant ones plus seeded random others."),
]
LimitsOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated limits, e.g. 20,50,100: one table per limit (instead of --limit); with "
        "--preset/--pipeline every row, and the native stacks beside them, recall each limit in turn."
    ),
]
MaxLengthOpt = Annotated[
    int | None,
    typer.Option(help="Token limit for every system's cross-encoder. Default: each stack's own."),
]
SystemsOpt = Annotated[
    list[str] | None,
    typer.Option(help="Comma-separated systems to run. Default: all (twostage always runs)."),
]
StageOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--stage",
        help="Also time system twostage-cascade: the same recall reranked by a cascade of these cross-encoders, "
        "MODEL[:KEEP][@backend=B,max_length=N] (default: --rerank-backend, --rerank-max-length), repeatable, "
        "in order, e.g. --stage ce:30@backend=onnx-int8,max_length=64 --stage ce. KEEP must be between "
        "--top-k and --limit.",
    ),
]
BenchPipelineOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--pipeline",
        help="Time this pipeline spec as one row (repeatable; a preset name works too), e.g. "
        "--pipeline exact --pipeline 'dense:20 > default@backend=onnx-int8 > top_k=5', next to native LangChain, "
        "LlamaIndex and sentence-transformers' ONNX/OpenVINO backends. " + SPEC_RULE,
        show_default=False,
    ),
]
BenchPresetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--preset",
        help="Time these presets, one row each, comma-separated or repeated (e.g. --preset exact,fast,fastest); "
        "the default pipeline leads and every row's top-k is compared with exact's. Instead of --pipeline.",
        show_default=False,
    ),
]
DbOpt = Annotated[
    Path | None, typer.Option("--db", help="Keep the embedded collection here for re-runs. Default: a temp dir.")
]


@app.command("bench")
@friendly_errors
def bench_command(
    dataset_dir: DatasetArg = None,
    max_queries: Annotated[int, typer.Option(help="Queries to time (the demo queries are cycled).")] = 50,
    max_docs: MaxDocsOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-l", help="Candidates recalled per query.")] = 20,
    limits: LimitsOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Results kept after reranking.")] = 5,
    rerank_model: RerankModelOpt = None,
    rerank_backend: RerankBackendOpt = None,
    rerank_max_length: MaxLengthOpt = None,
    embedding_model: EmbeddingOpt = None,
    repeat: Annotated[int, typer.Option(help="Timed runs of each query per system.")] = 1,
    warmup: Annotated[int, typer.Option(help="Untimed queries through every system first.")] = 2,
    systems: SystemsOpt = None,
    stage: StageOpt = None,
    db: DbOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every number as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also save a bar chart (PNG, SVG or PDF) here.")] = None,
    pipeline: BenchPipelineOpt = None,
    preset: BenchPresetOpt = None,
    long_docs: LongDocsOpt = None,
) -> None:
    """Time the two-stage pipeline next to the same pipeline built natively in LangChain and LlamaIndex
    (same collection, models and queries, one process), and check they return the same top-k ids.

    --preset A,B / --pipeline SPEC (repeatable): one row per pipeline, the default pipeline first, next to the
    native stacks and sentence-transformers' ONNX/OpenVINO backends (which rebuild the exact preset); each row's
    top-k set is compared with exact's; --long-docs max scores long passages window by window in every row (the
    native stacks cut them). Without them: the systems of --systems; time a cascade with --stage."""
    from rich.console import Console

    from ..bench import run_benchmarks, spec_rows

    try:
        chosen = [int(x) for x in limits.split(",") if x.strip()] if limits else [limit]
    except ValueError:
        raise fail(f"--limits must be comma-separated integers, got {limits!r}") from None
    _check_long_docs(long_docs, pipeline or preset)
    if pipeline or preset:
        rows = _row_specs(pipeline, preset)  # refuses --limit, --rerank-model... given with them
        _check_before_bench(dataset_dir, embedding_model, json_out, plot)
        depths: list[int | None] = list(chosen) if limits else [None]  # --limits: every row recalls each depth
        default = pipeline_spec(None, None)  # what `twostage query` runs with no flags
        for depth in depths:  # every depth's rows read before any work (a depth below a stage's keep...)
            spec_rows(rows, default, depth, long_docs)
        run: dict[str, Any] = {"max_queries": max_queries, "max_docs": max_docs, "embedding_model": embedding_model}
        run["long_docs"] = long_docs
        run |= {"repeat": repeat, "warmup": warmup, "systems": _split(systems), "default": default}
        _bench_rows(rows, depths, dataset_dir, db, run, json_out, plot)
        return

    model: dict[str, Any] = {
        "rerank_model": rerank_model,
        "rerank_backend": rerank_backend,
        "rerank_max_length": rerank_max_length,
    }
    _check_before_bench(dataset_dir, embedding_model, json_out, plot)  # the options first, then the files
    console = Console()
    reports = run_benchmarks(
        dataset_dir,
        limits=chosen,
        max_queries=max_queries,
        max_docs=max_docs,
        top_k=top_k,
        **model,
        embedding_model=embedding_model,
        repeat=repeat,
        warmup=warmup,
        systems=_split(systems),
        db=db,
        stages=[parse_stage(s) for s in stage] if stage else None,
    )
    _print_reports(console, reports)
    _save(console, reports, json_out, plot)


def _check_long_docs(long_docs: str | None, rows: object) -> None:
    """``--long-docs``: a known way, and only with pipeline rows (the classic systems compare every stack's top-k
    with stacks that cannot score windows)."""
    check_long_docs_flag(long_docs)
    if long_docs is not None and not rows:
        raise fail(f"--long-docs {long_docs} applies to pipeline rows: add --preset fast (or --pipeline SPEC)")


def _row_specs(pipelines: list[str] | None, presets: list[str] | None) -> list[str]:
    """The ``--pipeline`` values or the ``--preset`` names, each read once here so a bad one or a pipeline option
    given with them fails before any work (exit 2, one line)."""
    if pipelines and presets:
        raise fail("--pipeline and --preset both name the pipeline; pass one (--pipeline takes preset names too)")
    values = pipelines or _split(presets) or []
    allow = ("limits", "long_docs")  # bench's own: one table per depth; windows in every row
    for value in values:
        pipeline_spec(value, None, allow=allow) if pipelines else pipeline_spec(None, value, allow=allow)
    return values


def _bench_rows(
    rows: list[str],
    limits: list[int | None],
    dataset_dir: Path | None,
    db: Path | None,
    run: dict[str, Any],
    json_out: Path | None,
    plot: Path | None,
) -> None:
    """``bench --preset/--pipeline``: time the rows next to the native stacks and the peers (once per recall depth
    of ``--limits``, on one collection), print, save."""
    import tempfile

    from rich.console import Console

    from ..bench import run_preset_benchmark

    console = Console()
    reports = []
    with tempfile.TemporaryDirectory(prefix="twostage-bench-") as tmp:
        for depth in limits:
            report = run_preset_benchmark(
                dataset_dir, pipelines=rows, limit=depth, **run, db=db if db is not None else tmp
            )  # one collection for every depth: the passages are embedded once
            console.print(preset_table(report))
            _print_mismatches(console, report)
            reports.append(report)
    _save(console, reports, json_out, plot)


def _check_before_bench(
    dataset_dir: Path | None, embedding_model: str | None, json_out: Path | None, plot: Path | None
) -> None:
    """The dataset's files, an embedding model named by path and the output paths, checked before any model
    loads or any passage is indexed (run_benchmarks checks the rest up front)."""
    from ..evaluation.runner import require_beir
    from ..models import check_model_path
    from .evaluate import check_outputs

    if dataset_dir is not None:
        require_beir(dataset_dir, "test")
    if embedding_model:
        check_model_path(embedding_model, kind="embedding")
    check_outputs([json_out, plot])


def _print_reports(console: Any, reports: list[BenchReport]) -> None:
    """Each report's table, the cascade's stages and the first top-k mismatches."""
    for report in reports:
        console.print(report_table(report))
        for s in report.systems:
            if s.cascade:
                console.print(f"{s.name}: {s.description}")
        _print_mismatches(console, report)


def _print_mismatches(console: Any, report: BenchReport) -> None:
    """The first queries where a system's top-k differs from the reference's."""
    for s in report.systems:
        expected = " (a cascade: expected to differ somewhat)" if s.cascade else ""
        for m in s.mismatches:
            console.print(
                f"[yellow]{s.name} differs on {m['query_id']!r}[/yellow]{expected}: "
                f"{m[s.name]} vs {m[report.reference]}"
            )


def _save(console: Any, reports: list[BenchReport], json_out: Path | None, plot: Path | None) -> None:
    """``--json`` (one object, or a list for several limits) and ``--plot`` (one chart per limit)."""
    from ..bench import plot_report, write_json

    if json_out:
        if len(reports) == 1:
            console.print(f"JSON: {write_json(reports[0], json_out)}")
        else:
            json_out.write_text(json.dumps([r.to_dict() for r in reports], indent=2), encoding="utf-8")
            console.print(f"JSON: {json_out}")
    if plot:
        for report in reports:
            path = plot if len(reports) == 1 else plot.with_name(f"{plot.stem}-limit{report.limit}{plot.suffix}")
            console.print(f"plot: {plot_report(report, path)}")


def _stage_split(stages: dict[str, float] | None, n_cascade: int) -> str:
    """``recall / rerank`` medians; a cascade adds each stage's, e.g. ``12.0 / 40.1 (8.2 + 31.5)``."""
    if not stages:
        return "-"
    text = f"{stages['recall']:.1f} / {stages['rerank']:.1f}"
    per_stage = [stages[f"rerank {i}"] for i in range(1, n_cascade + 1) if f"rerank {i}" in stages]
    return text + (" (" + " + ".join(f"{ms:.1f}" for ms in per_stage) + ")" if per_stage else "")


def report_table(report: BenchReport) -> Table:
    """The rich table ``twostage bench`` prints.

    Args:
        report: One limit's report.

    Returns:
        Its table: per system the latencies, speed-ups, stage split, agreement and engine counts.
    """
    from rich.table import Table

    m = report.machine
    load = "/".join(f"{x:.1f}" for x in (m.get("load_avg_start") or [])[:1] + (m.get("load_avg_end") or [])[:1])
    peak = m.get("matmul_peak_gflops")
    table = Table(
        title=(
            f"{report.dataset}: {report.n_queries} queries × {report.repeat}, {report.n_docs} docs, "
            f"limit {report.limit}, top_k {report.top_k}; twostage engine: {report.rerank_backend}\n"
            f"{_cpu(m)}, torch {m['versions'].get('torch')} ({m.get('torch_threads')} threads), "
            f"onnxruntime {m['versions'].get('onnxruntime')}, matmul peak "
            + (f"{peak:.0f} GFLOP/s" if peak else "?")
            + f", load {load} (start/end)"
        ),
        title_justify="left",
    )
    baselines = ["langchain", "llamaindex"]
    columns: tuple[str, ...] = (
        "system",
        "median ms",
        "p95 ms",
        "q/s",
        "pairs/s",
        "speed × LangChain",
        "speed × LlamaIndex",
    )
    if any(s.cascade for s in report.systems):  # a cascade is there to beat the single strong model
        baselines.append("twostage")
        columns += ("speed × twostage",)
    columns += ("recall / rerank ms",)
    for col in columns:
        table.add_column(col, justify="left" if col == "system" else "right")
    for col in ("same top-k", "max tokens", "cut pairs", "GFLOP/s (peak)"):
        table.add_column(col, justify="right")
    for s in report.systems:
        stages = s.stage_medians_ms()
        ratios = [report.ratio(s.name, b) for b in baselines]
        # "speed × LangChain": how many times native LangChain's median latency this system's is (2.00 = twice as
        # fast). The JSON keeps the plain latency ratio (ratio_vs, below 1 = faster).
        speedups = [1.0 / r if r else None for r in ratios]
        gflops, share = report.gflops(s), report.peak_share(s)
        table.add_row(
            s.name + (f" [{s.backend}]" if s.backend else ""),
            f"{s.median_ms:.1f}",
            f"{s.p95_ms:.1f}",
            f"{s.queries_per_s:.2f}",
            f"{s.pairs_per_s:.1f}",
            *(f"{r:.2f}" if r is not None else "-" for r in speedups),
            _stage_split(stages, len(s.cascade)),
            f"{s.agreement:.0%}",
            str(s.rerank_max_length),
            f"{s.truncated}/{s.pairs}" if s.truncated is not None else "-",
            f"{gflops:.0f} ({share:.0%})" if gflops is not None and share is not None else "-",
        )
    if report.serve:  # filled from bench/serve.py's run_serve_benchmark(...)
        table.caption = f"serve: {report.serve}"
    return table


def _cpu(machine: dict[str, Any]) -> str:
    """``Intel(R) Xeon(R) ..., 2 cores (2 CPUs)``: lscpu's model name and core count, then the logical CPUs."""
    cores = machine.get("cores")
    model = machine.get("cpu_model") or "?"
    return f"{model}, {cores if cores is not None else '?'} cores ({machine.get('cpu_count')} CPUs)"


def preset_table(report: BenchReport) -> Table:
    """The table ``twostage bench --preset/--pipeline`` prints: per row its engine, ms/query, speed × the native
    stacks and the share of queries whose top-k set equals the ``exact`` row's.

    Args:
        report: From :func:`~twostage_integrations.bench.run_preset_benchmark`.

    Returns:
        The table; a peer that did not run shows why in place of its numbers.
    """
    from rich.markup import escape  # reasons name pip extras: "optimum[onnxruntime]" is not markup
    from rich.table import Table

    m = report.machine
    load = "/".join(f"{x:.1f}" for x in (m.get("load_avg_start") or [])[:1] + (m.get("load_avg_end") or [])[:1])
    table = Table(
        title=(
            f"{report.dataset}: {report.n_queries} queries × {report.repeat}, {report.n_docs} docs, top_k "
            f"{report.top_k}; native stacks and ST peers rebuild {report.reference} (limit {report.limit})\n"
            f"CPU: {_cpu(m)}, load {load} (start/end)"
        ),
        title_justify="left",
    )
    columns = ("row", "engine", "ms/query", "p95 ms", "speed × LangChain", "speed × LlamaIndex")
    for col in (*columns, f"same top-{report.top_k} as {report.reference}", "spec"):
        table.add_column(col, justify="left" if col in ("row", "engine", "spec") else "right")
    for s in report.systems:
        if not s.ran:
            table.add_row(escape(s.name), escape(s.unavailable or "not run"), *["-"] * 5, "")
            continue
        # speed × LangChain: native LangChain's median over this row's (2.00 = twice as fast)
        speed = [report.ratio(s.name, b) for b in ("langchain", "llamaindex")]
        table.add_row(
            escape(s.name),
            escape(s.engine or s.backend or "-"),
            f"{s.median_ms:.1f}",
            f"{s.p95_ms:.1f}",
            *(f"{1.0 / r:.2f}" if r else "-" for r in speed),
            f"{s.same_set:.0%}" if s.same_set is not None else "-",
            escape(s.spec or ""),
        )
    return table
