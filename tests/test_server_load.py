"""`twostage serve` plumbing under load, with fake rerankers (no model weights): dynamic batching, the bounded
queue (429 + Retry-After), request timeouts, NaN/failing models, readiness and draining, and the issue's load
run (2,000 requests from 16 clients: every answer right or refused with Retry-After, memory flat).
Model quality through the server is tested with the real cross-encoder in test_server.py. Loopback only."""

from __future__ import annotations

import gc
import math
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from twostage_integrations.errors import ModelNotFoundError
from twostage_integrations.rerank.base import BaseReranker
from twostage_integrations.rerank.cache import ScoreCache
from twostage_integrations.server import batches_across_queries, create_app, serve_in_thread


def fake_score(query: str, text: str) -> float:
    return zlib.crc32(f"{query}\x00{text}".encode()) / 2**32


class FakePairReranker(BaseReranker):
    """Scores pairs from many queries in one call (like the cross-encoder), instantly, with CRC pseudo-scores.
    ``gate``: when set, each call waits for it (a slow model the test controls). ``nan``/``boom`` texts give a
    NaN score / raise, for the failure paths. Records the size of every call."""

    name = "fake-pairs"

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.entered = 0  # calls started (a gated call counts while it waits)
        self.calls: list[int] = []
        self.pairs_seen: list[tuple[str, str]] = []

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return self.score_pairs([(query, t) for t in texts])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.entered += 1
        if self.gate is not None:
            assert self.gate.wait(timeout=60), "the test never opened the gate"
        self.calls.append(len(pairs))
        self.pairs_seen.extend(pairs)
        if any(t == "boom" for _, t in pairs):
            raise RuntimeError("boom: the fake model failed")
        return [math.nan if t == "nan" else fake_score(q, t) for q, t in pairs]


class FakeQueryReranker(BaseReranker):
    """One query per call (like a hosted API): served per request, never merged."""

    name = "fake-per-query"

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return [fake_score(query, t) for t in texts]


def expected_indices(query: str, docs: list[str]) -> list[int]:
    scores = [fake_score(query, d) for d in docs]
    return sorted(range(len(docs)), key=lambda i: -scores[i])


def body(query: str, docs: list[str]) -> dict:
    return {"model": "m", "query": query, "documents": docs}


def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def post_all(url: str, bodies: list[dict], workers: int) -> list[httpx.Response]:
    def one(b: dict) -> httpx.Response:
        return httpx.post(f"{url}/v2/rerank", json=b, timeout=60)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, bodies))


def test_batching_only_for_rerankers_that_batch_across_queries():
    assert batches_across_queries(FakePairReranker())
    assert not batches_across_queries(FakeQueryReranker())
    assert batches_across_queries(ScoreCache(FakePairReranker()))
    assert not batches_across_queries(ScoreCache(FakeQueryReranker()))


@pytest.mark.parametrize("reranker_cls", [FakePairReranker, FakeQueryReranker])
def test_queued_requests_are_merged_and_split_back(reranker_cls):
    """With the model busy, queued requests go out together in one call (pair rerankers) and each request gets
    its own ranking back; a per-query reranker gets them one by one."""
    gate = threading.Event()
    gate.set()
    blocker = FakePairReranker(gate) if reranker_cls is FakePairReranker else None
    app = create_app(blocker or FakeQueryReranker(), max_queue=32, batch_wait_ms=0)
    service = app.state.service
    jobs = [(f"query {k}", [f"doc {k}-{j}" for j in range(3 + k % 4)]) for k in range(12)]
    with serve_in_thread(app) as url:
        wait_for(lambda: service.state == "ready", "warm-up")
        gate.clear()  # the pair reranker's next call blocks: requests pile up behind it
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v2/rerank", json=body(q, d), timeout=60) for q, d in jobs]
            wait_for(lambda: app.state.stats["in_progress"] == len(jobs) or all(f.done() for f in futures), "queue")
            gate.set()
            responses = [f.result() for f in futures]
    for (query, docs), response in zip(jobs, responses, strict=True):
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["index"] for r in results] == expected_indices(query, docs)
        assert [r["relevance_score"] for r in results] == pytest.approx(
            sorted((fake_score(query, d) for d in docs), reverse=True)
        )
    if blocker is not None:
        assert service.batching and service.merged_batches >= 1 and service.largest_batch >= 2
        assert max(blocker.calls) > max(len(d) for _, d in jobs)  # a call carried several requests' pairs
    else:
        assert not service.batching and service.merged_batches == 0


def test_max_batch_caps_a_merged_call():
    gate = threading.Event()
    reranker = FakePairReranker(gate)
    app = create_app(reranker, max_queue=32, max_batch=10, batch_wait_ms=0)
    jobs = [(f"q{k}", [f"d{k}-{j}" for j in range(4)]) for k in range(9)]
    with serve_in_thread(app) as url:
        gate.set()
        wait_for(lambda: app.state.service.state == "ready", "warm-up")
        gate.clear()
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v2/rerank", json=body(q, d), timeout=60) for q, d in jobs]
            wait_for(lambda: app.state.stats["in_progress"] == len(jobs), "queue")
            gate.set()
            responses = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in responses)
    assert max(reranker.calls[1:]) <= 10 and 8 in reranker.calls[1:]  # two 4-pair requests per call, never split


def test_full_queue_answers_429_with_retry_after_and_loses_nothing():
    gate = threading.Event()
    gate.set()
    reranker = FakePairReranker(gate)
    app = create_app(reranker, max_queue=4, batch_wait_ms=0)
    stats = app.state.stats
    jobs = [(f"overload {k}", [f"doc {k}-{j}" for j in range(5)]) for k in range(12)]
    with serve_in_thread(app) as url:
        wait_for(lambda: app.state.service.state == "ready", "warm-up")
        gate.clear()  # the model stalls: 4 requests are admitted, the other 8 must be refused at once
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v2/rerank", json=body(q, d), timeout=60) for q, d in jobs]
            wait_for(lambda: stats["rejected_full"] == 8 and stats["in_progress"] == 4, "the queue to fill")
            assert httpx.get(f"{url}/health").json()["in_progress"] == 4
            gate.set()
            responses = [f.result() for f in futures]
    ok = [(job, r) for job, r in zip(jobs, responses, strict=True) if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) == 4 and len(refused) == 8
    for (query, docs), response in ok:
        assert [r["index"] for r in response.json()["results"]] == expected_indices(query, docs)
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert "capacity" in response.json()["message"]
    assert stats["in_progress"] == 0


def test_request_timeout_answers_504_and_drops_the_queued_work():
    gate = threading.Event()
    gate.set()
    reranker = FakePairReranker(gate)
    app = create_app(reranker, request_timeout=0.5, batch_wait_ms=0)
    with serve_in_thread(app) as url:
        wait_for(lambda: app.state.service.state == "ready", "warm-up")
        gate.clear()
        with ThreadPoolExecutor(2) as pool:
            entered = reranker.entered
            stuck = pool.submit(httpx.post, f"{url}/v2/rerank", json=body("stuck", ["a", "b"]), timeout=60)
            wait_for(lambda: reranker.entered == entered + 1, "the model to take the first request")
            queued = pool.submit(httpx.post, f"{url}/v2/rerank", json=body("queued", ["c"]), timeout=60)
            first, second = stuck.result(), queued.result()
        for response in (first, second):
            assert response.status_code == 504
            assert "timed out after 0.5 s" in response.json()["message"] and int(response.headers["retry-after"]) >= 1
        seen_before = len(reranker.pairs_seen)
        gate.set()
        ok = httpx.post(f"{url}/v2/rerank", json=body("after", ["x", "y"]), timeout=60)
    assert ok.status_code == 200 and ok.json()["results"][0]["index"] == expected_indices("after", ["x", "y"])[0]
    assert ("queued", "c") not in reranker.pairs_seen  # timed out while queued: never scored
    assert reranker.pairs_seen[seen_before:][:2] == [("stuck", "a"), ("stuck", "b")]  # was already running
    assert app.state.stats["timed_out"] == 2


def test_a_client_that_hangs_up_while_queued_is_never_scored():
    gate = threading.Event()
    gate.set()
    reranker = FakePairReranker(gate)
    app = create_app(reranker, batch_wait_ms=0)
    with serve_in_thread(app) as url:
        wait_for(lambda: app.state.service.state == "ready", "warm-up")
        gate.clear()
        with ThreadPoolExecutor(1) as pool:
            entered = reranker.entered
            first = pool.submit(httpx.post, f"{url}/v2/rerank", json=body("first", ["a"]), timeout=60)
            wait_for(lambda: reranker.entered == entered + 1, "the model to take the first request")
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
                httpx.post(f"{url}/v2/rerank", json=body("impatient", ["b", "c"]), timeout=0.3)
            wait_for(lambda: app.state.stats["abandoned"] == 1, "the server to notice")
            gate.set()
            assert first.result().status_code == 200
        assert httpx.post(f"{url}/v2/rerank", json=body("later", ["d"]), timeout=60).status_code == 200
    assert not any(q == "impatient" for q, _ in reranker.pairs_seen)
    assert app.state.stats["in_progress"] == 0


def test_nan_scores_and_model_errors_fail_only_their_own_request():
    """A NaN score is a 500 with a clear message (never NaN in JSON); a request that makes the model raise
    fails alone even when merged with others (the batch is retried one request at a time)."""
    gate = threading.Event()
    gate.set()
    app = create_app(FakePairReranker(gate), batch_wait_ms=0)
    jobs = {"good": ["a", "b", "c"], "nan": ["a", "nan"], "boom": ["boom"], "good2": ["d", "e"]}
    with serve_in_thread(app) as url:
        wait_for(lambda: app.state.service.state == "ready", "warm-up")
        gate.clear()
        with ThreadPoolExecutor(len(jobs) + 1) as pool:
            first = pool.submit(httpx.post, f"{url}/v2/rerank", json=body("first", ["z"]), timeout=60)
            wait_for(lambda: app.state.stats["in_progress"] == 1, "the first request")
            futures = {
                q: pool.submit(httpx.post, f"{url}/v2/rerank", json=body(q, d), timeout=60) for q, d in jobs.items()
            }
            wait_for(lambda: app.state.stats["in_progress"] == 5, "the queue")
            gate.set()
            responses = {q: f.result() for q, f in futures.items()}
            assert first.result().status_code == 200
    for q in ("good", "good2"):
        assert responses[q].status_code == 200
        assert [r["index"] for r in responses[q].json()["results"]] == expected_indices(q, jobs[q])
    assert responses["nan"].status_code == 500
    assert "nan" in responses["nan"].json()["message"] and "documents[1]" in responses["nan"].json()["message"]
    assert "NaN" not in responses["nan"].text
    assert responses["boom"].status_code == 500 and "boom" in responses["boom"].json()["message"]
    assert app.state.stats["failed"] == 2


class NanQueryFakeReranker(FakeQueryReranker):
    """A per-query fake (served through ``rerank``, never merged) that gives NaN for the text ``nan``."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return [math.nan if t == "nan" else fake_score(query, t) for t in texts]


def test_nan_through_the_per_request_path_is_a_500_too():
    app = create_app(NanQueryFakeReranker())
    with serve_in_thread(app) as url:
        wait_for(lambda: app.state.service.ready, "readiness")
        bad = httpx.post(f"{url}/v2/rerank", json=body("q", ["a", "nan"]))
        good = httpx.post(f"{url}/v2/rerank", json=body("q", ["a", "b"]))
    assert bad.status_code == 500 and "nan" in bad.json()["message"].lower() and "NaN" not in bad.text
    assert good.status_code == 200 and [r["index"] for r in good.json()["results"]] == expected_indices("q", ["a", "b"])


def test_readiness_follows_loading_and_draining():
    """/health answers while the model loads; /ready and /v2/rerank say 503 until it is loaded and warmed,
    and again while draining."""
    release = threading.Event()

    def slow_loader():
        assert release.wait(timeout=60)
        return FakePairReranker()

    app = create_app(slow_loader)
    with serve_in_thread(app) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/health").json()["state"] == "loading"
        assert httpx.get(f"{url}/ready").status_code == 503
        early = httpx.post(f"{url}/v2/rerank", json=body("q", ["a"]))
        assert early.status_code == 503 and "loading" in early.json()["message"] and early.headers["retry-after"]
        release.set()
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, "readiness")
        assert httpx.post(f"{url}/v2/rerank", json=body("q", ["a"])).status_code == 200
        app.state.service.draining = True  # what the first SIGTERM does (tested end to end in test_server.py)
        assert httpx.get(f"{url}/ready").json() == {"ready": False, "state": "draining"}
        late = httpx.post(f"{url}/v2/rerank", json=body("q", ["a"]))
        assert late.status_code == 503 and "shutting down" in late.json()["message"] and late.headers["retry-after"]


def test_a_failed_load_is_reported_by_health_and_ready():
    def broken_loader():
        raise ModelNotFoundError("no cross-encoder at ./nowhere: pass --model PATH")

    app = create_app(broken_loader)
    with serve_in_thread(app) as url:
        wait_for(lambda: app.state.service.state == "failed", "the load to fail")
        assert httpx.get(f"{url}/health").status_code == 503
        assert httpx.get(f"{url}/ready").status_code == 503
        response = httpx.post(f"{url}/v2/rerank", json=body("q", ["a"]))
        assert response.status_code == 503 and "./nowhere" in response.json()["message"]


def test_server_cache_serves_repeats_without_the_model():
    inner = FakePairReranker()
    app = create_app(ScoreCache(inner, maxsize=100))
    with serve_in_thread(app) as url:
        wait_for(lambda: app.state.service.ready, "readiness")
        first = httpx.post(f"{url}/v2/rerank", json=body("cached query", ["a", "b", "c"])).json()
        seen = len(inner.pairs_seen)
        second = httpx.post(f"{url}/v2/rerank", json=body("cached query", ["c", "a"])).json()
        health = httpx.get(f"{url}/health").json()
    assert len(inner.pairs_seen) == seen  # all three pairs came from the cache
    assert [r["index"] for r in first["results"]] == expected_indices("cached query", ["a", "b", "c"])
    assert [r["index"] for r in second["results"]] == expected_indices("cached query", ["c", "a"])
    assert health["cache"]["hits"] == 2


def rss_bytes() -> int:
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("RSS is read from /proc (Linux only)")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no VmRSS in /proc/self/status")


def test_serve_load_2000_requests_from_16_clients():
    """The issue's load run with a fast fake model: every answer is the right ranking for its own request,
    or a 429/503 with Retry-After; none is lost or mixed up; memory stays flat (RSS within 10%)."""
    app = create_app(FakePairReranker(), max_queue=8, batch_wait_ms=1)
    n_clients, per_client = 16, 125

    def client(k: int, n: int, url: str, out: list) -> None:
        # Check each answer here and keep only the verdict: holding 2,000 responses would itself grow RSS.
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(n):
                query = f"client {k} request {i}"
                docs = [f"passage {(k * 7 + i + j) % 97} of client {k}" for j in range(1 + (k + i) % 10)]
                response = http.post("/v2/rerank", json=body(query, docs))
                if response.status_code == 200:
                    right = [r["index"] for r in response.json()["results"]] == expected_indices(query, docs)
                    out.append((query, 200, right))
                else:
                    out.append((query, response.status_code, int(response.headers.get("retry-after", "0")) >= 1))

    def run(url: str, n: int) -> list:
        outs: list[list] = [[] for _ in range(n_clients)]
        threads = [threading.Thread(target=client, args=(k, n, url, outs[k])) for k in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        return [item for out in outs for item in out]

    with serve_in_thread(app) as url:
        wait_for(lambda: app.state.service.ready, "readiness")
        run(url, 15)  # warm up connections, allocator pools and caches before measuring
        gc.collect()
        rss_before = rss_bytes()
        answers = run(url, per_client)
        gc.collect()
        rss_after = rss_bytes()
    assert len(answers) == n_clients * per_client == 2000
    ok = refused = 0
    for query, status, right in answers:
        if status == 200:
            ok += 1
            assert right, f"{query}: wrong or mixed-up ranking"
        else:
            refused += 1
            assert status in (429, 503) and right, f"{query}: HTTP {status} without Retry-After"
    assert ok > 0
    assert app.state.stats["requests"] >= ok and app.state.service.merged_batches > 0
    assert rss_after <= rss_before * 1.10, f"RSS grew from {rss_before / 2**20:.0f} to {rss_after / 2**20:.0f} MiB"
    print(
        f"\n2000 requests: {ok} answered, {refused} refused with Retry-After; RSS {rss_before / 2**20:.0f} -> "
        f"{rss_after / 2**20:.0f} MiB; {app.state.service.merged_batches} merged model calls"
    )


@pytest.mark.parametrize("kwargs", [{"batching": False}, {"max_batch": 0}])
def test_batching_can_be_turned_off(kwargs):
    reranker = FakePairReranker()
    app = create_app(reranker, **kwargs)
    wait_for(lambda: app.state.service.state == "ready", "warm-up")
    assert not app.state.service.batching


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--max-queue", "0"], "--max-queue must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--max-batch", "-1"], "must be >= 0"),
        (["--request-timeout", "-5"], "must be >= 0"),
    ],
)
def test_serve_rejects_bad_limits_before_loading_anything(args, fragment):
    from typer.testing import CliRunner

    from twostage_integrations.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", "/nonexistent/model", *args])
    assert result.exit_code == 2 and fragment in result.output


def test_serve_exits_with_one_error_line_when_the_model_cannot_load():
    """The model loads after the server starts (so /health answers during a long load); a load that fails
    stops the server and the command exits 2 with the reason."""
    import socket

    from typer.testing import CliRunner

    from twostage_integrations.cli import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(app, ["serve", "--model", "/nonexistent/model", "--port", str(port)])
    assert result.exit_code == 2
    assert "error: rerank model path '/nonexistent/model' does not exist" in result.output


@pytest.mark.parametrize(
    "kwargs",
    [{"max_queue": 0}, {"max_batch": -1}, {"max_batch": 2.5}, {"batch_wait_ms": -1}, {"request_timeout": 0}],
)
def test_create_app_rejects_bad_limits_with_a_typed_error(kwargs):
    from twostage_integrations.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=next(iter(kwargs))):
        create_app(FakePairReranker(), **kwargs)
