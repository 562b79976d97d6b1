"""The model side of ``twostage serve``, testable without HTTP: :class:`RerankService` admits requests (503 while
loading, failed or draining; 429 + a retry hint when the queue is full), queues them, merges concurrent ones into
one model call on a single worker thread, enforces each request's deadline and counts what happened.

Modelled on Infinity's ``BatchHandler``: the handler, not the route, owns the queue and the overload check, so
a route only parses its body, awaits :meth:`RerankService.score` and shapes the answer.

>>> import asyncio
>>> from twostage_integrations.testing import FakeReranker
>>> service = RerankService(FakeReranker(), max_queue=8)
>>> asyncio.run(service.score("aspirin", ["bananas", "aspirin"]))
[0.0, 1.0]
>>> service.close()
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidDocumentError, InvalidParameterError, InvalidQueryError, RerankAPIError
from ..hit import Hit
from ..rerank.base import BaseReranker, Reranker
from ..rerank.cache import ScoreCache
from ..validation import check_positive_int
from .schemas import RequestError, invalid

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 256  # pairs merged into one model call
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_QUEUE = 64  # requests admitted and not yet answered
MAX_RETRY_AFTER = 60
DISCONNECT_POLL_S = 0.25  # how often a waiting request checks whether its client is still there

# What RerankService.counters counts (requests and documents answered; the rest: refused, dropped or failed).
COUNTERS = (
    "requests",
    "documents",
    "in_progress",
    "rejected_full",
    "rejected_not_ready",
    "timed_out",
    "abandoned",
    "failed",
)


def raw_score_function(reranker: Any) -> Callable[[float], float] | None:
    """How to turn ``reranker``'s scores back into the model's raw logits (``raw_scores``).

    Args:
        reranker: the served reranker; its ``score_kind`` says which scale it serves.

    Returns:
        The inverse sigmoid for ``ce_sigmoid``, ``float`` for ``ce_logit``; ``None`` when the scale cannot be
        inverted (another activation, a hosted API, a fake).
    """
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


def batches_across_queries(reranker: Any) -> bool:
    """True when ``reranker.score_pairs`` scores pairs from many queries in one model call.

    ``BaseReranker``'s default ``score_pairs`` only loops over queries (a hosted API such as Cohere takes one
    query per request), so merging requests would serialise them for nothing: those are served per request.
    Wrappers (such as :class:`~twostage_integrations.rerank.cache.ScoreCache`) answer for their ``inner``.

    Args:
        reranker: the reranker to serve.

    Returns:
        Whether concurrent requests may be merged into one ``score_pairs`` call.
    """
    while isinstance(reranker, ScoreCache):
        reranker = reranker.inner
    method = getattr(type(reranker), "score_pairs", None)
    return method is not None and method is not BaseReranker.score_pairs


class _ClientGone(Exception):
    """The client hung up while its request waited for the model."""


@dataclass(eq=False)
class _Job:
    """One request's work: its pairs and the future its handler awaits (scores in document order)."""

    query: str
    texts: list[str]
    future: Future = field(default_factory=Future)
    # None: the reranker's own scoring, merged with other jobs. ("windows", how, limit): every window scored,
    # results are (score, evidence) pairs; ("cut",): the pair cut at max_length. Both run alone.
    mode: tuple[Any, ...] | None = None


_STOP = object()


def _check_limits(max_batch: object, batch_wait_ms: float, max_queue: int | None, timeout: float | None) -> None:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 0:
        raise InvalidParameterError(f"max_batch must be an integer >= 0 (0: no batching), got {max_batch!r}")
    if batch_wait_ms < 0:
        raise InvalidParameterError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
    if max_queue is not None:
        check_positive_int(max_queue, "max_queue")
    if timeout is not None and not timeout > 0:
        raise InvalidParameterError(f"request_timeout must be > 0 seconds or None (no limit), got {timeout}")


class RerankService:
    """Admission, queue, dynamic batching, deadlines and counters around one reranker.

    It loads and warms the reranker, then runs one worker thread that takes queued requests, merges them into
    one ``score_pairs`` call of at most ``max_batch`` pairs (waiting up to ``batch_wait_ms`` for more once the
    queue is empty) and hands each request its own scores. One model thread on purpose: on a small CPU,
    concurrent forward passes fight over the cores; merged ones pad less and pay the per-call overhead once.

    :meth:`score` is the whole request path on the event loop: admission, the wait for the worker with its
    deadline, and the check that every document got a finite score. ``counters`` (requests, documents,
    in_progress, rejections, timeouts, abandoned, failed) are written on the event loop only; the batch
    counters (``batches``, ``merged_batches``, ``largest_batch``, ``pairs_scored``) by the worker only.

    Args:
        reranker: a reranker, or a zero-argument function that loads one (run on the worker thread).
        batching: merge concurrent requests (only for rerankers whose ``score_pairs`` batches across queries).
        max_batch: most pairs in one merged call; 0 turns merging off.
        batch_wait_ms: how long to wait for more requests once the queue is empty.
        max_queue: requests admitted and not yet answered; one more is refused with 429 (``None``: no limit).
        request_timeout: seconds from admission to answer, else 504 (``None``: no limit).
        on_load_error: called with the exception when loading the reranker fails.

    Raises:
        InvalidParameterError: a limit out of range.
    """

    def __init__(
        self,
        reranker: Reranker | Callable[[], Reranker],
        *,
        batching: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
        request_timeout: float | None = None,
        on_load_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        _check_limits(max_batch, batch_wait_ms, max_queue, request_timeout)
        is_loader = callable(reranker) and not hasattr(reranker, "rerank")
        self._loader: Callable[[], Reranker] | None = reranker if is_loader else None  # type: ignore[assignment]
        self.reranker: Reranker | None = None if is_loader else reranker  # type: ignore[assignment]
        self.requested_batching = batching and max_batch > 0
        # What was asked for until the model is there; then off for one that scores one query per call.
        self.batching = self.requested_batching
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000
        self.max_queue = max_queue
        self.request_timeout = request_timeout
        self.on_load_error = on_load_error
        self.state = "loading"  # loading -> warming -> ready; failed; draining
        self.load_error: BaseException | None = None
        self.draining = False
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.pending_pairs = 0  # pairs of the requests in progress, for the retry hint
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
        """The served model's name (``"(loading)"`` until it is loaded)."""
        r = self.reranker
        return getattr(r, "name", type(r).__name__) if r is not None else "(loading)"

    @property
    def ready(self) -> bool:
        """Loaded, warmed and not draining."""
        return self.state == "ready" and not self.draining

    # -- the request path (event loop) ----------------------------------------------------------------------
    def check_accepting(self) -> None:
        """Refuse new work unless the model is there and the service is not draining.

        Raises:
            RequestError: 503 with a retry hint while draining, after a failed load, or while loading (a warming
                model is fine: requests queue behind the warm-up call).
        """
        if self.draining:
            self.counters["rejected_not_ready"] += 1
            raise RequestError(503, "the server is shutting down; retry on another replica or shortly", 1)
        if self.state == "failed":
            self.counters["rejected_not_ready"] += 1
            raise RequestError(503, f"the reranker failed to load: {self.load_error}", MAX_RETRY_AFTER)
        if self.reranker is None:
            self.counters["rejected_not_ready"] += 1
            raise RequestError(503, "the model is still loading; retry shortly (GET /ready turns 200 when loaded)", 5)

    def raw_scorer(self) -> Callable[[float], float]:
        """For ``raw_scores``: how to invert the served scale, refused before any model work when it has none.

        Returns:
            A function from a served score to the model's logit.

        Raises:
            RequestError: 400 when the served scores cannot be inverted.
        """
        invert = raw_score_function(self.reranker)
        if invert is None:
            kind = getattr(self.reranker, "score_kind", "unknown")
            raise invalid(f"raw_scores is not available for this model: its scores ({kind}) cannot be inverted")
        return invert

    def windowing(self) -> str | None:
        """How the served reranker scores long documents when it windows them (``"max"``/``"top2mean"``), else None."""
        long_docs = getattr(self.reranker, "long_docs", "first")
        return long_docs if long_docs != "first" else None

    def can_window(self) -> bool:
        """Whether the served reranker can score windows with evidence (a local cross-encoder)."""
        return callable(getattr(self.reranker, "score_pairs_with_evidence", None))

    async def score_windows(
        self,
        query: str,
        documents: list[str],
        mode: tuple[Any, ...],
        *,
        is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> tuple[list[float], list[dict[str, Any] | None]]:
        """:meth:`score` with the long-document handling a request asked for (docs/stage2.md "Long documents").

        Args:
            query: the request's query.
            documents: its documents.
            mode: ``("windows", how, limit)``: every window of each document's first ``limit`` tokens (None: all)
                scored, aggregated by ``how``; ``("cut",)``: each pair cut at ``max_length``.
            is_disconnected: as for :meth:`score`.

        Returns:
            Scores in document order, and each document's evidence (None with ``("cut",)``).

        Raises:
            RequestError: as :meth:`score`.
        """
        return await self._scored(query, documents, mode, is_disconnected)

    async def score(
        self, query: str, documents: list[str], *, is_disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> list[float]:
        """Every route's scoring: admission, the batched model call with its deadline, one finite score per document.

        Args:
            query: the request's query.
            documents: its documents.
            is_disconnected: polled while the request waits; when it says the client is gone, the queued job is
                cancelled (never scored).

        Returns:
            One score per document, in document order.

        Raises:
            RequestError: 503 not accepting; 429 + retry hint when the queue is full; 504 + retry hint past the
                deadline; 499 client gone; 400 input the reranker refused; 502 upstream reranker failed; 500 the
                model failed or gave no finite score.
        """
        scores, _ = await self._scored(query, documents, None, is_disconnected)
        return scores

    async def _scored(
        self,
        query: str,
        documents: list[str],
        mode: tuple[Any, ...] | None,
        is_disconnected: Callable[[], Awaitable[bool]] | None,
    ) -> tuple[list[float], list[Any]]:
        """:meth:`score`'s work; also returns each document's evidence (None without windows)."""
        self.check_accepting()  # the body may have taken a while to arrive
        self._admit(len(documents))
        try:
            results = await self._wait(self.submit(query, documents, mode), is_disconnected)
        except Exception as exc:
            raise self._failure(exc) from None
        finally:
            self.counters["in_progress"] -= 1
            self.pending_pairs -= len(documents)
        # a job with a mode answers (score, evidence) pairs
        scores = [r[0] if isinstance(r, tuple) else r for r in results]
        extras = [r[1] if isinstance(r, tuple) else None for r in results]
        bad = [i for i, s in enumerate(scores) if s is None or not math.isfinite(s)]
        if bad:
            self.counters["failed"] += 1
            raise RequestError(
                500,
                f"the reranker returned {scores[bad[0]]!r} instead of a score for {len(bad)} of {len(scores)} "
                f"documents (first: documents[{bad[0]}]); the model or its input is broken, nothing is ranked",
            )
        self.counters["requests"] += 1
        self.counters["documents"] += len(documents)
        return [float(s) for s in scores if s is not None], extras  # all finite: checked above

    def _admit(self, n_documents: int) -> None:
        """Count one more request in progress, or refuse it with 429 when ``max_queue`` are already admitted."""
        if self.max_queue is not None and self.counters["in_progress"] >= self.max_queue:
            self.counters["rejected_full"] += 1
            raise RequestError(
                429,
                f"the server is at capacity ({self.counters['in_progress']} requests queued or in progress); "
                "retry later",
                self.retry_after(self.pending_pairs),
            )
        self.counters["in_progress"] += 1  # queued or being scored
        self.pending_pairs += n_documents

    async def _wait(self, job: Future, is_disconnected: Callable[[], Awaitable[bool]] | None) -> list[float | None]:
        """The job's scores; cancels a job that has not started when the deadline passes (TimeoutError) or the
        client hangs up (_ClientGone), so abandoned work is never scored. A started model call runs to its end."""
        future = asyncio.wrap_future(job)  # cancelling this wrapper cancels the job if the worker has not taken it
        loop = asyncio.get_running_loop()
        deadline = None if self.request_timeout is None else loop.time() + self.request_timeout
        while True:
            wait = DISCONNECT_POLL_S if deadline is None else min(DISCONNECT_POLL_S, deadline - loop.time())
            if wait <= 0:
                job.cancel()  # now, not on the loop's next turn (the wrapper passes its cancel on via call_soon)
                future.cancel()
                raise asyncio.TimeoutError
            done, _ = await asyncio.wait({future}, timeout=wait)
            if done:
                return future.result()
            if is_disconnected is not None and await is_disconnected():
                job.cancel()
                future.cancel()
                raise _ClientGone

    def _failure(self, exc: Exception) -> RequestError:
        """The status a failed wait answers with, counted."""
        if isinstance(exc, _ClientGone):
            self.counters["abandoned"] += 1
            return RequestError(499, "the client closed the connection before its scores were ready")
        if isinstance(exc, asyncio.TimeoutError):
            self.counters["timed_out"] += 1
            return RequestError(
                504,
                f"the request timed out after {self.request_timeout:g} s waiting for the model; retry later or "
                "send fewer documents",
                self.retry_after(self.pending_pairs),
            )
        if isinstance(exc, (InvalidQueryError, InvalidParameterError, InvalidDocumentError)):
            return invalid(str(exc))  # the reranker refused this input
        self.counters["failed"] += 1
        if isinstance(exc, RerankAPIError):  # an upstream reranker (e.g. Cohere behind this server) failed
            return RequestError(502, f"the upstream reranker failed: {exc}")
        # the model broke (including a contract error such as a non-finite score count). Only the type is logged:
        # an exception's message may quote the request's query or documents, which never go to logs.
        logger.error("the reranker failed: %s (its message is in the response, not logged)", type(exc).__name__)
        return RequestError(500, f"the reranker failed ({type(exc).__name__}: {exc})")

    def submit(self, query: str, texts: list[str], mode: tuple[Any, ...] | None = None) -> Future:
        """Queue one request, without admission or deadline (:meth:`score` adds those).

        Args:
            query: the request's query.
            texts: its documents.
            mode: see :meth:`score_windows`.

        Returns:
            A future that gets the scores in document order (``None`` where the reranker gave none).
        """
        job = _Job(query, texts, mode=mode)
        self._queue.put(job)
        return job.future

    def retry_after(self, pairs_waiting: int) -> int:
        """Seconds until the queue has likely drained.

        Args:
            pairs_waiting: pairs admitted and not yet scored.

        Returns:
            Waiting pairs / measured pairs per second, between 1 and 60 (1 before anything was measured).
        """
        rate = self._pairs_per_second
        if not rate:
            return 1
        return max(1, min(MAX_RETRY_AFTER, math.ceil(pairs_waiting / rate)))

    def close(self, timeout: float | None = 30) -> None:
        """Finish what is queued, then stop the worker thread.

        Args:
            timeout: seconds to wait for the worker (``None``: as long as it takes).
        """
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """The request counters and the batch counters, as ``/health`` reports them.

        Returns:
            ``counters`` followed by batching (as configured while the model loads, then whether requests are
            really merged), batching_requested (as configured), batches, merged_batches, largest_batch and
            pairs_scored.
        """
        return {
            **self.counters,
            "batching": self.batching,
            "batching_requested": self.requested_batching,
            "batches": self.batches,
            "merged_batches": self.merged_batches,
            "largest_batch": self.largest_batch,
            "pairs_scored": self.pairs_scored,
        }

    # -- worker thread ---------------------------------------------------------------------------------------
    def _load(self) -> bool:
        """Load (when given a loader) and warm the reranker; False when loading failed."""
        if self._loader is not None:
            try:
                self.reranker = self._loader()
            except BaseException as exc:  # noqa: BLE001 - reported through state/load_error and the callback
                self.load_error = exc
                self.state = "failed"
                logger.error("could not load the reranker: %s", exc)
                if self.on_load_error is not None:
                    self.on_load_error(exc)
                return False
        self.batching = self.requested_batching and batches_across_queries(self.reranker)
        self.state = "warming"
        self.warm()
        self.state = "ready"
        logger.info("reranker %s ready (dynamic batching %s)", self.name, "on" if self.batching else "off")
        return True

    # Shapes a warm-up runs when the model does not say its own (a fake, a third-party reranker).
    WARM_MAX_LENGTH = 256
    WARM_BATCH_SIZE = 16
    _WARM_TEXT = (
        "patients treated with the drug showed lower blood pressure and fewer strokes than those given placebo "
        "across the trial while side effects stayed rare"
    )

    def warm(self) -> None:
        """Run every local model stage once at the shapes real requests give it, before ``/ready`` says 200.

        ONNX Runtime and torch pay first-call costs per input shape (allocator arenas, kernel choice), so one tiny
        pair is not enough: each stage that scores pairs itself (a cross-encoder; every stage of a
        :class:`~twostage_integrations.rerank.cascade.Cascade`; the model inside a
        :class:`~twostage_integrations.rerank.cache.ScoreCache`, so the cache stays empty) scores a full batch of
        its ``batch_size`` pairs cut at its ``max_length``, a full batch at half that length and one short pair
        (the remainder batch). Hosted APIs are not called. A failure is logged; a real request reports its own.
        """
        for stage in self._warm_stages(self.reranker):
            max_length = getattr(stage, "max_length", None) or self.WARM_MAX_LENGTH
            batch_size = getattr(stage, "batch_size", None) or self.WARM_BATCH_SIZE
            pairs = self._warm_pairs(int(max_length), int(batch_size))
            t0 = time.perf_counter()
            try:
                stage.score_pairs(pairs)
            except Exception as exc:  # noqa: BLE001 - a real request will report it with its own status
                logger.warning("warm-up call of %s failed: %s", getattr(stage, "name", type(stage).__name__), exc)
                continue
            logger.info(
                "warmed %s: %d pairs up to %d tokens, batches of %d, in %.2f s",
                getattr(stage, "name", type(stage).__name__),
                len(pairs),
                max_length,
                batch_size,
                time.perf_counter() - t0,
            )

    @staticmethod
    def _warm_stages(reranker: Any) -> list[Any]:
        """The rerankers that run a local model: a cache's or a fusion's inner one, a cascade's stages, else
        ``reranker``."""
        from ..rerank.fusion import FusedReranker

        while isinstance(reranker, (ScoreCache, FusedReranker)):
            reranker = reranker.inner if isinstance(reranker, ScoreCache) else reranker.reranker
        stages = getattr(reranker, "stages", None)
        if isinstance(stages, (list, tuple)) and stages:
            return [s for r, _ in stages for s in RerankService._warm_stages(r)]
        return [reranker] if reranker is not None and batches_across_queries(reranker) else []

    @classmethod
    def _warm_pairs(cls, max_length: int, batch_size: int) -> list[tuple[str, str]]:
        """``batch_size`` pairs of at least ``max_length`` words (cut there), ``batch_size`` of half as many, one
        short one: the longest-first batches an engine pads to their own longest pair."""
        words = cls._WARM_TEXT.split()

        def text(n: int) -> str:
            return " ".join(words[i % len(words)] for i in range(n))

        query = "does the drug lower the risk of stroke"
        lengths = [max_length] * batch_size + [max(1, max_length // 2)] * batch_size + [8]
        return [(query, text(n)) for n in lengths]

    def _run(self) -> None:
        if not self._load():
            return
        while True:
            batch = self._collect()
            if batch is None:
                return
            jobs = [j for j in batch if j.future.set_running_or_notify_cancel()]  # drops timed-out ones
            for job in [j for j in jobs if j.mode is not None]:
                self._score_mode(job)
            jobs = [j for j in jobs if j.mode is None]
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
                logger.warning(  # the type only: the message may quote request text
                    "a merged batch of %d requests failed (%s); scoring them one by one", len(jobs), type(exc).__name__
                )
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

    def _score_mode(self, job: _Job) -> None:
        """A job with its own long-document handling: scored alone (its windows in one model call)."""
        pairs = [(job.query, t) for t in job.texts]
        try:
            if job.mode is not None and job.mode[0] == "windows":
                scored = self.reranker.score_pairs_with_evidence(  # type: ignore[union-attr]
                    pairs, how=job.mode[1], limit=job.mode[2]
                )
                results: list[Any] = [(s, e.to_dict()) for s, e in scored]
            else:
                results = [(s, None) for s in self.reranker.score_pairs_cut(pairs)]  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the handler turns it into a status
            job.future.set_exception(exc)
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, 1)
        self.pairs_scored += len(pairs)
        job.future.set_result(results)

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
