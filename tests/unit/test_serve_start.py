"""Starting ``twostage serve`` (no weights): a taken port or a missing model folder is one ``error:`` line before
anything loads or "serving ... at" is printed; ``/health`` reports the configured batching while the model loads."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from twostage_integrations.cli import app
from twostage_integrations.errors import ServerBindError
from twostage_integrations.server import create_app
from twostage_integrations.server.run import bind_sockets, serve_in_thread
from twostage_integrations.testing import FakeReranker


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process-like socket is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.fixture
def model_folder(tmp_path):
    """An existing folder, so the model path check passes; loading it would fail (and the guard would refuse)."""
    folder = tmp_path / "model"
    folder.mkdir()
    return folder


def serve(*args: str):
    return CliRunner().invoke(app, ["serve", *args], env={"TWOSTAGE_DEBUG": ""})


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_a_taken_port_is_one_error_line_before_anything_loads(taken_port, model_folder, monkeypatch):
    loads = []
    monkeypatch.setattr("twostage_integrations.cli.serve._build_app", lambda *a, **k: loads.append(a))
    result = serve("--port", str(taken_port), "--model", str(model_folder))
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert f"127.0.0.1:{taken_port}" in line and "already in use" in line and "--port" in line
    assert result.output.splitlines() == [line] and not loads  # no "serving ... at", no app: no model load started


def test_a_missing_model_folder_fails_before_serving_or_binding(tmp_path, taken_port):
    # The port is taken too: the model path is checked first, so that is the error the user sees.
    result = serve("--port", str(taken_port), "--model", str(tmp_path / "no-such-model"))
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.output)
    assert "no-such-model" in line and "does not exist" in line
    assert result.output.splitlines() == [line]  # nothing printed before it


def test_bind_sockets_listens_at_once_and_names_the_taken_port(taken_port):
    with pytest.raises(ServerBindError, match=f"127.0.0.1:{taken_port} is already in use") as info:
        bind_sockets("127.0.0.1", taken_port)
    assert info.value.errno == errno.EADDRINUSE
    (sock,) = bind_sockets("127.0.0.1", 0)
    with sock, socket.create_connection(sock.getsockname(), timeout=5):
        pass  # accepted into the backlog: listening before uvicorn runs


def test_serve_in_thread_on_a_taken_port_raises_the_typed_error(taken_port):
    server_app = create_app(FakeReranker())
    try:
        with pytest.raises(ServerBindError, match=str(taken_port)), serve_in_thread(server_app, port=taken_port):
            pass
    finally:
        server_app.state.service.close()


class PairReranker(FakeReranker):
    """Scores pairs of many queries in one call, so the service merges requests (batching stays on)."""

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [self.score(q, [t])[0] for q, t in pairs]


def health_while_loading_then_ready(reranker: FakeReranker, **kwargs) -> tuple[dict, dict]:
    """``/health`` while a loader waits on a gate, then once the model is ready."""
    gate = threading.Event()

    def load() -> FakeReranker:
        assert gate.wait(timeout=30), "the test never released the loader"
        return reranker

    with TestClient(create_app(load, **kwargs)) as http:
        loading = http.get("/health").json()
        gate.set()
        deadline = time.monotonic() + 30
        while http.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready within 30 s"
            time.sleep(0.01)
        return loading, http.get("/health").json()


def test_health_reports_the_requested_batching_while_loading():
    loading, ready = health_while_loading_then_ready(PairReranker())
    assert loading["state"] == "loading" and loading["model"] == "(loading)"
    assert loading["batching"] is True and loading["batching_requested"] is True
    assert ready["state"] == "ready" and ready["batching"] is True and ready["batching_requested"] is True


def test_health_says_when_the_loaded_model_turns_batching_off():
    loading, ready = health_while_loading_then_ready(FakeReranker())  # one query per call: served per request
    assert loading["batching"] is True
    assert ready["batching"] is False and ready["batching_requested"] is True


@pytest.mark.parametrize("kwargs", [{"batching": False}, {"max_batch": 0}])
def test_health_says_off_from_the_start_when_batching_is_off(kwargs):
    loading, ready = health_while_loading_then_ready(PairReranker(), **kwargs)
    assert loading["batching"] is False and loading["batching_requested"] is False
    assert ready["batching"] is False
