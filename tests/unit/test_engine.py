"""The engine through the product's path (`execute` with the real wiring), on a three-step
playbook with recording fakes behind the ports: milliseconds per run."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.clock import FixedStepClock
from breachbook.connectors.guard import read_only
from breachbook.context import RunContext
from breachbook.engine import Outcome, Position, RunResult, Status, StepResult
from breachbook.errors import DrillWriteBlocked, OutputFolderError
from breachbook.expressions import ExpressionError, evaluate
from breachbook.facts import FACTS, KEY
from breachbook.journal import INCIDENT_SCOPE, OutcomeUnknown, RunJournal
from breachbook.ledger import ItemStatus, Ledger
from breachbook.models import Incident
from breachbook.modes import Mode
from breachbook.ports import Changed, Check, is_read
from breachbook.roster import RoleApprovers
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, live_ledger_url, mode_profile, port_types
from breachbook.workspace import Workspace
from tests.conftest import (
    ENGINE_INCIDENT,
    ENGINE_PLAYBOOK,
    T0,
    Fakes,
    live_ledger,
    run_with,
)
from tests.fakes import InMemoryCustomers, RecordingCloud, RecordingDatabaseAdmin, ScriptedApprovals

KEYS = ["AKIAZ3MDEMOLEAKED01", "AKIAZ3MDEMOLEAKED02"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path)


def run(
    mode: Mode, settings: Settings, fakes: Fakes, out: Path | None = None, **kw: Any
) -> RunResult:
    """The engine playbook needs no customers: an empty directory stands in."""
    fakes.customers = fakes.customers or InMemoryCustomers([])
    return run_with(mode, settings, fakes, out, ENGINE_INCIDENT, ENGINE_PLAYBOOK, **kw)


def statuses(result: RunResult) -> dict[tuple[str, str], Status]:
    return {(e.step_id, e.target): e.status for e in result.entries()}


def test_drill_checks_every_target_and_changes_nothing(
    settings: Settings, fakes: Fakes, tmp_path: Path
) -> None:
    result = run(Mode.DRILL, settings, fakes, tmp_path / "drill")
    assert fakes.cloud.changes == [] and fakes.database.changes == []
    assert sorted(fakes.cloud.checks) == [("deactivate_key", key) for key in KEYS]
    assert set(statuses(result).values()) == {Status.PLANNED}


PLAN_TO_OUTCOME = {Status.PLANNED: Status.COMPLETED}


@pytest.mark.parametrize("preflight", ["passes", "fails"])
def test_a_drill_plan_is_what_live_then_does(
    settings: Settings, tmp_path: Path, preflight: str
) -> None:
    """One plan for both modes: a FAILED check refuses and blocks dependents in both."""
    answer = (
        Check.verified("has privilege", "fake")
        if preflight == "passes"
        else Check.failed("permission denied", "has_table_privilege")
    )
    drill_fakes = Fakes(tmp_path / "d", database=RecordingDatabaseAdmin(check_answer=answer))
    live_fakes = Fakes(tmp_path / "l", database=RecordingDatabaseAdmin(check_answer=answer))
    planned = statuses(run(Mode.DRILL, settings, drill_fakes, tmp_path / "drill"))
    done = statuses(run(Mode.LIVE, settings, live_fakes))
    assert {key: PLAN_TO_OUTCOME.get(s, s) for key, s in planned.items()} == done
    if preflight == "fails":
        assert done[("lock-db-role", "analytics_etl")] is Status.REFUSED
        assert done[("end-db-sessions", "-")] is Status.BLOCKED
        assert live_fakes.database.changes == []


def test_live_acts_once_per_item_and_a_rerun_skips_what_is_done(
    settings: Settings, fakes: Fakes
) -> None:
    first = run(Mode.LIVE, settings, fakes)
    assert set(statuses(first).values()) == {Status.COMPLETED}
    assert len(fakes.cloud.changes) == 2 and len(fakes.database.changes) == 2
    second = run(Mode.LIVE, settings, fakes)
    assert first.run_id != second.run_id
    assert set(statuses(second).values()) == {Status.ALREADY_DONE}
    assert len(fakes.cloud.changes) == 2 and len(fakes.database.changes) == 2
    ledger = live_ledger(settings)
    items = {(i.step_id, i.key): i.status for i in ledger.items("inc-engine-1")}
    assert items[("deactivate-keys", KEYS[0])] is ItemStatus.DONE
    assert ledger.verify() == []
    ledger.close()


class FlakyCloud(RecordingCloud):
    """Fails the first `times` deactivations with `error`, then works."""

    def __init__(self, error: Exception, times: int = 1) -> None:
        super().__init__()
        self.error = error
        self.times = times

    def deactivate_key(self, access_key_id: str) -> Changed:
        if self.times > 0:
            self.times -= 1
            raise self.error
        return super().deactivate_key(access_key_id)


def test_a_passing_failure_is_retried_with_back_off_within_the_run(
    settings: Settings, tmp_path: Path
) -> None:
    fakes = Fakes(tmp_path, cloud=FlakyCloud(ConnectionRefusedError("refused"), times=2))
    result = run(Mode.LIVE, settings, fakes)
    key = next(e for e in result.entries() if e.target == KEYS[0])
    assert key.status is Status.COMPLETED and key.details["attempts"] == 3
    assert fakes.cloud.changes.count(("deactivate_key", KEYS[0])) == 1


def test_a_failure_that_persists_ends_failed_and_the_next_run_retries_it(
    settings: Settings, tmp_path: Path
) -> None:
    fakes = Fakes(tmp_path, cloud=FlakyCloud(ConnectionRefusedError("refused"), times=4))
    first = run(Mode.LIVE, settings, fakes)
    failed = next(e for e in first.entries() if e.target == KEYS[0])
    assert failed.status is Status.FAILED and failed.details["attempts"] == 4
    assert statuses(first)[("deactivate-keys", KEYS[1])] is Status.COMPLETED
    assert first.outcome() is Outcome.FAILED
    second = statuses(run(Mode.LIVE, settings, fakes))
    assert second[("deactivate-keys", KEYS[0])] is Status.COMPLETED
    assert fakes.cloud.changes.count(("deactivate_key", KEYS[0])) == 1
    ledger = live_ledger(settings)
    failed_entries = [r for r in ledger.entries() if r.target == KEYS[0] and r.outcome == "failed"]
    assert [r.details["error"] for r in failed_entries] == [
        "ConnectionRefusedError (message withheld: it may quote customer data)"
    ]
    ledger.close()


def test_an_unknown_outcome_is_surfaced_and_never_retried(
    settings: Settings, tmp_path: Path
) -> None:
    fakes = Fakes(tmp_path, cloud=FlakyCloud(OutcomeUnknown("connection dropped mid-call"), 9))
    for _ in range(2):
        result = statuses(run(Mode.LIVE, settings, fakes))
        assert result[("deactivate-keys", KEYS[0])] is Status.INCOMPLETE
    assert ("deactivate_key", KEYS[0]) not in fakes.cloud.changes
    ledger = live_ledger(settings)
    item = next(i for i in ledger.items("inc-engine-1") if i.key == KEYS[0])
    assert item.status is ItemStatus.UNKNOWN
    ledger.close()


LEADS = '{"incident-lead": {"people": ["ada"]}}'


def test_an_approval_waits_in_the_ledger_and_the_same_run_resumes(
    settings: Settings, tmp_path: Path
) -> None:
    fakes = Fakes(tmp_path, approvals=None)  # the wired approvals: decisions in the ledger
    settings = settings.model_copy(
        update={"approvers": {"incident-lead": RoleApprovers(people=["ada"])}}
    )
    first = run(Mode.LIVE, settings, fakes)
    assert first.waiting_for == ["deactivate-keys"]
    assert statuses(first)[("deactivate-keys", KEYS[0])] is Status.WAITING
    assert fakes.cloud.changes == []

    cli = CliRunner()
    wrong = cli.invoke(
        app,
        ["approve", "--incident", "inc-engine-1", "--step", "lock-db-role", "--by", "x"],
        env={"BREACHBOOK_HOME": str(settings.home), "BREACHBOOK_APPROVERS": LEADS},
    )
    assert wrong.exit_code == 2 and "waiting: deactivate-keys" in wrong.output
    granted = cli.invoke(
        app,
        ["approve", "--incident", "inc-engine-1", "--step", "deactivate-keys", "--by", "ada"],
        env={"BREACHBOOK_HOME": str(settings.home), "BREACHBOOK_APPROVERS": LEADS},
    )
    assert granted.exit_code == 0, granted.output
    assert f"--resume {first.run_id}" in granted.output

    resumed = run(Mode.LIVE, settings, fakes, resume=first.run_id)
    assert resumed.run_id == first.run_id
    assert statuses(resumed)[("deactivate-keys", KEYS[0])] is Status.COMPLETED
    assert sorted(fakes.cloud.changes) == [("deactivate_key", key) for key in KEYS]
    ledger = live_ledger(settings)
    approvals = [r for r in ledger.entries() if r.phase == "approval"]
    assert [(r.step_id, r.outcome, r.actor, r.details.get("by")) for r in approvals] == [
        ("deactivate-keys", "asked", "automation:breachbook", None),
        ("deactivate-keys", "posted", "automation:breachbook", None),
        ("deactivate-keys", "granted", "ada", "ada"),
    ]
    assert approvals[0].details["asked"] == ["ada"]
    [(channel, asked)] = fakes.chat.posts
    assert channel == "#inc" and "Approval needed from incident-lead (ada)" in asked
    assert f"breachbook approve {first.run_id} deactivate-keys --by NAME" in asked
    ledger.close()


def test_a_denied_approval_changes_nothing_and_blocks(settings: Settings, fakes: Fakes) -> None:
    fakes.approvals = ScriptedApprovals(approve=set())
    result = statuses(run(Mode.LIVE, settings, fakes))
    assert result[("deactivate-keys", KEYS[0])] is Status.NOT_APPROVED
    assert fakes.cloud.changes == []


def test_restore_undoes_newest_first_once_and_a_rerun_acts_again(
    settings: Settings, fakes: Fakes
) -> None:
    run(Mode.LIVE, settings, fakes)
    env = {"BREACHBOOK_HOME": str(settings.home)}
    from breachbook.restore import restore_incident
    from breachbook.wiring import Adapters, incident_journal, restore_connectors

    def restore_once() -> list[Any]:
        live = mode_profile(Mode.LIVE)
        journal = incident_journal(live, "inc-engine-1", settings, FixedStepClock(T0), "restore")
        adapters = Adapters(cloud=fakes.cloud, database=fakes.database)
        connectors = restore_connectors(live, settings, FixedStepClock(T0), journal, adapters)
        try:
            return restore_incident(journal, connectors)
        finally:
            journal.ledger.close()

    done = restore_once()
    assert [(r.step_id, r.target, r.outcome.value) for r in done] == [
        ("deactivate-keys", KEYS[1], "done"),
        ("deactivate-keys", KEYS[0], "done"),
        ("lock-db-role", "analytics_etl", "done"),
    ]
    assert fakes.cloud.changes[-2:] == [("reactivate_key", KEYS[1]), ("reactivate_key", KEYS[0])]
    assert fakes.database.changes[-1] == ("restore_role", "analytics_etl")
    changes = len(fakes.cloud.changes) + len(fakes.database.changes)
    assert restore_once() == []
    assert len(fakes.cloud.changes) + len(fakes.database.changes) == changes

    refused = CliRunner().invoke(
        app,
        [
            "restore",
            "--incident",
            "inc-engine-1",
            "--confirm",
            "inc-engine-1",
            "--step",
            "end-db-sessions",
        ],
        env=env,
    )
    assert refused.exit_code == 2
    assert "changed nothing reversible matching step end-db-sessions" in refused.output

    again = statuses(run(Mode.LIVE, settings, fakes))
    assert again[("deactivate-keys", KEYS[0])] is Status.COMPLETED
    assert again[("end-db-sessions", "analytics_etl")] is Status.ALREADY_DONE
    ledger = live_ledger(settings)
    assert ledger.verify() == []
    ledger.close()


def test_steps_read_the_incident_facts_as_of_their_own_start(
    settings: Settings, fakes: Fakes
) -> None:
    """A fact learnt during the run (a second key) reaches the steps that start after it."""
    from breachbook.wiring import Adapters

    def learn_between_steps(name: str, work: Any, position: Position) -> StepResult:
        result: StepResult = work()
        if name.endswith("lock-db-role"):
            ledger = live_ledger(settings)
            from breachbook.journal import RunJournal

            journal = RunJournal(
                ledger, "inc-engine-1", "analyst", "analyst:sam", "live", FixedStepClock(T0)
            )
            grown = Incident.from_file(ENGINE_INCIDENT).model_copy(
                update={"access_key_ids": [*KEYS, "AKIAZ3MDEMOLEAKED03"]}
            )
            journal.put(FACTS, KEY, grown, scope=INCIDENT_SCOPE)
            ledger.close()
        return result

    incident = Incident.from_file(ENGINE_INCIDENT)
    execute(
        RunRequest(
            mode=Mode.LIVE,
            incident_file=ENGINE_INCIDENT,
            playbook_file=ENGINE_PLAYBOOK,
            confirm_incident_id=incident.id,
        ),
        runner=learn_between_steps,
        settings=settings,
        clock=FixedStepClock(T0),
        adapters=Adapters(
            customers=InMemoryCustomers([]),
            cloud=fakes.cloud,
            database=fakes.database,
            approvals=fakes.approvals,
        ),
    )
    assert ("deactivate_key", "AKIAZ3MDEMOLEAKED03") in fakes.cloud.changes
    ledger = live_ledger(settings)
    history = ledger.record_history("inc-engine-1", INCIDENT_SCOPE, FACTS, KEY)
    assert [(h.version, h.actor) for h in history] == [
        (1, "automation:breachbook"),
        (2, "analyst:sam"),
    ]
    ledger.close()


def test_a_run_folder_is_never_taken_over(settings: Settings, fakes: Fakes, tmp_path: Path) -> None:
    out = tmp_path / "drill"
    first = run(Mode.DRILL, settings, fakes, out)
    report = (out / "report.md").read_text(encoding="utf-8")
    with pytest.raises(OutputFolderError, match=f"holds the documents of run {first.run_id}"):
        run(Mode.DRILL, settings, fakes, out)
    assert (out / "report.md").read_text(encoding="utf-8") == report


def test_every_port_is_guarded_in_a_drill_and_writes_are_refused(
    settings: Settings, fakes: Fakes, tmp_path: Path
) -> None:
    """Every method of every port not marked @reads raises through the drill guard."""
    guard = mode_profile(Mode.DRILL).guard
    for name, port in port_types().items():
        guarded = guard(object(), port)
        writes = [
            method
            for method in dir(port)
            if not method.startswith("_")
            and callable(getattr(port, method))
            and not is_read(getattr(port, method))
        ]
        for method in writes:
            with pytest.raises(DrillWriteBlocked, match=f"{port.__name__}.{method}"):
                getattr(guarded, method)()
        assert name


class NewPort(Protocol):
    def check_something(self) -> Check: ...

    def change_something(self) -> None: ...


def test_a_port_added_later_is_refused_in_a_drill_by_default() -> None:
    class Adapter:
        changed = False

        def check_something(self) -> Check:
            return Check.verified("ok", "fake")

        def change_something(self) -> None:
            Adapter.changed = True

    guarded = read_only(Adapter(), NewPort)
    with pytest.raises(DrillWriteBlocked):
        guarded.check_something()  # not marked @reads: refused too
    with pytest.raises(DrillWriteBlocked):
        guarded.change_something()
    assert not Adapter.changed


def test_actions_see_no_mode() -> None:
    fields = set(RunContext.__dataclass_fields__)
    assert not {f for f in fields if "mode" in f}


def test_a_step_is_due_its_deadline_after_the_run_started(settings: Settings, fakes: Fakes) -> None:
    result = run(Mode.LIVE, settings, fakes)
    lock = next(step for step in result.steps if step.step_id == "lock-db-role")
    assert lock.due_at == result.started_at + timedelta(minutes=15)
    assert all(step.due_at is None for step in result.steps if step.step_id != "lock-db-role")


def test_a_misspelt_incident_field_is_an_error_not_a_false_condition() -> None:
    view = {"incident": Incident.from_file(ENGINE_INCIDENT).model_dump(mode="json")}
    assert evaluate("incident.database_role", view) == "analytics_etl"
    with pytest.raises(ExpressionError, match="databse_role"):
        evaluate("incident.databse_role", view)


@pytest.mark.parametrize("path", ["../outside.txt", "letters/../../x", "/etc/passwd", ""])
def test_run_folder_paths_cannot_leave_the_folder(tmp_path: Path, path: str) -> None:
    space = Workspace.claim(tmp_path / "run", None, "r1", "test run")
    with pytest.raises(OutputFolderError, match="not a path inside the output folder"):
        space.write_raw(path, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_letter_that_cannot_be_written_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from breachbook.connectors.outbox import OutboxMail
    from breachbook.ports import OutgoingLetter

    def disk_full(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("breachbook.connectors.outbox.os.replace", disk_full)
    outbox = OutboxMail(tmp_path / "outbox", "privacy@example.org")
    with pytest.raises(OSError, match="No space left"):
        outbox.send(OutgoingLetter("gdpr-a34/C1", "c1@example.org", "Subject", "Body"))
    assert list((tmp_path / "outbox").iterdir()) == []


def test_the_outcome_is_the_worst_that_happened(settings: Settings, tmp_path: Path) -> None:
    denied = Check.failed("permission denied", "has_table_privilege")
    cases: list[tuple[Mode, Fakes, Outcome]] = [
        (Mode.DRILL, Fakes(tmp_path / "1"), Outcome.DONE),
        (
            Mode.DRILL,
            Fakes(tmp_path / "2", database=RecordingDatabaseAdmin(denied)),
            Outcome.FAILED,
        ),
        (Mode.LIVE, Fakes(tmp_path / "3", database=RecordingDatabaseAdmin(denied)), Outcome.FAILED),
        (Mode.LIVE, Fakes(tmp_path / "4", approvals=ScriptedApprovals()), Outcome.BLOCKED),
        (Mode.LIVE, Fakes(tmp_path / "5", approvals=None), Outcome.WAITING),
        (Mode.LIVE, Fakes(tmp_path / "6"), Outcome.DONE),
    ]
    for number, (mode, fakes, expected) in enumerate(cases):
        home = settings.model_copy(update={"home": tmp_path / f"home-{number}"})
        out = tmp_path / f"out-{number}"
        result = run(mode, home, fakes, out)
        assert result.outcome() is expected, (number, mode, expected)
        plan = json.loads((out / "plan.json").read_text())
        assert (plan["outcome"], plan["exit_code"]) == (expected.name.lower(), int(expected))
        report = (out / "report.md").read_text()
        assert f"outcome: **{expected.name.lower()}** (exit code {int(expected)})" in report


def test_a_deadline_is_met_only_by_a_step_that_was_done(settings: Settings, tmp_path: Path) -> None:
    run(Mode.LIVE, settings, Fakes(tmp_path, approvals=None), tmp_path / "live")
    report = (tmp_path / "live" / "report.md").read_text()
    lock = next(line for line in report.splitlines() if "| lock-db-role |" in line)
    assert lock.endswith("(met) |")
    run(Mode.DRILL, settings, Fakes(tmp_path / "d"), tmp_path / "drill")
    drill_lock = next(
        line
        for line in (tmp_path / "drill" / "report.md").read_text().splitlines()
        if "| lock-db-role |" in line
    )
    assert drill_lock.endswith("(not done: planned) |")


class SettlesOnSleep(FixedStepClock):
    """The clock of a run that finds an item another run holds: while it waits, the other
    run (here: `settle`) finishes the item."""

    def __init__(self, settle: Any) -> None:
        super().__init__(T0)
        self.slept = 0.0
        self._settle = settle

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.slept += seconds
        if self._settle is not None:
            self._settle()
            self._settle = None


@pytest.mark.parametrize("other_run_finishes", [True, False])
def test_a_change_another_run_holds_is_waited_for_then_done_or_left_in_doubt(
    settings: Settings, fakes: Fakes, other_run_finishes: bool
) -> None:
    """Two runs of one incident at once: one that finds the lock in flight waits for the
    other to settle it and goes on, instead of blocking everything after it; a claim that
    never settles (its run was killed) is reported after a few seconds, never taken."""
    settings.home.mkdir(parents=True)
    ledger = Ledger(live_ledger_url(settings), FixedStepClock(T0))
    other = RunJournal(ledger, "inc-engine-1", "otherrun0001", "other", "live", FixedStepClock(T0))
    held = other.claim("lock-db-role", "analytics_etl", {})
    assert held is not None

    def finish() -> None:
        other.settle(held, ItemStatus.DONE, {"action": "database.lock_role"})

    clock = SettlesOnSleep(finish if other_run_finishes else None)
    result = statuses(run(Mode.LIVE, settings, fakes, clock=clock))
    if other_run_finishes:
        assert result[("lock-db-role", "analytics_etl")] is Status.ALREADY_DONE
        assert result[("end-db-sessions", "analytics_etl")] is Status.COMPLETED
        assert [change[0] for change in fakes.database.changes] == ["end_sessions"]
    else:
        assert result[("lock-db-role", "analytics_etl")] is Status.INCOMPLETE
        assert result[("end-db-sessions", "-")] is Status.BLOCKED
        assert fakes.database.changes == [] and 12 < clock.slept < 13
