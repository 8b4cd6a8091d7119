"""The relay's log through the product's path: the settings build the adapter in the real
wiring beside a real SMTP relay (aiosmtpd). A drill only reads the log; a log that cannot be
read fails the delivery step naming BREACHBOOK_SMTP_RELAY_LOG, in a drill and in a LIVE run
(which then sends nothing). Reconciling through it after kills: test_smtp_kill.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from breachbook.clock import FixedStepClock
from breachbook.demo import DemoWorld, ensure_demo_world
from breachbook.engine import RunResult, Status
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import Adapters, RunRequest
from tests.conftest import T0, Fakes
from tests.e2e.live_process import INCIDENT, Granted
from tests.fakes import RecordingChat, RecordingCloud, RecordingDatabaseAdmin, RecordingPublisher
from tests.integration.smtp_server import Relay, recording_relay
from tests.integration.test_smtp import smtp_settings

WORLD = 60


@pytest.fixture
def world(tmp_path: Path) -> DemoWorld:
    return ensure_demo_world(tmp_path / "world", size=WORLD, now=T0)


def settings_for(world: DemoWorld, home: Path, relay: Relay, log: Path) -> Settings:
    return smtp_settings(world, home, relay).model_copy(update={"smtp_relay_log": log})


def drill(settings: Settings, world: DemoWorld, tmp_path: Path) -> RunResult:
    adapters = dataclasses.replace(Fakes(tmp_path).adapters(), mail=None)
    _, result = execute(
        RunRequest(mode=Mode.DRILL, incident_file=world.incident_file, out_dir=tmp_path / "drill"),
        settings=settings,
        clock=FixedStepClock(T0),
        adapters=adapters,
    )
    return result


def live(settings: Settings, world: DemoWorld, out: Path) -> RunResult:
    _, result = execute(
        RunRequest(
            mode=Mode.LIVE,
            incident_file=world.incident_file,
            confirm_incident_id=INCIDENT,
            out_dir=out,
        ),
        settings=settings,
        adapters=Adapters(
            approvals=Granted(),
            database=RecordingDatabaseAdmin(),
            cloud=RecordingCloud(),
            chat=RecordingChat(),
            publisher=RecordingPublisher(),
        ),
    )
    return result


def deliveries(result: RunResult) -> list[tuple[Status, str, str]]:
    """Each obligation's delivery: what became of it, its check's verdict and reason."""
    found = [
        (e.status, e.verdict, e.reason or "")
        for e in result.entries()
        if e.step_id == "deliver-letters"
    ]
    assert found, "no delivery in the plan"
    return found


def test_a_drill_reads_the_relay_log_and_writes_nothing_to_it_and_sends_nothing(
    world: DemoWorld, tmp_path: Path
) -> None:
    log = tmp_path / "maillog"
    log.write_text("Nov 30 10:00:00 relay postfix/smtpd[811]: connect from localhost\n")
    before = (log.read_bytes(), log.stat().st_mtime_ns)
    with recording_relay(tmp_path) as relay:
        result = drill(settings_for(world, tmp_path / "home", relay, log), world, tmp_path)
        assert relay.recorder.count("MAIL") == 0 and relay.recorder.messages == []
    for status, _, reason in deliveries(result):
        assert status is Status.PLANNED
        assert f"relay log {log} is readable; nothing was written" in reason
        assert "EHLO, STARTTLS, AUTH" in reason
    assert (log.read_bytes(), log.stat().st_mtime_ns) == before


def test_a_relay_log_that_cannot_be_read_fails_the_delivery_naming_the_setting(
    world: DemoWorld, tmp_path: Path
) -> None:
    """Its check FAILED, the step refused: in a drill, and in a LIVE run (no letter sent)."""
    missing = tmp_path / "var" / "maillog"
    with recording_relay(tmp_path) as relay:
        settings = settings_for(world, tmp_path / "home", relay, missing)
        drilled = deliveries(drill(settings, world, tmp_path))
        lived = deliveries(live(settings, world, tmp_path / "live"))
        assert relay.recorder.count("MAIL") == 0 and relay.recorder.messages == []
    for status, verdict, reason in drilled + lived:
        assert (status, verdict) == (Status.REFUSED, "FAILED"), reason
        assert f"relay log {missing}: cannot read it (FileNotFoundError)" in reason
        assert "check BREACHBOOK_SMTP_RELAY_LOG" in reason
