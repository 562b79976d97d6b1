"""Serve memory under long load: ``twostage bench-serve --soak N``.

Starts ``twostage serve`` as a real subprocess on 127.0.0.1, sends ``N`` Cohere ``/v2/rerank`` requests built
from real text (a random query, random documents, each cut to a random window of words, so the tokenizer, the
engine and the allocator see realistic variety in shapes) from ``C`` concurrent httpx clients, and samples the
server process's resident memory (RSS) every ``K`` completed requests. The report says whether memory levels
off: RSS after the first 500 requests (warm-up done) against RSS at the end.

>>> from twostage_integrations.bench.soak import run_soak_benchmark
>>> report = run_soak_benchmark("path/to/ce", backend="onnx", requests=10_000, clients=16)  # doctest: +SKIP
>>> print(report.table())  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError, MissingDependencyError
from ..validation import check_positive_int

logger = logging.getLogger(__name__)

BASELINE_AT = 500  # requests after which the warm-up allocations are done: the reference RSS
MIB = 1024 * 1024
MAX_ERROR_EXAMPLES = 5
# This checkout's CLI (the `twostage` on PATH may belong to another install); PYTHONPATH is passed on.
_CLI = [sys.executable, "-c", "from twostage_integrations.cli import app; app()"]


# -- reading a process's memory ----------------------------------------------------------------------------------
def read_rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes: psutil when installed, else ``VmRSS`` of /proc/PID/status.

    Args:
        pid: The process id.

    Returns:
        Its RSS in bytes.

    Raises:
        ProcessLookupError: The process does not exist (any more).
        MissingDependencyError: No psutil and no /proc (not Linux).
    """
    try:
        import psutil
    except ImportError:
        return _proc_status_kib(pid, "VmRSS") * 1024
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.NoSuchProcess:
        raise ProcessLookupError(f"no process {pid}") from None


def read_peak_rss(pid: int) -> int | None:
    """The highest RSS process ``pid`` ever had (``VmHWM``, Linux only), in bytes; None elsewhere or when gone."""
    try:
        return _proc_status_kib(pid, "VmHWM") * 1024
    except (ProcessLookupError, MissingDependencyError):
        return None


def _proc_status_kib(pid: int, key: str) -> int:
    status = Path(f"/proc/{pid}/status")
    if not Path("/proc/self/status").is_file():
        raise MissingDependencyError("reading a process's memory needs psutil (pip install psutil) or Linux /proc")
    try:
        text = status.read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(f"no process {pid}") from None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])  # "VmRSS:   123456 kB"
    raise ProcessLookupError(f"process {pid} has no {key} (a zombie?)")


def server_environment(pid: int, prefixes: tuple[str, ...] = ("MALLOC_", "OMP_")) -> dict[str, str]:
    """The allocator and thread variables process ``pid`` runs with (from /proc/PID/environ; ``{}`` elsewhere)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode("utf-8", "replace").partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs if k.startswith(prefixes)}


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` shows it (from /proc/cpuinfo), else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall back below
    return platform.processor() or platform.machine()


# -- the report ----------------------------------------------------------------------------------------------------
@dataclass
class SoakReport:
    """What :func:`run_soak` measured. ``samples`` are ``(completed requests, server RSS in bytes)``, the
    first one taken before any request (after the server said ready)."""

    engine: str
    model: str
    requests: int
    clients: int
    documents: int
    doc_words: tuple[int, int] | None
    rss_every: int
    samples: list[tuple[int, int]] = field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss: int | None = None  # VmHWM at the end: catches peaks between samples
    cpu: str = ""
    load_average: tuple[float, float, float] | None = None
    server_env: dict[str, str] = field(default_factory=dict)  # MALLOC_* and thread settings the server ran with
    label: str = ""  # what sets this run apart in a --compare plot (e.g. the code version)

    @property
    def legend(self) -> str:
        """The plot's name for this run: engine, clients, CPU, allocator settings, and ``label``."""
        parts = [f"{self.clients} clients", self.cpu, *(f"{k}={v}" for k, v in self.server_env.items()), self.label]
        return f"{self.engine} ({', '.join(p for p in parts if p)})"

    def _at(self, completed: int) -> int | None:
        """RSS at the first sample taken once ``completed`` requests were done."""
        return next((rss for n, rss in self.samples if n >= completed), None)

    @property
    def rss_baseline(self) -> int | None:
        """RSS after the first :data:`BASELINE_AT` requests (or after all of them, for a shorter run)."""
        return self._at(min(BASELINE_AT, self.requests))

    @property
    def rss_end(self) -> int | None:
        """RSS at the last sample (after the last request)."""
        return self.samples[-1][1] if self.samples else None

    @property
    def ratio(self) -> float | None:
        """``rss_end / rss_baseline``: 1.10 means 10% growth after warm-up."""
        base, end = self.rss_baseline, self.rss_end
        return end / base if base and end is not None else None

    @property
    def rss_max(self) -> int | None:
        """The largest sampled RSS."""
        return max((rss for _, rss in self.samples), default=None)

    @property
    def requests_per_s(self) -> float:
        """Completed requests (errors included) per second of the soak."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Every field and the derived numbers, JSON-ready (what ``--json`` writes, what ``--compare`` reads)."""
        derived = ("rss_baseline", "rss_end", "ratio", "rss_max", "requests_per_s")
        return {**asdict(self), **{name: getattr(self, name) for name in derived}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SoakReport:
        """A report back from :meth:`as_dict` (the derived numbers are recomputed).

        Args:
            data: A dict as written by ``--json``.

        Returns:
            The report.

        Raises:
            InvalidParameterError: ``data`` is not a soak report.
        """
        names = set(cls.__dataclass_fields__)
        if not isinstance(data, Mapping) or not {"engine", "samples", "requests"} <= set(data):
            raise InvalidParameterError("not a soak report (written by twostage bench-serve --soak N --json FILE)")
        fields = {k: v for k, v in data.items() if k in names}
        fields["samples"] = [(int(n), int(rss)) for n, rss in fields.get("samples", [])]
        if fields.get("doc_words") is not None:
            fields["doc_words"] = tuple(fields["doc_words"])
        if fields.get("load_average") is not None:
            fields["load_average"] = tuple(fields["load_average"])
        return cls(**fields)

    def table(self) -> str:
        """A one-row Markdown table (the one in docs/reliability.md) and a line on the setup."""
        base, end, top = self.rss_baseline, self.rss_end, self.rss_max

        def mib(value: int | None) -> str:
            return f"{value / MIB:.0f}" if value is not None else "-"

        ratio = f"{self.ratio:.3f}" if self.ratio is not None else "-"
        at = min(BASELINE_AT, self.requests)
        rows = [
            f"| engine | RSS@{at} MiB | RSS@{self.requests} MiB | ratio | max MiB | errors | requests/s | CPU |",
            "|---|---|---|---|---|---|---|---|",
            f"| {self.engine} | {mib(base)} | {mib(end)} | {ratio} | {mib(top)} | {self.errors} "
            f"| {self.requests_per_s:.1f} | {self.cpu} |",
        ]
        words = f", each cut to {self.doc_words[0]}-{self.doc_words[1]} words" if self.doc_words else ""
        tail = (
            f"{self.requests} requests from {self.clients} clients, {self.documents} documents each{words}; "
            f"RSS every {self.rss_every} requests; {self.seconds:.0f} s; {self.model}"
        )
        if self.peak_rss is not None:
            tail += f"; peak RSS (VmHWM) {mib(self.peak_rss)} MiB"
        if self.load_average is not None:
            tail += "; load average {:.2f} {:.2f} {:.2f}".format(*self.load_average)
        return "\n".join(rows) + "\n\n" + tail


# -- the requests ------------------------------------------------------------------------------------------------
def soak_bodies(
    corpus: Sequence[str],
    queries: Sequence[str],
    *,
    requests: int,
    documents: int = 10,
    doc_words: tuple[int, int] | None = None,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """``requests`` Cohere ``/v2/rerank`` bodies: a random query and ``documents`` random distinct passages each.

    Args:
        corpus: Passage texts.
        queries: Query texts.
        requests: Bodies to yield.
        documents: Documents per body (at most the corpus size).
        doc_words: ``(lo, hi)``: each document is a random window of ``lo..hi`` words of its passage (shorter
            passages whole), so token lengths vary as in real traffic; ``None``: whole passages.
        seed: Seed of the choices (the same seed gives the same bodies).

    Yields:
        ``{"model": "local", "query": ..., "documents": [...]}``.

    Raises:
        InvalidParameterError: An empty corpus or query list, or a count or word range out of range.
    """
    check_positive_int(requests, "requests")
    check_positive_int(documents, "documents")
    if not corpus or not queries:
        raise InvalidParameterError("a soak needs a non-empty corpus and queries")
    if doc_words is not None and not 1 <= doc_words[0] <= doc_words[1]:
        raise InvalidParameterError(f"doc_words must be (lo, hi) with 1 <= lo <= hi, got {doc_words!r}")
    rng = random.Random(seed)
    k = min(documents, len(corpus))
    for _ in range(requests):
        docs = [corpus[i] for i in rng.sample(range(len(corpus)), k)]
        if doc_words is not None:
            docs = [_window(text, doc_words, rng) for text in docs]
        yield {"model": "local", "query": rng.choice(queries), "documents": docs}


def _window(text: str, words: tuple[int, int], rng: random.Random) -> str:
    split = text.split()
    n = rng.randint(*words)
    start = rng.randint(0, max(0, len(split) - n))
    return " ".join(split[start : start + n]) or text


# -- the load ------------------------------------------------------------------------------------------------------
@dataclass
class _Progress:
    """Shared by the client threads: the next body, completions, errors and the RSS samples."""

    bodies: Iterator[dict[str, Any]]
    total: int
    rss_every: int
    read: Callable[[], int]
    on_done: Callable[[int], None] | None
    on_sample: Callable[[int, int, int], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    completed: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)
    samples: list[tuple[int, int]] = field(default_factory=list)

    def sample(self, n: int) -> None:
        rss = self.read()
        self.samples.append((n, rss))
        if self.on_sample is not None:
            self.on_sample(n, rss, self.errors)

    def take(self) -> dict[str, Any] | None:
        with self.lock:
            return next(self.bodies, None)

    def done(self, error: str | None) -> None:
        with self.lock:
            self.completed += 1
            n = self.completed
            if error is not None:
                self.errors += 1
                if len(self.examples) < MAX_ERROR_EXAMPLES:
                    self.examples.append(error)
            # Sampled under the lock, so samples are in order and each count is sampled once.
            if n % self.rss_every == 0 or n == self.total or n == min(BASELINE_AT, self.total):
                self.sample(n)
        if self.on_done is not None:
            self.on_done(n)


def _client(url: str, state: _Progress, start: threading.Barrier) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=600) as http:
        start.wait()
        while (body := state.take()) is not None:
            try:
                response = http.post("/v2/rerank", json=body)
            except httpx.HTTPError as exc:  # counted: a soak must end with zero of these
                state.done(f"{type(exc).__name__}: {exc}")
                continue
            state.done(_answer_error(response, len(body["documents"])))


def _answer_error(response: Any, n_documents: int) -> str | None:
    """Why an answer is not a full ranking, or None when it is one."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    try:
        results = response.json().get("results")
    except ValueError:
        return f"HTTP 200 with a body that is not JSON: {response.text[:200]}"
    if not isinstance(results, list) or len(results) != n_documents:
        got = len(results) if isinstance(results, list) else "no"
        return f"HTTP 200 with {got} results for {n_documents} documents"
    return None


def run_soak(
    url: str,
    read: Callable[[], int],
    bodies: Iterable[dict[str, Any]],
    *,
    requests: int,
    clients: int = 16,
    rss_every: int = 100,
    on_done: Callable[[int], None] | None = None,
    on_sample: Callable[[int, int, int], None] | None = None,
) -> tuple[list[tuple[int, int]], int, list[str], float]:
    """Send ``requests`` of ``bodies`` to ``{url}/v2/rerank`` from ``clients`` threads (one request out each) and
    sample ``read()`` before the first request, every ``rss_every`` completions, after the first
    :data:`BASELINE_AT` and after the last.

    Args:
        url: The server's base URL.
        read: Returns the server's RSS in bytes (e.g. ``lambda: read_rss(pid)``).
        bodies: Request bodies (at least ``requests`` of them; extra ones are not sent).
        requests: Requests to send.
        clients: Concurrent clients.
        rss_every: Completed requests between samples.
        on_done: Called with the completed count after each request (a progress bar).
        on_sample: Called with ``(completed, rss, errors so far)`` after each sample (to save a long run as it
            goes).

    Returns:
        ``(samples, errors, error examples, seconds)``; an error is a transport failure, a status other than 200
        or an answer without one result per document.

    Raises:
        InvalidParameterError: A count below 1.
    """
    for value, name in [(requests, "requests"), (clients, "clients"), (rss_every, "rss_every")]:
        check_positive_int(value, name)
    state = _Progress(itertools.islice(bodies, requests), requests, rss_every, read, on_done, on_sample)
    state.sample(0)
    start = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=_client, args=(url, state, start), name=f"soak-{k}") for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if state.completed < requests:  # fewer bodies than requests
        raise InvalidParameterError(f"only {state.completed} request bodies for a soak of {requests}")
    return state.samples, state.errors, state.examples, seconds


# -- the server --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_subprocess(
    model: str, *, backend: str | None = None, args: Sequence[str] = (), ready_timeout: float = 900
) -> Iterator[tuple[str, int]]:
    """``twostage serve --model MODEL`` as a subprocess on a free 127.0.0.1 port, with the server's defaults
    (plus ``--rerank-backend`` and ``args``), until it answers ``GET /ready``; SIGTERM (then kill) on exit.

    Args:
        model: Cross-encoder folder or hub id.
        backend: ``--rerank-backend`` (``None``: the server's default).
        args: More ``twostage serve`` options.
        ready_timeout: Seconds to wait for ``/ready`` (an ONNX export on first use takes a while).

    Yields:
        ``(base URL, server pid)``.

    Raises:
        RuntimeError: The server exited or was not ready in time (the message quotes its stderr's end).
    """
    from ..server import wait_until_ready

    port = _free_port()
    cmd = [*_CLI, "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port), *args]
    if backend is not None:
        cmd += ["--rerank-backend", backend]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:  # the server's stderr: one line per request, read only on failure
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + ready_timeout
            while True:
                try:
                    wait_until_ready(url, timeout=2)
                    break
                except TimeoutError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        tail = log.read().decode("utf-8", "replace")[-2000:]
                        raise RuntimeError(f"twostage serve (exit code {proc.poll()}) was not ready:\n{tail}") from None
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_soak_benchmark(
    model: str,
    *,
    backend: str | None = None,
    requests: int = 10_000,
    clients: int = 16,
    rss_every: int = 100,
    documents: int = 10,
    doc_words: tuple[int, int] | None = None,
    corpus: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    server_args: Sequence[str] = (),
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
) -> SoakReport:
    """Serve ``model`` in a ``twostage serve`` subprocess and soak it (see :func:`run_soak`).

    Args:
        model: Cross-encoder folder or hub id.
        backend: Engine (``onnx``, ``onnx-int8``, ``torch``; ``None``: the server's default).
        requests: Requests to send.
        clients: Concurrent clients.
        rss_every: Completed requests between RSS samples.
        documents: Documents per request.
        doc_words: Cut each document to a random window of ``lo..hi`` words (``None``: whole passages).
        corpus: Passage texts (default: the bundled sample corpus).
        queries: Query texts (default: the demo queries).
        server_args: More ``twostage serve`` options.
        seed: Seed of the request bodies.
        progress: Show a tqdm progress bar (stderr).
        checkpoint: Rewrite the report so far to this JSON file after every RSS sample, so a long run that is
            stopped still leaves its curve.

    Returns:
        The report (errors must be 0 for a valid run; the caller decides what to do with them).

    Raises:
        InvalidParameterError: A count out of range or an empty corpus.
        RuntimeError: The server did not start.
    """
    from tqdm.auto import tqdm

    from ..rerank.onnx import resolve_backend

    if corpus is None or queries is None:
        from ..demo import DEMO_QUERIES, load_sample_corpus

        corpus = corpus or [d["text"] for d in load_sample_corpus()]
        queries = queries or DEMO_QUERIES
    bodies = soak_bodies(corpus, queries, requests=requests, documents=documents, doc_words=doc_words, seed=seed)
    engine = resolve_backend(backend)
    report = SoakReport(engine, model, requests, clients, min(documents, len(corpus)), doc_words, rss_every)
    report.cpu = cpu_model()

    def on_sample(n: int, rss: int, errors: int) -> None:
        report.samples.append((n, rss))
        report.errors = errors
        if checkpoint is not None:
            write_soak_json(report, checkpoint)

    with serve_subprocess(model, backend=engine, args=server_args) as (url, pid):
        report.server_env = server_environment(pid)
        with tqdm(total=requests, desc=f"soak {engine}", unit="req", disable=not progress, mininterval=2) as bar:
            report.samples, report.errors, report.error_examples, report.seconds = run_soak(
                url,
                lambda: read_rss(pid),
                bodies,
                requests=requests,
                clients=clients,
                rss_every=rss_every,
                on_done=lambda n: bar.update(1),
                on_sample=on_sample,
            )
        report.peak_rss = read_peak_rss(pid)
    if hasattr(os, "getloadavg"):
        report.load_average = tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[assignment]
    for example in report.error_examples:
        logger.warning("soak request failed: %s", example)
    return report


# -- saving ---------------------------------------------------------------------------------------------------------
def write_soak_json(report: SoakReport, path: str | os.PathLike[str]) -> Path:
    """Write ``report.as_dict()`` to ``path``; returns the path."""
    out = Path(path)
    out.write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
    return out


def read_soak_json(path: str | os.PathLike[str]) -> SoakReport:
    """A report written by :func:`write_soak_json` (``--json``).

    Raises:
        InvalidParameterError: The file is missing, not JSON or not a soak report.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidParameterError(f"cannot read soak report {path}: {exc}") from None
    return SoakReport.from_dict(data)
