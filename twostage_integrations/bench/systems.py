"""The systems ``twostage bench`` times, and the checks of which ones to run.

Systems (:data:`SYSTEMS`):

- ``twostage``: :meth:`TwoStagePipeline.search` (the reference for agreement), with the cross-encoder engine
  ``rerank_backend`` picks (default: auto, the faster of ONNX Runtime fp32 and torch on this machine).
- ``twostage-torch`` / ``twostage-onnx`` / ``twostage-onnx-int8``: the same pipeline with that engine forced.
- ``twostage-langchain`` / ``twostage-llamaindex``: our pipeline through our LangChain / LlamaIndex retrievers.
- ``langchain``: ``langchain_chroma.Chroma(...).as_retriever(search_kwargs={"k": limit})`` inside a
  ``ContextualCompressionRetriever`` with ``CrossEncoderReranker(model=HuggingFaceCrossEncoder(...))``.
- ``llamaindex``: ``VectorStoreIndex.from_vector_store(ChromaVectorStore(...)).as_retriever(similarity_top_k=limit)``
  then ``SentenceTransformerRerank(model=..., top_n=top_k)``.
- ``langchain+twostage-compressor`` / ``llamaindex+twostage-rerank``: the native retriever with our
  stage 2 (:class:`TwoStageCompressor` / :class:`TwoStageRerank`) as the drop-in replacement.
- ``twostage-cascade`` (:data:`CASCADE`, only with ``stages``): the same recall as ``twostage``, reranked by a
  :class:`~twostage_integrations.rerank.cascade.Cascade` of the ``stages`` cross-encoders (a cheap one keeps
  KEEP, a strong one orders those). Its top-k is expected to differ somewhat from ``twostage``'s.

The LangChain and LlamaIndex systems are built in :mod:`.native`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ..embeddings import BaseEmbedder
from ..errors import InvalidParameterError
from ..pipeline import TwoStagePipeline
from ..recall.chroma import ChromaRecall
from ..rerank.cascade import STAGE_OPTIONS
from ..rerank.cross_encoder import CrossEncoderReranker
from ..validation import check_positive_int
from .built import BuiltSystem, TimedCascade, max_length_of

REFERENCE = "twostage"
SYSTEMS: dict[str, str] = {
    "twostage": "TwoStagePipeline.search",
    "twostage-torch": "TwoStagePipeline.search, cross-encoder on torch (sentence-transformers)",
    "twostage-onnx": "TwoStagePipeline.search, cross-encoder on ONNX Runtime fp32",
    "twostage-onnx-int8": "TwoStagePipeline.search, cross-encoder on ONNX Runtime int8 (opt-in)",
    "twostage-langchain": "our LangChain TwoStageRetriever.from_chroma(...).invoke",
    "twostage-llamaindex": "our LlamaIndex TwoStageRetriever.from_vector_store(...).retrieve",
    "langchain": "native: Chroma.as_retriever + ContextualCompressionRetriever(CrossEncoderReranker("
    "HuggingFaceCrossEncoder))",
    "llamaindex": "native: VectorStoreIndex(ChromaVectorStore).as_retriever + SentenceTransformerRerank",
    "langchain+twostage-compressor": "native LangChain retriever + ContextualCompressionRetriever(TwoStageCompressor)",
    "llamaindex+twostage-rerank": "native LlamaIndex retriever + TwoStageRerank postprocessor",
}
CASCADE = "twostage-cascade"  # not in SYSTEMS: it runs only when stages are given
# A cascade stage: a model, (model, keep) or (model, keep, {"backend": ..., "max_length": ...}).
StageArg = str | os.PathLike[str] | tuple[str | os.PathLike[str], int | None] | tuple[Any, int | None, dict[str, Any]]
NATIVE = ("langchain", "llamaindex")
ENGINE_SYSTEMS = {"twostage-torch": "torch", "twostage-onnx": "onnx", "twostage-onnx-int8": "onnx-int8"}


def check_systems(names: Sequence[str] | None, *, cascade: bool = False) -> list[str]:
    """The systems to run, ``twostage`` first (it is the agreement reference).

    Args:
        names: System names (see :data:`SYSTEMS`); ``None`` or empty: all of :data:`SYSTEMS`.
        cascade: Stages were given, so :data:`CASCADE` runs too (added if ``names`` lacks it).

    Returns:
        The names to run, without duplicates, ``twostage`` first.

    Raises:
        InvalidParameterError: ``names`` is a string, names an unknown system, or names :data:`CASCADE`
            without ``cascade``.
    """
    if isinstance(names, (str, bytes)):
        raise InvalidParameterError(f"systems must be a list of system names, got the string {names!r}")
    if not cascade and names and CASCADE in names:
        raise InvalidParameterError(
            f"{CASCADE} times a cascade of rerankers and needs its stages: pass --stage MODEL[:KEEP] once per stage "
            f"(stages=[(model, keep), ...] in Python), or drop {CASCADE} from --systems"
        )
    names = list(dict.fromkeys([REFERENCE, *(names or SYSTEMS), *([CASCADE] if cascade else [])]))
    known = [*SYSTEMS, CASCADE] if cascade else list(SYSTEMS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidParameterError(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def check_stages(
    stages: Sequence[StageArg] | None,
    limits: Sequence[int],
    top_k: int,
) -> list[tuple[str, int | None, dict[str, Any]]]:
    """Normalise and check the cascade stages against every limit.

    A stage cannot keep more candidates than recall gives it (KEEP <= limit) nor fewer than the top_k ids
    every system returns (KEEP >= top_k).

    Args:
        stages: Each a model, ``(model, keep)`` or ``(model, keep, options)`` (a bare model keeps all it gets;
            ``options``: ``backend``, ``max_length`` of that stage's cross-encoder). ``None``: no cascade.
        limits: The candidate counts the benchmark runs at (the smallest one counts).
        top_k: Results every system returns.

    Returns:
        ``(model, keep, options)`` per stage; ``[]`` for ``None``.

    Raises:
        InvalidParameterError: ``stages`` is empty or a string, a stage has an unknown option, or a keep is
            not a positive integer between ``top_k`` and the smallest limit.
    """
    if stages is None:
        return []
    if isinstance(stages, (str, bytes)) or not stages:
        raise InvalidParameterError(f"stages must be a non-empty list of (model, keep) pairs, got {stages!r}")
    out: list[tuple[str, int | None, dict[str, Any]]] = []
    for i, stage in enumerate(stages, 1):
        model, keep, *rest = stage if isinstance(stage, tuple) else (stage, None)
        options = dict(rest[0]) if rest else {}
        unknown = sorted(set(options) - set(STAGE_OPTIONS))
        if unknown:
            raise InvalidParameterError(f"cascade stage {i} ({model}): unknown option(s) {', '.join(unknown)}")
        if keep is not None:
            _check_keep(f"cascade stage {i} ({model}:{keep})", keep, min(limits), top_k)
        out.append((str(model), keep, options))
    return out


def _check_keep(label: str, keep: int, limit: int, top_k: int) -> None:
    check_positive_int(keep, f"keep of {label}")
    if keep > limit:
        raise InvalidParameterError(
            f"{label} keeps {keep} candidates but --limit {limit} recalls only {limit}: "
            f"pass KEEP <= {limit} or raise --limit"
        )
    if keep < top_k:
        raise InvalidParameterError(
            f"{label} keeps {keep} candidates but every system returns --top-k {top_k}: "
            f"pass KEEP >= {top_k} or lower --top-k"
        )


def _top_ids(pipe: TwoStagePipeline) -> Callable[[str], list[str]]:
    return lambda q: [h.id for h in pipe.search(q)]


def make_systems(
    names: Sequence[str],
    *,
    client: Any,
    collection: Any,
    embedder: BaseEmbedder,
    reranker: CrossEncoderReranker,
    limit: int,
    top_k: int,
    rerank_max_length: int | None = None,
    engines: dict[str, CrossEncoderReranker] | None = None,
    cascade: Sequence[tuple[CrossEncoderReranker, int | None]] | None = None,
) -> dict[str, BuiltSystem]:
    """Build each system the way its users would.

    Args:
        names: Systems to build (checked with :func:`check_systems`).
        client: The Chroma client holding ``collection``.
        collection: The shared Chroma collection every system reads.
        embedder: The query embedder of every system.
        reranker: Our cross-encoder (``twostage``, the adapters and the drop-ins); its model name is what the
            native stacks load.
        limit: Candidates recalled per query.
        top_k: Results kept after reranking.
        rerank_max_length: Token limit set on every cross-encoder (None: each stack's default). LlamaIndex's
            ``SentenceTransformerRerank`` hard-codes 512 tokens and has no argument for it, so there it is set
            on the loaded model.
        engines: The cross-encoder of each ``twostage-<backend>`` system (see :data:`ENGINE_SYSTEMS`).
        cascade: The ``(reranker, keep)`` stages of :data:`CASCADE` (which then runs).

    Returns:
        The built systems by name, in the order of ``names``.

    Raises:
        InvalidParameterError: ``names`` or the cascade keeps are invalid.
        KeyError: A ``twostage-<backend>`` system is named without its engine in ``engines``.
    """
    from .native import langchain_systems, llamaindex_systems  # here: the frameworks load only when asked for

    names = check_systems(names, cascade=bool(cascade))
    pipeline = TwoStagePipeline(
        ChromaRecall(collection, client=client, embedding_model=embedder), reranker, limit=limit, top_k=top_k
    )
    systems: dict[str, BuiltSystem] = {}
    if "twostage" in names:
        systems["twostage"] = BuiltSystem(_top_ids(pipeline), pipeline, max_length_of(reranker.model), reranker)
    for name in ENGINE_SYSTEMS:
        if name in names:
            engine = (engines or {})[name]
            pipe = TwoStagePipeline(pipeline.recall, engine, limit=limit, top_k=top_k)
            systems[name] = BuiltSystem(_top_ids(pipe), pipe, max_length_of(engine.model), engine)
    if cascade:
        check_stages([(r.name, keep) for r, keep in cascade], [limit], top_k)  # keeps only; engines are built
        chain = TimedCascade(list(cascade))
        pipe = TwoStagePipeline(pipeline.recall, chain, limit=limit, top_k=top_k)
        last = cascade[-1][0]
        description = f"TwoStagePipeline.search, reranked by Cascade({chain.name}) (same recall as twostage)"
        systems[CASCADE] = BuiltSystem(_top_ids(pipe), pipe, max_length_of(last.model), last, chain, description)
    if any("langchain" in n for n in names):
        systems.update(
            langchain_systems(names, client, collection, embedder, reranker, limit, top_k, rerank_max_length)
        )
    if any("llamaindex" in n for n in names):
        systems.update(llamaindex_systems(names, collection, embedder, reranker, limit, top_k, rerank_max_length))
    return {n: systems[n] for n in names}
