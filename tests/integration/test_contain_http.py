"""The `http.request` action against a real HTTP server on loopback, started here, that
records every request it receives: a drill sends only the declared health check, LIVE sends
the request once, restore sends the undo, and the secret header value is never written."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from breachbook.engine import Status
from breachbook.errors import ContainmentRefused, DrillWriteBlocked
from breachbook.modes import Mode
from breachbook.ports import HttpCall, HttpClient
from breachbook.settings import Settings
from breachbook.wiring import http_client, mode_profile
from tests.integration.contain import by_target, restore_cli, run_contain, write_incident

SECRET = "s3cr3t-portal-token-9f2c"
LEAKY_BODY = "jane.doe@example.org owes 1200"
PLAYBOOK = Path(__file__).resolve().parents[1] / "data" / "contain" / "http.yaml"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str
    body: str


@dataclass
class Portal:
    """A customer portal's admin API: answers `statuses[path]` (200 by default)."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def methods(self) -> list[str]:
        with self.lock:
            return [s.method for s in self.seen]


def _handler(portal: Portal) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            with portal.lock:
                portal.seen.append(
                    Seen(self.command, self.path, self.headers.get("Authorization", ""), body)
                )
            status = portal.statuses.get(self.path, 200)
            payload = LEAKY_BODY.encode() if status >= 500 else b"{}"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def portal() -> Iterator[Portal]:
    portal = Portal()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(portal))
    portal.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield portal
    finally:
        server.shutdown()
        thread.join()


def setup(tmp_path: Path, portal: Portal, incident_id: str) -> tuple[Settings, Path, Path]:
    playbook = tmp_path / "http.yaml"
    playbook.write_text(PLAYBOOK.read_text().replace("PORT", str(portal.port)))
    settings = Settings(home=tmp_path / "home", http_secrets={"portal": SecretStr(SECRET)})
    return settings, write_incident(tmp_path / "incident", incident_id), playbook


def written(*folders: Path) -> str:
    """Every byte the product wrote under the folders (plan, report, ledger), as text."""
    return "".join(
        path.read_bytes().decode(errors="replace")
        for folder in folders
        for path in folder.rglob("*")
        if path.is_file()
    )


def test_a_drill_sends_only_the_health_check_and_reports_its_status(
    portal: Portal, tmp_path: Path
) -> None:
    settings, incident, playbook = setup(tmp_path, portal, "inc-http-drill")

    result = run_contain(Mode.DRILL, settings, incident, tmp_path / "out", playbook)

    entry = by_target(result, "lock-portal")[
        f"POST http://127.0.0.1:{portal.port}/accounts/inc-http-drill/lock"
    ]
    assert (entry.verdict, entry.status) == ("VERIFIED", Status.PLANNED)
    assert (
        entry.reason
        == f"GET http://127.0.0.1:{portal.port}/health answered 200 (expected 200, 204)"
    )
    assert portal.methods() == ["GET"]
    assert portal.seen[0].authorization == SECRET
    assert SECRET not in written(tmp_path / "out", settings.home)

    portal.statuses["/health"] = 503
    failed = run_contain(Mode.DRILL, settings, incident, tmp_path / "out2", playbook)
    entry = next(e for e in failed.entries() if e.step_id == "lock-portal")
    assert entry.verdict == "FAILED" and "answered 503" in entry.reason
    assert set(portal.methods()) == {"GET"}


def test_live_sends_once_a_rerun_nothing_and_restore_sends_the_undo(
    portal: Portal, tmp_path: Path
) -> None:
    settings, incident, playbook = setup(tmp_path, portal, "inc-http-live")

    result = run_contain(Mode.LIVE, settings, incident, tmp_path / "live", playbook)

    entry = next(e for e in result.entries() if e.step_id == "lock-portal")
    assert entry.status == Status.COMPLETED, entry
    posts = [s for s in portal.seen if s.method == "POST"]
    assert [(s.path, s.authorization) for s in posts] == [("/accounts/inc-http-live/lock", SECRET)]
    assert posts[0].body == '{"incident": "inc-http-live", "reason": "containment"}'

    again = run_contain(Mode.LIVE, settings, incident, tmp_path / "again", playbook)
    assert [e.status for e in again.entries() if e.step_id == "lock-portal"] == [
        Status.ALREADY_DONE
    ]
    assert [s.method for s in portal.seen if s.method != "GET"] == ["POST"]

    restore_cli(settings, "inc-http-live")
    assert [(s.method, s.path) for s in portal.seen if s.method not in ("GET", "POST")] == [
        ("DELETE", "/accounts/inc-http-live/lock")
    ]
    assert SECRET not in written(tmp_path / "live", tmp_path / "again", settings.home)


def test_a_server_error_is_failed_with_its_status_and_no_body(
    portal: Portal, tmp_path: Path
) -> None:
    settings, incident, playbook = setup(tmp_path, portal, "inc-http-5xx")
    portal.statuses["/accounts/inc-http-5xx/lock"] = 502

    result = run_contain(Mode.LIVE, settings, incident, tmp_path / "live", playbook)

    entry = next(e for e in result.entries() if e.step_id == "lock-portal")
    assert entry.status == Status.FAILED
    text = f"{entry.reason} {entry.details}"
    assert "answered 502 (expected 200, 204)" in text
    assert LEAKY_BODY not in text
    assert LEAKY_BODY not in written(tmp_path / "live", settings.home)
    assert SECRET not in written(tmp_path / "live", settings.home)


def test_the_drill_guard_refuses_the_request_and_the_probe_refuses_all_but_get_and_head(
    portal: Portal, tmp_path: Path
) -> None:
    settings, _, _ = setup(tmp_path, portal, "inc-http-guard")
    adapter = http_client(settings)
    assert adapter is not None
    guarded: HttpClient = mode_profile(Mode.DRILL).guard(adapter, HttpClient)
    url = f"http://127.0.0.1:{portal.port}/accounts/x/lock"

    with pytest.raises(DrillWriteBlocked, match=r"drill: refused HttpClient\.send"):
        guarded.send(HttpCall("POST", url, {"Authorization": "secret:portal"}))
    with pytest.raises(ContainmentRefused, match="a health check is GET or HEAD, not DELETE"):
        guarded.probe(HttpCall("DELETE", url))
    with pytest.raises(
        ContainmentRefused, match="secret missing is not in BREACHBOOK_HTTP_SECRETS"
    ):
        adapter.send(HttpCall("POST", url, {"Authorization": "secret:missing"}))
    assert portal.seen == []
    assert guarded.probe(HttpCall("HEAD", f"http://127.0.0.1:{portal.port}/health")) == 200
    assert portal.methods() == ["HEAD"]
