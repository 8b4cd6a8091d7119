"""The public statement after LIVE runs of the reference playbook on the small demo world,
through the real wiring with recording fakes: its facts are the ledger's, its sentences claim
nothing the ledger does not show, a rejection makes v2, and it is published only after
approval, each language of a version exactly once."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from breachbook.cli import app
from breachbook.demo import DemoWorld
from breachbook.engine import RunResult, Status
from breachbook.errors import BreachbookError
from breachbook.ledger import ItemStatus, LedgerRow
from breachbook.modes import Mode
from breachbook.ports import OutgoingLetter
from breachbook.settings import Settings
from breachbook.statement import StatementVersion, version_digest
from breachbook.wiring import DEMO_APPROVERS, demo_settings
from tests.conftest import Fakes, live_ledger, run_with
from tests.fakes import RecordingMail

INCIDENT = "demo-2026-antiques-leak"
DEMO_APPROVERS_JSON = json.dumps({role: a.model_dump() for role, a in DEMO_APPROVERS.items()})
"""The demo world's approvers, as the terminal reads them (the runs get them from the demo)."""
SENT_BEFORE_THE_RELAY_STOPS = 30


class RelayRefused(BreachbookError):
    """The relay refused a letter: a definite failure, retried by a later run."""


@dataclass
class MailThatStops(RecordingMail):
    """Delivers the first `after` letters, then refuses every other one."""

    after: int = SENT_BEFORE_THE_RELAY_STOPS

    def send(self, letter: OutgoingLetter) -> str:
        if len(self.sent) >= self.after:
            raise RelayRefused("relay refused the letter")
        return super().send(letter)


@pytest.fixture
def world(small_world: DemoWorld, tmp_path: Path) -> DemoWorld:
    folder = tmp_path / "world"
    shutil.copytree(small_world.folder, folder)
    return DemoWorld(folder, folder / small_world.customers_db.name, folder / "incident.yaml")


@pytest.fixture
def settings(world: DemoWorld, tmp_path: Path) -> Settings:
    return demo_settings(Settings(home=tmp_path / "home"), world.customers_db, world.folder)


def flat(text: str) -> str:
    return " ".join(text.split())


def dense(text: str) -> str:
    """Chinese text without the line breaks of the template."""
    return "".join(text.split())


def statement(out: Path, version: int, language: str) -> str:
    return (out / "statements" / f"full-v{version}.{language}.md").read_text()


def statuses(result: RunResult, step_id: str) -> set[Status]:
    return {e.status for e in result.entries() if e.step_id == step_id}


def test_after_a_partial_run_the_statement_says_what_the_ledger_shows_and_nothing_more(
    settings: Settings, world: DemoWorld, tmp_path: Path
) -> None:
    fakes = Fakes(tmp_path, mail=MailThatStops())
    out = tmp_path / "run1"
    result = run_with(Mode.LIVE, settings, fakes, out, world.incident_file)
    assert len(fakes.mail.sent) == SENT_BEFORE_THE_RELAY_STOPS
    assert statuses(result, "deliver-letters") & {Status.INCOMPLETE, Status.FAILED}

    ledger = live_ledger(settings)
    done = [i for i in ledger.items(INCIDENT, "letters.deliver") if i.status is ItemStatus.DONE]
    filed = ledger.records_of(INCIDENT, "incident", "filing")
    ledger.close()
    assert len(done) == SENT_BEFORE_THE_RELAY_STOPS
    assert all(f["status"] == "drafted" for f in filed.values())  # drafted, none filed

    obligations = json.loads((out / "obligations.json").read_text())
    owed = {line for path in (out / "recipients").iterdir() for line in path.read_text().split()}
    told = {i.key.split("/", 1)[1] for i in done}
    regulators = sorted(
        {o["recipient"] for o in obligations["obligations"] if o["audience"] == "regulator"}
    )

    facts = json.loads((out / "statements" / "full-v1.facts.json").read_text())
    by_id = {f["id"]: f for s in facts["languages"]["en"]["sentences"] for f in s["facts"]}
    assert by_id["letters.delivered"]["value"] == {"letters": 30, "people": len(told)}
    assert by_id["letters.delivered"]["entries"] == sorted(i.done_order or 0 for i in done)
    assert by_id["people.owed_notice"]["value"]["people"] == len(owed)
    assert by_id["people.affected"]["value"]["people"] == obligations["affected_customers"]
    assert by_id["authorities.notified"]["value"] == []
    assert by_id["authorities.to_notify"]["value"] == regulators

    en = flat(statement(out, 1, "en"))
    n = obligations["affected_customers"]
    assert f"{n:,} customers are affected" in en
    assert (
        f"We have written to {len(told)} of the {len(owed):,} people owed a letter from us, "
        f"and will write to the remaining {len(owed) - len(told):,}." in en
    )
    assert "We will notify the " + regulators[0] in en
    assert "We have notified" not in en and "we have informed" not in en.lower()
    assert "writing to each of them" not in en and "About" not in en
    assert "copied the entire customers table" in en and "part of" not in en
    assert "We locked the database account used in the breach." in en  # done in the ledger

    zh = dense(statement(out, 1, "zh-CN"))
    assert f"我们已致信{len(told)}人" in zh
    assert f"将致信其余{len(owed) - len(told):,}人" in zh
    assert "我们已通知" not in zh and "我们将通知" in zh
    assert "customers表的全部记录" in zh
    assert "我们已锁定被滥用的数据库账户。" in zh

    approver = (out / "statements" / "full-v1.facts.md").read_text()
    assert "`letters.delivered` = `{'letters': 30," in approver
    # the published text is the draft, word for word
    published = {r.language: r for r in fakes.publisher.published}
    assert set(published) == {"en", "zh-CN"}
    assert published["en"].body == statement(out, 1, "en")
    assert "Massachusetts" not in json.dumps([r.title for r in published.values()])


def approve(*args: str) -> Result:
    """`breachbook approve` as a person types it (the environment set by the test)."""
    return CliRunner().invoke(app, ["approve", *args])


def publish_answers(settings: Settings) -> list[LedgerRow]:
    """The approval entries of the publish step (asked and each answer), oldest first."""
    ledger = live_ledger(settings)
    rows = [
        r
        for r in ledger.entries(INCIDENT)
        if r.step_id == "publish-statement" and r.phase == "approval" and r.outcome != "posted"
    ]
    ledger.close()
    return rows


def latest_full(settings: Settings) -> StatementVersion:
    """The latest full statement version as the ledger keeps it."""
    ledger = live_ledger(settings)
    found = ledger.get_record(INCIDENT, "incident", "statement-version", "full")
    ledger.close()
    return StatementVersion.model_validate(found)


def test_a_rejected_v1_is_drafted_again_as_v2_which_the_terminal_approves_and_publishes(
    settings: Settings, world: DemoWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = Fakes(tmp_path, approvals=None)  # decisions in the ledger: `breachbook approve`
    first = run_with(Mode.LIVE, settings, fakes, tmp_path / "run1", world.incident_file)
    assert statuses(first, "publish-statement") == {Status.WAITING}
    monkeypatch.setenv("BREACHBOOK_HOME", str(settings.home))
    monkeypatch.setenv("BREACHBOOK_APPROVERS", DEMO_APPROVERS_JSON)
    why = "say when the remaining letters go out"
    denied = approve(first.run_id, "publish-statement", "--by", "grace", "--deny", "--comment", why)
    assert denied.exit_code == 0 and "denied on full-v1" in denied.output, denied.output

    second = run_with(Mode.LIVE, settings, fakes, tmp_path / "run2", world.incident_file)
    assert statuses(second, "publish-statement") == {Status.WAITING}, "v1's rejection is not v2's"
    assert fakes.publisher.published == []
    folder = tmp_path / "run2" / "statements"
    assert {p.name for p in folder.glob("full-v*.en.md")} == {"full-v1.en.md", "full-v2.en.md"}
    facts = json.loads((folder / "full-v2.facts.json").read_text())
    assert facts["version"] == 2 and facts["after_rejection"]["by"] == "grace"
    assert "Drafted after a rejection by grace" in (folder / "full-v2.facts.md").read_text()
    draft = next(e for e in second.entries() if e.step_id == "draft-statement")
    assert draft.details["version"] == 2
    assert draft.details["sha256"]["en"] == facts["languages"]["en"]["sha256"]

    command = f"breachbook approve {second.run_id} publish-statement --by NAME --version full-v2"
    assert any(command in text for _, text in fakes.chat.posts), "the war room is asked about v2"
    # an answer about v1 (a command copied from v1's request) never decides v2
    late = approve(second.run_id, "publish-statement", "--by", "grace", "--version", "full-v1")
    assert late.exit_code == 1, late.output
    assert "stale: answered about full-v1, but full-v2 of publish-statement waits" in late.output
    granted = approve(second.run_id, "publish-statement", "--by", "grace", "--comment", "true")
    assert granted.exit_code == 0 and "granted on full-v2" in granted.output, granted.output

    third = run_with(
        Mode.LIVE, settings, fakes, tmp_path / "run3", world.incident_file, resume=second.run_id
    )
    assert statuses(third, "publish-statement") == {Status.COMPLETED}
    published = [(r.version, r.language) for r in fakes.publisher.published]
    assert published == [(2, "en"), (2, "zh-CN")]
    assert fakes.publisher.published[0].body == statement(tmp_path / "run3", 2, "en")

    rows = publish_answers(settings)
    assert [(r.outcome, r.details["version"]) for r in rows] == [
        ("asked", "full-v1"),
        ("denied", "full-v1"),
        ("asked", "full-v2"),
        ("refused", "full-v2"),
        ("granted", "full-v2"),
    ]
    answers = [r for r in rows if r.outcome != "asked"]
    assert [(r.actor, r.details["via"], r.details["comment"]) for r in answers] == [
        ("grace", "terminal", why),
        ("grace", "terminal", ""),
        ("grace", "terminal", "true"),
    ]
    assert answers[1].details["answered_version"] == "full-v1"
    assert answers[2].details["sha256"] == version_digest(latest_full(settings))
    assert all(r.at for r in answers)


def test_an_approval_of_v1_never_publishes_v2_which_waits_for_its_own(
    settings: Settings, world: DemoWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = Fakes(tmp_path, approvals=None)
    first = run_with(Mode.LIVE, settings, fakes, tmp_path / "run1", world.incident_file)
    assert fakes.publisher.published == []
    monkeypatch.setenv("BREACHBOOK_HOME", str(settings.home))
    monkeypatch.setenv("BREACHBOOK_APPROVERS", DEMO_APPROVERS_JSON)
    for step, by in (("deliver-letters", "ada"), ("publish-statement", "grace")):
        granted = approve("--incident", INCIDENT, "--step", step, "--by", by)
        assert granted.exit_code == 0, granted.output

    # letters go out in the resumed run, so the statement's text changes: v2, which the
    # approval of v1 does not cover, waits for a decision of its own and is not published
    resumed = run_with(
        Mode.LIVE, settings, fakes, tmp_path / "run2", world.incident_file, resume=first.run_id
    )
    assert fakes.mail.sent
    assert statuses(resumed, "publish-statement") == {Status.WAITING}
    assert "publish-statement" in resumed.waiting_for
    assert fakes.publisher.published == []
    assert [(r.outcome, r.details["version"]) for r in publish_answers(settings)] == [
        ("asked", "full-v1"),
        ("granted", "full-v1"),
        ("asked", "full-v2"),
    ]


def test_an_approved_version_is_published_once_per_language_and_never_again(
    settings: Settings, world: DemoWorld, tmp_path: Path
) -> None:
    fakes = Fakes(tmp_path)  # the scripted approvers grant legal and comms
    first = run_with(Mode.LIVE, settings, fakes, tmp_path / "run1", world.incident_file)
    assert statuses(first, "publish-statement") == {Status.COMPLETED}
    releases = [(r.version, r.language, r.idempotency_key) for r in fakes.publisher.published]
    assert releases == [
        (1, "en", f"{INCIDENT}:full-v1:en"),
        (1, "zh-CN", f"{INCIDENT}:full-v1:zh-CN"),
    ]
    again = run_with(Mode.LIVE, settings, fakes, tmp_path / "run2", world.incident_file)
    assert statuses(again, "publish-statement") == {Status.ALREADY_DONE}
    assert len(fakes.publisher.published) == 2


def test_a_drill_never_publishes(settings: Settings, world: DemoWorld, tmp_path: Path) -> None:
    fakes = Fakes(tmp_path)
    result = run_with(Mode.DRILL, settings, fakes, tmp_path / "drill", world.incident_file)
    entries = [e for e in result.entries() if e.step_id == "publish-statement"]
    assert {e.status for e in entries} == {Status.PLANNED}
    assert {e.verdict for e in entries} == {"VERIFIED"}
    assert fakes.publisher.published == []
    text = statement(tmp_path / "drill", 1, "en")
    assert text.startswith("[DRILL]")
    assert "we will write to each of them directly" in flat(text)
