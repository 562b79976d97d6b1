"""CohereReranker against a scriptable loopback server: batching, retries, timeouts, fallback, keys.

The official SDK does the HTTP; the server (tests/hosted_fakes.py) only answers in Cohere's shape (or misbehaves
on cue).
Quality against the real cross-encoder behind ``twostage serve`` is in test_server.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import traceback

import pytest
from hosted_fakes import FaultServer, expected_order, fake_score, make_hits

from twostage_integrations import CohereReranker, CrossEncoderReranker
from twostage_integrations.errors import APIKeyError, InvalidParameterError, ModelLoadError, RerankAPIError
from twostage_integrations.rerank import make_reranker

KEY = "test-key-6f1c2d"  # never a real key; only ever sent to 127.0.0.1


@pytest.fixture(scope="module")
def fault():
    server = FaultServer()
    yield server
    server.close()


@pytest.fixture
def server(fault, monkeypatch):
    fault.reset()
    for env in ("CO_API_KEY", "COHERE_API_KEY", "TWOSTAGE_COHERE_BASE_URL", "CO_API_URL", "TWOSTAGE_RERANK_MODEL"):
        monkeypatch.delenv(env, raising=False)
    return fault


def reranker(server, **kwargs) -> CohereReranker:
    kwargs = {"api_key": KEY, "base_url": server.url, "backoff": 0.01, "max_backoff": 2.0, **kwargs}
    return CohereReranker(**kwargs)


# -- keys, model names, configuration ------------------------------------------------------------------
def test_missing_key_fails_before_any_request(server):
    with pytest.raises(APIKeyError, match="CO_API_KEY"):
        CohereReranker(base_url=server.url)
    with pytest.raises(APIKeyError):
        make_reranker("rerank-v3.5", base_url=server.url)
    with pytest.raises(APIKeyError):
        CohereReranker(api_key="  ", base_url=server.url)
    assert server.requests == []


def test_key_comes_from_co_api_key_then_cohere_api_key(server, monkeypatch):
    monkeypatch.setenv("COHERE_API_KEY", "from-cohere-api-key")
    reranker(server, api_key=None).score("q", ["a"])
    monkeypatch.setenv("CO_API_KEY", "from-co-api-key")
    reranker(server, api_key=None).score("q", ["a"])
    assert [r["auth"] for r in server.requests] == ["Bearer from-cohere-api-key", "Bearer from-co-api-key"]


def test_make_reranker_picks_cohere_by_name_and_base_url_from_env(server, monkeypatch):
    monkeypatch.setenv("TWOSTAGE_COHERE_BASE_URL", server.url)
    monkeypatch.setenv("CO_API_KEY", KEY)
    for name, sent in [
        ("rerank-v3.5", "rerank-v3.5"),
        ("rerank-multilingual-v3.0", "rerank-multilingual-v3.0"),
        ("cohere:my-finetuned-reranker", "my-finetuned-reranker"),
    ]:
        co = make_reranker(name, max_tokens_per_doc=128)
        assert isinstance(co, CohereReranker)
        co.rerank("query", make_hits(3))
        assert server.requests[-1]["body"]["model"] == sent
        assert server.requests[-1]["body"]["max_tokens_per_doc"] == 128
    monkeypatch.setenv("TWOSTAGE_RERANK_MODEL", "rerank-english-v3.0")  # the env default can be Cohere too
    assert make_reranker().model == "rerank-english-v3.0"


def test_make_reranker_sends_paths_and_hub_ids_to_the_cross_encoder(server, monkeypatch, tmp_path, rerank_model_path):
    assert isinstance(make_reranker(rerank_model_path), CrossEncoderReranker)
    # An existing folder named like a Cohere model is still a local model (here: not a valid one).
    (tmp_path / "rerank-v3.5").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError):
        make_reranker("rerank-v3.5")
    assert server.requests == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 1001},
        {"batch_size": 0},
        {"on_error": "ignore"},
        {"timeout": 0},
        {"max_retries": -1},
        {"model": ""},
    ],
)
def test_bad_settings_are_rejected(server, kwargs):
    with pytest.raises(InvalidParameterError):
        reranker(server, **kwargs)


# -- batching ------------------------------------------------------------------------------------------
def test_long_lists_are_split_into_batches_and_merged(server):
    hits = make_hits(2345)
    out = reranker(server).rerank("query", hits)
    assert [len(r["body"]["documents"]) for r in server.requests] == [1000, 1000, 345]
    assert [h.id for h in out] == expected_order(hits)
    assert all(h.rerank_score == pytest.approx(fake_score(h.text)) for h in out)
    assert [h.rerank_rank for h in out] == list(range(1, 2346))


async def test_async_batches_run_concurrently_within_the_bound(server):
    server.reset(default=("sleep", 0.3))
    hits = make_hits(60)
    out = await reranker(server, batch_size=10, max_concurrency=2).arerank("query", hits, top_k=7)
    assert len(server.requests) == 6
    assert server.max_in_flight == 2
    assert [h.id for h in out] == expected_order(hits)[:7]


# -- retries ---------------------------------------------------------------------------------------------
def test_429_waits_as_retry_after_asks_then_succeeds(server, caplog):
    server.reset(("status", 429, "rate limited", {"Retry-After": "1"}))
    with caplog.at_level(logging.WARNING):
        out = reranker(server).rerank("query", make_hits(5))
    assert len(server.requests) == 2
    assert server.requests[1]["t"] - server.requests[0]["t"] >= 0.95
    assert "Retry-After" in caplog.text and "HTTP 429" in caplog.text
    assert [h.id for h in out] == expected_order(make_hits(5))


def test_5xx_is_retried_with_backoff_then_succeeds(server):
    server.reset(("status", 500, "boom", {}), ("status", 503, "busy", {}))
    out = reranker(server).rerank("query", make_hits(5))
    assert len(server.requests) == 3
    assert out[0].rerank_rank == 1


def test_retries_are_bounded_then_raise_a_clear_error(server):
    server.reset(default=("status", 500, "internal failure", {}))
    with pytest.raises(RerankAPIError, match="after 3 attempts: HTTP 500: internal failure") as info:
        reranker(server, max_retries=2).rerank("query", make_hits(5))
    assert info.value.status_code == 500 and info.value.attempts == 3
    assert len(server.requests) == 3


def test_retry_after_longer_than_max_backoff_gives_up_at_once(server):
    server.reset(default=("status", 429, "quota", {"Retry-After": "120"}))
    with pytest.raises(RerankAPIError, match="retry after 120 s"):
        reranker(server, max_backoff=5).rerank("query", make_hits(5))
    assert len(server.requests) == 1


def test_slow_answers_time_out_and_are_retried_a_bounded_number_of_times(server):
    # The server would answer correctly after 2 s; only a working per-request timeout turns that into an error.
    server.reset(default=("sleep", 2.0))
    with pytest.raises(RerankAPIError, match="timeout=0.3 s") as info:
        reranker(server, timeout=0.3, max_retries=1).rerank("query", make_hits(5))
    assert info.value.attempts == 2
    assert server.settled_count(2) == 2


def test_malformed_json_is_retried_then_raises(server):
    server.reset(("raw", 200, b'{"results": [{"index": 0,'))
    assert len(reranker(server).rerank("query", make_hits(3))) == 3  # retried once, then fine
    server.reset(default=("raw", 200, b"<html>proxy error</html>"))
    with pytest.raises(RerankAPIError, match="malformed response"):
        reranker(server, max_retries=1).rerank("query", make_hits(3))
    assert len(server.requests) == 2


def test_answers_that_do_not_score_each_document_once_are_malformed(server):
    bad = json.dumps({"results": [{"index": 0, "relevance_score": 0.5}, {"index": 7, "relevance_score": 0.1}]})
    server.reset(default=("raw", 200, bad.encode()))
    with pytest.raises(RerankAPIError, match="index 7"):
        reranker(server, max_retries=0).rerank("query", make_hits(2))


def test_client_errors_are_not_retried(server):
    server.reset(default=("status", 400, "model 'rerank-v9' not found", {}))
    with pytest.raises(RerankAPIError, match="rerank-v9' not found") as info:
        reranker(server).rerank("query", make_hits(3))
    assert info.value.status_code == 400
    assert len(server.requests) == 1


def test_unreachable_server_is_retried_then_raises():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    co = CohereReranker(api_key=KEY, base_url=f"http://127.0.0.1:{closed_port}", max_retries=1, backoff=0.01)
    with pytest.raises(RerankAPIError, match="connection failed") as info:
        co.rerank("query", make_hits(2))
    assert info.value.attempts == 2


async def test_async_path_retries_too(server):
    server.reset(("status", 429, "slow down", {"Retry-After": "0"}), ("raw", 502, b"bad gateway"))
    out = await reranker(server).arerank("query", make_hits(4))
    assert len(server.requests) == 3
    assert [h.id for h in out] == expected_order(make_hits(4))


# -- fallback ---------------------------------------------------------------------------------------------
def test_fallback_returns_recall_order_marked_not_reranked(server, caplog):
    server.reset(default=("status", 503, "unavailable", {}))
    hits = make_hits(8)
    with caplog.at_level(logging.WARNING):
        out = reranker(server, on_error="fallback", max_retries=1).rerank("query", hits, top_k=5)
    assert [h.id for h in out] == [h.id for h in hits[:5]]
    # The reranker contract holds: finite scores, best first, ranks 1..n, and a marker with the reason.
    assert [h.rerank_rank for h in out] == [1, 2, 3, 4, 5]
    assert [h.rerank_score for h in out] == [h.score for h in out] == [1 / r for r in range(1, 6)]
    assert all(h.metadata["rerank_fallback"] is True and "503" in h.metadata["rerank_fallback_reason"] for h in out)
    assert "not reranked" in caplog.text
    assert len(server.requests) == 2
    assert hits[0].rerank_score is None and "rerank_fallback" not in hits[0].metadata  # inputs untouched


async def test_async_fallback_returns_recall_order(server):
    server.reset(default=("sleep", 2.0))
    hits = make_hits(4)
    out = await reranker(server, on_error="fallback", timeout=0.2, max_retries=0).arerank("query", hits)
    assert [h.id for h in out] == [h.id for h in hits]
    assert [h.rerank_rank for h in out] == [1, 2, 3, 4] and all(h.metadata["rerank_fallback"] for h in out)


def test_fallback_keeps_fusion_and_cascade_working(server):
    """What used to break: FusedReranker raised TypeError on None scores; a later cascade stage kept stage-0
    scores."""
    from twostage_integrations import Cascade, FusedReranker

    server.reset(default=("status", 500, "down", {}))
    hits = make_hits(6)
    down = reranker(server, on_error="fallback", max_retries=0)
    fused = FusedReranker(down, weight=0.9).rerank("query", hits, top_k=4)
    assert [h.id for h in fused] == [h.id for h in hits[:4]]  # both orders agree: the input order
    assert all(h.metadata["rerank_fallback"] for h in fused)
    server.reset()
    stage2 = reranker(server)  # healthy: the second stage really reranks what the fallback passed on
    out = Cascade([(reranker(server, on_error="fallback", max_retries=0), 5), (stage2, 3)])
    server.reset(("status", 500, "down", {}))  # only the first stage's request fails
    result = out.rerank("query", hits)
    assert [h.id for h in result] == expected_order(hits[:5])[:3]
    assert [h.rerank_score for h in result] == pytest.approx([fake_score(h.text) for h in result])


# -- the key stays secret ---------------------------------------------------------------------------------
def test_rejected_key_raises_even_with_fallback_and_is_never_shown(server, caplog):
    server.reset(("status", 500, "flaky", {}), default=("echo_key", 401))
    co = reranker(server, on_error="fallback")
    with caplog.at_level(logging.DEBUG), pytest.raises(APIKeyError, match="rejected the API key") as info:
        co.rerank("query", make_hits(3))
    assert len(server.requests) == 2  # the 500 was retried, the 401 was not
    assert "bad token Bearer ***" in str(info.value)  # the server echoed it; we masked it
    shown = [str(info.value), repr(co), caplog.text, "".join(traceback.format_exception(info.value))]
    assert all(KEY not in text for text in shown)


def test_key_is_masked_in_retry_logs(server, caplog):
    server.reset(default=("echo_key", 503))
    with caplog.at_level(logging.DEBUG), pytest.raises(RerankAPIError) as info:
        reranker(server, max_retries=2).rerank("query", make_hits(3))
    assert caplog.text.count("retry") == 2
    assert KEY not in caplog.text and KEY not in str(info.value)


def test_empty_candidate_list_makes_no_request(server):
    assert reranker(server).rerank("query", []) == []
    assert asyncio.run(reranker(server).arerank("query", [])) == []
    assert server.requests == []


# -- the framework adapters take it like any other reranker ------------------------------------------------
def test_langchain_compressor_with_cohere_by_name_and_with_fallback(server, monkeypatch):
    from langchain_core.documents import Document

    from twostage_integrations.langchain import TwoStageCompressor

    monkeypatch.setenv("CO_API_KEY", KEY)
    monkeypatch.setenv("TWOSTAGE_COHERE_BASE_URL", server.url)
    docs = [Document(page_content=h.text, metadata={"relevance_score": h.recall_score}) for h in make_hits(6)]
    compressor = TwoStageCompressor(reranker="rerank-v3.5", top_n=3)
    out = compressor.compress_documents(docs, "query")
    assert [d.page_content for d in out] == sorted((d.page_content for d in docs), key=lambda t: -fake_score(t))[:3]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([fake_score(d.page_content) for d in out])
    assert server.requests[-1]["body"]["model"] == "rerank-v3.5"

    server.reset(default=("status", 500, "down", {}))
    fallback = TwoStageCompressor(reranker=reranker(server, on_error="fallback", max_retries=0), top_n=3)
    out = fallback.compress_documents(docs, "query")
    assert [d.page_content for d in out] == [d.page_content for d in docs[:3]]
    assert [d.metadata["rerank_score"] for d in out] == [1.0, 0.5, pytest.approx(1 / 3)]


async def test_llama_index_postprocessor_with_cohere(server):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from twostage_integrations.llama_index import TwoStageRerank

    nodes = [NodeWithScore(node=TextNode(text=h.text, id_=h.id), score=h.recall_score) for h in make_hits(6)]
    post = TwoStageRerank(reranker=reranker(server), top_n=4)
    out = await post.apostprocess_nodes(nodes, query_bundle=QueryBundle("query"))
    assert [n.node.node_id for n in out] == expected_order(make_hits(6))[:4]
    assert [n.score for n in out] == pytest.approx([fake_score(n.node.text) for n in out])
