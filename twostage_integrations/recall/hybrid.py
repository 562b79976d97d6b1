"""Hybrid recall: dense and sparse arms fused by reciprocal rank fusion (RRF)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import InvalidParameterError
from ..hit import Hit
from ..validation import check_positive_int, check_search_args
from .base import AddResult, BaseRecall, DeleteNotSupportedError, Recall

__all__ = ["HybridRecall", "rrf_fuse"]


def rrf_fuse(
    rankings: Sequence[Sequence[Hit]], *, k: float = 60.0, weights: Sequence[float] | None = None
) -> list[Hit]:
    """Fuse ranked lists: ``score(d) = sum_i w_i / (k + rank_i(d))`` over the lists that contain ``d``.

    Args:
        rankings: Ranked lists of hits, best first; hits are matched by id.
        k: The RRF constant.
        weights: One weight per list; default all 1.

    Returns:
        Copies of the hits, best first, with ``score``/``recall_score`` = the fused score and ``recall_rank`` =
        the fused rank. Ties go to the hit seen first (earlier list, then higher in it).

    Raises:
        InvalidParameterError: If there is not one weight per list.

    >>> a, b, c = Hit(id="a", text="A"), Hit(id="b", text="B"), Hit(id="c", text="C")
    >>> [h.id for h in rrf_fuse([[a, b], [c, b]], k=60)]
    ['b', 'a', 'c']
    """
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise InvalidParameterError(f"got {len(weights)} weights for {len(rankings)} ranked lists; pass one each")
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (k + rank)
            first.setdefault(hit.id, hit)
    order = sorted(first, key=lambda doc_id: -scores[doc_id])  # stable: ties keep first-seen order
    return [
        dataclasses.replace(
            first[doc_id],
            metadata=dict(first[doc_id].metadata),
            score=scores[doc_id],
            recall_score=scores[doc_id],
            recall_rank=rank,
        )
        for rank, doc_id in enumerate(order, start=1)
    ]


class HybridRecall(BaseRecall):
    """Recall from a dense and a sparse arm, fused with reciprocal rank fusion.

    ``recall_score`` is the fused RRF score. The same ``where``/``where_document`` filter goes to both arms
    (:class:`BM25Recall` applies any Chroma filter), so filtered hybrid search only returns passages matching
    the filter.

    Args:
        dense: The dense arm (usually a :class:`ChromaRecall`).
        sparse: The sparse arm (usually a :class:`BM25Recall`).
        k: The RRF constant (60, as in Cormack et al. 2009).
        candidates_per_arm: Hits each arm returns before fusion; default the search's ``limit`` (the fused
            list is always cut to ``limit``).
        weights: Each arm's contribution, ``(dense, sparse)``.

    Raises:
        InvalidParameterError: If ``k`` is negative, ``weights`` are not two non-negative numbers, or
            ``candidates_per_arm`` is below 1.

    >>> from twostage_integrations import BM25Recall, ChromaRecall, HybridRecall
    >>> chroma = ChromaRecall("docs", path="/tmp/twostage-doctest")
    >>> hybrid = HybridRecall(chroma, BM25Recall(chroma))
    >>> _ = hybrid.add_texts(["Aspirin lowers the risk of stroke.", "Paris is the capital of France."])
    >>> hybrid.search("aspirin stroke", limit=1)[0].text
    'Aspirin lowers the risk of stroke.'
    """

    score_kind: str = "rrf"  # recall_score scale, see docs/scores.md

    def __init__(
        self,
        dense: Recall,
        sparse: Recall,
        *,
        k: float = 60.0,
        candidates_per_arm: int | None = None,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        if not k >= 0:
            raise InvalidParameterError(f"k must be >= 0, got {k!r}; 60 is the usual RRF constant")
        if candidates_per_arm is not None:
            check_positive_int(candidates_per_arm, "candidates_per_arm")
        if len(weights) != 2 or any(w < 0 for w in weights):
            raise InvalidParameterError(f"weights must be two non-negative numbers (dense, sparse), got {weights!r}")
        self.dense, self.sparse = dense, sparse
        self.k = k
        self.candidates_per_arm = candidates_per_arm
        self.weights = tuple(weights)

    @classmethod
    def from_chroma(cls, chroma: Any, *, stemmer: str | None = None, **kwargs: Any) -> HybridRecall:
        """Dense = ``chroma`` itself, sparse = a :class:`BM25Recall` over its passages (so one add or delete
        serves both arms).

        Args:
            chroma: The dense arm, a :class:`ChromaRecall`.
            stemmer: PyStemmer language for the BM25 arm (default none).
            **kwargs: ``HybridRecall`` options (``k``, ``candidates_per_arm``, ``weights``).

        Returns:
            An instance of this class (subclasses get instances of themselves).

        Raises:
            MissingDependencyError: ``bm25s`` (or PyStemmer, when ``stemmer`` is given) is not installed.
            InvalidParameterError: A ``HybridRecall`` option is out of range.
        """
        from .bm25 import BM25Recall

        return cls(chroma, BM25Recall(chroma, stemmer=stemmer), **kwargs)

    def _per_arm(self, limit: int) -> int:
        return self.candidates_per_arm or limit

    @property
    def collection(self):
        """The dense arm's Chroma collection (raises if it does not exist)."""
        return self.dense.collection

    def search(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        **dense_kwargs: Any,
    ) -> list[Hit]:
        """Search both arms and fuse them.

        Args:
            query: The search text.
            limit: How many hits at most.
            where: Chroma-style metadata filter, for both arms.
            where_document: Chroma-style document filter, for both arms.
            **dense_kwargs: Options for the dense arm's ``search`` (e.g. ``num_candidates``).

        Returns:
            The fused top ``limit``, best first.

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
            InvalidParameterError: If ``limit`` is below 1.
        """
        check_search_args(query, limit)
        n = self._per_arm(limit)
        dense = self.dense.search(query, n, where=where, where_document=where_document, **dense_kwargs)
        sparse = self.sparse.search(query, n, where=where, where_document=where_document)
        return rrf_fuse([dense, sparse], k=self.k, weights=self.weights)[:limit]

    async def asearch(
        self,
        query: str,
        limit: int = 20,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        **dense_kwargs: Any,
    ) -> list[Hit]:
        """:meth:`search` with both arms searched concurrently (each off the event loop).

        Args:
            query: The search text.
            limit: How many hits at most.
            where: Chroma-style metadata filter, for both arms.
            where_document: Chroma-style document filter, for both arms.
            **dense_kwargs: Options for the dense arm's ``asearch``.

        Returns:
            The fused top ``limit``, best first.
        """
        check_search_args(query, limit)
        n = self._per_arm(limit)
        dense, sparse = await asyncio.gather(
            self.dense.asearch(query, n, where=where, where_document=where_document, **dense_kwargs),
            self.sparse.asearch(query, n, where=where, where_document=where_document),
        )
        return rrf_fuse([dense, sparse], k=self.k, weights=self.weights)[:limit]

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
    ) -> AddResult:
        """Add to both arms.

        When they share one Chroma collection the second add finds everything already stored (nothing is
        embedded twice) and only marks the BM25 index stale.

        Args:
            texts: The passages.
            metadatas: One metadata mapping (or ``None``) per passage.
            ids: One id per passage; default a hash of the text.

        Returns:
            The dense arm's result.
        """
        result = self.dense.add_texts(texts, metadatas=metadatas, ids=ids)
        self.sparse.add_texts(texts, metadatas=metadatas, ids=ids)
        return result

    def delete(self, ids: Sequence[str]) -> int:
        """Delete from both arms (once when the sparse arm is a :class:`BM25Recall` over the dense arm: then it
        is only told to re-check its index).

        Args:
            ids: The ids to delete; ids not stored are ignored.

        Returns:
            How many of ``ids`` the dense arm had.

        Raises:
            DeleteNotSupportedError: If an arm cannot delete (checked before either arm deletes anything).
        """
        from .bm25 import BM25Recall

        sparse = self.sparse
        if isinstance(sparse, BM25Recall) and sparse.chroma is self.dense:
            deleted = _deleter(self.dense, "dense")(ids)
            sparse.mark_stale()  # same collection, already deleted: only tell the BM25 snapshot
            return deleted
        delete_dense, delete_sparse = _deleter(self.dense, "dense"), _deleter(sparse, "sparse")
        deleted = delete_dense(ids)
        delete_sparse(ids)
        return deleted

    def count(self) -> int:
        """Passages in the dense arm (both arms index the same passages)."""
        return self.dense.count()

    def __repr__(self) -> str:
        return f"HybridRecall(dense={self.dense!r}, sparse={self.sparse!r}, k={self.k})"


def _deleter(arm: Recall, role: str) -> Callable[[Sequence[str]], int]:
    """``arm.delete``, or :class:`DeleteNotSupportedError` if ``arm`` has none (or only BaseRecall's refusal)."""
    delete = getattr(arm, "delete", None)
    if delete is None or (isinstance(arm, BaseRecall) and type(arm).delete is BaseRecall.delete):
        raise DeleteNotSupportedError(
            f"the {role} arm of this HybridRecall ({type(arm).__name__}) cannot delete passages; nothing was deleted"
        )
    return delete
