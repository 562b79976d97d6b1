"""The framework adapters' pipelines from a spec (kept out of :mod:`.build`: it imports the pipeline, which
imports :mod:`..spec`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameterError
from ..pipeline import TwoStagePipeline
from .build import SpecLike, recall_over, refuse_contradictions, spec_from

if TYPE_CHECKING:
    from ..recall.chroma import ChromaRecall


def pipeline_for(
    recall: ChromaRecall,
    reranker: Any = None,
    *,
    limit: int | None = None,
    top_k: int | None = None,
    pipeline: SpecLike = None,
    preset: str | None = None,
) -> TwoStagePipeline:
    """The adapters' pipeline over a Chroma recall: the spec's (its recall kind over ``recall``, its stages, depth
    and ``top_k``) when ``pipeline``/``preset`` is given, else ``reranker`` (an object, or a name loaded on the
    first query; None: the default preset's stages) with ``limit`` (default 20) and ``top_k`` (default 5).

    Args:
        recall: The collection's dense recall (a :class:`~twostage_integrations.ChromaRecall`).
        reranker: A reranker or model name (refused with a spec).
        limit: Candidates recalled (with a spec: refused unless it is the spec's).
        top_k: Hits returned (with a spec: refused unless it is the spec's).
        pipeline: A spec in any form :func:`resolve` reads.
        preset: A preset name.

    Returns:
        The pipeline (``pipeline.spec`` set when a spec built it).

    Raises:
        PipelineSpecError: The spec cannot be read.
        InvalidParameterError: A reranker, limit or top_k contradicting the spec.
    """
    from ..rerank.lazy import as_reranker, default_reranker

    spec = spec_from(pipeline, preset)
    if spec is None:
        top_k = 5 if top_k is None else top_k
        stage2 = default_reranker(top_k=top_k) if reranker is None else as_reranker(reranker)
        return TwoStagePipeline(recall, stage2, limit=20 if limit is None else limit, top_k=top_k)
    if reranker is not None:
        raise InvalidParameterError(
            "pass either reranker= or pipeline=/preset= (the spec names its rerank stages), not both",
            parameter="reranker",
        )
    refuse_contradictions(spec, limit=(limit, spec.recall.limit), top_k=(top_k, spec.top_k))
    return TwoStagePipeline.from_spec(spec, recall_over(spec, recall))
