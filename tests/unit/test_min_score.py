"""``min_score`` in every entry point: fewer hits, possibly none, and out-of-range values refused."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from twostage_integrations import TwoStagePipeline
from twostage_integrations.errors import InvalidParameterError, PipelineSpecError
from twostage_integrations.scores import check_min_score
from twostage_integrations.server import create_app
from twostage_integrations.spec import PipelineSpec
from twostage_integrations.testing import FakeReranker

TEXTS = ["aspirin prevents stroke", "aspirin thins the blood", "bananas are yellow", "stroke risk and aspirin dose"]
QUERY = "does aspirin prevent stroke"  # FakeReranker: share of the query's words in the passage, 0..1


@pytest.fixture
def pipe(fake_recall):
    fake_recall.add_texts(TEXTS, ids=["a", "b", "c", "d"])
    return TwoStagePipeline(fake_recall, FakeReranker(), limit=4, top_k=4)


def test_check_min_score_follows_the_kind_range():
    assert check_min_score(0.5, "ce_calibrated") == 0.5
    assert check_min_score(-3, "ce_logit") == -3.0  # unbounded kinds take any number
    for bad, kind in ((1.5, "ce_calibrated"), (-0.1, "ce_sigmoid"), (-2, "cosine"), (-1, "bm25")):
        with pytest.raises(InvalidParameterError, match=f"outside the range of {kind}"):
            check_min_score(bad, kind)
    for bad in (float("nan"), float("inf"), "0.5", True):
        with pytest.raises(InvalidParameterError, match="finite number"):
            check_min_score(bad)


def test_pipeline_returns_fewer_hits_then_none(pipe):
    everything = pipe.search(QUERY)
    some = pipe.search(QUERY, min_score=0.5)
    assert 0 < len(some) < len(everything) and all(h.score >= 0.5 for h in some)
    assert [h.id for h in some] == [h.id for h in everything if h.score >= 0.5]
    assert pipe.search(QUERY, min_score=1.0) == []
    strict = TwoStagePipeline(pipe.recall, pipe.reranker, limit=4, top_k=4, min_score=1.0)
    assert strict.search(QUERY) == [] and asyncio.run(strict.asearch(QUERY)) == []
    assert len(strict.search(QUERY, min_score=0.25)) > 0  # a call's own threshold wins
    with pytest.raises(InvalidParameterError, match="outside the range of fake_overlap"):
        pipe.search(QUERY, min_score=2)
    with pytest.raises(InvalidParameterError, match="finite number"):
        TwoStagePipeline(pipe.recall, pipe.reranker, min_score=float("nan"))


def test_spec_min_score_round_trips_in_every_form_and_reaches_the_pipeline(pipe):
    spec = PipelineSpec.parse("dense:4 > none > top_k=3 > min_score=0.25")
    assert spec.min_score == 0.25 and "min_score=0.25" in str(spec)
    assert PipelineSpec.parse(str(spec)) == spec
    assert PipelineSpec.from_dict(spec.to_dict()) == spec
    assert PipelineSpec.from_toml(spec.to_toml()) == spec
    assert PipelineSpec.parse("dense:40 > none > min_score=-2.5").min_score == -2.5  # a logit threshold
    for bad in ("dense:40 > none > min_score=high", "dense:40 > none > min_score=0.1 > min_score=0.2"):
        with pytest.raises(PipelineSpecError):
            PipelineSpec.parse(bad)
    with pytest.raises(PipelineSpecError, match="min_score must be a number"):
        PipelineSpec.from_dict({"recall": {"kind": "dense"}, "stages": [], "min_score": "x"})
    built = TwoStagePipeline.from_spec("dense:4 > none > top_k=4 > min_score=0.99", pipe.recall)
    assert built.min_score == 0.99 and built.search(QUERY) == []  # cosine scores of the fake embedder stay below


def test_langchain_retriever_and_compressor(pipe):
    from langchain_core.documents import Document

    from twostage_integrations.langchain import TwoStageCompressor, TwoStageRetriever

    retriever = TwoStageRetriever(pipeline=pipe, min_score=0.5)
    docs = retriever.invoke(QUERY)
    assert 0 < len(docs) < 4 and all(d.metadata["relevance_score"] >= 0.5 for d in docs)
    assert retriever.invoke(QUERY, min_score=1.0) == []
    assert asyncio.run(retriever.ainvoke(QUERY, min_score=1.0)) == []
    compressor = TwoStageCompressor(FakeReranker(), top_n=4, min_score=0.5)
    kept = compressor.compress_documents([Document(page_content=t) for t in TEXTS], QUERY)
    assert 0 < len(kept) < 4
    strict = TwoStageCompressor(FakeReranker(), min_score=1.0)
    assert strict.compress_documents([Document(page_content="x")], QUERY) == []
    with pytest.raises(InvalidParameterError, match="outside the range"):
        TwoStageCompressor(FakeReranker(), min_score=3).compress_documents([Document(page_content="x")], QUERY)


def test_llama_index_postprocessor_and_retriever(pipe):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from twostage_integrations.llama_index import TwoStageRerank, TwoStageRetriever

    nodes = [NodeWithScore(node=TextNode(text=t), score=0.1) for t in TEXTS]
    rerank = TwoStageRerank(FakeReranker(), top_n=4, min_score=0.5)
    kept = rerank.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert 0 < len(kept) < 4 and all(n.score >= 0.5 for n in kept)
    assert TwoStageRerank.from_dict(rerank.to_dict()).min_score == 0.5
    none = TwoStageRerank(FakeReranker(), min_score=1.0).postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert none == []
    assert TwoStageRetriever(pipe, min_score=1.0).retrieve(QUERY) == []
    assert 0 < len(TwoStageRetriever(pipe, min_score=0.5).retrieve(QUERY)) < 4
    with pytest.raises(InvalidParameterError, match="outside the range"):
        TwoStageRerank(FakeReranker(), min_score=-1).postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))


def test_serve_min_score_extension():
    body = {"query": QUERY, "documents": TEXTS, "top_n": 4}
    with TestClient(create_app(FakeReranker())) as http:
        everything = http.post("/v2/rerank", json=body).json()["results"]
        some = http.post("/v2/rerank", json={**body, "min_score": 0.5}).json()["results"]
        none = http.post("/v2/rerank", json={**body, "min_score": 1.0})
        v1 = http.post("/v1/rerank", json={**body, "min_score": 0.5}).json()["results"]
        bad = http.post("/v2/rerank", json={**body, "min_score": 7})
        not_a_number = http.post("/v2/rerank", json={**body, "min_score": "high"})
    assert len(everything) == 4 and 0 < len(some) < 4 and len(v1) == len(some)
    assert all(r["relevance_score"] >= 0.5 for r in some)
    assert none.status_code == 200 and none.json()["results"] == []
    # valid by the schema (which cannot know the served kind): answered, with a warning saying why nothing passed
    assert bad.status_code == 200 and bad.json()["results"] == []
    assert "outside the range of fake_overlap" in bad.json()["meta"]["warnings"][0]
    assert not_a_number.status_code == 400 and "min_score" in not_a_number.text
