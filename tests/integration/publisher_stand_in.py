"""A status-page endpoint on loopback that records every request and honours
Idempotency-Key: a repeated key gets the first answer and publishes nothing new."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import free_port


@dataclass
class Recorded:
    method: str
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class StandIn:
    url: str
    token: str
    requests: list[Recorded] = field(default_factory=list)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Idempotency-Key -> the first answer given for it."""
    fail_next: list[int] = field(default_factory=list)
    """Statuses to answer the next POSTs with, in order, before publishing normally."""


@contextmanager
def publisher_stand_in(token: str = "s3cret-token") -> Iterator[StandIn]:
    port = free_port()
    state = StandIn(url=f"http://127.0.0.1:{port}/statements", token=token)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {state.token}"

        def do_GET(self) -> None:
            with lock:
                state.requests.append(Recorded("GET", dict(self.headers), None))
            if not self._authorised():
                self._answer(401, {"error": "unauthorized"})
            else:
                self._answer(200, {"ok": True})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            with lock:
                state.requests.append(Recorded("POST", dict(self.headers), body))
                if not self._authorised():
                    self._answer(401, {"error": "unauthorized"})
                    return
                if state.fail_next:
                    self._answer(state.fail_next.pop(0), {"error": "try later"})
                    return
                key = self.headers.get("Idempotency-Key", "")
                answer = state.published.get(key)
                if answer is None:
                    answer = {
                        "id": len(state.published) + 1,
                        "url": f"{state.url}/{len(state.published) + 1}",
                    }
                    state.published[key] = answer
                self._answer(201, answer)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
