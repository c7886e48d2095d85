"""A scripted REST API on loopback, for the API's clients: the gateway, `cloudide attach`, the page."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any]  # status and JSON body (bytes are sent as they are)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str
    body: Any = field(default=None, compare=False)
    """The JSON body, when there was one (not compared: tests assert on it where it matters)."""


@contextmanager
def stub_api(answer: Callable[[Request], Answer]) -> Iterator[tuple[str, list[Request]]]:
    """Answer every request with ``answer(request)``; yield the server's root URL and the requests seen.

    CORS is open and preflights are answered without calling ``answer``, so a page served from
    another origin (the gateway) can call it as it calls the real API.
    """
    requests: list[Request] = []

    class Handler(BaseHTTPRequestHandler):
        def do_OPTIONS(self) -> None:
            self._send(204, b"")

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_DELETE(self) -> None:
            self._answer()

        def _answer(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else None
            request = Request(self.command, self.path, self.headers.get("Authorization", ""), body)
            requests.append(request)
            status, body = answer(request)
            self._send(status, body if isinstance(body, bytes) else json.dumps(body).encode())

        def _send(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            self.send_header("Access-Control-Allow-Methods", "GET, POST, DELETE")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
