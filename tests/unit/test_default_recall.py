"""Hybrid is the default stage 1 wherever a default is applied (issue 22): the CLI's --recall, RecallSpec(), the
LangChain and LlamaIndex convenience constructors; dense stays one flag or keyword away. No weights."""

from __future__ import annotations

import inspect

import pytest
from llama_index.vector_stores.chroma import ChromaVectorStore

from twostage_integrations import ChromaRecall, HybridRecall
from twostage_integrations.cli import demo, evaluate, query
from twostage_integrations.errors import InvalidParameterError
from twostage_integrations.langchain import TwoStageRetriever as LCRetriever
from twostage_integrations.llama_index import TwoStageRetriever as LIRetriever
from twostage_integrations.recall import DEFAULT_RECALL, recall_by_kind
from twostage_integrations.spec import PipelineSpec, RecallSpec
from twostage_integrations.testing import FakeEmbedder, FakeReranker

DOCS = ["Aspirin lowers the risk of stroke.", "Paris is the capital of France.", "Statins lower cholesterol."]


def test_the_default_is_hybrid_in_the_spec_and_every_command():
    assert DEFAULT_RECALL == "hybrid" and RecallSpec().kind == "hybrid" and PipelineSpec().recall.kind == "hybrid"
    for command, name in ((query.query, "recall_kind"), (demo.demo, "recall"), (evaluate.eval_command, "recall")):
        assert inspect.signature(command).parameters[name].default == "hybrid", command.__name__


@pytest.fixture
def chroma(tmp_path) -> ChromaRecall:
    recall = ChromaRecall("defaults", path=tmp_path / "db", embedding_model=FakeEmbedder())
    recall.add_texts(DOCS, ids=["a", "p", "s"])
    return recall


def test_langchain_constructors_default_to_hybrid(chroma, tmp_path):
    def build(**kwargs):
        return LCRetriever.from_collection(
            "defaults", path=tmp_path / "db", embedding_model=FakeEmbedder(), reranker=FakeReranker(), **kwargs
        )

    hybrid = build(top_k=2)
    assert isinstance(hybrid.pipeline.recall, HybridRecall)
    assert hybrid.invoke("aspirin stroke")[0].id == "a"
    assert isinstance(build(recall="dense", top_k=2).pipeline.recall, ChromaRecall)
    with pytest.raises(InvalidParameterError, match="recall= or pipeline="):
        LCRetriever.from_collection("defaults", path=tmp_path / "db", recall="dense", preset="exact")
    with pytest.raises(InvalidParameterError, match="recall must be one of"):
        build(recall="sparse")


def test_llama_index_from_vector_store_defaults_to_hybrid(chroma):
    store = ChromaVectorStore(chroma_collection=chroma.collection)
    retriever = LIRetriever.from_vector_store(store, FakeReranker(), embed_model=FakeEmbedder(), top_k=2)
    assert isinstance(retriever.pipeline.recall, HybridRecall)
    assert retriever.retrieve("aspirin stroke")[0].node.node_id == "a"
    dense = LIRetriever.from_vector_store(store, FakeReranker(), embed_model=FakeEmbedder(), recall="dense")
    assert isinstance(dense.pipeline.recall, ChromaRecall)


def test_recall_by_kind_still_builds_dense(chroma):
    assert recall_by_kind("dense", chroma) is chroma
