"""Property-based fuzzing of every route of ``twostage serve`` from the app's own OpenAPI schema (schemathesis),
in-process (ASGI), with the fake reranker: no weights, no sockets.

Every generated request (bodies valid by the schema and mutated ones that break it) must get:

* no 5xx other than the documented 503/504 (the fake reranker never fails, so a 500 is a server bug);
* a response the schema declares: status, content type and body (schemathesis' conformance checks);
* an error body in the route's own shape and nothing else (TEI ``{"error", "error_type"}`` with a TEI
  ``ErrorType``; ``/v1/rerank`` ``{"message", "detail"}``; Cohere v2 ``{"message"}``);
* nothing held beyond the limits: a 2xx never ranks more than ``max_documents`` documents or answers a body over
  ``max_body_bytes``, the model is never called with more than ``max_documents`` texts, and once answered no
  request is left in the queue.

``TWOSTAGE_FUZZ_EXAMPLES`` sets the examples per route (default 200, about 15 s on one core; the long run is
``TWOSTAGE_FUZZ_EXAMPLES=2000``, see docs/reliability.md). With ``-s`` the requests sent per route are printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, cast

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from schemathesis.checks import (  # noqa: E402 - after the importorskip (the public name of the checks)
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode  # noqa: E402

from twostage_integrations.server import create_app, routes  # noqa: E402
from twostage_integrations.server.schemas import TEI_ROUTE, V1_ROUTE, V2_ROUTE, ErrorKind  # noqa: E402
from twostage_integrations.testing import FakeReranker  # noqa: E402

EXAMPLES = int(os.environ.get("TWOSTAGE_FUZZ_EXAMPLES", "200"))
MAX_DOCUMENTS = 8
MAX_BODY_BYTES = 2048
MAX_QUEUE = 4
RERANK_ROUTES = {V2_ROUTE: "results", V1_ROUTE: "results", TEI_ROUTE: None}  # where a 2xx lists its ranking
# The keys of each route's error body (schemas.error_body); every other path answers Cohere v2's.
ERROR_KEYS = {TEI_ROUTE: {"error", "error_type"}, V1_ROUTE: {"message", "detail"}}
V2_ERROR_KEYS = {"message"}


def make_app(reranker: FakeReranker) -> Any:
    return create_app(
        reranker, max_documents=MAX_DOCUMENTS, max_body_bytes=MAX_BODY_BYTES, max_queue=MAX_QUEUE, batch_wait_ms=0
    )


# The schema comes from an app of its own: schemathesis ends an app's lifespan (which stops its service) when the
# test that started it ends, so each route's test serves a fresh app (the ``served`` fixture).
schema = schemathesis.openapi.from_asgi("/openapi.json", make_app(FakeReranker()))
sent: Counter[str] = Counter()  # requests per route, for the report
statuses: Counter[tuple[str, int]] = Counter()


@pytest.fixture
def served() -> tuple[Any, FakeReranker]:
    """A fresh app and its reranker for one route's examples."""
    reranker = FakeReranker()
    return make_app(reranker), reranker


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if sent:
        print(f"\nfuzz requests per route ({EXAMPLES} examples asked): {dict(sorted(sent.items()))}")
        print(f"statuses: {dict(sorted(statuses.items()))}")


def check_error_shape(path: str, status: int, body: Any) -> None:
    """The refusal is in the route's own error shape, with a message a person can read."""
    assert isinstance(body, dict), f"{status} on {path}: the error body is not an object: {body!r}"
    keys = ERROR_KEYS.get(path, V2_ERROR_KEYS)
    assert set(body) == keys, f"{status} on {path}: error keys {sorted(body)}, expected {sorted(keys)}"
    message = body.get("error", body.get("message"))
    assert isinstance(message, str) and message.strip(), f"{status} on {path}: no message in {body!r}"
    if path == TEI_ROUTE:
        assert body["error_type"] in {kind.value for kind in ErrorKind}, body
    if path == V1_ROUTE:
        assert body["detail"] == body["message"], body


def check_within_limits(path: str, sent_body: bytes, body: Any) -> None:
    """A 2xx ranks at most ``max_documents`` documents, from a body of at most ``max_body_bytes``."""
    assert len(sent_body) <= MAX_BODY_BYTES, f"a {len(sent_body)}-byte body was answered on {path}"
    ranking = body if RERANK_ROUTES[path] is None else body[RERANK_ROUTES[path]]
    assert len(ranking) <= MAX_DOCUMENTS, f"{len(ranking)} results on {path}, above max_documents"
    indices = [r["index"] for r in ranking]
    assert len(set(indices)) == len(indices) and all(0 <= i < MAX_DOCUMENTS for i in indices), indices


def check_nothing_held(app: Any, reranker: FakeReranker) -> None:
    """Once a request is answered, it holds no queue slot and the model never saw more than the limit."""
    service = app.state.service
    assert service.counters["in_progress"] == 0 and service.pending_pairs == 0, service.stats()
    assert all(n <= MAX_DOCUMENTS for _, n in reranker.calls), reranker.calls


def expected_for_valid(path: str, payload: dict[str, Any], n_bytes: int) -> tuple[int, str]:
    """What a body valid by the declared schema must get: 200, unless a limit or a documented runtime refusal
    applies (``raw_scores`` the fake's scores cannot invert; ``/v1/rerank``'s ``top_n`` and ``top_k``
    disagreeing). Returns the status and a phrase the refusal's message contains."""
    n_documents = len(payload["texts" if path == TEI_ROUTE else "documents"])
    counts = {V2_ROUTE: ("top_n", "max_tokens_per_doc"), V1_ROUTE: ("top_n", "top_k"), TEI_ROUTE: ()}[path]
    if n_bytes > MAX_BODY_BYTES:
        return 413, "request body"
    if n_documents > MAX_DOCUMENTS:
        return 413, "too many documents"
    # JSON Schema's "integer" admits 1.0; the routes take counts as JSON integers only (documented in the schema)
    if any(isinstance(payload.get(k), float) for k in counts):
        return 400, "must be an integer"
    top_n, top_k = payload.get("top_n"), payload.get("top_k")
    both = path == V1_ROUTE and isinstance(top_n, int) and isinstance(top_k, int)
    if both and min(cast(int, top_n), n_documents) != min(cast(int, top_k), n_documents):
        return 400, "disagree"
    if payload.get("raw_scores"):
        return 400, "raw_scores is not available"
    return 200, ""


def sent_bytes(response: Any) -> bytes:
    body = response.request.body or b""
    return body if isinstance(body, bytes) else body.encode()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_route_answers_generated_requests_within_its_contract(
    case: Any, served: tuple[Any, FakeReranker]
) -> None:
    app, reranker = served
    response = case.call(app=app)
    path = case.operation.path
    status = response.status_code
    sent[f"{case.operation.label}"] += 1
    statuses[(case.operation.label, status)] += 1
    assert status < 500 or status in (503, 504), f"{status} on {path}: {response.text[:500]}"
    case.validate_response(
        response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
    )
    body = response.json()
    if status >= 400:
        check_error_shape(path, status, body)
    elif path in RERANK_ROUTES:
        check_within_limits(path, sent_bytes(response), body)
    meta = getattr(case, "meta", None)
    valid = meta is not None and meta.generation.mode == GenerationMode.POSITIVE
    if valid and case.method == "POST" and path in RERANK_ROUTES and isinstance(case.body, dict):
        # The declared schema is honest: what it calls valid, the route accepts (bar limits and runtime refusals).
        want, phrase = expected_for_valid(path, case.body, len(sent_bytes(response)))
        assert status == want, f"valid body {case.body!r} on {path}: {status} {response.text[:300]}"
        assert phrase in response.text
    check_nothing_held(app, reranker)


# -- limits no request can get past -------------------------------------------------------------------------
def error_message(path: str, body: dict[str, Any]) -> str:
    check_error_shape(path, 0, body)
    return str(body.get("error", body.get("message")))


@pytest.fixture
def client() -> Iterator[tuple[TestClient, Any, FakeReranker]]:
    reranker = FakeReranker()
    app = make_app(reranker)
    yield TestClient(app), app, reranker
    app.state.service.close()


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@given(
    path=st.sampled_from(sorted(RERANK_ROUTES)),
    padding=st.integers(min_value=0, max_value=3 * MAX_BODY_BYTES),
    chunk=st.integers(min_value=1, max_value=MAX_BODY_BYTES),
    declare_length=st.sampled_from(["honest", "absent", "too small", "not a number"]),
)
@settings(max_examples=max(50, EXAMPLES // 4), deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_body_over_the_byte_limit_is_taken_whatever_its_length_header(
    client: tuple[TestClient, Any, FakeReranker], path: str, padding: int, chunk: int, declare_length: str
) -> None:
    http, app, reranker = client
    key = "texts" if path == TEI_ROUTE else "documents"
    body = json.dumps({"query": "aspirin", key: ["aspirin"], "padding": "x" * padding}).encode()
    headers = {"content-type": "application/json"}
    if declare_length == "honest":
        content: Any = body  # httpx sends Content-Length
    else:
        content = _chunks(body, chunk)  # chunked: no Content-Length, the server counts as it reads
        if declare_length == "too small":
            headers["content-length"] = "10"
        elif declare_length == "not a number":
            headers["content-length"] = "lots"
    calls_before = len(reranker.calls)
    response = http.post(path, content=content, headers=headers)  # the test transport sends headers as given
    if len(body) > MAX_BODY_BYTES:
        assert response.status_code == 413, response.text
        assert "limit" in error_message(path, response.json())
        assert len(reranker.calls) == calls_before  # never scored
    else:
        assert response.status_code == 200, response.text
    check_nothing_held(app, reranker)


class _Gate(FakeReranker):
    """Holds every model call until released, so requests pile up in the queue."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        self.entered.set()
        self.release.wait(timeout=30)
        return super().score(query, texts)


@given(path=st.sampled_from(sorted(RERANK_ROUTES)), extra=st.integers(min_value=1, max_value=6))
@settings(max_examples=10, deadline=None, database=None)
def test_no_burst_gets_more_than_max_queue_requests_admitted(path: str, extra: int) -> None:
    reranker = _Gate()
    app = create_app(reranker, max_documents=MAX_DOCUMENTS, max_queue=MAX_QUEUE, batching=False)
    key = "texts" if path == TEI_ROUTE else "documents"
    peak = 0

    async def burst() -> list[httpx.Response]:
        nonlocal peak
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            tasks = [
                asyncio.ensure_future(http.post(path, json={"query": "q", key: ["q", "r"]}))
                for _ in range(MAX_QUEUE + extra)
            ]
            while sum(t.done() for t in tasks) < extra:  # the refused ones answer at once
                peak = max(peak, app.state.service.counters["in_progress"])
                await asyncio.sleep(0.01)
            peak = max(peak, app.state.service.counters["in_progress"])
            reranker.release.set()
            return list(await asyncio.gather(*tasks))

    try:
        responses = asyncio.run(asyncio.wait_for(burst(), timeout=60))
    finally:
        reranker.release.set()
        app.state.service.close()
    codes = Counter(r.status_code for r in responses)
    assert codes == {200: MAX_QUEUE, 429: extra}, codes
    assert peak == MAX_QUEUE
    for r in responses:
        if r.status_code == 429:
            assert "capacity" in error_message(path, r.json()) and int(r.headers["retry-after"]) >= 1
    assert app.state.service.counters["in_progress"] == 0


# -- what the fuzzing found: each once answered 500 "Internal Server Error" as plain text --------------------------
@pytest.mark.parametrize("path", sorted(RERANK_ROUTES))
@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        # a lone surrogate decodes to a str no response can encode (it crashed rendering the returned document)
        (
            b'{"query": "q \\ud800", "documents": ["\\ud800"], "texts": ["\\udc00"], "return_documents": true}',
            "surrogate",
        ),
        # Python refuses int() of more than 4,300 digits with a ValueError that is not a JSONDecodeError
        (b'{"query": "q", "documents": ["a"], "texts": ["a"], "top_n": ' + b"9" * 5000 + b"}", "not valid JSON"),
        # nesting past the parser's recursion limit (100,000 brackets fit under the default 8 MiB)
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    ],
    ids=["lone-surrogate", "5000-digit-integer", "deep-nesting"],
)
def test_bodies_that_crashed_the_parser_are_refused_in_the_route_shape(path: str, body: bytes, phrase: str) -> None:
    reranker = FakeReranker()
    app = create_app(reranker)  # default limits: these bodies fit under them
    try:
        response = TestClient(app).post(path, content=body, headers={"content-type": "application/json"})
    finally:
        app.state.service.close()
    assert response.status_code == 400, response.text
    assert phrase in error_message(path, response.json())


def test_a_surrogate_pair_is_still_one_character() -> None:
    app = create_app(FakeReranker())
    body = b'{"query": "smile \\ud83d\\ude00", "texts": ["\\ud83d\\ude00"], "return_text": true}'
    try:
        response = TestClient(app).post(TEI_ROUTE, content=body, headers={"content-type": "application/json"})
    finally:
        app.state.service.close()
    assert response.status_code == 200 and response.json()[0]["text"] == "\U0001f600"


@pytest.mark.parametrize("path", sorted(RERANK_ROUTES))
def test_an_unexpected_exception_is_a_500_in_the_route_shape(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(routes, "rank_order", broken)
    app = create_app(FakeReranker())
    key = "texts" if path == TEI_ROUTE else "documents"
    try:
        response = TestClient(app, raise_server_exceptions=False).post(path, json={"query": "q", key: ["q"]})
    finally:
        app.state.service.close()
    assert response.status_code == 500
    assert "KeyError" in error_message(path, response.json())
