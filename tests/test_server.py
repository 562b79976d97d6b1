"""`twostage serve` with the real SciFact cross-encoder, called by the official Cohere SDK and by our
CohereReranker: rankings must equal the local CrossEncoderReranker's. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cohere
import httpx
import pytest
from fastapi.testclient import TestClient
from servers import free_port

from twostage_integrations import ChromaRecall, CohereReranker, Hit, TwoStagePipeline
from twostage_integrations.errors import APIKeyError
from twostage_integrations.server import create_app, serve_in_thread

KEY = "serve-test-key-93ab"


@pytest.fixture(scope="module")
def served(cross_encoder):
    """(base URL, app) of an in-process server with bearer auth, shared by the module."""
    app = create_app(cross_encoder, api_key=KEY)
    with serve_in_thread(app) as url:
        yield url, app


def sdk(url: str, key: str = KEY) -> cohere.ClientV2:
    return cohere.ClientV2(api_key=key, base_url=url, max_retries=0, timeout=300)


def local_ranking(cross_encoder, query: str, docs: list[str]) -> list[Hit]:
    return cross_encoder.rerank(query, [Hit(id=str(i), text=d) for i, d in enumerate(docs)])


@pytest.fixture(scope="module")
def cases(scifact_subset):
    """(query, 12 candidate passages) per SciFact test query: its relevant docs among distractors."""
    doc_ids, texts, _, queries, qrels = scifact_subset
    position = {d: i for i, d in enumerate(doc_ids)}
    out = []
    for k, qid in enumerate(queries):
        relevant = [texts[position[d]] for d in qrels[qid] if d in position]
        distractors = [texts[100 + (k * 11 + j) % 400] for j in range(12 - len(relevant))]
        out.append((queries[qid], distractors[:6] + relevant + distractors[6:]))
    return out


@pytest.fixture(scope="module")
def small_index(embedder, scifact_subset, tmp_path_factory):
    """80 SciFact passages (the subset starts with the relevant ones) in an embedded Chroma folder."""
    doc_ids, texts, metas, _, _ = scifact_subset
    path = tmp_path_factory.mktemp("chroma")
    recall = ChromaRecall("serve_test", path=path, embedding_model=embedder, progress=False)
    recall.add_texts(texts[:80], metadatas=metas[:80], ids=doc_ids[:80])
    return path, recall


# -- the official SDK against the server -----------------------------------------------------------------
def test_official_sdk_gets_the_cross_encoder_ranking(served, cross_encoder, cases):
    url, _ = served
    co = sdk(url)
    for query, docs in cases[:2]:
        local = local_ranking(cross_encoder, query, docs)
        response = co.rerank(model="rerank-v3.5", query=query, documents=docs)
        assert [r.index for r in response.results] == [int(h.id) for h in local]
        assert [r.relevance_score for r in response.results] == pytest.approx([h.rerank_score for h in local])
        assert response.id and response.meta.api_version.version == "2"
        assert response.meta.billed_units.search_units == 1
    top = co.rerank(model="rerank-v3.5", query=query, documents=docs, top_n=3)
    assert [r.index for r in top.results] == [int(h.id) for h in local[:3]]


def test_sdk_validation_errors_come_back_as_cohere_errors(served):
    url, _ = served
    with pytest.raises(cohere.errors.BadRequestError) as info:
        sdk(url).rerank(model="rerank-v3.5", query="q", documents=["a"], top_n=0)
    assert "top_n" in info.value.body["message"]
    with pytest.raises(cohere.errors.UnauthorizedError):
        sdk(url, key="wrong-key").rerank(model="rerank-v3.5", query="q", documents=["a"])


# -- CohereReranker (stage 2 of the pipeline) against the server --------------------------------------------
async def test_cohere_reranker_in_the_pipeline_matches_the_local_cross_encoder(served, cross_encoder, small_index):
    url, _ = served
    _, recall = small_index
    remote = TwoStagePipeline(recall, CohereReranker(api_key=KEY, base_url=url), limit=15, top_k=5)
    local = TwoStagePipeline(recall, cross_encoder, limit=15, top_k=5)
    for query in ["Aspirin and cardiovascular risk", "How do T cells recognise antigens?"]:
        got, want = remote.run(query), local.run(query)
        assert [h.id for h in got.hits] == [h.id for h in want.hits]
        assert [h.rerank_score for h in got.hits] == pytest.approx([h.rerank_score for h in want.hits])
        assert [h.rerank_rank for h in got.hits] == [1, 2, 3, 4, 5]
        assert [h.id for h in await remote.asearch(query)] == [h.id for h in want.hits]


def test_1500_documents_are_split_and_merged(served, cross_encoder, scifact_dir, scifact_subset):
    """1,500 SciFact titles: two requests (1,000 + 500), every score back on its own document."""
    url, app = served
    _, _, _, queries, qrels = scifact_subset
    qid = next(iter(queries))
    with open(scifact_dir / "corpus.jsonl", encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]
    relevant = [d for d in corpus if d["_id"] in qrels[qid]]
    others = [d for d in corpus if d["_id"] not in qrels[qid]][: 1500 - len(relevant)]
    docs = others[:1200] + relevant + others[1200:]  # relevant titles in the second batch
    hits = [Hit(id=d["_id"], text=d["title"], recall_score=0.0, recall_rank=i + 1) for i, d in enumerate(docs)]
    before = dict(app.state.stats)
    # A generous client timeout: on a loaded machine 1,000 titles can take longer than the default 30 s, and a
    # retried batch would be counted twice below.
    out = CohereReranker(api_key=KEY, base_url=url, timeout=600).rerank(queries[qid], hits)
    assert app.state.stats["requests"] - before["requests"] == 2
    assert app.state.stats["documents"] - before["documents"] == 1500
    assert sorted(h.id for h in out) == sorted(h.id for h in hits)
    scores = [h.rerank_score for h in out]
    assert scores == sorted(scores, reverse=True)
    # Each merged score must be that document's own score: check the top 10 and 50 spread over both batches
    # against the local model (scoring all 1,500 again locally would double the test's cost).
    sample = out[:10] + [out[i] for i in range(10, 1500, 30)]
    assert len({h.recall_rank > 1000 for h in sample}) == 2  # both batches are represented
    local = cross_encoder.score(queries[qid], [h.text for h in sample])
    assert [h.rerank_score for h in sample] == pytest.approx(local, abs=1e-5)


# -- concurrency --------------------------------------------------------------------------------------------
def test_twenty_concurrent_clients_all_get_correct_results(served, cross_encoder, cases):
    url, _ = served
    jobs = [(query, [d[:300] for d in docs[3:9]]) for query, docs in cases[:20]]
    expected = [[int(h.id) for h in local_ranking(cross_encoder, q, docs)] for q, docs in jobs]
    start = threading.Barrier(len(jobs))

    def call(job):
        client = sdk(url)
        start.wait()  # all 20 requests in flight together
        response = client.rerank(model="rerank-v3.5", query=job[0], documents=job[1])
        return [r.index for r in response.results]

    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(call, jobs))
    assert got == expected


def test_64_concurrent_requests_are_batched_and_each_gets_its_own_ranking(cross_encoder, cases):
    """Dynamic batching with the real model: 64 requests with different queries in flight together are merged
    into shared model calls (the batcher's counters say so), and every client gets its own ranking: the scores
    the cross-encoder gives its pairs in one local call in request order (the server sorts merged pairs by
    length, so a mix-up in splitting or un-sorting would show)."""
    app = create_app(cross_encoder, max_queue=128)
    jobs = []
    for k in range(64):
        query, docs = cases[k % len(cases)]
        start = 3 * (k // len(cases))
        jobs.append((query, [d[: 80 + 40 * j] for j, d in enumerate(docs[start : start + 3])]))
    assert len(set(map(str, jobs))) == 64
    flat = cross_encoder.score_pairs([(q, d) for q, docs in jobs for d in docs])
    barrier = threading.Barrier(len(jobs))

    def call(job):
        with httpx.Client(timeout=600) as http:
            barrier.wait()
            return http.post(f"{url}/v2/rerank", json={"model": "m", "query": job[0], "documents": job[1]})

    with serve_in_thread(app) as url, ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(call, jobs))
    service = app.state.service
    assert service.batching and service.merged_batches >= 1 and service.largest_batch >= 2
    assert service.batches < len(jobs)  # fewer model calls than requests
    for k, ((query, _), response) in enumerate(zip(jobs, responses, strict=True)):
        assert response.status_code == 200, response.text
        own = flat[3 * k : 3 * k + 3]
        results = response.json()["results"]
        assert [r["index"] for r in results] == sorted(range(3), key=lambda i: -own[i]), query
        assert [r["relevance_score"] for r in results] == pytest.approx(sorted(own, reverse=True), abs=1e-4)


async def test_twenty_concurrent_async_reranks_share_one_client(served, cross_encoder, cases):
    import asyncio

    url, _ = served
    co = CohereReranker(api_key=KEY, base_url=url)
    jobs = [(query, [Hit(id=str(i), text=d[:200]) for i, d in enumerate(docs[4:8])]) for query, docs in cases[20:40]]
    got = await asyncio.gather(*(co.arerank(q, hits) for q, hits in jobs))
    for (query, hits), out in zip(jobs, got, strict=True):
        assert [h.id for h in out] == [h.id for h in cross_encoder.rerank(query, hits)]


# -- validation and auth (in-process, no model work) --------------------------------------------------------
@pytest.fixture(scope="module")
def strict(cross_encoder):
    """An app with tiny limits and no auth, driven in-process."""
    return TestClient(create_app(cross_encoder, max_documents=5, max_body_bytes=4096))


BAD_BODIES = [
    ({"model": "m", "documents": ["a"]}, "query"),
    ({"query": "   ", "documents": ["a"]}, "query"),
    ({"query": 3, "documents": ["a"]}, "query"),
    ({"query": "q"}, "documents"),
    ({"query": "q", "documents": "one string"}, "documents"),
    ({"query": "q", "documents": []}, "empty"),
    ({"query": "q", "documents": ["a", 7]}, "documents[1]"),
    ({"query": "q", "documents": [{"text": "a"}]}, "documents[0]"),
    ({"query": "q", "documents": [None]}, "documents[0]"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ({"query": "q", "documents": ["a"], "top_n": -2}, "top_n"),
    ({"query": "q", "documents": ["a"], "top_n": "2"}, "top_n"),
    ({"query": "q", "documents": ["a"], "top_n": 1.5}, "top_n"),
    ({"query": "q", "documents": ["a"], "top_n": True}, "top_n"),
    ({"query": "q", "documents": ["a"], "return_documents": "yes"}, "return_documents"),
    ({"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}, "max_tokens_per_doc"),
    (["q", ["a"]], "JSON object"),
    ("just a string", "JSON object"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_BODIES)
def test_bad_requests_get_a_cohere_shaped_400(strict, body, fragment):
    response = strict.post("/v2/rerank", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b'{"query": "q", "documents": [', 400, "not valid JSON"),
        (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (json.dumps({"query": "q", "documents": ["x" * 5000]}).encode(), 413, "limit of 4096"),
        (iter([b'{"query": "q", "documents": ["', b"x" * 3000, b"x" * 3000, b'"]}']), 413, "limit of 4096"),
        (json.dumps({"query": "q", "documents": ["a"] * 6}).encode(), 413, "limit of 5"),
    ],
    ids=["truncated-json", "not-utf8", "empty-body", "too-large", "too-large-chunked", "too-many-documents"],
)
def test_malformed_and_oversized_bodies_get_4xx(strict, content, status, fragment):
    response = strict.post("/v2/rerank", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert fragment in response.json()["message"]


def test_unknown_routes_answer_in_the_same_shape(strict):
    assert strict.get("/v1/nothing").json() == {"message": "Not Found"}
    assert strict.get("/v2/rerank").status_code == 405


def test_top_n_and_return_documents(strict, cross_encoder):
    docs = ["Aspirin lowers stroke risk.", "Bananas are yellow.", "Antiplatelet therapy and stroke."]
    body = {"query": "aspirin stroke prevention", "documents": docs, "top_n": 2, "return_documents": True}
    payload = strict.post("/v2/rerank", json=body).json()
    local = local_ranking(cross_encoder, body["query"], docs)
    assert [r["index"] for r in payload["results"]] == [int(h.id) for h in local[:2]]
    assert [r["document"]["text"] for r in payload["results"]] == [h.text for h in local[:2]]
    body.update(top_n=50, return_documents=False, max_tokens_per_doc=64)
    payload = strict.post("/v2/rerank", json=body).json()
    assert len(payload["results"]) == 3 and "document" not in payload["results"][0]
    # applied, as Cohere does: a local cross-encoder scores each document's first 64 tokens in windows
    assert not payload["meta"].get("warnings") and all("evidence" in r for r in payload["results"])


def test_bearer_token_is_required_when_configured(cross_encoder):
    client = TestClient(create_app(cross_encoder, api_key=KEY))
    body = {"model": "m", "query": "q", "documents": ["a"]}
    for headers in [{}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}]:
        response = client.post("/v2/rerank", json=body, headers=headers)
        assert response.status_code == 401 and "Bearer" in response.json()["message"]
    assert client.post("/v2/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/health").json()["status"] == "ok"  # health stays open for load balancers


def test_cohere_reranker_with_a_wrong_key_gets_a_clear_error(served):
    url, _ = served
    with pytest.raises(APIKeyError, match="rejected the API key") as info:
        CohereReranker(api_key="not-the-key", base_url=url, on_error="fallback").rerank("q", [Hit(id="1", text="a")])
    assert "not-the-key" not in str(info.value)


# -- the command line ---------------------------------------------------------------------------------------
def test_twostage_serve_command_answers_then_drains_on_sigterm(rerank_model_path, cross_encoder, cases):
    """The real console script: starts, answers the SDK with auth from the environment, logs each request
    without text or key, and on SIGTERM finishes the request in flight (200, right ranking) and exits 0."""
    port = free_port()
    exe = shutil.which("twostage")
    cmd = [exe] if exe else [sys.executable, "-c", "from twostage_integrations.cli import app; app()"]
    env = {**os.environ, "TWOSTAGE_SERVE_API_KEY": KEY}
    proc = subprocess.Popen(
        [*cmd, "serve", "--model", rerank_model_path, "--port", str(port), "--max-batch", "16"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "twostage serve was not ready within 120 s"
            time.sleep(0.25)
        query, docs = cases[5][0], cases[5][1][4:9]
        response = sdk(url).rerank(model="rerank-v3.5", query=query, documents=docs)
        assert [r.index for r in response.results] == [int(h.id) for h in local_ranking(cross_encoder, query, docs)]
        with pytest.raises(cohere.errors.UnauthorizedError):
            sdk(url, key="wrong").rerank(model="rerank-v3.5", query=query, documents=docs)

        # SIGTERM while a long request (36 abstracts: seconds of model work) is in flight.
        long_query, long_docs = cases[6][0], [d for _, batch in cases[6:9] for d in batch]
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(sdk(url).rerank, model="rerank-v3.5", query=long_query, documents=long_docs)
            while httpx.get(f"{url}/health", timeout=30).json()["in_progress"] == 0:
                assert not pending.done(), "the long request finished before SIGTERM could be sent"
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            drained = pending.result(timeout=300)
        want = local_ranking(cross_encoder, long_query, long_docs)
        assert [r.index for r in drained.results] == [int(h.id) for h in want]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert "auth on" in stderr and KEY not in stderr
    assert "POST /v2/rerank 200 documents=5" in stderr and "POST /v2/rerank 401" in stderr
    assert "draining 1 request(s)" in stderr
    assert query not in stderr and docs[0][:40] not in stderr  # logs never carry user text


def test_twostage_serve_refuses_a_cohere_model_name():
    from typer.testing import CliRunner

    from twostage_integrations.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", "rerank-v3.5"])
    assert result.exit_code == 2 and "local cross-encoder" in result.output


def test_cli_query_with_rerank_v35_goes_through_cohere(served, small_index, cross_encoder, monkeypatch):
    from typer.testing import CliRunner

    from twostage_integrations.cli import app

    url, server_app = served
    path, recall = small_index
    query = "Aspirin and cardiovascular risk"
    args = ["query", query, "-c", "serve_test", "--db", str(path), "-l", "10", "-k", "3", "--json"]
    monkeypatch.setenv("TWOSTAGE_COHERE_BASE_URL", url)
    monkeypatch.setenv("CO_API_KEY", KEY)
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    before = server_app.state.stats["requests"]
    result = CliRunner().invoke(app, [*args, "--rerank-model", "rerank-v3.5"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["rerank_model"] == "cohere:rerank-v3.5"
    assert server_app.state.stats["requests"] == before + 1
    want = TwoStagePipeline(recall, cross_encoder, limit=10, top_k=3).search(query)
    assert [h["id"] for h in payload["hits"]] == [h.id for h in want]

    monkeypatch.delenv("CO_API_KEY")
    result = CliRunner().invoke(app, [*args, "--rerank-model", "rerank-v3.5"])
    assert result.exit_code == 2 and "no Cohere API key" in result.output


def test_the_event_loop_stays_free_while_the_model_works(served, cases):
    """/health must answer *during* a long rerank: it reports the request in progress, which a blocked
    event loop could only do after the rerank had finished."""
    url, _ = served
    docs = [d for _, batch in cases[:6] for d in batch]  # 72 abstracts: seconds of model work
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sdk(url).rerank, model="rerank-v3.5", query=cases[0][0], documents=docs)
        seen_busy = False
        while not pending.done() and not seen_busy:
            seen_busy = httpx.get(f"{url}/health", timeout=60).json()["in_progress"] == 1 and not pending.done()
        assert seen_busy
        assert len(pending.result().results) == len(docs)
