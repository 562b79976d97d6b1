"""Stage 2 through the Cohere Rerank API, or any server that speaks it (such as ``twostage serve``).

One client for hosted and self-hosted reranking: point ``base_url`` (or ``TWOSTAGE_COHERE_BASE_URL``)
at a compatible server and nothing else changes.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import APIKeyError, InvalidParameterError, RerankAPIError
from ..extras import require_extra
from ..hit import Hit
from ..validation import check_positive_int
from .base import BaseReranker
from .fallback import FallbackReranker

logger = logging.getLogger(__name__)

DEFAULT_COHERE_MODEL = "rerank-v3.5"
MAX_DOCUMENTS_PER_REQUEST = 1000  # the API's documented per-request limit
COHERE_PREFIX = "cohere:"
API_KEY_ENVS = ("CO_API_KEY", "COHERE_API_KEY")  # the SDK's name first, then what LangChain/LlamaIndex users set
BASE_URL_ENVS = ("TWOSTAGE_COHERE_BASE_URL", "CO_API_URL")
AUTH_STATUSES = frozenset({401, 403, 498})


def is_cohere_model(name: str) -> bool:
    """True for names ``make_reranker`` sends to Cohere: ``rerank-...`` or an explicit ``cohere:<model>``.

    >>> is_cohere_model("rerank-v3.5"), is_cohere_model("cohere:my-model"), is_cohere_model("org/cross-encoder")
    (True, True, False)
    """
    return name.startswith((COHERE_PREFIX, "rerank-"))


class _Secret:
    """Holds the API key so that no repr, log line or traceback local prints it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"


class _MalformedResponse(Exception):
    """A 2xx answer that does not score each document exactly once."""


@dataclass
class _Failure:
    message: str
    status_code: int | None = None
    retryable: bool = False
    retry_after: float | None = None
    auth: bool = False


class CohereReranker(BaseReranker):
    """Rerank with Cohere's ``/v2/rerank`` through the official ``cohere`` SDK (extra ``cohere``).

    ``model``: a Cohere rerank model (default ``rerank-v3.5``; a ``cohere:`` prefix is stripped).
    ``api_key``: else ``CO_API_KEY``, else ``COHERE_API_KEY``; missing raises :class:`APIKeyError` at once.
    ``base_url``: else ``TWOSTAGE_COHERE_BASE_URL``, else ``CO_API_URL``, else Cohere's API. Use it for a
    self-hosted compatible server, e.g. ``twostage serve``.
    ``batch_size``: documents per request (at most 1,000, the API limit); longer lists are split and the
    scores merged (relevance scores are comparable across requests for the same query).
    ``max_concurrency``: batches in flight at once on the async path.
    ``timeout``: seconds per request. ``max_retries``: extra attempts after a 429, a 5xx, a timeout, a
    dropped connection or a malformed answer, waiting ``backoff * 2**n`` seconds with jitter (at most
    ``max_backoff``) or what ``Retry-After`` asks. The SDK's own retries are off so these are the only ones.
    ``on_error``: ``"raise"`` (default) raises :class:`RerankAPIError` when the API fails; ``"fallback"``
    logs a warning and returns the hits in the order given (recall order), not reranked, through
    :class:`~twostage_integrations.rerank.fallback.FallbackReranker`: ``rerank_score`` = ``score`` =
    ``1 / position`` and ``metadata["rerank_fallback"] = True`` with the reason. A rejected key always raises
    :class:`APIKeyError`.

    >>> from twostage_integrations import CohereReranker, Hit
    >>> co = CohereReranker("rerank-v3.5", api_key="...")  # doctest: +SKIP
    >>> hits = [Hit(id="1", text="Paris is in France."), Hit(id="2", text="Bananas are yellow.")]
    >>> [h.id for h in co.rerank("capital of France", hits, top_k=1)]  # doctest: +SKIP
    ['1']
    """

    score_kind: str = "cohere"  # relevance_score 0..1, see docs/scores.md

    def __init__(
        self,
        model: str = DEFAULT_COHERE_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_tokens_per_doc: int | None = None,
        batch_size: int = MAX_DOCUMENTS_PER_REQUEST,
        max_concurrency: int = 4,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        on_error: Literal["raise", "fallback"] = "raise",
    ) -> None:
        cohere = require_extra("cohere", "cohere", feature="CohereReranker")
        if not isinstance(model, str) or not model.removeprefix(COHERE_PREFIX).strip():
            raise InvalidParameterError(f"model must be a Cohere rerank model name such as {DEFAULT_COHERE_MODEL!r}")
        self.model = model.removeprefix(COHERE_PREFIX)
        self.name = COHERE_PREFIX + self.model
        self.max_tokens_per_doc = (
            None if max_tokens_per_doc is None else check_positive_int(max_tokens_per_doc, "max_tokens_per_doc")
        )
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size > MAX_DOCUMENTS_PER_REQUEST:
            raise InvalidParameterError(
                f"batch_size must be <= {MAX_DOCUMENTS_PER_REQUEST} (the API's limit per request), got {batch_size}"
            )
        self.max_concurrency = check_positive_int(max_concurrency, "max_concurrency")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidParameterError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.max_retries = max_retries
        for label, value in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidParameterError(f"{label} must be a number of seconds > 0, got {value!r}")
        self.timeout, self.backoff, self.max_backoff = float(timeout), float(backoff), float(max_backoff)
        if on_error not in ("raise", "fallback"):
            raise InvalidParameterError(f'on_error must be "raise" or "fallback", got {on_error!r}')
        self.on_error = on_error
        # API failures (after retries) fall back to the input order through the shared wrapper, so the hits
        # keep the reranker contract (finite rerank_score/rerank_rank); a rejected key still raises.
        self._fallback = FallbackReranker(_Strict(self), catch=(RerankAPIError,))

        key = api_key if api_key is not None else next((os.environ[e] for e in API_KEY_ENVS if os.environ.get(e)), "")
        if not isinstance(key, str) or not key.strip():
            raise APIKeyError(
                "no Cohere API key: pass api_key=..., or set CO_API_KEY (or COHERE_API_KEY); "
                "for a self-hosted `twostage serve` without --api-key any non-empty value works"
            )
        self._key = _Secret(key)
        self.base_url = base_url or next((os.environ[e] for e in BASE_URL_ENVS if os.environ.get(e)), None)
        self._client_kwargs: dict[str, Any] = {
            "base_url": self.base_url,
            "timeout": self.timeout,
            "max_retries": 0,  # retries are ours: bounded, with jitter, and the same on both paths
            "client_name": "twostage-integrations",
            "log_warning_experimental_features": False,
        }
        self._client = cohere.ClientV2(self._key.get(), **self._client_kwargs)
        # httpx async clients belong to the event loop they first ran on: one per loop.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    # -- scoring -------------------------------------------------------------------------------------
    def _batches(self, texts: Sequence[str]) -> list[list[str]]:
        return [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]

    def _request(self, query: str, documents: list[str]) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "query": query,
            "documents": documents,
            "request_options": {"max_retries": 0},  # the timeout is set on the client
        }
        if self.max_tokens_per_doc is not None:
            request["max_tokens_per_doc"] = self.max_tokens_per_doc
        return request

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Cohere ``relevance_score`` (0..1) per text, in input order; batches are sent one after another."""
        scores: list[float] = []
        for batch in self._batches(texts):
            for attempt in range(1, self.max_retries + 2):
                try:
                    scores += _scores_from(self._client.rerank(**self._request(query, batch)), len(batch))
                    break
                except Exception as exc:  # noqa: BLE001 - _retry_delay re-raises anything unexpected
                    delay = self._retry_delay(exc, attempt)
                time.sleep(delay)
        return scores

    async def ascore(self, query: str, texts: Sequence[str]) -> list[float]:
        """Like :meth:`score`, with up to ``max_concurrency`` batches in flight at once."""
        client = self._async_client()
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(batch: list[str]) -> list[float]:
            async with limit:
                for attempt in range(1, self.max_retries + 2):
                    try:
                        return _scores_from(await client.rerank(**self._request(query, batch)), len(batch))
                    except Exception as exc:  # noqa: BLE001 - _retry_delay re-raises anything unexpected
                        delay = self._retry_delay(exc, attempt)
                    await asyncio.sleep(delay)
            raise AssertionError("unreachable: the last attempt returns or raises")

        tasks = [asyncio.ensure_future(one(b)) for b in self._batches(texts)]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one batch failed: stop the others instead of leaving them running
                task.cancel()
            raise
        return [s for part in parts for s in part]

    def _async_client(self) -> Any:
        import cohere

        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = cohere.AsyncClientV2(self._key.get(), **self._client_kwargs)
        return client

    # -- retries -------------------------------------------------------------------------------------
    def _retry_delay(self, exc: Exception, attempt: int) -> float:
        """Seconds to wait before the next attempt, or raise the typed error when there is none."""
        failure = _describe(exc, self.timeout)
        message = failure.message.replace(self._key.get(), "***")  # in case a server echoes the key back
        if failure.auth:
            raise APIKeyError(
                f"the rerank server at {self.base_url or 'api.cohere.com'} rejected the API key "
                f"(HTTP {failure.status_code}: {message}); check CO_API_KEY / COHERE_API_KEY or api_key="
            ) from None  # the SDK error carries the request context; keep the key out of reach
        where = f"Cohere rerank ({self.model} at {self.base_url or 'api.cohere.com'})"
        if not failure.retryable:
            raise RerankAPIError(
                f"{where} failed: {message}", status_code=failure.status_code, attempts=attempt
            ) from exc
        if attempt > self.max_retries:
            raise RerankAPIError(
                f"{where} failed after {attempt} attempts: {message}; try again later or raise max_retries/timeout",
                status_code=failure.status_code,
                attempts=attempt,
            ) from exc
        if failure.retry_after is not None:
            if failure.retry_after > self.max_backoff:
                raise RerankAPIError(
                    f"{where}: {message}; the server asks to retry after {failure.retry_after:.0f} s, longer than "
                    f"max_backoff={self.max_backoff:.0f} s",
                    status_code=failure.status_code,
                    attempts=attempt,
                ) from exc
            delay, why = failure.retry_after, "as Retry-After asks"
        else:
            # Exponential backoff with jitter so many clients hitting one limit do not retry in lockstep.
            delay, why = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0), "backoff"
        logger.warning("%s: %s; retry %d/%d in %.2f s (%s)", where, message, attempt, self.max_retries, delay, why)
        return delay

    # -- fallback ------------------------------------------------------------------------------------
    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        if self.on_error == "fallback":
            return self._fallback.rerank(query, hits, top_k)
        return super().rerank(query, hits, top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        if self.on_error == "fallback":
            return await self._fallback.arerank(query, hits, top_k)
        return await super().arerank(query, hits, top_k)

    def __repr__(self) -> str:
        return f"CohereReranker(model={self.model!r}, base_url={self.base_url!r}, on_error={self.on_error!r})"


class _Strict:
    """The reranker itself with ``on_error="raise"``: what the fallback wrapper calls first."""

    def __init__(self, co: CohereReranker) -> None:
        self.co, self.name = co, co.name

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        return BaseReranker.rerank(self.co, query, hits, top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        return await BaseReranker.arerank(self.co, query, hits, top_k)


def _scores_from(response: Any, n: int) -> list[float]:
    """Scores in input order from a rerank response, which lists results best first."""
    scores: list[float | None] = [None] * n
    for item in getattr(response, "results", None) or []:
        index, score = getattr(item, "index", None), getattr(item, "relevance_score", None)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n or scores[index] is not None:
            raise _MalformedResponse(f"result index {index!r} is not a new position in the {n} documents sent")
        try:
            scores[index] = float(score)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _MalformedResponse(f"relevance_score {score!r} is not a number") from None
    missing = scores.count(None)
    if missing:
        raise _MalformedResponse(f"the answer scored {n - missing} of the {n} documents sent")
    return scores  # type: ignore[return-value]


def _describe(exc: Exception, timeout: float) -> _Failure:
    """What went wrong and whether trying again can help. Re-raises exceptions that are bugs, not failures."""
    import httpx
    import pydantic
    from cohere.core.api_error import ApiError
    from cohere.core.parse_error import ParsingError

    if isinstance(exc, ApiError):
        status = exc.status_code
        if status is None:
            return _Failure(f"client error: {_body_message(exc.body)}")
        if status in AUTH_STATUSES:
            return _Failure(_body_message(exc.body), status, auth=True)
        if 200 <= status < 300:  # the SDK wraps an unparsable 2xx body this way
            return _Failure(f"malformed response (HTTP {status}, not JSON)", status, retryable=True)
        retryable = status == 429 or status >= 500
        return _Failure(
            f"HTTP {status}: {_body_message(exc.body)}",
            status,
            retryable,
            _retry_after(exc.headers) if retryable else None,
        )
    if isinstance(exc, httpx.TimeoutException):
        return _Failure(f"no answer within timeout={timeout:g} s ({type(exc).__name__})", retryable=True)
    if isinstance(exc, httpx.TransportError):
        return _Failure(f"connection failed ({type(exc).__name__}: {exc})", retryable=True)
    if isinstance(exc, (_MalformedResponse, ParsingError, pydantic.ValidationError)):
        return _Failure(f"malformed response ({exc})", retryable=True)
    raise exc


def _body_message(body: Any) -> str:
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        text = body["message"]
    else:
        text = str(body) if body is not None else "no details"
    return text if len(text) <= 300 else text[:299] + "…"


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``; None if absent/invalid."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    try:
        if "retry-after-ms" in lower:
            return max(0.0, float(lower["retry-after-ms"]) / 1000)
        value = lower.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass  # not seconds: an HTTP date
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
