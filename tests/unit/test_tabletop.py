"""TABLETOP end to end through the `breachbook tabletop` command: the real wiring, engine
and playbook against the simulated world, on a simulated clock, with scripted players (and
a facilitator at a terminal), scored P/S/M/U with an after-action report."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from breachbook.cli import app
from breachbook.clock import FixedStepClock
from breachbook.errors import BreachbookError
from breachbook.journal import RunJournal
from breachbook.ledger import Ledger
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.tabletop.scenario import Customers, World
from breachbook.tabletop.world import (
    SimulatedApprovals,
    SimulatedClock,
    SimulatedCloud,
    SimulatedCustomers,
    SimulatedWorld,
)
from breachbook.wiring import Adapters, RunRequest, mode_profile
from tests.conftest import ENGINE_INCIDENT, ENGINE_PLAYBOOK, ROOT, T0, customers_named_in
from tests.fakes import InMemoryCustomers, RecordingCloud, RecordingDatabaseAdmin, ScriptedApprovals

DATA = ROOT / "tests" / "data" / "scenarios"
SMALL = DATA / "small.yaml"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BREACHBOOK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every wall-clock sleep asked for during the test: a tabletop jumps, it never waits."""
    asked: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        asked.append(seconds)
        real_sleep(min(seconds, 0.01))

    monkeypatch.setattr(time, "sleep", recording_sleep)
    return asked


def tabletop(*args: str, answers: str | None = None) -> Result:
    return CliRunner().invoke(app, ["tabletop", *args], input=answers)


def ratings(out: Path) -> dict[str, str]:
    score = json.loads((out / "score.json").read_text(encoding="utf-8"))
    return {row["target"]: row["rating"] for row in score["ratings"]}


def score(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "score.json").read_text(encoding="utf-8"))
    return data


def ledger_span(out: Path) -> timedelta:
    ledger = Ledger(f"sqlite:///{out / 'audit.sqlite'}", FixedStepClock(T0), create=False)
    try:
        times = sorted(row.at for row in ledger.entries())
    finally:
        ledger.close()
    return datetime.fromisoformat(times[-1]) - datetime.fromisoformat(times[0])


def test_a_good_team_on_the_small_exercise(tmp_path: Path, sleeps: list[float]) -> None:
    out = tmp_path / "good"
    result = tabletop(str(SMALL), "--players", str(DATA / "good-players.yaml"), "--out", str(out))
    assert result.exit_code == 0, result.output
    # The IAM fault holds the keys back until T+2:00 (S); everything else is on time.
    assert ratings(out) == {
        "declared": "P",
        "keys-off": "S",
        "lock-first": "P",
        "notice-filed": "P",
    }
    data = score(out)
    # The fault ends at T+2:00, the approval is asked then and given 10 minutes later, and
    # each of the two keys takes the world's action time (2 minutes).
    assert data["steps_done"]["deactivate-keys"] == 2 * 3600 + 10 * 60 + 2 * 120
    assert data["fault_hits"]["iam-throttled"] >= 1
    # The keys were still active at T+0:45: the contingency inject had to fire, the notice
    # was filed in time: its contingency did not.
    assert data["contingencies"] == {"keys-nudge": 45 * 60}
    # 72 hours of scenario time in the ledger, and the clock never slept to get there.
    assert ledger_span(out) >= timedelta(hours=72)
    assert sum(sleeps) < 1
    aar = (out / "aar.md").read_text(encoding="utf-8")
    assert "| T+00:45 | contingency | keys-nudge |" in aar
    assert "| containment | Keys deactivated within the hour: rated S | Pre-approve key" in aar
    assert "**S** (performed with some challenges) | T+02:14 |" in aar
    assert "Contingency, only when the keys are still active." in aar  # evaluator notes
    assert customers_named_in(aar, out / "world" / "customers.sqlite") == []
    page = (out / "aar.html").read_text(encoding="utf-8")
    assert (
        "<svg" in page
        and "<script" not in page
        and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    assert "<title>T+00:45 inject keys-nudge</title>" in page
    assert "<title>T+02:14 deactivate-keys done</title>" in page
    assert "<td>Keys deactivated within the hour</td>" in page
    verified = CliRunner().invoke(app, ["audit", "verify", "--run", str(out)])
    assert verified.exit_code == 0, verified.output


def test_a_late_team_scores_lower_and_is_told_why(tmp_path: Path) -> None:
    out = tmp_path / "late"
    result = tabletop(str(SMALL), "--players", str(DATA / "late-players.yaml"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert ratings(out) == {
        "declared": "U",
        "keys-off": "U",
        "lock-first": "P",
        "notice-filed": "U",
    }
    assert set(score(out)["contingencies"]) == {"keys-nudge", "notice-nudge"}
    aar = (out / "aar.md").read_text(encoding="utf-8")
    assert "- Decisions taken by a role without authority: 1" in aar
    assert "file by incident-lead, who has no authority (legal has)" in aar
    plan = aar.split("## Improvement plan", 1)[1]
    assert plan.count("| open |") == 3
    assert "| regulatory | Art. 33 notice filed before its deadline: rated U |" in plan
    assert "| legal | 2026-11-30 | 2026-12-30 | open |" in plan


def test_the_same_answers_give_the_same_report(tmp_path: Path) -> None:
    players = str(DATA / "good-players.yaml")
    for name in ("one", "two"):
        result = tabletop(str(SMALL), "--players", players, "--out", str(tmp_path / name))
        assert result.exit_code == 0, result.output
    for document in ("aar.md", "aar.html", "score.json"):
        assert (tmp_path / "one" / document).read_bytes() == (
            tmp_path / "two" / document
        ).read_bytes()


def test_a_facilitator_answers_at_the_terminal(tmp_path: Path) -> None:
    out = tmp_path / "live"
    # declare (asked by the first alert), file-notice (T+1:00), approve-keys (T+2:00, once
    # the fault lets the keys' check pass): option, who, in which role, minutes taken.
    answers = "declare\nPriya\nincident-lead\n5\nfile\nDana\nlegal\n600\napprove\nPriya\nincident-lead\n10\n"
    result = tabletop(str(SMALL), "--interactive", "--out", str(out), answers=answers)
    assert result.exit_code == 0, result.output
    assert "A bulk export by analytics_etl." in result.output
    assert "Contingency, only when" not in result.output  # evaluator notes stay hidden
    assert ratings(out)["declared"] == "P"
    assert ratings(out)["notice-filed"] == "P"


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on loopback that records every connection made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            accepted.append(str(peer))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_a_tabletop_never_reaches_a_real_system_whatever_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: tuple[int, list[str]]
) -> None:
    port, accepted = listener
    real = f"postgresql://responder@127.0.0.1:{port}/production"
    monkeypatch.setenv("BREACHBOOK_DATABASE_ADMIN_URL", real)
    monkeypatch.setenv("BREACHBOOK_CUSTOMERS_URL", real)
    monkeypatch.setenv("BREACHBOOK_LEDGER_URL", real)
    monkeypatch.setenv("BREACHBOOK_AWS_REGION", "eu-west-1")
    monkeypatch.setenv("BREACHBOOK_AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALLOOKINGKEY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    monkeypatch.setenv("BREACHBOOK_HTTP_SECRETS", "{}")
    monkeypatch.setenv("BREACHBOOK_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("BREACHBOOK_EVIDENCE_DIR", str(tmp_path / "evidence"))
    out = tmp_path / "run"
    result = tabletop(str(SMALL), "--players", str(DATA / "good-players.yaml"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert ratings(out)["lock-first"] == "P"  # the playbook ran: against the simulated world
    assert accepted == []
    assert not (tmp_path / "outbox").exists()
    assert not (tmp_path / "evidence").exists()


def test_the_tabletop_guard_refuses_an_adapter_outside_the_simulated_world(
    tmp_path: Path, home: Path
) -> None:
    cloud, database = RecordingCloud(), RecordingDatabaseAdmin()
    request = RunRequest(
        mode=Mode.TABLETOP,
        incident_file=ENGINE_INCIDENT,
        out_dir=tmp_path / "out",
        playbook_file=ENGINE_PLAYBOOK,
    )
    with pytest.raises(BreachbookError, match="a tabletop runs only on the simulated world"):
        execute(
            request,
            settings=Settings(home=home),
            clock=FixedStepClock(T0),
            adapters=Adapters(
                approvals=ScriptedApprovals(approve={"incident-lead"}),
                cloud=cloud,
                database=database,
            ),
        )
    assert cloud.checks == cloud.changes == []
    assert database.checks == database.changes == []


def test_the_tabletop_profile_builds_nothing_from_settings() -> None:
    profile = mode_profile(Mode.TABLETOP)
    assert not profile.builds_from_settings
    assert not profile.needs_confirmation
    assert profile.banner is not None and profile.banner.startswith("[TABLETOP]")


def test_a_port_the_world_does_not_give_stays_empty_whatever_the_settings(
    tmp_path: Path, home: Path, listener: tuple[int, list[str]]
) -> None:
    # Settings name a production database, an AWS endpoint and an HTTP API; the world gives
    # only customers, approvals and the cloud. Nothing is built from the settings: the
    # database step says it has no connector, and nothing connects to the listener.
    port, accepted = listener
    settings = Settings(
        home=home,
        database_admin_url=SecretStr(f"postgresql://responder@127.0.0.1:{port}/production"),
        aws_region="eu-west-1",
        aws_endpoint_url=f"http://127.0.0.1:{port}",
        http_secrets={},
    )
    clock = SimulatedClock(T0)
    world = SimulatedWorld(
        World(customers=Customers(generated=1), access_keys=["AKIAZ3MDEMOLEAKED01"]), clock
    )
    journal = RunJournal(
        Ledger(f"sqlite:///{tmp_path / 'decisions.sqlite'}", clock),
        "inc-engine-1",
        "exercise",
        "tester",
        "tabletop",
        clock,
    )
    ctx, result = execute(
        RunRequest(
            mode=Mode.TABLETOP,
            incident_file=ENGINE_INCIDENT,
            out_dir=tmp_path / "out",
            playbook_file=ENGINE_PLAYBOOK,
        ),
        settings=settings,
        clock=clock,
        adapters=Adapters(
            customers=SimulatedCustomers(InMemoryCustomers([])),
            approvals=SimulatedApprovals(world, journal),
            cloud=SimulatedCloud(world),
        ),
    )
    journal.ledger.close()
    assert ctx.connectors.database is None
    assert ctx.connectors.http is None
    assert ctx.connectors.cloud_evidence is None
    lock = next(e for e in result.entries() if e.step_id == "lock-db-role")
    assert lock.verdict == "UNVERIFIED"
    assert accepted == []


def test_the_shipped_exercise_shows_a_team_missing_the_gdpr_deadline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    players = str(ROOT / "scenarios" / "late-players.yaml")
    result = tabletop("--demo", "--players", players, "--out", str(out))
    assert result.exit_code == 0, result.output
    rated = ratings(out)
    assert rated["art33-before-deadline"] == "U"
    assert rated["regulator-answered"] == "U"  # answered by comms, who has no authority
    assert rated["evidence-before-quarantine"] == "P"
    assert rated["containment-within-1h"] == "M"  # the deny policy holds until T+6:00
    assert rated == LATE_TEAM_RATINGS
    data = score(out)
    assert set(data["contingencies"]) == {"war-room-nudge", "press-follow-up", "dpo-escalation"}
    assert data["letters_sent"] > 0
    # each letter rendered and checked, none built as an email message nobody reads
    assert (out / "letters").is_dir() and not (out / "messages").exists()
    assert {"smtp-outage", "quarantine-denied", "legal-unreachable"} <= set(data["fault_hits"])
    assert (data["rounds"], data["steps_done"]["deliver-letters"]) == (6, 109320.0)
    aar = (out / "aar.md").read_text(encoding="utf-8")
    for document in (aar, (out / "score.json").read_text(encoding="utf-8")):
        assert customers_named_in(document, out / "world" / "customers.sqlite") == []


LATE_TEAM_RATINGS = {
    "declare-within-30m": "S",
    "war-room-within-15m": "S",
    "keys-within-1h": "P",
    "containment-within-1h": "M",
    "evidence-before-quarantine": "P",
    "letters-within-24h": "S",
    "art33-before-deadline": "U",
    "regulator-answered": "U",
    "press-answered": "U",
    "statement-within-24h": "U",
}
"""The late team's ratings, as the exercise gave them before its rounds kept what had not
changed (bench/tabletop.py's speed-ups change no rating, time or count)."""

GOOD_TEAM_STEPS_DONE = {
    "lock-db-role": 120.0,
    "end-db-sessions": 240.0,
    "revoke-db-privileges": 960.0,
    "deactivate-keys": 1080.0,
    "snapshot-evidence": 1080.0,
    "assess-obligations": 1320.0,
    "block-addresses": 1320.0,
    "draft-holding-statement": 1320.0,
    "draft-regulator-notices": 1320.0,
    "draft-statement": 1320.0,
    "find-affected": 1320.0,
    "render-letters": 1320.0,
    "open-war-room": 1920.0,
    "war-room-update": 2040.0,
    "publish-statement": 3360.0,
    "quarantine-hosts": 21720.0,
    "deliver-letters": 28800.0,
}


def test_the_shipped_exercise_scores_a_good_team_as_it_always_has(tmp_path: Path) -> None:
    """Every rating, step time, contingency, letter and fault of the demo players' exercise,
    as before the rounds kept the letters and parses that had not changed."""
    out = tmp_path / "demo"
    players = str(ROOT / "scenarios" / "demo-players.yaml")
    result = tabletop("--demo", "--players", players, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert ratings(out) == {
        "declare-within-30m": "P",
        "war-room-within-15m": "S",
        "keys-within-1h": "P",
        "containment-within-1h": "M",
        "evidence-before-quarantine": "P",
        "letters-within-24h": "P",
        "art33-before-deadline": "P",
        "regulator-answered": "P",
        "press-answered": "P",
        "statement-within-24h": "P",
    }
    data = score(out)
    assert data["rounds"] == 5 and data["steps_done"] == GOOD_TEAM_STEPS_DONE
    assert data["contingencies"] == {"war-room-nudge": 900.0}
    assert data["letters_sent"] == 465
    assert data["fault_hits"] == {
        "chat-outage": 2,
        "legal-unreachable": 3,
        "quarantine-denied": 3,
        "smtp-outage": 10,
    }
