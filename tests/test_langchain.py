"""LangChain adapter on a real embedded Chroma (SciFact abstracts) and the real SciFact cross-encoder."""

from __future__ import annotations

import asyncio
import re
import socket

import langchain_chroma
import numpy as np
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField, RunnablePassthrough
from langchain_tests.integration_tests import RetrieversIntegrationTests

from twostage_integrations import Hit, InvalidParameterError, InvalidQueryError, ModelNotFoundError
from twostage_integrations.errors import RerankAPIError
from twostage_integrations.langchain import (
    TwoStageCompressor,
    TwoStageEmbeddings,
    TwoStageRetriever,
)

N_DOCS = 150
COLLECTION = "lc-scifact"


@pytest.fixture(scope="module")
def corpus(scifact_subset):
    """The first 150 docs of the SciFact subset (every relevant doc comes first, then distractors), with a
    ``bucket`` field to filter on, and the queries whose relevant docs are all in it."""
    doc_ids, texts, metas, queries, qrels = scifact_subset
    ids, texts = doc_ids[:N_DOCS], texts[:N_DOCS]
    metas = [{**m, "bucket": i % 2} for i, m in enumerate(metas[:N_DOCS])]
    kept = set(ids)
    qs = [q for qid, q in queries.items() if set(qrels[qid]) <= kept]
    assert len(qs) >= 20, "the subset should keep most test queries"
    return {"ids": ids, "texts": texts, "metas": metas, "by_id": dict(zip(ids, texts, strict=True)), "queries": qs}


@pytest.fixture(scope="module")
def store(corpus, embedder, tmp_path_factory):
    """A plain langchain_chroma store (default l2 space) embedded once with the package's model."""
    db = tmp_path_factory.mktemp("lc-chroma")
    vs = langchain_chroma.Chroma(COLLECTION, embedding_function=TwoStageEmbeddings(embedder), persist_directory=str(db))
    vs.add_texts(corpus["texts"], metadatas=corpus["metas"], ids=corpus["ids"])
    return vs


@pytest.fixture(scope="module")
def two_stage_pipeline(store, cross_encoder):
    # Not derived from `retriever`: the standard suite's class defines its own `retriever` fixture.
    # Dense: these tests compare stage 1 with the store's own similarity_search (hybrid is the default).
    return TwoStageRetriever.from_chroma(store, reranker=cross_encoder, limit=20, top_k=5, recall="dense").pipeline


@pytest.fixture(scope="module")
def retriever(two_stage_pipeline):
    return TwoStageRetriever(pipeline=two_stage_pipeline)


@pytest.fixture(scope="module")
def query(corpus):
    return corpus["queries"][0]


def ids(docs):
    return [d.id for d in docs]


# -- the langchain-tests standard suite ------------------------------------------------------------------
class TestTwoStageRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _pipeline(self, two_stage_pipeline, corpus):
        self.pipeline = two_stage_pipeline
        self.query = corpus["queries"][1]

    @property
    def retriever_constructor(self) -> type[TwoStageRetriever]:
        return TwoStageRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"pipeline": self.pipeline, "top_k": 4}

    @property
    def retriever_query_example(self) -> str:
        return self.query

    @property
    def num_results_arg_name(self) -> str:
        return "top_k"


# -- what the retriever returns --------------------------------------------------------------------------
def test_documents_carry_ids_text_metadata_and_every_score(retriever, corpus, embedder, query):
    docs = retriever.invoke(query)
    assert len(docs) == 5
    qv = embedder.embed_query(query)
    for rank, doc in enumerate(docs, start=1):
        assert doc.page_content == corpus["by_id"][doc.id]
        meta = doc.metadata
        assert meta["title"] == corpus["metas"][corpus["ids"].index(doc.id)]["title"]
        assert meta["rerank_rank"] == rank
        assert meta["relevance_score"] == meta["rerank_score"] and meta["score_kind"] == "ce_sigmoid"
        assert 1 <= meta["recall_rank"] <= 20
        # The store is l2 space; recall_score must still be the cosine similarity.
        cosine = float(qv @ embedder.embed([doc.page_content])[0])
        assert meta["recall_score"] == pytest.approx(cosine, abs=1e-4)
    scores = [d.metadata["relevance_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


def test_retriever_matches_core_pipeline(retriever, query):
    expected = retriever.pipeline.search(query)
    docs = retriever.invoke(query)
    assert ids(docs) == [h.id for h in expected]
    assert [d.metadata["relevance_score"] for d in docs] == pytest.approx([h.score for h in expected])


def test_recall_stage_finds_what_the_store_finds(retriever, store, query):
    docs = retriever.invoke(query, top_k=20)
    by_recall = sorted(docs, key=lambda d: d.metadata["recall_rank"])
    assert ids(by_recall) == ids(store.similarity_search(query, k=20))


class PlainEmbeddings(Embeddings):
    """A LangChain Embeddings that is not ours: sentence-transformers called directly."""

    def __init__(self, model):
        self.model = model

    def embed_documents(self, texts):
        return self.model.encode(list(texts)).tolist()

    def embed_query(self, text):
        return self.model.encode([text])[0].tolist()


def test_from_chroma_embeds_queries_with_a_foreign_store_embedding(store, embedder, cross_encoder, query):
    foreign = langchain_chroma.Chroma(
        COLLECTION, embedding_function=PlainEmbeddings(embedder.model), client=store._client
    )
    retriever = TwoStageRetriever.from_chroma(foreign, reranker=cross_encoder, limit=20, top_k=20, recall="dense")
    assert retriever.pipeline.recall.embedder.name == "langchain:PlainEmbeddings"
    by_recall = sorted(retriever.invoke(query), key=lambda d: d.metadata["recall_rank"])
    assert ids(by_recall) == ids(foreign.similarity_search(query, k=20))


def test_from_collection_reads_the_same_collection(store, retriever, embedder, rerank_model_path, query):
    from_name = TwoStageRetriever.from_collection(
        COLLECTION,
        client=store._client,
        embedding_model=embedder,
        reranker=rerank_model_path,
        limit=20,
        top_k=5,
        recall="dense",  # as `retriever`
    )
    assert from_name.pipeline.reranker.name == rerank_model_path
    assert ids(from_name.invoke(query)) == ids(retriever.invoke(query))


def test_per_call_overrides(retriever, query):
    docs = retriever.invoke(query, limit=8, top_k=2)
    assert len(docs) == 2
    assert all(d.metadata["recall_rank"] <= 8 for d in docs)
    filtered = retriever.invoke(query, where={"bucket": 1}, top_k=5)
    assert len(filtered) == 5
    assert all(d.metadata["bucket"] == 1 for d in filtered)
    assert retriever.top_k == 5 and retriever.where is None  # the retriever itself is unchanged


def test_configurable_fields(retriever, query):
    configurable = retriever.configurable_fields(
        top_k=ConfigurableField(id="top_k"), where=ConfigurableField(id="where")
    )
    docs = configurable.with_config(configurable={"top_k": 2, "where": {"bucket": 0}}).invoke(query)
    assert len(docs) == 2
    assert all(d.metadata["bucket"] == 0 for d in docs)
    assert len(configurable.invoke(query)) == 5


def test_fields_on_the_retriever(retriever, query):
    narrow = TwoStageRetriever(pipeline=retriever.pipeline, limit=10, top_k=3, where_document={"$contains": "the"})
    docs = narrow.invoke(query)
    assert len(docs) == 3
    assert all("the" in d.page_content and d.metadata["recall_rank"] <= 10 for d in docs)


# -- async ------------------------------------------------------------------------------------------------
async def test_ainvoke_equals_invoke(retriever, query):
    sync_docs = retriever.invoke(query)
    async_docs = await retriever.ainvoke(query)
    assert ids(async_docs) == ids(sync_docs)
    assert [d.metadata for d in async_docs] == [d.metadata for d in sync_docs]


async def test_ainvoke_does_not_block_the_event_loop(retriever, query):
    ticks = 0
    done = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await retriever.ainvoke(query, limit=20, top_k=5)
    done.set()
    await task
    # A blocking call would let the ticker run at most once or twice; the cross-encoder alone takes >0.1 s.
    assert ticks >= 10


async def test_concurrent_abatch_of_eight_queries(retriever, corpus):
    queries = corpus["queries"][:8]
    # limit=10 keeps the 16 searches cheap; kwargs reach every ainvoke.
    results = await retriever.abatch(queries, config={"max_concurrency": 8}, limit=10, top_k=3)
    assert len(results) == 8
    for q, docs in zip(queries, results, strict=True):
        assert ids(docs) == ids(retriever.invoke(q, limit=10, top_k=3))


def test_batch(retriever, corpus):
    queries = corpus["queries"][2:4]
    expected = [ids(retriever.invoke(q, limit=10)) for q in queries]
    assert [ids(d) for d in retriever.batch(queries, limit=10)] == expected


# -- bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_query_raises_the_core_error(retriever, bad):
    with pytest.raises(InvalidQueryError, match="empty"):
        retriever.invoke(bad)


async def test_empty_query_raises_the_core_error_async(retriever):
    with pytest.raises(InvalidQueryError, match="empty"):
        await retriever.ainvoke("")


def test_top_k_above_limit_raises_the_core_error(retriever, query):
    with pytest.raises(InvalidParameterError, match=r"top_k \(30\) is larger than limit \(20\)"):
        retriever.invoke(query, top_k=30)
    with pytest.raises(InvalidParameterError, match="top_k"):
        TwoStageRetriever(pipeline=retriever.pipeline, limit=5, top_k=6)
    with pytest.raises(InvalidParameterError, match="limit must be >= 1"):
        retriever.invoke(query, limit=0, top_k=1)


# -- callbacks --------------------------------------------------------------------------------------------
class RecordingHandler(BaseCallbackHandler):
    def __init__(self):
        self.queries, self.results, self.errors = [], [], []

    def on_retriever_start(self, serialized, query, **kwargs):
        self.queries.append(query)

    def on_retriever_end(self, documents, **kwargs):
        self.results.append([d.id for d in documents])

    def on_retriever_error(self, error, **kwargs):
        self.errors.append(error)


def test_callbacks_see_the_run_and_its_errors(retriever, query):
    handler = RecordingHandler()
    docs = retriever.invoke(query, config={"callbacks": [handler]})
    assert handler.queries == [query]
    assert handler.results == [ids(docs)]
    with pytest.raises(InvalidQueryError):
        retriever.invoke(" ", config={"callbacks": [handler]})
    assert len(handler.errors) == 1 and isinstance(handler.errors[0], InvalidQueryError)


# -- LCEL -------------------------------------------------------------------------------------------------
def test_lcel_chain_passes_reranked_context_in_order(retriever, query):
    def format_docs(docs):
        return "\n".join(f"[{d.id}] {d.page_content[:80]}" for d in docs)

    prompt = ChatPromptTemplate.from_messages([("human", "Context:\n{context}\n\nQuestion: {question}")])
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt
    chain = chain | ParrotFakeChatModel() | StrOutputParser()  # the fake model echoes the prompt back

    handler = RecordingHandler()
    answer = chain.invoke(query, config={"callbacks": [handler]})

    result = retriever.pipeline.run(query)
    reranked = [h.id for h in result.hits]
    assert re.findall(r"^\[(\w+)\]", answer, flags=re.M) == reranked
    assert reranked != [h.id for h in result.candidates[:5]], "this query should be reordered by stage 2"
    assert answer.endswith(f"Question: {query}")
    assert handler.queries == [query]  # the nested retriever run is traced with the query


# -- TwoStageCompressor -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compressor(cross_encoder):
    return TwoStageCompressor(reranker=cross_encoder, top_n=5)


def test_contextual_compression_matches_core_rerank(store, compressor, cross_encoder, retriever, corpus):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    base = store.as_retriever(search_kwargs={"k": 20})
    ccr = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    for q in corpus["queries"][:2]:
        candidates = base.invoke(q)
        expected = cross_encoder.rerank(q, [Hit(id=d.id, text=d.page_content) for d in candidates], top_k=5)
        docs = ccr.invoke(q)
        assert ids(docs) == [h.id for h in expected]
        assert [d.metadata["relevance_score"] for d in docs] == pytest.approx([h.score for h in expected])
        # Same collection, same query vector, same 20 candidates: the full two-stage retriever agrees.
        assert ids(docs) == ids(retriever.invoke(q))


async def test_compressor_async_equals_sync(store, compressor, query):
    candidates = store.similarity_search(query, k=20)
    sync_docs = compressor.compress_documents(candidates, query)
    async_docs = await compressor.acompress_documents(candidates, query)
    assert ids(async_docs) == ids(sync_docs)
    assert [d.metadata for d in async_docs] == [d.metadata for d in sync_docs]


def test_compressor_copies_documents_and_keeps_ids(store, compressor, query):
    candidates = store.similarity_search(query, k=20)
    snapshot = [d.model_copy(deep=True) for d in candidates]
    out = compressor.compress_documents(candidates, query)
    assert candidates == snapshot  # inputs untouched, metadata included
    assert all("relevance_score" not in d.metadata for d in candidates)
    originals = {d.id: d for d in candidates}
    for doc in out:
        src = originals[doc.id]
        assert doc is not src and doc.metadata is not src.metadata
        assert doc.page_content == src.page_content
        added = {"relevance_score", "score_kind", "rerank_score", "rerank_rank"}
        assert {k: v for k, v in doc.metadata.items() if k not in added} == src.metadata
        assert doc.metadata["relevance_score"] == doc.metadata["rerank_score"]
        assert doc.metadata["score_kind"] == "ce_sigmoid"  # the SciFact model has a sigmoid head
    assert [d.metadata["rerank_rank"] for d in out] == list(range(1, len(out) + 1))


def test_compressor_top_n_none_keeps_all_and_works_without_ids(compressor, cross_encoder, corpus, query):
    docs = [Document(page_content=t) for t in corpus["texts"][:6]]
    out = TwoStageCompressor(reranker=cross_encoder, top_n=None).compress_documents(docs, query)
    assert len(out) == 6 and all(d.id is None for d in out)
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)
    assert sorted(d.page_content for d in out) == sorted(d.page_content for d in docs)
    assert compressor.compress_documents([], query) == []


def test_compressor_fallback_keeps_input_scores_and_order(corpus, query):
    """A Cohere reranker that cannot reach its server and may fall back: recall order, with the fallback
    contract's scores (1 / position, see docs/reliability.md) so downstream code always gets numbers."""
    from twostage_integrations import CohereReranker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings = {"api_key": "lc-test-key", "base_url": f"http://127.0.0.1:{closed_port}", "max_retries": 0}
    fallback = TwoStageCompressor(reranker=CohereReranker(**settings, on_error="fallback"), top_n=2)
    docs = [
        Document(id=str(i), page_content=t, metadata={"relevance_score": 0.9 - i / 10})
        for i, t in enumerate(corpus["texts"][:3])
    ]
    out = fallback.compress_documents(docs, query)
    assert ids(out) == ["0", "1"]
    assert [d.metadata["relevance_score"] for d in out] == [1.0, 0.5]
    assert [(d.metadata["rerank_score"], d.metadata["rerank_rank"]) for d in out] == [(1.0, 1), (0.5, 2)]
    assert all(d.metadata["score_kind"] == "fallback_recall" for d in out)
    with pytest.raises(RerankAPIError):
        TwoStageCompressor(reranker=CohereReranker(**settings)).compress_documents(docs, query)


def test_compressor_bad_input(compressor, corpus):
    docs = [Document(page_content=corpus["texts"][0])]
    with pytest.raises(InvalidQueryError):
        compressor.compress_documents(docs, "")
    with pytest.raises(InvalidParameterError, match="top_n|top_k"):
        TwoStageCompressor(reranker=compressor.reranker, top_n=0).compress_documents(docs, "aspirin")


def test_compressor_reranker_by_name_or_default_from_the_env_var(monkeypatch, rerank_model_path, tmp_path):
    assert TwoStageCompressor(reranker=rerank_model_path).reranker.name == rerank_model_path
    monkeypatch.setenv("TWOSTAGE_RERANK_MODEL", rerank_model_path)
    assert TwoStageCompressor().reranker.name == rerank_model_path
    with pytest.raises(ModelNotFoundError):
        TwoStageCompressor(reranker=str(tmp_path / "no-such-model"))


def test_compressor_with_the_cohere_reranker(store, compressor, cross_encoder, query):
    """CohereReranker through the compressor, against `twostage serve` backed by the same cross-encoder:
    same documents, same order as the local cross-encoder."""
    from langchain_classic.retrievers import ContextualCompressionRetriever

    from twostage_integrations import CohereReranker
    from twostage_integrations.server import create_app, serve_in_thread

    key = "lc-test-key-1d2e"  # only ever sent to 127.0.0.1
    base = store.as_retriever(search_kwargs={"k": 12})
    with serve_in_thread(create_app(cross_encoder, api_key=key)) as url:
        cohere = TwoStageCompressor(reranker=CohereReranker(api_key=key, base_url=url), top_n=4)
        docs = ContextualCompressionRetriever(base_compressor=cohere, base_retriever=base).invoke(query)
    local = compressor.model_copy(update={"top_n": 4}).compress_documents(base.invoke(query), query)
    assert ids(docs) == ids(local)
    assert [d.metadata["relevance_score"] for d in docs] == pytest.approx(
        [d.metadata["relevance_score"] for d in local], abs=1e-5
    )


# -- TwoStageEmbeddings -----------------------------------------------------------------------------------
def test_embeddings_wrap_the_embedder(embedder, corpus):
    emb = TwoStageEmbeddings(embedder)
    texts = [t[:200] for t in corpus["texts"][:3]]
    np.testing.assert_allclose(emb.embed_documents(texts), embedder.embed(texts), atol=1e-6)
    np.testing.assert_allclose(emb.embed_query(texts[0]), embedder.embed_query(texts[0]), atol=1e-6)
    assert isinstance(emb.embed_query("x")[0], float)
