"""Which command lines go to a running `breachbook serve`: only what its forms can say, and
only when PREFECT_API_URL names a server; everything else stays in-process. And how the
command talks to that server (a stand-in for Prefect's REST API): the form's parameters
sent once, refusals and a server gone said in one line, nothing heavy imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.errors import BreachbookError
from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.submit import ServeApi, Submission, Unreachable, submission
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    (tmp_path / "incidents").mkdir()
    (tmp_path / "incidents" / "leak.yaml").write_text("id: inc-1\n")
    return Settings(home=tmp_path, content_dir=ROOT)


def test_an_incident_of_the_incidents_folder_goes_to_the_served_drill(settings: Settings) -> None:
    incident = settings.home / "incidents" / "leak.yaml"
    assert submission(Mode.DRILL, settings, incident) == Submission(
        "drill", {"drill": {"playbook": "customer-data-breach", "incident": "leak"}}
    )
    live = submission(Mode.LIVE, settings, incident, confirm="inc-1")
    assert live == Submission(
        "live-response",
        {
            "response": {
                "playbook": "customer-data-breach",
                "incident": "leak",
                "confirm_incident_id": "inc-1",
            }
        },
    )
    assert submission(Mode.DRILL, settings, None, demo=True) == Submission("demo-drill", {})


def test_what_a_form_cannot_say_stays_in_process(settings: Settings, tmp_path: Path) -> None:
    incident = settings.home / "incidents" / "leak.yaml"
    elsewhere = tmp_path / "leak.yaml"
    elsewhere.write_text("id: inc-1\n")
    assert submission(Mode.DRILL, settings, elsewhere) is None
    assert submission(Mode.DRILL, settings, incident, out=tmp_path / "out") is None
    assert submission(Mode.LIVE, settings, incident, confirm="inc-1", resume="abc") is None
    assert submission(Mode.DRILL, settings, incident, playbook=elsewhere) is None


def test_without_a_prefect_server_nothing_is_submitted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL")
    assert submission(Mode.DRILL, settings, settings.home / "incidents" / "leak.yaml") is None


class StandIn:
    """Prefect's REST API as `serve`'s server answers the command: the drill deployment,
    a run created (after one 503 while "busy"), then the run Completed with its folder."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.posted: list[dict[str, Any]] = []
        self.busy_once = True
        self.refuse: str | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/api/deployments/name/breachbook-response/drill":
                    self._send(200, {"id": "dep-1"})
                elif self.path == f"/api/flow_runs/{RUN}":
                    self._send(200, {"id": RUN, "name": "calm-otter", "state": COMPLETED})
                else:
                    self._send(404, {"detail": "Not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if stand_in.busy_once:
                    stand_in.busy_once = False
                    self._send(503, {"detail": "busy"})
                    return
                if stand_in.refuse is not None:
                    self._send(409, {"detail": stand_in.refuse})
                    return
                assert self.path == "/api/deployments/dep-1/create_flow_run"
                stand_in.posted.append(body)
                folder = stand_in.home / "runs" / "inc-1" / RUN.replace("-", "")[:12]
                folder.mkdir(parents=True)
                (folder / "plan.json").write_text(json.dumps(PLAN))
                self._send(201, {"id": RUN, "name": "calm-otter"})

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


RUN = "0a1b2c3d-4e5f-4789-8abc-def012345678"
COMPLETED = {"type": "COMPLETED", "message": None}
PLAN = {
    "mode": "drill",
    "run_id": "0a1b2c3d4e5f",
    "verdicts": {"VERIFIED": 1},
    "entries": [],
    "exit_code": 0,
    "outcome": "drill complete",
}


@pytest.fixture
def stand_in(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    stand_in = StandIn(settings.home)
    server = ThreadingHTTPServer(("127.0.0.1", 0), stand_in.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{server.server_address[1]}/api")
    monkeypatch.setenv("BREACHBOOK_HOME", str(settings.home))
    monkeypatch.setenv("BREACHBOOK_CONTENT_DIR", str(ROOT))
    try:
        yield stand_in
    finally:
        server.shutdown()
        thread.join()


def test_drill_starts_the_served_run_with_the_forms_parameters_and_reports_it(
    stand_in: StandIn, settings: Settings
) -> None:
    incident = settings.home / "incidents" / "leak.yaml"
    result = CliRunner().invoke(app, ["drill", "--incident", str(incident)])
    assert result.exit_code == 0, result.output
    assert stand_in.posted == [
        {"parameters": {"drill": {"playbook": "customer-data-breach", "incident": "leak"}}}
    ]  # once, though the server first answered 503
    assert "started calm-otter on breachbook serve: http://127.0.0.1:" in result.output
    assert f"/runs/flow-run/{RUN}" in result.output and "drill complete (exit 0)" in result.output


def test_a_run_the_server_refuses_or_a_server_gone_is_one_line(
    stand_in: StandIn, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in.refuse = "Validation failed for field 'drill.incident'"
    api = ServeApi(os.environ["PREFECT_API_URL"])
    submitted = Submission("drill", {"drill": {"incident": "leak"}})
    with pytest.raises(BreachbookError, match=r"the Prefect server refused the run: .*drill\."):
        api.start("dep-1", submitted)
    gone = ServeApi(f"http://127.0.0.1:{free_port()}/api")
    assert gone.served_deployment("drill") is None  # then the command runs in-process
    with pytest.raises(Unreachable, match=r"did not answer: \[Errno 111\] Connection refused"):
        gone.start("dep-1", submitted)


def test_the_served_path_imports_neither_prefect_nor_httpx_nor_sqlalchemy(
    stand_in: StandIn, settings: Settings
) -> None:
    """What the command's start costs is what it imports (bench/cli_start.py measures it)."""
    incident = settings.home / "incidents" / "leak.yaml"
    command = ["-m", "breachbook.cli", "drill", "--incident", str(incident)]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        capture_output=True,
        text=True,
        env=os.environ,
        check=False,
    )
    assert "drill complete (exit 0)" in done.stdout, done.stdout + done.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert imported & {"prefect", "httpx", "sqlalchemy", "jinja2"} == set()
    assert "breachbook" in imported
