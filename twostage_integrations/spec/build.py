"""Build a spec's stages: the recall and the reranker a :class:`PipelineSpec` names."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameterError, PipelineSpecError
from .core import PipelineSpec
from .presets import PRESETS, resolve

if TYPE_CHECKING:
    from ..recall.base import Recall
    from ..recall.chroma import ChromaRecall
    from ..rerank.base import Reranker
    from ..rerank.cascade import Cascade


def make_reranker(model: str | None, **kwargs: Any) -> Reranker:
    """The one place a spec's stage becomes a reranker: ``twostage_integrations.rerank.make_reranker``, looked
    up at each call (so tests can replace either name).

    Args:
        model: The stage's model (None: the default).
        **kwargs: ``backend``, ``max_length`` and constructor arguments.

    Returns:
        The reranker.
    """
    from .. import rerank

    return rerank.make_reranker(model, **kwargs)


SpecLike = Any  # a PipelineSpec, its dict form, a spec string, a .toml path or a preset name (see resolve)


def spec_from(pipeline: SpecLike = None, preset: str | None = None) -> PipelineSpec | None:
    """The spec an entry point was given as ``pipeline=`` (any form :func:`resolve` reads) or ``preset=`` (a
    name in :data:`PRESETS`), or None when neither was.

    Args:
        pipeline: A spec, its dict form, a spec string, a ``.toml`` path or a preset name.
        preset: A preset name.

    Returns:
        The spec, or None.

    Raises:
        PipelineSpecError: Both given, an unknown preset, or a spec that cannot be read.
    """
    if pipeline is not None and preset is not None:
        raise PipelineSpecError("pass either pipeline= or preset=, not both", preset, next(iter(PRESETS)))
    if preset is not None:
        if not isinstance(preset, str) or preset.strip() not in PRESETS:
            raise PipelineSpecError(f"unknown pipeline preset (presets: {', '.join(PRESETS)})", preset, "exact")
        return resolve(preset.strip())
    return None if pipeline is None else resolve(pipeline)


def recall_over(spec: PipelineSpec, chroma: ChromaRecall) -> Recall:
    """The spec's recall kind (dense, bm25, hybrid with its ``rrf_k``/``per_arm``) over a Chroma collection.

    Args:
        spec: The spec.
        chroma: The collection's recall (dense).

    Returns:
        ``chroma`` itself for dense, else the BM25 or hybrid recall over it.

    Raises:
        MissingDependencyError: ``bm25s`` is not installed (bm25 and hybrid).
    """
    if spec.recall.kind == "dense":
        return chroma
    from ..recall.factory import recall_by_kind

    options: dict[str, Any] = {} if spec.recall.rrf_k is None else {"rrf_k": spec.recall.rrf_k}
    return recall_by_kind(spec.recall.kind, chroma, candidates_per_arm=spec.recall.per_arm, **options)


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

    return recall_over(spec, ChromaRecall(collection, **chroma_args))


def build_reranker(spec: PipelineSpec, *, backend: str | None = None, **kwargs: Any) -> Cascade | None:
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
    from ..rerank.cascade import as_cascade
    from ..rerank.fusion import FusedReranker

    stages: list[tuple[Reranker, int | None]] = [
        (make_reranker(s.model, **{"backend": backend, **kwargs, **s.options}), s.keep) for s in spec.stages
    ]
    if spec.fusion is not None:
        last, keep = stages[-1]
        stages[-1] = (FusedReranker(last, weight=spec.fusion.weight, method=spec.fusion.method), keep)
    return as_cascade(stages)


def refuse_contradictions(spec: PipelineSpec, **given: tuple[Any, Any]) -> None:
    """Refuse an adapter's arguments that say something else than the spec it was given.

    Args:
        spec: The spec.
        **given: ``name=(value passed, the spec's value)``; a value of None was not passed.

    Raises:
        InvalidParameterError: A value that differs from the spec's, naming both.
    """
    for name, (value, from_spec) in given.items():
        if value is not None and value != from_spec:
            raise InvalidParameterError(
                f"{name}={value!r} contradicts the pipeline spec's {from_spec!r} ({spec}); pass one", parameter=name
            )


def stage2_for(spec: PipelineSpec, reranker: Any = None, model: str | None = None) -> Reranker:
    """Stage 2 of ``spec`` for a stage-2-only adapter (compressor, postprocessor), built now.

    Args:
        spec: The spec.
        reranker: A reranker passed to the adapter too: refused.
        model: A model name passed too: refused unless it is the built stages' name (what ``model_dump`` /
            ``to_dict`` write, so a dumped adapter rebuilds).

    Returns:
        The spec's stages as a cascade.

    Raises:
        InvalidParameterError: A reranker, a different model name, or a spec without a rerank stage.
    """
    if reranker is not None:
        raise InvalidParameterError(
            "pass either a reranker or pipeline=/preset= (the spec names its rerank stages), not both",
            parameter="reranker",
        )
    built = build_reranker(spec)
    if built is None:
        raise InvalidParameterError(f"the pipeline spec {spec} has no rerank stage ('none'); a reranker needs one")
    refuse_contradictions(spec, model=(model, built.name))
    return built
