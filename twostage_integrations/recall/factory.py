"""Recall factories: which recall ``--recall`` selects over a Chroma collection."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidParameterError
from .base import Recall

RECALL_KINDS = ("dense", "bm25", "hybrid")


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

    >>> recall_by_kind("hybrid", ChromaRecall("docs"))  # doctest: +SKIP
    """
    if kind not in RECALL_KINDS:
        raise InvalidParameterError(f"recall must be one of {', '.join(RECALL_KINDS)}, got {kind!r}")
    if kind == "dense":
        return chroma
    from .bm25 import BM25Recall
    from .hybrid import HybridRecall

    bm25 = BM25Recall(chroma, stemmer=stemmer)
    if kind == "bm25":
        return bm25
    return HybridRecall(chroma, bm25, k=rrf_k, candidates_per_arm=candidates_per_arm)
