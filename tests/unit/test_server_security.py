"""Security basics of ``twostage serve``: the API key compared in constant time, keys and user text never in
any log record (including failing requests), ``--host`` 127.0.0.1 by default, CORS off unless asked, and every
request limit a flag with a documented default. A model-free fake reranker, no weights."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from twostage_integrations.cli import app as cli_app
from twostage_integrations.cli import serve as serve_cli
from twostage_integrations.server import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DOCUMENTS,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_MAX_QUEUE,
    create_app,
    routes,
    serve_in_thread,
)
from twostage_integrations.testing import FakeReranker

KEY = "sk-KEYMARK-7f3a91c2"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "cohere_and_serve.md"


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- the key ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {KEY[:-1]}x",  # same length, last character wrong
        f"Bearer {KEY}x",  # one character longer
        f"Bearer {KEY[:4]}",  # a prefix
        KEY,  # no "Bearer "
        "",
    ],
)
def test_a_wrong_key_of_any_length_gets_401_through_a_constant_time_compare(header, monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real = routes.secrets.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(routes.secrets, "compare_digest", spy)
    with TestClient(create_app(FakeReranker(), api_key=KEY)) as http:
        body = {"query": "q", "documents": ["a"]}
        refused = http.post("/v2/rerank", json=body, headers={"Authorization": header} if header else {})
        accepted = http.post("/v2/rerank", json=body, headers=_auth())
    assert refused.status_code == 401 and KEY not in refused.text
    assert accepted.status_code == 200
    assert compared == [(header.encode(), f"Bearer {KEY}".encode()), (f"Bearer {KEY}".encode(),) * 2]


# -- nothing secret in logs -----------------------------------------------------------------------------------
class LeakyReranker(FakeReranker):
    """Merges queries (so the service batches); waits for ``gate`` while ``hold`` is set; raises with the
    document's text in its message for a document containing ``explode``, as a real tokenizer error might."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.entered.set()
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        for query, text in pairs:
            if "explode" in text:
                raise RuntimeError(f"cannot tokenize {text!r} for query {query!r}")
        return self.score(pairs[0][0], [t for _, t in pairs])


UVICORN_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error")


@pytest.fixture
def every_log_record(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG on the package's loggers; call :func:`_capture_uvicorn` once the server has configured
    uvicorn's (they do not propagate to the root, and uvicorn's config replaces their handlers)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="twostage_integrations")
    yield caplog
    for name in UVICORN_LOGGERS:
        logging.getLogger(name).removeHandler(caplog.handler)


def _capture_uvicorn(caplog: pytest.LogCaptureFixture) -> None:
    for name in UVICORN_LOGGERS:
        logging.getLogger(name).addHandler(caplog.handler)
        caplog.set_level(logging.DEBUG, logger=name)  # restored by caplog afterwards


def _send_everything(url: str, reranker: LeakyReranker) -> dict[str, int]:
    """One request of each kind, each carrying marker text; the status each got."""
    post = httpx.Client(base_url=url, timeout=30).post
    statuses: dict[str, int] = {}
    body = {"query": "QMARK-ok aspirin", "documents": ["DMARK-ok aspirin", "DMARK-ok2"]}
    statuses["ok"] = post("/v2/rerank", json=body, headers=_auth()).status_code
    statuses["tei"] = post("/rerank", json={"query": "QMARK-tei", "texts": ["DMARK-tei"]}, headers=_auth()).status_code
    statuses["v1"] = post(
        "/v1/rerank", json={"query": "QMARK-v1", "documents": ["DMARK-v1"]}, headers=_auth()
    ).status_code
    wrong = _auth("sk-WRONGKEYMARK")
    statuses["wrong key"] = post(
        "/v2/rerank", json={"query": "QMARK-401", "documents": ["x"]}, headers=wrong
    ).status_code
    bad = b'{"query": "QMARK-badjson", "documents": ["DMARK-badjson"'
    statuses["bad json"] = post("/v2/rerank", content=bad, headers=_auth()).status_code
    big = {"query": "QMARK-big", "documents": ["DMARK-big " * 1000]}
    statuses["body too large"] = post("/v2/rerank", json=big, headers=_auth()).status_code
    many = {"query": "QMARK-many", "documents": ["DMARK-many"] * 4}
    statuses["too many documents"] = post("/v2/rerank", json=many, headers=_auth()).status_code
    long_query = {"query": "QMARK-long " * 20, "documents": ["DMARK-long"]}
    statuses["query too long"] = post("/v1/rerank", json=long_query, headers=_auth()).status_code
    bad_top = {"query": "QMARK-top", "documents": ["DMARK-top"], "top_n": "TOPMARK"}
    statuses["bad top_n"] = post("/v2/rerank", json=bad_top, headers=_auth()).status_code
    boom = {"query": "QMARK-500", "documents": ["DMARK-explode"]}
    statuses["reranker raises"] = post("/v2/rerank", json=boom, headers=_auth()).status_code
    # 429: one request holds the only queue place while the model is gated
    reranker.gate.clear()
    reranker.entered.clear()
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(
            post, "/v2/rerank", json={"query": "QMARK-held", "documents": ["DMARK-held"]}, headers=_auth()
        )
        assert reranker.entered.wait(10)
        full = {"query": "QMARK-429", "documents": ["DMARK-429"]}
        statuses["queue full"] = post("/v2/rerank", json=full, headers=_auth()).status_code
        reranker.gate.set()
        statuses["held"] = held.result().status_code
    return statuses


def test_no_key_query_or_document_text_in_any_log_record(every_log_record):
    reranker = LeakyReranker()
    server_app = create_app(
        reranker, api_key=KEY, max_documents=3, max_body_bytes=4096, max_query_chars=100, max_queue=1, max_batch=64
    )
    with serve_in_thread(server_app) as url:
        _capture_uvicorn(every_log_record)
        statuses = _send_everything(url, reranker)
    assert statuses == {
        "ok": 200, "tei": 200, "v1": 200, "wrong key": 401, "bad json": 400, "body too large": 413,
        "too many documents": 413, "query too long": 400, "bad top_n": 400, "reranker raises": 500,
        "queue full": 429, "held": 200,
    }  # fmt: skip
    records = every_log_record.records
    assert any(r.name == "twostage_integrations.server.requests" for r in records)  # the request log was on
    assert any("RuntimeError" in r.getMessage() for r in records)  # the failure is logged, by its type
    assert any(r.name.startswith("uvicorn") for r in records)  # uvicorn's loggers were captured too
    formatter = logging.Formatter("%(name)s %(message)s")
    text = "\n".join(formatter.format(r) for r in records) + every_log_record.text
    for marker in ("KEYMARK", "QMARK", "DMARK", "TOPMARK", "explode"):
        assert marker not in text, f"{marker} leaked into the logs:\n{text}"


# -- CORS -----------------------------------------------------------------------------------------------------
PREFLIGHT = {
    "Origin": "https://app.example.com",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_cors_is_off_by_default():
    with TestClient(create_app(FakeReranker(), api_key=KEY)) as http:
        preflight = http.options("/v2/rerank", headers=PREFLIGHT)
        post = http.post("/v2/rerank", json={"query": "q", "documents": ["a"]}, headers={**_auth(), **PREFLIGHT})
    assert preflight.status_code == 405
    assert post.status_code == 200
    for response in (preflight, post):
        assert not any(h.lower().startswith("access-control-") for h in response.headers)


def test_cors_origins_allow_those_origins_only():
    server_app = create_app(FakeReranker(), api_key=KEY, cors_origins=["https://app.example.com"])
    with TestClient(server_app) as http:
        allowed = http.options("/v2/rerank", headers=PREFLIGHT)
        other = http.options("/v2/rerank", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        post = http.post("/v2/rerank", json={"query": "q", "documents": ["a"]}, headers={**_auth(), **PREFLIGHT})
        unauthorised = http.post("/v2/rerank", json={"query": "q", "documents": ["a"]}, headers=PREFLIGHT)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert post.status_code == 200 and post.headers["access-control-allow-origin"] == "https://app.example.com"
    assert unauthorised.status_code == 401  # CORS lets the browser call, the key is still required


# -- the query limit -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("route", "key"), [("/v2/rerank", "message"), ("/rerank", "error"), ("/v1/rerank", "detail")])
def test_a_query_over_max_query_chars_gets_400_in_the_route_shape(route, key):
    reranker = FakeReranker()
    docs = "texts" if route == "/rerank" else "documents"
    with TestClient(create_app(reranker, max_query_chars=10)) as http:
        at_limit = http.post(route, json={"query": "q" * 10, docs: ["a"]})
        over = http.post(route, json={"query": "q" * 11, docs: ["a"]})
    assert at_limit.status_code == 200
    assert over.status_code == 400
    assert over.json()[key] == "invalid request: query is 11 characters, more than the limit of 10; shorten it"
    assert [n for _, n in reranker.calls] == [1]  # the long query never reached the model


def test_limits_must_be_positive():
    from twostage_integrations.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="max_query_chars"):
        create_app(FakeReranker(), max_query_chars=0)


# -- the command line -------------------------------------------------------------------------------------------
def _serve_params() -> dict[str, Any]:
    command = typer.main.get_command(cli_app)
    serve = command.commands["serve"]  # type: ignore[attr-defined]
    return {p.name: p for p in serve.params}


def test_serve_defaults_keep_the_server_local_and_every_limit_has_a_flag():
    params = _serve_params()
    assert params["host"].default == "127.0.0.1"
    assert params["cors_origin"].default is None and params["cors_origin"].multiple
    assert params["max_documents"].default == DEFAULT_MAX_DOCUMENTS
    assert params["max_body_bytes"].default == DEFAULT_MAX_BODY_BYTES
    assert params["max_query_chars"].default == DEFAULT_MAX_QUERY_CHARS
    assert params["max_queue"].default == DEFAULT_MAX_QUEUE


def test_every_limit_flag_is_documented_with_its_default():
    table = DOCS.read_text(encoding="utf-8")
    params = _serve_params()
    for flag, name, shown in [
        ("--max-documents", "max_documents", "1,000"),
        ("--max-body-bytes", "max_body_bytes", "8,388,608 (8 MiB)"),
        ("--max-query-chars", "max_query_chars", "8,192"),
        ("--max-queue", "max_queue", "64"),
        ("--cors-origin", "cors_origin", "off"),
        ("--host", "host", "127.0.0.1"),
    ]:
        row = re.search(rf"^\| `{flag}[^|]*` \| ([^|]+) \|", table, re.MULTILINE)
        assert row, f"no row for {flag} in {DOCS.name}"
        assert row.group(1).strip() == shown, flag
        default = params[name].default
        if isinstance(default, int):
            assert shown.split()[0].replace(",", "") == str(default), flag


def test_serve_passes_the_flags_to_the_app(monkeypatch):
    built: dict[str, Any] = {}
    monkeypatch.setattr(serve_cli, "_local_model_name", lambda model: "fake")
    monkeypatch.setattr(serve_cli, "_loader", lambda *args: FakeReranker)
    monkeypatch.setattr(serve_cli, "_listen", lambda host, port: ([], 8080))
    monkeypatch.setattr(serve_cli, "_route_server_logs", lambda log_requests: None)

    def run(server_app: Any, *args: Any) -> None:
        built["app"] = server_app
        server_app.state.service.close()

    monkeypatch.setattr(serve_cli, "_run_until_stopped", run)
    args = ["serve", "--max-body-bytes", "100", "--max-query-chars", "5", "--max-documents", "2"]
    args += ["--cors-origin", "https://a.example", "--cors-origin", "https://b.example"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    settings = built["app"].state.settings
    assert (settings.max_body_bytes, settings.max_query_chars, settings.max_documents) == (100, 5, 2)
    with TestClient(built["app"]) as http:
        for origin in ("https://a.example", "https://b.example"):
            preflight = http.options("/v2/rerank", headers={**PREFLIGHT, "Origin": origin})
            assert preflight.headers.get("access-control-allow-origin") == origin
        over = http.post("/v2/rerank", json={"query": "q" * 6, "documents": ["a"]})
    assert over.status_code == 400 and "limit of 5" in json.dumps(over.json())


@pytest.mark.parametrize("flag", ["--max-body-bytes", "--max-query-chars", "--max-documents", "--max-queue"])
def test_a_limit_below_one_is_refused_before_anything_starts(flag, monkeypatch):
    monkeypatch.setattr(serve_cli, "_local_model_name", lambda model: "fake")
    monkeypatch.setattr(serve_cli, "_listen", lambda host, port: pytest.fail("bound a port with a bad limit"))
    result = CliRunner().invoke(cli_app, ["serve", flag, "0"])
    assert result.exit_code == 2 and f"error: {flag} must be >= 1, got 0" in result.output


def test_a_failed_merged_batch_is_logged_without_its_text(caplog):
    """The merged-call failure path (retried one by one) names the exception's type only."""
    from twostage_integrations.server import RerankService

    reranker = LeakyReranker()
    service = RerankService(reranker, max_batch=64)
    caplog.set_level(logging.DEBUG, logger="twostage_integrations")
    try:
        deadline = time.monotonic() + 10
        while not service.ready and time.monotonic() < deadline:  # the warm-up call has run
            time.sleep(0.01)
        reranker.gate.clear()
        reranker.entered.clear()
        first = service.submit("QMARK-first", ["DMARK-first"])
        assert reranker.entered.wait(10)  # the worker holds the first job; the next two queue behind it
        good = service.submit("QMARK-good", ["DMARK-good"])
        bad = service.submit("QMARK-bad", ["DMARK-explode"])
        reranker.gate.set()
        assert len(first.result(10)) == 1 and len(good.result(10)) == 1
        with pytest.raises(RuntimeError, match="DMARK-explode"):  # the caller still gets the message
            bad.result(10)
    finally:
        service.close()
    assert service.merged_batches == 0 and any("merged batch of 2" in r.getMessage() for r in caplog.records)
    for marker in ("QMARK", "DMARK", "explode"):
        assert marker not in caplog.text
