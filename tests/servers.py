"""Real servers in subprocesses for the tests, all on 127.0.0.1: `chroma run` and `twostage serve`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The console script of this checkout (the `twostage` on PATH may be another checkout's).
CLI = [sys.executable, "-c", "from twostage_integrations.cli import app; app()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(path, port: int) -> subprocess.Popen:
    """`chroma run` on 127.0.0.1:port over ``path``, once it answers a heartbeat."""
    exe = shutil.which("chroma")
    assert exe, "the `chroma` CLI ships with chromadb; is chromadb installed?"
    proc = subprocess.Popen(
        [exe, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import chromadb

    deadline = time.monotonic() + 60
    while True:
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            return proc
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"chroma server did not start on port {port} (exit code {proc.poll()})")
            time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_serve(port: int, *args: str, log: Path) -> subprocess.Popen:
    """This checkout's `twostage serve --host 127.0.0.1 --port port *args`, stderr to ``log``; not yet ready
    (wait with :func:`wait_serve_ready`). No API key from the environment: a test that wants one passes it."""
    env = {k: v for k, v in os.environ.items() if k != "TWOSTAGE_SERVE_API_KEY"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def wait_serve_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 300) -> None:
    """Until ``GET {url}/ready`` answers 200; fails with the server's stderr if it exits or times out first."""
    from twostage_integrations.server import wait_until_ready

    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait_until_ready(url, timeout=2)
        except TimeoutError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_server(proc)
                pytest.fail(f"twostage serve at {url} was not ready (exit code {proc.poll()}):\n{log.read_text()}")


def serve_health(url: str) -> dict:
    """``GET {url}/health`` as a dict (no auth needed): state and counters of one `twostage serve`."""
    import httpx

    return httpx.get(f"{url}/health", timeout=30).json()
