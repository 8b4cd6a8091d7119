"""The engine walks the playbook in dependency order and hands each step to the run's
executor. It never asks which mode it is in: the executor chosen by the wiring decides
whether apply may be called at all."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from breachbook.actions.base import Action, Prepared
from breachbook.context import RunContext
from breachbook.errors import BreachbookError
from breachbook.expressions import evaluate, resolve
from breachbook.models import describe_validation_error
from breachbook.playbook import Phase, Step
from breachbook.ports import Check, Verdict


@dataclass
class PlanEntry:
    """One action on one target: how it was verified and what happened."""

    phase: str
    step_id: str
    title: str
    action: str
    target: str
    status: str
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


FAILED_STATUSES = {"failed", "refused", "not-approved", "blocked"}


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


class StepExecutor(Protocol):
    """How a step's action is carried out in this run: plan only, or apply for real."""

    def execute(
        self,
        ctx: RunContext,
        phase: Phase,
        step: Step,
        action: Action[Any],
        args: Any,
        targets: list[str],
    ) -> tuple[list[PlanEntry], Prepared]: ...


def _entry(
    phase: Phase,
    step: Step,
    target: str,
    status: str,
    check: Check | None,
    would: str,
    **extra: Any,
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
        approval=step.approval,
        **extra,
    )


def _safe_preflight(action: Action[Any], args: Any, target: str, ctx: RunContext) -> Check:
    try:
        return action.preflight(args, target, ctx)
    except BreachbookError as exc:
        return Check.failed(str(exc), "preflight raised")
    except Exception as exc:
        return Check.failed(f"preflight raised {type(exc).__name__}", "preflight raised")


class PlanOnly:
    """Runs preflight and prepare and records what apply would do. Never calls apply."""

    def execute(
        self,
        ctx: RunContext,
        phase: Phase,
        step: Step,
        action: Action[Any],
        args: Any,
        targets: list[str],
    ) -> tuple[list[PlanEntry], Prepared]:
        prepared = action.prepare(args, ctx)
        entries = []
        for target in targets:
            would = action.would(args, target, ctx)
            ctx.record(step.id, target, "preflight", "started", {"would": would})
            check = _safe_preflight(action, args, target, ctx)
            if step.approval:
                asked = ctx.connectors.approvals.check_can_ask(step.approval)
                check = _with_approval(check, step.approval, asked)
            ctx.record(
                step.id,
                target,
                "plan",
                check.verdict.value,
                {"reason": check.reason, "method": check.method, "would": would},
            )
            entries.append(_entry(phase, step, target, "planned", check, would))
        return entries, prepared


def _with_approval(check: Check, role: str, asked: Check) -> Check:
    reason = f"{check.reason}; approval by {role}: {asked.reason}"
    if check.verdict == Verdict.VERIFIED and asked.verdict != Verdict.VERIFIED:
        return Check(verdict=asked.verdict, reason=reason, method=check.method)
    return Check(verdict=check.verdict, reason=reason, method=check.method)


class ApplyChanges:
    """Preflight, approval, then apply; the ledger makes a re-run skip what is done."""

    def execute(
        self,
        ctx: RunContext,
        phase: Phase,
        step: Step,
        action: Action[Any],
        args: Any,
        targets: list[str],
    ) -> tuple[list[PlanEntry], Prepared]:
        prepared = action.prepare(args, ctx)
        entries = []
        for target in targets:
            would = action.would(args, target, ctx)
            if ctx.ledger.completed(ctx.incident.id, step.id, target):
                entries.append(_entry(phase, step, target, "already-done", None, would))
                continue
            check = _safe_preflight(action, args, target, ctx)
            if check.verdict == Verdict.FAILED:
                ctx.record(step.id, target, "outcome", "refused", {"reason": check.reason})
                entries.append(_entry(phase, step, target, "refused", check, would))
                continue
            if step.approval and not ctx.connectors.approvals.request(
                step.id, step.approval, would
            ):
                ctx.record(step.id, target, "outcome", "not-approved", {"role": step.approval})
                entries.append(_entry(phase, step, target, "not-approved", check, would))
                continue
            ctx.record(step.id, target, "attempt", "started", {"would": would})
            try:
                details = action.apply(args, target, ctx)
            except Exception as exc:
                error = (
                    str(exc)
                    if isinstance(exc, BreachbookError)
                    else f"{type(exc).__name__} in {step.action}"
                )
                ctx.record(step.id, target, "outcome", "failed", {"error": error})
                entries.append(
                    _entry(phase, step, target, "failed", check, would, details={"error": error})
                )
                continue
            ctx.record(step.id, target, "outcome", "completed", details)
            entries.append(_entry(phase, step, target, "completed", check, would, details=details))
        return entries, prepared


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


def run_playbook(ctx: RunContext, runner: StepRunner = run_directly) -> RunResult:
    """Run every step of the playbook through the run's executor, in dependency order."""
    clock = ctx.connectors.clock
    started = clock.now()
    results: dict[str, StepResult] = {}
    ordered = ctx.playbook.ordered_steps()
    for number, (phase, step) in enumerate(ordered, start=1):
        work = functools.partial(_run_step, ctx, phase, step, results, started)
        results[step.id] = runner(f"{phase.id}/{step.id}", work, Position(number, len(ordered)))
    return RunResult(
        run_id=ctx.run_id,
        mode_label=ctx.mode_label,
        incident_id=ctx.incident.id,
        started_at=started,
        finished_at=clock.now(),
        steps=list(results.values()),
        ledger_head=ctx.ledger.head(),
    )


def _run_step(
    ctx: RunContext, phase: Phase, step: Step, done: dict[str, StepResult], run_started: datetime
) -> StepResult:
    clock = ctx.connectors.clock
    started = clock.now()
    action = _action(step)
    due = run_started + step.deadline if isinstance(step.deadline, timedelta) else None

    def finish(entries: list[PlanEntry], prepared: Prepared | None = None) -> StepResult:
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
        ctx.record(step.id, "-", "plan", "skipped", {"condition": step.when})
        return finish([_entry(phase, step, "-", "skipped", None, f"condition false: {step.when}")])
    blocked_by = [dep for dep in step.depends_on if dep in done and done[dep].failed]
    if blocked_by:
        ctx.record(step.id, "-", "outcome", "blocked", {"blocked_by": blocked_by})
        return finish(
            [_entry(phase, step, "-", "blocked", None, f"blocked by failed {blocked_by}")]
        )
    try:
        args = action.parse_args(resolve(step.args, ctx.incident_view()))
    except ValidationError as exc:
        raise StepError(
            f"step {step.id!r} ({step.action}): {describe_validation_error(exc)}"
        ) from None
    entries, prepared = ctx.connectors.executor.execute(
        ctx, phase, step, action, args, action.targets(args, ctx)
    )
    return finish(entries, prepared)


def _action(step: Step) -> Action[Any]:
    from breachbook.actions import registry

    return registry()[step.action]
