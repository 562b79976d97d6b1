"""`twostage serve` with the real cross-encoder: once /ready says 200, the first real request is not paying the
engine's first-call costs (the warm-up ran the request shapes). Its latency is compared with the median of the
next 10 requests of the same shape, with a loose bound: this is a shared machine. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
from servers import free_port, start_serve, stop_server, wait_serve_ready


@pytest.fixture(scope="module")
def requests_12(scifact_subset):
    """11 requests of one shape: distinct SciFact queries (no score is cached), 12 abstracts each."""
    _, texts, _, queries, _ = scifact_subset
    return [(query, texts[i * 12 : i * 12 + 12]) for i, query in enumerate(list(queries.values())[:11])]


def test_first_request_after_ready_is_within_2x_of_the_median(rerank_model_path, requests_12, tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(port, "--model", rerank_model_path, log=log)
    try:
        wait_serve_ready(proc, url, log)
        latencies = []
        with httpx.Client(timeout=300) as client:
            for query, docs in requests_12:
                t0 = time.perf_counter()
                response = client.post(f"{url}/v2/rerank", json={"query": query, "documents": docs})
                latencies.append(time.perf_counter() - t0)
                assert response.status_code == 200 and len(response.json()["results"]) == len(docs)
    finally:
        stop_server(proc)
    first, median = latencies[0], statistics.median(latencies[1:])
    ratio = first / median
    print(f"\nfirst request {first * 1000:.0f} ms, median of the next 10 {median * 1000:.0f} ms, ratio {ratio:.2f}")
    assert first <= 2 * median, (first, latencies[1:])
