"""LangChain adapters: the two-stage pipeline as a retriever, stage 2 alone as a document compressor.

Only type translation lives here (``Hit`` <-> ``Document``, LangChain ``Embeddings`` <-> ``Embedder``);
searching, scoring and argument checks are the core's. Needs the ``langchain`` extra.

>>> from twostage_integrations import ChromaRecall, CrossEncoderReranker, TwoStagePipeline
>>> from twostage_integrations.langchain import TwoStageRetriever
>>> pipe = TwoStagePipeline(ChromaRecall("docs"), CrossEncoderReranker(), limit=20, top_k=5)  # doctest: +SKIP
>>> docs = TwoStageRetriever(pipeline=pipe).invoke("does aspirin prevent stroke?")  # doctest: +SKIP
>>> docs[0].metadata["relevance_score"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
    Callbacks,
)
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, PrivateAttr, SerializerFunctionWrapHandler, model_serializer

from .embeddings import BaseEmbedder, as_embedder
from .errors import InvalidParameterError
from .hit import Hit
from .pipeline import TwoStagePipeline
from .recall.chroma import ChromaRecall
from .recall.factory import adapter_recall
from .rerank.base import Reranker
from .rerank.lazy import as_reranker, loaded, model_field
from .rerank.windows import EVIDENCE_KEY
from .scores import check_min_score, hit_score_kind, pipeline_score_kinds, score_kind_of, threshold_hits
from .spec import PipelineSpec, spec_from
from .spec.adapters import pipeline_for
from .spec.build import SpecLike, refuse_contradictions, stage2_for
from .validation import check_limit_top_k, check_positive_int

__all__ = ["TwoStageCompressor", "TwoStageEmbeddings", "TwoStageRetriever", "hit_to_document"]


def hit_to_document(hit: Hit, score_kind: str | None = None, pipeline: str | None = None) -> Document:
    """A LangChain ``Document`` for a hit: id, text, the stored metadata plus every stage's score.

    Args:
        hit: A hit from the pipeline.
        score_kind: The stage and scale of ``hit.score`` (see docs/scores.md); omitted from the metadata when
            ``None``.
        pipeline: The spec string that built the pipeline (metadata ``"pipeline"``), when a spec did.

    Returns:
        A ``Document`` whose metadata adds ``relevance_score`` (the final score, LangChain's key for it),
        ``score_kind``, ``recall_score``, ``recall_rank``, ``rerank_score`` and ``rerank_rank`` (the last two
        ``None`` when no reranker ran).
    """
    metadata = {
        **hit.metadata,
        "relevance_score": hit.score,
        **({"score_kind": score_kind} if score_kind is not None else {}),
        "recall_score": hit.recall_score,
        "recall_rank": hit.recall_rank,
        "rerank_score": hit.rerank_score,
        "rerank_rank": hit.rerank_rank,
        **({"pipeline": pipeline} if pipeline is not None else {}),
    }
    return Document(id=hit.id, page_content=hit.text, metadata=metadata)


class TwoStageEmbeddings(Embeddings):
    """The package's :class:`~twostage_integrations.embeddings.Embedder` as LangChain ``Embeddings``.

    Give it to a ``langchain_chroma.Chroma`` store so the store and :meth:`TwoStageRetriever.from_chroma`
    embed with the same model (unit-length vectors, so every Chroma distance maps to cosine).

    Args:
        model: An embedder, or a model name/folder; ``None`` means ``TWOSTAGE_EMBEDDING_MODEL``, else
            all-MiniLM-L6-v2.

    >>> from langchain_chroma import Chroma
    >>> store = Chroma("docs", embedding_function=TwoStageEmbeddings(), persist_directory="db")  # doctest: +SKIP
    """

    def __init__(self, model: str | os.PathLike[str] | BaseEmbedder | None = None) -> None:
        self.embedder = as_embedder(model)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages.

        Args:
            texts: The passages.

        Returns:
            One unit-length vector per text.
        """
        return self.embedder.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed a query.

        Args:
            text: The query.

        Returns:
            Its unit-length vector.
        """
        return self.embedder.embed_query(text).tolist()


class _LangChainEmbedder(BaseEmbedder):
    """Any LangChain ``Embeddings`` seen as a :class:`BaseEmbedder`, so stage 1 embeds queries exactly as the
    store it reads from does. Vectors are passed through unchanged (normalising them would change l2 rankings)."""

    def __init__(self, embeddings: Embeddings, *, batch_size: int = 64) -> None:
        model = getattr(embeddings, "model", None) or getattr(embeddings, "model_name", None)
        name = f"langchain:{type(embeddings).__name__}" + (f":{model}" if isinstance(model, str) else "")
        super().__init__(name, batch_size=batch_size)
        self.embeddings = embeddings

    @property
    def dimension(self) -> int:
        return len(self.embeddings.embed_query("dimension probe"))

    def embed(self, texts: Sequence[str], *, progress: bool = False, desc: str = "embedding") -> np.ndarray:
        return np.asarray(self.embeddings.embed_documents(list(texts)), dtype=np.float32)

    def embed_queries(self, queries: Sequence[str], *, progress: bool = False) -> np.ndarray:
        # LangChain embeds queries one by one (some models prefix queries differently from documents).
        return np.asarray([self.embeddings.embed_query(q) for q in queries], dtype=np.float32)


class TwoStageRetriever(BaseRetriever):
    """A :class:`~twostage_integrations.TwoStagePipeline` as a LangChain retriever.

    ``limit``, ``top_k``, ``where`` and ``where_document`` can also be set per call,
    ``retriever.invoke(query, top_k=3, where={"source": "faq"})``, or made configurable with
    ``configurable_fields``; so can ``min_score`` (drop documents scored below it: fewer than ``top_k``, or none,
    is a valid answer). ``k`` is accepted as LangChain's name for ``top_k`` (``invoke(query, k=3)``,
    as with ``search_kwargs={"k": 3}``). Other ``invoke`` keywords go to stage 1 (e.g. ``num_candidates``).
    ``ainvoke``/``abatch`` run the models off the event loop.

    Each ``Document`` is :func:`hit_to_document` of a hit: ``id`` = the passage id, metadata = the stored
    metadata plus ``relevance_score`` (final score), ``score_kind`` (see docs/scores.md), ``recall_score``,
    ``recall_rank``, ``rerank_score``, ``rerank_rank``, and ``pipeline`` (the spec string) when a pipeline spec
    built the pipeline (``from_collection(name, pipeline=SPEC)`` / ``preset=NAME``, or
    :meth:`TwoStagePipeline.from_spec`).

    Args:
        pipeline: The core pipeline doing the work.
        limit: Candidates recalled by stage 1 (default: ``pipeline.limit``).
        top_k: Documents returned after stage 2 (default: ``pipeline.top_k``).
        min_score: Drop documents whose ``relevance_score`` is below it (default: ``pipeline.min_score``); it
            must lie in the range of the final ``score_kind`` (docs/scores.md).
        where: Chroma metadata filter.
        where_document: Chroma document filter.
        **data: Other ``BaseRetriever`` fields (``tags``, ``metadata``).

    Raises:
        InvalidParameterError: If ``limit``/``top_k`` are out of range, here or per call, or a call passes
            ``k`` and ``top_k`` with different values.
        InvalidQueryError: If a query is empty, blank or not a string.

    >>> retriever = TwoStageRetriever.from_collection("docs", limit=20, top_k=5)  # doctest: +SKIP
    >>> [d.id for d in retriever.invoke("does aspirin prevent stroke?", top_k=2)]  # doctest: +SKIP
    """

    pipeline: TwoStagePipeline
    """The core pipeline doing the work."""
    limit: int | None = None
    """Candidates recalled by stage 1 (default: ``pipeline.limit``)."""
    top_k: int | None = None
    """Documents returned after stage 2 (default: ``pipeline.top_k``)."""
    min_score: float | None = None
    """Drop documents scored below it (default: ``pipeline.min_score``; None keeps ``top_k``)."""
    where: dict[str, Any] | None = None
    """Chroma metadata filter, e.g. ``{"source": "faq"}``."""
    where_document: dict[str, Any] | None = None
    """Chroma document filter, e.g. ``{"$contains": "aspirin"}``."""

    def __init__(self, **data: Any) -> None:
        if isinstance(data.get("pipeline"), (str, os.PathLike, Mapping, PipelineSpec)) or "preset" in data:
            raise InvalidParameterError(
                "TwoStageRetriever(pipeline=...) takes a TwoStagePipeline; for a spec or preset use "
                "TwoStageRetriever.from_collection(name, pipeline=SPEC) or from_chroma(store, preset=NAME)",
                parameter="pipeline",
            )
        super().__init__(**data)
        # Checked here rather than in a pydantic validator so the core's typed error reaches the caller.
        self.limit, self.top_k = check_limit_top_k(
            self.pipeline.limit if self.limit is None else self.limit,
            self.pipeline.top_k if self.top_k is None else self.top_k,
        )
        self.min_score = check_min_score(self.pipeline.min_score if self.min_score is None else self.min_score)

    @classmethod
    def from_collection(
        cls,
        name: str,
        *,
        path: str | os.PathLike[str] | None = None,
        host: str | None = None,
        port: int | None = None,
        client: Any = None,
        reranker: Reranker | str | os.PathLike[str] | None = None,
        embedding_model: str | os.PathLike[str] | BaseEmbedder | None = None,
        limit: int | None = None,
        top_k: int | None = None,
        pipeline: SpecLike = None,
        preset: str | None = None,
        recall: str | None = None,
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """A retriever over a Chroma collection written by ``twostage ingest`` / ``add_texts``, reranking with
        ``reranker`` or running the pipeline spec ``pipeline``/``preset`` names (docs/pipeline_spec.md).

        Args:
            name: The collection name.
            path: An embedded database folder (see :class:`~twostage_integrations.ChromaRecall`).
            host: A Chroma server's host.
            port: A Chroma server's port.
            client: An existing chromadb client.
            reranker: A reranker, or a model name/folder loaded on the first query (``None``: the default, as
                ``--rerank-model``).
            embedding_model: The embedder or model name that wrote the collection; ``None`` means
                ``TWOSTAGE_EMBEDDING_MODEL``, else all-MiniLM-L6-v2.
            limit: Candidates recalled by stage 1 (default 20, or the spec's).
            top_k: Documents returned (default 5, or the spec's).
            pipeline: A pipeline spec (string, dict, :class:`~twostage_integrations.spec.PipelineSpec`, ``.toml``
                file or preset name): its recall kind over this collection, its stages (built now), its limit
                and top_k. Documents' metadata then carry ``"pipeline"``: the spec string.
            preset: A preset name (instead of ``pipeline``).
            recall: Stage 1 without a spec: ``"hybrid"`` (default: RRF of dense and BM25 over the collection; the
                BM25 index ``twostage ingest`` saved is loaded), ``"dense"`` or ``"bm25"``.
            **kwargs: Other retriever fields (``where``, ``tags``...).

        Returns:
            The retriever.

        Raises:
            InvalidParameterError: If ``limit``/``top_k`` are out of range, ``reranker``/``limit``/``top_k``
                contradict a spec, or ``recall`` is given with a spec or is not a recall kind.
            PipelineSpecError: The spec cannot be read, or both ``pipeline`` and ``preset`` are given.
        """
        chroma = ChromaRecall(name, path=path, host=host, port=port, client=client, embedding_model=embedding_model)
        stage1 = adapter_recall(chroma, recall, spec_given=pipeline is not None or preset is not None)
        pipe = pipeline_for(stage1, reranker, limit=limit, top_k=top_k, pipeline=pipeline, preset=preset)
        return cls(pipeline=pipe, **kwargs)

    @classmethod
    def from_chroma(
        cls,
        vectorstore: Any,
        *,
        reranker: Reranker | str | os.PathLike[str] | None = None,
        embedding_model: str | os.PathLike[str] | BaseEmbedder | None = None,
        client: Any = None,
        limit: int | None = None,
        top_k: int | None = None,
        pipeline: SpecLike = None,
        preset: str | None = None,
        recall: str | None = None,
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """A retriever over an existing ``langchain_chroma.Chroma`` store, reusing its collection (nothing is
        re-embedded).

        Queries are embedded with the store's own embedding function, so stage 1 finds what
        ``vectorstore.similarity_search`` finds. ``recall_score`` is the cosine similarity when the store
        holds unit-length vectors (any Chroma space: l2, ip or cosine); otherwise only its order is meaningful.

        Args:
            vectorstore: The ``langchain_chroma.Chroma`` store.
            reranker: A reranker, or a model name/folder loaded on the first query (``None``: the default).
            embedding_model: Overrides the store's embedding function (it must be the model that wrote the
                store). A store without one falls back to all-MiniLM-L6-v2, Chroma's default model.
            client: The store's Chroma client, if you have it; only :class:`BM25Recall` uses it (to keep its
                index beside an embedded database), so it can be left out.
            limit: Candidates recalled by stage 1 (default 20, or the spec's).
            top_k: Documents returned (default 5, or the spec's).
            pipeline: A pipeline spec, as for :meth:`from_collection` (its recall kind over the store's collection).
            preset: A preset name (instead of ``pipeline``).
            recall: Stage 1 without a spec: ``"hybrid"`` (default: RRF of dense and a BM25 index over the store's
                passages, built on the first query; passages edited in place through the store are seen after
                ``retriever.pipeline.recall.sparse.refresh()``, additions and deletions by themselves), ``"dense"``
                (the store's own similarity search) or ``"bm25"``.
            **kwargs: Other retriever fields (``where``, ``tags``...).

        Returns:
            The retriever.

        Raises:
            InvalidParameterError: If the store has no collection, ``limit``/``top_k`` are out of range,
                ``reranker``/``limit``/``top_k`` contradict a spec, or ``recall`` is given with a spec or is not a
                recall kind.
            PipelineSpecError: The spec cannot be read.
        """
        embeddings = vectorstore.embeddings  # public property of langchain_chroma.Chroma
        embedder: BaseEmbedder
        if embedding_model is not None:
            embedder = as_embedder(embedding_model)
        elif isinstance(embeddings, TwoStageEmbeddings):
            embedder = embeddings.embedder
        elif embeddings is not None:
            embedder = _LangChainEmbedder(embeddings)
        else:
            embedder = as_embedder()
        chroma = ChromaRecall(_store_collection(vectorstore), client=client, embedding_model=embedder)
        stage1 = adapter_recall(chroma, recall, spec_given=pipeline is not None or preset is not None)
        pipe = pipeline_for(stage1, reranker, limit=limit, top_k=top_k, pipeline=pipeline, preset=preset)
        return cls(pipeline=pipe, **kwargs)

    def _search_kwargs(
        self,
        limit: int | None,
        top_k: int | None,
        k: int | None,
        where: Mapping[str, Any] | None,
        where_document: Mapping[str, Any] | None,
        recall_kwargs: dict[str, Any],
        min_score: float | None = None,
    ) -> dict[str, Any]:
        if k is not None:  # LangChain's name for the number of documents
            check_positive_int(k, "k")
            if top_k is not None and top_k != k:
                raise InvalidParameterError(
                    f"got k={k} and top_k={top_k}; they are the same setting (documents returned), pass one"
                )
            top_k = k
        return {
            "limit": self.limit if limit is None else limit,
            "top_k": self.top_k if top_k is None else top_k,
            "where": self.where if where is None else where,
            "where_document": self.where_document if where_document is None else where_document,
            "min_score": self.min_score if min_score is None else min_score,
            **recall_kwargs,
        }

    def _documents(self, hits: Sequence[Hit]) -> list[Document]:
        recall_kind, rerank_kind = pipeline_score_kinds(self.pipeline)
        spec = None if self.pipeline.spec is None else str(self.pipeline.spec)
        return [
            hit_to_document(h, hit_score_kind(h, recall_kind=recall_kind, rerank_kind=rerank_kind), spec) for h in hits
        ]

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        limit: int | None = None,
        top_k: int | None = None,
        k: int | None = None,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        **recall_kwargs: Any,
    ) -> list[Document]:
        kwargs = self._search_kwargs(limit, top_k, k, where, where_document, recall_kwargs, min_score)
        return self._documents(self.pipeline.run(query, **kwargs).hits)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        limit: int | None = None,
        top_k: int | None = None,
        k: int | None = None,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        **recall_kwargs: Any,
    ) -> list[Document]:
        kwargs = self._search_kwargs(limit, top_k, k, where, where_document, recall_kwargs, min_score)
        return self._documents((await self.pipeline.arun(query, **kwargs)).hits)


def _store_collection(vectorstore: Any) -> Any:
    """The chromadb ``Collection`` behind a ``langchain_chroma.Chroma`` store.

    langchain-chroma (<= 1.1) has no public accessor: ``_collection`` is the documented property its own
    methods and LangChain's docs use, so it is read here, in one place, and a store without it gets a typed
    error instead of an AttributeError.
    """
    try:
        return vectorstore._collection
    except (AttributeError, ValueError) as exc:  # ValueError: the store's collection was deleted
        raise InvalidParameterError(
            f"from_chroma needs a langchain_chroma.Chroma store with a collection, got {type(vectorstore).__name__} "
            f"({exc}); for another store use TwoStageCompressor with store.as_retriever()"
        ) from exc


def _documents_to_hits(documents: Sequence[Document]) -> list[Hit]:
    # recall_rank carries the input position, so reranked hits map back to the caller's documents.
    hits = []
    for position, doc in enumerate(documents):
        score = doc.metadata.get("relevance_score")
        score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else 0.0
        hits.append(
            Hit(
                id=doc.id or str(position),
                text=doc.page_content,
                metadata=dict(doc.metadata),
                score=score,
                recall_score=score,
                recall_rank=position + 1,
            )
        )
    return hits


def _reranked_documents(
    documents: Sequence[Document], hits: Sequence[Hit], rerank_kind: str, pipeline: str | None = None
) -> list[Document]:
    # Copies: the caller's documents (and their metadata dicts) are never touched; Document.id is kept.
    out = []
    for hit in hits:
        doc = documents[hit.recall_rank - 1]
        scores = {
            "relevance_score": hit.score,
            "score_kind": hit_score_kind(hit, recall_kind="input", rerank_kind=rerank_kind),
            "rerank_score": hit.rerank_score,
            "rerank_rank": hit.rerank_rank,
            **({"pipeline": pipeline} if pipeline is not None else {}),
            # a windowed reranker's best window, as offsets into page_content (the text it scored)
            **({EVIDENCE_KEY: hit.metadata[EVIDENCE_KEY]} if EVIDENCE_KEY in hit.metadata else {}),
        }
        out.append(doc.model_copy(update={"metadata": {**doc.metadata, **scores}}))
    return out


class TwoStageCompressor(BaseDocumentCompressor):
    """Stage 2 alone, for an existing retriever: reranks its documents with any core reranker.

    Returns new ``Document`` copies, best first, at most ``top_n``, with the original ``id`` and metadata plus
    ``relevance_score`` (the final score), ``score_kind`` (its scale, see docs/scores.md), ``rerank_score`` and
    ``rerank_rank``. Input documents are not changed. An input ``relevance_score`` is taken as the stage-1
    score: a reranker that falls back to recall order (Cohere with ``on_error="fallback"``) keeps it and
    ``score_kind`` says ``fallback_recall``.

    A named model is loaded on the first ``compress_documents`` call, so the compressor is cheap to build, copy
    and serialise (``model_dump()`` gives ``{"model": ..., "top_n": ..., "pipeline": ...}`` and
    ``TwoStageCompressor(**that)`` rebuilds it).

    A pipeline spec (``pipeline=`` or ``preset=``, see docs/pipeline_spec.md) names the stages instead: they
    are built at once, ``top_n`` defaults to the spec's ``top_k``, the spec's recall is not used (the base
    retriever recalls), and each document's metadata carries ``"pipeline"``: the spec string.

    Args:
        reranker: A core :class:`~twostage_integrations.Reranker`, or a model name (a cross-encoder folder or
            hub id, ``"rerank-v3.5"`` for Cohere). Default: ``TWOSTAGE_RERANK_MODEL``, else the MS MARCO
            MiniLM-L6 cross-encoder.
        preset: A preset name (instead of ``reranker``/``model``).
        **data: The fields: ``model`` (the same as a name in ``reranker``), ``top_n`` (documents to keep,
            default 3; ``None`` keeps all, reordered), ``min_score`` (drop documents scored below it, in the
            reranker's ``score_kind`` range; a spec's by default) and ``pipeline`` (a spec string, dict,
            ``PipelineSpec`` or preset name, instead of ``reranker``/``model``; stored as its canonical string).

    Raises:
        InvalidParameterError: A ``reranker``, ``model`` or ``top_n`` contradicting the spec.
        PipelineSpecError: The spec cannot be read, or both ``pipeline`` and ``preset`` are given.

    >>> from langchain_classic.retrievers import ContextualCompressionRetriever
    >>> compressor = TwoStageCompressor(model="rerank-v3.5", top_n=5)  # doctest: +SKIP
    >>> retriever = ContextualCompressionRetriever(  # doctest: +SKIP
    ...     base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 20})
    ... )
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str | None = None
    """The reranker's model name (set from ``reranker.name`` when a reranker object is given; ``None`` when the
    default preset's stages rerank and they are more than one model)."""
    top_n: int | None = 3
    """Documents to keep (LangChain's default is 3); ``None`` keeps all, reordered."""
    pipeline: str | None = None
    """The pipeline spec whose stages rerank, as its canonical string (None: ``model`` does)."""
    min_score: float | None = None
    """Drop documents whose rerank score is below it (None: keep ``top_n``); fewer, or none, is a valid answer."""

    _reranker: Reranker = PrivateAttr()

    def __init__(
        self, reranker: Reranker | str | os.PathLike[str] | None = None, *, preset: str | None = None, **data: Any
    ) -> None:
        spec = spec_from(data.get("pipeline"), preset)
        if spec is None:
            named = reranker is not None or data.get("model") is not None
            reranker = as_reranker(reranker, model=data.get("model"))
            data["model"] = model_field(reranker, named=named)
        else:
            reranker = stage2_for(spec, reranker, data.get("model"))
            refuse_contradictions(spec, top_n=(data.get("top_n"), spec.top_k))
            data.update(pipeline=str(spec), top_n=spec.top_k)
            data.setdefault("min_score", spec.min_score)
            data["model"] = reranker.name
        data["min_score"] = check_min_score(data.get("min_score"))
        super().__init__(**data)
        self._reranker = reranker

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A model-built compressor dumps as {"model", "top_n"}, as it always has; a spec-built one adds "pipeline".
        data = handler(self)
        for key in ("pipeline", "min_score"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @property
    def reranker(self) -> Reranker:
        """The reranker doing the work (loads a named model now if it was not loaded yet)."""
        return loaded(self._reranker)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank documents for a query and keep the best ``top_n``.

        Args:
            documents: The documents to rerank (not changed).
            query: The query text.
            callbacks: LangChain callbacks (unused).

        Returns:
            Copies of the best documents, best first, with the scores added to their metadata.

        Raises:
            InvalidQueryError: If the query is empty, blank or not a string.
        """
        hits = self._reranker.rerank(query, _documents_to_hits(documents), self.top_n)
        return _reranked_documents(
            documents, self._threshold(hits), score_kind_of(self._reranker, "rerank"), self.pipeline
        )

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`: the model runs off the event loop.

        Args:
            documents: The documents to rerank (not changed).
            query: The query text.
            callbacks: LangChain callbacks (unused).

        Returns:
            Copies of the best documents, best first, with the scores added to their metadata.
        """
        hits = await self._reranker.arerank(query, _documents_to_hits(documents), self.top_n)
        return _reranked_documents(
            documents, self._threshold(hits), score_kind_of(self._reranker, "rerank"), self.pipeline
        )

    def _threshold(self, hits: list[Hit]) -> list[Hit]:
        """The hits at or above ``min_score``, checked against the reranker's kind (known once it has loaded)."""
        if self.min_score is None:
            return hits
        kind = score_kind_of(self._reranker, "rerank")
        check_min_score(self.min_score, kind)
        return threshold_hits(hits, self.min_score, "input", kind)
