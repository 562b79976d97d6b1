"""A scriptable loopback server that answers like Cohere's or Voyage's rerank API, for test_cohere/test_voyage.

The official SDKs do the HTTP; the server only answers in the API's shape (or misbehaves on cue) and records every
request. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twostage_integrations import Hit


def fake_score(doc: str) -> float:
    """Deterministic pseudo-random score per document, so merge order differs from input order."""
    return int(hashlib.sha256(doc.encode()).hexdigest()[:8], 16) / 16**8


def ok_payload(api: str, body: dict) -> dict:
    """A correct answer for the documents in ``body``, best first, in the API's shape."""
    docs = body["documents"]
    order = sorted(range(len(docs)), key=lambda i: -fake_score(docs[i]))
    results = [{"index": i, "relevance_score": fake_score(docs[i])} for i in order]
    if api == "voyage":
        return {"object": "list", "data": results, "model": body["model"], "usage": {"total_tokens": len(docs)}}
    return {"id": "x", "results": results, "meta": {"api_version": {"version": "2"}}}


class FaultServer:
    """Answers rerank requests from a script of actions, then with correct results. Records every request.

    Actions: ``("ok",)``, ``("sleep", seconds)`` then ok, ``("status", code, message, headers)`` (the message
    under the API's error field: ``message`` for Cohere, ``detail`` for Voyage), ``("raw", code, bytes)``,
    ``("echo_key", code)`` (an error that quotes the Authorization header), ``("drop",)`` (close the
    connection with a TCP reset, no answer).
    """

    def __init__(self, api: str = "cohere") -> None:
        self.api = api
        self.error_field = "detail" if api == "voyage" else "message"
        self.lock = threading.Lock()
        self.in_flight = 0
        self.reset()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(
                        {
                            "t": time.monotonic(),
                            "body": body,
                            "auth": self.headers.get("Authorization", ""),
                            "path": self.path,
                        }
                    )
                    action = outer.script.pop(0) if outer.script else outer.default
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                self.counted = True
                try:
                    self.answer(action, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left, which is what the slow-response tests want
                finally:
                    self.uncount()

            def uncount(self):
                # Before the answer goes out: once the client has it, the next test may already be running.
                if self.counted:
                    self.counted = False
                    with outer.lock:
                        outer.in_flight -= 1

            def answer(self, action, body):
                kind = action[0]
                if kind == "sleep":
                    time.sleep(action[1])
                    kind = "ok"
                if kind == "ok":
                    self.send(200, json.dumps(ok_payload(outer.api, body)).encode())
                elif kind == "status":
                    _, code, message, headers = action
                    self.send(code, json.dumps({outer.error_field: message}).encode(), headers)
                elif kind == "raw":
                    self.send(action[1], action[2])
                elif kind == "echo_key":  # a server that puts the caller's key into its error message
                    message = f"bad token {self.headers['Authorization']}"
                    self.send(action[1], json.dumps({outer.error_field: message}).encode())
                elif kind == "drop":  # SO_LINGER 0: close() sends RST, as a crashed or restarting server does
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True

            def send(self, code, data, headers=None):
                self.uncount()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def finish(self):
                # The "drop" action closed the socket already: there is nothing left to flush.
                with contextlib.suppress(OSError, ValueError):
                    super().finish()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self, *script, default=("ok",)) -> None:
        with self.lock:
            self.script = list(script)
            self.default = default
            self.requests: list[dict] = []
            self.max_in_flight = 0  # in_flight is not reset: a timed-out request may still be sleeping

    def settled_count(self, expected: int, wait: float = 5.0) -> int:
        """How many requests arrived, once ``expected`` did or ``wait`` s passed: a client that timed out may
        return before the server thread (starved on a loaded machine) has read its last request."""
        deadline = time.monotonic() + wait
        while len(self.requests) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # one more look: a request beyond the expected count must show up too
        return len(self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then released): connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def make_hits(n: int) -> list[Hit]:
    return [Hit(id=f"h{i}", text=f"d{i}", score=1 - i / n, recall_score=1 - i / n, recall_rank=i + 1) for i in range(n)]


def expected_order(hits: list[Hit]) -> list[str]:
    return [h.id for h in sorted(hits, key=lambda h: -fake_score(h.text))]
