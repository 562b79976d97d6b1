"""A Cohere-compatible ``/v2/rerank`` endpoint answered by a local reranker (``twostage serve``; extra ``server``).

A client of Cohere's v2 rerank API talks to it by changing only its base URL: the official SDK
(``cohere.ClientV2(base_url=...)``) and :class:`~twostage_integrations.CohereReranker` are tested against it.

>>> from twostage_integrations import CrossEncoderReranker
>>> from twostage_integrations.server import create_app, serve_in_thread
>>> app = create_app(CrossEncoderReranker("path/to/cross-encoder"))  # doctest: +SKIP
>>> with serve_in_thread(app) as url:  # doctest: +SKIP
...     import cohere
...     co = cohere.ClientV2(api_key="unused", base_url=url)
...     co.rerank(model="local", query="capital of France", documents=["Paris.", "Bananas."]).results[0].index
0
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .errors import TwoStageError
from .hit import Hit
from .rerank.base import Reranker
from .validation import check_positive_int, check_query

DEFAULT_MAX_DOCUMENTS = 1000  # Cohere's own per-request limit
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
SERVE_API_KEY_ENV = "TWOSTAGE_SERVE_API_KEY"


class RequestError(Exception):
    """A request we refuse, answered as Cohere does: ``{"message": ...}`` with a 4xx status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def parse_rerank_request(payload: Any, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> dict[str, Any]:
    """Validate a decoded ``/v2/rerank`` body; return query, documents, top_n, return_documents, warnings.

    >>> parse_rerank_request({"model": "m", "query": "q", "documents": ["a", "b"], "top_n": 1})["top_n"]
    1
    """
    if not isinstance(payload, dict):
        raise RequestError(400, "invalid request: the body must be a JSON object with query and documents")
    if payload.get("query") is None:
        raise RequestError(400, "invalid request: query is required")
    try:
        query = check_query(payload["query"])
    except TwoStageError as exc:
        raise RequestError(400, f"invalid request: {exc}") from None
    documents = payload.get("documents")
    if not isinstance(documents, list):
        raise RequestError(400, "invalid request: documents must be a list of strings")
    if not documents:
        raise RequestError(400, "invalid request: documents is empty; send at least one document")
    if len(documents) > max_documents:
        raise RequestError(
            400, f"invalid request: {len(documents)} documents, more than the limit of {max_documents}; split them"
        )
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise RequestError(400, f"invalid request: documents[{i}] is {type(doc).__name__}, not a string")
    top_n = payload.get("top_n")
    warnings = []
    try:
        if top_n is not None:
            top_n = min(check_positive_int(top_n, "top_n"), len(documents))
        if payload.get("max_tokens_per_doc") is not None:
            check_positive_int(payload["max_tokens_per_doc"], "max_tokens_per_doc")
            warnings.append("max_tokens_per_doc is not applied: the model truncates at its own max_length")
    except TwoStageError as exc:
        raise RequestError(400, f"invalid request: {exc}") from None
    return_documents = payload.get("return_documents", False)
    if not isinstance(return_documents, bool):
        raise RequestError(400, "invalid request: return_documents must be true or false")
    return {
        "query": query,
        "documents": documents,
        "top_n": top_n,
        "return_documents": return_documents,
        "warnings": warnings,
    }


def create_app(
    reranker: Reranker,
    *,
    api_key: str | None = None,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """A FastAPI app with ``POST /v2/rerank`` (Cohere's request and response shapes) and ``GET /health``.

    ``api_key``: when set, requests need ``Authorization: Bearer <api_key>``. ``max_documents`` and
    ``max_body_bytes`` bound one request. Model work runs on one worker thread, so the event loop stays
    free and concurrent requests queue instead of fighting over the CPU. ``app.state.stats`` (also in
    ``/health``) counts the requests and documents scored and the requests in progress.
    """
    check_positive_int(max_documents, "max_documents")
    check_positive_int(max_body_bytes, "max_body_bytes")
    app = FastAPI(title="twostage serve", description="Cohere-compatible rerank API for a local cross-encoder")
    app.state.stats = {"requests": 0, "documents": 0, "in_progress": 0}
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twostage-rerank")
    expected = f"Bearer {api_key}".encode() if api_key else None

    def error(status_code: int, message: str) -> JSONResponse:
        return JSONResponse({"message": message}, status_code=status_code)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status_code, exc.message)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, f"invalid request: {exc.errors()}")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise RequestError(413, f"request body is {declared} bytes, more than the limit of {max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():  # counted as it arrives: a missing or false length cannot bypass it
            body += chunk
            if len(body) > max_body_bytes:
                raise RequestError(413, f"request body is more than the limit of {max_body_bytes} bytes")
        return bytes(body)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": getattr(reranker, "name", type(reranker).__name__), **app.state.stats}

    @app.post("/v2/rerank")
    async def rerank(request: Request) -> dict[str, Any]:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not secrets.compare_digest(given, expected):
                raise RequestError(401, "invalid api token: send 'Authorization: Bearer <key>' with the server's key")
        raw = await read_body(request)
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"invalid request: the body is not valid JSON ({exc})") from None
        req = parse_rerank_request(payload, max_documents)
        hits = [Hit(id=str(i), text=doc) for i, doc in enumerate(req["documents"])]
        loop = asyncio.get_running_loop()
        app.state.stats["in_progress"] += 1  # queued or being scored
        try:
            ranked = await loop.run_in_executor(model_thread, reranker.rerank, req["query"], hits, req["top_n"])
        except TwoStageError as exc:
            raise RequestError(400, f"invalid request: {exc}") from None
        finally:
            app.state.stats["in_progress"] -= 1
        app.state.stats["requests"] += 1
        app.state.stats["documents"] += len(hits)
        results = []
        for h in ranked:
            item: dict[str, Any] = {"index": int(h.id), "relevance_score": h.rerank_score}
            if req["return_documents"]:
                item["document"] = {"text": h.text}
            results.append(item)
        meta: dict[str, Any] = {
            "api_version": {"version": "2"},
            "billed_units": {"search_units": math.ceil(len(hits) / 100)},  # Cohere bills 100 documents per unit
        }
        if req["warnings"]:
            meta["warnings"] = req["warnings"]
        return {"id": str(uuid.uuid4()), "results": results, "meta": meta}

    return app


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a background thread; yield its base URL (``port=0``: a free port).

    For notebooks, tests and benchmarks; ``twostage serve`` is the way to run a standalone server.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="twostage-serve")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the rerank server did not start; see the log above")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
