"""Running the app with uvicorn: :func:`run_server` in the foreground (``twostage serve``: SIGTERM drains),
:func:`serve_in_thread` in the background (notebooks, tests, benchmarks) and :func:`wait_until_ready`."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

from ..errors import ServerBindError

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


def host_port(host: str, port: int) -> str:
    """``host:port`` as it appears in a URL (``[::1]:8080`` for an IPv6 address).

    Args:
        host: a host name or address.
        port: a TCP port.

    Returns:
        The two joined for messages and URLs.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_failure(host: str, port: int, exc: OSError) -> ServerBindError:
    where = host_port(host, port)
    if exc.errno == errno.EADDRINUSE:
        why = f"{where} is already in use (another server is listening there); stop it or pass another --port"
    elif exc.errno == errno.EACCES:
        why = f"not allowed to listen on {where} (ports below 1024 need privileges); pass another --port"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = f"cannot listen on {where}: {host} is not an address of this machine; pass another --host"
    else:
        why = f"cannot listen on {where}: {exc.strerror or exc}"
    error = ServerBindError(why)
    error.errno = exc.errno  # for callers that branch on it, as on the OSError it replaces
    return error


def bind_sockets(host: str = "127.0.0.1", port: int = 8080, backlog: int = 2048) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to (as uvicorn would bind them), for
    :func:`run_server`. Binding first, before any model loads, makes a taken port one clear error at once, and
    handing the bound sockets to uvicorn leaves no gap between the check and the bind.

    Args:
        host: interface to bind (a name such as ``localhost`` may give an IPv4 and an IPv6 socket).
        port: TCP port (0: a free one, the same on every address).
        backlog: connections waiting to be accepted (uvicorn's default).

    Returns:
        The sockets, listening; :func:`run_server` closes them when it returns.

    Raises:
        ServerBindError: ``host`` does not resolve, ``port`` is in use or not allowed, or ``host`` is not an
            address of this machine (the message names host:port).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        where = host_port(host, port)
        raise ServerBindError(
            f"cannot listen on {where}: {host!r} does not resolve ({exc.strerror}); pass another --host"
        ) from None
    sockets: list[socket.socket] = []
    bound_port = port
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
            if family == socket.AF_INET6:  # as asyncio does: the IPv4 address gets its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], bound_port, *address[2:]))
            sock.listen(backlog)  # listening now, so a port another process only bound fails here too
            bound_port = sock.getsockname()[1]
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise _bind_failure(host, port, exc) from None
    return sockets


def run_server(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    graceful_timeout: float | None = 30,
    log_level: str = "warning",
    sockets: list[socket.socket] | None = None,
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
        sockets: already listening sockets from :func:`bind_sockets` (``host`` and ``port`` are then only
            labels); by default they are bound here.

    Raises:
        ServerBindError: ``host:port`` cannot be bound (in use, not allowed...).
    """
    import uvicorn

    if sockets is None:
        sockets = bind_sockets(host, port)

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
        server.run(sockets=sockets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()


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
        ServerBindError: ``host:port`` cannot be bound (in use, not allowed...).
        RuntimeError: the server did not start within 30 s.
    """
    import uvicorn

    sockets = bind_sockets(host, port)
    server = _uvicorn_server(app, uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True, name="twostage-serve")
    thread.start()
    deadline = time.monotonic() + 30
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the rerank server did not start; see the log above")
            time.sleep(0.01)
        yield f"http://{host_port(host, sockets[0].getsockname()[1])}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for sock in sockets:
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
