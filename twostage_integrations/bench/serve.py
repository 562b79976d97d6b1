"""Throughput of ``twostage serve`` under concurrent clients, dynamic batching off vs on.

Starts the server on 127.0.0.1 in this process, fires the same request set from ``clients`` concurrent
httpx clients in each mode and reports requests/s, p50/p95 latency and the on/off ratio.

>>> from twostage_integrations import CrossEncoderReranker
>>> from twostage_integrations.bench import run_serve_benchmark
>>> report = run_serve_benchmark(CrossEncoderReranker("path/to/ce"), clients=8, documents=20)  # doctest: +SKIP
>>> print(report.table())  # doctest: +SKIP
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidParameterError
from ..rerank.base import Reranker
from ..validation import check_positive_int


@dataclass
class ServeModeResult:
    """One mode's numbers. Latency is per request as the client sees it (queueing included)."""

    batching: bool
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    pairs_per_s: float
    p50_ms: float
    p95_ms: float
    batches: int  # model calls
    merged_batches: int  # model calls that carried more than one request
    largest_batch: int  # requests in the biggest model call


@dataclass
class ServeBenchReport:
    """What :func:`run_serve_benchmark` measured: the setup and one :class:`ServeModeResult` per mode."""

    model: str
    clients: int
    documents: int
    requests: int
    modes: list[ServeModeResult] = field(default_factory=list)
    load_average: tuple[float, float, float] | None = None  # 1/5/15 min, read at the end

    @property
    def ratio(self) -> float | None:
        """requests/s with batching over requests/s without (None unless both modes ran)."""
        by_mode = {m.batching: m.requests_per_s for m in self.modes}
        if True in by_mode and by_mode.get(False):
            return by_mode[True] / by_mode[False]
        return None

    def as_dict(self) -> dict[str, Any]:
        """Every field and the ratio, JSON-ready (what ``twostage bench-serve --json`` writes)."""
        return {**asdict(self), "ratio": self.ratio}

    def table(self) -> str:
        """A Markdown table of the modes, the ratio and the load average."""
        rows = [
            "| batching | requests/s | pairs/s | p50 ms | p95 ms | model calls | merged | errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in self.modes:
            rows.append(
                f"| {'on' if m.batching else 'off'} | {m.requests_per_s:.2f} | {m.pairs_per_s:.1f} | {m.p50_ms:.0f} "
                f"| {m.p95_ms:.0f} | {m.batches} | {m.merged_batches} | {m.errors} |"
            )
        tail = f"{self.clients} clients x {self.documents} documents, {self.requests} requests per mode, {self.model}"
        if self.ratio is not None:
            tail += f"; batching on/off = {self.ratio:.2f}x requests/s"
        if self.load_average is not None:
            tail += "; load average {:.2f} {:.2f} {:.2f}".format(*self.load_average)
        return "\n".join(rows) + "\n\n" + tail


def _percentile(values: Sequence[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _request_bodies(corpus: Sequence[str], queries: Sequence[str], documents: int, n: int) -> list[dict[str, Any]]:
    """``n`` requests: query ``i`` cycles through ``queries``, its documents are the next window of the corpus."""
    bodies = []
    for i in range(n):
        start = (i * documents) % len(corpus)
        docs = [corpus[(start + j) % len(corpus)] for j in range(documents)]
        bodies.append({"model": "local", "query": queries[i % len(queries)], "documents": docs})
    return bodies


def _fire(url: str, bodies: Sequence[dict[str, Any]], clients: int) -> tuple[float, list[float], int]:
    """Send ``bodies`` from ``clients`` threads (each its own connection); (wall seconds, latencies, errors)."""
    import httpx

    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0
    start = threading.Barrier(clients + 1)

    def client() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=600) as http:
            start.wait()
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                response = http.post("/v2/rerank", json=bodies[i])
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    errors += response.status_code != 200

    threads = [threading.Thread(target=client, name=f"bench-client-{k}") for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies, errors


def run_serve_benchmark(
    reranker: Reranker,
    *,
    clients: int = 8,
    documents: int = 20,
    requests: int = 64,
    batching: Iterable[bool] = (False, True),
    corpus: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    max_batch: int = 256,
    batch_wait_ms: float = 5.0,
    warmup: int | None = None,
) -> ServeBenchReport:
    """Serve ``reranker`` on loopback once per ``batching`` mode and time the same requests in every mode.

    Args:
        reranker: The reranker the server runs.
        clients: Concurrent clients, each with one request out at a time.
        documents: Documents per request.
        requests: Timed requests per mode.
        batching: The modes to run, in order (dynamic batching off / on).
        corpus: Texts to send (default: the bundled sample corpus).
        queries: Queries to send (default: the demo queries).
        max_batch: Pairs merged into one model call with batching on.
        batch_wait_ms: Batching wait once the queue is empty.
        warmup: Untimed requests first in each mode (default: ``clients``).

    Returns:
        One :class:`ServeModeResult` per mode, and the load average at the end.

    Raises:
        InvalidParameterError: ``clients``, ``documents`` or ``requests`` is not a positive integer, or the
            corpus or queries are empty.
    """
    for value, name in [(clients, "clients"), (documents, "documents"), (requests, "requests")]:
        check_positive_int(value, name)
    if corpus is None or queries is None:
        from ..demo import DEMO_QUERIES, load_sample_corpus

        corpus = corpus or [d["text"] for d in load_sample_corpus()]
        queries = queries or DEMO_QUERIES
    if not corpus or not queries:
        raise InvalidParameterError("run_serve_benchmark needs a non-empty corpus and queries")
    modes = list(batching)
    warm = _request_bodies(corpus, list(reversed(queries)), documents, clients if warmup is None else warmup)
    bodies = _request_bodies(corpus, queries, documents, requests)
    report = ServeBenchReport(getattr(reranker, "name", type(reranker).__name__), clients, documents, requests)
    for mode in modes:
        report.modes.append(
            _time_mode(
                reranker,
                warm,
                bodies,
                batching=mode,
                max_batch=max_batch,
                batch_wait_ms=batch_wait_ms,
                clients=clients,
                documents=documents,
            )
        )
    if hasattr(os, "getloadavg"):
        report.load_average = tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[assignment]
    return report


def _time_mode(
    reranker: Reranker,
    warm: Sequence[dict[str, Any]],
    bodies: Sequence[dict[str, Any]],
    *,
    batching: bool,
    max_batch: int,
    batch_wait_ms: float,
    clients: int,
    documents: int,
) -> ServeModeResult:
    """Serve ``reranker`` on loopback in one mode, send ``warm`` untimed, then time ``bodies``."""
    from ..server import create_app, serve_in_thread

    app = create_app(
        reranker,
        batching=batching,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        max_queue=max(clients, 1) * 2,  # never sheds load here: every client has at most one request out
        max_documents=max(documents, 1000),
    )
    with serve_in_thread(app) as url:
        if warm:
            _fire(url, warm, clients)
        before = app.state.service.stats()
        seconds, latencies, errors = _fire(url, bodies, clients)
        after = app.state.service.stats()
    return ServeModeResult(
        batching=batching,
        requests=len(bodies),
        errors=errors,
        seconds=seconds,
        requests_per_s=len(bodies) / seconds,
        pairs_per_s=len(bodies) * documents / seconds,
        p50_ms=_percentile(latencies, 50) * 1000,
        p95_ms=_percentile(latencies, 95) * 1000,
        batches=after["batches"] - before["batches"],
        merged_batches=after["merged_batches"] - before["merged_batches"],
        largest_batch=after["largest_batch"],
    )
