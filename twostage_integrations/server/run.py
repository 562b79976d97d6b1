"""Running the app with uvicorn: :func:`run_server` in the foreground (``twostage serve``: SIGTERM drains),
:func:`serve_in_thread` in the background (notebooks, tests, benchmarks) and :func:`wait_until_ready`."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

logger = logging.getLogger(__name__)


def _uvicorn_server(app: FastAPI, config: Any) -> Any:
    """A uvicorn server whose first SIGTERM/SIGINT marks the app as draining (``/ready`` and new requests
    answer 503) before uvicorn's own graceful shutdown stops accepting and waits for in-flight requests."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            service = getattr(app.state, "service", None)
            if service is not None and not service.draining:
                service.draining = True
                in_progress = service.counters["in_progress"]
                logger.warning("signal %d: draining %s request(s) in progress, then exiting", sig, in_progress)
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def run_server(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    graceful_timeout: float | None = 30,
    log_level: str = "warning",
) -> None:
    """Run ``app`` in the foreground until SIGTERM or Ctrl+C, then drain: stop accepting, answer 503 to
    new requests on open connections, finish the requests in progress and return normally (exit code 0), as
    a process manager expects. A model that fails to load stops the server too.

    Args:
        app: an app from :func:`~twostage_integrations.server.create_app`.
        host: interface to bind.
        port: TCP port.
        graceful_timeout: seconds to let requests in progress finish after the signal (``None``: no limit).
        log_level: uvicorn's log level.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]  # uvicorn takes float seconds too
    )
    server = _uvicorn_server(app, config)
    service = getattr(app.state, "service", None)
    if service is not None:
        service.on_load_error = lambda exc: setattr(server, "should_exit", True)  # nothing to serve: exit
        if service.load_error is not None:  # it failed before the callback was in place
            server.should_exit = True
    # uvicorn re-raises the signal it caught once it has shut down; with this handler in place that
    # re-raise is a no-op instead of killing the process with "terminated by SIGTERM".
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a background thread; ``twostage serve`` is the way to run a standalone server.

    Args:
        app: the ASGI app.
        host: interface to bind.
        port: TCP port (0: a free one).

    Yields:
        The server's base URL, e.g. ``http://127.0.0.1:53211``.

    Raises:
        RuntimeError: the server did not start within 30 s.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = _uvicorn_server(app, uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="twostage-serve")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the rerank server did not start; see the log above")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_until_ready(url: str, timeout: float = 120) -> None:
    """Poll ``GET {url}/ready`` until it answers 200.

    Args:
        url: the server's base URL.
        timeout: seconds to wait.

    Raises:
        TimeoutError: not ready within ``timeout`` seconds.
    """
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not ready within {timeout:g} s")
        time.sleep(0.1)
