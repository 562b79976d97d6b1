"""Blend a reranker's order with the order it was given, so a reranker cannot throw away what recall got right."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidParameterError
from ..hit import Hit
from ..validation import check_rerank_args
from .base import Reranker, apply_scores
from .fallback import FALLBACK_KEY, REASON_KEY

METHODS = ("rrf", "minmax")
AUTO = "auto"  # a weight chosen per corpus without labels (twostage_integrations.evaluation.fusion_auto)


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
            SciFact *train* queries (test-set numbers in docs/results.md). ``"auto"``: not chosen yet; a
            pipeline built from a spec (``fuse=rrf:auto``) or ``twostage eval`` sets it with
            :meth:`set_weight` from pseudo-queries of the corpus (see docs/evaluation.md); reranking before
            that raises.
        method: ``"rrf"`` or ``"minmax"``.
        k: The RRF constant (``"rrf"`` only).

    Raises:
        InvalidParameterError: If ``weight`` is outside 0..1 (and not ``"auto"``), ``method`` unknown or ``k``
            negative.

    >>> from twostage_integrations import CrossEncoderReranker
    >>> from twostage_integrations.rerank.fusion import FusedReranker
    >>> fused = FusedReranker(CrossEncoderReranker("path/to/cross-encoder"), weight=0.7)  # doctest: +SKIP
    """

    score_kind = property(
        lambda self: f"fused_{self.method}", doc="``fused_rrf`` or ``fused_minmax`` (see docs/scores.md)."
    )

    def __init__(self, reranker: Reranker, *, weight: float | str = 0.9, method: str = "rrf", k: float = 60.0) -> None:
        if method not in METHODS:
            raise InvalidParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if not k >= 0:
            raise InvalidParameterError(f"k must be >= 0, got {k!r}")
        self.reranker = reranker
        self.method, self.k = method, float(k)
        self.weight: float | str = AUTO
        self.set_weight(weight)

    def set_weight(self, weight: float | str) -> None:
        """Set the fusion weight (what ``"auto"`` resolves to once chosen); the name follows.

        Args:
            weight: 0..1, or ``"auto"`` (not chosen yet).

        Raises:
            InvalidParameterError: A weight outside 0..1 that is not ``"auto"``.
        """
        if weight == AUTO:
            self.weight = AUTO
        else:
            self.weight = check_weight(weight)
        shown = self.weight if isinstance(self.weight, str) else f"{self.weight:g}"
        self.name = f"{self.reranker.name}+{self.method}({shown})"

    def _fuse(self, hits: Sequence[Hit], reranked: Sequence[Hit], top_k: int | None) -> list[Hit]:
        if isinstance(self.weight, str):
            raise InvalidParameterError(
                "fusion weight 'auto' is not chosen yet: build the pipeline with TwoStagePipeline.from_spec (it "
                "chooses it from the collection) or call set_weight() with the pick of choose_fusion_weight()",
                parameter="weight",
            )
        return fuse_orders(hits, reranked, top_k, weight=self.weight, method=self.method, k=self.k)

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


def check_weight(weight: object) -> float:
    """``weight`` as a float in 0..1.

    Args:
        weight: The fusion weight.

    Returns:
        The weight as a float.

    Raises:
        InvalidParameterError: Not a number between 0 and 1.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise InvalidParameterError(
            f"weight must be between 0 (input order) and 1 (reranker order), or 'auto', got {weight!r}",
            parameter="weight",
        )
    return float(weight)


def fuse_orders(
    hits: Sequence[Hit], reranked: Sequence[Hit], top_k: int | None, *, weight: float, method: str, k: float = 60.0
) -> list[Hit]:
    """Fuse a reranker's order with the input order, as :class:`FusedReranker` does (also used to try many
    weights on one reranker run).

    Args:
        hits: The hits in input order.
        reranked: The same hits as the reranker returned them, best first.
        top_k: How many to keep; ``None`` keeps all.
        weight: 0..1; 1 = the reranker's order.
        method: ``"rrf"`` or ``"minmax"``.
        k: The RRF constant.

    Returns:
        New hits, best first by the fused score.

    Raises:
        InvalidParameterError: The hit ids are not unique, or ``reranked`` is not the same hits.
    """
    by_id = {h.id: h for h in reranked}
    if len(by_id) != len(hits):
        raise InvalidParameterError("fusion needs unique hit ids and a reranker that returns every hit")
    w = weight
    if method == "rrf":
        rank = {h.id: r for r, h in enumerate(reranked, 1)}  # reranked comes best first: position = rank
        fused = [w / (k + rank[h.id]) + (1 - w) / (k + i) for i, h in enumerate(hits, 1)]
    else:
        model = _minmax([by_id[h.id].score for h in hits])
        given = _minmax([h.score for h in hits])
        fused = [w * m + (1 - w) * g for m, g in zip(model, given, strict=True)]
    out = apply_scores(hits, fused, top_k)
    # apply_scores copies the *input* hits; keep the wrapped reranker's fallback marker on what it marked.
    for h in out:
        marked = by_id[h.id].metadata
        if marked.get(FALLBACK_KEY):
            h.metadata.update({key: marked[key] for key in (FALLBACK_KEY, REASON_KEY) if key in marked})
    return out


def _minmax(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        return [0.0 for _ in values]
    return [(v - lo) / (hi - lo) for v in values]
