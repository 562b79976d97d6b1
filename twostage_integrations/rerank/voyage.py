"""Stage 2 through Voyage AI's rerank API (``POST {base_url}/rerank``), with the official ``voyageai`` SDK.

Retries, timeouts, failover, fallback and key handling are those of
:class:`~twostage_integrations.rerank.hosted.HostedReranker`, shared with
:class:`~twostage_integrations.CohereReranker`; this module adds Voyage's clients, its request limits and
what its SDK's exceptions mean.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import InvalidParameterError
from ..extras import require_extra
from ..validation import check_positive_int
from . import hosted
from .hosted import Failure, HostedReranker, HostedSettings

# Re-exported: the names routed to Voyage live with the name table (no cycle with make_reranker).
from .registry import VOYAGE_MODELS as VOYAGE_MODELS
from .registry import VOYAGE_PREFIX as VOYAGE_PREFIX
from .registry import is_voyage_model as is_voyage_model

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+; only the type checker needs it

DEFAULT_VOYAGE_MODEL = "rerank-2.5"
API_KEY_ENVS = (config.VOYAGE_API_KEY.name,)
BASE_URL_ENVS = (config.TWOSTAGE_VOYAGE_BASE_URL.name,)
AUTH_STATUSES = frozenset({401, 403})
# Per-request limits from https://docs.voyageai.com/reference/reranker-api: at most 1,000 documents, and
# "query tokens x number of documents + tokens of all documents" at most 600K (300K for the 1st generation).
MAX_DOCUMENTS_PER_REQUEST = 1000


@dataclass(frozen=True)
class VoyageLimits:
    """A Voyage rerank model's documented limits, in tokens: per request (``total``), for the query, and for the
    query plus any one document (``pair``, the context length; longer pairs are truncated with
    ``truncation=True``)."""

    total: int
    query: int
    pair: int


MODEL_LIMITS: dict[str, VoyageLimits] = {
    "rerank-2.5": VoyageLimits(600_000, 8_000, 32_000),
    "rerank-2.5-lite": VoyageLimits(600_000, 8_000, 32_000),
    "rerank-2": VoyageLimits(600_000, 4_000, 16_000),
    "rerank-2-lite": VoyageLimits(600_000, 2_000, 8_000),
    "rerank-1": VoyageLimits(300_000, 2_000, 8_000),
    "rerank-lite-1": VoyageLimits(300_000, 1_000, 4_000),
}
# VOYAGE_MODELS (the names routed here) comes from the registry; tests check every one has limits above.
UNKNOWN_MODEL_TOTAL_TOKENS = 300_000  # a model not listed above gets the smallest documented budget


class _MaskKeys(logging.Filter):
    """Masks our keys in the SDK's own log records: it logs the server's error message at INFO, and a server may
    echo the key back in it. (``VOYAGE_LOG=info`` also prints those lines to stderr, which no filter reaches.)"""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for key in self.keys:
            masked = masked.replace(key, "***")
        if masked != message:
            record.msg, record.args = masked, None
        return True


_MASK_KEYS = _MaskKeys()


def utf8_length(text: str) -> int:
    """The default token estimate: UTF-8 bytes.

    An upper bound for byte-level tokenizers (a token is >= 1 byte), so batches stay under the token budget
    without downloading Voyage's tokenizer.

    Args:
        text: Any text.

    Returns:
        Its length in UTF-8 bytes.

    >>> utf8_length("héllo")
    6
    """
    return len(text.encode("utf-8"))


class VoyageReranker(HostedReranker):
    """Rerank with Voyage AI's rerank API through the official ``voyageai`` SDK (extra ``voyage``).

    Requests go to ``{base_url}/rerank``, so a compatible server is given with its ``/v1``. Longer lists than a
    request holds are split and the scores merged (relevance scores are computed per document, so comparable
    across requests for one query). The SDK's own retries are off, so
    :class:`~twostage_integrations.rerank.hosted.HostedReranker`'s are the only ones.

    Args:
        model: ``rerank-2.5``, ``rerank-2.5-lite``, ``rerank-2``, ``rerank-2-lite``, ``rerank-1`` or
            ``rerank-lite-1`` (a ``voyage:`` prefix is stripped; other names are sent as given).
        truncation: The API's own option: True cuts a query/document pair that is over the model's context
            length, False makes the API reject it (HTTP 400, not retried).
        max_tokens_per_request: The token budget per request, counted the API's way (query tokens x documents
            + document tokens); default and at most the model's documented limit (600K, 300K for ``rerank-1``/
            ``rerank-lite-1``).
        count_tokens: Tokens of one text; default :func:`utf8_length` (a safe over-estimate). Pass an exact
            counter, e.g. from ``voyageai.Client().count_tokens``, to pack more per request.
        **settings: :class:`~twostage_integrations.rerank.hosted.HostedReranker`'s settings. ``api_key``
            defaults to ``VOYAGE_API_KEY``; ``base_url`` to ``TWOSTAGE_VOYAGE_BASE_URL``, else Voyage's API
            (``https://api.voyageai.com/v1``); ``batch_size`` is at most 1,000 (the API's limit).

    Raises:
        MissingDependencyError: If the ``voyage`` extra is not installed.
        APIKeyError: If there is no key (a rejected key raises it on the first call).
        InvalidParameterError: If a setting is out of range.

    >>> from twostage_integrations import Hit, VoyageReranker
    >>> vo = VoyageReranker("rerank-2.5-lite")  # key from VOYAGE_API_KEY  # doctest: +SKIP
    >>> best = vo.rerank("capital of France", [Hit(id="b", text="Bananas."), Hit(id="p", text="Paris.")], top_k=1)
    ... # doctest: +SKIP
    >>> best[0].id, best[0].metadata.get("rerank_fallback", False)  # doctest: +SKIP
    ('p', False)
    """

    score_kind: str = "voyage"  # relevance_score 0..1, see docs/scores.md
    provider = "Voyage"
    default_model, default_host, key_envs = DEFAULT_VOYAGE_MODEL, "api.voyageai.com", API_KEY_ENVS
    key_help = "keys are at https://dash.voyageai.com; a compatible server that wants none takes any non-empty value"
    base_url_envs, max_documents = BASE_URL_ENVS, MAX_DOCUMENTS_PER_REQUEST

    def __init__(
        self,
        model: str = DEFAULT_VOYAGE_MODEL,
        *,
        truncation: bool = True,
        max_tokens_per_request: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
        **settings: Unpack[HostedSettings],
    ) -> None:
        self._voyageai = require_extra("voyageai", "voyage", feature="VoyageReranker")
        if not isinstance(truncation, bool):
            raise InvalidParameterError(f"truncation must be True or False, got {truncation!r}")
        self.truncation = truncation
        if count_tokens is not None and not callable(count_tokens):
            raise InvalidParameterError(f"count_tokens must be a function str -> int, got {count_tokens!r}")
        self.count_tokens = count_tokens or utf8_length
        super().__init__(model, **settings)
        limit = MODEL_LIMITS[self.model].total if self.model in MODEL_LIMITS else UNKNOWN_MODEL_TOTAL_TOKENS
        if max_tokens_per_request is None:
            max_tokens_per_request = limit
        elif check_positive_int(max_tokens_per_request, "max_tokens_per_request") > limit:
            raise InvalidParameterError(
                f"max_tokens_per_request must be <= {limit:,} (the API's limit per request for {self.model}), "
                f"got {max_tokens_per_request:,}"
            )
        self.max_tokens_per_request = max_tokens_per_request
        _MASK_KEYS.keys.add(self._key.get())
        logging.getLogger("voyage").addFilter(_MASK_KEYS)  # the SDK's logger; adding the same filter is a no-op

    # -- the hooks HostedReranker calls -------------------------------------------------------------------
    def _client_kwargs(self, base_url: str | None) -> dict[str, Any]:
        return {
            "api_key": self._key.get(),
            "max_retries": 0,  # one attempt per call (tenacity's stop_after_attempt(0)); the retries are ours
            "timeout": self.timeout,
            "base_url": base_url.rstrip("/") if base_url else None,  # the SDK appends "/rerank"
        }

    def _new_client(self, base_url: str | None) -> Any:
        return self._voyageai.Client(**self._client_kwargs(base_url))

    def _new_async_client(self, base_url: str | None) -> Any:
        return self._voyageai.AsyncClient(**self._client_kwargs(base_url))

    def _batches(self, query: str, texts: Sequence[str]) -> list[list[str]]:
        """At most ``batch_size`` documents and ``max_tokens_per_request`` tokens per request; a document that
        is over the budget on its own goes alone (with ``truncation=True`` the API cuts it to the context)."""
        query_tokens = self.count_tokens(query)
        batches: list[list[str]] = []
        used = 0
        for text in texts:
            cost = query_tokens + self.count_tokens(text)  # the API counts the query once per document
            if not batches or len(batches[-1]) >= self.batch_size or used + cost > self.max_tokens_per_request:
                batches.append([])
                used = 0
            batches[-1].append(text)
            used += cost
        return batches

    def _send(self, client: Any, query: str, documents: list[str]) -> list[float]:
        response = _parsed(lambda: client.rerank(query, documents, model=self.model, truncation=self.truncation))
        return hosted.scores_from(response, len(documents))

    async def _asend(self, client: Any, query: str, documents: list[str]) -> list[float]:
        try:
            response = await client.rerank(query, documents, model=self.model, truncation=self.truncation)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise _malformed_or_bug(exc) from exc
        return hosted.scores_from(response, len(documents))

    def _classify(self, exc: Exception) -> Failure:
        return _describe(exc, self.timeout)


def _parsed(call: Callable[[], Any]) -> Any:
    """``call()``; an error the SDK raised while reading the answer becomes :class:`hosted.MalformedResponse`."""
    try:
        return call()
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise _malformed_or_bug(exc) from exc


def _malformed_or_bug(exc: Exception) -> Exception:
    """The SDK builds its result object without checking the JSON (``response.data``, ``documents[d.index]``),
    so a 2xx body of the wrong shape surfaces as AttributeError/KeyError/IndexError... raised inside
    ``voyageai``. Those are a malformed answer; the same errors raised in our code are bugs and stay as they are.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    if module.startswith("voyageai."):
        return hosted.MalformedResponse(f"{type(exc).__name__}: {exc}")
    return exc


def _describe(exc: Exception, timeout: float) -> Failure:
    """What went wrong and whether trying again can help. Re-raises exceptions that are bugs, not failures."""
    from voyageai import error

    if isinstance(exc, error.Timeout):
        return hosted.timeout_failure(exc, timeout)
    if isinstance(exc, error.APIConnectionError):
        # requests/aiohttp could not reach the server (refused, reset, DNS): another base URL may answer.
        cause = exc.__cause__ or exc
        return Failure(f"connection failed ({type(cause).__name__}: {cause})", retryable=True, connect=True)
    if isinstance(exc, error.VoyageError):
        return hosted.http_failure(exc.http_status, _detail(exc), exc.headers, AUTH_STATUSES)
    if isinstance(exc, hosted.MalformedResponse):
        return Failure(f"malformed response ({exc})", retryable=True)
    raise exc


def _detail(exc: Any) -> str:
    """The server's ``detail`` (Voyage's error field) from the parsed or raw body, else the SDK's message."""
    body = exc.json_body
    if not isinstance(body, Mapping) and isinstance(exc.http_body, str):
        try:
            body = json.loads(exc.http_body)
        except ValueError:
            body = exc.http_body if exc.http_body.strip() else None
    if isinstance(body, Mapping) and "detail" not in body:
        body = None
    return hosted.body_message(body, "detail") if body is not None else (exc.user_message or "no details")
