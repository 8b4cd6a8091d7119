"""The mode seam: DRILL never calls apply; LIVE applies once and a re-run skips what is done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from breachbook.actions.base import Action
from breachbook.actions.notify import assessment
from breachbook.context import RunContext
from breachbook.engine import ApplyChanges, PlanOnly, run_playbook
from breachbook.errors import CustomerDataError, DrillWriteBlocked, LiveNotConfirmed
from breachbook.ledger import Ledger
from breachbook.modes import Mode
from breachbook.ports import Check, OutgoingLetter
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, build_connectors, mode_profile, open_run
from tests.conftest import T0, context_with
from tests.fakes import RecordingCloud, RecordingDatabaseAdmin, RecordingMail, ScriptedApprovals


class ApplySpy:
    """Wraps every registered action's apply so a test can see whether any was called."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from breachbook.actions import registry

        self.calls: list[tuple[str, str]] = []
        for action in registry().values():
            monkeypatch.setattr(action, "apply", self._spy(action))

    def _spy(self, action: Action[Any]) -> Any:
        original = type(action).apply

        def apply(args: Any, target: str, ctx: RunContext) -> dict[str, Any]:
            self.calls.append((action.name, target))
            return original(action, args, target, ctx)

        return apply


def test_drill_never_calls_apply_even_when_every_check_passes(
    drill_context: RunContext, recording: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = ApplySpy(monkeypatch)
    ctx = context_with(drill_context, PlanOnly(), recording)
    result = run_playbook(ctx)
    assert spy.calls == []
    cloud, database, mail = recording["cloud"], recording["database"], recording["mail"]
    assert isinstance(cloud, RecordingCloud) and isinstance(database, RecordingDatabaseAdmin)
    assert isinstance(mail, RecordingMail)
    assert cloud.changes == [] and database.changes == [] and mail.sent == []
    assert ("deactivate_key", "AKIAZ3MDEMOLEAKED01") in cloud.checks
    assert ("lock_role", "analytics_etl") in database.checks
    assert {e.status for e in result.entries()} == {"planned"}
    assert result.verdict_counts()["FAILED"] == 0
    assert result.verdict_counts()["UNVERIFIED"] == 0


def test_drill_records_failed_checks_with_their_reason(
    drill_context: RunContext, recording: dict[str, object]
) -> None:
    recording["cloud"] = RecordingCloud(
        check_answer=Check.failed("AccessDenied: iam:UpdateAccessKey", "IAM policy simulation")
    )
    result = run_playbook(context_with(drill_context, PlanOnly(), recording))
    failed = [e for e in result.entries() if e.verdict == "FAILED"]
    assert {e.step_id for e in failed} == {"deactivate-keys", "quarantine-hosts", "block-addresses"}
    assert all(e.reason == "AccessDenied: iam:UpdateAccessKey" for e in failed)


def test_drill_connectors_refuse_writes_at_the_transport(demo_run_settings: Settings) -> None:
    connectors = build_connectors(mode_profile(Mode.DRILL), demo_run_settings, clock=_clock())
    assert isinstance(connectors.executor, PlanOnly)
    assert connectors.mail is not None and connectors.evidence is not None
    with pytest.raises(DrillWriteBlocked):
        connectors.mail.send(OutgoingLetter("k", "a@example.org", "s", "b"))
    with pytest.raises(DrillWriteBlocked):
        connectors.evidence.put("item", iter([b"x"]))
    assert connectors.mail.check_can_send().verdict == "VERIFIED"


def test_live_connectors_apply_and_need_a_customer_database(demo_run_settings: Settings) -> None:
    assert isinstance(
        build_connectors(mode_profile(Mode.LIVE), demo_run_settings, clock=_clock()).executor,
        ApplyChanges,
    )
    with pytest.raises(CustomerDataError, match="no customer database configured"):
        build_connectors(mode_profile(Mode.LIVE), Settings(customers_url=None), clock=_clock())


def _clock() -> Any:
    from breachbook.clock import FixedStepClock

    return FixedStepClock(T0)


def test_live_refuses_without_the_incident_id(
    small_world: Any, demo_run_settings: Settings, tmp_path: Path
) -> None:
    for confirm in (None, "", "some-other-incident"):
        with pytest.raises(LiveNotConfirmed, match="demo-2026-antiques-leak"):
            open_run(
                RunRequest(
                    mode=Mode.LIVE,
                    incident_file=small_world.incident_file,
                    out_dir=tmp_path / "live",
                    confirm_incident_id=confirm,
                ),
                demo_run_settings,
            )
    assert not (tmp_path / "live").exists()


def test_live_applies_once_and_a_rerun_skips_what_is_done(
    drill_context: RunContext, recording: dict[str, object], tmp_path: Path
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'live-ledger.sqlite'}", _clock())
    ctx = context_with(drill_context, ApplyChanges(), recording, ledger=ledger)
    first = run_playbook(ctx)
    cloud, mail = recording["cloud"], recording["mail"]
    assert isinstance(cloud, RecordingCloud) and isinstance(mail, RecordingMail)
    assert ("deactivate_key", "AKIAZ3MDEMOLEAKED01") in cloud.changes
    assert len(cloud.changes) == 4  # one key, one host, two networks
    letters = first_letters = len(mail.sent)
    assert letters == sum(s.counts.get("letters", 0) for s in first.steps)
    assert len({letter.key for letter in mail.sent}) == letters
    assert {e.status for e in first.entries()} == {"completed"}
    vault = {p.name for p in (tmp_path / "vault").iterdir()}
    assert {
        e.details["sha256"] for e in first.entries() if e.step_id == "snapshot-evidence"
    } == vault

    second = run_playbook(context_with(drill_context, ApplyChanges(), recording, ledger=ledger))
    assert len(cloud.changes) == 4
    assert len(mail.sent) == first_letters
    assert {e.status for e in second.entries()} == {"already-done"}
    assert ledger.verify() == []


def test_live_without_approval_changes_nothing_gated(
    drill_context: RunContext, recording: dict[str, object], tmp_path: Path
) -> None:
    recording["approvals"] = ScriptedApprovals(approve=set())
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}", _clock())
    result = run_playbook(context_with(drill_context, ApplyChanges(), recording, ledger=ledger))
    mail = recording["mail"]
    assert isinstance(mail, RecordingMail) and mail.sent == []
    statuses = {e.step_id: e.status for e in result.entries()}
    assert statuses["deliver-letters"] == "not-approved"
    assert statuses["publish-statement"] == "not-approved"
    outcomes = {(r.step_id, r.outcome) for r in ledger.entries()}
    assert ("deliver-letters", "not-approved") in outcomes


def test_live_failed_preflight_refuses_and_blocks_dependents(
    drill_context: RunContext, recording: dict[str, object], tmp_path: Path
) -> None:
    database = RecordingDatabaseAdmin(
        check_answer=Check.failed("permission denied", "has_privilege")
    )
    recording["database"] = database
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}", _clock())
    result = run_playbook(context_with(drill_context, ApplyChanges(), recording, ledger=ledger))
    statuses = {e.step_id: e.status for e in result.entries()}
    assert statuses["lock-db-role"] == "refused"
    assert statuses["end-db-sessions"] == "blocked"
    assert database.changes == []


def test_every_action_leaves_ledger_entries_before_and_after(
    drill_context: RunContext, recording: dict[str, object], tmp_path: Path
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}", _clock())
    result = run_playbook(context_with(drill_context, ApplyChanges(), recording, ledger=ledger))
    rows = list(ledger.entries())
    for entry in result.entries():
        phases = [r.phase for r in rows if r.step_id == entry.step_id and r.target == entry.target]
        assert phases == ["attempt", "outcome"], (entry.step_id, entry.target, phases)
    assert all(r.actor == "automation:breachbook" and r.mode == "drill" for r in rows)


class BrokenCloud(RecordingCloud):
    def deactivate_key(self, access_key_id: str) -> dict[str, str]:
        raise ConnectionError("endpoint unreachable")


def test_live_apply_that_raises_is_recorded_as_failed_and_the_run_goes_on(
    drill_context: RunContext, recording: dict[str, object], tmp_path: Path
) -> None:
    recording["cloud"] = BrokenCloud()
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}", _clock())
    result = run_playbook(context_with(drill_context, ApplyChanges(), recording, ledger=ledger))
    failed = [e for e in result.entries() if e.status == "failed"]
    assert [(e.step_id, e.details["error"]) for e in failed] == [
        ("deactivate-keys", "ConnectionError in cloud.deactivate_access_keys")
    ]
    assert not ledger.completed(drill_context.incident.id, "deactivate-keys", "AKIAZ3MDEMOLEAKED01")
    assert {e.status for e in result.entries() if e.step_id == "block-addresses"} == {"completed"}


def test_live_hosts_are_not_quarantined_before_evidence_is_preserved(
    drill_context: RunContext, recording: dict[str, object], tmp_path: Path
) -> None:
    recording["evidence"] = drill_context.connectors.evidence  # the drill store refuses to store
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}", _clock())
    result = run_playbook(context_with(drill_context, ApplyChanges(), recording, ledger=ledger))
    statuses = {e.step_id: e.status for e in result.entries()}
    assert statuses["snapshot-evidence"] == "failed"
    assert statuses["quarantine-hosts"] == "blocked"
    cloud = recording["cloud"]
    assert isinstance(cloud, RecordingCloud)
    assert ("quarantine_host", "i-0a1b2c3d4e5f60718") not in cloud.changes


def test_drill_writes_a_ledger_entry_before_and_after_each_check(drill_context: RunContext) -> None:
    result = run_playbook(drill_context)
    rows = list(drill_context.ledger.entries())
    for entry in result.entries():
        phases = [
            (r.phase, r.outcome)
            for r in rows
            if r.step_id == entry.step_id and r.target == entry.target
        ]
        assert phases == [("preflight", "started"), ("plan", entry.verdict)], entry.step_id
    assert drill_context.ledger.verify() == []


def test_a_letter_whose_send_was_interrupted_is_never_sent_twice(
    drill_context: RunContext, recording: dict[str, object], tmp_path: Path
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}", _clock())
    ctx = context_with(drill_context, ApplyChanges(), recording, ledger=ledger)
    interrupted = f"gdpr-a34/{assessment(ctx).individual['gdpr-a34'].customer_ids[0]}"
    ctx.record("letters.deliver:gdpr-a34", interrupted, "attempt", "started", {})
    result = run_playbook(ctx)
    mail = recording["mail"]
    assert isinstance(mail, RecordingMail)
    assert interrupted not in {letter.key for letter in mail.sent}
    deliver = next(
        e for e in result.entries() if e.step_id == "deliver-letters" and e.target == "gdpr-a34"
    )
    assert deliver.details["uncertain"] == 1
    assert deliver.details["sent"] == len([k for k in mail.sent if k.key.startswith("gdpr-a34/")])
    flagged = [r for r in ledger.entries() if r.outcome == "needs-review"]
    assert [r.details for r in flagged] == [{"uncertain_letters": 1}]


def test_steps_whose_condition_is_false_are_skipped_and_recorded(
    drill_context: RunContext, recording: dict[str, object]
) -> None:
    without_keys = drill_context.incident.model_copy(update={"access_key_ids": [], "hosts": []})
    ctx = context_with(drill_context, PlanOnly(), recording)
    ctx.incident = without_keys
    result = run_playbook(ctx)
    statuses = {e.step_id: (e.status, e.target) for e in result.entries()}
    assert statuses["deactivate-keys"] == ("skipped", "-")
    assert statuses["quarantine-hosts"] == ("skipped", "-")
    skipped = [(r.step_id, r.outcome) for r in ctx.ledger.entries() if r.outcome == "skipped"]
    assert ("deactivate-keys", "skipped") in skipped
    cloud = recording["cloud"]
    assert isinstance(cloud, RecordingCloud)
    assert not any(op == "deactivate_key" for op, _ in cloud.checks)
