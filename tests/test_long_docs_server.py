"""`serve` with windows on the real SciFact cross-encoder: the official Cohere SDK (v2, with
``max_tokens_per_doc``), our CohereReranker and LlamaIndex's TEI postprocessor parse answers that carry the
extra ``evidence`` field and get the windowed ranking the model gives when called directly. langchain-cohere and
LlamaIndex's CohereRerank are tested when installed. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import importlib.util

import cohere
import httpx
import pytest
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

from twostage_integrations import CohereReranker, CrossEncoderReranker, Hit
from twostage_integrations.server import create_app, serve_in_thread

KEY = "windows-test-key-77a1"


@pytest.fixture(scope="module")
def windowed(rerank_model_path):
    return CrossEncoderReranker(rerank_model_path, long_docs="max")


@pytest.fixture(scope="module")
def served(windowed):
    with serve_in_thread(create_app(windowed, api_key=KEY)) as url:
        yield url


@pytest.fixture(scope="module")
def case(scifact_subset):
    """A test query and 8 whole SciFact abstracts (most longer than the model's 192 tokens)."""
    doc_ids, texts, _, queries, qrels = scifact_subset
    position = {d: i for i, d in enumerate(doc_ids)}
    qid = next(iter(queries))
    relevant = [texts[position[d]] for d in qrels[qid] if d in position]
    return queries[qid], relevant + [texts[100 + j] for j in range(8 - len(relevant))]


def _local(windowed, query, docs):
    return windowed.rerank(query, [Hit(id=str(i), text=d) for i, d in enumerate(docs)])


def test_cohere_sdk_ignores_evidence_and_gets_the_windowed_ranking(served, windowed, case):
    query, docs = case
    want = _local(windowed, query, docs)
    assert any(h.metadata["evidence"]["end"] < len(h.text) or h.metadata["evidence"]["start"] > 0 for h in want)
    client = cohere.ClientV2(api_key=KEY, base_url=served, max_retries=0, timeout=300)
    got = client.rerank(model="m", query=query, documents=docs, top_n=5, max_tokens_per_doc=4096)
    assert [r.index for r in got.results] == [int(h.id) for h in want[:5]]
    assert [r.relevance_score for r in got.results] == pytest.approx([h.rerank_score for h in want[:5]], abs=1e-5)
    raw = httpx.post(
        f"{served}/v2/rerank",
        json={"query": query, "documents": docs, "top_n": 5},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=300,
    ).json()
    spans = [(r["evidence"]["start"], r["evidence"]["end"]) for r in raw["results"]]
    assert spans == [(h.metadata["evidence"]["start"], h.metadata["evidence"]["end"]) for h in want[:5]]
    ours = CohereReranker(api_key=KEY, base_url=served, timeout=300).rerank(
        query, [Hit(id=str(i), text=d) for i, d in enumerate(docs)]
    )
    assert [h.id for h in ours[:5]] == [h.id for h in want[:5]]


def test_llamaindex_tei_postprocessor_ignores_evidence(served, windowed, case):
    query, docs = case
    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(docs)]
    out = TextEmbeddingInference(base_url=served, top_n=3, auth_token=f"Bearer {KEY}", timeout=300).postprocess_nodes(
        nodes, query_str=query
    )
    assert [n.node.id_ for n in out] == [h.id for h in _local(windowed, query, docs)[:3]]


@pytest.mark.skipif(importlib.util.find_spec("langchain_cohere") is None, reason="langchain-cohere not installed")
def test_langchain_cohere_ignores_evidence(served, windowed, case):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    query, docs = case
    client = cohere.ClientV2(api_key=KEY, base_url=served, max_retries=0, timeout=300)
    reranker = CohereRerank(client=client, model="m", top_n=3, cohere_api_key=KEY)
    out = reranker.compress_documents([Document(page_content=d, id=str(i)) for i, d in enumerate(docs)], query)
    assert [d.page_content for d in out] == [h.text for h in _local(windowed, query, docs)[:3]]
