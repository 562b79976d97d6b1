"""The scale-out deployment of docs/deployment.md on loopback: a real `chroma run` server and two real
`twostage serve` replicas, one pipeline using both over HTTP (CohereReranker with a list of base URLs), compared
with the embedded setup (embedded Chroma + the cross-encoder in this process), then replicas SIGKILLed.

The tests run in file order: the last one kills the replicas the module shares.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import chromadb
import httpx
import pytest
from servers import (
    CLI,
    REPO,
    free_port,
    serve_health,
    start_serve,
    start_server,
    stop_server,
    wait_serve_ready,
)
from time_limits import SUBPROCESS_TIMEOUT

from twostage_integrations import ChromaRecall, CohereReranker, Hit, TwoStagePipeline
from twostage_integrations.errors import RerankAPIError

KEY = "scale-test-key-4d2f"  # only ever sent to 127.0.0.1
PASSAGES, QUERIES, LIMIT, TOP_K = 200, 4, 20, 10
LONG = 200  # candidates in the request that is in flight when its replica is killed: seconds of model work


@pytest.fixture(scope="module")
def corpus(scifact_subset):
    """(ids, texts, metadatas, queries): the first 200 SciFact passages (the relevant ones of the subset's
    queries come first) and 4 test queries."""
    doc_ids, texts, metas, queries, _ = scifact_subset
    return doc_ids[:PASSAGES], texts[:PASSAGES], metas[:PASSAGES], list(queries.values())[:QUERIES]


@pytest.fixture(scope="module")
def chroma_port(tmp_path_factory):
    port = free_port()
    proc = start_server(tmp_path_factory.mktemp("scale-chroma"), port)
    yield port
    stop_server(proc)


@pytest.fixture(scope="module")
def replicas(rerank_model_path, tmp_path_factory):
    """{base URL: process} of two `twostage serve` replicas with the real cross-encoder and bearer auth."""
    logs = tmp_path_factory.mktemp("replicas")
    started: list[tuple[subprocess.Popen, str, os.PathLike]] = []
    try:
        for i in range(2):  # both load their model at the same time, as replicas behind a balancer do
            port, log = free_port(), logs / f"replica{i}.log"
            proc = start_serve(port, "--model", rerank_model_path, "--api-key", KEY, log=log)
            started.append((proc, f"http://127.0.0.1:{port}", log))
        for proc, url, log in started:
            wait_serve_ready(proc, url, log)
        yield {url: proc for proc, url, _ in started}
    finally:
        for proc, _, _ in started:
            if proc.poll() is None:
                stop_server(proc)


@pytest.fixture(scope="module")
def deployment(corpus, chroma_port, replicas, embedder, cross_encoder, tmp_path_factory):
    """(embedded pipeline, HTTP pipeline, its CohereReranker): the same passages in both Chromas."""
    ids, texts, metas, _ = corpus
    embedded = ChromaRecall("scale", path=tmp_path_factory.mktemp("embedded"), embedding_model=embedder, progress=False)
    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_port)
    served = ChromaRecall("scale", client=client, embedding_model=embedder, progress=False)
    assert served.location == f"127.0.0.1:{chroma_port}"  # really the server, not a local folder
    for recall in (embedded, served):
        assert recall.add_texts(texts, metadatas=metas, ids=ids).added == PASSAGES
    reranker = CohereReranker(base_url=list(replicas), api_key=KEY, timeout=300, max_retries=1, backoff=0.05)
    local = TwoStagePipeline(embedded, cross_encoder, limit=LIMIT, top_k=TOP_K)
    remote = TwoStagePipeline(served, reranker, limit=LIMIT, top_k=TOP_K)
    return local, remote, reranker


def assert_same_hits(got: list[Hit], want: list[Hit]) -> None:
    assert [h.id for h in got] == [h.id for h in want]
    assert [h.rerank_score for h in got] == pytest.approx([h.rerank_score for h in want], abs=1e-4)
    assert [h.recall_score for h in got] == pytest.approx([h.recall_score for h in want], abs=1e-4)


@pytest.mark.timeout(1800)  # includes loading the model in two replicas and embedding 2 x 200 passages
def test_http_pipeline_returns_the_embedded_hits(deployment, replicas, corpus):
    local, remote, reranker = deployment
    first = reranker.base_url
    for query in corpus[3]:
        want = local.search(query)
        assert len(want) == TOP_K
        assert_same_hits(remote.search(query), want)
    assert reranker.base_url == first and first in replicas  # both alive: every request went to the first
    assert_same_hits(asyncio.run(remote.asearch(corpus[3][0])), local.search(corpus[3][0]))


def test_cli_query_against_the_chroma_server_and_replicas(deployment, chroma_port, replicas, corpus):
    """`twostage query --host/--port` with the Cohere base URLs in the environment, the first one dead: the
    same hits as the embedded pipeline."""
    local, _, _ = deployment
    query = corpus[3][1]
    dead = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "CO_API_KEY": KEY,
        "TWOSTAGE_COHERE_BASE_URL": ",".join([dead, *replicas]),
    }
    argv = ["query", query, "--collection", "scale", "--host", "127.0.0.1", "--port", str(chroma_port)]
    argv += ["--rerank-model", "cohere:rerank-v3.5", "--limit", str(LIMIT), "--top-k", str(TOP_K), "--json"]
    argv += ["--recall", "dense"]  # as the embedded pipeline it is compared with (the CLI's default is hybrid)
    proc = subprocess.run([*CLI, *argv], env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    want = local.search(query)
    assert [h["id"] for h in out["hits"]] == [h.id for h in want]
    assert [h["rerank_score"] for h in out["hits"]] == pytest.approx([h.rerank_score for h in want], abs=1e-4)


def test_survives_the_replica_in_use_being_killed_then_fails_cleanly_with_none_left(
    deployment, replicas, corpus, caplog
):
    local, remote, reranker = deployment
    queries = corpus[3]
    in_use = reranker.base_url
    (other,) = set(replicas) - {in_use}

    # SIGKILL the replica in use while it scores a long request: the request is sent again to the other one.
    want_long = local.search(queries[0], limit=LONG)
    caplog.set_level(logging.WARNING, logger="twostage_integrations.rerank.hosted")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(remote.search, queries[0], limit=LONG)
        deadline = time.monotonic() + 300
        while httpx.get(f"{in_use}/health", timeout=30).json()["in_progress"] == 0:
            assert not pending.done(), "the long request finished before the replica could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        replicas[in_use].send_signal(signal.SIGKILL)
        replicas[in_use].wait(timeout=30)
        assert_same_hits(pending.result(timeout=600), want_long)
    # The dropped connection counted as "no server answered there", not as an HTTP error: straight failover.
    (failover,) = [r.getMessage() for r in caplog.records if f"trying {other}" in r.getMessage()]
    assert failover.startswith(f"Cohere at {in_use}: connection failed")
    assert reranker.base_url == other  # remembered: later requests go straight to the survivor

    for query in queries:
        assert_same_hits(remote.search(query), local.search(query))
    assert reranker.base_url == other

    # Both gone: a typed error saying that no URL answered, after the one retry allowed; recall still works.
    replicas[other].send_signal(signal.SIGKILL)
    replicas[other].wait(timeout=30)
    with pytest.raises(RerankAPIError, match="none of the 2 base URLs answered") as info:
        remote.search(queries[0])
    assert info.value.attempts == 2 and info.value.status_code is None
    assert [h.id for h in remote.recall.search(queries[0], LIMIT)] == [
        h.id for h in local.recall.search(queries[0], LIMIT)
    ]


# -- sustained load on two replicas, one SIGKILLed and restarted on its port ----------------------------------
CLIENTS = 16
MAX_QUEUE = 6  # per replica, under the 8 clients each gets: overload shows as 429 + Retry-After, early
# The server's per-request deadline (504 past it), raised from 60 s: on a machine loaded by other jobs a full
# queue can wait longer than that, and this test checks answers and refusals, not speed.
REQUEST_TIMEOUT_S = 900
RECYCLE = 4  # requests per CohereReranker before a client makes a new one (as a worker process is recycled)
MIN_RUN_S = 20  # sustained load at least this long, and until the restarted replica has answered requests


@pytest.fixture
def load_replicas(rerank_model_path, tmp_path):
    """[(port, process, log)] of two fresh replicas with a small ``--max-queue`` (the module's pair is killed
    by the test above). Whatever is running at the end is stopped."""
    procs: list[tuple[int, subprocess.Popen, os.PathLike]] = []
    for i in range(2):
        port, log = free_port(), tmp_path / f"load{i}.log"
        procs.append((port, start_serve(port, *replica_args(rerank_model_path), log=log), log))
    for port, proc, log in procs:
        wait_serve_ready(proc, f"http://127.0.0.1:{port}", log)
    yield procs
    for _, proc, _ in procs:
        if proc.poll() is None:
            stop_server(proc)


def replica_args(model: str) -> list[str]:
    limits = ["--max-queue", str(MAX_QUEUE), "--request-timeout", str(REQUEST_TIMEOUT_S)]
    return ["--model", model, "--api-key", KEY, *limits]


class LoadClient:
    """One client: its own rerankers (base URLs rotated by its number, so the clients spread over the
    replicas), its own queries in turn, and its own count of what happened to each request it sent."""

    def __init__(self, number: int, urls: list[str], queries: list[str], candidates, reference) -> None:
        self.number, self.candidates, self.reference = number, candidates, reference
        self.urls = urls[number % len(urls) :] + urls[: number % len(urls)]
        self.queries = queries[number:] + queries[:number]  # at any moment clients send different queries
        self.sent = self.answered = 0
        self.refused: list[tuple[int, str]] = []  # (status, message) of requests refused with a retry hint
        self.wrong: list[str] = []  # answers that are not the reference of the query sent
        self.errors: list[str] = []  # anything else: a request lost or failed another way

    def reranker(self) -> CohereReranker:
        # max_backoff under every Retry-After twostage serve sends (>= 1 s): a 429 or an all-503 answer that
        # carries one is refused at once, naming it, instead of being retried; connection failures still are.
        return CohereReranker(
            base_url=self.urls, api_key=KEY, timeout=300, max_retries=3, backoff=0.05, max_backoff=0.5
        )

    def run(self, stop) -> None:
        reranker = self.reranker()
        while not stop.is_set():
            if self.sent and self.sent % RECYCLE == 0:
                reranker = self.reranker()  # starts again from this client's first URL
            query = self.queries[self.sent % len(self.queries)]
            self.sent += 1
            try:
                got = reranker.rerank(query, self.candidates[query], top_k=TOP_K)
            except RerankAPIError as exc:
                if exc.status_code in (429, 503) and "asks to retry after" in str(exc):
                    self.refused.append((exc.status_code, str(exc)))
                    time.sleep(1)  # what Retry-After asks at least; a refused client does not hammer
                else:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - every other failure is counted and reported by the test
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if self.matches(got, self.reference[query]):
                self.answered += 1
            else:
                self.wrong.append(f"{query!r}: got {[h.id for h in got]}")

    @staticmethod
    def matches(got: list[Hit], want: list[Hit]) -> bool:
        if [h.id for h in got] != [h.id for h in want]:
            return False
        return all(abs(g.rerank_score - w.rerank_score) <= 1e-4 for g, w in zip(got, want, strict=True))


def answered_requests(url: str) -> int:
    return serve_health(url)["requests"]


def wait_for(condition, what: str, timeout: float = 600) -> None:
    """Poll ``condition`` until true; fail naming ``what`` if it never is (a hang guard, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {timeout:.0f} s"
        time.sleep(0.2)


@pytest.mark.timeout(1800)
def test_sixteen_clients_share_two_replicas_and_lose_nothing_when_one_is_killed_and_restarted(
    deployment, scifact_subset, cross_encoder, load_replicas, rerank_model_path, tmp_path
):
    _, remote, _ = deployment
    queries = list(scifact_subset[3].values())[:CLIENTS]
    # Short documents (titles) from the Chroma server's recall; the reference is the in-process cross-encoder.
    candidates = {
        q: [dataclasses.replace(h, text=h.metadata["title"]) for h in remote.recall.search(q, LIMIT)] for q in queries
    }
    reference = {q: cross_encoder.rerank(q, candidates[q], top_k=TOP_K) for q in queries}
    assert len({tuple(h.id for h in want) for want in reference.values()}) == CLIENTS  # a mix-up would show
    (port_a, proc_a, _), (port_b, _, _) = load_replicas
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    before = {url: answered_requests(url) for url in (url_a, url_b)}

    clients = [LoadClient(i, [url_a, url_b], queries, candidates, reference) for i in range(CLIENTS)]
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        # Both replicas take part of the load.
        wait_for(lambda: all(answered_requests(u) >= before[u] + 3 for u in (url_a, url_b)), "both replicas to answer")
        # SIGKILL replica A under load, then start a new one on the same port (it answers 503 while loading).
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait(timeout=30)
        log = tmp_path / "load0-restarted.log"
        restarted = start_serve(port_a, *replica_args(rerank_model_path), log=log)
        load_replicas.append((port_a, restarted, log))  # stopped by the fixture
        wait_serve_ready(restarted, url_a, log)
        # Recycled clients come back to it: the new process answers requests of its own.
        wait_for(lambda: answered_requests(url_a) >= 3, "the restarted replica to answer requests")
        wait_for(lambda: time.monotonic() - started >= MIN_RUN_S, f"{MIN_RUN_S} s of sustained load")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a client is stuck on a request"

    summary = [(c.sent, c.answered, len(c.refused), len(c.errors), len(c.wrong)) for c in clients]
    statuses = sorted({status for c in clients for status, _ in c.refused})
    print(f"(sent, answered, refused, failed, wrong) per client: {summary}; refusals: HTTP {statuses}")
    for c in clients:
        assert c.errors == [], f"client {c.number}: requests lost or failed: {c.errors[:3]}"
        assert c.wrong == [], f"client {c.number}: answers not matching their own query: {c.wrong[:3]}"
        assert c.sent == c.answered + len(c.refused), f"client {c.number}: {c.sent} sent"
    # Work got done, by both replicas (a full queue is first come, first served, so on a loaded machine one client
    # may be refused more often than answered: fairness between clients is not what this checks).
    assert sum(c.answered for c in clients) >= CLIENTS
    assert answered_requests(url_b) > before[url_b]
