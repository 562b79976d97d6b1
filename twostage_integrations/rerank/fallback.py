"""Keep answering when a reranker fails: a second reranker, else the order the hits came in.

Whatever happens, the output keeps the stage-2 contract (every hit has a finite ``rerank_score`` and a
``rerank_rank``, best first), so :class:`~twostage_integrations.rerank.fusion.FusedReranker`, a
:class:`~twostage_integrations.rerank.cascade.Cascade` stage after it, the LangChain/LlamaIndex adapters and
``twostage serve`` work unchanged. Hits that were not reranked by the primary say so in their metadata.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from ..errors import RerankAPIError, RerankScoresError
from ..hit import Hit
from ..validation import check_rerank_args
from .base import Reranker

logger = logging.getLogger(__name__)

FALLBACK_KEY = "rerank_fallback"  # metadata: True on hits the primary reranker did not order
REASON_KEY = "rerank_fallback_reason"  # metadata: why (the error, one line), and who ordered them instead

# Failures of a remote or misbehaving model, where keeping the recall order beats failing the search.
# Bad arguments (InvalidQueryError, InvalidParameterError) and a rejected API key (APIKeyError) are not here:
# they are the caller's to fix and always raise.
DEFAULT_CATCH: tuple[type[BaseException], ...] = (RerankAPIError, RerankScoresError, TimeoutError, ConnectionError)


def input_order(hits: Sequence[Hit], top_k: int | None, reason: str) -> list[Hit]:
    """The hits in the order given, with the stage-2 contract's fields filled.

    ``rerank_score`` (and ``score``) is ``1 / position`` (1, 0.5, 0.33...): strictly decreasing, finite, in
    (0, 1] like Cohere's ``relevance_score``. It is not a relevance estimate, only the given order written as
    a score. The recall score cannot play that role: after a cascade stage the given order is that stage's,
    not recall's, and recall scores can tie.

    Args:
        hits: The hits, in the order to keep (never mutated).
        top_k: How many to keep; ``None`` keeps all.
        reason: Why they were not reranked (stored in ``metadata["rerank_fallback_reason"]``).

    Returns:
        Copies of the hits marked ``metadata["rerank_fallback"] = True``.

    >>> hits = [Hit(id="a", text="A", recall_score=0.2), Hit(id="b", text="B", recall_score=0.1)]
    >>> [(h.id, h.rerank_score, h.rerank_rank) for h in input_order(hits, None, "demo")]
    [('a', 1.0, 1), ('b', 0.5, 2)]
    """
    keep = list(hits) if top_k is None else list(hits)[:top_k]
    return [
        dataclasses.replace(
            h,
            metadata={**h.metadata, FALLBACK_KEY: True, REASON_KEY: reason},
            rerank_score=1.0 / rank,
            rerank_rank=rank,
            score=1.0 / rank,
        )
        for rank, h in enumerate(keep, start=1)
    ]


def _mark(hits: Sequence[Hit], reason: str) -> list[Hit]:
    return [dataclasses.replace(h, metadata={**h.metadata, FALLBACK_KEY: True, REASON_KEY: reason}) for h in hits]


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class FallbackReranker:
    """A reranker that keeps answering when another fails: a second reranker, else the input order.

    Hits not ordered by ``primary`` carry ``metadata["rerank_fallback"] = True`` and
    ``metadata["rerank_fallback_reason"]`` (the error, and which reranker ordered them instead); a warning
    is logged.

    Args:
        primary: The reranker to use.
        fallback: The reranker to use when ``primary`` fails; ``None`` (or when it fails too): the input order
            (see :func:`input_order`).
        catch: The failures to fall back on; default remote/model failures (:class:`RerankAPIError`,
            :class:`RerankScoresError`, timeouts, dropped connections). Invalid arguments and a rejected API
            key still raise.

    >>> from twostage_integrations import CohereReranker, CrossEncoderReranker
    >>> safe = FallbackReranker(CohereReranker(api_key="..."), CrossEncoderReranker())  # doctest: +SKIP
    >>> hits = safe.rerank("capital of France", hits, top_k=3)  # doctest: +SKIP
    >>> hits[0].metadata.get("rerank_fallback", False)  # doctest: +SKIP
    False
    """

    def __init__(
        self,
        primary: Reranker,
        fallback: Reranker | None = None,
        *,
        catch: tuple[type[BaseException], ...] = DEFAULT_CATCH,
    ) -> None:
        self.primary, self.fallback, self.catch = primary, fallback, tuple(catch)
        self.name = getattr(primary, "name", type(primary).__name__)

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Rerank with ``primary``, else ``fallback``, else keep the input order.

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first; those not ordered by ``primary`` are marked in their metadata.

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``top_k`` is below 1.
        """
        check_rerank_args(query, top_k)
        try:
            return self.primary.rerank(query, hits, top_k)
        except self.catch as exc:
            reason = _reason(exc)
        if self.fallback is not None:
            try:
                return self._used(_mark(self.fallback.rerank(query, hits, top_k), self._via(reason)), len(hits))
            except self.catch as exc:
                reason = f"{reason}; fallback {self.fallback.name} failed too: {_reason(exc)}"
        return self._used(input_order(hits, top_k, reason), len(hits))

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Async :meth:`rerank`.

        Args:
            query: The query text.
            hits: Stage 1's hits.
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first; those not ordered by ``primary`` are marked in their metadata.
        """
        check_rerank_args(query, top_k)
        try:
            return await self.primary.arerank(query, hits, top_k)
        except self.catch as exc:
            reason = _reason(exc)
        if self.fallback is not None:
            try:
                hits_out = await self.fallback.arerank(query, hits, top_k)
                return self._used(_mark(hits_out, self._via(reason)), len(hits))
            except self.catch as exc:
                reason = f"{reason}; fallback {self.fallback.name} failed too: {_reason(exc)}"
        return self._used(input_order(hits, top_k, reason), len(hits))

    def _via(self, reason: str) -> str:
        return f"{reason}; ordered by {self.fallback.name}"  # type: ignore[union-attr]

    def _used(self, hits: list[Hit], n: int) -> list[Hit]:
        reason = hits[0].metadata[REASON_KEY] if hits else "no hits"
        logger.warning("%s failed (%s); returned %d of %d hits not reranked by it", self.name, reason, len(hits), n)
        return hits

    def __repr__(self) -> str:
        return f"FallbackReranker({self.primary!r}, fallback={self.fallback!r})"
