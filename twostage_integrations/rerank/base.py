"""The stage-2 contract: anything with ``rerank``/``arerank`` plugs into the pipeline."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..errors import RerankScoresError
from ..hit import Hit
from ..validation import check_rerank_args


@runtime_checkable
class Reranker(Protocol):
    """What :class:`~twostage_integrations.TwoStagePipeline` needs from a stage-2 model.

    Attributes:
        name: The model name (what logs, reports and the server show).
    """

    name: str

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Reorder hits by relevance to the query.

        Args:
            query: The query text.
            hits: Stage 1's hits (never mutated).
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first, with ``rerank_score``, ``rerank_rank`` and ``score`` set.
        """
        ...

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Async :meth:`rerank`, without blocking the event loop.

        Args:
            query: The query text.
            hits: Stage 1's hits (never mutated).
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first, with ``rerank_score``, ``rerank_rank`` and ``score`` set.
        """
        ...


def apply_scores(hits: Sequence[Hit], scores: Sequence[float], top_k: int | None = None) -> list[Hit]:
    """Order hits by their scores (higher first; ties keep recall order).

    Args:
        hits: The hits, in recall order (never mutated).
        scores: One score per hit.
        top_k: How many to keep; ``None`` keeps all.

    Returns:
        Copies of the hits, best first, with ``rerank_score``/``score`` = the score and ``rerank_rank`` set.

    Raises:
        RerankScoresError: If there is not exactly one score per hit, or a score is NaN/infinite (no order can
            be trusted then; wrap the reranker in :class:`~twostage_integrations.rerank.fallback.FallbackReranker`
            to keep the input order instead).

    >>> [h.id for h in apply_scores([Hit(id="a", text="A"), Hit(id="b", text="B")], [0.1, 0.7])]
    ['b', 'a']
    """
    if len(scores) != len(hits):
        raise RerankScoresError(
            f"reranker returned {len(scores)} scores for {len(hits)} hits; a reranker must score every hit once"
        )
    values = [float(s) for s in scores]
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise RerankScoresError(
            f"reranker returned a non-finite score ({values[bad[0]]}) for hit {hits[bad[0]].id!r} "
            f"({len(bad)} of {len(values)}); check the model's output"
        )
    order = sorted(range(len(hits)), key=lambda i: -values[i])  # stable: ties keep input order
    if top_k is not None:
        order = order[:top_k]
    return [
        dataclasses.replace(
            hits[i],
            metadata=dict(hits[i].metadata),
            rerank_score=values[i],
            rerank_rank=rank,
            score=values[i],
        )
        for rank, i in enumerate(order, start=1)
    ]


class BaseReranker(ABC):
    """Implements ``rerank``/``arerank`` on top of one method, ``score(query, texts)``.

    Subclasses with a native async client override ``ascore`` too; the default runs ``score`` in a
    worker thread so the event loop stays free.

    Attributes:
        name: The model name.
        score_kind: The scale of ``rerank_score`` (see docs/scores.md).
    """

    score_kind: str = "rerank"  # rerank_score scale, see docs/scores.md

    name: str = "reranker"

    @abstractmethod
    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Score texts for a query.

        Args:
            query: The query text.
            texts: The passages.

        Returns:
            One relevance score per text, higher = more relevant.
        """

    async def ascore(self, query: str, texts: Sequence[str]) -> list[float]:
        """Async :meth:`score`; this default runs it in a worker thread.

        Args:
            query: The query text.
            texts: The passages.

        Returns:
            One relevance score per text, higher = more relevant.
        """
        return await asyncio.to_thread(self.score, query, texts)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Score ``(query, text)`` pairs from many queries at once (what a server batching several requests
        into one model call needs).

        The default scores each query's texts with one ``score`` call; models that can batch across queries
        override it.

        Args:
            pairs: ``(query, text)`` pairs, queries mixed.

        Returns:
            One score per pair, in input order.
        """
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(i)
        out = [0.0] * len(pairs)
        for query, idx in by_query.items():
            for i, s in zip(idx, self.score(query, [pairs[i][1] for i in idx]), strict=True):
                out[i] = s
        return out

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Reorder hits by :meth:`score`.

        Args:
            query: The query text.
            hits: Stage 1's hits (never mutated).
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first, with ``rerank_score``, ``rerank_rank`` and ``score`` set.

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``top_k`` is below 1.
            RerankScoresError: If :meth:`score` returns the wrong number of scores or a non-finite one.
        """
        check_rerank_args(query, top_k)
        if not hits:
            return []
        return apply_scores(hits, self.score(query, [h.text for h in hits]), top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Async :meth:`rerank`, scoring with :meth:`ascore`.

        Args:
            query: The query text.
            hits: Stage 1's hits (never mutated).
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first, with ``rerank_score``, ``rerank_rank`` and ``score`` set.

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``top_k`` is below 1.
            RerankScoresError: If :meth:`ascore` returns the wrong number of scores or a non-finite one.
        """
        check_rerank_args(query, top_k)
        if not hits:
            return []
        return apply_scores(hits, await self.ascore(query, [h.text for h in hits]), top_k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
