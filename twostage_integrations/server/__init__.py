"""Rerank endpoints answered by a local reranker (``twostage serve``; extra ``server``): Cohere's ``/v2/rerank``,
Hugging Face TEI's ``/rerank`` and the ``/v1/rerank`` shape Cohere v1, Jina, Voyage and Infinity share.

A client of any of these APIs talks to it by changing only its base URL: the official Cohere SDK
(``cohere.ClientV2(base_url=...)``), :class:`~twostage_integrations.CohereReranker`, LlamaIndex's TEI and Jina
rerankers, the ``voyageai`` SDK, LangChain's ``VoyageAIRerank`` and ``infinity_client`` are tested against it.
All routes share one request path (auth, body limits, admission, the batched model call, errors); each only
maps its request shape in and its response and error shapes out.

Concurrent requests are merged into one model call (dynamic batching, as TEI and Infinity do), the queue is
bounded (429 + ``Retry-After`` when full), each request has a deadline, SIGTERM drains in-flight work, and
``/health`` (liveness) and ``/ready`` (model loaded and warmed) are separate.

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
import logging
import math
import queue
import secrets
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import InvalidDocumentError, InvalidParameterError, InvalidQueryError, RerankAPIError, TwoStageError
from ..hit import Hit
from ..rerank.base import BaseReranker, Reranker
from ..rerank.cache import ScoreCache
from ..validation import check_positive_int, check_query

logger = logging.getLogger(__name__)
request_logger = logging.getLogger(__name__ + ".requests")

DEFAULT_MAX_DOCUMENTS = 1000  # Cohere's own per-request limit
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH = 256  # pairs merged into one model call
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_QUEUE = 64  # requests admitted and not yet answered
SERVE_API_KEY_ENV = "TWOSTAGE_SERVE_API_KEY"
MAX_RETRY_AFTER = 60
DISCONNECT_POLL_S = 0.25  # how often a waiting request checks whether its client is still there


class ClientGone(Exception):
    """The client hung up while its request waited for the model."""


class RequestError(Exception):
    """A request we refuse: ``status_code`` and ``message``, answered in the shape of the route's API (see
    :func:`error_body`). ``kind`` names the failure for APIs that type their errors (TEI's ``error_type``)."""

    def __init__(self, status_code: int, message: str, retry_after: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        self.kind = kind


TEI_ROUTE = "/rerank"  # Hugging Face text-embeddings-inference
V1_ROUTE = "/v1/rerank"  # Cohere v1, Jina, Voyage, Infinity


def tei_error_type(status_code: int, kind: str | None = None) -> str:
    """TEI's ``error_type`` for one of our statuses: its ``ErrorType`` variants as serde writes them
    (``Unhealthy``, ``Backend``, ``Overloaded``, ``Validation``, ``Tokenizer``, ``Empty``)."""
    if kind is not None:
        return kind
    if status_code == 429:
        return "Overloaded"
    if status_code == 503:
        return "Unhealthy"
    if status_code >= 500:
        return "Backend"
    return "Validation"


def error_body(path: str, status_code: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """The error body each route's clients parse: TEI ``{"error", "error_type"}`` on ``/rerank``;
    ``{"message", "detail"}`` on ``/v1/rerank`` (Cohere v1 reads ``message``; Jina's and Voyage's clients read
    ``detail``); Cohere v2's ``{"message"}`` everywhere else."""
    if path == TEI_ROUTE:
        return {"error": message, "error_type": tei_error_type(status_code, kind)}
    if path == V1_ROUTE:
        return {"message": message, "detail": message}
    return {"message": message}


def _invalid(message: str, kind: str | None = None) -> RequestError:
    return RequestError(400, f"invalid request: {message}", kind=kind)


def _request_object(payload: Any, documents_key: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise _invalid(f"the body must be a JSON object with query and {documents_key}")
    return payload


def _parse_query(payload: dict[str, Any]) -> str:
    if payload.get("query") is None:
        raise _invalid("query is required")
    try:
        return check_query(payload["query"])
    except TwoStageError as exc:
        raise _invalid(str(exc)) from None


def _parse_documents(payload: dict[str, Any], key: str, max_documents: int, *, text_objects: bool = False) -> list[str]:
    """``payload[key]`` as a non-empty list of at most ``max_documents`` strings (413 above); with
    ``text_objects``, ``{"text": ...}`` objects (Jina, Cohere v1) count as their text."""
    documents = payload.get(key)
    if not isinstance(documents, list):
        raise _invalid(f"{key} must be a list of strings")
    if not documents:
        raise _invalid(f"{key} is empty; send at least one document", kind="Empty")
    if len(documents) > max_documents:
        raise RequestError(
            413, f"too many documents: {len(documents)}, more than the limit of {max_documents}; split them"
        )
    texts = []
    for i, doc in enumerate(documents):
        if text_objects and isinstance(doc, dict) and isinstance(doc.get("text"), str):
            doc = doc["text"]
        if not isinstance(doc, str):
            wanted = 'a string or {"text": string}' if text_objects else "a string"
            raise _invalid(f"{key}[{i}] is {type(doc).__name__}, not {wanted}")
        texts.append(doc)
    return texts


def _parse_flag(payload: dict[str, Any], key: str) -> bool:
    """An optional boolean, false when absent or null."""
    value = payload.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(f"{key} must be true or false")
    return value


def _parse_top(payload: dict[str, Any], key: str, n_documents: int) -> int | None:
    """An optional positive count of results, capped at the number of documents."""
    if payload.get(key) is None:
        return None
    try:
        return min(check_positive_int(payload[key], key), n_documents)
    except TwoStageError as exc:
        raise _invalid(str(exc)) from None


def parse_rerank_request(payload: Any, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> dict[str, Any]:
    """Validate a decoded ``/v2/rerank`` body; return query, documents, top_n, return_documents, warnings.

    >>> parse_rerank_request({"model": "m", "query": "q", "documents": ["a", "b"], "top_n": 1})["top_n"]
    1
    """
    payload = _request_object(payload, "documents")
    query = _parse_query(payload)
    documents = _parse_documents(payload, "documents", max_documents)
    top_n = _parse_top(payload, "top_n", len(documents))
    warnings = []
    if payload.get("max_tokens_per_doc") is not None:
        _parse_top(payload, "max_tokens_per_doc", len(documents))  # validated, not applied
        warnings.append("max_tokens_per_doc is not applied: the model truncates at its own max_length")
    return {
        "query": query,
        "documents": documents,
        "top_n": top_n,
        "return_documents": _parse_flag(payload, "return_documents"),
        "warnings": warnings,
    }


def parse_tei_request(payload: Any, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> dict[str, Any]:
    """Validate a decoded TEI ``/rerank`` body (``query``, ``texts``, ``raw_scores``, ``return_text``,
    ``truncate``, ``truncation_direction``); return query, documents, raw_scores, return_text.

    The model always truncates at its own max_length from the right (TEI's ``--auto-truncate``), so
    ``truncate`` is accepted either way and ``truncation_direction: "left"`` is refused rather than ignored.

    >>> parse_tei_request({"query": "q", "texts": ["a"], "raw_scores": True})["raw_scores"]
    True
    """
    payload = _request_object(payload, "texts")
    query = _parse_query(payload)
    documents = _parse_documents(payload, "texts", max_documents)
    _parse_flag(payload, "truncate")
    direction = payload.get("truncation_direction")
    if direction is not None:
        if not isinstance(direction, str) or direction.lower() not in ("left", "right"):
            raise _invalid(f'truncation_direction must be "left" or "right", got {direction!r}')
        if direction.lower() == "left":
            raise _invalid('truncation_direction "left" is not supported: the model truncates from the right')
    return {
        "query": query,
        "documents": documents,
        "raw_scores": _parse_flag(payload, "raw_scores"),
        "return_text": _parse_flag(payload, "return_text"),
    }


def parse_v1_request(payload: Any, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> dict[str, Any]:
    """Validate a decoded ``/v1/rerank`` body in the shape Cohere v1, Jina, Voyage and Infinity share: ``query``,
    ``documents`` (strings or ``{"text": ...}``), ``top_n`` or Voyage's ``top_k``, ``return_documents``,
    ``model`` (not checked), Voyage's ``truncation`` and Infinity's ``raw_scores``. Returns query, documents,
    top_n, return_documents, raw_scores and ``infinity`` (the body has ``raw_scores``, a field only Infinity's
    schema has, and its client always sends: its results then carry ``document`` as a string).

    >>> parse_v1_request({"query": "q", "documents": [{"text": "a"}, "b"], "top_k": 1})["top_n"]
    1
    """
    payload = _request_object(payload, "documents")
    query = _parse_query(payload)
    documents = _parse_documents(payload, "documents", max_documents, text_objects=True)
    top_n, top_k = _parse_top(payload, "top_n", len(documents)), _parse_top(payload, "top_k", len(documents))
    if top_n is not None and top_k is not None and top_n != top_k:
        raise _invalid(f"top_n ({payload['top_n']}) and top_k ({payload['top_k']}) disagree; send one of them")
    _parse_flag(payload, "truncation")
    return {
        "query": query,
        "documents": documents,
        "top_n": top_n if top_n is not None else top_k,
        "return_documents": _parse_flag(payload, "return_documents"),
        "raw_scores": _parse_flag(payload, "raw_scores"),
        "infinity": "raw_scores" in payload,
    }


def raw_score_function(reranker: Any) -> Callable[[float], float] | None:
    """How to turn ``reranker``'s scores back into the model's raw logits (``raw_scores``), from its
    ``score_kind``: the inverse sigmoid for ``ce_sigmoid``, unchanged for ``ce_logit``; ``None`` when the
    scale cannot be inverted (another activation, a hosted API, a fake)."""
    kind = getattr(reranker, "score_kind", None)
    if kind == "ce_logit":
        return float
    if kind == "ce_sigmoid":
        return _logit
    return None


_FLOAT32_BELOW_ONE = 1.0 - 2.0**-24  # sigmoid outputs are float32: 1.0 means a logit above ~16.6


def _logit(p: float) -> float:
    # A saturated float32 sigmoid (exactly 0 or 1) has lost its logit; clamp to the last representable value
    # instead of sending -inf/inf, which JSON cannot carry.
    p = min(max(p, 2.0**-126), _FLOAT32_BELOW_ONE)
    return math.log(p) - math.log1p(-p)


def rank_order(scores: list[float], top_n: int | None = None) -> list[int]:
    """Document indices best first (stable: ties keep document order), cut to ``top_n``."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return order if top_n is None else order[:top_n]


def word_count(query: str, documents: list[str]) -> int:
    """``usage`` for the APIs whose clients require one (Voyage, Infinity, Jina): words of the query and each
    document, summed over pairs. An estimate in words, not the model's tokens."""
    q = len(query.split())
    return sum(q + len(d.split()) for d in documents)


def batches_across_queries(reranker: Any) -> bool:
    """True when ``reranker.score_pairs`` scores pairs from many queries in one model call.

    ``BaseReranker``'s default ``score_pairs`` only loops over queries (a hosted API such as Cohere takes one
    query per request), so merging requests would serialise them for nothing: those are served per request.
    Wrappers (such as :class:`~twostage_integrations.rerank.cache.ScoreCache`) answer for their ``inner``.
    """
    while isinstance(reranker, ScoreCache):
        reranker = reranker.inner
    method = getattr(type(reranker), "score_pairs", None)
    return method is not None and method is not BaseReranker.score_pairs


@dataclass(eq=False)
class _Job:
    """One request's work: its pairs and the future its handler awaits (scores in document order)."""

    query: str
    texts: list[str]
    future: Future = field(default_factory=Future)


_STOP = object()


class RerankService:
    """The model side of the server: loads and warms the reranker, then runs one worker thread that takes
    queued requests, merges them into one ``score_pairs`` call of at most ``max_batch`` pairs (waiting up to
    ``batch_wait_ms`` for more once the queue is empty) and hands each request its own scores.

    One model thread on purpose: on a small CPU, concurrent forward passes fight over the cores; merged ones
    pad less and pay the per-call overhead once. Counters (``batches``, ``merged_batches``, ``largest_batch``,
    ``pairs_scored``) are written by the worker only.
    """

    def __init__(
        self,
        reranker: Reranker | Callable[[], Reranker],
        *,
        batching: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
        on_load_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if batch_wait_ms < 0:
            raise InvalidParameterError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
        is_loader = callable(reranker) and not hasattr(reranker, "rerank")
        self._loader: Callable[[], Reranker] | None = reranker if is_loader else None  # type: ignore[assignment]
        self.reranker: Reranker | None = None if is_loader else reranker  # type: ignore[assignment]
        self.requested_batching = batching and max_batch > 0
        self.batching = False  # decided once the model is there
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000
        self.on_load_error = on_load_error
        self.state = "loading"  # loading -> warming -> ready; failed; draining
        self.load_error: BaseException | None = None
        self.draining = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._carry: Any = None
        self.batches = 0
        self.merged_batches = 0
        self.largest_batch = 0  # requests in one model call
        self.pairs_scored = 0
        self._pairs_per_second: float | None = None
        self._thread = threading.Thread(target=self._run, name="twostage-rerank", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        r = self.reranker
        return getattr(r, "name", type(r).__name__) if r is not None else "(loading)"

    @property
    def ready(self) -> bool:
        return self.state == "ready" and not self.draining

    def submit(self, query: str, texts: list[str]) -> Future:
        """Queue one request; the future gets its scores in document order (``None`` where none was given)."""
        job = _Job(query, texts)
        self._queue.put(job)
        return job.future

    def retry_after(self, pairs_waiting: int) -> int:
        """Seconds until the queue has likely drained: waiting pairs / measured pairs per second, 1..60."""
        rate = self._pairs_per_second
        if not rate:
            return 1
        return max(1, min(MAX_RETRY_AFTER, math.ceil(pairs_waiting / rate)))

    def close(self, timeout: float | None = 30) -> None:
        """Finish what is queued, then stop the worker thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "batching": self.batching,
            "batches": self.batches,
            "merged_batches": self.merged_batches,
            "largest_batch": self.largest_batch,
            "pairs_scored": self.pairs_scored,
        }

    # -- worker thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        if self._loader is not None:
            try:
                self.reranker = self._loader()
            except BaseException as exc:  # noqa: BLE001 - reported through state/load_error and the callback
                self.load_error = exc
                self.state = "failed"
                logger.error("could not load the reranker: %s", exc)
                if self.on_load_error is not None:
                    self.on_load_error(exc)
                return
        self.batching = self.requested_batching and batches_across_queries(self.reranker)
        self.state = "warming"
        if batches_across_queries(self.reranker):  # a local model: one tiny call loads kernels and caches
            try:
                self.reranker.score_pairs([("warm-up", "warm-up")])  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - a real request will report it with its own status
                logger.warning("warm-up call failed: %s", exc)
        self.state = "ready"
        logger.info("reranker %s ready (dynamic batching %s)", self.name, "on" if self.batching else "off")
        while True:
            batch = self._collect()
            if batch is None:
                return
            jobs = [j for j in batch if j.future.set_running_or_notify_cancel()]  # drops timed-out ones
            if not jobs:
                continue
            if self.batching:
                self._score_merged(jobs)
            else:
                for job in jobs:
                    self._score_alone(job)

    def _collect(self) -> list[_Job] | None:
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        if first is _STOP:
            return None
        batch, pairs = [first], len(first.texts)
        if not self.batching:
            return batch
        deadline = time.monotonic() + self.batch_wait
        while pairs < self.max_batch:
            try:  # everything already queued at once; then wait a little for stragglers
                nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if nxt is _STOP or pairs + len(nxt.texts) > self.max_batch:
                self._carry = nxt  # first in the next batch: a request is never split
                break
            if not nxt.future.cancelled():
                batch.append(nxt)
                pairs += len(nxt.texts)
        return batch

    def _model_call(self, pairs: list[tuple[str, str]]) -> list[float]:
        t0 = time.perf_counter()
        scores = self.reranker.score_pairs(pairs)  # type: ignore[union-attr]
        elapsed = time.perf_counter() - t0
        if len(scores) != len(pairs):
            raise RuntimeError(f"the reranker returned {len(scores)} scores for {len(pairs)} pairs")
        rate = len(pairs) / max(elapsed, 1e-6)
        self._pairs_per_second = rate if self._pairs_per_second is None else 0.7 * self._pairs_per_second + 0.3 * rate
        self.pairs_scored += len(pairs)
        return list(scores)

    def _score_merged(self, jobs: list[_Job]) -> None:
        pairs = [(j.query, t) for j in jobs for t in j.texts]
        # Similar lengths side by side so fixed-size forward passes pad less (sentence-transformers' CrossEncoder
        # already sorts within a call; this is for engines that do not). Restored below.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        try:
            sorted_scores = self._model_call([pairs[i] for i in order])
        except Exception as exc:  # noqa: BLE001 - handed to the requests, or retried one by one
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
            else:  # one bad request must not fail the others merged with it
                logger.warning("a merged batch of %d requests failed (%s); scoring them one by one", len(jobs), exc)
                for job in jobs:
                    self._score_alone(job)
            return
        self.batches += 1
        self.merged_batches += len(jobs) > 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        scores = [0.0] * len(pairs)
        for pos, i in enumerate(order):
            scores[i] = sorted_scores[pos]
        start = 0
        for job in jobs:
            job.future.set_result(scores[start : start + len(job.texts)])
            start += len(job.texts)

    def _score_alone(self, job: _Job) -> None:
        try:
            if self.batching:
                scores: list[float | None] = [*self._model_call([(job.query, t) for t in job.texts])]
            else:  # per request, through the reranker's own rerank (keeps e.g. Cohere's retries and fallback)
                ranked = self.reranker.rerank(  # type: ignore[union-attr]
                    job.query, [Hit(id=str(i), text=t) for i, t in enumerate(job.texts)]
                )
                scores = [None] * len(job.texts)
                for h in ranked:
                    scores[int(h.id)] = h.rerank_score
        except Exception as exc:  # noqa: BLE001 - the handler turns it into a status
            job.future.set_exception(exc)
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, 1)
        job.future.set_result(scores)


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
            request_logger.info(
                "%s %s %d documents=%s latency_ms=%.1f",
                scope["method"],
                scope["path"],
                status,
                n_docs,
                (time.perf_counter() - start) * 1000,
            )


def create_app(
    reranker: Reranker | Callable[[], Reranker],
    *,
    api_key: str | None = None,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
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

    ``reranker``: a reranker, or a function that loads one (loaded on a background thread, so ``/health``
    answers while a big model loads and ``/ready`` says 503 until it is loaded and warmed).
    ``api_key``: when set, requests need ``Authorization: Bearer <api_key>``. ``max_documents`` (413 above it)
    and ``max_body_bytes`` (413) bound one request.
    ``batching``/``max_batch``/``batch_wait_ms``: merge concurrent requests into one model call of at most
    ``max_batch`` (query, document) pairs, waiting up to ``batch_wait_ms`` for more; only for rerankers whose
    ``score_pairs`` batches across queries (others are served one request at a time).
    ``max_queue``: requests admitted and not yet answered (queued or being scored); one more gets 429 with
    ``Retry-After``. ``request_timeout``: seconds from admission to answer, else 504 (``None``: no limit).
    ``app.state.stats`` (also in ``/health``) counts requests, documents, requests in progress, rejections.
    """
    check_positive_int(max_documents, "max_documents")
    check_positive_int(max_body_bytes, "max_body_bytes")
    if max_queue is not None:
        check_positive_int(max_queue, "max_queue")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 0:
        raise InvalidParameterError(f"max_batch must be an integer >= 0 (0: no batching), got {max_batch!r}")
    if request_timeout is not None and not request_timeout > 0:
        raise InvalidParameterError(f"request_timeout must be > 0 seconds or None (no limit), got {request_timeout}")
    service = RerankService(
        reranker, batching=batching, max_batch=max_batch, batch_wait_ms=batch_wait_ms, on_load_error=on_load_error
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # uvicorn has already waited for in-flight requests (graceful shutdown); stop the worker.
        service.draining = True
        await asyncio.to_thread(service.close)

    app = FastAPI(
        title="twostage serve",
        description="Cohere-compatible rerank API for a local cross-encoder",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.stats = {
        "requests": 0,
        "documents": 0,
        "in_progress": 0,
        "rejected_full": 0,
        "rejected_not_ready": 0,
        "timed_out": 0,
        "abandoned": 0,
        "failed": 0,
    }
    stats = app.state.stats
    pending_pairs = 0  # pairs of the requests in progress, for Retry-After
    expected = f"Bearer {api_key}".encode() if api_key else None
    app.add_middleware(_RequestLog)

    def error(request: Request, exc: RequestError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        body = error_body(request.url.path, exc.status_code, exc.message, exc.kind)
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error(request, exc)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(request, RequestError(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(request, _invalid(str(exc.errors())))

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
    async def health() -> JSONResponse:
        """Liveness: 200 while the process can serve or is loading; 503 once loading the model failed."""
        body = {
            "status": "failed" if service.state == "failed" else "ok",
            "state": "draining" if service.draining else service.state,
            "model": service.name,
            **stats,
            **service.stats(),
        }
        cache = getattr(service.reranker, "stats", None)
        if callable(cache):
            body["cache"] = cache()
        return JSONResponse(body, status_code=503 if service.state == "failed" else 200)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness: 200 once the model is loaded and warmed; 503 before, after a failed load, while draining."""
        state = "draining" if service.draining else service.state
        return JSONResponse({"ready": service.ready, "state": state}, status_code=200 if service.ready else 503)

    def refuse_unless_accepting() -> None:
        if service.draining:
            stats["rejected_not_ready"] += 1
            raise RequestError(503, "the server is shutting down; retry on another replica or shortly", 1)
        if service.state == "failed":
            stats["rejected_not_ready"] += 1
            raise RequestError(503, f"the reranker failed to load: {service.load_error}", MAX_RETRY_AFTER)
        if service.reranker is None:  # a warming model is fine: requests queue behind the warm-up call
            stats["rejected_not_ready"] += 1
            raise RequestError(503, "the model is still loading; retry shortly (GET /ready turns 200 when loaded)", 5)

    async def wait_for_scores(request: Request, job: Future) -> list[float | None]:
        """The job's scores; cancels a job that has not started when the deadline passes (TimeoutError) or the
        client hangs up (ClientGone), so abandoned work is never scored. A started model call runs to its end."""
        future = asyncio.wrap_future(job)  # cancelling this wrapper cancels the job if the worker has not taken it
        loop = asyncio.get_running_loop()
        deadline = None if request_timeout is None else loop.time() + request_timeout
        while True:
            wait = DISCONNECT_POLL_S if deadline is None else min(DISCONNECT_POLL_S, deadline - loop.time())
            if wait <= 0:
                future.cancel()
                raise asyncio.TimeoutError
            done, _ = await asyncio.wait({future}, timeout=wait)
            if done:
                return future.result()
            if await request.is_disconnected():
                future.cancel()
                raise ClientGone

    async def read_json(request: Request) -> Any:
        """The decoded body of an authorised request the server can take (401/503/413/400 otherwise)."""
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not secrets.compare_digest(given, expected):
                raise RequestError(401, "invalid api token: send 'Authorization: Bearer <key>' with the server's key")
        refuse_unless_accepting()
        raw = await read_body(request)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _invalid(f"the body is not valid JSON ({exc})") from None

    async def score_documents(request: Request, query: str, documents: list[str]) -> list[float]:
        """Every route's scoring: admission (503 while draining, 429 + Retry-After when the queue is full), the
        batched model call, its deadline (504) and failures (400/500/502), one finite score per document."""
        nonlocal pending_pairs
        request.state.n_documents = len(documents)
        refuse_unless_accepting()  # the body may have taken a while to arrive
        if max_queue is not None and stats["in_progress"] >= max_queue:
            stats["rejected_full"] += 1
            raise RequestError(
                429,
                f"the server is at capacity ({stats['in_progress']} requests queued or in progress); retry later",
                service.retry_after(pending_pairs),
            )
        stats["in_progress"] += 1  # queued or being scored
        pending_pairs += len(documents)
        try:
            scores = await wait_for_scores(request, service.submit(query, documents))
        except ClientGone:
            stats["abandoned"] += 1
            raise RequestError(499, "the client closed the connection before its scores were ready") from None
        except asyncio.TimeoutError:
            stats["timed_out"] += 1
            raise RequestError(
                504,
                f"the request timed out after {request_timeout:g} s waiting for the model; retry later or send "
                "fewer documents",
                service.retry_after(pending_pairs),
            ) from None
        except (InvalidQueryError, InvalidParameterError, InvalidDocumentError) as exc:
            raise _invalid(str(exc)) from None  # the reranker refused this input
        except RerankAPIError as exc:  # an upstream reranker (e.g. Cohere behind this server) failed
            stats["failed"] += 1
            raise RequestError(502, f"the upstream reranker failed: {exc}") from None
        except Exception as exc:  # the model broke (including a contract error such as a non-finite score)
            stats["failed"] += 1
            logger.error("the reranker failed: %s: %s", type(exc).__name__, exc)
            raise RequestError(500, f"the reranker failed ({type(exc).__name__}: {exc})") from None
        finally:
            stats["in_progress"] -= 1
            pending_pairs -= len(documents)
        bad = [i for i, s in enumerate(scores) if s is None or not math.isfinite(s)]
        if bad:
            stats["failed"] += 1
            shown = scores[bad[0]]
            raise RequestError(
                500,
                f"the reranker returned {shown!r} instead of a score for {len(bad)} of {len(scores)} documents "
                f"(first: documents[{bad[0]}]); the model or its input is broken, nothing is ranked",
            )
        stats["requests"] += 1
        stats["documents"] += len(documents)
        return [float(s) for s in scores if s is not None]  # all finite: checked above

    def raw_scorer() -> Callable[[float], float]:
        """For ``raw_scores``: refuse before any model work when the served scale has no inverse."""
        invert = raw_score_function(service.reranker)
        if invert is None:
            kind = getattr(service.reranker, "score_kind", "unknown")
            raise _invalid(f"raw_scores is not available for this model: its scores ({kind}) cannot be inverted")
        return invert

    @app.post("/v2/rerank")
    async def rerank(request: Request) -> dict[str, Any]:
        """Cohere v2."""
        req = parse_rerank_request(await read_json(request), max_documents)
        documents: list[str] = req["documents"]
        scores = await score_documents(request, req["query"], documents)
        results = []
        for i in rank_order(scores, req["top_n"]):
            item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if req["return_documents"]:
                item["document"] = {"text": documents[i]}
            results.append(item)
        meta: dict[str, Any] = {
            "api_version": {"version": "2"},
            "billed_units": {"search_units": math.ceil(len(documents) / 100)},  # Cohere bills 100 docs per unit
        }
        if req["warnings"]:
            meta["warnings"] = req["warnings"]
        return {"id": str(uuid.uuid4()), "results": results, "meta": meta}

    @app.post(TEI_ROUTE)
    async def rerank_tei(request: Request) -> list[dict[str, Any]]:
        """Hugging Face TEI: a bare list of ``{"index", "score"[, "text"]}``, best first, every text."""
        req = parse_tei_request(await read_json(request), max_documents)
        invert = raw_scorer() if req["raw_scores"] else float
        texts: list[str] = req["documents"]
        scores = await score_documents(request, req["query"], texts)
        ranks: list[dict[str, Any]] = [{"index": i, "score": invert(scores[i])} for i in rank_order(scores)]
        if req["return_text"]:
            for rank in ranks:
                rank["text"] = texts[rank["index"]]
        return ranks

    @app.post(V1_ROUTE)
    async def rerank_v1(request: Request) -> dict[str, Any]:
        """Cohere v1 / Jina / Infinity (``results``) and Voyage (``data``, ``usage.total_tokens``) in one body."""
        req = parse_v1_request(await read_json(request), max_documents)
        invert = raw_scorer() if req["raw_scores"] else float
        documents: list[str] = req["documents"]
        scores = await score_documents(request, req["query"], documents)
        data: list[dict[str, Any]] = [
            {"index": i, "relevance_score": invert(scores[i])} for i in rank_order(scores, req["top_n"])
        ]
        results = [dict(item) for item in data]
        if req["return_documents"]:
            for item, result in zip(data, results, strict=True):
                text = documents[item["index"]]
                item["document"] = text  # Voyage and Infinity: the string
                result["document"] = text if req["infinity"] else {"text": text}  # Cohere v1 and Jina: an object
        words = word_count(req["query"], documents)
        return {
            "id": str(uuid.uuid4()),
            "model": service.name,
            "results": results,
            "data": data,
            "usage": {"prompt_tokens": words, "total_tokens": words},
            "meta": {
                "api_version": {"version": "1"},
                "billed_units": {"search_units": math.ceil(len(documents) / 100)},
            },
        }

    return app


def _uvicorn_server(app: FastAPI, config: Any) -> Any:
    """A uvicorn server whose first SIGTERM/SIGINT marks the app as draining (``/ready`` and new requests
    answer 503) before uvicorn's own graceful shutdown stops accepting and waits for in-flight requests."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            service = getattr(app.state, "service", None)
            if service is not None and not service.draining:
                service.draining = True
                logger.warning("signal %d: draining %s request(s) in progress, then exiting", sig, _in_progress(app))
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def _in_progress(app: FastAPI) -> int:
    return getattr(app.state, "stats", {}).get("in_progress", 0)


def run_server(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    graceful_timeout: float | None = 30,
    log_level: str = "warning",
) -> None:
    """Run ``app`` in the foreground until SIGTERM or Ctrl+C, then drain: stop accepting, answer 503 to
    new requests on open connections, finish the requests in progress (at most ``graceful_timeout`` s)
    and return normally (exit code 0), as a process manager expects."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]  # uvicorn takes float seconds too
    )
    server = _uvicorn_server(app, config)
    service = getattr(app.state, "service", None)
    if service is not None:
        service.on_load_error = lambda exc: setattr(server, "should_exit", True)  # nothing to serve: exit
        if service.load_error is not None:  # it failed before the callback was in place
            server.should_exit = True
    # uvicorn re-raises the signal it caught once it has shut down; with this handler in place that
    # re-raise is a no-op instead of killing the process with "terminated by SIGTERM".
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a background thread; yield its base URL (``port=0``: a free port).

    For notebooks, tests and benchmarks; ``twostage serve`` is the way to run a standalone server.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = _uvicorn_server(app, uvicorn.Config(app, log_level="warning", access_log=False))
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


def wait_until_ready(url: str, timeout: float = 120) -> None:
    """Poll ``GET {url}/ready`` until it answers 200 (``TimeoutError`` after ``timeout`` seconds)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not ready within {timeout:g} s")
        time.sleep(0.1)


__all__ = [
    "TEI_ROUTE",
    "V1_ROUTE",
    "RequestError",
    "RerankService",
    "batches_across_queries",
    "create_app",
    "error_body",
    "parse_rerank_request",
    "parse_tei_request",
    "parse_v1_request",
    "rank_order",
    "raw_score_function",
    "run_server",
    "serve_in_thread",
    "wait_until_ready",
]
