""":func:`create_app`: the FastAPI app of ``twostage serve``, wiring a :class:`RerankService` to the routes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from ..rerank.base import Reranker
from ..validation import check_positive_int
from . import routes
from .schemas import DEFAULT_MAX_DOCUMENTS, DEFAULT_MAX_QUERY_CHARS
from .service import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, RerankService

# Named for the package, not this module: `twostage serve --log-requests` sets this logger's level.
request_logger = logging.getLogger(__name__.rpartition(".")[0] + ".requests")
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


class _RequestLog:
    """ASGI middleware: one log line per request (method, path, status, documents, latency); never the
    query, the documents or any header, so keys and user text stay out of logs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not request_logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app dies before answering

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            n_docs = scope.get("state", {}).get("n_documents", "-")
            latency_ms = (time.perf_counter() - start) * 1000
            request_logger.info(
                "%s %s %d documents=%s latency_ms=%.1f", scope["method"], scope["path"], status, n_docs, latency_ms
            )


def _allow_cors(app: FastAPI, origins: Sequence[str]) -> None:
    from fastapi.middleware.cors import CORSMiddleware

    # No credentials (cookies): clients authenticate with the Authorization header, which must be allowed.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )


def create_app(
    reranker: Reranker | Callable[[], Reranker],
    *,
    api_key: str | None = None,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    cors_origins: Sequence[str] = (),
    batching: bool = True,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
    request_timeout: float | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """A FastAPI app with ``POST /v2/rerank`` (Cohere's request and response shapes), ``POST /rerank`` (TEI's),
    ``POST /v1/rerank`` (Cohere v1 / Jina / Voyage / Infinity), ``GET /health`` (liveness) and ``GET /ready``
    (readiness). Every route has the same limits, batching and statuses; errors come in each API's body shape.
    ``app.state.service`` is the :class:`RerankService`; ``app.state.stats`` (also in ``/health``) its counters.

    Args:
        reranker: a reranker, or a function that loads one (on a background thread, so ``/health`` answers
            while a big model loads and ``/ready`` says 503 until it is loaded and warmed).
        api_key: when set, requests need ``Authorization: Bearer <api_key>``.
        max_documents: most documents in one request (413 above).
        max_body_bytes: largest request body (413 above).
        max_query_chars: longest query, in characters (400 above).
        cors_origins: browser origins allowed to call the API (CORS); empty: no CORS headers at all, so
            browsers refuse cross-origin calls. ``"*"`` allows any origin.
        batching: merge concurrent requests into one model call (only for rerankers whose ``score_pairs``
            batches across queries; others are served one request at a time).
        max_batch: most (query, document) pairs in one merged call; 0 turns merging off.
        batch_wait_ms: how long to wait for more requests once the queue is empty.
        max_queue: requests admitted and not yet answered; one more gets 429 with ``Retry-After``.
        request_timeout: seconds from admission to answer, else 504 (``None``: no limit).
        on_load_error: called with the exception when loading the reranker fails.

    Returns:
        The app; run it with :func:`run_server` or :func:`serve_in_thread`.

    Raises:
        InvalidParameterError: a limit out of range.
    """
    check_positive_int(max_documents, "max_documents")
    check_positive_int(max_body_bytes, "max_body_bytes")
    check_positive_int(max_query_chars, "max_query_chars")
    service = RerankService(
        reranker,
        batching=batching,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_queue=max_queue,
        request_timeout=request_timeout,
        on_load_error=on_load_error,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn has already waited for in-flight requests (graceful shutdown); stop the worker.
        service.draining = True
        await asyncio.to_thread(service.close)

    app = FastAPI(
        title="twostage serve", description="Cohere-compatible rerank API for a local cross-encoder", lifespan=lifespan
    )
    app.state.service = service
    app.state.stats = service.counters
    app.state.settings = routes.RouteSettings(max_documents, max_body_bytes, api_key, max_query_chars)
    app.add_middleware(_RequestLog)
    if cors_origins:  # off unless asked: a browser page on another origin cannot call the server
        _allow_cors(app, cors_origins)
    routes.install(app)
    return app
