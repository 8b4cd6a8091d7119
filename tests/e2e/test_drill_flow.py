"""The whole demo drill as a Prefect flow under Prefect's test harness: its outputs, the
change-nothing guarantee, and no customer personal data in anything Prefect stores."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.connectors.customers_sql import SqlCustomerDirectory, snapshot_digest, sqlite_url
from tests.conftest import customers_named_in

pytestmark = pytest.mark.prefect


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under root with its size, modification time and content hash."""
    return {
        str(path.relative_to(root)): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            _sha(path) if path.is_file() else "folder",
        )
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def drill_run(
    prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("BREACHBOOK_HOME", str(home))
    from breachbook.demo import ensure_demo_world

    world = ensure_demo_world(home / "demo")
    before = _tree(home)
    from flows.response import response

    out = tmp_path_factory.mktemp("drill") / "out"
    state = response(demo=True, out_dir=str(out), return_state=True)
    assert state.is_completed(), state.message
    yield {
        "out": out,
        "world": world,
        "flow_run_id": state.state_details.flow_run_id,
        "home_before": before,
        "result": state.result(),
    }
    mp.undo()


def no_rule_targets(out: Path) -> set[str]:
    """The plan's targets for places where customers live and no rule covers them."""
    obligations = json.loads((out / "obligations.json").read_text())
    return {f"no-rule:{place}" for place in obligations["no_rule_for_jurisdiction"]}


def _customers(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM customers ORDER BY id")]
    conn.close()
    return rows


def test_plan_has_every_action_with_a_verdict_and_reason(drill_run: dict[str, Any]) -> None:
    plan = json.loads((drill_run["out"] / "plan.json").read_text())
    assert plan["mode"] == "drill"
    by_step: dict[str, list[dict[str, Any]]] = {}
    gaps = no_rule_targets(drill_run["out"])
    for entry in plan["entries"]:
        by_step.setdefault(entry["step_id"], []).append(entry)
        if entry["target"] in gaps:
            # residents of a place no rule covers: FAILED for a person, never silent
            assert (entry["status"], entry["verdict"]) == ("set-aside", "FAILED")
            assert entry["reason"].startswith(f"no rule for {entry['target'][8:]}: ")
            continue
        assert entry["status"] == "planned"
        assert entry["verdict"] in {"VERIFIED", "FAILED", "UNVERIFIED"}
        assert entry["reason"]
    assert len(by_step) == 17
    assert by_step["lock-db-role"][0]["target"] == "analytics_etl"
    assert by_step["lock-db-role"][0]["verdict"] == "UNVERIFIED"
    assert "no database admin connector configured" in by_step["lock-db-role"][0]["reason"]
    assert {e["target"] for e in by_step["block-addresses"]} == {
        "203.0.113.0/24",
        "198.51.100.23/32",
    }
    assert [e["verdict"] for e in by_step["snapshot-evidence"]] == ["VERIFIED"] * 8
    assert drill_run["result"] == {
        "run_id": plan["run_id"],
        "out_dir": str(drill_run["out"].resolve()),
    }
    assert plan["verdicts"]["FAILED"] == len(gaps)
    assert (
        "| lock-db-role | database.lock_role | analytics_etl | planned | UNVERIFIED |"
        in (drill_run["out"] / "plan.md").read_text()
    )


def test_obligations_and_letters_match_the_customer_database(drill_run: dict[str, Any]) -> None:
    out, world = drill_run["out"], drill_run["world"]
    obligations = json.loads((out / "obligations.json").read_text())
    assert obligations["affected_customers"] == 10_000
    by_id = {o["id"]: o for o in obligations["obligations"]}
    assert set(by_id) == {
        "gdpr-a33",
        "gdpr-a34",
        "uk-gdpr-ico",
        "uk-gdpr-a34",
        "cn-pipl-57",
        "cn-pipl-57-authority",
        "us-ca",
        "us-ca-ag",
        "us-ny",
        "us-ny-agencies",
        "us-tx",
        "us-tx-ag",
        "us-fl",
        "us-ma",
        "us-ma-regulators",
        "us-wa",
        "us-il",
    }
    assert by_id["us-ca-ag"]["due_at"] is None and by_id["us-ca-ag"]["due_after"] == "us-ca"
    incident = yaml.safe_load((out / "incident.yaml").read_text())
    awareness = datetime.fromisoformat(incident["discovered_at"])
    assert datetime.fromisoformat(by_id["gdpr-a33"]["due_at"]) == awareness + timedelta(hours=72)
    assert by_id["gdpr-a34"]["due_at"] == "ASAP"

    customers = _customers(world.customers_db)
    conn = sqlite3.connect(world.customers_db)
    with_card = {row[0] for row in conn.execute("SELECT customer_id FROM payment_cards")}
    # California's triggers: a name with a card, bank account or taxpayer number, or a
    # password alone (tax ids are held for high-value US buyers, bank accounts for consignors).
    triggering = with_card | {
        row[0]
        for row in conn.execute(
            "SELECT id FROM customers WHERE tax_id IS NOT NULL "
            "UNION SELECT customer_id FROM consignor_accounts "
            "UNION SELECT customer_id FROM web_accounts"
        )
    }
    conn.close()
    eu = {"DE", "FR", "IT", "ES", "NL", "IE"}
    expected = {
        "gdpr-a34": {c["id"] for c in customers if c["country"] in eu},
        "uk-gdpr-a34": {c["id"] for c in customers if c["country"] == "GB"},
        "cn-pipl-57": {c["id"] for c in customers if c["country"] == "CN"},
        "us-ca": {c["id"] for c in customers if c["region"] == "CA" and c["id"] in triggering},
        "us-wa": {c["id"] for c in customers if c["region"] == "WA" and c["id"] in triggering},
        "us-il": {c["id"] for c in customers if c["region"] == "IL" and c["id"] in triggering},
    }
    for rule_id, ids in expected.items():
        assert by_id[rule_id]["affected_count"] == len(ids)
        assert set((out / "recipients" / f"{rule_id}.txt").read_text().split()) == ids
        assert {p.stem for p in (out / "letters" / rule_id).iterdir()} == ids
    assert expected["us-ca"] < {c["id"] for c in customers if c["region"] == "CA"}
    assert obligations["no_rule_for_jurisdiction"] == {}


def test_a_letter_carries_the_customer_fields_and_the_drill_mark(drill_run: dict[str, Any]) -> None:
    out, world = drill_run["out"], drill_run["world"]
    conn = sqlite3.connect(world.customers_db)
    with_card = {row[0] for row in conn.execute("SELECT customer_id FROM payment_cards")}
    conn.close()
    ca_id = next(
        c for c in (out / "recipients" / "us-ca.txt").read_text().split() if c in with_card
    )
    person = next(c for c in _customers(world.customers_db) if c["id"] == ca_id)
    letter = (out / "letters" / "us-ca" / f"{ca_id}.txt").read_text()
    assert letter.startswith("[DRILL]")
    assert "Subject: Notice of Data Breach" in letter
    assert person["full_name"] in letter
    assert f"{person['city']}, CA {person['postal_code']}" in letter
    assert "your payment card number and expiry date" in letter
    zh_id = (out / "recipients" / "cn-pipl-57.txt").read_text().split()[0]
    chinese = (out / "letters" / "cn-pipl-57" / f"{zh_id}.txt").read_text()
    assert "个人信息泄露通知" in chinese and "您的姓名" in chinese
    assert "我们已锁定被滥用的数据库账户" in chinese  # the incident's own words, translated
    for country, words in (("DE", "Ein Angreifer hat"), ("NL", "Een aanvaller heeft")):
        person = next(c for c in _customers(world.customers_db) if c["country"] == country)
        letter = (out / "letters" / "gdpr-a34" / f"{person['id']}.txt").read_text()
        assert words in letter and "An attacker used" not in letter
    plan = json.loads((out / "plan.json").read_text())
    render = next(s for s in plan["steps"] if s["step_id"] == "render-letters")
    assert render["counts"]["letters_in_fallback_language"] == 0
    assert render["counts"]["letters_with_untranslated_incident_texts"] == 0


def test_evidence_manifest_hashes_what_was_read_with_a_custody_chain(
    drill_run: dict[str, Any],
) -> None:
    out, world = drill_run["out"], drill_run["world"]
    lines = (out / "evidence" / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0]["event"] == "opened" and records[0]["contents"] == "omitted"
    items = {r["item"]: r for r in records if r["event"] == "collected"}
    assert set(items) == {
        "table:customers",
        "table:orders",
        "table:favourites",
        "table:payment_cards",
        "table:web_accounts",
        "table:consignor_accounts",
        "incident-record",
        "ledger",
    }
    assert not (out / "evidence" / "items").exists()  # a drill keeps hashes, not the data
    directory = SqlCustomerDirectory(sqlite_url(world.customers_db, read_only=True), read_only=True)
    columns = ["card_number", "customer_id", "expiry"]
    sha, size = snapshot_digest(
        directory.table_snapshot(
            "payment_cards", sorted(columns, key=["customer_id", "card_number", "expiry"].index)
        )
    )
    directory.close()
    assert (
        items["table:payment_cards"]["sha256"] == sha
        and items["table:payment_cards"]["size_bytes"] == size
    )
    result = CliRunner().invoke(app, ["evidence", "verify", str(out / "evidence")])
    assert result.exit_code == 0, result.output
    assert "result: intact" in result.output


def test_statement_report_and_audit(drill_run: dict[str, Any]) -> None:
    out = drill_run["out"]
    statement = (out / "statement.md").read_text()
    assert statement.startswith("[DRILL]") and "10,000 customers are affected" in statement
    report = (out / "report.md").read_text()
    for phase in ("contain", "preserve", "notify", "communicate"):
        assert f"| {phase} |" in report
    assert "- letters: 9," in report
    assert "**UNVERIFIED** `deactivate-keys` on `AKIAZ3MDEMOLEAKED01`" in report
    assert not (out / "RUN-INCOMPLETE.txt").exists()
    result = CliRunner().invoke(app, ["audit", "verify", "--run", str(out)])
    assert result.exit_code == 0, result.output
    # the incident's facts, then a preflight and a plan entry for each action (publishing:
    # one per language), one entry for each statement version drafted (holding and full),
    # and a preflight and an outcome for each place no rule covers
    entries = 113 + 2 * len(no_rule_targets(out))
    assert f"incident demo-2026-antiques-leak, {entries} entries" in result.output


AUDIT_STATE = ("anchors", "keys")
"""breachbook's own audit state: signed ledger heads are published outside the run folder (an
anchor kept beside the ledger proves nothing to whoever can rewrite both), and the signing key
is made once. Nothing of the rehearsed world is there."""


def test_the_drill_changed_nothing_outside_its_folder(drill_run: dict[str, Any]) -> None:
    """The demo world (customers, sample incident, outbox and evidence folders) and everything
    else in the home are exactly as they were: no file added, removed, touched or changed. The
    only writes outside the folder are signed anchors appended to the incident's anchors file."""
    home = drill_run["world"].folder.parent

    def world(tree: dict[str, Any]) -> dict[str, Any]:
        return {path: v for path, v in tree.items() if not path.startswith(AUDIT_STATE)}

    assert world(_tree(home)) == world(drill_run["home_before"])
    assert "demo/customers.sqlite" in drill_run["home_before"]
    added = set(_tree(home)) - set(drill_run["home_before"])
    assert added <= {
        "anchors",
        "anchors/demo-2026-antiques-leak.jsonl",
        "keys",
        "keys/signing-key",
        "keys/signing-key.pub",
    }
    lines = (home / "anchors" / "demo-2026-antiques-leak.jsonl").read_text().splitlines()
    assert len(lines) >= 2 and all('"signature":' in line for line in lines)


def test_the_drill_keeps_the_incident_it_rehearsed(drill_run: dict[str, Any]) -> None:
    out = drill_run["out"]
    incident = yaml.safe_load((out / "incident.yaml").read_text())
    assert incident["id"] == "demo-2026-antiques-leak"
    lines = (out / "evidence" / "manifest.jsonl").read_text().splitlines()
    record = next(r for r in map(json.loads, lines) if r.get("item") == "incident-record")
    assert record["sha256"] == _sha(out / "incident.yaml")


def prefect_texts(flow_run_id: UUID) -> tuple[list[str], set[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    texts: list[str] = []
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        texts.append(json.dumps(run.parameters, default=str))
        texts.append(str(run.state.message if run.state else ""))
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        texts += [log.message for log in logs]
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        artifacts = client.read_artifacts(flow_run_filter=runs)
        keys = {a.key.rsplit("-", 1)[0] for a in artifacts if a.key}  # breachbook-KIND-RUN
        texts += [json.dumps(a.data, default=str) + (a.description or "") for a in artifacts]
        for task_run in client.read_task_runs(flow_run_filter=runs):
            texts.append(task_run.name + json.dumps(task_run.task_inputs, default=str))
            texts.append(str(task_run.state.message if task_run.state else ""))
    return texts, keys


def test_the_flow_run_shows_its_progress_to_the_end(drill_run: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[drill_run["flow_run_id"]]))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=runs)
    run12 = str(drill_run["flow_run_id"]).replace("-", "")[:12]
    mine = [a for a in found if a.key == f"breachbook-progress-{run12}"]
    assert len(mine) == 1 and mine[0].type == "progress"
    assert float(str(mine[0].data)) == 100.0
    assert mine[0].description == "18 of 18 steps done; last: communicate/war-room-update"


def test_no_customer_personal_data_reaches_prefect(drill_run: dict[str, Any]) -> None:
    texts, artifact_keys = prefect_texts(drill_run["flow_run_id"])
    assert {
        "breachbook-progress",
        "breachbook-summary",
        "breachbook-plan",
        "breachbook-obligations",
        "breachbook-report",
        "breachbook-statement-holding",
        "breachbook-statement-full",
    } <= artifact_keys
    joined = "\n".join(texts)
    assert "render-letters" in joined and "letters=" in joined  # the logs were really read
    assert customers_named_in(joined, drill_run["world"].customers_db) == []
