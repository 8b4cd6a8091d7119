"""Shared fixtures: a small demo world built once per session, and run helpers."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from breachbook.clock import Clock, FixedStepClock
from breachbook.connectors.evidence_fs import FilesystemEvidenceStore
from breachbook.demo import DemoWorld, ensure_demo_world
from breachbook.engine import RunResult
from breachbook.ledger import Ledger
from breachbook.models import Incident
from breachbook.modes import Mode
from breachbook.ports import Approvals, CustomerDirectory, EvidenceSource, Pauses
from breachbook.run import execute
from breachbook.settings import Settings, project_root
from breachbook.wiring import Adapters, RunRequest, demo_settings, live_ledger_url
from tests.fakes import (
    RecordingChat,
    RecordingCloud,
    RecordingDatabaseAdmin,
    RecordingMail,
    RecordingPublisher,
    ScriptedApprovals,
)

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = project_root()
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SMALL_WORLD = 400
ENGINE_PLAYBOOK = ROOT / "tests" / "data" / "engine" / "contain.yaml"
ENGINE_INCIDENT = ROOT / "tests" / "data" / "engine" / "incident.yaml"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def customers_named_in(text: str, customers_db: Path) -> list[str]:
    """Ids of the customers whose name, email, street or phone appears in `text`."""
    connection = sqlite3.connect(customers_db)
    people = connection.execute("SELECT id, full_name, email, street, phone FROM customers")
    found = [row[0] for row in people if any(value in text for value in row[1:])]
    connection.close()
    return found


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return ensure_demo_world(tmp_path_factory.mktemp("world"), size=SMALL_WORLD, now=T0)


@pytest.fixture
def demo_run_settings(small_world: DemoWorld, tmp_path: Path) -> Settings:
    return demo_settings(
        Settings(home=tmp_path / "home"), small_world.customers_db, small_world.folder
    )


@dataclass
class Fakes:
    """Recording fakes behind every port of a run, handed to the real wiring."""

    folder: Path
    cloud: RecordingCloud = field(default_factory=RecordingCloud)
    database: RecordingDatabaseAdmin = field(default_factory=RecordingDatabaseAdmin)
    mail: RecordingMail = field(default_factory=RecordingMail)
    chat: RecordingChat = field(default_factory=RecordingChat)
    publisher: RecordingPublisher = field(default_factory=RecordingPublisher)
    approvals: Approvals | None = field(
        default_factory=lambda: ScriptedApprovals(approve={"legal", "comms", "incident-lead"})
    )
    customers: CustomerDirectory | None = None
    evidence_source: EvidenceSource | None = None
    evidence_in_folder: bool = True
    """Transfer LIVE evidence to a folder of the test's; False: the store settings name."""
    pauses: Pauses | None = None

    def adapters(self) -> Adapters:
        return Adapters(
            customers=self.customers,
            evidence_source=self.evidence_source,
            cloud=self.cloud,
            database=self.database,
            mail=self.mail,
            chat=self.chat,
            publisher=self.publisher,
            approvals=self.approvals,
            pauses=self.pauses,
            evidence=FilesystemEvidenceStore(self.folder / "vault")
            if self.evidence_in_folder
            else None,
        )


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path)


def run_with(
    mode: Mode,
    settings: Settings,
    fakes: Fakes,
    out: Path | None,
    incident_file: Path,
    playbook: Path | None = None,
    resume: str | None = None,
    clock: Clock | None = None,
) -> RunResult:
    """A run through the product's path (`execute`: the real wiring, guards and engine) with
    recording fakes behind the ports. LIVE runs confirm with the incident's own id."""
    confirm = Incident.from_file(incident_file).id if mode is Mode.LIVE else None
    _, result = execute(
        RunRequest(
            mode=mode,
            incident_file=incident_file,
            out_dir=out,
            playbook_file=playbook,
            confirm_incident_id=confirm,
            run_id=resume,
        ),
        settings=settings,
        clock=clock or FixedStepClock(T0),
        adapters=fakes.adapters(),
    )
    return result


def live_ledger(settings: Settings) -> Ledger:
    return Ledger(live_ledger_url(settings), FixedStepClock(T0), create=False)


@pytest.fixture
def tabletop_content(tmp_path: Path) -> Path:
    """A content folder whose scenarios/ holds a scenario (`harbour`: the small test
    exercise), a players file (`good-team`) and an incident; flows, playbooks, rules and
    templates are the checkout's."""
    folder = tmp_path / "content"
    (folder / "scenarios").mkdir(parents=True)
    for name in ("flows", "playbooks", "rules", "templates"):
        (folder / name).symlink_to(ROOT / name)
    data = ROOT / "tests" / "data"
    (folder / "engine").symlink_to(data / "engine")  # the small exercise's ../engine/ files
    scenarios = data / "scenarios"
    (folder / "scenarios" / "harbour.yaml").write_bytes((scenarios / "small.yaml").read_bytes())
    good = (scenarios / "good-players.yaml").read_bytes()
    (folder / "scenarios" / "good-team.yaml").write_bytes(good)
    (folder / "scenarios" / "incident.yaml").write_text("id: inc-2026-009\ntitle: Leak\n")
    return folder


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's test harness, entered once per session (it costs about 13 s)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
