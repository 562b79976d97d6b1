"""``twostage serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import TwoStageError
from .app import RerankBackendOpt, app, fail, friendly_errors


@app.command()
@friendly_errors
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Cross-encoder folder or hub id (default: $TWOSTAGE_RERANK_MODEL, else ms-marco-MiniLM-L-6-v2).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; the default keeps the server on this machine.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    max_batch: Annotated[
        int,
        typer.Option(
            help="Dynamic batching: most (query, document) pairs merged from concurrent requests into one "
            "model call; 0 turns merging off."
        ),
    ] = 256,
    batch_wait_ms: Annotated[
        float, typer.Option(help="Dynamic batching: how long to wait for more requests once the queue is empty.")
    ] = 5.0,
    batching: Annotated[
        bool, typer.Option("--batching/--no-batching", help="Merge concurrent requests into one model call.")
    ] = True,
    rerank_backend: RerankBackendOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="(query, document) pairs per forward pass inside a model call (default: the engine's)."),
    ] = None,
    max_documents: Annotated[int, typer.Option(help="Most documents accepted in one request (413 above).")] = 1000,
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
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TWOSTAGE_SERVE_API_KEY",
            help="Require 'Authorization: Bearer KEY' (clients pass it as their Cohere API key).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a local cross-encoder behind the common rerank APIs: POST /v2/rerank (Cohere), POST /rerank (TEI),
    POST /v1/rerank (Cohere v1, Jina, Voyage, Infinity), GET /health, GET /ready.

    Their clients work against it with a changed base URL, e.g.
    cohere.ClientV2(api_key=..., base_url="http://127.0.0.1:8080") or voyageai.Client(base_url=".../v1").
    The model loads in the background (/health answers at once, /ready once it is loaded and warmed);
    SIGTERM or Ctrl+C finishes the requests in progress, then exits 0.
    """
    import logging

    from ..models import resolve_rerank_model
    from ..rerank.cross_encoder import CrossEncoderReranker
    from ..rerank.registry import CROSS_ENCODER, route_for
    from ..server import create_app, run_server

    name = resolve_rerank_model(model)
    route = route_for(name)  # the names make_reranker reads; an existing folder is always a cross-encoder
    if route.kind != CROSS_ENCODER:
        raise fail(f"{name!r} {route.what}; serve hosts a local cross-encoder: pass --model FOLDER_OR_HUB_ID")
    limits = [(max_queue, "--max-queue"), (max_documents, "--max-documents")]
    for value, option in limits + ([(batch_size, "--batch-size")] if batch_size is not None else []):
        if value < 1:
            raise fail(f"{option} must be >= 1, got {value}")
    if max_batch < 0 or cache_size < 0 or batch_wait_ms < 0 or request_timeout < 0 or graceful_timeout < 0:
        raise fail("--max-batch, --cache-size, --batch-wait-ms and the timeouts must be >= 0")

    def load():
        reranker = CrossEncoderReranker(name, batch_size=batch_size, backend=rerank_backend)
        if cache_size:
            from ..rerank.cache import ScoreCache

            return ScoreCache(reranker, maxsize=cache_size)
        return reranker

    log = logging.getLogger("twostage_integrations.server")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    logging.getLogger("twostage_integrations.server.requests").setLevel(
        logging.INFO if log_requests else logging.WARNING
    )
    server_app = create_app(
        load,
        api_key=api_key,
        max_documents=max_documents,
        batching=batching,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_queue=max_queue,
        request_timeout=request_timeout or None,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        typer.echo(f"warning: listening on {host} without --api-key: anyone who can reach it can use it", err=True)
    typer.echo(
        f"serving {name} at http://{host}:{port} (/v2/rerank, /rerank, /v1/rerank; "
        f"auth {'on' if api_key else 'off'}, batching "
        f"{'up to ' + str(max_batch) + ' pairs' if batching and max_batch else 'off'}, queue {max_queue}, "
        f"cache {cache_size or 'off'}); loading the model, GET /ready says when; Ctrl+C stops",
        err=True,
    )
    run_server(server_app, host=host, port=port, graceful_timeout=graceful_timeout)
    load_error = server_app.state.service.load_error
    if load_error is not None:
        if isinstance(load_error, TwoStageError):
            raise fail(str(load_error))
        raise load_error


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
    documents: Annotated[int, typer.Option(help="Documents per request.")] = 20,
    requests: Annotated[int, typer.Option(help="Timed requests per mode (the same ones in both modes).")] = 64,
    max_batch: Annotated[int, typer.Option(help="Pairs merged into one model call with batching on.")] = 256,
    batch_wait_ms: Annotated[float, typer.Option(help="Batching wait once the queue is empty.")] = 5.0,
    batch_size: Annotated[
        int | None, typer.Option(help="Pairs per forward pass inside a model call (default: the engine's).")
    ] = None,
    rerank_backend: RerankBackendOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the numbers as JSON here.")] = None,
) -> None:
    """Time `twostage serve` on 127.0.0.1 with concurrent clients, dynamic batching off, then on."""
    import json

    from ..evaluation.serve_bench import run_serve_benchmark
    from ..models import resolve_rerank_model
    from ..rerank.cross_encoder import CrossEncoderReranker

    corpus = queries = None
    if dataset_dir is not None:
        from ..evaluation.beir import load_beir

        data = load_beir(dataset_dir)
        corpus, queries = list(data.corpus.values()), list(data.queries.values())
    reranker = CrossEncoderReranker(resolve_rerank_model(model), batch_size=batch_size, backend=rerank_backend)
    report = run_serve_benchmark(
        reranker,
        clients=clients,
        documents=documents,
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
