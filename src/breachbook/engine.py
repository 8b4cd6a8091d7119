"""The engine walks the playbook in dependency order and hands each step to the run's
executor. It never asks which mode it is in: the executor chosen by the wiring decides
whether apply may be called at all, and both executors share one policy loop, so a drill's
plan blocks, refuses and waits exactly where LIVE would."""

from __future__ import annotations

import functools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import ValidationError

from breachbook.actions.base import Action, Prepared
from breachbook.approvals import approval_request
from breachbook.context import RunContext
from breachbook.errors import BreachbookError
from breachbook.expressions import evaluate, resolve
from breachbook.facts import incident_as_of_now
from breachbook.journal import STEP_OUTCOME, Once, StepOutcome
from breachbook.ledger import ItemStatus
from breachbook.models import describe_validation_error
from breachbook.playbook import Phase, Step
from breachbook.ports import ApprovalRequest, Changed, Check, DecisionStatus, Verdict


class Status(StrEnum):
    """What became of one action on one target."""

    PLANNED = "planned"
    COMPLETED = "completed"
    ALREADY_DONE = "already-done"
    REFUSED = "refused"
    NOT_APPROVED = "not-approved"
    WAITING = "waiting"
    BLOCKED = "blocked"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    SKIPPED = "skipped"
    SET_ASIDE = "set-aside"
    """One record could not be used: FAILED and reported, but nobody else is held back."""


class Outcome(IntEnum):
    """How a run ended, as the CLI's exit code: the worst that happened to any action."""

    DONE = 0
    """LIVE: every action done (or skipped by its condition). DRILL: no check FAILED."""
    FAILED = 1
    """An action failed, was refused, set a record aside or ended uncertain."""
    INVALID_INPUT = 2
    """The run did not start: an input was refused (the CLI's usage errors are 2 as well)."""
    BLOCKED = 3
    """Nothing failed here, but a step was denied approval or blocked."""
    WAITING = 4
    """Nothing failed; a step waits for a person's decision and the run can be resumed."""


FAILED_STATUSES = frozenset(
    {Status.REFUSED, Status.NOT_APPROVED, Status.BLOCKED, Status.FAILED, Status.INCOMPLETE}
)
"""A step with one of these did not do what the playbook asked; its dependents are blocked."""


@dataclass
class PlanEntry:
    """One action on one target: how it was verified and what happened."""

    phase: str
    step_id: str
    title: str
    action: str
    target: str
    status: Status
    verdict: str
    reason: str
    method: str
    would: str
    approval: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepResult:
    phase: str
    step_id: str
    title: str
    action: str
    started_at: datetime
    finished_at: datetime
    entries: list[PlanEntry]
    documents: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    due_at: datetime | None = None

    @property
    def failed(self) -> bool:
        return any(e.status in FAILED_STATUSES for e in self.entries)

    @property
    def skipped(self) -> bool:
        """The step did not run (its condition was false): what needs it cannot run either."""
        return bool(self.entries) and all(e.status is Status.SKIPPED for e in self.entries)

    @property
    def waiting(self) -> bool:
        return any(e.status is Status.WAITING for e in self.entries)


@dataclass
class RunResult:
    run_id: str
    mode_label: str
    incident_id: str
    started_at: datetime
    finished_at: datetime
    steps: list[StepResult]
    ledger_head: tuple[int, str]

    def entries(self) -> list[PlanEntry]:
        return [entry for step in self.steps for entry in step.entries]

    def verdict_counts(self) -> dict[str, int]:
        counts = {v.value: 0 for v in Verdict}
        for entry in self.entries():
            if entry.verdict in counts:
                counts[entry.verdict] += 1
        return counts

    def outcome(self) -> Outcome:
        entries = self.entries()
        statuses = {e.status for e in entries}
        if any(e.verdict == Verdict.FAILED.value for e in entries) or statuses & {
            Status.FAILED,
            Status.REFUSED,
            Status.INCOMPLETE,
            Status.SET_ASIDE,
        }:
            return Outcome.FAILED
        if statuses & {Status.BLOCKED, Status.NOT_APPROVED}:
            return Outcome.BLOCKED
        if Status.WAITING in statuses:
            return Outcome.WAITING
        return Outcome.DONE

    @property
    def waiting_for(self) -> list[str]:
        """Steps that wait for a decision: the run resumes once they are made."""
        return [
            step.step_id
            for step in self.steps
            if any(e.status is Status.WAITING and e.target != "-" for e in step.entries)
        ]


def _entry(
    phase: Phase,
    step: Step,
    target: str,
    status: Status,
    check: Check | None,
    would: str,
    details: dict[str, Any] | None = None,
) -> PlanEntry:
    return PlanEntry(
        phase=phase.id,
        step_id=step.id,
        title=step.title,
        action=step.action,
        target=target,
        status=status,
        verdict=check.verdict.value if check else "",
        reason=check.reason if check else "",
        method=check.method if check else "",
        would=would,
        approval=step.approval.role if step.approval else None,
        details=details or {},
    )


def _safe_preflight(action: Action[Any], args: Any, target: str, ctx: RunContext) -> Check:
    try:
        return action.preflight(args, target, ctx)
    except BreachbookError as exc:
        return Check.failed(str(exc), "preflight raised")
    except Exception as exc:
        return Check.failed(f"preflight raised {type(exc).__name__}", "preflight raised")


def _with_approval(check: Check, role: str, note: str) -> Check:
    return Check(
        verdict=check.verdict,
        reason=f"{check.reason}; approval by {role}: {note}",
        method=check.method,
    )


class StepExecutor(ABC):
    """The one policy loop of both modes (a template method): done items are skipped, a
    FAILED preflight refuses, an approval gates; only `gate` and `act` differ by mode."""

    def execute(
        self,
        ctx: RunContext,
        phase: Phase,
        step: Step,
        action: Action[Any],
        args: Any,
        targets: list[str],
    ) -> list[PlanEntry]:
        known = ctx.journal.statuses(step.id)
        entries = []
        gate = step.approval

        @functools.cache
        def request() -> ApprovalRequest:
            """What the role is asked, built once per step at its first gated target."""
            assert gate is not None
            return approval_request(ctx, step, gate, action, args, targets)

        for target in targets:
            would = action.would(args, target, ctx)
            claimed_once = not action.itemized and not action.changes_nothing
            if claimed_once and known.get(target) is ItemStatus.DONE:
                entries.append(_entry(phase, step, target, Status.ALREADY_DONE, None, would))
                continue
            check = _safe_preflight(action, args, target, ctx)
            ctx.record(
                step.id,
                target,
                "preflight",
                check.verdict.value,
                {"reason": check.reason, "method": check.method, "would": would},
            )
            if check.verdict is Verdict.FAILED:
                refused = Status.REFUSED if check.holds_back_dependents else Status.SET_ASIDE
                ctx.record(step.id, target, "outcome", refused, {"reason": check.reason})
                entries.append(_entry(phase, step, target, refused, check, would))
                continue
            if check.waits_for:
                held = {"reason": check.reason, "waits_for": list(check.waits_for)}
                ctx.record(step.id, target, "outcome", Status.BLOCKED, held)
                entries.append(_entry(phase, step, target, Status.BLOCKED, check, would, held))
                continue
            if gate is not None:
                stop, check = self.gate(ctx, request(), check)
                if stop is not None:
                    ctx.record(step.id, target, "outcome", stop, {"role": gate.role})
                    entries.append(_entry(phase, step, target, stop, check, would))
                    continue
            status, details = self.act(ctx, step, action, args, target, known)
            entries.append(_entry(phase, step, target, status, check, would, details))
        return entries

    @abstractmethod
    def gate(
        self, ctx: RunContext, request: ApprovalRequest, check: Check
    ) -> tuple[Status | None, Check]:
        """Whether the step may go on after its approval gate (None) or stops here."""

    @abstractmethod
    def act(
        self,
        ctx: RunContext,
        step: Step,
        action: Action[Any],
        args: Any,
        target: str,
        known: dict[str, ItemStatus],
    ) -> tuple[Status, dict[str, Any]]:
        """What becomes of one target whose check passed and whose gate let it through."""


class PlanOnly(StepExecutor):
    """DRILL: says what apply would do; never calls it."""

    def gate(
        self, ctx: RunContext, request: ApprovalRequest, check: Check
    ) -> tuple[Status | None, Check]:
        role = request.gate.role
        asked = ctx.connectors.approvals.check_can_ask(request)
        check = _with_approval(check, role, asked.reason)
        if asked.verdict is not Verdict.VERIFIED:
            return Status.NOT_APPROVED, Check(
                verdict=asked.verdict, reason=check.reason, method=check.method
            )
        return None, check

    def act(
        self,
        ctx: RunContext,
        step: Step,
        action: Action[Any],
        args: Any,
        target: str,
        known: dict[str, ItemStatus],
    ) -> tuple[Status, dict[str, Any]]:
        ctx.record(step.id, target, "plan", Status.PLANNED, {})
        return Status.PLANNED, {}


ONCE_STATUS = {
    Once.DONE: Status.COMPLETED,
    Once.ALREADY_DONE: Status.ALREADY_DONE,
    Once.FAILED: Status.FAILED,
    Once.UNKNOWN: Status.INCOMPLETE,
    Once.BUSY: Status.INCOMPLETE,
}


class ApplyChanges(StepExecutor):
    """LIVE: asks for the decision, claims each item, applies, records the outcome."""

    def gate(
        self, ctx: RunContext, request: ApprovalRequest, check: Check
    ) -> tuple[Status | None, Check]:
        role = request.gate.role
        decision = ctx.connectors.approvals.decide(request)
        if decision.status is DecisionStatus.PENDING:
            return Status.WAITING, _with_approval(check, role, "waiting for the decision")
        by = decision.by or "nobody"
        said = f": {decision.comment}" if decision.comment else ""
        check = _with_approval(check, role, f"{decision.status.value} by {by}{said}")
        if decision.status is DecisionStatus.DENIED:
            return Status.NOT_APPROVED, check
        return None, check

    def act(
        self,
        ctx: RunContext,
        step: Step,
        action: Action[Any],
        args: Any,
        target: str,
        known: dict[str, ItemStatus],
    ) -> tuple[Status, dict[str, Any]]:
        if action.itemized:
            try:
                tally = action.apply_items(args, target, ctx)
            except BreachbookError as exc:
                # the step stopped itself (a relay refusing everything): its items are settled
                # as they stand, and the rest of the playbook goes on
                stopped = {"error": str(exc)}
                ctx.record(step.id, target, "outcome", Status.FAILED, stopped)
                return Status.FAILED, stopped
            details: dict[str, Any] = {o.value: n for o, n in sorted(tally.items())}
            complete = set(tally) <= {Once.DONE, Once.ALREADY_DONE}
            status = Status.COMPLETED if complete else Status.INCOMPLETE
            ctx.record(step.id, target, "outcome", status, details)
            return status, details

        if action.changes_nothing:
            recorded = dict(action.apply(args, target, ctx).details)
            ctx.record(step.id, target, "outcome", Status.COMPLETED, recorded)
            return Status.COMPLETED, recorded

        def change() -> Changed:
            changed = action.apply(args, target, ctx)
            return Changed({**changed.details, "action": action.name}, changed.prior)

        outcome, done = ctx.journal.once(step.id, target, change, known, wait_for_holder=True)
        return ONCE_STATUS[outcome], done


@dataclass(frozen=True)
class Position:
    """Where a step stands in the run: the `number`th of `total` (from 1), for progress."""

    number: int
    total: int


StepRunner = Callable[[str, Callable[[], StepResult], Position], StepResult]
"""Runs one step's work: directly, or wrapped (the flow makes each step a Prefect task)."""


def run_directly(name: str, work: Callable[[], StepResult], position: Position) -> StepResult:
    return work()


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class StepError(BreachbookError):
    """A step could not be carried out at all (bad arguments, failed expression)."""


def run_playbook(
    ctx: RunContext, runner: StepRunner = run_directly, mode_label: str = ""
) -> RunResult:
    """Run every step of the playbook through the run's executor, in dependency order.

    `mode_label` only names the run in its documents; no step sees it."""
    clock = ctx.connectors.clock
    started = clock.now()
    results: dict[str, StepResult] = {}
    ordered = ctx.playbook.ordered_steps()
    hooks = ctx.connectors.war_room
    first = {phase.id: n for n, (phase, _) in reversed(list(enumerate(ordered)))}
    last = {phase.id: n for n, (phase, _) in enumerate(ordered)}
    for number, (phase, step) in enumerate(ordered, start=1):
        if hooks is not None and first[phase.id] == number - 1:
            hooks.phase_started(ctx, phase)
        work = functools.partial(_run_step, ctx, phase, step, results, started)
        results[step.id] = runner(f"{phase.id}/{step.id}", work, Position(number, len(ordered)))
        if hooks is not None and last[phase.id] == number - 1:
            hooks.phase_ended(ctx, phase, _of_phase(results, phase.id))
    return RunResult(
        run_id=ctx.run_id,
        mode_label=mode_label,
        incident_id=ctx.incident.id,
        started_at=started,
        finished_at=clock.now(),
        steps=list(results.values()),
        ledger_head=ctx.journal.head(),
    )


def _of_phase(results: dict[str, StepResult], phase_id: str) -> list[StepResult]:
    return [result for result in results.values() if result.phase == phase_id]


def _run_step(
    ctx: RunContext, phase: Phase, step: Step, done: dict[str, StepResult], run_started: datetime
) -> StepResult:
    clock = ctx.connectors.clock
    started = clock.now()
    ctx.incident = incident_as_of_now(ctx.journal, ctx.incident)
    action = _action(step)
    due = run_started + step.deadline if isinstance(step.deadline, timedelta) else None

    def finish(entries: list[PlanEntry], prepared: Prepared | None = None) -> StepResult:
        outcome = StepOutcome(statuses={e.target: e.status.value for e in entries})
        ctx.journal.put(STEP_OUTCOME, step.id, outcome)
        return StepResult(
            phase=phase.id,
            step_id=step.id,
            title=step.title,
            action=step.action,
            started_at=started,
            finished_at=clock.now(),
            entries=entries,
            documents=prepared.documents if prepared else [],
            counts=prepared.counts if prepared else {},
            due_at=due,
        )

    if step.when is not None and not evaluate(step.when, ctx.incident_view()):
        ctx.record(step.id, "-", "plan", Status.SKIPPED, {"condition": step.when})
        return finish(
            [_entry(phase, step, "-", Status.SKIPPED, None, f"condition false: {step.when}")]
        )
    skipped_deps = [dep for dep in step.depends_on if dep in done and done[dep].skipped]
    if skipped_deps:
        ctx.record(step.id, "-", "plan", Status.SKIPPED, {"skipped_with": skipped_deps})
        return finish(
            [_entry(phase, step, "-", Status.SKIPPED, None, f"needs skipped {skipped_deps}")]
        )
    failed_deps = [dep for dep in step.depends_on if dep in done and done[dep].failed]
    if failed_deps:
        ctx.record(step.id, "-", "outcome", Status.BLOCKED, {"blocked_by": failed_deps})
        return finish(
            [_entry(phase, step, "-", Status.BLOCKED, None, f"blocked by failed {failed_deps}")]
        )
    waiting_deps = [dep for dep in step.depends_on if dep in done and done[dep].waiting]
    if waiting_deps:
        ctx.record(step.id, "-", "outcome", Status.WAITING, {"waits_for": waiting_deps})
        return finish([_entry(phase, step, "-", Status.WAITING, None, f"waits for {waiting_deps}")])
    try:
        args = action.parse_args(resolve(step.args, ctx.incident_view()))
    except ValidationError as exc:
        raise StepError(
            f"step {step.id!r} ({step.action}): {describe_validation_error(exc)}"
        ) from None
    prepared = action.prepare(args, ctx)
    entries = ctx.connectors.executor.execute(
        ctx, phase, step, action, args, action.targets(args, ctx)
    )
    return finish(entries, prepared)


def _action(step: Step) -> Action[Any]:
    from breachbook.actions import registry

    return registry()[step.action]
