"""moto's AWS emulation in server mode on loopback, started by the tests that need it, with
every request it receives recorded (service, action, DryRun) so a test can say what reached
"AWS" during a run, beside the emulated state before and after."""

from __future__ import annotations

import io
import json
import re
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from tests.conftest import free_port

REGION = "eu-west-1"


@dataclass(frozen=True)
class Request:
    service: str
    action: str
    dry_run: bool


@dataclass
class Recorder:
    """WSGI middleware in front of moto: notes each request, then hands it on unchanged."""

    app: Callable[..., Iterable[bytes]]
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        form = parse_qs(body.decode(errors="replace"))
        scope = re.search(
            r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", "")
        )
        action = (form.get("Action") or [environ.get("PATH_INFO", "")])[0]
        if not action.startswith("/moto-api"):
            with self.lock:
                self.requests.append(
                    Request(
                        scope.group(1) if scope else "?",
                        action,
                        (form.get("DryRun") or [""])[0].lower() == "true",
                    )
                )
        return self.app(environ, start_response)

    def since(self, start: int) -> list[Request]:
        with self.lock:
            return list(self.requests[start:])


@dataclass
class MotoServer:
    endpoint: str
    recorder: Recorder

    def reset(self) -> None:
        """Forget every emulated resource (moto's own reset endpoint) and every request."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            json.loads(answer.read() or b"{}")
        with self.recorder.lock:
            self.recorder.requests.clear()


def start_moto() -> Iterator[MotoServer]:
    recorder = Recorder(DomainDispatcherApplication(create_backend_app))
    server: BaseWSGIServer = make_server("127.0.0.1", free_port(), recorder, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield MotoServer(f"http://127.0.0.1:{server.server_port}", recorder)
    finally:
        server.shutdown()
        thread.join()
