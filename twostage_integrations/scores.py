"""Which stage, on which scale, produced a score: the ``score_kind`` every adapter reports.

``relevance_score`` (LangChain), ``NodeWithScore.score`` (LlamaIndex) and ``Hit.score`` are always the
score of the last stage that ran; ``score_kind`` names that stage and its scale, so callers know whether
0.03 is good (an RRF value) or bad (a sigmoid probability). The table in docs/scores.md documents each kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import InvalidParameterError
from .hit import Hit

#: Every kind our own classes report, with what the number means (docs/scores.md renders the same table).
SCORE_KINDS: dict[str, str] = {
    "cosine": "cosine similarity of query and passage embeddings, -1..1 (ChromaRecall)",
    "bm25": "BM25 score, >= 0, unbounded, depends on the query and corpus (BM25Recall)",
    "rrf": "reciprocal rank fusion of the dense and BM25 ranks, about 0..2/(k+1) (HybridRecall)",
    "ce_sigmoid": "cross-encoder probability of relevance, 0..1 (sigmoid head, e.g. our SciFact model)",
    "ce_logit": "cross-encoder raw logit, unbounded (models saved with an identity activation)",
    "ce": "cross-encoder output whose activation could not be determined",
    "ce_calibrated": "probability the passage is relevant, 0..1, calibrated on labelled pairs (calibration.json)",
    "cohere": "Cohere relevance_score, 0..1 (CohereReranker, or `twostage serve` behind it)",
    "rerankers": "the rerankers library backend's own score; scale per model type (RerankersReranker)",
    "rerankers_rank": "a listwise rerankers backend's order (RankGPT, RankLLM): score = 1/position",
    "voyage": "Voyage AI relevance_score, 0..1 (VoyageReranker)",
    "fused_rrf": "reranker order fused with the input order by RRF (FusedReranker method='rrf')",
    "fused_minmax": "min-max normalised reranker and input scores blended, 0..1 (FusedReranker method='minmax')",
    "fallback_recall": "the reranker failed and fell back: input order kept, score = 1/position",
    "input": "the score the caller's documents/nodes came with (compressor or postprocessor, nothing reranked)",
    "fake_overlap": "share of the query's words found in the passage, 0..1 (testing.FakeReranker, no model)",
    "recall": "a custom stage 1 that does not declare its score_kind",
    "rerank": "a custom reranker that does not declare its score_kind",
}


#: The range each kind's scores can take, ``(low, high)``; ``None`` is unbounded on that side. A kind missing
#: here (a custom stage's own) is unbounded both ways. ``min_score`` must fall inside its kind's range.
SCORE_RANGES: dict[str, tuple[float | None, float | None]] = {
    "cosine": (-1.0, 1.0),
    "bm25": (0.0, None),
    "rrf": (0.0, 2.0),
    "ce_sigmoid": (0.0, 1.0),
    "ce_calibrated": (0.0, 1.0),
    "ce_tanh": (-1.0, 1.0),
    "cohere": (0.0, 1.0),
    "rerankers_rank": (0.0, 1.0),
    "voyage": (0.0, 1.0),
    "fused_rrf": (0.0, None),
    "fused_minmax": (0.0, 1.0),
    "fallback_recall": (0.0, 1.0),
    "fake_overlap": (0.0, 1.0),
}


def check_min_score(min_score: object, kind: str | None = None, *, name: str = "min_score") -> float | None:
    """``min_score`` as a float, checked against the range of the scores it will be compared with.

    Args:
        min_score: The threshold (``None``: no threshold).
        kind: The score kind it applies to (see :data:`SCORE_RANGES`); ``None`` checks only that it is a number.
        name: The parameter's name, which the message starts with.

    Returns:
        ``None`` or the threshold as a float.

    Raises:
        InvalidParameterError: Not a finite number, or outside the range of ``kind`` (e.g. 1.5 for a 0..1 kind).
    """
    if min_score is None:
        return None
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not math.isfinite(min_score):
        raise InvalidParameterError(f"{name} must be a finite number, got {min_score!r}", parameter=name)
    low, high = SCORE_RANGES.get(kind or "", (None, None))
    if (low is not None and min_score < low) or (high is not None and min_score > high):
        span = f"{'-inf' if low is None else f'{low:g}'}..{'inf' if high is None else f'{high:g}'}"
        raise InvalidParameterError(
            f"{name}={min_score:g} is outside the range of {kind} scores ({span}); see docs/scores.md",
            parameter=name,
        )
    return float(min_score)


def threshold_hits(
    hits: Sequence[Hit], min_score: float | None, recall_kind: str = "recall", rerank_kind: str | None = None
) -> list[Hit]:
    """The hits whose final ``score`` is at least ``min_score`` (all of them for ``None``), order kept.

    A hit whose reranker fell back to recall order (kind ``fallback_recall``: its score is ``1/position``, not
    on the threshold's scale) is kept: nothing judged it.

    Args:
        hits: Hits, best first.
        min_score: The threshold.
        recall_kind: Stage 1's kind (see :func:`pipeline_score_kinds`).
        rerank_kind: The reranker's kind, ``None`` without one.

    Returns:
        The kept hits; possibly none, which is a valid answer ("nothing relevant").
    """
    if min_score is None:
        return list(hits)
    return [
        h
        for h in hits
        if h.score >= min_score
        or hit_score_kind(h, recall_kind=recall_kind, rerank_kind=rerank_kind) == "fallback_recall"
    ]


def score_kind_of(stage: Any, default: str) -> str:
    """The score kind a stage declares.

    Args:
        stage: A recall or reranker.
        default: The kind to report when ``stage`` declares none.

    Returns:
        ``stage.score_kind`` when it is a non-empty string, else ``default``.
    """
    kind = getattr(stage, "score_kind", None)
    return kind if isinstance(kind, str) and kind else default


def cross_encoder_score_kind(reranker: Any) -> str:
    """The score kind of a cross-encoder, from its activation.

    Args:
        reranker: A cross-encoder reranker; its ``activation`` (an object or a name), else its model's
            ``activation_fn`` (sentence-transformers) or ``activation`` is read.

    Returns:
        ``"ce_calibrated"`` when the reranker applies a calibration (its ``calibration`` is set), else
        ``"ce_sigmoid"``, ``"ce_logit"`` (identity), ``"ce_<name>"`` for another activation, or ``"ce"`` when
        there is none to read.
    """
    if getattr(reranker, "calibration", None) is not None:
        return "ce_calibrated"
    model = getattr(reranker, "model", None)
    activation = getattr(reranker, "activation", None)
    if activation is None:  # sentence-transformers' CrossEncoder, or our ONNX engine (a name)
        activation = getattr(model, "activation_fn", None) or getattr(model, "activation", None)
    if activation is None:
        return "ce"
    name = (activation if isinstance(activation, str) else type(activation).__name__).rsplit(".", 1)[-1].lower()
    if "sigmoid" in name:
        return "ce_sigmoid"
    if name in ("identity", "none", "linear", "logit"):
        return "ce_logit"
    return f"ce_{name}"


class _TwoStages(Protocol):
    """What :func:`pipeline_score_kinds` reads (a :class:`~twostage_integrations.TwoStagePipeline`); a protocol
    because this module sits below the pipeline (the rerankers import it)."""

    @property
    def recall(self) -> object: ...

    @property
    def reranker(self) -> object | None: ...


def pipeline_score_kinds(pipeline: _TwoStages) -> tuple[str, str | None]:
    """What a pipeline's stages report, for :func:`hit_score_kind`.

    Args:
        pipeline: The :class:`~twostage_integrations.TwoStagePipeline` whose ``recall`` and ``reranker`` produced
            the hits.

    Returns:
        ``(recall_kind, rerank_kind)``: stage 1's kind (``"recall"`` when undeclared) and the reranker's
        (``"rerank"`` when undeclared; None when the pipeline has no reranker).
    """
    recall_kind = score_kind_of(pipeline.recall, "recall")
    return recall_kind, None if pipeline.reranker is None else score_kind_of(pipeline.reranker, "rerank")


def hit_score_kind(hit: Hit, *, recall_kind: str, rerank_kind: str | None) -> str:
    """The kind of ``hit.score``.

    Args:
        hit: A hit from the pipeline.
        recall_kind: Stage 1's kind (from :func:`pipeline_score_kinds`).
        rerank_kind: The reranker's kind, ``None`` when the pipeline has no reranker.

    Returns:
        ``rerank_kind``; ``recall_kind`` when no reranker ran; ``"fallback_recall"`` when the reranker fell back
        to recall order (``rerank_score`` missing or ``metadata["rerank_fallback"]`` set).
    """
    if rerank_kind is None:
        return recall_kind
    if hit.rerank_score is None or hit.metadata.get("rerank_fallback"):
        return "fallback_recall"
    return rerank_kind
