"""`breachbook serve` for real: it starts its own Prefect server, serves the deployments with
no worker, work pool or deploy step, and runs the alert receiver. An Alertmanager webhook
becomes exactly one incident and one completed drill run; the same alert again starts
nothing; resolving it is recorded; a drill started from the form completes on the served
deployment; the tabletop is served with the scenarios offered by name; SIGTERM stops
everything, the Prefect server it started included."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from breachbook.clock import SystemClock
from breachbook.demo import DemoWorld
from breachbook.ledger import ItemStatus, Ledger
from breachbook.serve import DEPLOYMENTS
from tests.conftest import ROOT, customers_named_in, free_port

pytestmark = pytest.mark.prefect_server

TOKEN = "serve-test-token"
STARTUP_SECONDS = 180


@dataclass
class Serving:
    process: subprocess.Popen[bytes]
    api: str
    receiver: str
    home: Path
    env: dict[str, str]
    log: Path

    def deployment_runs(self, name: str) -> list[dict[str, Any]]:
        deployment = httpx.get(f"{self.api}/deployments/name/breachbook-response/{name}").json()
        return list(
            httpx.post(
                f"{self.api}/flow_runs/filter",
                json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}},
            ).json()
        )

    def wait_done(self, flow_run_id: str, seconds: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            run = httpx.get(f"{self.api}/flow_runs/{flow_run_id}").json()
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED"):
                return dict(run)
            assert time.monotonic() < deadline, (run["state"], self.log.read_text()[-3000:])
            time.sleep(0.5)

    def alert(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{self.receiver}/alerts/alertmanager",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, small_world: DemoWorld) -> Iterator[Serving]:
    scratch = tmp_path_factory.mktemp("serve")
    prefect_port, receiver_port = free_port(), free_port()
    home = scratch / "home"
    (home / "incidents").mkdir(parents=True)
    (home / "incidents" / "antiques-leak.yaml").write_bytes(small_world.incident_file.read_bytes())
    config = scratch / "breachbook.yaml"
    config.write_text(  # settings from the config file; the environment adds the secret
        f"receiver_port: {receiver_port}\n"
        f"prefect_port: {prefect_port}\n"
        f"alert_rules: {ROOT / 'tests' / 'data' / 'alerts' / 'rules.yaml'}\n"
        # test_ui's refused LIVE run waits this long; a run that must get a free slot got it
        # within 2.8 s on a loaded 2-core machine (README: One LIVE response per incident)
        "live_wait_seconds: 15\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "BREACHBOOK_"))
    }
    env |= {
        "PREFECT_HOME": str(scratch / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "BREACHBOOK_CONFIG": str(config),
        "BREACHBOOK_ALERT_TOKEN": TOKEN,
        "BREACHBOOK_HOME": str(home),
        "BREACHBOOK_CONTENT_DIR": str(ROOT),
        "BREACHBOOK_CUSTOMERS_URL": f"sqlite:///{small_world.customers_db}",
        "BREACHBOOK_OUTBOX": str(scratch / "outbox"),
        "BREACHBOOK_EVIDENCE_DIR": str(scratch / "evidence"),
    }
    log = scratch / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "breachbook.cli", "serve"],
            env=env,
            cwd=scratch,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    handle = Serving(
        process,
        f"http://127.0.0.1:{prefect_port}/api",
        f"http://127.0.0.1:{receiver_port}",
        home,
        env,
        log,
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not (
            _up(f"{handle.receiver}/healthz") and _deployments(handle.api) == len(DEPLOYMENTS)
        ):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield handle
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert not _up(f"{handle.api}/health"), "the Prefect server serve started outlived it"


def _deployments(api: str) -> int:
    try:
        return len(httpx.post(f"{api}/deployments/filter", json={}, timeout=2).json())
    except httpx.TransportError:
        return 0


def _group(status: str) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="BreachbookTest"}',
        "status": status,
        "receiver": "breachbook",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "BreachbookTest", "severity": "info"},
                "startsAt": "2026-11-30T00:00:00Z",
                "fingerprint": "5eb1a1c0ffee",
            }
        ],
    }


def test_serve_runs_every_deployment_without_a_worker(serving: Serving) -> None:
    found = httpx.post(f"{serving.api}/deployments/filter", json={}).json()
    assert {d["name"] for d in found} == {
        "drill",
        "demo-drill",
        "live-response",
        "alert-drill",
        "alert-live",
        "tabletop",
    }
    assert all(d["work_pool_name"] is None for d in found)  # served, not pooled
    tabletop = next(d for d in found if d["name"] == "tabletop")
    form = tabletop["parameter_openapi_schema"]["definitions"]["TabletopForm"]["properties"]
    assert form["scenario"]["enum"] == ["antique-dealer-breach"]  # scenarios/, by name
    assert form["players"]["enum"][1:] == ["demo-players", "late-players"]


def test_an_alert_becomes_one_incident_and_one_run_and_its_repeat_and_resolve_start_nothing(
    serving: Serving, small_world: DemoWorld
) -> None:
    answer = serving.alert(_group("firing"))
    assert answer.status_code == 202, answer.text
    (accepted,) = answer.json()["accepted"]
    assert accepted["outcome"] == "starting"
    incident_id = accepted["incident"]
    deadline = time.monotonic() + 60
    while not (runs := serving.deployment_runs("alert-drill")):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    run = serving.wait_done(runs[0]["id"])
    assert run["state"]["type"] == "COMPLETED", (run["state"], serving.log.read_text()[-3000:])
    out = serving.home / "runs" / incident_id / run["id"].replace("-", "")[:12]
    assert json.loads((out / "plan.json").read_text())["mode"] == "drill"

    again = serving.alert(_group("firing"))
    assert again.json()["accepted"][0] == accepted | {"outcome": "repeat"}
    resolved = serving.alert(_group("resolved"))
    assert resolved.json()["accepted"][0]["outcome"] == "resolved"
    time.sleep(3)
    assert len(serving.deployment_runs("alert-drill")) == 1

    ledger = Ledger(f"sqlite:///{serving.home / 'ledger.sqlite'}", SystemClock(), create=False)
    outcomes = [(e.step_id, e.outcome) for e in ledger.entries(incident_id)]
    status = ledger.item_status(incident_id, "alert.start", "run")
    ledger.close()
    assert status is ItemStatus.DONE
    assert outcomes == [
        ("alert.start", "claimed"),
        ("alert.start", "done"),
        ("alert", "repeat"),
        ("alert", "resolved"),
    ]
    logs = httpx.post(
        f"{serving.api}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200},
    ).json()
    joined = "\n".join(entry["message"] for entry in logs)
    assert customers_named_in(joined, small_world.customers_db) == []


def _retrying(call: Callable[[], httpx.Response]) -> httpx.Response:
    """Prefect's server answers 503 while its SQLite database is busy, and its own client
    retries that; so does this one (five times, a second apart)."""
    for _ in range(5):
        answer = call()
        if answer.status_code != 503:
            return answer
        time.sleep(1)
    return answer


def test_a_drill_from_the_form_runs_on_the_served_deployment(serving: Serving) -> None:
    deployment = _retrying(
        lambda: httpx.get(f"{serving.api}/deployments/name/breachbook-response/drill")
    ).json()
    created = _retrying(
        lambda: httpx.post(
            f"{serving.api}/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {"drill": {"incident": "antiques-leak"}}},
        )
    )
    assert created.status_code == 201, created.text
    run = serving.wait_done(created.json()["id"])
    assert run["state"]["type"] == "COMPLETED", serving.log.read_text()[-3000:]


ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture(scope="module")
def alertmanager(serving: Serving, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus Alertmanager (the Debian package) with a webhook receiver pointing at
    `serve`'s receiver, authenticated with the bearer token."""
    assert ALERTMANAGER, "install the Debian package prometheus-alertmanager (.ci/run does)"
    scratch = tmp_path_factory.mktemp("alertmanager")
    port = free_port()
    config = scratch / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: breachbook\n"
        "  group_by: [alertname, instance]\n"
        "  group_wait: 1s\n"
        "  group_interval: 2s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: breachbook\n"
        "    webhook_configs:\n"
        f"      - url: {serving.receiver}/alerts/alertmanager\n"
        "        send_resolved: true\n"
        "        http_config:\n"
        "          authorization:\n"
        "            type: Bearer\n"
        f"            credentials: {TOKEN}\n"
    )
    with (scratch / "alertmanager.log").open("wb") as out:
        process = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={config}",
                f"--storage.path={scratch / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _up(f"{url}/-/ready"):
            assert process.poll() is None, (scratch / "alertmanager.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_real_alertmanager_alert_starts_one_run_once_and_its_resolve_is_recorded(
    serving: Serving, alertmanager: str
) -> None:
    labels = {"alertname": "BreachbookTest", "instance": "am-e2e", "severity": "info"}
    before = len(serving.deployment_runs("alert-drill"))
    firing = [{"labels": labels, "startsAt": "2026-11-30T00:00:00Z"}]
    for _ in range(2):  # the same alert twice: Alertmanager and the receiver both dedupe
        posted = httpx.post(f"{alertmanager}/api/v2/alerts", json=firing)
        assert posted.status_code == 200, posted.text
    deadline = time.monotonic() + 60
    while len(runs := serving.deployment_runs("alert-drill")) == before:
        assert time.monotonic() < deadline, serving.log.read_text()[-2000:]
        time.sleep(0.2)
    new = [r for r in runs if r["parameters"]["incident"].startswith("test-alert-")]
    run = serving.wait_done(new[-1]["id"]) if len(runs) == before + 1 else None
    assert run is not None and run["state"]["type"] == "COMPLETED", runs
    incident_id = run["parameters"]["incident"]

    ended = [
        {"labels": labels, "startsAt": "2026-11-30T00:00:00Z", "endsAt": "2026-11-30T00:00:01Z"}
    ]
    assert httpx.post(f"{alertmanager}/api/v2/alerts", json=ended).status_code == 200
    ledger = Ledger(f"sqlite:///{serving.home / 'ledger.sqlite'}", SystemClock(), create=False)
    try:
        deadline = time.monotonic() + 30
        while "resolved" not in [e.outcome for e in ledger.entries(incident_id)]:
            assert time.monotonic() < deadline, [e.outcome for e in ledger.entries(incident_id)]
            time.sleep(0.3)
        outcomes = [(e.step_id, e.outcome) for e in ledger.entries(incident_id)]
    finally:
        ledger.close()
    assert outcomes[:2] == [("alert.start", "claimed"), ("alert.start", "done")]
    assert outcomes[-1] == ("alert", "resolved")
    assert len(serving.deployment_runs("alert-drill")) == before + 1
