"""Evidence spans after the adapters' conversions and through `serve`, with the tiny randomly initialised BERT of
test_long_docs.py (no weights); spec options and CLI refusals. Real clients on the real model:
tests/test_long_docs_server.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from langchain_core.documents import Document
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from test_long_docs import QUERY, _reranker
from typer.testing import CliRunner

from twostage_integrations import Hit
from twostage_integrations.cli import app
from twostage_integrations.errors import PipelineSpecError
from twostage_integrations.langchain import TwoStageCompressor, hit_to_document
from twostage_integrations.llama_index import TwoStageRerank, hit_to_node
from twostage_integrations.server import create_app
from twostage_integrations.spec import PipelineSpec, StageSpec

LONG = "bananas are yellow . " * 8 + "aspirin lowers the risk of stroke ." + " cells divide in tissue ." * 8
TEXTS = [LONG, "cells divide", "the risk of stroke " * 9]


def _check(text: str, evidence: dict) -> None:
    assert 0 <= evidence["start"] < evidence["end"] <= len(text)
    assert set(evidence) == {"start", "end", "score"}


def test_langchain_documents_carry_valid_evidence(monkeypatch):
    ce = _reranker(monkeypatch, long_docs="max")
    docs = [Document(page_content=t, metadata={"n": i}, id=str(i)) for i, t in enumerate(TEXTS)]
    out = TwoStageCompressor(reranker=ce, top_n=3).compress_documents(docs, QUERY)
    assert len(out) == 3 and all("evidence" not in d.metadata for d in docs)  # inputs untouched
    for doc in out:
        _check(doc.page_content, doc.metadata["evidence"])
        assert doc.metadata["evidence"]["score"] == pytest.approx(doc.metadata["rerank_score"])  # max: best window
    hit = ce.rerank(QUERY, [Hit(id="a", text=LONG)])[0]
    assert hit_to_document(hit).metadata["evidence"] == hit.metadata["evidence"]


def test_llama_index_nodes_carry_evidence_in_their_own_text(monkeypatch):
    ce = _reranker(monkeypatch, long_docs="max")
    nodes = [NodeWithScore(node=TextNode(text=t, metadata={"title": "aspirin " * 3}), score=0.5) for t in TEXTS]
    post = TwoStageRerank(ce, top_n=3, metadata_mode=MetadataMode.EMBED)  # the reranker reads "title: ...\n\ntext"
    out = post.postprocess_nodes(nodes, QueryBundle(QUERY))
    for n in out:
        _check(n.node.text, n.node.metadata["evidence"])
        assert "evidence" in n.node.excluded_llm_metadata_keys and "evidence" in n.node.excluded_embed_metadata_keys
        assert "evidence" not in n.node.get_content(metadata_mode=MetadataMode.LLM)
    # the span in the node's own text is the window the reranker scored, moved past the metadata header
    content = nodes[0].node.get_content(metadata_mode=MetadataMode.EMBED)
    first = next(n for n in out if n.node.text == LONG)
    ev = first.node.metadata["evidence"]
    assert LONG[ev["start"] : ev["end"]] in content
    hit = ce.rerank(QUERY, [Hit(id="a", text=LONG)])[0]
    node = hit_to_node(hit).node
    assert node.metadata["evidence"] == hit.metadata["evidence"] and "evidence" in node.excluded_llm_metadata_keys


def test_serve_returns_evidence_when_windows_are_asked_for(monkeypatch):
    first = TestClient(create_app(_reranker(monkeypatch)))
    windowed = TestClient(create_app(_reranker(monkeypatch, long_docs="max")))
    with first, windowed:
        plain = first.post("/v2/rerank", json={"query": QUERY, "documents": TEXTS}).json()
        assert all("evidence" not in r for r in plain["results"])  # no windows asked for: the Cohere shape
        asked = first.post("/v2/rerank", json={"query": QUERY, "documents": TEXTS, "max_tokens_per_doc": 40}).json()
        assert "warnings" not in asked["meta"]
        for r in asked["results"]:
            ev = r["evidence"]
            _check(TEXTS[r["index"]], ev)
            assert ev["score"] == pytest.approx(r["relevance_score"])
        assert max(r["evidence"]["end"] for r in asked["results"] if r["index"] == 0) < len(LONG)  # first 40 tokens
        served = windowed.post("/v2/rerank", json={"query": QUERY, "documents": TEXTS}).json()
        assert all("evidence" in r for r in served["results"])
        tei = windowed.post("/rerank", json={"query": QUERY, "texts": TEXTS}).json()
        assert all("evidence" in r for r in tei)
        cut = windowed.post("/rerank", json={"query": QUERY, "texts": TEXTS, "truncate": True}).json()
        assert all("evidence" not in r for r in cut)
        tei_first = first.post("/rerank", json={"query": QUERY, "texts": TEXTS}).json()
        assert {r["index"]: r["score"] for r in cut} == pytest.approx({r["index"]: r["score"] for r in tei_first})


def test_hosted_models_refuse_windows():
    from twostage_integrations.errors import InvalidParameterError
    from twostage_integrations.rerank import make_reranker

    for model in ("rerank-v3.5", "rerankers:/m:cross-encoder"):
        with pytest.raises(InvalidParameterError, match=r"\(long_docs\) applies to (local|our) cross-encoders only"):
            make_reranker(model, long_docs="max")


def test_spec_reads_and_writes_long_docs():
    spec = PipelineSpec.parse("hybrid:50 > default@backend=onnx-int8,long_docs=max,window=100,stride=60 > top_k=5")
    assert spec.stages[0].options == {"backend": "onnx-int8", "long_docs": "max", "window": 100, "stride": 60}
    assert PipelineSpec.parse(str(spec)) == spec and PipelineSpec.from_toml(spec.to_toml()) == spec
    with pytest.raises(PipelineSpecError, match="long_docs must be one of"):
        PipelineSpec.parse("dense:20 > default@long_docs=sliding")
    with pytest.raises(PipelineSpecError, match="stride must be"):
        StageSpec(long_docs="max", stride=0)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--long-docs", "sliding"], "--long-docs must be one of first, max, top2mean"),
        (["--pipeline", "dense:5 > default@long_docs=max,stride=0 > top_k=1"], "stride must be"),
    ],
)
def test_cli_refuses_bad_long_docs_in_one_line(args, words, tmp_path):
    result = CliRunner().invoke(app, ["query", "aspirin", "-c", "xyz", "--db", str(tmp_path / "db"), *args])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and words in errors[0], result.output
