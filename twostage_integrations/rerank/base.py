"""The stage-2 contract: anything with ``rerank``/``arerank`` plugs into the pipeline."""

from __future__ import annotations

import asyncio
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..hit import Hit
from ..validation import check_rerank_args


@runtime_checkable
class Reranker(Protocol):
    """What :class:`~twostage_integrations.TwoStagePipeline` needs from a stage-2 model.

    ``rerank`` returns new :class:`Hit` objects (the input is never mutated), best first, at most
    ``top_k`` of them (all when ``top_k`` is None), with ``rerank_score``, ``rerank_rank`` and ``score``
    set. ``arerank`` is the same without blocking the event loop.
    """

    name: str

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]: ...

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]: ...


def apply_scores(hits: Sequence[Hit], scores: Sequence[float], top_k: int | None = None) -> list[Hit]:
    """Copies of ``hits`` ordered by ``scores`` (higher first; ties keep recall order), cut to ``top_k``."""
    if len(scores) != len(hits):
        raise RuntimeError(f"reranker returned {len(scores)} scores for {len(hits)} hits")
    order = sorted(range(len(hits)), key=lambda i: -float(scores[i]))  # stable: ties keep input order
    if top_k is not None:
        order = order[:top_k]
    return [
        dataclasses.replace(
            hits[i],
            metadata=dict(hits[i].metadata),
            rerank_score=float(scores[i]),
            rerank_rank=rank,
            score=float(scores[i]),
        )
        for rank, i in enumerate(order, start=1)
    ]


class BaseReranker(ABC):
    """Implements ``rerank``/``arerank`` on top of one method, ``score(query, texts)``.

    Subclasses with a native async client override ``ascore`` too; the default runs ``score`` in a
    worker thread so the event loop stays free.
    """

    score_kind: str = "rerank"  # rerank_score scale, see docs/scores.md

    name: str = "reranker"

    @abstractmethod
    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text, higher = more relevant."""

    async def ascore(self, query: str, texts: Sequence[str]) -> list[float]:
        return await asyncio.to_thread(self.score, query, texts)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per ``(query, text)`` pair, pairs from many queries mixed (what a server batching several
        requests into one model call needs). The default scores each query's texts with one ``score`` call;
        models that can batch across queries override it."""
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(i)
        out = [0.0] * len(pairs)
        for query, idx in by_query.items():
            for i, s in zip(idx, self.score(query, [pairs[i][1] for i in idx]), strict=True):
                out[i] = s
        return out

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        check_rerank_args(query, top_k)
        if not hits:
            return []
        return apply_scores(hits, self.score(query, [h.text for h in hits]), top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        check_rerank_args(query, top_k)
        if not hits:
            return []
        return apply_scores(hits, await self.ascore(query, [h.text for h in hits]), top_k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
