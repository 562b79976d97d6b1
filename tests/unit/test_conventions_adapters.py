"""Seams and framework conventions, with the fakes (no model weights): Recall protocol, query-embedding
cache, score_kind, LangChain ``k``, lazy/serialisable compressor and postprocessor."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import pytest

from twostage_integrations import (
    Hit,
    InvalidParameterError,
    ModelNotFoundError,
    Recall,
    TwoStagePipeline,
)
from twostage_integrations.models import DEFAULT_RERANK_MODEL
from twostage_integrations.scores import SCORE_KINDS, cross_encoder_score_kind, hit_score_kind
from twostage_integrations.testing import FakeReranker

DOCS = {
    "a": "Aspirin lowers the risk of a second stroke.",
    "b": "Statins lower LDL cholesterol.",
    "c": "Vitamin D and bone density in older women.",
    "d": "Paris is the capital of France.",
    "e": "Aspirin and statins together after a stroke.",
}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def filled(fake_recall):
    fake_recall.add_texts(list(DOCS.values()), metadatas=[{"n": i} for i in range(len(DOCS))], ids=list(DOCS))
    return fake_recall


def test_the_guard_refuses_weights_even_for_modules_imported_during_the_test(tmp_path, monkeypatch, weights_guard):
    guarded, error = weights_guard
    (tmp_path / "guard_probe_models.py").write_text("class Model:\n    def __init__(self, name):\n        pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(guarded, "guard_probe_models", ("Model",))
    monkeypatch.delitem(sys.modules, "guard_probe_models", raising=False)
    import guard_probe_models

    with pytest.raises(error, match="fast tier"):
        guard_probe_models.Model("weights")


# -- Recall protocol and the query-embedding cache ----------------------------------------------------------
def test_chroma_and_bm25_recall_satisfy_the_protocol(fake_recall):
    from twostage_integrations import BM25Recall

    assert isinstance(fake_recall, Recall)
    assert isinstance(BM25Recall(fake_recall), Recall)


def test_cached_queries_serve_embed_query_inside_the_block_only(fake_embedder):
    with fake_embedder.cached_queries(["aspirin stroke", "bone density", "aspirin stroke"]):
        assert fake_embedder.batches == [2]  # one batch, duplicates embedded once
        vector = fake_embedder.embed_query("aspirin stroke")
        assert fake_embedder.calls == 1  # served from the cache
        fake_embedder.embed_query("not cached")
        assert fake_embedder.calls == 2
    assert (vector == fake_embedder.embed(["aspirin stroke"])[0]).all()
    fake_embedder.embed_query("aspirin stroke")
    assert fake_embedder.calls == 4  # the cache is gone after the block


def test_evaluate_embeds_all_queries_in_one_batch_and_leaves_the_embedder_clean(tmp_path, filled, fake_embedder):
    import json

    from twostage_integrations.evaluation import evaluate

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    queries = {"q1": "aspirin stroke", "q2": "bone density", "q3": "capital of France"}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\nq2\tc\t1\nq3\td\t1\n")
    before = fake_embedder.calls
    report = evaluate(folder, recall=filled, limit=3, top_k=2, progress=False)
    assert fake_embedder.batches[before:] == [3]  # every query in one call, none per search
    assert fake_embedder._query_cache == {}
    # the cached vectors are the ones search() would compute: each judged passage shares its query's words
    assert report.stages[0].metrics["Recall@2"] == 1.0


# -- score_kind ----------------------------------------------------------------------------------------------
def _documented_kinds() -> set[str]:
    table = (REPO / "docs" / "scores.md").read_text()
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.M))


def test_every_score_kind_is_documented_in_one_table():
    assert _documented_kinds() == set(SCORE_KINDS)
    for doc in ("langchain.md", "llamaindex.md"):
        assert "scores.md" in (REPO / "docs" / doc).read_text()


def test_score_kind_of_each_stage(fake_recall, fake_reranker):
    from twostage_integrations import BM25Recall, Cascade, CohereReranker, FusedReranker, HybridRecall

    assert fake_recall.score_kind == "cosine"
    assert BM25Recall(fake_recall).score_kind == "bm25"
    assert HybridRecall.from_chroma(fake_recall).score_kind == "rrf"
    assert CohereReranker(api_key="unit-test-key").score_kind == "cohere"
    assert FusedReranker(fake_reranker, method="minmax").score_kind == "fused_minmax"
    assert Cascade([(fake_reranker, 3), (FusedReranker(fake_reranker), None)]).score_kind == "fused_rrf"
    for kind in ("cosine", "bm25", "rrf", "cohere", "fused_minmax", "fused_rrf", "fake_overlap"):
        assert kind in SCORE_KINDS


class Sigmoid:  # named like torch.nn.Sigmoid: only the class name is read
    pass


class Identity:
    pass


class _StubModel:
    def __init__(self, activation):
        self.activation_fn = activation


class _StubCrossEncoder:
    def __init__(self, activation):
        self.model = _StubModel(activation)


def test_cross_encoder_kind_follows_the_activation():
    assert cross_encoder_score_kind(_StubCrossEncoder(Sigmoid())) == "ce_sigmoid"
    assert cross_encoder_score_kind(_StubCrossEncoder(Identity())) == "ce_logit"
    assert cross_encoder_score_kind(_StubCrossEncoder(None)) == "ce"


def test_fallback_hits_are_labelled_as_recall_scores():
    reranked = Hit(id="a", text="x", rerank_score=0.9, rerank_rank=1)
    fallback = Hit(id="a", text="x", metadata={"rerank_fallback": True}, rerank_score=0.5, rerank_rank=1)
    assert hit_score_kind(reranked, recall_kind="cosine", rerank_kind="cohere") == "cohere"
    assert hit_score_kind(fallback, recall_kind="cosine", rerank_kind="cohere") == "fallback_recall"
    assert hit_score_kind(Hit(id="a", text="x"), recall_kind="cosine", rerank_kind="cohere") == "fallback_recall"
    assert hit_score_kind(Hit(id="a", text="x"), recall_kind="bm25", rerank_kind=None) == "bm25"


# -- LangChain -----------------------------------------------------------------------------------------------
@pytest.fixture
def lc_retriever(filled, fake_reranker):
    from twostage_integrations.langchain import TwoStageRetriever

    return TwoStageRetriever(pipeline=TwoStagePipeline(filled, fake_reranker, limit=5, top_k=3))


def test_k_is_the_number_of_documents(lc_retriever):
    assert len(lc_retriever.invoke("aspirin stroke")) == 3
    assert len(lc_retriever.invoke("aspirin stroke", k=2)) == 2
    assert len(lc_retriever.invoke("aspirin stroke", k=2, top_k=2)) == 2
    with pytest.raises(InvalidParameterError, match="k=2 and top_k=4"):
        lc_retriever.invoke("aspirin stroke", k=2, top_k=4)
    with pytest.raises(InvalidParameterError, match="k must be"):
        lc_retriever.invoke("aspirin stroke", k=0)


async def test_k_async(lc_retriever):
    assert len(await lc_retriever.ainvoke("aspirin stroke", k=1)) == 1
    with pytest.raises(InvalidParameterError):
        await lc_retriever.ainvoke("aspirin stroke", k=1, top_k=2)


def test_documents_name_their_score_kind(lc_retriever, filled):
    from twostage_integrations.langchain import TwoStageRetriever

    docs = lc_retriever.invoke("aspirin stroke")
    assert {d.metadata["score_kind"] for d in docs} == {"fake_overlap"}
    assert docs[0].metadata["relevance_score"] == docs[0].metadata["rerank_score"]
    recall_only = TwoStageRetriever(pipeline=TwoStagePipeline(filled, None, limit=5, top_k=3))
    assert {d.metadata["score_kind"] for d in recall_only.invoke("aspirin stroke")} == {"cosine"}


def test_compressor_is_cheap_to_build_copy_and_serialise(monkeypatch, tmp_path):
    from twostage_integrations.langchain import TwoStageCompressor

    monkeypatch.delenv("TWOSTAGE_RERANK_MODEL", raising=False)
    compressor = TwoStageCompressor()  # would load weights (and trip the guard) if it were eager
    assert compressor.model_dump() == {"model": DEFAULT_RERANK_MODEL, "top_n": 3}
    rebuilt = TwoStageCompressor(**compressor.model_copy(update={"top_n": 5}).model_dump())
    assert (rebuilt.model, rebuilt.top_n) == (DEFAULT_RERANK_MODEL, 5)
    assert pickle.loads(pickle.dumps(rebuilt)).model_dump() == rebuilt.model_dump()
    assert TwoStageCompressor(reranker=str(tmp_path)).model == str(tmp_path)
    with pytest.raises(ModelNotFoundError):
        TwoStageCompressor(model=str(tmp_path / "missing-model"))
    with pytest.raises(InvalidParameterError, match="pass one"):
        TwoStageCompressor(reranker=str(tmp_path), model="other/model")
    with pytest.raises(InvalidParameterError, match="pass one"):  # the same rule as TwoStageRerank
        TwoStageCompressor(reranker=FakeReranker(), model="other/model")


def test_compressor_with_a_reranker_object(fake_reranker):
    from langchain_core.documents import Document

    from twostage_integrations.langchain import TwoStageCompressor

    compressor = TwoStageCompressor(reranker=fake_reranker, top_n=2)
    assert compressor.model == fake_reranker.name and compressor.reranker is fake_reranker
    docs = [Document(page_content=t, id=k) for k, t in DOCS.items()]
    out = compressor.compress_documents(docs, "aspirin stroke")
    assert [d.id for d in out] == ["a", "e"]
    assert {d.metadata["score_kind"] for d in out} == {"fake_overlap"}


# -- LlamaIndex ----------------------------------------------------------------------------------------------
def test_rerank_postprocessor_takes_model_and_round_trips(monkeypatch, tmp_path):
    from twostage_integrations.llama_index import TwoStageRerank

    monkeypatch.delenv("TWOSTAGE_RERANK_MODEL", raising=False)
    post = TwoStageRerank(model=str(tmp_path), top_n=4)  # an existing folder: named now, loaded on first use
    data = post.to_dict()
    assert data["model"] == str(tmp_path) and data["top_n"] == 4 and data["class_name"] == "TwoStageRerank"
    again = TwoStageRerank.from_dict(data)
    assert (again.model, again.top_n) == (str(tmp_path), 4)
    assert TwoStageRerank().model == DEFAULT_RERANK_MODEL and TwoStageRerank().top_n == 5
    with pytest.raises(ModelNotFoundError):
        TwoStageRerank(model=str(tmp_path / "missing-model"))
    with pytest.raises(InvalidParameterError, match="pass one"):
        TwoStageRerank(FakeReranker(), model="other/model")


def test_rerank_postprocessor_labels_scores(fake_reranker):
    from llama_index.core.schema import NodeWithScore, TextNode

    from twostage_integrations.llama_index import TwoStageRerank

    nodes = [NodeWithScore(node=TextNode(id_=k, text=t), score=0.1) for k, t in DOCS.items()]
    out = TwoStageRerank(fake_reranker, top_n=2).postprocess_nodes(nodes, query_str="aspirin stroke")
    assert [n.node.node_id for n in out] == ["a", "e"]
    assert all(n.node.metadata["score_kind"] == "fake_overlap" for n in out)
    assert all("score_kind" not in n.node.metadata and not n.node.excluded_llm_metadata_keys for n in nodes)
    assert "score_kind" not in out[0].node.get_content(metadata_mode="llm")


def test_llama_retriever_labels_scores(filled, fake_reranker):
    from twostage_integrations.llama_index import TwoStageRetriever

    nodes = TwoStageRetriever(TwoStagePipeline(filled, fake_reranker, limit=5, top_k=2)).retrieve("aspirin stroke")
    assert [n.node.metadata["score_kind"] for n in nodes] == ["fake_overlap", "fake_overlap"]


def test_foreign_embedder_is_a_proper_base_embedder():
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from twostage_integrations.embeddings import BaseEmbedder
    from twostage_integrations.langchain import _LangChainEmbedder

    emb = _LangChainEmbedder(DeterministicFakeEmbedding(size=16))
    assert isinstance(emb, BaseEmbedder) and emb.name == "langchain:DeterministicFakeEmbedding"
    assert emb.dimension == 16 and emb.batch_size == 64
    with emb.cached_queries(["q"]):
        assert emb.embed_query("q").shape == (16,)
