"""LlamaIndex adapter: TwoStageRerank postprocessor, TwoStageRetriever, TwoStageEmbedding.

Real models and data throughout: the SciFact cross-encoder, all-MiniLM-L6-v2, SciFact test queries, an
embedded Chroma in a tmp dir, and LlamaIndex's own ChromaVectorStore / VectorStoreIndex / MockLLM.
"""

from __future__ import annotations

import asyncio

import chromadb
import ir_measures
import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from llama_index.vector_stores.chroma import ChromaVectorStore

from twostage_integrations import ChromaRecall, Hit, InvalidParameterError, InvalidQueryError, TwoStagePipeline
from twostage_integrations.llama_index import (
    MissingQueryError,
    TwoStageEmbedding,
    TwoStageRerank,
    TwoStageRetriever,
    UnsupportedFilterError,
    filters_to_where,
    hit_to_node,
)

N_QUERIES = 30  # SciFact test queries for the quality check
N_CANDIDATES = 10  # stage-1 candidates per query (the cross-encoder scores ~50 pairs/s)
N_INDEXED = 100  # passages indexed to draw those candidates from: the queries' relevant ones, then distractors
N_LI_DOCS = 60  # passages written through LlamaIndex's ChromaVectorStore


# -- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scifact_candidates(tmp_path_factory, embedder, scifact_subset):
    """{qid: (query, stage-1 hits)} for 30 SciFact test queries, from the core ChromaRecall.

    The tests compare rerankers on these candidates, so the index holds only what the queries need (their
    relevant passages, then distractors up to N_INDEXED), not the whole 500-passage subset: embedding it cost
    more than the comparisons and made this module time out on a loaded machine."""
    doc_ids, texts, metas, queries, qrels = scifact_subset
    qids = list(queries)[:N_QUERIES]
    relevant = {d for q in qids for d in qrels[q]}
    rows = [i for i, d in enumerate(doc_ids) if d in relevant]
    rows += [i for i, d in enumerate(doc_ids) if d not in relevant][: N_INDEXED - len(rows)]
    recall = ChromaRecall("scifact", path=tmp_path_factory.mktemp("chroma"), embedding_model=embedder)
    recall.add_texts([texts[i] for i in rows], [metas[i] for i in rows], [doc_ids[i] for i in rows])
    return {q: (queries[q], recall.search(queries[q], limit=N_CANDIDATES)) for q in qids}, qrels


@pytest.fixture(scope="module")
def li_store(tmp_path_factory, embedder, scifact_subset):
    """A VectorStoreIndex that LlamaIndex itself wrote into an embedded Chroma (default l2 space)."""
    doc_ids, texts, metas, queries, qrels = scifact_subset
    client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("li_chroma")))
    collection = client.get_or_create_collection("li_scifact")
    nodes = [
        TextNode(
            id_=doc_ids[i],
            text=texts[i],
            metadata={"title": metas[i]["title"], "n": i, "part": "even" if i % 2 == 0 else "odd"},
            excluded_embed_metadata_keys=["n", "part"],
            excluded_llm_metadata_keys=["n", "part"],
        )
        for i in range(N_LI_DOCS)
    ]
    storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
    index = VectorStoreIndex(nodes, storage_context=storage, embed_model=TwoStageEmbedding(embedder))
    stored = set(doc_ids[:N_LI_DOCS])
    # queries whose relevant passages were all written, so retrieval has something to find
    answerable = [queries[q] for q in queries if set(qrels[q]) <= stored]
    return index, collection, answerable


def to_nodes(hits: list[Hit]) -> list[NodeWithScore]:
    return [hit_to_node(h) for h in hits]


def ids_scores(nodes: list[NodeWithScore]) -> list[tuple[str, float]]:
    return [(n.node.node_id, n.score) for n in nodes]


# -- TwoStageRerank ----------------------------------------------------------------------------------------
def test_query_engine_sources_come_back_reranked(li_store, cross_encoder):
    index, _, queries = li_store
    query = queries[0]
    engine = index.as_query_engine(
        node_postprocessors=[TwoStageRerank(cross_encoder, top_n=5)], llm=MockLLM(), similarity_top_k=20
    )
    response = engine.query(query)

    # reference: LlamaIndex's own top 20, scored one by one by the core cross-encoder on the same content
    retrieved = index.as_retriever(similarity_top_k=20).retrieve(query)
    assert len(retrieved) == 20
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in retrieved]
    scores = cross_encoder.score(query, texts)
    expected = sorted(zip([n.node.node_id for n in retrieved], scores, strict=True), key=lambda p: -p[1])[:5]

    got = ids_scores(response.source_nodes)
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert all(type(s) is float for _, s in got)
    assert isinstance(response.response, str) and response.response  # MockLLM answered from the context


def test_postprocessor_equals_core_reranker_and_independent_ndcg(scifact_candidates, cross_encoder, rerank_model_path):
    from sentence_transformers import CrossEncoder

    candidates, qrels = scifact_candidates
    assert len(candidates) >= 30
    post = TwoStageRerank(cross_encoder, top_n=10, metadata_mode=MetadataMode.NONE)
    independent = CrossEncoder(rerank_model_path)
    run_post, run_ref = {}, {}
    for qid, (query, hits) in candidates.items():
        out = post.postprocess_nodes(to_nodes(hits), query_bundle=QueryBundle(query))
        core = cross_encoder.rerank(query, hits, top_k=10)
        assert ids_scores(out) == [(h.id, h.score) for h in core]
        assert all(type(n.score) is float for n in out)
        run_post[qid] = {n.node.node_id: n.score for n in out}
        ref_scores = independent.predict([(query, h.text) for h in hits], show_progress_bar=False)
        run_ref[qid] = {h.id: float(s) for h, s in zip(hits, ref_scores, strict=True)}

    measure = ir_measures.nDCG @ 10
    qrels_used = {q: qrels[q] for q in candidates}
    ndcg_post = ir_measures.calc_aggregate([measure], qrels_used, run_post)[measure]
    ndcg_ref = ir_measures.calc_aggregate([measure], qrels_used, run_ref)[measure]
    assert ndcg_post == pytest.approx(ndcg_ref, abs=1e-9)


async def test_async_equals_sync(scifact_candidates, cross_encoder):
    candidates, _ = scifact_candidates
    post = TwoStageRerank(cross_encoder, top_n=5)
    for query, hits in list(candidates.values())[:3]:
        nodes = to_nodes(hits[:8])
        sync = post.postprocess_nodes(nodes, query_str=query)
        asyn = await post.apostprocess_nodes(nodes, query_str=query)
        assert ids_scores(asyn) == ids_scores(sync)
        assert len(sync) == 5


async def test_async_does_not_block_the_event_loop(scifact_candidates, cross_encoder):
    query, hits = next(iter(scifact_candidates[0].values()))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())  # first runs when the rerank yields the loop
    try:
        out = await TwoStageRerank(cross_encoder, top_n=3).apostprocess_nodes(to_nodes(hits[:8]), query_str=query)
    finally:
        task.cancel()
    assert len(out) == 3
    assert ticks > 10  # a rerank running on the loop thread would have let the ticker run at most once


async def test_empty_nodes_and_missing_query(cross_encoder):
    post = TwoStageRerank(cross_encoder, top_n=3)
    assert post.postprocess_nodes([], query_str="aspirin") == []
    assert await post.apostprocess_nodes([], query_str="aspirin") == []
    node = [NodeWithScore(node=TextNode(text="Aspirin lowers the risk of stroke."), score=0.3)]
    with pytest.raises(MissingQueryError, match="Missing query bundle") as info:
        post.postprocess_nodes(node)
    assert isinstance(info.value, ValueError)  # what LlamaIndex's own rerankers raise
    with pytest.raises(MissingQueryError, match="Missing query bundle"):
        await post.apostprocess_nodes(node)
    with pytest.raises(InvalidQueryError, match="empty"):
        post.postprocess_nodes(node, query_str="   ")


def test_callers_nodes_are_not_mutated_and_retrieval_score_is_kept(scifact_candidates, cross_encoder):
    query, hits = next(iter(scifact_candidates[0].values()))
    nodes = to_nodes(hits[:6])
    before = [n.model_dump() for n in nodes]
    out = TwoStageRerank(cross_encoder, top_n=4, keep_retrieval_score=True).postprocess_nodes(nodes, query_str=query)
    assert [n.model_dump() for n in nodes] == before
    original = {n.node.node_id: n for n in nodes}
    for n in out:
        assert n.node is not original[n.node.node_id].node
        assert n.node.metadata["retrieval_score"] == original[n.node.node_id].score
        assert n.node.text == original[n.node.node_id].node.text


def test_top_n_none_keeps_all_and_bad_top_n_is_rejected(scifact_candidates, cross_encoder):
    query, hits = next(iter(scifact_candidates[0].values()))
    out = TwoStageRerank(cross_encoder, top_n=None).postprocess_nodes(to_nodes(hits[:6]), query_str=query)
    assert sorted(n.node.node_id for n in out) == sorted(h.id for h in hits[:6])
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)
    with pytest.raises(InvalidParameterError, match="top_n"):
        TwoStageRerank(cross_encoder, top_n=0)


def test_default_reranker_is_the_core_cross_encoder(monkeypatch, rerank_model_path):
    monkeypatch.setenv("TWOSTAGE_RERANK_MODEL", rerank_model_path)
    post = TwoStageRerank(top_n=1)
    assert post.model == rerank_model_path
    assert type(post.reranker).__name__ == "CrossEncoderReranker"
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in ["Bananas are yellow.", "Aspirin and stroke."]]
    assert post.postprocess_nodes(nodes, query_str="does aspirin prevent stroke?")[0].node.text == "Aspirin and stroke."


async def test_instrumentation_events_spans_and_callbacks(scifact_candidates, cross_encoder):
    query, hits = next(iter(scifact_candidates[0].values()))
    events = []

    class Collect(BaseEventHandler):
        def handle(self, event, **kwargs):
            if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
                events.append(event)

    debug = LlamaDebugHandler()
    post = TwoStageRerank(cross_encoder, top_n=3, callback_manager=CallbackManager([debug]))
    root = get_dispatcher()
    handler = Collect()
    root.add_event_handler(handler)
    try:
        out = post.postprocess_nodes(to_nodes(hits[:6]), query_str=query)
        aout = await post.apostprocess_nodes(to_nodes(hits[:6]), query_str=query)
    finally:
        root.event_handlers.remove(handler)

    assert [type(e) for e in events] == [ReRankStartEvent, ReRankEndEvent] * 2
    start, end, astart, aend = events
    assert (start.top_n, start.model_name, len(start.nodes)) == (3, cross_encoder.name, 6)
    assert ids_scores(end.nodes) == ids_scores(out) and ids_scores(aend.nodes) == ids_scores(aout)
    assert start.span_id.startswith("TwoStageRerank._postprocess_nodes")
    assert astart.span_id.startswith("TwoStageRerank._apostprocess_nodes")
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 2
    assert pairs[0][0].payload["query_str"] == query


# -- MetadataFilters -> Chroma where ------------------------------------------------------------------------
def mf(key, value, op="=="):
    return MetadataFilter(key=key, value=value, operator=FilterOperator(op))


@pytest.mark.parametrize(
    ("filters", "where"),
    [
        (None, None),
        (MetadataFilters(filters=[]), None),
        (MetadataFilters(filters=[mf("part", "even")]), {"part": {"$eq": "even"}}),
        (MetadataFilters(filters=[mf("n", 3, "!=")]), {"n": {"$ne": 3}}),
        (MetadataFilters(filters=[mf("n", 3, ">")]), {"n": {"$gt": 3}}),
        (MetadataFilters(filters=[mf("n", 3.5, ">=")]), {"n": {"$gte": 3.5}}),
        (MetadataFilters(filters=[mf("n", 3, "<")]), {"n": {"$lt": 3}}),
        (MetadataFilters(filters=[mf("n", 3, "<=")]), {"n": {"$lte": 3}}),
        (MetadataFilters(filters=[mf("part", ["a", "b"], "in")]), {"part": {"$in": ["a", "b"]}}),
        (MetadataFilters(filters=[mf("n", [1, 2], "nin")]), {"n": {"$nin": [1, 2]}}),
        (
            MetadataFilters(filters=[mf("part", "even"), mf("n", 10, ">=")]),
            {"$and": [{"part": {"$eq": "even"}}, {"n": {"$gte": 10}}]},
        ),
        (
            MetadataFilters(
                filters=[
                    mf("part", "odd"),
                    MetadataFilters(filters=[mf("n", 2, "<"), mf("n", 50, ">")], condition=FilterCondition.OR),
                ],
                condition=FilterCondition.AND,
            ),
            {"$and": [{"part": {"$eq": "odd"}}, {"$or": [{"n": {"$lt": 2}}, {"n": {"$gt": 50}}]}]},
        ),
        (  # a one-clause group is unwrapped: Chroma rejects $or with a single clause
            MetadataFilters(filters=[mf("part", "odd")], condition=FilterCondition.OR),
            {"part": {"$eq": "odd"}},
        ),
    ],
)
def test_filters_to_where(filters, where):
    assert filters_to_where(filters) == where


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (MetadataFilters(filters=[mf("part", "a")], condition=FilterCondition.NOT), "condition 'not'"),
        (MetadataFilters(filters=[mf("tags", "a", "contains")]), "operator 'contains'"),
        (MetadataFilters(filters=[mf("title", "aspirin", "text_match")]), "operator 'text_match'"),
        (MetadataFilters(filters=[mf("part", "a", "in")]), "take a list"),
        (MetadataFilters(filters=[mf("part", ["a"], "==")]), "take a list"),
        (MetadataFilters(filters=[mf("part", None)]), "no value"),
        ({"part": "even"}, "MetadataFilters"),
    ],
)
def test_unsupported_filters_raise_a_typed_error(filters, message):
    with pytest.raises(UnsupportedFilterError, match=message) as info:
        filters_to_where(filters)
    assert isinstance(info.value, ValueError)


# -- TwoStageRetriever --------------------------------------------------------------------------------------
def test_hit_to_node_keeps_ids_text_metadata_and_hides_stage_scores():
    hit = Hit(id="d1", text="Aspirin lowers stroke risk.", metadata={"title": "Aspirin"}, score=0.9,
              recall_score=0.4, recall_rank=3, rerank_score=0.9, rerank_rank=1)  # fmt: skip
    node = hit_to_node(hit)
    assert (node.node.node_id, node.node.text, node.score) == ("d1", hit.text, 0.9)
    assert node.node.metadata == {"title": "Aspirin", "recall_score": 0.4, "recall_rank": 3, "rerank_rank": 1}
    assert node.node.get_content(metadata_mode=MetadataMode.EMBED) == f"title: Aspirin\n\n{hit.text}"
    assert "recall" not in node.node.get_content(metadata_mode=MetadataMode.LLM)
    assert hit.metadata == {"title": "Aspirin"}


def test_retriever_reads_a_collection_llamaindex_wrote(li_store, embedder, cross_encoder):
    index, collection, queries = li_store
    query = queries[1]
    retriever = TwoStageRetriever.from_vector_store(  # dense: compared with LlamaIndex's own top 20 below
        index.vector_store, cross_encoder, embed_model=TwoStageEmbedding(embedder), limit=20, top_k=5, recall="dense"
    )
    nodes = retriever.retrieve(query)

    li_nodes = index.as_retriever(similarity_top_k=20).retrieve(query)
    li_by_id = {n.node.node_id: n.node for n in li_nodes}
    # stage 2 reference: LlamaIndex's own top 20, text only (what Chroma stores as the document)
    scores = cross_encoder.score(query, [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in li_nodes])
    expected = sorted(zip(li_by_id, scores, strict=True), key=lambda p: -p[1])[:5]
    assert [n.node.node_id for n in nodes] == [i for i, _ in expected]
    assert [n.score for n in nodes] == pytest.approx([s for _, s in expected], abs=1e-5)

    stored = collection.get(ids=[n.node.node_id for n in nodes], include=["embeddings"])
    vectors = dict(zip(stored["ids"], stored["embeddings"], strict=True))
    q = embedder.embed_query(query)
    for rank, n in enumerate(nodes, start=1):
        original = li_by_id[n.node.node_id]
        assert n.node.text == original.text
        assert {k: n.node.metadata[k] for k in original.metadata} == original.metadata  # the node was restored
        assert "_node_content" not in n.node.metadata
        assert n.node.metadata["rerank_rank"] == rank
        assert n.node.metadata["score_kind"] == "ce_sigmoid"  # n.score is the sigmoid cross-encoder's
        # l2 distances from the LlamaIndex-made collection come back as cosine similarity
        assert n.node.metadata["recall_score"] == pytest.approx(float(np.dot(q, vectors[n.node.node_id])), abs=1e-4)


async def test_retriever_async_equals_sync(li_store, embedder, cross_encoder):
    _, collection, queries = li_store
    pipe = TwoStagePipeline(ChromaRecall(collection, embedding_model=embedder), cross_encoder, limit=10, top_k=3)
    retriever = TwoStageRetriever(pipe)
    assert (retriever.limit, retriever.top_k) == (10, 3)
    sync = retriever.retrieve(queries[2])
    asyn = await retriever.aretrieve(queries[2])
    assert ids_scores(asyn) == ids_scores(sync)
    assert len(sync) == 3


def test_filtered_retrieval_matches_llamaindex_filtered_retrieval(li_store, embedder):
    index, collection, queries = li_store
    filters = MetadataFilters(filters=[mf("part", "even"), mf("n", 10, ">=")])
    recall_only = TwoStagePipeline(ChromaRecall(collection, embedding_model=embedder), None, limit=8, top_k=8)
    nodes = TwoStageRetriever(recall_only, filters=filters).retrieve(queries[0])
    li_nodes = index.as_retriever(similarity_top_k=8, filters=filters).retrieve(queries[0])
    assert len(nodes) == 8
    assert all(n.node.metadata["part"] == "even" and n.node.metadata["n"] >= 10 for n in nodes)
    assert [n.node.node_id for n in nodes] == [n.node.node_id for n in li_nodes]


def test_retriever_rejects_bad_arguments_at_construction(li_store, embedder, cross_encoder):
    _, collection, _ = li_store
    pipe = TwoStagePipeline(ChromaRecall(collection, embedding_model=embedder), None)
    with pytest.raises(UnsupportedFilterError, match="not supported"):
        TwoStageRetriever(pipe, filters=MetadataFilters(filters=[mf("tags", "a", "any")]))
    with pytest.raises(InvalidParameterError, match="top_k"):
        TwoStageRetriever(pipe, limit=3, top_k=5)
    with pytest.raises(InvalidParameterError, match="ChromaVectorStore"):
        TwoStageRetriever.from_vector_store(collection, cross_encoder)


# -- TwoStageEmbedding -------------------------------------------------------------------------------------
async def test_embedding_adapter_returns_the_core_embeddings(embedder):
    emb = TwoStageEmbedding(embedder)
    texts = ["Aspirin lowers the risk of stroke.", "Paris is the capital of France."]
    assert emb.model_name == embedder.name
    assert np.allclose(emb.get_text_embedding_batch(texts), embedder.embed(texts), atol=1e-6)
    assert np.allclose(await emb.aget_query_embedding(texts[0]), embedder.embed_query(texts[0]), atol=1e-6)
    assert np.allclose(await emb.aget_text_embedding_batch(texts), embedder.embed(texts), atol=1e-6)
