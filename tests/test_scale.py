"""The scale-out deployment of docs/deployment.md on loopback: a real `chroma run` server and two real
`twostage serve` replicas, one pipeline using both over HTTP (CohereReranker with a list of base URLs), compared
with the embedded setup (embedded Chroma + the cross-encoder in this process), then replicas SIGKILLed.

The tests run in file order: the last one kills the replicas the module shares.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import chromadb
import httpx
import pytest
from servers import CLI, REPO, free_port, start_serve, start_server, stop_server, wait_serve_ready
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
