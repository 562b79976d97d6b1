"""``twostage serve``."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..config import TWOSTAGE_SERVE_API_KEY
from ..errors import TwoStageError
from .app import (
    LongDocsOpt,
    PipelineOpt,
    PresetOpt,
    RerankBackendOpt,
    RerankMaxLengthOpt,
    app,
    fail,
    friendly_errors,
    pipeline_spec,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..rerank.base import Reranker
    from ..spec import PipelineSpec, StageSpec


# Long options named, so serve's signature stays readable (defaults in docs/cohere_and_serve.md).
MaxBodyBytesOpt = Annotated[int, typer.Option(help="Largest request body in bytes, counted as it arrives (413 above).")]
MaxQueryCharsOpt = Annotated[int, typer.Option(help="Longest query in characters (400 above).")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Cross-encoder folder or hub id (default: $TWOSTAGE_RERANK_MODEL, else ms-marco-MiniLM-L-6-v2).",
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        envvar=TWOSTAGE_SERVE_API_KEY.name,
        help="Require 'Authorization: Bearer KEY' (clients pass it as their Cohere API key).",
        show_default=False,
    ),
]
MaxBatchOpt = Annotated[
    int,
    typer.Option(
        help="Dynamic batching: most (query, document) pairs merged from concurrent requests into one "
        "model call; 0 turns merging off."
    ),
]
CorsOriginOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Let web pages from this origin (e.g. https://app.example.com; '*' for any) call the API from a "
        "browser; repeatable. Default: CORS off.",
        show_default=False,
    ),
]


@app.command()
@friendly_errors
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind; the default keeps the server on this machine.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    max_batch: MaxBatchOpt = 256,
    batch_wait_ms: Annotated[
        float, typer.Option(help="Dynamic batching: how long to wait for more requests once the queue is empty.")
    ] = 5.0,
    batching: Annotated[
        bool, typer.Option("--batching/--no-batching", help="Merge concurrent requests into one model call.")
    ] = True,
    rerank_backend: RerankBackendOpt = None,
    rerank_max_length: RerankMaxLengthOpt = None,
    long_docs: LongDocsOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="(query, document) pairs per forward pass inside a model call (default: the engine's)."),
    ] = None,
    max_documents: Annotated[int, typer.Option(help="Most documents accepted in one request (413 above).")] = 1000,
    max_body_bytes: MaxBodyBytesOpt = 8 * 1024 * 1024,
    max_query_chars: MaxQueryCharsOpt = 8192,
    max_queue: Annotated[
        int, typer.Option(help="Most requests queued or in progress; one more gets 429 with Retry-After.")
    ] = 64,
    request_timeout: Annotated[
        float, typer.Option(help="Seconds a request may wait for its scores before a 504; 0 = no limit.")
    ] = 60.0,
    graceful_timeout: Annotated[
        float, typer.Option(help="On SIGTERM/Ctrl+C, seconds to let requests in progress finish.")
    ] = 30.0,
    cache_size: Annotated[int, typer.Option(help="LRU cache of (query, document) scores, in pairs; 0 = off.")] = 0,
    log_requests: Annotated[
        bool,
        typer.Option(help="One stderr line per request: method, path, status, documents, latency (never text)."),
    ] = True,
    api_key: ApiKeyOpt = None,
    cors_origin: CorsOriginOpt = None,
    pipeline: PipelineOpt = None,
    preset: PresetOpt = None,
) -> None:
    """Serve a local cross-encoder behind the common rerank APIs: POST /v2/rerank (Cohere), POST /rerank (TEI),
    POST /v1/rerank (Cohere v1, Jina, Voyage, Infinity), GET /health, GET /ready.

    Their clients work against it with a changed base URL, e.g.
    cohere.ClientV2(api_key=..., base_url="http://127.0.0.1:8080") or voyageai.Client(base_url=".../v1").
    The model loads in the background (/health answers at once, /ready once it is loaded and warmed);
    SIGTERM or Ctrl+C finishes the requests in progress, then exits 0.
    --pipeline / --preset: serve hosts the spec's one local cross-encoder stage (with its backend, max_length;
    no keep, fuse= or none); its recall and top_k are unused, as clients send documents and top_n.
    """
    limits = {"max_documents": max_documents, "max_body_bytes": max_body_bytes, "max_query_chars": max_query_chars}
    _check_limits(  # the options first, then the model folder, then the port
        max_queue, limits, batch_size, (max_batch, cache_size, batch_wait_ms, request_timeout, graceful_timeout)
    )
    name, stage = _served(pipeline, preset, model, rerank_backend, rerank_max_length, long_docs)
    sockets, port = _listen(host, port)  # before loading and "serving ... at" (port: the real one for --port 0)
    _route_server_logs(log_requests)
    load = _loader(name, batch_size, stage, cache_size)
    server_app = _build_app(
        load, api_key, limits, cors_origin or [], batching, max_batch, batch_wait_ms, max_queue, request_timeout
    )
    _announce(name, host, port, api_key, batching and max_batch > 0, max_batch, max_queue, cache_size)
    _run_until_stopped(server_app, host, port, sockets, graceful_timeout)  # closes the sockets


def _local_model_name(model: str | None) -> str:
    """The cross-encoder to serve; a hosted model's name is refused (serve hosts a local model)."""
    from ..models import check_model_path, resolve_rerank_model
    from ..rerank.registry import CROSS_ENCODER, route_for

    name = resolve_rerank_model(model)
    route = route_for(name)  # the names make_reranker reads; an existing folder is always a cross-encoder
    if route.kind != CROSS_ENCODER:
        raise fail(f"{name!r} {route.what}; serve hosts a local cross-encoder: pass --model FOLDER_OR_HUB_ID")
    return check_model_path(name, kind="rerank")  # a missing folder fails now, not after "serving ... at"


def _listen(host: str, port: int) -> tuple[list[socket.socket], int]:
    """The listening sockets the server will use (handed to uvicorn, so nothing can take the port in between)
    and their port."""
    from ..server.run import bind_sockets

    sockets = bind_sockets(host, port)
    return sockets, sockets[0].getsockname()[1]


def _check_limits(
    max_queue: int, request_limits: dict[str, int], batch_size: int | None, at_least_zero: tuple[float, ...]
) -> None:
    """Refuse out-of-range options before anything loads (exit 2); ``request_limits``: --max-documents,
    --max-body-bytes and --max-query-chars by field name; ``at_least_zero``: --max-batch, --cache-size,
    --batch-wait-ms and the timeouts."""
    limits = [(max_queue, "--max-queue")] + [(v, "--" + k.replace("_", "-")) for k, v in request_limits.items()]
    for value, option in limits + ([(batch_size, "--batch-size")] if batch_size is not None else []):
        if value < 1:
            raise fail(f"{option} must be >= 1, got {value}")
    if any(value < 0 for value in at_least_zero):
        raise fail("--max-batch, --cache-size, --batch-wait-ms and the timeouts must be >= 0")


def _served(
    pipeline: str | None,
    preset: str | None,
    model: str | None,
    backend: str | None,
    max_length: int | None,
    long_docs: str | None = None,
) -> tuple[str, StageSpec]:
    """The cross-encoder to serve, resolved, and its stage: from --pipeline/--preset, else --model,
    --rerank-backend, --rerank-max-length and --long-docs."""
    engine: dict[str, Any] = {"rerank_backend": backend, "rerank_max_length": max_length, "long_docs": long_docs}
    spec = pipeline_spec(pipeline, preset, rerank_model=model, **engine)
    stage = served_stage(spec, note=pipeline is not None or preset is not None)
    return _local_model_name(stage.model), stage


def served_stage(spec: PipelineSpec, *, note: bool = False) -> StageSpec:
    """The one rerank stage of ``spec`` that serve hosts (exit 2, one line, for any other shape).

    Args:
        spec: The pipeline (from --pipeline/--preset, or --model/--rerank-backend).
        note: Say on stderr that the spec's recall and top_k are not used (when the user gave a spec).

    Returns:
        Its stage.
    """
    if len(spec.stages) != 1 or spec.fusion is not None or spec.stages[0].keep is not None:
        raise fail(
            f"serve hosts one cross-encoder; the pipeline {str(spec)!r} is not 'RECALL > MODEL[@backend=B,"
            "max_length=N]' (no keep, no fuse=, not none)"
        )
    if note:
        typer.echo("note: serve hosts the spec's rerank stage only; clients send the documents and top_n", err=True)
    return spec.stages[0]


def _loader(name: str, batch_size: int | None, stage: StageSpec, cache_size: int) -> Callable[[], Reranker]:
    """Loads the cross-encoder of ``stage`` (``name``: its model, resolved; behind a score cache when
    ``cache_size``) on the server's worker thread."""

    def load() -> Reranker:
        from ..spec import build

        options: dict[str, Any] = {"batch_size": batch_size, **stage.options}
        reranker: Any = build.make_reranker(name, **{"backend": None, **options})
        if cache_size:
            from ..rerank.cache import ScoreCache

            return ScoreCache(reranker, maxsize=cache_size)
        return reranker

    return load


def _route_server_logs(log_requests: bool) -> None:
    """The server's log lines (and, with ``log_requests``, one line per request) on stderr."""
    log = logging.getLogger("twostage_integrations.server")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    logging.getLogger("twostage_integrations.server.requests").setLevel(
        logging.INFO if log_requests else logging.WARNING
    )


def _announce(
    name: str, host: str, port: int, api_key: str | None, batching: bool, max_batch: int, max_queue: int, cache: int
) -> None:
    from ..server.run import host_port

    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        typer.echo(f"warning: listening on {host} without --api-key: anyone who can reach it can use it", err=True)
    typer.echo(
        f"serving {name} at http://{host_port(host, port)} (/v2/rerank, /rerank, /v1/rerank; "
        f"auth {'on' if api_key else 'off'}, batching "
        f"{'up to ' + str(max_batch) + ' pairs' if batching else 'off'}, queue {max_queue}, "
        f"cache {cache or 'off'}); loading the model, GET /ready says when; Ctrl+C stops",
        err=True,
    )


def _build_app(
    load: Callable[[], Reranker],
    api_key: str | None,
    request_limits: dict[str, int],
    cors_origins: list[str],
    batching: bool,
    max_batch: int,
    batch_wait_ms: float,
    max_queue: int,
    request_timeout: float,
) -> FastAPI:
    """The app; the model starts loading on its worker thread (``request_timeout`` 0: no limit;
    ``request_limits``: max_documents, max_body_bytes, max_query_chars)."""
    from ..server import create_app

    return create_app(
        load,
        api_key=api_key,
        max_documents=request_limits["max_documents"],
        max_body_bytes=request_limits["max_body_bytes"],
        max_query_chars=request_limits["max_query_chars"],
        cors_origins=cors_origins,
        batching=batching,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_queue=max_queue,
        request_timeout=request_timeout or None,
    )


def _run_until_stopped(
    server_app: FastAPI, host: str, port: int, sockets: list[socket.socket], graceful_timeout: float
) -> None:
    """Serve on ``sockets`` until SIGTERM/Ctrl+C (then drain) or a failed model load, which is raised (exit 2 for
    our typed errors)."""
    from ..server import run_server

    run_server(server_app, host=host, port=port, graceful_timeout=graceful_timeout, sockets=sockets)
    load_error = server_app.state.service.load_error
    if load_error is not None:
        if isinstance(load_error, TwoStageError):
            raise fail(str(load_error))
        raise load_error


SoakOpt = Annotated[
    int | None,
    typer.Option(
        help="Soak instead: start `twostage serve` as a subprocess (the server's defaults plus --rerank-backend), "
        "send N requests and sample the server's RSS (see docs/reliability.md).",
        show_default=False,
    ),
]
DocWordsOpt = Annotated[
    str | None,
    typer.Option(
        help="With --soak: cut each document to a random window of LO-HI words, e.g. 20-60 (default: whole texts).",
        show_default=False,
    ),
]
CompareOpt = Annotated[
    list[Path] | None,
    typer.Option(help="Plot these --soak --json files into --plot, one line each (runs nothing); repeatable."),
]


@app.command("bench-serve")
@friendly_errors
def bench_serve(
    dataset_dir: Annotated[
        Path | None,
        typer.Argument(help="BEIR folder whose passages and queries to send. Default: the bundled sample corpus."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Cross-encoder folder or hub id (default: $TWOSTAGE_RERANK_MODEL)."),
    ] = None,
    clients: Annotated[int, typer.Option(help="Concurrent clients, each with one request out at a time.")] = 8,
    documents: Annotated[
        int | None, typer.Option(help="Documents per request (default: 20; 10 with --soak).", show_default=False)
    ] = None,
    requests: Annotated[int, typer.Option(help="Timed requests per mode (the same ones in both modes).")] = 64,
    max_batch: Annotated[int, typer.Option(help="Pairs merged into one model call with batching on.")] = 256,
    batch_wait_ms: Annotated[float, typer.Option(help="Batching wait once the queue is empty.")] = 5.0,
    batch_size: Annotated[
        int | None, typer.Option(help="Pairs per forward pass inside a model call (default: the engine's).")
    ] = None,
    rerank_backend: RerankBackendOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the numbers as JSON here.")] = None,
    soak: SoakOpt = None,
    rss_every: Annotated[int, typer.Option(help="With --soak: sample the server's RSS every N requests.")] = 100,
    doc_words: DocWordsOpt = None,
    plot: Annotated[Path | None, typer.Option(help="With --soak or --compare: RSS vs requests (PNG/SVG/PDF).")] = None,
    compare: CompareOpt = None,
) -> None:
    """Time `twostage serve` on 127.0.0.1 with concurrent clients, dynamic batching off, then on; or, with
    --soak N, watch a `twostage serve` subprocess's memory over N requests."""
    import json

    from ..bench import run_serve_benchmark
    from ..models import resolve_rerank_model
    from ..rerank.cross_encoder import CrossEncoderReranker

    if compare:
        _plot_compare(compare, plot)
        return
    corpus = queries = None
    if dataset_dir is not None:
        from ..evaluation.beir import load_beir

        data = load_beir(dataset_dir)
        corpus, queries = list(data.corpus.values()), list(data.queries.values())
    if soak is not None:
        options = {"clients": clients, "documents": documents or 10, "rss_every": rss_every, "doc_words": doc_words}
        _soak(resolve_rerank_model(model), rerank_backend, soak, options, corpus, queries, json_out, plot)
        return
    reranker = CrossEncoderReranker(resolve_rerank_model(model), batch_size=batch_size, backend=rerank_backend)
    report = run_serve_benchmark(
        reranker,
        clients=clients,
        documents=documents or 20,
        requests=requests,
        corpus=corpus,
        queries=queries,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
    )
    typer.echo(report.table())
    if json_out:
        json_out.write_text(json.dumps(report.as_dict(), indent=2))
        typer.echo(f"JSON: {json_out}")


def _word_range(text: str | None) -> tuple[int, int] | None:
    """--doc-words LO-HI (or one number N: exactly N words), checked (exit 2 on a bad one)."""
    if text is None:
        return None
    lo, _, hi = text.partition("-")
    try:
        words = (int(lo), int(hi or lo))
    except ValueError:
        raise fail(f"--doc-words must be LO-HI words, e.g. 20-60, got {text!r}") from None
    if not 1 <= words[0] <= words[1]:
        raise fail(f"--doc-words must be LO-HI with 1 <= LO <= HI, got {text!r}")
    return words


def _soak(
    model: str,
    backend: str | None,
    requests: int,
    options: dict[str, Any],
    corpus: list[str] | None,
    queries: list[str] | None,
    json_out: Path | None,
    plot: Path | None,
) -> None:
    """``--soak N``: run it, print the table, save JSON and plot; exit 1 when any request failed."""
    from ..bench.soak import run_soak_benchmark, write_soak_json
    from ..bench.soak_plot import plot_soak
    from ..models import check_model_path
    from .evaluate import check_outputs

    for value, option in [
        (requests, "--soak"),
        (options["clients"], "--clients"),
        (options["rss_every"], "--rss-every"),
    ]:
        if value < 1:
            raise fail(f"{option} must be >= 1, got {value}")
    words = _word_range(options.pop("doc_words"))
    check_outputs([json_out, plot])
    # A soak is long and often stopped with kill/SIGTERM: exit through Python so the server subprocess it
    # started is stopped by run_soak_benchmark's cleanup instead of being left running (orphaned) on its port.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run_soak_benchmark(
        check_model_path(model, kind="rerank"),
        backend=backend,
        requests=requests,
        doc_words=words,
        corpus=corpus,
        queries=queries,
        checkpoint=json_out,  # rewritten as the samples come in: a stopped soak keeps its curve
        **options,
    )
    typer.echo(report.table())
    if json_out:
        typer.echo(f"JSON: {write_soak_json(report, json_out)}")
    if plot:
        typer.echo(f"plot: {plot_soak([report], plot)}")
    if report.errors:
        typer.echo(
            f"error: {report.errors} of {requests} requests failed (first: {report.error_examples[0]})", err=True
        )
        raise typer.Exit(1)


def _plot_compare(files: list[Path], plot: Path | None) -> None:
    """``--compare A.json B.json --plot OUT``: the saved soaks' tables and one plot with a line each."""
    from ..bench.soak import read_soak_json
    from ..bench.soak_plot import plot_soak

    if plot is None:
        raise fail("--compare needs --plot FILE (the image to write)")
    reports = [read_soak_json(f) for f in files]
    for report in reports:
        typer.echo(report.table())
    typer.echo(f"plot: {plot_soak(reports, plot)}")
