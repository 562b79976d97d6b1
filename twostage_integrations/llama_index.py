"""LlamaIndex adapters: stage 2 as a node postprocessor, the whole pipeline as a retriever.

Only types are translated here (``NodeWithScore`` <-> :class:`Hit`, ``MetadataFilters`` -> Chroma
``where``, our :class:`Embedder` -> ``BaseEmbedding``); scoring, sorting and cutting happen in the core.
Needs the ``llamaindex`` extra: ``pip install "twostage-integrations[llamaindex]"``.

>>> from llama_index.core.schema import NodeWithScore, TextNode
>>> from twostage_integrations.llama_index import TwoStageRerank
>>> rerank = TwoStageRerank(model="path/to/cross-encoder", top_n=1)  # doctest: +SKIP
>>> nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in ["Bananas are yellow.", "Paris is in France."]]
>>> rerank.postprocess_nodes(nodes, query_str="capital of France")[0].node.text  # doctest: +SKIP
'Paris is in France.'
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from .embeddings import BaseEmbedder, as_embedder
from .errors import InvalidParameterError, InvalidQueryError
from .hit import Hit
from .models import DEFAULT_RERANK_MODEL
from .pipeline import TwoStagePipeline
from .recall.chroma import ChromaRecall
from .recall.factory import adapter_recall
from .rerank.base import Reranker
from .rerank.lazy import as_reranker, loaded, model_field
from .rerank.windows import EVIDENCE_KEY
from .scores import check_min_score, hit_score_kind, pipeline_score_kinds, score_kind_of, threshold_hits
from .spec import spec_from
from .spec.adapters import pipeline_for
from .spec.build import SpecLike, refuse_contradictions, stage2_for
from .validation import check_limit_top_k, check_positive_int

dispatcher = get_dispatcher(__name__)

__all__ = [
    "MissingQueryError",
    "TwoStageEmbedding",
    "TwoStageRerank",
    "TwoStageRetriever",
    "UnsupportedFilterError",
    "filters_to_where",
    "hit_to_node",
]

# Stage scores (and the pipeline spec) the retriever adds to node metadata; kept out of embedding and LLM text.
SCORE_KEYS = ("recall_score", "recall_rank", "rerank_rank", "score_kind", "pipeline", EVIDENCE_KEY)
_DEFAULT_TOP_N = 5
_UNSET: Any = object()  # top_n not passed: the default, or a spec's top_k


class MissingQueryError(InvalidQueryError):
    """``postprocess_nodes`` was called without a query (LlamaIndex's "Missing query bundle" case)."""


class UnsupportedFilterError(InvalidParameterError):
    """A ``MetadataFilters`` operator or condition that Chroma's ``where`` cannot express."""


# -- stage 2 as a node postprocessor -----------------------------------------------------------------------
class TwoStageRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with any of our rerankers; keep the best ``top_n``.

    A named model loads on the first ``postprocess_nodes`` call, so the postprocessor is cheap to build and
    round-trips through ``to_dict``/``from_dict``. Returned nodes are copies with ``score`` = the rerank score
    (a plain float) and ``metadata["score_kind"]`` = its scale (see docs/scores.md); the input is untouched.
    ``postprocess_nodes`` without a query raises :class:`MissingQueryError`.

    Args:
        reranker: A core reranker (:class:`CrossEncoderReranker`, Cohere...), or a model name: a cross-encoder
            folder or hub id, or a Cohere model (``"rerank-v3.5"``). ``None``: the default reranker, as
            ``--rerank-model`` (``TWOSTAGE_RERANK_MODEL``, else the MS MARCO MiniLM-L6 cross-encoder).
        top_n: Nodes to keep (``None`` keeps all, reordered). The default is 5, not the 2 of LlamaIndex's own
            rerankers: it matches our pipeline's and CLI's ``top_k`` (the speed runs in docs/results.md use
            top_k 5), and 2 passages is a thin context for most answers.
        model: A model name, as LlamaIndex's own rerankers take it (the same as a name in ``reranker``).
        keep_retrieval_score: Store each node's incoming score in ``metadata["retrieval_score"]``.
        metadata_mode: What the reranker reads, as in LlamaIndex's own rerankers (``EMBED``: text plus the
            metadata the node lets embeddings see; ``NONE``: text only).
        callback_manager: LlamaIndex callbacks.
        pipeline: A pipeline spec (string, dict, ``PipelineSpec``, ``.toml`` file or preset name, see
            docs/pipeline_spec.md) instead of ``reranker``/``model``: its stages rerank (built now), ``top_n``
            defaults to its ``top_k``, its recall is not used; nodes' metadata carry ``"pipeline"``, the spec
            string (stored in the ``pipeline`` field).
        preset: A preset name (instead of ``pipeline``).
        min_score: Drop nodes whose rerank score is below it, like ``SimilarityPostprocessor``'s
            ``similarity_cutoff`` (a spec's by default; None keeps ``top_n``); fewer nodes, or none, is a valid
            answer. It must lie in the range of the reranker's ``score_kind`` (docs/scores.md).

    Raises:
        InvalidParameterError: If ``top_n`` is below 1, ``reranker`` and ``model`` name different models,
            ``reranker``/``model``/``top_n`` contradict a spec, or ``min_score`` is not a number.
        ModelNotFoundError: If a path-like model name does not exist.
        PipelineSpecError: The spec cannot be read, or both ``pipeline`` and ``preset`` are given.

    >>> from llama_index.core.schema import NodeWithScore, TextNode
    >>> rerank = TwoStageRerank(model="path/to/cross-encoder", top_n=2)  # doctest: +SKIP
    >>> TwoStageRerank.from_dict(rerank.to_dict()).model  # doctest: +SKIP
    'path/to/cross-encoder'
    >>> engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])  # doctest: +SKIP
    """

    model: str | None = Field(
        default=DEFAULT_RERANK_MODEL,
        description="The reranker's model: a cross-encoder folder or hub id, or a Cohere model such as rerank-v3.5 "
        "(None: the default preset's stages, when they are more than one model).",
    )
    top_n: int | None = Field(default=5, description="Nodes to return, best first (None: all).")
    keep_retrieval_score: bool = Field(default=False, description="Keep the incoming score in metadata.")
    metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED, description="Node content the reranker reads.")
    pipeline: str | None = Field(default=None, description="The pipeline spec whose stages rerank (None: model's).")
    min_score: float | None = Field(default=None, description="Drop nodes scored below it (None: keep top_n).")

    _reranker: Reranker = PrivateAttr()

    def __init__(
        self,
        reranker: Reranker | str | os.PathLike[str] | None = None,
        top_n: int | None = _UNSET,
        *,
        model: str | os.PathLike[str] | None = None,
        keep_retrieval_score: bool = False,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        callback_manager: CallbackManager | None = None,
        pipeline: SpecLike = None,
        preset: str | None = None,
        min_score: float | None = None,
    ) -> None:
        spec = spec_from(pipeline, preset)
        min_score = check_min_score(spec.min_score if min_score is None and spec is not None else min_score)
        if top_n is not _UNSET and top_n is not None:
            check_positive_int(top_n, "top_n")
        named = reranker is not None or model is not None or spec is not None
        if spec is None:
            reranker = as_reranker(reranker, model=model)
            top_n = _DEFAULT_TOP_N if top_n is _UNSET else top_n
        else:
            reranker = stage2_for(spec, reranker, None if model is None else str(model))
            refuse_contradictions(spec, top_n=(None if top_n is _UNSET else top_n, spec.top_k))
            top_n = spec.top_k
        # The fields are declared on this class; mypy checks the call against the base model's signature.
        super().__init__(  # type: ignore[call-arg]
            model=model_field(reranker, named=named),
            pipeline=None if spec is None else str(spec),
            top_n=top_n,
            min_score=min_score,
            keep_retrieval_score=keep_retrieval_score,
            metadata_mode=metadata_mode,
            callback_manager=callback_manager or CallbackManager(),
        )
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's serialisation name."""
        return "TwoStageRerank"

    @property
    def reranker(self) -> Reranker:
        """The reranker doing the work (loads a named model now if it was not loaded yet)."""
        return loaded(self._reranker)

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, hits = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            reranked = self._finish(nodes, self._reranker.rerank(query, hits, self.top_n))
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    @dispatcher.span
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, hits = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            reranked = self._finish(nodes, await self._reranker.arerank(query, hits, self.top_n))
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    def _start(self, nodes: Sequence[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[Hit]]:
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=list(nodes),
                top_n=len(nodes) if self.top_n is None else self.top_n,
                model_name=self.model or self._reranker.name,
            )
        )
        if query_bundle is None:
            raise MissingQueryError(
                "Missing query bundle in extra info. Pass query_bundle=QueryBundle(...) or query_str=... to "
                "postprocess_nodes (query engines do this for you)."
            )
        # recall_rank remembers each node's position so results map back even when node ids repeat.
        hits = [
            Hit(
                id=n.node.node_id,
                text=n.node.get_content(metadata_mode=self.metadata_mode),
                score=float(n.score or 0.0),
                recall_score=float(n.score or 0.0),
                recall_rank=rank,
            )
            for rank, n in enumerate(nodes, start=1)
        ]
        return query_bundle.query_str, hits

    def _payload(self, nodes: Sequence[NodeWithScore], query: str) -> dict[str, Any]:
        return {
            EventPayload.NODES: list(nodes),
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self.top_n,
        }

    def _finish(self, nodes: Sequence[NodeWithScore], hits: Sequence[Hit]) -> list[NodeWithScore]:
        rerank_kind = score_kind_of(self._reranker, "rerank")
        if self.min_score is not None:
            check_min_score(self.min_score, rerank_kind)
            hits = threshold_hits(hits, self.min_score, "input", rerank_kind)
        out = []
        for hit in hits:
            original = nodes[hit.recall_rank - 1]
            node = original.node.model_copy()  # shallow: give it its own metadata dict before writing
            node.metadata = dict(original.node.metadata)
            node.excluded_embed_metadata_keys = list(original.node.excluded_embed_metadata_keys)
            node.excluded_llm_metadata_keys = list(original.node.excluded_llm_metadata_keys)
            if self.keep_retrieval_score:
                node.metadata["retrieval_score"] = original.score
            node.metadata["score_kind"] = hit_score_kind(hit, recall_kind="input", rerank_kind=rerank_kind)
            if self.pipeline is not None:
                node.metadata["pipeline"] = self.pipeline
            evidence = _evidence_in_text(hit, original.node.get_content(metadata_mode=MetadataMode.NONE))
            if evidence is not None:
                node.metadata[EVIDENCE_KEY] = evidence
            _hide_from_text(node, ("score_kind", "pipeline", EVIDENCE_KEY))
            out.append(NodeWithScore(node=node, score=hit.score))
        return out


# -- the whole pipeline as a retriever ----------------------------------------------------------------------
_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}
_CONDITIONS = {FilterCondition.AND: "$and", FilterCondition.OR: "$or"}


def filters_to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """Translate LlamaIndex ``MetadataFilters`` into a Chroma ``where`` dict.

    Args:
        filters: ``==, !=, >, >=, <, <=, in, nin`` filters combined with ``and``/``or`` (nested too).

    Returns:
        The ``where`` dict, or ``None`` when there is nothing to filter.

    Raises:
        UnsupportedFilterError: If an operator, condition or value cannot be expressed in Chroma's ``where``.

    >>> from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
    >>> filters_to_where(MetadataFilters(filters=[MetadataFilter(key="year", value=2020, operator=">=")]))
    {'year': {'$gte': 2020}}
    """
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise UnsupportedFilterError(
            f"filters must be llama_index MetadataFilters, got {type(filters).__name__}; "
            f"wrap filters as MetadataFilters(filters=[MetadataFilter(...)])"
        )
    return _where(filters) or None


def _where(filters: MetadataFilters) -> dict[str, Any]:
    condition = filters.condition or FilterCondition.AND
    if condition not in _CONDITIONS:
        raise UnsupportedFilterError(
            f"filter condition {condition.value!r} is not supported by Chroma; use 'and' or 'or' "
            f"(negate single filters with '!=' or 'nin' instead of 'not')"
        )
    clauses = [_where(f) if isinstance(f, MetadataFilters) else _clause(f) for f in filters.filters]
    clauses = [c for c in clauses if c]
    if len(clauses) <= 1:  # Chroma rejects $and/$or with fewer than two clauses
        return clauses[0] if clauses else {}
    return {_CONDITIONS[condition]: clauses}


def _clause(f: MetadataFilter) -> dict[str, Any]:
    op = _OPERATORS.get(f.operator)
    if op is None:
        raise UnsupportedFilterError(
            f"filter operator {f.operator.value!r} (key {f.key!r}) is not supported by Chroma metadata filters; "
            f"use one of {', '.join(o.value for o in _OPERATORS)}"
        )
    is_list = isinstance(f.value, list)
    if f.value is None or (is_list and not f.value):
        raise UnsupportedFilterError(f"filter on {f.key!r} has no value; Chroma cannot match missing values")
    if is_list != (f.operator in (FilterOperator.IN, FilterOperator.NIN)):
        raise UnsupportedFilterError(
            f"filter {f.key!r} {f.operator.value!r} got {f.value!r}: 'in'/'nin' take a list, other operators a "
            f"single value"
        )
    return {f.key: {op: f.value}}


def hit_to_node(hit: Hit, score_kind: str | None = None, pipeline: str | None = None) -> NodeWithScore:
    """A :class:`Hit` as a LlamaIndex ``NodeWithScore``.

    Collections written by LlamaIndex's ``ChromaVectorStore`` keep the whole node in ``_node_content``; that
    node (ids, relationships, metadata) is restored.

    Args:
        hit: A hit from the pipeline.
        score_kind: The scale of ``hit.score`` (see docs/scores.md); left out of the metadata when ``None``.
        pipeline: The spec string that built the pipeline, when a spec did (metadata ``"pipeline"``).

    Returns:
        The node with score = the last stage's score; its metadata is the hit's plus ``recall_score``,
        ``recall_rank``, ``rerank_rank``, ``score_kind`` and ``pipeline`` (when set), all hidden from embedding
        and LLM text.
    """
    if "_node_content" in hit.metadata:
        node = metadata_dict_to_node(hit.metadata, text=hit.text)
    else:
        node = TextNode(id_=hit.id, text=hit.text, metadata=dict(hit.metadata))
    stages = {
        "recall_score": hit.recall_score,
        "recall_rank": hit.recall_rank,
        "rerank_rank": hit.rerank_rank,
        "score_kind": score_kind,
        "pipeline": pipeline,
        EVIDENCE_KEY: hit.metadata.get(EVIDENCE_KEY),  # a windowed reranker's best window in the node's text
    }
    node.metadata.update({k: v for k, v in stages.items() if v is not None})
    _hide_from_text(node, SCORE_KEYS)
    return NodeWithScore(node=node, score=hit.score)


def _evidence_in_text(hit: Hit, text: str) -> dict[str, Any] | None:
    """A windowed reranker's evidence as offsets into the node's own text: the reranker read the node's content
    with its metadata (``metadata_mode``), so the span moves by where the text starts and is clipped to it;
    None when the hit has none or the best window lies in the metadata alone."""
    evidence = hit.metadata.get(EVIDENCE_KEY)
    if not isinstance(evidence, dict):
        return None
    core = text.strip()  # LlamaIndex strips the formatted content, so trailing spaces of the text may be gone
    found = hit.text.rfind(core) if core else -1
    if found < 0:
        return None
    shift = found - (len(text) - len(text.lstrip()))
    start = min(max(evidence["start"] - shift, 0), len(text))
    end = min(max(evidence["end"] - shift, 0), len(text))
    return {**evidence, "start": start, "end": end} if end > start else None


def _hide_from_text(node: Any, keys: Sequence[str]) -> None:
    for excluded in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
        excluded.extend(k for k in keys if k not in excluded)


class TwoStageRetriever(BaseRetriever):
    """A LlamaIndex retriever running a :class:`TwoStagePipeline`: recall ``limit`` from Chroma, rerank,
    return the best ``top_k`` as ``NodeWithScore`` (ids, text, metadata; see :func:`hit_to_node`).

    Args:
        pipeline: The core pipeline doing the work.
        limit: Candidates recalled by stage 1 (default: ``pipeline.limit``).
        top_k: Nodes returned (default: ``pipeline.top_k``).
        min_score: Drop nodes scored below it (default: ``pipeline.min_score``); fewer, or none, is valid.
        filters: LlamaIndex ``MetadataFilters``, translated to a Chroma ``where`` now.
        where_document: A Chroma document filter, passed as is.
        callback_manager: LlamaIndex callbacks.
        verbose: LlamaIndex's retriever verbosity.

    Raises:
        InvalidParameterError: If ``limit``/``top_k`` are out of range.
        UnsupportedFilterError: If ``filters`` cannot be expressed in Chroma's ``where``.

    >>> from twostage_integrations import ChromaRecall, CrossEncoderReranker, TwoStagePipeline
    >>> pipe = TwoStagePipeline(ChromaRecall("docs"), CrossEncoderReranker(), limit=20, top_k=5)  # doctest: +SKIP
    >>> engine = RetrieverQueryEngine.from_args(TwoStageRetriever(pipe), llm=llm)  # doctest: +SKIP
    """

    def __init__(
        self,
        pipeline: TwoStagePipeline,
        *,
        limit: int | None = None,
        top_k: int | None = None,
        filters: MetadataFilters | None = None,
        where_document: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        min_score: float | None = None,
    ) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.pipeline = pipeline
        self.limit, self.top_k = check_limit_top_k(
            pipeline.limit if limit is None else limit, pipeline.top_k if top_k is None else top_k
        )
        self.min_score = check_min_score(pipeline.min_score if min_score is None else min_score)
        self.filters = filters
        self.where = filters_to_where(filters)  # translated now so a bad filter fails at construction
        self.where_document = dict(where_document) if where_document else None

    @classmethod
    def from_vector_store(
        cls,
        vector_store: Any,
        reranker: Reranker | str | os.PathLike[str] | None = None,
        *,
        embed_model: TwoStageEmbedding | BaseEmbedder | str | os.PathLike[str] | None = None,
        limit: int | None = None,
        top_k: int | None = None,
        pipeline: SpecLike = None,
        preset: str | None = None,
        recall: str | None = None,
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """Two-stage retrieval over the collection of a LlamaIndex ``ChromaVectorStore``; nothing is re-embedded.

        Args:
            vector_store: The ``ChromaVectorStore`` (e.g. ``index.vector_store``).
            reranker: A reranker or a model name, loaded on the first query (``None``: the default reranker, as
                ``--rerank-model``).
            embed_model: The model that wrote the vectors (default all-MiniLM-L6-v2).
            limit: Candidates recalled by stage 1 (default 20, or the spec's).
            top_k: Nodes returned (default 5, or the spec's).
            pipeline: A pipeline spec (string, dict, ``PipelineSpec``, ``.toml`` file or preset name, see
                docs/pipeline_spec.md) instead of ``reranker``: its recall kind over the store's collection, its
                stages (built now), limit and top_k; nodes' metadata carry ``"pipeline"``, the spec string.
            preset: A preset name (instead of ``pipeline``).
            recall: Stage 1 without a spec: ``"hybrid"`` (default: RRF of dense and a BM25 index over the store's
                passages, built on the first query; nodes edited in place through the store are seen after
                ``retriever.pipeline.recall.sparse.refresh()``, additions and deletions by themselves), ``"dense"``
                or ``"bm25"``.
            **kwargs: Constructor keywords (``filters``, ``where_document``...).

        Returns:
            The retriever.

        Raises:
            InvalidParameterError: If ``vector_store`` is not a ``ChromaVectorStore``, ``limit``/``top_k`` are
                out of range, ``reranker``/``limit``/``top_k`` contradict a spec, or ``recall`` is given with a
                spec or is not a recall kind.
            PipelineSpecError: The spec cannot be read.
        """
        from chromadb.api.models.Collection import Collection

        collection = getattr(vector_store, "client", None)
        if not isinstance(collection, Collection):
            raise InvalidParameterError(
                f"from_vector_store needs a llama_index ChromaVectorStore, got {type(vector_store).__name__}; "
                f"for other stores build a ChromaRecall/TwoStagePipeline and pass it to TwoStageRetriever"
            )
        embedder = embed_model.embedder if isinstance(embed_model, TwoStageEmbedding) else embed_model
        chroma = ChromaRecall(collection, embedding_model=embedder)
        stage1 = adapter_recall(chroma, recall, spec_given=pipeline is not None or preset is not None)
        # without a spec, a reranker name loads on the first query, like --rerank-model
        return cls(pipeline_for(stage1, reranker, limit=limit, top_k=top_k, pipeline=pipeline, preset=preset), **kwargs)

    def _kwargs(self) -> dict[str, Any]:
        where = {"where": self.where, "where_document": self.where_document}
        return {"limit": self.limit, "top_k": self.top_k, "min_score": self.min_score, **where}

    def _nodes(self, hits: Sequence[Hit]) -> list[NodeWithScore]:
        recall_kind, rerank_kind = pipeline_score_kinds(self.pipeline)
        spec = None if self.pipeline.spec is None else str(self.pipeline.spec)
        return [hit_to_node(h, hit_score_kind(h, recall_kind=recall_kind, rerank_kind=rerank_kind), spec) for h in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(self.pipeline.run(query_bundle.query_str, **self._kwargs()).hits)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes((await self.pipeline.arun(query_bundle.query_str, **self._kwargs())).hits)


# -- our embeddings for LlamaIndex indexes ------------------------------------------------------------------
class TwoStageEmbedding(BaseEmbedding):
    """Our sentence-transformers :class:`Embedder` as a LlamaIndex embedding model (unit-length vectors).

    Build a ``VectorStoreIndex`` with it when :class:`TwoStageRetriever` or :class:`ChromaRecall` will read
    the collection later: recall only works with the model that wrote the vectors.

    Args:
        embedder: An embedder, or a model name/folder; ``None`` means ``TWOSTAGE_EMBEDDING_MODEL``, else
            all-MiniLM-L6-v2.
        **kwargs: ``BaseEmbedding`` fields (``embed_batch_size`` defaults to the embedder's batch size).

    >>> emb = TwoStageEmbedding()  # all-MiniLM-L6-v2
    >>> len(emb.get_query_embedding("aspirin and stroke"))
    384
    """

    _embedder: BaseEmbedder = PrivateAttr()

    def __init__(self, embedder: BaseEmbedder | str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        embedder = as_embedder(embedder)
        kwargs.setdefault("embed_batch_size", embedder.batch_size)
        super().__init__(model_name=embedder.name, **kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's serialisation name."""
        return "TwoStageEmbedding"

    @property
    def embedder(self) -> BaseEmbedder:
        """The package embedder doing the work."""
        return self._embedder

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embedder.embed_query(query).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embedder.embed([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embedder.embed(texts).tolist()

    # The model runs in a worker thread so the event loop stays free.
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
