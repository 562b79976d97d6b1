"""Which stage, on which scale, produced a score: the ``score_kind`` every adapter reports.

``relevance_score`` (LangChain), ``NodeWithScore.score`` (LlamaIndex) and ``Hit.score`` are always the
score of the last stage that ran; ``score_kind`` names that stage and its scale, so callers know whether
0.03 is good (an RRF value) or bad (a sigmoid probability). The table in docs/scores.md documents each kind.
"""

from __future__ import annotations

from typing import Any, Protocol

from .hit import Hit

#: Every kind our own classes report, with what the number means (docs/scores.md renders the same table).
SCORE_KINDS: dict[str, str] = {
    "cosine": "cosine similarity of query and passage embeddings, -1..1 (ChromaRecall)",
    "bm25": "BM25 score, >= 0, unbounded, depends on the query and corpus (BM25Recall)",
    "rrf": "reciprocal rank fusion of the dense and BM25 ranks, about 0..2/(k+1) (HybridRecall)",
    "ce_sigmoid": "cross-encoder probability of relevance, 0..1 (sigmoid head, e.g. our SciFact model)",
    "ce_logit": "cross-encoder raw logit, unbounded (models saved with an identity activation)",
    "ce": "cross-encoder output whose activation could not be determined",
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
        ``"ce_sigmoid"``, ``"ce_logit"`` (identity), ``"ce_<name>"`` for another activation, or ``"ce"`` when
        there is none to read.
    """
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
