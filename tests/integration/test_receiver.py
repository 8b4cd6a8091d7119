"""The alert receiver over real HTTP (uvicorn on loopback): Alertmanager groups, GuardDuty
findings and generic alerts become incidents and runs, repeats join, resolved starts nothing;
every accepted alert is in the ledger (chained and anchored) before the answer; a run that
fails to start is retried and one left unstarted is started when the receiver comes back;
anything malformed, unsigned or replayed is refused with a 4xx naming the problem."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from breachbook.alerts import AlertRules
from breachbook.anchors import Anchoring
from breachbook.cli import app
from breachbook.clock import SystemClock
from breachbook.containment import ContainNow
from breachbook.demo import DemoWorld
from breachbook.ledger import ItemStatus, Ledger
from breachbook.receiver import AlertBook, Auth, Receiver, sign
from breachbook.settings import Settings
from breachbook.wiring import demo_settings
from tests.conftest import ROOT, free_port
from tests.fakes import RecordingStarter

RULES = ROOT / "tests" / "data" / "alerts" / "rules.yaml"
TOKEN = "s3cret-token-for-tests"
KEY = "hmac-key-for-tests"


class Running:
    """A receiver served by uvicorn in a thread, and a client for it."""

    def __init__(
        self,
        home: Path,
        starter: RecordingStarter,
        retries: tuple[float, ...],
        settings: Settings | None = None,
        contain: bool = False,
    ) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.settings = settings or Settings(home=home)
        self.ledger_url = f"sqlite:///{home / 'ledger.sqlite'}"
        self.ledger = Ledger(self.ledger_url, SystemClock())
        book = AlertBook(self.ledger, Anchoring.from_settings(self.settings), home / "incidents")
        self.starter = starter
        self.receiver = Receiver(
            AlertRules.load(RULES),
            book,
            starter,
            Auth(TOKEN, KEY, 300),
            retries,
            ContainNow(self.settings) if contain else None,
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.receiver.app, host="127.0.0.1", port=port, log_level="error")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.ledger.close()

    def post(self, source: str, body: Any, signed: bool = False) -> httpx.Response:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            headers |= sign(KEY, data, int(time.time()))
        else:
            headers["Authorization"] = f"Bearer {TOKEN}"
        return self.client.post(f"/alerts/{source}", content=data, headers=headers)

    def wait_started(self, count: int) -> None:
        """Until `count` runs were started and each start is settled in the ledger (the
        receiver records `done` just after the starter answers)."""
        deadline = time.monotonic() + 10
        while len(self.starter.started) < count or any(
            self.start_status(started.incident_id) is not ItemStatus.DONE
            for started in self.starter.started
        ):
            assert time.monotonic() < deadline, self.starter.started
            time.sleep(0.02)

    def start_status(self, incident_id: str) -> ItemStatus | None:
        return self.ledger.item_status(incident_id, "alert.start", "run")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    handle = Running(tmp_path / "home", RecordingStarter(), (0.05, 0.05))
    yield handle
    handle.stop()


def alertmanager(status: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="CustomerDbExport"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "breachbook",
        "groupLabels": {"alertname": "CustomerDbExport"},
        "commonLabels": {"alertname": "CustomerDbExport", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def am_alert(fingerprint: str, instance: str, status: str = "firing") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": "CustomerDbExport",
            "severity": "critical",
            "instance": instance,
            "role": "analytics_etl",
        },
        "annotations": {"summary": "export volume 40x normal"},
        "startsAt": "2026-11-29T23:50:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


GUARDDUTY = {
    "version": "0",
    "id": "c8c4daa7-a20c-2f03-0070-b7393dd542ad",
    "detail-type": "GuardDuty Finding",
    "source": "aws.guardduty",
    "account": "123456789012",
    "time": "2026-11-29T23:51:00Z",
    "region": "eu-west-1",
    "resources": [],
    "detail": {
        "schemaVersion": "2.0",
        "accountId": "123456789012",
        "region": "eu-west-1",
        "id": "16afba5c5c43e07c9e3e5e2e544e95df",
        "type": "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        "resource": {"resourceType": "AccessKey", "accessKeyDetails": {"userName": "etl"}},
        "severity": 8,
        "title": "Credentials for instance role used from an external IP address.",
        "service": {"action": {"actionType": "AWS_API_CALL"}, "count": 1},
    },
}


def test_an_alertmanager_group_opens_one_incident_per_alert_and_repeats_join_them(
    running: Running,
) -> None:
    group = alertmanager("firing", am_alert("a1b2c3", "db-1"), am_alert("d4e5f6", "db-2"))
    answer = running.post("alertmanager", group)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()["accepted"]
    assert [a["outcome"] for a in accepted] == ["starting", "starting"]
    running.wait_started(2)
    first = running.starter.started[0]
    assert first.mode == "live" and first.playbook == "customer-data-breach"
    incident = first.incident_file.read_text()
    assert "database_role: analytics_etl" in incident and "db-1" in incident

    again = running.post("alertmanager", group)
    assert [a["outcome"] for a in again.json()["accepted"]] == ["repeat", "repeat"]
    assert {a["incident"] for a in again.json()["accepted"]} == {a["incident"] for a in accepted}
    time.sleep(0.2)
    assert len(running.starter.started) == 2  # a repeat starts nothing

    resolved = running.post(
        "alertmanager", alertmanager("resolved", am_alert("a1b2c3", "db-1", "resolved"))
    )
    assert [a["outcome"] for a in resolved.json()["accepted"]] == ["resolved"]
    time.sleep(0.2)
    assert len(running.starter.started) == 2

    incident_id = accepted[0]["incident"]
    outcomes = [(e.step_id, e.outcome) for e in running.ledger.entries(incident_id)]
    assert outcomes == [
        ("alert.start", "claimed"),
        ("alert.start", "done"),
        ("alert", "repeat"),
        ("alert", "resolved"),
    ]
    assert running.start_status(incident_id) is ItemStatus.DONE
    verified = CliRunner().invoke(
        app,
        ["audit", "verify", "--ledger", running.ledger_url],
        env={"BREACHBOOK_HOME": str(running.home)},
    )
    assert verified.exit_code == 0, verified.output  # chained and anchored


def test_a_guardduty_finding_and_a_generic_alert_start_drills_by_their_rules(
    running: Running,
) -> None:
    answer = running.post("guardduty", GUARDDUTY, signed=True)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"][0]["incident"].startswith("guardduty-high-")
    repeat = running.post("guardduty", GUARDDUTY)  # the same finding again
    assert repeat.json()["accepted"][0]["outcome"] == "repeat"
    generic = {
        "alert": {
            "id": "siem-42",
            "summary": "Bulk read",
            "state": "open",
            "severity": "critical",
            "host": "app-7",
        }
    }
    assert running.post("generic", generic).json()["accepted"][0]["outcome"] == "starting"
    running.wait_started(2)
    assert [r.mode for r in running.starter.started] == ["drill", "drill"]
    assert "app-7" in running.starter.started[1].incident_file.read_text()
    unrouted = {"alert": {"id": "x-1", "summary": "Disk full", "severity": "warning"}}
    assert running.post("generic", unrouted).json()["accepted"][0]["outcome"] == "no rule"


def test_a_run_that_fails_to_start_is_retried_until_it_starts(tmp_path: Path) -> None:
    handle = Running(tmp_path / "home", RecordingStarter(failures=2), (0.05, 0.05, 0.05))
    try:
        answer = handle.post("alertmanager", alertmanager("firing", am_alert("ff01", "db-9")))
        incident_id = answer.json()["accepted"][0]["incident"]
        handle.wait_started(1)
        assert handle.starter.attempts == 3
        deadline = time.monotonic() + 5
        while handle.start_status(incident_id) is not ItemStatus.DONE:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        handle.stop()


def test_a_run_never_started_is_failed_then_started_by_the_next_repeat(tmp_path: Path) -> None:
    handle = Running(tmp_path / "home", RecordingStarter(failures=3), (0.05, 0.05))
    try:
        group = alertmanager("firing", am_alert("ee02", "db-8"))
        incident_id = handle.post("alertmanager", group).json()["accepted"][0]["incident"]
        deadline = time.monotonic() + 5
        while handle.start_status(incident_id) is not ItemStatus.FAILED:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert handle.post("alertmanager", group).json()["accepted"][0]["outcome"] == "starting"
        handle.wait_started(1)
    finally:
        handle.stop()


def test_an_accepted_alert_whose_run_was_not_started_is_started_when_the_receiver_returns(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    first = Running(home, RecordingStarter(failures=100), (30.0,))
    incident_id = first.post(
        "alertmanager", alertmanager("firing", am_alert("dd03", "db-7"))
    ).json()["accepted"][0]["incident"]
    first.stop()  # stops while the start waits for its retry: the claim stays open
    assert (
        Ledger(f"sqlite:///{home / 'ledger.sqlite'}", SystemClock()).item_status(
            incident_id, "alert.start", "run"
        )
        is ItemStatus.CLAIMED
    )
    second = Running(home, RecordingStarter(), (0.05,))
    try:
        second.wait_started(1)
        assert second.starter.started[0].incident_id == incident_id
    finally:
        second.stop()


@pytest.mark.parametrize(
    ("source", "body", "headers", "status", "names"),
    [
        ("alertmanager", b"{}", {}, 401, "unauthenticated"),
        ("alertmanager", b"{}", {"Authorization": "Bearer wrong"}, 401, "wrong bearer token"),
        ("alertmanager", b"{not json", {"Authorization": f"Bearer {TOKEN}"}, 400, "not JSON"),
        ("alertmanager", b'{"version": "3"}', {"Authorization": f"Bearer {TOKEN}"}, 422, "version"),
        (
            "guardduty",
            b'{"source": "aws.ec2"}',
            {"Authorization": f"Bearer {TOKEN}"},
            422,
            "source",
        ),
        ("nagios", b"{}", {"Authorization": f"Bearer {TOKEN}"}, 404, "senders are"),
        (
            "alertmanager",
            b"[" * 40 + b"]" * 40,
            {"Authorization": f"Bearer {TOKEN}"},
            400,
            "nested",
        ),
        (
            "alertmanager",
            b" " * (1024 * 1024 + 1),
            {"Authorization": f"Bearer {TOKEN}"},
            413,
            "more than",
        ),
        (
            "generic",
            b'{"alert": {"summary": "x"}}',
            {"Authorization": f"Bearer {TOKEN}"},
            422,
            "alert.id: missing",
        ),
    ],
)
def test_a_bad_request_is_refused_with_a_4xx_naming_the_problem(
    running: Running, source: str, body: bytes, headers: dict[str, str], status: int, names: str
) -> None:
    answer = running.client.post(f"/alerts/{source}", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert names in answer.json()["error"]
    assert running.ledger.heads() == {}  # nothing recorded


def test_signatures_are_checked_in_time_and_never_accepted_twice(running: Running) -> None:
    body = json.dumps(GUARDDUTY).encode()
    stale = sign(KEY, body, int(time.time()) - 301)
    assert running.client.post("/alerts/guardduty", content=body, headers=stale).status_code == 401
    forged = sign("another key", body, int(time.time()))
    answer = running.client.post("/alerts/guardduty", content=body, headers=forged)
    assert answer.status_code == 401 and "does not match" in answer.json()["error"]
    good = sign(KEY, body, int(time.time()))
    assert running.client.post("/alerts/guardduty", content=body, headers=good).status_code == 202
    replay = running.client.post("/alerts/guardduty", content=body, headers=good)
    assert replay.status_code == 409 and "replay" in replay.json()["error"]
    tampered = body.replace(b"eu-west-1", b"us-east-1")
    assert (
        running.client.post("/alerts/guardduty", content=tampered, headers=good).status_code == 401
    )


def _fuzz_cases(rng: random.Random, count: int) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """Requests none of which may be accepted: unsigned, wrongly signed or stale; or
    authenticated but malformed in a way no valid alert is (a required key gone, a wrong
    type, broken JSON, deep nesting, bad bytes)."""
    valid = {
        "alertmanager": alertmanager("firing", am_alert("abc123", "db-1")),
        "guardduty": GUARDDUTY,
        "generic": {"alert": {"id": "siem-1", "summary": "Bulk read", "severity": "critical"}},
    }
    required = {
        "alertmanager": ["version", "status", "alerts", "groupKey", "receiver"],
        "guardduty": ["source", "detail-type", "detail", "time"],
        "generic": ["alert"],
    }
    wrong = [None, 7, -1.5, True, "", "x" * 2000, [], {}, [1, 2], {"a": {"b": None}}]
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for n in range(count):
        source = rng.choice(list(valid))
        body = json.loads(json.dumps(valid[source]))
        kind = n % 8
        if kind == 0:  # random bytes, no credentials
            yield source, rng.randbytes(rng.randint(0, 300)), {}
        elif kind == 1:  # a valid alert with a wrong token or scheme
            token = rng.choice(["", "Bearer", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN])
            yield source, json.dumps(body).encode(), {"Authorization": token}
        elif kind == 2:  # signed with another key, or stale, or a garbled timestamp
            data = json.dumps(body).encode()
            # well outside the 300 s window, however long a loaded machine takes to answer
            stamp = int(time.time()) + rng.choice([-100_000, -400, 400, 0])
            headers = sign(rng.choice([KEY, "not-the-key"]), data, stamp)
            if stamp == int(time.time()):
                headers["X-Breachbook-Signature"] = "sha256=" + rng.randbytes(32).hex()
            if rng.random() < 0.3:
                headers["X-Breachbook-Timestamp"] = rng.choice(["", "abc", "-5", "9" * 30])
            yield source, data, headers
        elif kind == 3:  # a required key gone
            del body[rng.choice(required[source])]
            yield source, json.dumps(body).encode(), bearer
        elif kind == 4:  # a required key of the wrong type
            key = rng.choice(required[source])
            body[key] = rng.choice([w for w in wrong if w != body[key]])
            if source == "generic" and isinstance(body["alert"], dict):
                body["alert"] = "not an object"
            yield source, json.dumps(body).encode(), bearer
        elif kind == 5:  # broken JSON: cut short, or bytes flipped inside
            data = json.dumps(body).encode()
            cut = data[: rng.randint(0, len(data) - 2)]
            yield source, cut + rng.choice([b"", b"\xff", b"\x00", b"{{"]), bearer
        elif kind == 6:  # nesting far beyond the limit, as arrays or objects
            depth = rng.randint(33, 5000)
            nest = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
            yield source, nest[0] * depth + b"1" + nest[1] * depth, bearer
        else:  # a nested value where a string goes, or an alert list out of bounds
            if source == "alertmanager":
                body["alerts"] = rng.choice(
                    [[], [{"status": "firing"}], [am_alert("x", "y")] * 1001]
                )
            elif source == "guardduty":
                body["detail"]["severity"] = rng.choice([11, -1, "high", None])
            else:
                body["alert"]["id"] = rng.choice([{"x": 1}, [1], None, "bad id!", "x" * 200])
            yield source, json.dumps(body).encode(), bearer


def test_ten_thousand_malformed_or_unsigned_requests_are_all_refused_with_a_4xx(
    running: Running,
) -> None:
    rng = random.Random(13)
    statuses: Counter[int] = Counter()
    for source, body, headers in _fuzz_cases(rng, 10_000):
        answer = running.client.post(f"/alerts/{source}", content=body, headers=headers)
        statuses[answer.status_code] += 1
        assert 400 <= answer.status_code < 500, (source, body[:200], headers, answer.text)
        assert answer.json()["error"]
    assert sum(statuses.values()) == 10_000 and set(statuses) >= {400, 401, 422}
    assert running.ledger.heads() == {} and running.starter.started == []
    still = running.post("alertmanager", alertmanager("firing", am_alert("abc123", "db-1")))
    assert still.status_code == 202  # the receiver keeps answering


def test_a_live_alert_is_contained_in_the_receiver_within_a_second_beside_the_served_run(
    tmp_path: Path, small_world: DemoWorld
) -> None:
    home = tmp_path / "home"
    settings = demo_settings(Settings(home=home), small_world.customers_db, small_world.folder)
    handle = Running(home, RecordingStarter(), (0.05,), settings=settings, contain=True)
    try:
        sent = time.time()
        answer = handle.post("alertmanager", alertmanager("firing", am_alert("cc04", "db-5")))
        incident_id = answer.json()["accepted"][0]["incident"]
        handle.wait_started(1)  # the whole playbook still starts on the served deployment
        deadline = time.monotonic() + 20
        while not (
            claims := [
                e
                for e in handle.ledger.entries(incident_id)
                if e.phase == "claim" and e.step_id != "alert.start"
            ]
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first = claims[0]
        assert first.step_id == "open-war-room" and first.run_id != "receiver"
        assert datetime.fromisoformat(first.at).timestamp() - sent < 3.0  # 1 s when not shared
        folders = list((home / "runs" / incident_id).glob("contain-*"))
        assert len(folders) == 1
    finally:
        handle.stop()
