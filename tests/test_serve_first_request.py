"""`twostage serve` with the real cross-encoder: once /ready says 200, the first real request is not paying the
engine's first-call costs (the warm-up ran the request shapes). Its latency is compared with the median of the
next 10 requests of the same shape, with a loose bound: this is a shared machine. All traffic stays on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

import httpx
import pytest
from servers import free_port


@pytest.fixture(scope="module")
def requests_12(scifact_subset):
    """11 requests of one shape: distinct SciFact queries (no score is cached), 12 abstracts each."""
    _, texts, _, queries, _ = scifact_subset
    return [(query, texts[i * 12 : i * 12 + 12]) for i, query in enumerate(list(queries.values())[:11])]


def start_serve(model: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = shutil.which("twostage")
    cmd = [exe] if exe else [sys.executable, "-c", "from twostage_integrations.cli import app; app()"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--model", model, "--port", str(port)],
        env={k: v for k, v in os.environ.items() if k != "TWOSTAGE_SERVE_API_KEY"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        assert time.monotonic() < deadline, "twostage serve was not ready within 300 s"
        time.sleep(0.05)


def test_first_request_after_ready_is_within_2x_of_the_median(rerank_model_path, requests_12):
    proc, url = start_serve(rerank_model_path)
    try:
        wait_ready(proc, url)
        latencies = []
        with httpx.Client(timeout=300) as client:
            for query, docs in requests_12:
                t0 = time.perf_counter()
                response = client.post(f"{url}/v2/rerank", json={"query": query, "documents": docs})
                latencies.append(time.perf_counter() - t0)
                assert response.status_code == 200 and len(response.json()["results"]) == len(docs)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=30)
    first, median = latencies[0], statistics.median(latencies[1:])
    ratio = first / median
    print(f"\nfirst request {first * 1000:.0f} ms, median of the next 10 {median * 1000:.0f} ms, ratio {ratio:.2f}")
    assert first <= 2 * median, (first, latencies[1:])
