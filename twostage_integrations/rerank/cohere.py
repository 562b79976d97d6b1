"""Stage 2 through the Cohere Rerank API, or any server that speaks it (such as ``twostage serve``).

One client for hosted and self-hosted reranking: point ``base_url`` (or ``TWOSTAGE_COHERE_BASE_URL``)
at a compatible server and nothing else changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import config
from ..extras import require_extra
from ..validation import check_positive_int
from . import hosted
from .hosted import Failure, HostedReranker, HostedSettings
from .registry import COHERE_PREFIX as COHERE_PREFIX  # re-exported: the prefix lives with the name table
from .registry import hosted_provider

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+; only the type checker needs it

DEFAULT_COHERE_MODEL = "rerank-v3.5"
MAX_DOCUMENTS_PER_REQUEST = 1000  # the API's documented per-request limit
# The SDK's name first, then what LangChain/LlamaIndex users set.
API_KEY_ENVS = (config.CO_API_KEY.name, config.COHERE_API_KEY.name)
BASE_URL_ENVS = (config.TWOSTAGE_COHERE_BASE_URL.name, config.CO_API_URL.name)
AUTH_STATUSES = frozenset({401, 403, 498})


def is_cohere_model(name: str) -> bool:
    """Whether ``make_reranker`` sends a name to Cohere.

    Args:
        name: A model name.

    Returns:
        True for ``rerank-...`` (except Voyage's model names) and an explicit ``cohere:<model>``.

    >>> is_cohere_model("rerank-v3.5"), is_cohere_model("cohere:my-model"), is_cohere_model("org/cross-encoder")
    (True, True, False)
    >>> is_cohere_model("rerank-2.5")  # Voyage's
    False
    """
    return hosted_provider(name) == "cohere"


class CohereReranker(HostedReranker):
    """Rerank with Cohere's ``/v2/rerank`` through the official ``cohere`` SDK (extra ``cohere``).

    Point ``base_url`` at a self-hosted compatible server, e.g. ``twostage serve``. Longer lists than
    ``batch_size`` are split and the scores merged (relevance scores are comparable across requests for the same
    query). The SDK's own retries are off, so :class:`~twostage_integrations.rerank.hosted.HostedReranker`'s are
    the only ones. With ``on_error="fallback"`` a failed call logs a warning and returns the hits in the order
    given, through :class:`~twostage_integrations.rerank.fallback.FallbackReranker`: ``rerank_score`` =
    ``score`` = ``1 / position`` and ``metadata["rerank_fallback"] = True`` with the reason.

    Args:
        model: A Cohere rerank model (a ``cohere:`` prefix is stripped).
        max_tokens_per_doc: The API's per-document token cut; ``None`` leaves the API's default.
        **settings: :class:`~twostage_integrations.rerank.hosted.HostedReranker`'s settings. ``api_key``
            defaults to ``CO_API_KEY``, else ``COHERE_API_KEY``; ``base_url`` to ``TWOSTAGE_COHERE_BASE_URL``,
            else ``CO_API_URL``, else Cohere's API; ``batch_size`` is at most 1,000 (the API's limit).

    Raises:
        MissingDependencyError: If the ``cohere`` extra is not installed.
        APIKeyError: If there is no key (a rejected key raises it on the first call).
        InvalidParameterError: If a setting is out of range.

    >>> from twostage_integrations import CohereReranker, Hit
    >>> co = CohereReranker("rerank-v3.5", api_key="...")  # doctest: +SKIP
    >>> hits = [Hit(id="1", text="Paris is in France."), Hit(id="2", text="Bananas are yellow.")]
    >>> [h.id for h in co.rerank("capital of France", hits, top_k=1)]  # doctest: +SKIP
    ['1']
    """

    score_kind: str = "cohere"  # relevance_score 0..1, see docs/scores.md
    provider = "Cohere"
    default_model, default_host, key_envs = DEFAULT_COHERE_MODEL, "api.cohere.com", API_KEY_ENVS
    key_help = "for a self-hosted `twostage serve` without --api-key any non-empty value works"
    base_url_envs, max_documents = BASE_URL_ENVS, MAX_DOCUMENTS_PER_REQUEST

    def __init__(
        self,
        model: str = DEFAULT_COHERE_MODEL,
        *,
        max_tokens_per_doc: int | None = None,
        **settings: Unpack[HostedSettings],
    ) -> None:
        self._cohere = require_extra("cohere", "cohere", feature="CohereReranker")
        self.max_tokens_per_doc = (
            None if max_tokens_per_doc is None else check_positive_int(max_tokens_per_doc, "max_tokens_per_doc")
        )
        super().__init__(model, **settings)

    # -- the hooks HostedReranker calls ---------------------------------------------------------------
    def _client_kwargs(self, base_url: str | None) -> dict[str, Any]:
        return {
            "base_url": base_url,
            "timeout": self.timeout,
            "max_retries": 0,  # retries are ours: bounded, with jitter, and the same on both paths
            "client_name": "twostage-integrations",
            "log_warning_experimental_features": False,
        }

    def _new_client(self, base_url: str | None) -> Any:
        return self._cohere.ClientV2(self._key.get(), **self._client_kwargs(base_url))

    def _new_async_client(self, base_url: str | None) -> Any:
        return self._cohere.AsyncClientV2(self._key.get(), **self._client_kwargs(base_url))

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

    def _send(self, client: Any, query: str, documents: list[str]) -> list[float]:
        return hosted.scores_from(client.rerank(**self._request(query, documents)), len(documents))

    async def _asend(self, client: Any, query: str, documents: list[str]) -> list[float]:
        return hosted.scores_from(await client.rerank(**self._request(query, documents)), len(documents))

    def _classify(self, exc: Exception) -> Failure:
        return _describe(exc, self.timeout)


def _describe(exc: Exception, timeout: float) -> Failure:
    """What went wrong and whether trying again can help. Re-raises exceptions that are bugs, not failures."""
    import httpx
    import pydantic
    from cohere.core.api_error import ApiError
    from cohere.core.parse_error import ParsingError

    if isinstance(exc, ApiError):
        return hosted.http_failure(exc.status_code, hosted.body_message(exc.body), exc.headers, AUTH_STATUSES)
    if isinstance(exc, httpx.TimeoutException):
        return hosted.timeout_failure(exc, timeout)
    if isinstance(exc, httpx.TransportError):
        # Refused, reset or unresolvable (no HTTP answer): another base URL may work; anything else (a bad
        # proxy, an unsupported scheme) would fail there too.
        unreachable = isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError))
        return Failure(f"connection failed ({type(exc).__name__}: {exc})", retryable=True, connect=unreachable)
    if isinstance(exc, (hosted.MalformedResponse, ParsingError, pydantic.ValidationError)):
        return Failure(f"malformed response ({exc})", retryable=True)
    raise exc
