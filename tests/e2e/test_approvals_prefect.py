"""Approvals on a started Prefect server: a LIVE flow run pauses at its gated step with a form
that says what is to be approved, answers given through Prefect's input API (as the UI's form
sends them) and through `breachbook approve RUN STEP` are judged against the named
approvers, the run resumes, and the ledger names who decided; a role that does not answer is
escalated to its backup and the step never proceeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from breachbook.clock import SystemClock
from breachbook.demo import DemoWorld
from breachbook.ledger import Ledger, LedgerRow
from tests.conftest import ROOT, customers_named_in, free_port
from tests.e2e.test_prefect_server import PREFECT, STARTUP_SECONDS, _stop

pytestmark = pytest.mark.prefect_server

INCIDENT = "demo-2026-antiques-leak"
PLAYBOOK = ROOT / "tests" / "data" / "approvals" / "letters.yaml"
APPROVERS = {"legal": {"people": ["ada", "ben", "lin"], "backup": ["carol"]}}
ANSWERS = ("refused", "counted", "granted", "denied")
RUN_FLOW = """
import sys
from flows.response import response
from breachbook.modes import Mode
state = response(
    incident_file=sys.argv[1], mode=Mode.LIVE, confirm_incident_id=sys.argv[2],
    playbook_file=sys.argv[3], return_state=True,
)
print("STATE", state.type.value, state.message)
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` on a fresh database and a free port."""
    scratch = tmp_path_factory.mktemp("approvals-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BREACHBOOK_"))}
    env |= {
        "PREFECT_HOME": str(scratch / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    with (scratch / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=scratch,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (scratch / "server.log").read_text()
            assert time.monotonic() < deadline, "Prefect server did not become healthy"
            time.sleep(0.5)
        yield url
    finally:
        _stop(server)


@dataclass
class LiveRun:
    """A LIVE flow run of the test playbook in its own process, against the server."""

    api: str
    home: Path
    outbox: Path
    env: dict[str, str]
    process: subprocess.Popen[str]

    def ledger_rows(self) -> list[LedgerRow]:
        path = self.home / "ledger.sqlite"
        if not path.exists():
            return []
        ledger = Ledger(f"sqlite:///{path}", SystemClock(), create=False)
        try:
            return [r for r in ledger.entries(INCIDENT) if r.phase == "approval"]
        finally:
            ledger.close()

    def answers(self) -> list[tuple[str, str]]:
        return [(r.outcome, r.actor) for r in self.ledger_rows() if r.outcome in ANSWERS]

    def flow_run_id(self) -> str:
        asked = self._until(lambda: [r for r in self.ledger_rows() if r.outcome == "asked"])
        return str(asked[0].details["flow_run"])

    def paused(self, answered: int) -> dict[str, Any]:
        """The flow run once it is paused again after `answered` answers were recorded."""
        flow_run_id = self.flow_run_id()

        def paused_now() -> dict[str, Any] | None:
            if len(self.answers()) < answered:
                return None
            run: dict[str, Any] = _get(f"{self.api}/flow_runs/{flow_run_id}").json()
            return run if run["state"]["type"] == "PAUSED" else None

        found: dict[str, Any] = self._until(paused_now)
        return found

    def form_description(self, run: dict[str, Any]) -> str:
        key = run["state"]["state_details"]["run_input_keyset"]["description"]
        text = _get(f"{self.api}/flow_runs/{run['id']}/input/{key}").text
        return str(json.loads(text))

    def answer(self, flow_run_id: str, run_input: dict[str, Any]) -> None:
        """What the UI's form sends: resume with the input (503 from a busy SQLite retried)."""
        for _ in range(30):
            sent = httpx.post(
                f"{self.api}/flow_runs/{flow_run_id}/resume", json={"run_input": run_input}
            )
            if sent.status_code != 503:
                assert sent.status_code == 201 and sent.json()["status"] == "ACCEPT", sent.text
                return
            time.sleep(1)
        raise AssertionError("the server stayed busy")

    def finish(self) -> str:
        out, _ = self.process.communicate(timeout=240)
        return out

    def _until(self, probe: Any, seconds: float = 180) -> Any:
        deadline = time.monotonic() + seconds
        while (found := probe()) in (None, []):
            assert self.process.poll() is None, self.process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.3)
        return found


def _get(url: str) -> httpx.Response:
    for _ in range(30):
        got = httpx.get(url)
        if got.status_code != 503:
            got.raise_for_status()
            return got
        time.sleep(1)
    raise AssertionError("the server stayed busy")


def start_live(api: str, world: DemoWorld, tmp_path: Path, timeout: str) -> LiveRun:
    playbook = tmp_path / "playbook.yaml"
    playbook.write_text(PLAYBOOK.read_text().replace("TIMEOUT", timeout))
    home, outbox = tmp_path / "home", tmp_path / "outbox"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BREACHBOOK_"))}
    env |= {
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "DO_NOT_TRACK": "1",
        "BREACHBOOK_HOME": str(home),
        "BREACHBOOK_CONTENT_DIR": str(ROOT),
        "BREACHBOOK_CUSTOMERS_URL": f"sqlite:///{world.customers_db}",
        "BREACHBOOK_OUTBOX": str(outbox),
        "BREACHBOOK_EVIDENCE_DIR": str(tmp_path / "evidence"),
        "BREACHBOOK_APPROVERS": json.dumps(APPROVERS),
        "BREACHBOOK_ACTOR": "lin",
        "BREACHBOOK_APPROVALS_VIA": "prefect",
        "BREACHBOOK_APPROVAL_POLL_SECONDS": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_FLOW, str(world.incident_file), INCIDENT, str(playbook)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return LiveRun(api, home, outbox, env, process)


def test_answers_in_prefect_and_the_terminal_resume_the_step_once_two_named_lawyers_approve(
    api: str, small_world: DemoWorld, tmp_path: Path
) -> None:
    live = start_live(api, small_world, tmp_path, "PT10M")
    try:
        first = live.paused(answered=0)
        form = live.form_description(first)
        assert "## Approve: Deliver the letters (`deliver-letters`)" in form
        assert "Role **legal**: ada, ben, carol." in form  # lin started the run
        assert "| us-ma | " in form and "Letters per obligation" in form
        assert customers_named_in(form, small_world.customers_db) == []
        assert not live.outbox.exists()  # nothing is sent while it waits

        live.answer(first["id"], {"approver": "mallory", "approve": True})
        live.answer(live.paused(answered=1)["id"], {"approver": "lin", "approve": True})
        again = live.paused(answered=2)
        assert "Last answer: lin started this run" in live.form_description(again)
        live.answer(again["id"], {"approver": "ada", "approve": True, "comment": "checked"})
        live.paused(answered=3)
        assert not live.outbox.exists()  # one lawyer is not enough

        # a separate process with exactly the run's environment, as a person's terminal is
        answer = ["approve", first["id"], "deliver-letters", "--by", "ben", "--comment", "ok"]
        cli = subprocess.run(
            [sys.executable, "-m", "breachbook.cli", *answer],
            check=False,
            env=live.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "deliver-letters: granted: approved by ben" in cli.stdout
        out = live.finish()
    finally:
        if live.process.poll() is None:
            live.process.kill()
    assert "STATE COMPLETED" in out, out[-3000:]
    assert live.answers() == [
        ("refused", "mallory"),
        ("refused", "lin"),
        ("counted", "ada"),
        ("granted", "ben"),
    ]
    ledger = Ledger(f"sqlite:///{live.home / 'ledger.sqlite'}", SystemClock(), create=False)
    decision = ledger.get_record(INCIDENT, "incident", "decision", "deliver-letters")
    ledger.close()
    assert isinstance(decision, dict)
    assert (decision["by"], decision["comment"]) == ("ada, ben", "ok")
    assert list(live.outbox.glob("us-ma_*.eml"))


def test_nobody_answering_escalates_to_the_backup_and_nothing_is_sent(
    api: str, small_world: DemoWorld, tmp_path: Path
) -> None:
    live = start_live(api, small_world, tmp_path, "PT3S")
    out = live.finish()
    assert "STATE COMPLETED" in out, out[-3000:]  # the expired pauses did not fail the run
    rows = live.ledger_rows()
    assert [r.outcome for r in rows] == ["asked", "escalated", "expired"]
    # the war room's button opens the paused run's page in the UI Prefect derives from its API
    flow_run = rows[0].details["flow_run"]
    assert rows[0].details["url"] == f"{api.removesuffix('/api')}/runs/flow-run/{flow_run}"
    assert rows[1].details == {"role": "legal", "asked": ["carol"], "after_seconds": 3}
    assert not live.outbox.exists()
