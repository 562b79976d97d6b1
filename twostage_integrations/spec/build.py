"""Build a spec's stages: the recall and the reranker a :class:`PipelineSpec` names."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameterError
from .core import PipelineSpec

if TYPE_CHECKING:
    from ..recall.base import Recall
    from ..rerank.base import Reranker


def build_recall(
    spec: PipelineSpec,
    recall: Recall | None = None,
    *,
    collection: str | None = None,
    db: str | os.PathLike[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    embedding_model: Any = None,
) -> Recall:
    """Stage 1 of ``spec``: ``recall`` itself when given (it replaces the spec's kind and options), else the
    spec's kind over a :class:`~twostage_integrations.ChromaRecall` of ``collection``.

    Raises:
        InvalidParameterError: both a recall and Chroma arguments, or neither a recall nor a collection.
        MissingDependencyError: ``bm25s`` is not installed (bm25 and hybrid).
    """
    chroma_args = {"path": db, "host": host, "port": port, "embedding_model": embedding_model}
    if recall is not None:
        if collection is not None or any(v is not None for v in chroma_args.values()):
            raise InvalidParameterError("pass either a recall object or collection/db/host/port/embedding_model")
        return recall
    if collection is None:
        raise InvalidParameterError("building a pipeline from a spec needs a recall object or a collection name")
    from ..recall.chroma import ChromaRecall
    from ..recall.factory import recall_by_kind

    chroma = ChromaRecall(collection, **chroma_args)
    options: dict[str, Any] = {} if spec.recall.rrf_k is None else {"rrf_k": spec.recall.rrf_k}
    return recall_by_kind(spec.recall.kind, chroma, candidates_per_arm=spec.recall.per_arm, **options)


def build_reranker(spec: PipelineSpec, *, backend: str | None = None, **kwargs: Any) -> Reranker | None:
    """Stage 2 of ``spec``: its stages as a :class:`~twostage_integrations.Cascade` (the last one fused when
    the spec says so), or None for no rerank.

    Args:
        spec: The spec.
        backend: The engine of stages that name none (as ``--rerank-backend``).
        **kwargs: Constructor arguments for every stage's reranker (``api_key``, ``device``...).

    Returns:
        The cascade, or None.

    Raises:
        InvalidParameterError: an option the model does not take (see ``make_reranker``).
    """
    if not spec.stages:
        return None
    from ..rerank import make_reranker
    from ..rerank.cascade import as_cascade
    from ..rerank.fusion import FusedReranker

    stages: list[tuple[Reranker, int | None]] = [
        (make_reranker(s.model, **{"backend": backend, **kwargs, **s.options}), s.keep) for s in spec.stages
    ]
    if spec.fusion is not None:
        last, keep = stages[-1]
        stages[-1] = (FusedReranker(last, weight=spec.fusion.weight, method=spec.fusion.method), keep)
    return as_cascade(stages)
