"""Approvals through the product's path (`execute` with the real wiring and engine): a step
that pauses in its flow run (a scripted `Pauses` standing in for Prefect's pause), answers
judged against the named approvers, escalation, rejection, and the drill's preflight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.engine import RunResult, Status
from breachbook.ledger import LedgerRow
from breachbook.modes import Mode
from breachbook.playbook import ApprovalGate
from breachbook.ports import Answer
from breachbook.roster import RoleApprovers, Ruling, judge
from breachbook.settings import Settings
from tests.conftest import (
    ENGINE_INCIDENT,
    ENGINE_PLAYBOOK,
    ROOT,
    T0,
    Fakes,
    live_ledger,
    run_with,
)
from tests.fakes import InMemoryCustomers, ScriptedPauses

TWO_PEOPLE = ROOT / "tests" / "data" / "approvals" / "two-people.yaml"
KEYS = ["AKIAZ3MDEMOLEAKED01", "AKIAZ3MDEMOLEAKED02"]
LEADS = {"incident-lead": RoleApprovers(people=["lin", "ada"], backup=["ben"])}
LEADS_JSON = json.dumps({"incident-lead": {"people": ["lin", "ada"], "backup": ["ben"]}})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """`lin` starts the runs (BREACHBOOK_ACTOR)."""
    return Settings(home=tmp_path / "home", approvers=LEADS, actor="lin")


def run(
    mode: Mode, settings: Settings, fakes: Fakes, playbook: Path = ENGINE_PLAYBOOK, **kw: Any
) -> RunResult:
    fakes.customers = fakes.customers or InMemoryCustomers([])
    return run_with(mode, settings, fakes, None, ENGINE_INCIDENT, playbook, **kw)


def gated(result: RunResult) -> set[Status]:
    return {e.status for e in result.entries() if e.step_id == "deactivate-keys"}


def approval_entries(settings: Settings) -> list[LedgerRow]:
    ledger = live_ledger(settings)
    found = [r for r in ledger.entries() if r.phase == "approval" and r.outcome != "posted"]
    ledger.close()
    return found


def decision_record(settings: Settings) -> dict[str, Any]:
    ledger = live_ledger(settings)
    found = ledger.get_record("inc-engine-1", "incident", "decision", "deactivate-keys")
    ledger.close()
    assert isinstance(found, dict)
    return found


def yes(who: str, comment: str = "") -> Answer:
    return Answer(approve=True, approver=who, comment=comment)


@pytest.mark.parametrize(
    ("answer", "before", "ruling", "reason"),
    [
        (yes("mallory"), [], Ruling.REFUSED, "mallory is not a named approver for role"),
        (yes(" LIN "), [], Ruling.REFUSED, "LIN started this run"),
        (yes("ada"), ["Ada"], Ruling.REFUSED, "ada has already approved"),
        (yes("ada"), [], Ruling.COUNTED, "approved by ada: 1 of 2"),
        (yes("ben"), ["ada"], Ruling.GRANTED, "approved by ben"),
        (Answer(approve=False, approver="ben"), ["ada"], Ruling.DENIED, "rejected by ben"),
    ],
)
def test_each_answer_is_judged_against_the_role_and_the_gate(
    answer: Answer, before: list[str], ruling: Ruling, reason: str
) -> None:
    gate = ApprovalGate(role="incident-lead", people=2, not_the_starter=True)
    judgement = judge(gate, LEADS, "lin", before, answer)
    assert (judgement.ruling, reason in judgement.reason) == (ruling, True), judgement


def test_a_paused_step_runs_once_a_named_approver_approves(
    settings: Settings, tmp_path: Path
) -> None:
    fakes = Fakes(tmp_path, approvals=None, pauses=ScriptedPauses([yes("ada", "keys checked")]))
    result = run(Mode.LIVE, settings, fakes)
    assert gated(result) == {Status.COMPLETED}
    assert sorted(fakes.cloud.changes) == [("deactivate_key", key) for key in KEYS]
    assert isinstance(fakes.pauses, ScriptedPauses)
    [(key, form, timeout)] = fakes.pauses.pauses
    assert key.startswith("deactivate-keys-") and timeout == pytest.approx(3600, abs=5)
    assert "Role **incident-lead**: lin, ada, ben." in form
    assert all(f"`{k}`: deactivate access key {k}" in form for k in KEYS), form
    assert f"breachbook approve {result.run_id} deactivate-keys --by NAME" in form
    entries = approval_entries(settings)
    assert [(r.outcome, r.actor) for r in entries] == [
        ("asked", "lin"),
        ("granted", "ada"),
    ]
    assert entries[0].details["flow_run"] == "0f0e0d0c-0000-4000-8000-000000000001"
    assert entries[1].details | {"reason": ""} == {
        "role": "incident-lead",
        "by": "ada",
        "via": "prefect",
        "comment": "keys checked",
        "reason": "",
        "version": None,  # a step decided once: no version
        "answered_version": None,
        "sha256": None,
    }
    [(channel, asked)] = fakes.chat.posts
    assert channel == "#inc" and "http://prefect.test/runs/flow-run/" in asked
    [blocks] = fakes.chat.blocks
    [button] = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert (button["type"], button["url"]) == ("button", fakes.pauses.site().url)


def test_two_different_people_other_than_the_starter_must_approve(
    settings: Settings, tmp_path: Path
) -> None:
    answers: list[Answer | None] = [yes("mallory"), yes("lin"), yes("ada"), yes("ADA"), yes("ben")]
    fakes = Fakes(tmp_path, approvals=None, pauses=ScriptedPauses(answers))
    result = run(Mode.LIVE, settings, fakes, TWO_PEOPLE)
    assert gated(result) == {Status.COMPLETED}
    assert [(r.outcome, r.actor) for r in approval_entries(settings)] == [
        ("asked", "lin"),
        ("refused", "mallory"),
        ("refused", "lin"),
        ("counted", "ada"),
        ("refused", "ADA"),
        ("granted", "ben"),
    ]
    assert isinstance(fakes.pauses, ScriptedPauses)
    forms = [form for _, form, _ in fakes.pauses.pauses]
    assert len(forms) == 5
    assert "mallory is not a named approver for role 'incident-lead'" in forms[1]
    assert "2 different people of the role must approve; not lin, who started" in forms[0]
    decision = decision_record(settings)
    assert decision["by"] == "ada, ben" and decision["status"] == "granted"


def test_nobody_answering_escalates_to_the_backup_and_the_step_never_proceeds(
    settings: Settings, tmp_path: Path
) -> None:
    fakes = Fakes(tmp_path, approvals=None, pauses=ScriptedPauses([None, None]))
    result = run(Mode.LIVE, settings, fakes, TWO_PEOPLE)
    assert gated(result) == {Status.WAITING} and result.waiting_for == ["deactivate-keys"]
    assert fakes.cloud.changes == []
    assert [r.outcome for r in approval_entries(settings)] == ["asked", "escalated", "expired"]
    escalated = approval_entries(settings)[1]
    assert escalated.details == {"role": "incident-lead", "asked": ["ben"], "after_seconds": 2}
    texts = [text for _, text in fakes.chat.posts]
    assert len(texts) == 3 and "asking the backup (ben)" in texts[1]
    assert "does not proceed without a decision" in texts[1]
    assert "the step is not done and waits" in texts[2]
    assert isinstance(fakes.pauses, ScriptedPauses)
    assert [t for _, _, t in fakes.pauses.pauses] == [pytest.approx(2, abs=0.5)] * 2


def test_the_backup_may_decide_once_the_role_has_not(settings: Settings, tmp_path: Path) -> None:
    one = settings.model_copy(update={"approvers": LEADS, "actor": "someone-else"})
    fakes = Fakes(tmp_path, approvals=None, pauses=ScriptedPauses([None, yes("ben")]))
    result = run(Mode.LIVE, one, fakes)
    assert gated(result) == {Status.COMPLETED}
    assert [r.outcome for r in approval_entries(one)] == ["asked", "escalated", "granted"]


def test_a_rejection_ends_the_step_with_its_comment_recorded(
    settings: Settings, tmp_path: Path
) -> None:
    no = Answer(approve=False, approver="ada", comment="key 02 belongs to the backup job")
    fakes = Fakes(tmp_path, approvals=None, pauses=ScriptedPauses([no]))
    result = run(Mode.LIVE, settings, fakes)
    assert gated(result) == {Status.NOT_APPROVED} and fakes.cloud.changes == []
    reasons = {e.reason for e in result.entries() if e.step_id == "deactivate-keys"}
    assert all("denied by ada: key 02 belongs to the backup job" in r for r in reasons)
    decision = decision_record(settings)
    assert (decision["status"], decision["comment"]) == ("denied", no.comment)


def test_the_drill_says_who_would_be_asked_and_fails_a_role_without_people(
    settings: Settings, tmp_path: Path
) -> None:
    named = run(Mode.DRILL, settings, Fakes(tmp_path / "a", approvals=None), TWO_PEOPLE)
    [reason] = {e.reason for e in named.entries() if e.step_id == "deactivate-keys"}
    assert "would ask incident-lead (ada, ben); 2 different people must approve" in reason
    assert "in war room #inc" in reason and gated(named) == {Status.PLANNED}

    alone = settings.model_copy(
        update={"approvers": {"incident-lead": RoleApprovers(people=["lin", "ada"])}}
    )
    short = run(Mode.DRILL, alone, Fakes(tmp_path / "b", approvals=None), TWO_PEOPLE)
    failed = [e for e in short.entries() if e.step_id == "deactivate-keys"]
    assert {e.verdict for e in failed} == {"FAILED"}
    assert "role 'incident-lead' needs 2 different people other than the run's starter" in (
        failed[0].reason
    )

    nobody = settings.model_copy(update={"approvers": {"legal": RoleApprovers(people=["x"])}})
    none = run(Mode.DRILL, nobody, Fakes(tmp_path / "c", approvals=None))
    [reason] = {e.reason for e in none.entries() if e.step_id == "deactivate-keys"}
    assert "no approvers are named for role 'incident-lead'" in reason


def test_the_terminal_answers_a_run_that_waits_in_the_ledger_by_the_same_rules(
    settings: Settings, tmp_path: Path
) -> None:
    fakes = Fakes(tmp_path, approvals=None)
    first = run(Mode.LIVE, settings, fakes, TWO_PEOPLE)
    assert gated(first) == {Status.WAITING}
    env = {
        "BREACHBOOK_HOME": str(settings.home),
        "BREACHBOOK_APPROVERS": LEADS_JSON,
    }

    def approve(*args: str) -> Any:
        return CliRunner().invoke(app, ["approve", first.run_id, "deactivate-keys", *args], env=env)

    unknown = approve("--by", "mallory")
    assert unknown.exit_code == 1
    assert "refused: mallory is not a named approver for role 'incident-lead'" in unknown.output
    starter = approve("--by", "lin")
    assert starter.exit_code == 1 and "lin started this run" in starter.output
    counted = approve("--by", "ada")
    assert counted.exit_code == 0 and "counted (approved by ada: 1 of 2)" in counted.output
    denied = approve("--by", "ben", "--deny", "--comment", "wrong keys")
    assert denied.exit_code == 0 and "denied (rejected by ben)" in denied.output

    resumed = run(Mode.LIVE, settings, fakes, TWO_PEOPLE, resume=first.run_id)
    assert gated(resumed) == {Status.NOT_APPROVED} and fakes.cloud.changes == []
    answers = [(r.outcome, r.actor, r.details.get("via")) for r in approval_entries(settings)]
    assert [a for a in answers if a[0] in {r.value for r in Ruling}] == [
        ("refused", "mallory", "terminal"),
        ("refused", "lin", "terminal"),
        ("counted", "ada", "terminal"),
        ("denied", "ben", "terminal"),
    ]
    assert decision_record(settings)["comment"] == "wrong keys"


def test_the_form_button_opens_the_flow_run_page_in_prefects_ui_or_gives_way_to_the_command() -> (
    None
):
    """The button's URL is Prefect's own PREFECT_UI_URL (which Prefect derives from
    PREFECT_API_URL unless it is set); with no UI known there is no button, only the command."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from breachbook.connectors.ledger_approvals import Wait, approval_blocks
    from breachbook.connectors.prefect_pauses import PrefectPauses

    run = "0f0e0d0c-0000-4000-8000-000000000002"
    api = "http://prefect.example:4200/api"
    with temporary_settings({PREFECT_API_URL: api}):
        derived = PrefectPauses(run, 1).site()
    with temporary_settings({PREFECT_API_URL: api, PREFECT_UI_URL: "https://ops.example/ui/"}):
        explicit = PrefectPauses(run, 1).site()
    with temporary_settings(restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}):
        unknown = PrefectPauses(run, 1).site()
    assert derived.url == f"http://prefect.example:4200/runs/flow-run/{run}"
    assert explicit.url == f"https://ops.example/ui/runs/flow-run/{run}"
    assert unknown.url is None

    def blocks(url: str | None) -> str:
        wait = Wait(
            step_id="s", role="r", summary="-", since=T0, run_id="r1", flow_run_id=run, url=url
        )
        return json.dumps(approval_blocks(wait, "Approval needed"))

    assert f'"url": "{derived.url}"' in blocks(derived.url) and '"button"' in blocks(derived.url)
    assert '"button"' not in blocks(None)
    assert "breachbook approve r1 s --by NAME" in blocks(None)
