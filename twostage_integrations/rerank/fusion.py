"""Blend a reranker's order with the order it was given, so a reranker cannot throw away what recall got right."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidParameterError
from ..hit import Hit
from ..validation import check_rerank_args
from .base import Reranker, apply_scores
from .fallback import FALLBACK_KEY, REASON_KEY

METHODS = ("rrf", "minmax")


class FusedReranker:
    """Wrap a reranker and fuse its order with the incoming (recall) order.

    - ``method="rrf"``: ``weight / (k + rerank_rank) + (1 - weight) / (k + input_rank)``.
    - ``method="minmax"``: ``weight * minmax(rerank_score) + (1 - weight) * minmax(input score)``, each
      min-max normalised over the hits of this query.

    The input order is the order of the hits passed in (recall order in a two-stage pipeline, the previous
    stage's order in a cascade). ``rerank_score`` and ``score`` of the returned hits are the fused score.
    Useful when the reranker was trained on another domain: a cross-encoder can be worse than good recall
    there, and fusion keeps recall's opinion in the final order.

    Args:
        reranker: The reranker whose order is fused.
        weight: 1 is the reranker's order, 0 the input order. The default 0.9 was the best of 0..1 on 40
            SciFact *train* queries (test-set numbers in docs/results.md).
        method: ``"rrf"`` or ``"minmax"``.
        k: The RRF constant (``"rrf"`` only).

    Raises:
        InvalidParameterError: If ``weight`` is outside 0..1, ``method`` unknown or ``k`` negative.

    >>> from twostage_integrations import CrossEncoderReranker
    >>> from twostage_integrations.rerank.fusion import FusedReranker
    >>> fused = FusedReranker(CrossEncoderReranker("path/to/cross-encoder"), weight=0.7)  # doctest: +SKIP
    """

    score_kind = property(
        lambda self: f"fused_{self.method}", doc="``fused_rrf`` or ``fused_minmax`` (see docs/scores.md)."
    )

    def __init__(self, reranker: Reranker, *, weight: float = 0.9, method: str = "rrf", k: float = 60.0) -> None:
        if not 0.0 <= weight <= 1.0:
            raise InvalidParameterError(f"weight must be between 0 (input order) and 1 (reranker order), got {weight}")
        if method not in METHODS:
            raise InvalidParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if not k >= 0:
            raise InvalidParameterError(f"k must be >= 0, got {k!r}")
        self.reranker = reranker
        self.weight, self.method, self.k = float(weight), method, float(k)
        self.name = f"{reranker.name}+{method}({self.weight:g})"

    def _fuse(self, hits: Sequence[Hit], reranked: Sequence[Hit], top_k: int | None) -> list[Hit]:
        by_id = {h.id: h for h in reranked}
        if len(by_id) != len(hits):
            raise InvalidParameterError("fusion needs unique hit ids and a reranker that returns every hit")
        w = self.weight
        if self.method == "rrf":
            rank = {h.id: r for r, h in enumerate(reranked, 1)}  # reranked comes best first: position = rank
            fused = [w / (self.k + rank[h.id]) + (1 - w) / (self.k + i) for i, h in enumerate(hits, 1)]
        else:
            model = _minmax([by_id[h.id].score for h in hits])
            given = _minmax([h.score for h in hits])
            fused = [w * m + (1 - w) * g for m, g in zip(model, given, strict=True)]
        out = apply_scores(hits, fused, top_k)
        # apply_scores copies the *input* hits; keep the wrapped reranker's fallback marker on what it marked.
        for h in out:
            marked = by_id[h.id].metadata
            if marked.get(FALLBACK_KEY):
                h.metadata.update({k: marked[k] for k in (FALLBACK_KEY, REASON_KEY) if k in marked})
        return out

    def _check(self, query: str, top_k: int | None) -> None:
        check_rerank_args(query, top_k)

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Rerank all hits, then fuse the two orders.

        Args:
            query: The query text.
            hits: The hits, in input order.
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first by the fused score.

        Raises:
            InvalidParameterError: If ``top_k`` is below 1, or the hit ids are not unique.
        """
        self._check(query, top_k)
        if not hits:
            return []
        return self._fuse(hits, self.reranker.rerank(query, hits, None), top_k)

    async def arerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Async :meth:`rerank`.

        Args:
            query: The query text.
            hits: The hits, in input order.
            top_k: How many to keep; ``None`` keeps all.

        Returns:
            New hits, best first by the fused score.
        """
        self._check(query, top_k)
        if not hits:
            return []
        return self._fuse(hits, await self.reranker.arerank(query, hits, None), top_k)

    def __repr__(self) -> str:
        return f"FusedReranker({self.reranker!r}, weight={self.weight}, method={self.method!r}, k={self.k})"


def _minmax(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        return [0.0 for _ in values]
    return [(v - lo) / (hi - lo) for v in values]
