"""Recall, then rerank: the framework-agnostic core every adapter wraps."""

from __future__ import annotations

import contextvars
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .hit import Hit
from .recall.base import AddResult, Recall
from .rerank.base import Reranker
from .rerank.cascade import as_cascade
from .validation import check_limit_top_k, check_query


@dataclass
class StageTimings:
    """Wall-clock seconds per stage of one search.

    Attributes:
        recall_s: Seconds spent in stage 1.
        rerank_s: Seconds spent in stage 2 (0 when no reranker ran).
    """

    recall_s: float = 0.0
    rerank_s: float = 0.0

    @property
    def total_s(self) -> float:
        """Seconds for both stages."""
        return self.recall_s + self.rerank_s

    def to_dict(self) -> dict[str, float]:
        """A JSON-ready dict.

        Returns:
            ``recall_s``, ``rerank_s`` and ``total_s``.
        """
        return {"recall_s": self.recall_s, "rerank_s": self.rerank_s, "total_s": self.total_s}


@dataclass
class SearchResult:
    """Hits plus how long each stage took (what :meth:`TwoStagePipeline.run` returns).

    Attributes:
        hits: The final hits, best first.
        timings: Seconds per stage.
        candidates: Stage 1's hits, in recall order, before reranking.
    """

    hits: list[Hit]
    timings: StageTimings = field(default_factory=StageTimings)
    candidates: list[Hit] = field(default_factory=list)


_PIPELINE_IDS = itertools.count()


class TwoStagePipeline:
    """Stage 1 recalls ``limit`` candidates; stage 2 reranks them and keeps ``top_k``.

    ``search`` returns the hits; ``run`` returns hits, stage-1 candidates and per-stage timings.
    ``last_timings`` is the timings of the last search *in the current thread or asyncio task* (a
    :mod:`contextvars` variable), so callers sharing one pipeline never read each other's numbers. A task
    started with ``asyncio.gather``/``create_task`` has its own context: read ``run(...).timings`` there.

    Args:
        recall: Stage 1 (:class:`~twostage_integrations.ChromaRecall`, BM25, hybrid...).
        reranker: Stage 2. ``None`` skips it (recall order, cut to ``top_k``), like ``vai query --no-rerank``.
            A list of ``(reranker, keep)`` pairs runs them as a
            :class:`~twostage_integrations.rerank.cascade.Cascade` (each keeps its ``keep`` best for the next;
            ``top_k`` cuts the last).
        limit: Candidates stage 1 returns per query (default for every search).
        top_k: Hits kept after stage 2 (default for every search).

    Raises:
        InvalidParameterError: If ``limit`` or ``top_k`` is below 1, or ``top_k > limit``.

    >>> from twostage_integrations import ChromaRecall, CrossEncoderReranker, TwoStagePipeline
    >>> pipe = TwoStagePipeline(ChromaRecall("docs"), CrossEncoderReranker(), limit=20, top_k=5)  # doctest: +SKIP
    >>> pipe.add_texts(["Aspirin lowers the risk of stroke.", "Paris is in France."])  # doctest: +SKIP
    >>> [h.id for h in pipe.search("does aspirin prevent stroke?")]  # doctest: +SKIP
    """

    def __init__(
        self,
        recall: Recall,
        reranker: Reranker | Sequence[tuple[Reranker, int | None]] | None = None,
        *,
        limit: int = 20,
        top_k: int = 5,
    ) -> None:
        self.limit, self.top_k = check_limit_top_k(limit, top_k)
        self.recall = recall
        if isinstance(reranker, (list, tuple)):  # [(tiny, 30), (ce, 5)]: a multi-stage cascade
            reranker = as_cascade(reranker)
        self.reranker: Reranker | None = reranker  # type: ignore[assignment]  # a list became a Cascade above
        # One variable per pipeline, so two pipelines used in one thread keep their own numbers too.
        self._last_timings: contextvars.ContextVar[StageTimings | None] = contextvars.ContextVar(
            f"twostage_last_timings_{next(_PIPELINE_IDS)}", default=None
        )

    @property
    def last_timings(self) -> StageTimings:
        """Timings of the last search made by this thread/task with this pipeline (zeros before the first)."""
        return self._last_timings.get() or StageTimings()

    @last_timings.setter
    def last_timings(self, timings: StageTimings) -> None:
        """Record ``timings`` for the current thread/task.

        Args:
            timings: The timings of the search just made.
        """
        self._last_timings.set(timings)

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> AddResult:
        """Store passages in stage 1 (see :meth:`ChromaRecall.add_texts`).

        Args:
            texts: The passages.
            metadatas: One metadata mapping (or ``None``) per text.
            ids: One id per text; stage 1 makes them when ``None``.

        Returns:
            What stage 1 stored and skipped.

        Raises:
            InvalidDocumentError: If texts, ids or metadata cannot be stored (nothing is written).
        """
        return self.recall.add_texts(texts, metadatas=metadatas, ids=ids)

    def _args(self, query: str, limit: int | None, top_k: int | None) -> tuple[int, int]:
        check_query(query)
        return check_limit_top_k(self.limit if limit is None else limit, self.top_k if top_k is None else top_k)

    def run(
        self,
        query: str,
        *,
        limit: int | None = None,
        top_k: int | None = None,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        **recall_kwargs: Any,
    ) -> SearchResult:
        """Search and return hits, stage-1 candidates and timings.

        Args:
            query: The query text.
            limit: Candidates from stage 1; ``None`` uses the pipeline's.
            top_k: Hits kept after stage 2; ``None`` uses the pipeline's.
            where: A Chroma metadata filter for stage 1.
            where_document: A Chroma document-content filter for stage 1.
            **recall_kwargs: Passed to stage 1's ``search`` (e.g. ``num_candidates`` for Chroma).

        Returns:
            The final hits, the stage-1 candidates and the timings (also kept in :attr:`last_timings`).

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``limit``/``top_k`` are out of range.
        """
        limit, top_k = self._args(query, limit, top_k)
        t0 = time.perf_counter()
        candidates = self.recall.search(query, limit, where=where, where_document=where_document, **recall_kwargs)
        t1 = time.perf_counter()
        hits = self.reranker.rerank(query, candidates, top_k) if self.reranker else candidates[:top_k]
        timings = StageTimings(recall_s=t1 - t0, rerank_s=time.perf_counter() - t1 if self.reranker else 0.0)
        self.last_timings = timings
        return SearchResult(hits=hits, timings=timings, candidates=candidates)

    async def arun(
        self,
        query: str,
        *,
        limit: int | None = None,
        top_k: int | None = None,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        **recall_kwargs: Any,
    ) -> SearchResult:
        """Async :meth:`run`: model and database work happen off the event loop.

        Args:
            query: The query text.
            limit: Candidates from stage 1; ``None`` uses the pipeline's.
            top_k: Hits kept after stage 2; ``None`` uses the pipeline's.
            where: A Chroma metadata filter for stage 1.
            where_document: A Chroma document-content filter for stage 1.
            **recall_kwargs: Passed to stage 1's ``asearch``.

        Returns:
            The final hits, the stage-1 candidates and the timings.

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``limit``/``top_k`` are out of range.
        """
        limit, top_k = self._args(query, limit, top_k)
        t0 = time.perf_counter()
        candidates = await self.recall.asearch(
            query, limit, where=where, where_document=where_document, **recall_kwargs
        )
        t1 = time.perf_counter()
        hits = await self.reranker.arerank(query, candidates, top_k) if self.reranker else candidates[:top_k]
        timings = StageTimings(recall_s=t1 - t0, rerank_s=time.perf_counter() - t1 if self.reranker else 0.0)
        self.last_timings = timings
        return SearchResult(hits=hits, timings=timings, candidates=candidates)

    def search(self, query: str, **kwargs: Any) -> list[Hit]:
        """Search and return the final hits.

        Args:
            query: The query text.
            **kwargs: :meth:`run`'s keywords (``limit``, ``top_k``, ``where``, ``where_document``...).

        Returns:
            The final hits, best first.
        """
        return self.run(query, **kwargs).hits

    async def asearch(self, query: str, **kwargs: Any) -> list[Hit]:
        """Async :meth:`search`.

        Args:
            query: The query text.
            **kwargs: :meth:`arun`'s keywords.

        Returns:
            The final hits, best first.
        """
        return (await self.arun(query, **kwargs)).hits

    def __repr__(self) -> str:
        return (
            f"TwoStagePipeline(recall={self.recall!r}, reranker={self.reranker!r}, "
            f"limit={self.limit}, top_k={self.top_k})"
        )
