"""Recall factories: the recalls built over one Chroma collection (what ``--recall`` selects)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameterError
from .base import Recall

if TYPE_CHECKING:  # imported when a recall is built: bm25s is imported only then
    from .hybrid import HybridRecall

RECALL_KINDS = ("dense", "bm25", "hybrid")
# What stage 1 is when nothing names it (twostage query/demo/eval, the adapters' constructors, RecallSpec()): RRF
# of dense and BM25. SciFact, no rerank: nDCG@10 0.688 hybrid vs 0.648 dense (docs/results.md).
DEFAULT_RECALL = "hybrid"


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


def persist_bm25(recall: Any, **bm25_options: Any) -> Path | None:
    """Build (or load) the BM25 index of ``recall``'s collection and save it stamped with the collection's
    version, so a new process's first BM25 or hybrid search loads it and reads no corpus from Chroma.

    ``twostage ingest`` calls this after writing (``--no-bm25`` skips it). From Python, call it after
    ``add_texts``; a later write through :class:`~twostage_integrations.ChromaRecall` (any process) changes the
    version, and the next search then rebuilds and re-saves the index itself.

    Args:
        recall: A :class:`~twostage_integrations.ChromaRecall` (a :class:`BM25Recall` with default settings is
            built over it), a :class:`BM25Recall`, or a :class:`HybridRecall` whose sparse arm is one.
        **bm25_options: :class:`BM25Recall` options (``stemmer``, ``stopwords``, ``index_dir``...) when
            ``recall`` is a ``ChromaRecall``; they must match the ones queries use, or those rebuild.

    Returns:
        The folder the snapshot was saved in; ``None`` when there is nothing to index or the disk refused
        (logged).

    Raises:
        InvalidParameterError: ``recall`` has no BM25 index to save, or options come with a built BM25 recall.
        MissingDependencyError: ``bm25s`` is not installed.
        CollectionNotFoundError: The collection (or the database) does not exist.

    >>> persist_bm25(ChromaRecall("docs"))  # doctest: +SKIP
    """
    from .bm25 import BM25Recall
    from .chroma import ChromaRecall
    from .hybrid import HybridRecall

    bm25 = recall.sparse if isinstance(recall, HybridRecall) else recall
    if isinstance(bm25, BM25Recall):
        if bm25_options:
            raise InvalidParameterError(f"BM25 options {sorted(bm25_options)} only apply when given a ChromaRecall")
        return bm25.save()
    if isinstance(recall, ChromaRecall):
        return BM25Recall(recall, **bm25_options).save()
    raise InvalidParameterError(
        f"persist_bm25 takes a ChromaRecall, BM25Recall or HybridRecall over BM25, got {type(recall).__name__}"
    )


def adapter_recall(chroma: Any, kind: str | None, *, spec_given: bool) -> Any:
    """Stage 1 of a framework adapter's convenience constructor: ``kind`` (default :data:`DEFAULT_RECALL`) over
    ``chroma``; ``chroma`` itself when a pipeline spec names the recall.

    Args:
        chroma: The collection's :class:`~twostage_integrations.ChromaRecall`.
        kind: The constructor's ``recall=`` (None: the default, or the spec's).
        spec_given: Whether ``pipeline=``/``preset=`` was given.

    Returns:
        The recall to build the pipeline on (a ``ChromaRecall`` for a spec to wrap, typed ``Any`` for that reason).

    Raises:
        InvalidParameterError: ``kind`` together with a spec, or not one of :data:`RECALL_KINDS`.
        MissingDependencyError: ``bm25s`` is not installed (``bm25``, ``hybrid``).
    """
    if spec_given:
        if kind is not None:
            raise InvalidParameterError(
                "pass either recall= or pipeline=/preset= (the spec names its recall), not both", parameter="recall"
            )
        return chroma
    return recall_by_kind(DEFAULT_RECALL if kind is None else kind, chroma)
