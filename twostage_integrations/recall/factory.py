"""Recall factories: the recalls built over one Chroma collection (what ``--recall`` selects)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameterError
from .base import Recall

if TYPE_CHECKING:  # imported when a recall is built: bm25s stays optional
    from .hybrid import HybridRecall

RECALL_KINDS = ("dense", "bm25", "hybrid")


def hybrid_from_chroma(
    chroma: Any,
    *,
    stemmer: str | None = None,
    recall_class: type[HybridRecall] | None = None,
    **kwargs: Any,
) -> HybridRecall:
    """Hybrid recall over one collection: dense = ``chroma`` itself, sparse = a :class:`BM25Recall` over its
    passages (so one add or delete serves both arms).

    Args:
        chroma: The dense arm, a :class:`~twostage_integrations.ChromaRecall`.
        stemmer: PyStemmer language for the BM25 arm (default none).
        recall_class: The class to build (default :class:`HybridRecall`; ``HybridRecall.from_chroma`` passes
            its own class, so subclasses get instances of themselves).
        **kwargs: ``HybridRecall`` options (``k``, ``candidates_per_arm``, ``weights``).

    Returns:
        The hybrid recall.

    Raises:
        MissingDependencyError: ``bm25s`` (or PyStemmer, when ``stemmer`` is given) is not installed.
        InvalidParameterError: A ``HybridRecall`` option is out of range.
    """
    from .hybrid import HybridRecall

    return (recall_class or HybridRecall).from_chroma(chroma, stemmer=stemmer, **kwargs)


def recall_by_kind(
    kind: str,
    chroma: Any,
    *,
    rrf_k: float = 60.0,
    candidates_per_arm: int | None = None,
    stemmer: str | None = None,
) -> Recall:
    """What ``--recall`` selects: ``dense`` (``chroma`` itself), ``bm25`` over its passages, or ``hybrid``
    (RRF of both).

    Args:
        kind: One of :data:`RECALL_KINDS`.
        chroma: A :class:`~twostage_integrations.ChromaRecall`.
        rrf_k: The RRF constant of a hybrid recall.
        candidates_per_arm: Hits each hybrid arm returns (default: the search's ``limit``).
        stemmer: PyStemmer language for the BM25 arm (default none).

    Returns:
        The recall.

    Raises:
        InvalidParameterError: ``kind`` is not one of :data:`RECALL_KINDS`.
        MissingDependencyError: ``bm25s`` is not installed (``bm25`` and ``hybrid``).

    >>> recall_by_kind("hybrid", ChromaRecall("docs"))  # doctest: +SKIP
    """
    if kind not in RECALL_KINDS:
        raise InvalidParameterError(f"recall must be one of {', '.join(RECALL_KINDS)}, got {kind!r}")
    if kind == "dense":
        return chroma
    if kind == "hybrid":
        return hybrid_from_chroma(chroma, stemmer=stemmer, k=rrf_k, candidates_per_arm=candidates_per_arm)
    from .bm25 import BM25Recall

    return BM25Recall(chroma, stemmer=stemmer)
