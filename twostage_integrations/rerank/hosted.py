"""What every hosted reranker (Cohere, Voyage) needs around "send one batch": one copy of the fault handling.

:class:`HostedReranker` owns the key (hidden in :class:`Secret`), the base URLs and their failover, batching with
merged scores, bounded retries that honour ``Retry-After``, the async path with bounded concurrency, and
``on_error="fallback"`` through :class:`~twostage_integrations.rerank.fallback.FallbackReranker`. A backend
supplies the SDK clients, ``_send``/``_asend`` (one batch in, one score per document out) and ``_classify``
(an SDK exception in, a :class:`Failure` out).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
import weakref
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypedDict

from .. import config
from ..errors import APIKeyError, InvalidParameterError, RerankAPIError
from ..hit import Hit
from ..validation import check_positive_int
from .base import BaseReranker
from .fallback import FallbackReranker

logger = logging.getLogger(__name__)


class HostedSettings(TypedDict, total=False):
    """The keyword arguments every hosted reranker takes (see :class:`HostedReranker`)."""

    api_key: str | None
    base_url: str | Sequence[str] | None
    batch_size: int | None
    max_concurrency: int
    timeout: float
    max_retries: int
    backoff: float
    max_backoff: float
    on_error: Literal["raise", "fallback"]


class Secret:
    """Holds the API key so that no repr, log line or traceback local prints it.

    Args:
        value: The key.

    >>> Secret("sk-123")
    '***'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The key itself (only for the SDK client)."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"


class MalformedResponse(Exception):
    """A 2xx answer that does not score each document exactly once."""


@dataclass
class Failure:
    """What a backend's ``_classify`` makes of an exception.

    Attributes:
        message: What went wrong, for the error and the log.
        status_code: The HTTP status, if there was an answer.
        retryable: Another attempt can help (429, 5xx, timeout, dropped connection, malformed answer).
        retry_after: Seconds the server asked to wait (``Retry-After``), if it did.
        auth: The key was rejected; this always raises :class:`APIKeyError`.
        connect: No server answered at this URL (refused, reset, DNS), so the next base URL is tried at once.
    """

    message: str
    status_code: int | None = None
    retryable: bool = False
    retry_after: float | None = None
    auth: bool = False
    connect: bool = False


def resolve_key(api_key: str | None, envs: Sequence[str], missing: str) -> Secret:
    """Find the API key.

    Args:
        api_key: The key given by the caller; ``None`` reads ``envs``.
        envs: Environment variables to read, in order (the first non-empty wins).
        missing: The error message when there is no key.

    Returns:
        The key, hidden in a :class:`Secret`.

    Raises:
        APIKeyError: If there is no key, or it is blank.
    """
    key = api_key if api_key is not None else (config.first_set(envs) or "")
    if not isinstance(key, str) or not key.strip():
        raise APIKeyError(missing)
    return Secret(key)


def resolve_base_urls(base_url: str | Sequence[str] | None, envs: Sequence[str]) -> tuple[str | None, ...]:
    """The servers to try, in order.

    Args:
        base_url: One URL, a list, or URLs separated by commas; ``None`` or ``""`` reads ``envs``.
        envs: Environment variables to read, in order (same forms; the first non-empty wins).

    Returns:
        The URLs, stripped; ``(None,)`` means the SDK's default server.

    Raises:
        InvalidParameterError: If ``base_url`` is not of those forms or lists no URL.

    >>> resolve_base_urls("http://a:1, http://b:2", ())
    ('http://a:1', 'http://b:2')
    """
    if base_url is None or base_url == "":
        base_url = config.first_set(envs)
        if base_url is None:
            return (None,)
    urls = base_url.split(",") if isinstance(base_url, str) else base_url
    if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
        raise InvalidParameterError(f"base_url must be a URL, a list of URLs or URLs separated by commas, got {urls!r}")
    cleaned = tuple(u.strip() for u in urls if u.strip())
    if not cleaned:
        raise InvalidParameterError(f"base_url lists no URL: {base_url!r}")
    return cleaned


def scores_from(response: Any, n: int) -> list[float]:
    """Scores in input order from a rerank response.

    Args:
        response: An answer whose ``results`` (best first) have ``index`` and ``relevance_score``, as both
            Cohere's and Voyage's SDKs return them.
        n: How many documents were sent.

    Returns:
        One score per document sent, in input order.

    Raises:
        MalformedResponse: If the answer does not score each document exactly once with a number.
    """
    scores: list[float | None] = [None] * n
    for item in getattr(response, "results", None) or []:
        index, score = getattr(item, "index", None), getattr(item, "relevance_score", None)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n or scores[index] is not None:
            raise MalformedResponse(f"result index {index!r} is not a new position in the {n} documents sent")
        try:
            scores[index] = float(score)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise MalformedResponse(f"relevance_score {score!r} is not a number") from None
    missing = scores.count(None)
    if missing:
        raise MalformedResponse(f"the answer scored {n - missing} of the {n} documents sent")
    return scores  # type: ignore[return-value]


def body_message(body: Any, key: str = "message") -> str:
    """The server's explanation from an error body.

    Args:
        body: The error body (parsed JSON, text or ``None``).
        key: The field holding the message when ``body`` is a JSON object.

    Returns:
        ``body[key]``, else the body as text (``"no details"`` for ``None``), at most 300 characters.
    """
    if isinstance(body, Mapping) and isinstance(body.get(key), str):
        text = body[key]
    else:
        text = str(body) if body is not None else "no details"
    return text if len(text) <= 300 else text[:299] + "…"


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """How long a server asks to wait before the next request.

    Args:
        headers: The answer's headers (any case); ``Retry-After`` (seconds or an HTTP date) or
            ``retry-after-ms`` is read.

    Returns:
        Seconds (never negative), or ``None`` when absent or invalid.

    >>> retry_after({"Retry-After": "2"}), retry_after({"retry-after-ms": "250"}), retry_after({})
    (2.0, 0.25, None)
    """
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


def http_failure(status: int | None, detail: str, headers: Mapping[str, str] | None, auth: frozenset[int]) -> Failure:
    """What an error answer means, from its HTTP status.

    Args:
        status: The HTTP status; ``None`` for a client-side error.
        detail: The server's explanation (see :func:`body_message`).
        headers: The answer's headers, for ``Retry-After``.
        auth: The statuses that mean the key was rejected.

    Returns:
        The failure: ``auth`` statuses reject the key, 429 and 5xx are retried (honouring ``Retry-After``), a
        2xx that the SDK could not parse is malformed (retried), the rest are final.
    """
    if status is None:
        return Failure(f"client error: {detail}")
    if status in auth:
        return Failure(detail, status, auth=True)
    if 200 <= status < 300:  # the SDKs wrap an unparsable 2xx body this way
        return Failure(f"malformed response (HTTP {status}, not JSON)", status, retryable=True)
    retryable = status == 429 or status >= 500
    return Failure(f"HTTP {status}: {detail}", status, retryable, retry_after(headers) if retryable else None)


def timeout_failure(exc: Exception, timeout: float) -> Failure:
    """A request that got no answer in time (retried).

    Args:
        exc: The SDK's timeout exception.
        timeout: The timeout that ran out, in seconds.

    Returns:
        A retryable failure naming the timeout.
    """
    return Failure(f"no answer within timeout={timeout:g} s ({type(exc).__name__})", retryable=True)


class HostedReranker(BaseReranker):
    """Base of rerankers behind an HTTP API. Subclasses set the class attributes and implement the hooks.

    With several base URLs, a connection failure (refused, reset, DNS) or a 503 (a replica loading its model or
    draining) moves on to the next URL at once, without counting as a retry; any other HTTP error from a live
    server follows the retry rules. The last URL that answered is tried first next time (then the others, in
    the given order from there). A rejected key always raises :class:`APIKeyError`.

    Args:
        model: The provider's model name (a ``<provider>:`` prefix is stripped).
        api_key: The key; ``None`` reads the backend's environment variables (``key_envs``).
        base_url: One URL, a list/tuple of URLs, or URLs separated by commas; ``None`` reads the backend's
            environment variables (``base_url_envs``), else the SDK's default server.
        batch_size: Documents per request (default and at most ``max_documents``, the API's limit); longer
            lists are split and the scores merged.
        max_concurrency: Batches in flight at once on the async path.
        timeout: Seconds per request.
        max_retries: Extra attempts after a 429, a 5xx, a timeout, a connection failure on every URL or a
            malformed answer.
        backoff: The first wait between attempts, in seconds; doubled each time, with jitter. A server's
            ``Retry-After`` wins.
        max_backoff: The longest wait; a ``Retry-After`` longer than it gives up at once.
        on_error: ``"raise"`` raises :class:`RerankAPIError`; ``"fallback"`` returns the hits in the order
            given, marked ``metadata["rerank_fallback"]`` (see :class:`FallbackReranker`).

    Raises:
        InvalidParameterError: If a setting is out of range or the model name is empty.
        APIKeyError: If there is no key.

    >>> from twostage_integrations import CohereReranker
    >>> co = CohereReranker(api_key="...", base_url=["http://10.0.0.5:8080", "http://10.0.0.6:8080"])  # doctest: +SKIP
    >>> co.base_url  # doctest: +SKIP
    'http://10.0.0.5:8080'
    """

    provider: ClassVar[str]  # "Cohere": how messages name the service; "cohere:" prefixes model names
    default_model: ClassVar[str]
    default_host: ClassVar[str]  # shown when base_url is the SDK's default
    key_envs: ClassVar[tuple[str, ...]]  # where the key comes from when api_key is None, in order
    key_help: ClassVar[str]  # the end of the "no API key" message: where keys come from, self-hosting
    base_url_envs: ClassVar[tuple[str, ...]]  # where base_url comes from when it is None, in order
    max_documents: ClassVar[int]  # the API's per-request document limit

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | Sequence[str] | None = None,
        batch_size: int | None = None,
        max_concurrency: int = 4,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        on_error: Literal["raise", "fallback"] = "raise",
    ) -> None:
        self.prefix = self.provider.lower() + ":"
        if not isinstance(model, str) or not model.removeprefix(self.prefix).strip():
            raise InvalidParameterError(
                f"model must be a {self.provider} rerank model name such as {self.default_model!r}"
            )
        self.model = model.removeprefix(self.prefix)
        self.name = self.prefix + self.model
        batch_size = self.max_documents if batch_size is None else batch_size
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size > self.max_documents:
            raise InvalidParameterError(
                f"batch_size must be <= {self.max_documents} (the API's limit per request), got {batch_size}"
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
        first, *others = self.key_envs
        also = f" (or {', '.join(others)})" if others else ""
        missing = f"no {self.provider} API key: pass api_key=..., or set {first}{also}; {self.key_help}"
        self._key = resolve_key(api_key, self.key_envs, missing)
        self.base_urls = resolve_base_urls(base_url, self.base_url_envs)
        self._preferred = self.base_urls[0]
        self._clients = {url: self._new_client(url) for url in self.base_urls}
        # Async HTTP clients belong to the event loop they first ran on: one set per loop.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, Any]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def base_url(self) -> str | None:
        """The server tried first: the last one that answered (None: the SDK's default)."""
        return self._preferred

    # -- what a backend provides ---------------------------------------------------------------------------
    @abstractmethod
    def _new_client(self, base_url: str | None) -> Any:
        """The SDK's sync client for one server, with the SDK's own retries off."""

    @abstractmethod
    def _new_async_client(self, base_url: str | None) -> Any:
        """The SDK's async client for one server, with the SDK's own retries off."""

    @abstractmethod
    def _send(self, client: Any, query: str, documents: list[str]) -> list[float]:
        """Score one batch (one request); one score per document, in input order."""

    @abstractmethod
    async def _asend(self, client: Any, query: str, documents: list[str]) -> list[float]:
        """:meth:`_send` on the async client."""

    @abstractmethod
    def _classify(self, exc: Exception) -> Failure:
        """What ``exc`` from ``_send``/``_asend`` means; re-raise it when it is a bug, not an API failure."""

    def _batches(self, query: str, texts: Sequence[str]) -> list[list[str]]:
        """Requests to send, in order (their scores are concatenated); by default ``batch_size`` texts each."""
        return [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]

    # -- scoring -------------------------------------------------------------------------------------------
    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Score texts through the API; batches are sent one after another.

        Args:
            query: The query text.
            texts: The passages.

        Returns:
            The API's relevance score per text, in input order.

        Raises:
            RerankAPIError: If a batch failed for good (a final error, or retries ran out).
            APIKeyError: If the server rejected the key.
        """
        scores: list[float] = []
        for batch in self._batches(query, texts):
            tries = _Tries(self)
            while True:
                try:
                    scores += tries.done(self._send(self._clients[tries.url], query, batch))
                    break
                except Exception as exc:  # noqa: BLE001 - failed() re-raises anything that is not an API failure
                    time.sleep(tries.failed(exc))
        return scores

    async def ascore(self, query: str, texts: Sequence[str]) -> list[float]:
        """Like :meth:`score`, with up to ``max_concurrency`` batches in flight at once.

        Args:
            query: The query text.
            texts: The passages.

        Returns:
            The API's relevance score per text, in input order.

        Raises:
            RerankAPIError: If a batch failed for good; the other batches are cancelled.
            APIKeyError: If the server rejected the key.
        """
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(batch: list[str]) -> list[float]:
            async with limit:
                tries = _Tries(self)
                while True:
                    try:
                        return tries.done(await self._asend(self._async_client(tries.url), query, batch))
                    except Exception as exc:  # noqa: BLE001 - failed() re-raises anything not an API failure
                        await asyncio.sleep(tries.failed(exc))

        tasks = [asyncio.ensure_future(one(b)) for b in self._batches(query, texts)]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one batch failed: stop the others instead of leaving them running
                task.cancel()
            raise
        return [s for part in parts for s in part]

    def _async_client(self, base_url: str | None) -> Any:
        clients = self._async_clients.setdefault(asyncio.get_running_loop(), {})
        if base_url not in clients:
            clients[base_url] = self._new_async_client(base_url)
        return clients[base_url]

    def _url_order(self) -> list[str | None]:
        """The preferred URL first, then the others in the given order from there (a dead one comes last)."""
        start = self.base_urls.index(self._preferred)
        return list(self.base_urls[start:] + self.base_urls[:start])

    # -- retries -------------------------------------------------------------------------------------------
    def _retry_delay(self, failure: Failure, exc: Exception, attempt: int, url: str | None) -> float:
        """Seconds to wait before the next attempt, or raise the typed error when there is none."""
        message = failure.message.replace(self._key.get(), "***")  # in case a server echoes the key back
        host = url or self.default_host
        if failure.auth:
            raise APIKeyError(
                f"the rerank server at {host} rejected the API key "
                f"(HTTP {failure.status_code}: {message}); check {' / '.join(self.key_envs)} or api_key="
            ) from None  # the SDK error carries the request context; keep the key out of reach
        where = f"{self.provider} rerank ({self.model} at {host})"
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

    # -- fallback ------------------------------------------------------------------------------------------
    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Rerank hits through the API (see :meth:`BaseReranker.rerank`).

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first; with ``on_error="fallback"``, the input order when the API failed.

        Raises:
            RerankAPIError: If the API failed and ``on_error="raise"``.
            APIKeyError: If the server rejected the key.
        """
        if self.on_error == "fallback":
            return self._fallback.rerank(query, hits, top_k)
        return super().rerank(query, hits, top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Async :meth:`rerank`.

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first; with ``on_error="fallback"``, the input order when the API failed.
        """
        if self.on_error == "fallback":
            return await self._fallback.arerank(query, hits, top_k)
        return await super().arerank(query, hits, top_k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, on_error={self.on_error!r})"


class _Tries:
    """Where one batch goes next: the next base URL at once after a connection failure, else (after a wait)
    the next attempt, starting again from the preferred URL."""

    def __init__(self, owner: HostedReranker) -> None:
        self.owner, self.attempt = owner, 1
        self.order, self.pos = owner._url_order(), 0

    @property
    def url(self) -> str | None:
        return self.order[self.pos]

    def done(self, scores: list[float]) -> list[float]:
        self.owner._preferred = self.url
        return scores

    def failed(self, exc: Exception) -> float:
        """Seconds to wait before the next request (0 for failover), or raise the typed error."""
        failure, url = self.owner._classify(exc), self.url
        # 503 = this replica cannot serve now (loading its model, draining for shutdown): another may.
        unavailable = failure.connect or failure.status_code == 503
        if unavailable and self.pos + 1 < len(self.order):
            self.pos += 1
            logger.warning("%s at %s: %s; trying %s", self.owner.provider, url, failure.message, self.url)
            return 0.0
        if not failure.connect:
            self.owner._preferred = url  # a live server answered: the next attempt goes there first
        if unavailable and len(self.order) > 1:
            failure.message += f" (none of the {len(self.order)} base URLs answered)"
        delay = self.owner._retry_delay(failure, exc, self.attempt, url)
        self.attempt += 1
        self.order, self.pos = self.owner._url_order(), 0
        return delay


class _Strict:
    """The reranker itself with ``on_error="raise"``: what the fallback wrapper calls first."""

    def __init__(self, hosted: HostedReranker) -> None:
        self.hosted, self.name = hosted, hosted.name

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        return BaseReranker.rerank(self.hosted, query, hits, top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        return await BaseReranker.arerank(self.hosted, query, hits, top_k)
