"""VoyageReranker against a scriptable loopback server: batching, retries, timeouts, fallback, keys, failover.

The official ``voyageai`` SDK does the HTTP (requests on the sync path, aiohttp on the async one); the server
(tests/hosted_fakes.py) only answers in Voyage's shape (or misbehaves on cue). Failover across base URLs is
tested here for Cohere too, since both go through the same HostedReranker.
"""

from __future__ import annotations

import asyncio
import logging
import traceback

import pytest
from hosted_fakes import FaultServer, closed_port_url, expected_order, fake_score, make_hits

from twostage_integrations import CohereReranker, Hit, VoyageReranker
from twostage_integrations.errors import APIKeyError, InvalidParameterError, RerankAPIError
from twostage_integrations.rerank import make_reranker

pytest.importorskip("voyageai")

KEY = "test-voyage-key-91ab"  # never a real key; only ever sent to 127.0.0.1
ENVS = ("VOYAGE_API_KEY", "TWOSTAGE_VOYAGE_BASE_URL", "CO_API_KEY", "COHERE_API_KEY", "TWOSTAGE_COHERE_BASE_URL")


@pytest.fixture(scope="module")
def fault():
    server = FaultServer("voyage")
    yield server
    server.close()


@pytest.fixture
def server(fault, monkeypatch):
    fault.reset()
    for env in ENVS + ("CO_API_URL", "TWOSTAGE_RERANK_MODEL"):
        monkeypatch.delenv(env, raising=False)
    return fault


def reranker(server, **kwargs) -> VoyageReranker:
    kwargs = {"api_key": KEY, "base_url": f"{server.url}/v1", "backoff": 0.01, "max_backoff": 2.0, **kwargs}
    return VoyageReranker(**kwargs)


# -- keys, models, configuration ---------------------------------------------------------------------------
def test_missing_key_fails_at_once_saying_what_to_set(server):
    with pytest.raises(APIKeyError, match="VOYAGE_API_KEY"):
        VoyageReranker(base_url=server.url)
    with pytest.raises(APIKeyError, match="VOYAGE_API_KEY"):
        make_reranker("rerank-2.5", base_url=server.url)
    assert server.requests == []


def test_happy_path_sends_voyage_requests_and_orders_by_score(server, monkeypatch):
    monkeypatch.setenv("VOYAGE_API_KEY", KEY)
    monkeypatch.setenv("TWOSTAGE_VOYAGE_BASE_URL", f"{server.url}/v1/")  # a trailing slash is fine
    hits = make_hits(7)
    out = VoyageReranker().rerank("query", hits, top_k=5)
    assert [h.id for h in out] == expected_order(hits)[:5]
    assert [h.rerank_score for h in out] == pytest.approx([fake_score(h.text) for h in out])
    assert [h.rerank_rank for h in out] == [1, 2, 3, 4, 5]
    (request,) = server.requests
    assert request["path"] == "/v1/rerank" and request["auth"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "rerank-2.5" and request["body"]["truncation"] is True
    assert request["body"]["documents"] == [h.text for h in hits] and request["body"]["query"] == "query"


@pytest.mark.parametrize("model", ["rerank-2.5-lite", "rerank-2", "rerank-2-lite", "rerank-lite-1", "rerank-1"])
def test_each_model_name_reaches_the_api(server, model):
    vo = make_reranker(model, api_key=KEY, base_url=f"{server.url}/v1", truncation=False)
    assert isinstance(vo, VoyageReranker) and vo.score_kind == "voyage"
    vo.score("q", ["a", "b"])
    assert server.requests[-1]["body"]["model"] == model and server.requests[-1]["body"]["truncation"] is False
    assert make_reranker(f"voyage:{model}", api_key=KEY).name == f"voyage:{model}"


BAD_SETTINGS = {  # what is passed -> what the error must say
    "too many documents per request": ({"batch_size": 1001}, "batch_size must be <= 1000"),
    "no documents per request": ({"batch_size": 0}, "batch_size"),
    "token budget over the API's": ({"max_tokens_per_request": 600_001}, "<= 600,000"),
    "rerank-1's budget is smaller": ({"model": "rerank-1", "max_tokens_per_request": 300_001}, "<= 300,000"),
    "count_tokens not a function": ({"count_tokens": 5}, "count_tokens must be a function"),
    "truncation not a bool": ({"truncation": "yes"}, "truncation must be True or False"),
    "unknown on_error": ({"on_error": "ignore"}, "on_error"),
    "zero timeout": ({"timeout": 0}, "timeout must be"),
    "negative retries": ({"max_retries": -1}, "max_retries"),
    "empty model": ({"model": "voyage:"}, "Voyage rerank model name"),
    "empty URL list": ({"base_url": []}, "lists no URL"),
    "only commas": ({"base_url": " , "}, "lists no URL"),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_settings_are_rejected_saying_what_is_wrong(server, case):
    kwargs, message = BAD_SETTINGS[case]
    with pytest.raises(InvalidParameterError, match=message):
        reranker(server, **kwargs)


# -- batching -----------------------------------------------------------------------------------------------
def test_long_lists_are_split_at_1000_documents_and_merged(server):
    hits = make_hits(2345)
    ranked = reranker(server).rerank("query", hits)
    sent = [d for r in server.requests for d in r["body"]["documents"]]
    assert [len(r["body"]["documents"]) for r in server.requests] == [1000, 1000, 345] and sent == [
        h.text for h in hits
    ]
    assert [(h.id, h.rerank_rank) for h in ranked] == [(i, r) for r, i in enumerate(expected_order(hits), start=1)]
    assert [h.rerank_score for h in ranked] == pytest.approx([fake_score(h.text) for h in ranked])


def test_batches_respect_the_token_budget_counted_the_apis_way(server):
    # With one token per character: each document costs len(query) + len(doc) = 5 + 10, so 4 fit in 60.
    hits = [Hit(id=f"h{i}", text=f"doc-{i:06d}") for i in range(10)]
    vo = reranker(server, max_tokens_per_request=60, count_tokens=len)
    out = vo.rerank("query", hits)
    assert [len(r["body"]["documents"]) for r in server.requests] == [4, 4, 2]
    assert [h.id for h in out] == expected_order(hits)


def test_a_document_over_the_budget_on_its_own_goes_alone(server):
    texts = ["short", "x" * 500, "tiny", "small"]
    reranker(server, max_tokens_per_request=100, count_tokens=len).score("q", texts)
    assert [r["body"]["documents"] for r in server.requests] == [["short"], ["x" * 500], ["tiny", "small"]]


def test_the_default_budget_is_the_models_documented_limit(server):
    assert reranker(server).max_tokens_per_request == 600_000
    assert reranker(server, model="rerank-lite-1").max_tokens_per_request == 300_000
    # The default count is UTF-8 bytes, not characters: 175,000 "é" are 350,000 bytes, so two do not fit in one
    # 600K request (counting characters, they would).
    reranker(server, model="rerank-2").score("q", ["é" * 175_000] * 3)
    assert [len(r["body"]["documents"]) for r in server.requests] == [1, 1, 1]


async def test_async_batches_run_in_parallel_up_to_max_concurrency(server):
    server.reset(default=("sleep", 0.3))
    hits = make_hits(45)
    top = await reranker(server, batch_size=15, max_concurrency=3).arerank("query", hits, top_k=4)
    assert [len(r["body"]["documents"]) for r in server.requests] == [15, 15, 15]
    assert server.max_in_flight == 3  # all three at once: the async path really is concurrent
    assert [h.id for h in top] == expected_order(hits)[:4]


# -- faults: (script, then every later answer, settings, requests made, error raised or None) ------------------
FAULTS = {
    "429 waits as Retry-After asks": ([("status", 429, "rate limited", {"Retry-After": "1"})], None, {}, 2, None),
    "5xx retried with backoff": (
        [("status", 500, "boom", {}), ("status", 503, "busy", {}), ("raw", 504, b"gateway timeout")],
        None,
        {},
        4,
        None,
    ),
    "retries bounded": (
        [],
        ("status", 500, "internal failure", {}),
        {"max_retries": 2},
        3,
        "after 3 attempts: HTTP 500",
    ),
    "Retry-After over max_backoff": ([], ("status", 429, "quota", {"Retry-After": "120"}), {}, 1, "retry after 120 s"),
    "timeout": ([], ("sleep", 2.0), {"timeout": 0.3, "max_retries": 1}, 2, "no answer within timeout=0.3 s"),
    "4xx not retried": ([], ("status", 400, "Model rerank-9 is not supported", {}), {}, 1, "rerank-9 is not supported"),
    "non-JSON 2xx": ([], ("raw", 200, b"<html>proxy</html>"), {"max_retries": 1}, 2, "malformed response"),
    "2xx without data": ([("raw", 200, b'{"object": "list"}')], None, {}, 2, None),
}


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("case", list(FAULTS))
def test_faults_are_retried_as_the_rules_say(server, case, path, caplog):
    script, then, settings, requests, error = FAULTS[case]
    server.reset(*script, default=then or ("ok",))
    vo, hits = reranker(server, max_backoff=5, **settings), make_hits(5)
    call = vo.rerank if path == "sync" else lambda q, h: asyncio.run(vo.arerank(q, h))
    with caplog.at_level(logging.WARNING):
        if error is None:
            assert [h.id for h in call("query", hits)] == expected_order(hits)
        else:
            with pytest.raises(RerankAPIError, match=error) as info:
                call("query", hits)
            assert info.value.attempts == requests
            assert f"Voyage rerank (rerank-2.5 at {server.url}/v1)" in str(info.value)
    assert server.settled_count(requests) == requests
    assert caplog.text.count("; retry ") == requests - 1  # each retry is logged; the last failure raises instead
    if case.startswith("429"):
        assert server.requests[1]["t"] - server.requests[0]["t"] >= 0.95 and "as Retry-After asks" in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"index": 0, "relevance_score": 0.5}, {"index": 7, "relevance_score": 0.1}], "usage": {}}',
        b'{"data": [{"index": 0, "relevance_score": 0.5}], "usage": {"total_tokens": 1}}',  # one of two scored
        b'{"data": [{"index": 0, "relevance_score": "high"}, {"index": 1}], "usage": {"total_tokens": 2}}',
    ],
)
def test_answers_that_do_not_score_each_document_once_are_malformed(server, body):
    server.reset(default=("raw", 200, body))
    with pytest.raises(RerankAPIError, match="malformed response"):
        reranker(server, max_retries=0).rerank("query", make_hits(2))


def test_unreachable_server_is_retried_then_raises():
    vo = VoyageReranker(api_key=KEY, base_url=closed_port_url(), max_retries=1, backoff=0.01)
    with pytest.raises(RerankAPIError, match="connection failed") as info:
        vo.rerank("query", make_hits(2))
    assert info.value.attempts == 2


# -- fallback and the key ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["sync", "async"])
def test_fallback_keeps_the_recall_order_and_says_why(server, path):
    server.reset(default=("status", 503, "unavailable", {}))
    hits = make_hits(8)
    vo = reranker(server, on_error="fallback", max_retries=1)
    out = vo.rerank("query", hits, top_k=5) if path == "sync" else asyncio.run(vo.arerank("query", hits, top_k=5))
    assert [(h.id, h.rerank_rank) for h in out] == [(h.id, i) for i, h in enumerate(hits[:5], start=1)]
    assert [h.rerank_score for h in out] == [h.score for h in out] == [1 / r for r in range(1, 6)]
    assert all(h.metadata["rerank_fallback"] and "HTTP 503" in h.metadata["rerank_fallback_reason"] for h in out)
    assert len(server.requests) == 2 and "rerank_fallback" not in hits[0].metadata  # retried once; inputs untouched


def test_a_rejected_key_raises_through_fallback_and_never_shows(server, caplog):
    server.reset(("echo_key", 503), ("echo_key", 503), default=("echo_key", 401))
    vo = reranker(server, on_error="fallback")
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(APIKeyError, match="rejected the API key .*VOYAGE_API_KEY") as info,
    ):
        vo.rerank("query", make_hits(3))
    assert len(server.requests) == 3  # the 503s were retried (their messages logged), the 401 was not
    assert "bad token Bearer ***" in str(info.value) and caplog.text.count("bad token Bearer ***") >= 2
    # The SDK logs the server's error message itself (logger "voyage"); our filter masks the key there too.
    shown = [str(info.value), repr(vo), caplog.text, "".join(traceback.format_exception(info.value))]
    assert all(KEY not in text for text in shown)


# -- failover across base URLs (shared by Cohere and Voyage) -----------------------------------------------
@pytest.fixture(scope="module")
def cohere_fault():
    server = FaultServer("cohere")
    yield server
    server.close()


def failover_cases(server, cohere_fault):
    """(reranker class, a live URL) per backend; Voyage's URL carries the /v1 its SDK expects."""
    cohere_fault.reset()
    return [(VoyageReranker, f"{server.url}/v1", server), (CohereReranker, cohere_fault.url, cohere_fault)]


def test_a_dead_first_url_fails_over_and_the_live_one_is_tried_first_next_time(server, cohere_fault, caplog):
    for cls, live_url, fake in failover_cases(server, cohere_fault):
        dead = closed_port_url()
        rr = cls(api_key=KEY, base_url=[dead, live_url], max_retries=0)
        assert rr.base_urls == (dead, live_url) and rr.base_url == dead
        with caplog.at_level(logging.WARNING):
            out = rr.rerank("query", make_hits(6))
        assert [h.id for h in out] == expected_order(make_hits(6))
        assert len(fake.requests) == 1  # max_retries=0: the refused connection did not use up an attempt
        assert f"trying {live_url}" in caplog.text
        assert rr.base_url == live_url  # remembered: the dead URL is no longer tried first
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            rr.rerank("query", make_hits(3))
        assert "trying" not in caplog.text and len(fake.requests) == 2


async def test_async_failover_and_comma_separated_env(server, cohere_fault, monkeypatch):
    dead = closed_port_url()
    monkeypatch.setenv("TWOSTAGE_VOYAGE_BASE_URL", f"{dead}, {server.url}/v1")
    monkeypatch.setenv("TWOSTAGE_COHERE_BASE_URL", f"{dead},{cohere_fault.url}")
    for cls, live_url, fake in failover_cases(server, cohere_fault):
        rr = cls(api_key=KEY, max_retries=0)
        assert rr.base_urls == (dead, live_url)
        out = await rr.arerank("query", make_hits(5), top_k=2)
        assert [h.id for h in out] == expected_order(make_hits(5))[:2]
        assert len(fake.requests) == 1 and rr.base_url == live_url


def test_a_connection_reset_fails_over_too(server, cohere_fault):
    for cls, live_url, fake in failover_cases(server, cohere_fault):
        other = FaultServer(fake.api)
        try:
            other.reset(default=("drop",))
            base = f"{other.url}/v1" if cls is VoyageReranker else other.url
            rr = cls(api_key=KEY, base_url=(base, live_url), max_retries=0)
            assert len(rr.rerank("query", make_hits(4))) == 4
            assert len(other.requests) == 1 and len(fake.requests) == 1 and rr.base_url == live_url
        finally:
            other.close()


def test_http_errors_do_not_fail_over_they_follow_the_retry_rules(server, cohere_fault):
    for cls, live_url, fake in failover_cases(server, cohere_fault):
        fake.reset(("status", 500, "busy", {}))
        spare = closed_port_url()  # never reached: the first server answered
        rr = cls(api_key=KEY, base_url=[live_url, spare], max_retries=1, backoff=0.01)
        assert len(rr.rerank("query", make_hits(3))) == 3
        assert len(fake.requests) == 2 and rr.base_url == live_url
        fake.reset(default=("status", 400, "bad request", {}))
        with pytest.raises(RerankAPIError, match="bad request"):
            rr.rerank("query", make_hits(3))
        assert len(fake.requests) == 1


def test_a_503_replica_loading_or_draining_fails_over_at_once(server, cohere_fault):
    for cls, live_url, fake in failover_cases(server, cohere_fault):
        other = FaultServer(fake.api)
        try:
            other.reset(default=("status", 503, "loading the model", {"Retry-After": "5"}))
            base = f"{other.url}/v1" if cls is VoyageReranker else other.url
            rr = cls(api_key=KEY, base_url=[base, live_url], max_retries=0)
            assert [h.id for h in rr.rerank("query", make_hits(4))] == expected_order(make_hits(4))
            assert len(other.requests) == 1 and len(fake.requests) == 1 and rr.base_url == live_url
            rr = cls(api_key=KEY, base_url=[base, base], max_retries=0)  # nobody can serve: a typed error
            with pytest.raises(RerankAPIError, match="none of the 2 base URLs answered"):
                rr.rerank("query", make_hits(2))
        finally:
            other.close()


def test_when_no_url_answers_it_is_one_failed_attempt_retried_with_backoff():
    for cls in (VoyageReranker, CohereReranker):
        rr = cls(api_key=KEY, base_url=[closed_port_url(), closed_port_url()], max_retries=1, backoff=0.01)
        with pytest.raises(RerankAPIError, match="none of the 2 base URLs answered") as info:
            rr.rerank("query", make_hits(2))
        assert info.value.attempts == 2


# -- against `twostage serve`'s Voyage route, with the real cross-encoder --------------------------------------
@pytest.fixture(scope="module")
def served_voyage(cross_encoder, scifact_subset):
    """(base URL with /v1, query, 12 SciFact hits: its relevant passages among distractors) of an in-process
    `twostage serve` app with the real cross-encoder and bearer auth."""
    from twostage_integrations.server import create_app, serve_in_thread

    doc_ids, texts, _, queries, qrels = scifact_subset
    qid = next(iter(queries))
    position = {d: i for i, d in enumerate(doc_ids)}
    picked = [position[d] for d in qrels[qid] if d in position] + list(range(200, 212 - len(qrels[qid])))
    hits = [Hit(id=doc_ids[i], text=texts[i][:600]) for i in picked]
    with serve_in_thread(create_app(cross_encoder, api_key=KEY)) as url:
        yield f"{url}/v1", queries[qid], hits


def assert_as_local(got: list[Hit], want: list[Hit]) -> None:
    assert [h.id for h in got] == [h.id for h in want]
    assert [h.rerank_score for h in got] == pytest.approx([h.rerank_score for h in want], abs=1e-4)
    assert [h.rerank_rank for h in got] == list(range(1, len(want) + 1))


def test_voyage_reranker_against_twostage_serve_ranks_as_the_cross_encoder(served_voyage, cross_encoder):
    url, query, hits = served_voyage
    want = cross_encoder.rerank(query, hits, top_k=8)
    assert_as_local(VoyageReranker(model="rerank-2.5", base_url=url, api_key=KEY).rerank(query, hits, top_k=8), want)


async def test_voyage_reranker_async_in_batches_against_twostage_serve(served_voyage, cross_encoder):
    """Three requests of four documents in flight at once; the merged scores rank as one call of the model."""
    url, query, hits = served_voyage
    want = cross_encoder.rerank(query, hits)
    vo = VoyageReranker(model="rerank-2.5", base_url=url, api_key=KEY, batch_size=4, max_concurrency=3)
    assert_as_local(await vo.arerank(query, hits), want)
