"""Each bad input gets a clear typed error, and nothing is half-written."""

from __future__ import annotations

import pytest

from twostage_integrations import (
    ChromaRecall,
    CollectionNotFoundError,
    CrossEncoderReranker,
    Hit,
    InvalidDocumentError,
    InvalidParameterError,
    InvalidQueryError,
    ModelNotFoundError,
    TwoStagePipeline,
)
from twostage_integrations.errors import ModelLoadError

TEXTS = ["Aspirin lowers the risk of a second stroke.", "Vitamin D supports bone density in older adults."]


@pytest.fixture
def recall(tmp_path, embedder):
    r = ChromaRecall("bad-input", path=tmp_path / "db", embedding_model=embedder, progress=False)
    r.add_texts(TEXTS)
    return r


@pytest.mark.parametrize("query", ["", "   \n\t", None, 42])
def test_empty_or_non_string_query(recall, query):
    pipe = TwoStagePipeline(recall)
    with pytest.raises(InvalidQueryError, match="query"):
        pipe.search(query)


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_limit_below_one_or_not_int(recall, limit):
    with pytest.raises(InvalidParameterError, match="limit"):
        TwoStagePipeline(recall).search("aspirin", limit=limit, top_k=1)
    with pytest.raises(InvalidParameterError, match="limit"):
        TwoStagePipeline(recall, limit=limit, top_k=1)


def test_top_k_larger_than_limit(recall):
    with pytest.raises(InvalidParameterError, match=r"top_k \(30\) is larger than limit \(20\)"):
        TwoStagePipeline(recall).search("aspirin", limit=20, top_k=30)
    with pytest.raises(InvalidParameterError, match="--top-k"):
        TwoStagePipeline(recall, limit=5, top_k=6)


def test_missing_collection_names_ingest(tmp_path, embedder):
    r = ChromaRecall("never-ingested", path=tmp_path / "db", embedding_model=embedder)
    with pytest.raises(CollectionNotFoundError, match="twostage ingest"):
        TwoStagePipeline(r).search("aspirin")
    assert "never-ingested" not in [c.name for c in r.client.list_collections()]  # querying creates nothing


def test_invalid_collection_name(tmp_path, embedder):
    with pytest.raises(InvalidParameterError, match="collection name"):
        ChromaRecall("a", path=tmp_path / "db", embedding_model=embedder)


def test_model_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError) as info:
        CrossEncoderReranker(str(missing))
    assert str(missing) in str(info.value) and "TWOSTAGE_RERANK_MODEL" in str(info.value)


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="TWOSTAGE_RERANK_MODEL"):
        CrossEncoderReranker(str(tmp_path / "empty"))


@pytest.mark.parametrize("texts", [[b"bytes"], ["ok", 3], "a bare string", [None], ["   "]])
def test_non_string_texts_write_nothing(recall, texts):
    before = recall.count()
    with pytest.raises(InvalidDocumentError):
        recall.add_texts(texts)
    assert recall.count() == before


@pytest.mark.parametrize(
    "bad", [{"nested": {"a": 1}}, {"when": object()}, {"mixed": [1, "a"]}, {"empty": []}, {"nan": float("nan")}]
)
def test_metadata_chroma_cannot_store_writes_nothing(recall, bad):
    before = recall.count()
    texts = ["A first new passage about insulin.", "A second new passage about statins."]
    with pytest.raises(InvalidDocumentError, match=r"metadatas\[1\]"):
        recall.add_texts(texts, metadatas=[{"ok": 1}, bad])
    assert recall.count() == before  # the valid first item was not written either


def test_mismatched_lengths(recall):
    with pytest.raises(InvalidDocumentError, match="2 ids for 1 texts"):
        recall.add_texts(["one passage about insulin"], ids=["a", "b"])


def test_reranker_rejects_bad_top_k(cross_encoder):
    hits = [Hit(id="1", text="aspirin", recall_rank=1)]
    with pytest.raises(InvalidParameterError):
        cross_encoder.rerank("aspirin", hits, top_k=0)
    with pytest.raises(InvalidQueryError):
        cross_encoder.rerank(" ", hits)


@pytest.mark.parametrize(
    "where", [{"source": {"$bad": 1}}, {"passage": {"$gt": "a"}}, {"source": ["a"]}, {"$and": [{"a": 1}]}, "source"]
)
def test_invalid_filter_is_a_typed_error_in_every_arm(recall, where):
    from twostage_integrations import BM25Recall, HybridRecall

    for arm in (recall, BM25Recall(recall), HybridRecall.from_chroma(recall)):
        with pytest.raises(InvalidParameterError, match="a valid filter looks like"):
            arm.search("aspirin", 2, where=where)
    with pytest.raises(InvalidParameterError, match="where_document"):
        recall.search("aspirin", 2, where_document={"$bad": "x"})
