"""Helpers for the containment tests: the contain phase run through `execute` with the real
wiring (the database and cloud adapters built from settings), and restore through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.engine import PlanEntry, RunResult
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import Adapters, RunRequest
from tests.conftest import ROOT
from tests.fakes import InMemoryCustomers, ScriptedApprovals

CONTAIN_PLAYBOOK = ROOT / "tests" / "data" / "contain" / "playbook.yaml"
DENY_PLAYBOOK = ROOT / "tests" / "data" / "contain" / "deny.yaml"


def write_incident(folder: Path, incident_id: str, **targets: Any) -> Path:
    """An alert-sized incident naming the containment targets."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "incident.yaml"
    incident = {
        "id": incident_id,
        "title": "Unusual export from the customer database",
        "started_at": "2026-11-27T16:00:00+00:00",
        "discovered_at": "2026-11-27T16:30:00+00:00",
        **targets,
    }
    path.write_text(yaml.safe_dump(incident), encoding="utf-8")
    return path


def run_contain(
    mode: Mode,
    settings: Settings,
    incident_file: Path,
    out: Path,
    playbook: Path = CONTAIN_PLAYBOOK,
) -> RunResult:
    """The contain playbook through the product's path; only customers and approvals are
    stand-ins (the contain phase reads no customer), database and cloud come from settings."""
    incident_id = str(yaml.safe_load(incident_file.read_text())["id"])
    _, result = execute(
        RunRequest(
            mode=mode,
            incident_file=incident_file,
            out_dir=out,
            playbook_file=playbook,
            confirm_incident_id=incident_id if mode is Mode.LIVE else None,
        ),
        settings=settings,
        adapters=Adapters(
            customers=InMemoryCustomers([]), approvals=ScriptedApprovals({"incident-lead"})
        ),
    )
    return result


def by_target(result: RunResult, step_id: str) -> dict[str, PlanEntry]:
    return {e.target: e for e in result.entries() if e.step_id == step_id}


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the BREACHBOOK_* environment a command line would be given."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        shown = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if isinstance(value, dict):
            shown = json.dumps(
                {k: getattr(v, "get_secret_value", lambda v=v: v)() for k, v in value.items()}
            )
        env[f"BREACHBOOK_{name.upper()}"] = str(shown)
    return env


def restore_cli(settings: Settings, incident_id: str) -> str:
    """`breachbook restore --incident ID --confirm ID` with the settings in the environment."""
    result = CliRunner().invoke(
        app,
        ["restore", "--incident", incident_id, "--confirm", incident_id],
        env=settings_env(settings),
    )
    assert result.exit_code == 0, result.output
    return result.output
