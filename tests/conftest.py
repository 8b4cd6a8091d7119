"""Shared fixtures: a small demo world built once per session, and run helpers."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from breachbook.clock import FixedStepClock
from breachbook.connectors.evidence_fs import FilesystemEvidenceStore
from breachbook.context import Connectors, RunContext
from breachbook.demo import DemoWorld, ensure_demo_world
from breachbook.engine import ApplyChanges, PlanOnly, StepExecutor
from breachbook.ledger import Ledger
from breachbook.models import Incident
from breachbook.modes import Mode
from breachbook.playbook import load_playbook
from breachbook.rules import RuleBook
from breachbook.settings import Settings, project_root
from breachbook.templates import Renderer
from breachbook.wiring import RunRequest, demo_settings, open_run
from breachbook.workspace import Workspace
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


@pytest.fixture
def drill_context(
    small_world: DemoWorld, demo_run_settings: Settings, tmp_path: Path
) -> Iterator[RunContext]:
    ctx = open_run(
        RunRequest(
            mode=Mode.DRILL, incident_file=small_world.incident_file, out_dir=tmp_path / "out"
        ),
        demo_run_settings,
        FixedStepClock(T0),
    )
    yield ctx
    ctx.ledger.close()


@pytest.fixture
def recording(tmp_path: Path) -> dict[str, object]:
    return {
        "evidence": FilesystemEvidenceStore(tmp_path / "vault"),
        "cloud": RecordingCloud(),
        "database": RecordingDatabaseAdmin(),
        "mail": RecordingMail(),
        "chat": RecordingChat(),
        "publisher": RecordingPublisher(),
        "approvals": ScriptedApprovals(approve={"legal", "comms"}),
    }


def context_with(
    base: RunContext, executor: StepExecutor, fakes: dict[str, object], ledger: Ledger | None = None
) -> RunContext:
    """The same run, with every port replaced by a recording fake and the given executor."""
    connectors = Connectors(
        clock=base.connectors.clock,
        customers=base.connectors.customers,
        executor=executor,
        approvals=fakes["approvals"],  # type: ignore[arg-type]
        database=fakes["database"],  # type: ignore[arg-type]
        cloud=fakes["cloud"],  # type: ignore[arg-type]
        mail=fakes["mail"],  # type: ignore[arg-type]
        chat=fakes["chat"],  # type: ignore[arg-type]
        evidence=fakes["evidence"],  # type: ignore[arg-type]
        publisher=fakes["publisher"],  # type: ignore[arg-type]
    )
    return replace(base, connectors=connectors, ledger=ledger or base.ledger, state={})


__all__ = [
    "ROOT",
    "T0",
    "ApplyChanges",
    "Incident",
    "PlanOnly",
    "Renderer",
    "RuleBook",
    "Workspace",
    "context_with",
    "load_playbook",
]


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's test harness, entered once per session (it costs about 13 s)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
