"""Project files that the Prefect UI and a new user rely on."""

from __future__ import annotations

import inspect
import sqlite3
from typing import Any

import pytest
import yaml
from prefect.flows import Flow, load_flow_from_entrypoint

from breachbook.connectors.customers_sql import SqlCustomerDirectory, sqlite_url
from breachbook.demo import DemoWorld
from breachbook.modes import Mode
from tests.conftest import ROOT, T0


def test_prefect_yaml_deployments_point_at_real_flows_with_real_parameters() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in config["deployments"]}
    assert names == {"drill", "demo-drill", "live-response", "tabletop"}
    for deployment in config["deployments"]:
        flow: Flow[..., Any] = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment.get("parameters", {})) <= accepted, deployment["name"]
        assert "mode" not in accepted  # each deployment fixes its mode; the form never offers it


def test_flow_defaults_to_drill() -> None:
    flow: Flow[..., Any] = load_flow_from_entrypoint(str(ROOT / "flows" / "response.py:response"))
    assert inspect.signature(flow.fn).parameters["mode"].default is Mode.DRILL


def test_demo_world_is_reused_and_described(small_world: DemoWorld) -> None:
    conn = sqlite3.connect(small_world.customers_db)
    countries = {row[0] for row in conn.execute("SELECT DISTINCT country FROM customers")}
    regions = {
        row[0] for row in conn.execute("SELECT DISTINCT region FROM customers WHERE country = 'US'")
    }
    conn.close()
    assert {"US", "DE", "FR", "GB", "CN"} <= countries
    assert {"CA", "NY", "TX", "MA"} <= regions
    incident = yaml.safe_load(small_world.incident_file.read_text())
    assert incident["database_role"] and incident["access_key_ids"] and incident["source_addresses"]
    mtime = small_world.customers_db.stat().st_mtime_ns
    from breachbook.demo import ensure_demo_world

    again = ensure_demo_world(small_world.folder, size=400, now=T0)
    assert again.customers_db.stat().st_mtime_ns == mtime


def test_sqlite_directory_opened_read_only_refuses_writes(small_world: DemoWorld) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    directory = SqlCustomerDirectory(
        sqlite_url(small_world.customers_db, read_only=True), read_only=True
    )
    with (
        pytest.raises(OperationalError, match="readonly database"),
        directory._engine.begin() as conn,
    ):
        conn.execute(text("DELETE FROM favourites"))
    directory.close()


def test_only_the_wiring_reads_the_mode() -> None:
    """Core code never branches on the mode: only wiring.mode_profile reads it (the CLI and
    the flow only pass the user's choice along)."""
    # Entry points that pass a chosen mode along, never branching on it: the CLI, the
    # deployments' forms (each deployment fixes its mode), `serve` (the rule's mode names the
    # deployment), `submit` (the command's mode names the served deployment), containment
    # (runs the rule's mode), the tabletop exercise (runs TABLETOP) and the batch workers
    # (reopen a run in the mode it was started in, recorded in the ledger).
    allowed = {
        "batch_workers.py",
        "modes.py",
        "wiring.py",
        "cli.py",
        "forms.py",
        "serve.py",
        "submit.py",
        "containment.py",
        "exercise.py",
    }
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src" / "breachbook").rglob("*.py")
        if path.name not in allowed and "breachbook.modes" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
    wiring = (ROOT / "src" / "breachbook" / "wiring.py").read_text(encoding="utf-8")
    body_of_mode_profile = wiring.split("def mode_profile", 1)[1].split("\ndef ", 1)[0]
    assert wiring.count("Mode.") == body_of_mode_profile.count("Mode.")
