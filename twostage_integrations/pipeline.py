"""Recall, then rerank: the framework-agnostic core every adapter wraps."""

from __future__ import annotations

import contextvars
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .hit import Hit
from .recall.base import AddResult, Recall
from .rerank.base import Reranker
from .rerank.cascade import as_cascade
from .scores import check_min_score, pipeline_score_kinds, threshold_hits
from .validation import check_limit_top_k, check_query

if TYPE_CHECKING:
    from .spec import PipelineSpec


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
        min_score: Drop hits whose final ``score`` is below this (default for every search; ``None`` keeps
            ``top_k``). Fewer than ``top_k`` hits, or none, is then a valid answer. It must lie in the range of the
            last stage's ``score_kind`` (docs/scores.md): e.g. 0..1 for ``ce_calibrated``, P(relevant).

    Raises:
        InvalidParameterError: If ``limit`` or ``top_k`` is below 1, ``top_k > limit``, or ``min_score`` is not a
            finite number (outside its kind's range: raised by the first search, which knows the kind).

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
        min_score: float | None = None,
    ) -> None:
        self.limit, self.top_k = check_limit_top_k(limit, top_k)
        self.min_score = check_min_score(min_score)
        self.recall = recall
        if isinstance(reranker, (list, tuple)):  # [(tiny, 30), (ce, 5)]: a multi-stage cascade
            reranker = as_cascade(reranker)
        self.reranker: Reranker | None = reranker  # type: ignore[assignment]  # a list became a Cascade above
        self.spec: PipelineSpec | None = None  # what built this pipeline, when from_spec did (reported by the CLI)
        # One variable per pipeline, so two pipelines used in one thread keep their own numbers too.
        self._last_timings: contextvars.ContextVar[StageTimings | None] = contextvars.ContextVar(
            f"twostage_last_timings_{next(_PIPELINE_IDS)}", default=None
        )

    @classmethod
    def from_spec(
        cls,
        spec: PipelineSpec | Mapping[str, Any] | str | os.PathLike[str],
        recall: Recall | None = None,
        *,
        collection: str | None = None,
        db: str | os.PathLike[str] | None = None,
        host: str | None = None,
        port: int | None = None,
        embedding_model: Any = None,
        rerank_backend: str | None = None,
        **reranker_kwargs: Any,
    ) -> TwoStagePipeline:
        """The pipeline a spec names (see docs/pipeline_spec.md): its recall kind and depth, its rerank stages
        as a :class:`~twostage_integrations.rerank.cascade.Cascade` (``pipeline.reranker``; None for ``none``)
        and its ``top_k``. ``pipeline.spec`` is the spec read. A ``fuse=METHOD:auto`` weight is chosen here,
        without labels, from pseudo-queries of the collection (once per collection version, kept beside its BM25
        index; see docs/evaluation.md).

        Args:
            spec: A spec string, a preset name (``"exact"``), the dict form, a ``.toml`` file, or a
                :class:`~twostage_integrations.spec.PipelineSpec`.
            recall: Stage 1 to use instead of the spec's kind (the spec's ``limit`` still applies).
            collection: The Chroma collection the spec's recall reads (when no ``recall`` is given).
            db: Embedded Chroma folder (default: ``$TWOSTAGE_DB``...), as for :class:`ChromaRecall`.
            host: Chroma server host (instead of ``db``).
            port: Chroma server port.
            embedding_model: Embedding model id, folder or embedder, as for :class:`ChromaRecall`.
            rerank_backend: Engine of the stages that name no ``backend`` (as ``--rerank-backend``).
            **reranker_kwargs: Constructor arguments for every stage's reranker (``api_key``, ``device``...).

        Returns:
            The pipeline.

        Raises:
            PipelineSpecError: The spec cannot be read (the message names the bad token).
            InvalidParameterError: Both ``recall`` and Chroma arguments, or neither; an option a stage's model
                does not take.

        >>> pipe = TwoStagePipeline.from_spec("exact", collection="docs")  # doctest: +SKIP
        >>> pipe = TwoStagePipeline.from_spec("bm25:50 > none > top_k=10", BM25Recall(chroma))  # doctest: +SKIP
        """
        from .spec import build_recall, build_reranker, resolve

        parsed = resolve(spec)
        chroma = {"collection": collection, "db": db, "host": host, "port": port, "embedding_model": embedding_model}
        stage1 = build_recall(parsed, recall, **chroma)
        stage2 = build_reranker(parsed, backend=rerank_backend, **reranker_kwargs)
        if parsed.fusion is not None and parsed.fusion.auto:  # fuse=METHOD:auto: chosen once per collection version
            from .evaluation.fusion_auto import apply_auto_fusion

            apply_auto_fusion(stage2, stage1, limit=parsed.recall.limit)
        pipe = cls(stage1, stage2, limit=parsed.recall.limit, top_k=parsed.top_k, min_score=parsed.min_score)
        pipe.spec = parsed
        return pipe

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

    def final_score_kind(self) -> str:
        """The ``score_kind`` of the hits' final score: the reranker's, else stage 1's (docs/scores.md)."""
        recall_kind, rerank_kind = pipeline_score_kinds(self)
        return rerank_kind or recall_kind

    def _min_score(self, min_score: float | None) -> float | None:
        """The threshold of this search (the pipeline's when None), checked against the final score kind."""
        min_score = self.min_score if min_score is None else check_min_score(min_score)
        return None if min_score is None else check_min_score(min_score, self.final_score_kind())

    def run(
        self,
        query: str,
        *,
        limit: int | None = None,
        top_k: int | None = None,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        **recall_kwargs: Any,
    ) -> SearchResult:
        """Search and return hits, stage-1 candidates and timings.

        Args:
            query: The query text.
            limit: Candidates from stage 1; ``None`` uses the pipeline's.
            top_k: Hits kept after stage 2; ``None`` uses the pipeline's.
            min_score: Drop hits scored below it; ``None`` uses the pipeline's (see the class).
            where: A Chroma metadata filter for stage 1.
            where_document: A Chroma document-content filter for stage 1.
            **recall_kwargs: Passed to stage 1's ``search`` (e.g. ``num_candidates`` for Chroma).

        Returns:
            The final hits, the stage-1 candidates and the timings (also kept in :attr:`last_timings`).

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``limit``/``top_k``/``min_score`` are out of range.
        """
        limit, top_k = self._args(query, limit, top_k)
        threshold = self._min_score(min_score)
        t0 = time.perf_counter()
        candidates = self.recall.search(query, limit, where=where, where_document=where_document, **recall_kwargs)
        t1 = time.perf_counter()
        hits = self.reranker.rerank(query, candidates, top_k) if self.reranker else candidates[:top_k]
        if threshold is not None:
            hits = threshold_hits(hits, threshold, *pipeline_score_kinds(self))
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
        min_score: float | None = None,
        **recall_kwargs: Any,
    ) -> SearchResult:
        """Async :meth:`run`: model and database work happen off the event loop.

        Args:
            query: The query text.
            limit: Candidates from stage 1; ``None`` uses the pipeline's.
            top_k: Hits kept after stage 2; ``None`` uses the pipeline's.
            min_score: Drop hits scored below it; ``None`` uses the pipeline's (see the class).
            where: A Chroma metadata filter for stage 1.
            where_document: A Chroma document-content filter for stage 1.
            **recall_kwargs: Passed to stage 1's ``asearch``.

        Returns:
            The final hits, the stage-1 candidates and the timings.

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``limit``/``top_k``/``min_score`` are out of range.
        """
        limit, top_k = self._args(query, limit, top_k)
        threshold = self._min_score(min_score)
        t0 = time.perf_counter()
        candidates = await self.recall.asearch(
            query, limit, where=where, where_document=where_document, **recall_kwargs
        )
        t1 = time.perf_counter()
        hits = await self.reranker.arerank(query, candidates, top_k) if self.reranker else candidates[:top_k]
        if threshold is not None:
            hits = threshold_hits(hits, threshold, *pipeline_score_kinds(self))
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
            f"limit={self.limit}, top_k={self.top_k}"
            + ("" if self.min_score is None else f", min_score={self.min_score}")
            + ")"
        )
