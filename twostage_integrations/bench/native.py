"""The LangChain and LlamaIndex systems of ``twostage bench``: each framework's native stack, our stage 2 as a
drop-in inside it, and our retriever adapters, all on the shared collection.

The frameworks and our adapters are imported inside the builders, so a missing framework only matters when
one of its systems is asked for.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ..embeddings import BaseEmbedder
from ..rerank.cross_encoder import CrossEncoderReranker
from .built import BuiltSystem, max_length_of, st_engine_label


def _doc_ids(documents: Sequence[Any]) -> list[str]:
    # LangChain types Document.id as optional; documents read back from Chroma always carry theirs.
    return [d.id for d in documents]


def langchain_systems(
    names: Sequence[str],
    client: Any,
    collection: Any,
    embedder: BaseEmbedder,
    reranker: CrossEncoderReranker,
    limit: int,
    top_k: int,
    rerank_max_length: int | None,
) -> dict[str, BuiltSystem]:
    """The LangChain systems among ``names`` (``langchain``, ``langchain+twostage-compressor``,
    ``twostage-langchain``), reading ``collection`` through ``langchain_chroma.Chroma``.

    Args:
        names: The systems to run; those of other frameworks are ignored.
        client: The Chroma client holding ``collection``.
        collection: The shared Chroma collection.
        embedder: The query embedder (wrapped as LangChain embeddings).
        reranker: Our cross-encoder; its model name is what the native ``HuggingFaceCrossEncoder`` loads.
        limit: Candidates recalled per query.
        top_k: Results kept after reranking.
        rerank_max_length: Token limit of the native cross-encoder (None: its default).

    Returns:
        The built systems by name.

    Raises:
        ImportError: ``langchain-chroma``, ``langchain-classic`` or ``langchain-community`` is not installed.
    """
    from langchain_chroma import Chroma
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker as NativeReranker

    from ..langchain import TwoStageCompressor, TwoStageEmbeddings, TwoStageRetriever

    with warnings.catch_warnings():  # langchain-community warns on import that it is being sunset
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder

    store = Chroma(client=client, collection_name=collection.name, embedding_function=TwoStageEmbeddings(embedder))
    base = store.as_retriever(search_kwargs={"k": limit})
    out: dict[str, BuiltSystem] = {}
    if "langchain" in names:
        kwargs = {"max_length": rerank_max_length} if rerank_max_length else {}
        hf = HuggingFaceCrossEncoder(model_name=reranker.name, model_kwargs=kwargs)
        native = ContextualCompressionRetriever(
            base_compressor=NativeReranker(model=hf, top_n=top_k), base_retriever=base
        )
        out["langchain"] = BuiltSystem(
            lambda q: _doc_ids(native.invoke(q)), None, max_length_of(hf.client), engine=st_engine_label(hf.client)
        )
    if "langchain+twostage-compressor" in names:
        ours = ContextualCompressionRetriever(
            base_compressor=TwoStageCompressor(reranker=reranker, top_n=top_k), base_retriever=base
        )
        out["langchain+twostage-compressor"] = BuiltSystem(
            lambda q: _doc_ids(ours.invoke(q)), None, max_length_of(reranker.model), reranker
        )
    if "twostage-langchain" in names:
        # dense, as every other system here: the bench compares one pipeline through each front door
        adapter = TwoStageRetriever.from_chroma(store, reranker=reranker, limit=limit, top_k=top_k, recall="dense")
        out["twostage-langchain"] = BuiltSystem(
            lambda q: _doc_ids(adapter.invoke(q)), adapter.pipeline, max_length_of(reranker.model), reranker
        )
    return out


def llamaindex_systems(
    names: Sequence[str],
    collection: Any,
    embedder: BaseEmbedder,
    reranker: CrossEncoderReranker,
    limit: int,
    top_k: int,
    rerank_max_length: int | None,
) -> dict[str, BuiltSystem]:
    """The LlamaIndex systems among ``names`` (``llamaindex``, ``llamaindex+twostage-rerank``,
    ``twostage-llamaindex``), reading ``collection`` through ``ChromaVectorStore``.

    Args:
        names: The systems to run; those of other frameworks are ignored.
        collection: The shared Chroma collection.
        embedder: The query embedder (wrapped as a LlamaIndex embedding).
        reranker: Our cross-encoder; its model name is what the native ``SentenceTransformerRerank`` loads.
        limit: Candidates recalled per query.
        top_k: Results kept after reranking.
        rerank_max_length: Token limit of the native cross-encoder, set on the loaded model (None: 512, its
            hard-coded default).

    Returns:
        The built systems by name.

    Raises:
        ImportError: ``llama-index-core`` or ``llama-index-vector-stores-chroma`` is not installed.
    """
    from llama_index.core import VectorStoreIndex
    from llama_index.core.postprocessor import SentenceTransformerRerank
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from ..llama_index import TwoStageEmbedding, TwoStageRerank, TwoStageRetriever

    embed_model = TwoStageEmbedding(embedder)
    vector_store = ChromaVectorStore(chroma_collection=collection)
    base = VectorStoreIndex.from_vector_store(vector_store, embed_model=embed_model).as_retriever(
        similarity_top_k=limit
    )
    out: dict[str, BuiltSystem] = {}

    def chain(postprocessor: Any) -> Callable[[str], list[str]]:
        return lambda q: [n.node.node_id for n in postprocessor.postprocess_nodes(base.retrieve(q), query_str=q)]

    if "llamaindex" in names:
        native = SentenceTransformerRerank(model=reranker.name, top_n=top_k)
        if rerank_max_length:
            native._model.max_seq_length = rerank_max_length  # noqa: SLF001 - no constructor argument for it
        model = native._model  # noqa: SLF001 - the loaded CrossEncoder: its token limit and engine
        out["llamaindex"] = BuiltSystem(chain(native), None, max_length_of(model), engine=st_engine_label(model))
    if "llamaindex+twostage-rerank" in names:
        out["llamaindex+twostage-rerank"] = BuiltSystem(
            chain(TwoStageRerank(reranker, top_n=top_k)), None, max_length_of(reranker.model), reranker
        )
    if "twostage-llamaindex" in names:
        adapter = TwoStageRetriever.from_vector_store(
            vector_store, reranker, embed_model=embed_model, limit=limit, top_k=top_k, recall="dense"
        )
        out["twostage-llamaindex"] = BuiltSystem(
            lambda q: [n.node.node_id for n in adapter.retrieve(q)],
            adapter.pipeline,
            max_length_of(reranker.model),
            reranker,
        )
    return out
