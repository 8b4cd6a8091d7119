"""Plan and report documents of a run, and the PII-free summaries shown as Prefect artifacts."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from sqlalchemy.engine import make_url

from breachbook.actions.notify import ASSESSMENT
from breachbook.context import RunContext
from breachbook.deadlines import clock_markdown, deadline_clock
from breachbook.engine import RunResult, Status, StepResult
from breachbook.ledger import ItemStatus
from breachbook.notify import Assessment
from breachbook.ports import Verdict
from breachbook.register import no_rule_line, register_json, register_markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plan_data(ctx: RunContext, result: RunResult) -> dict[str, Any]:
    outcome = result.outcome()
    return {
        "incident_id": result.incident_id,
        "run_id": result.run_id,
        "mode": result.mode_label,
        "playbook": ctx.playbook.name,
        "started_at": result.started_at.isoformat(),
        "finished_at": result.finished_at.isoformat(),
        "verdicts": result.verdict_counts(),
        "outcome": outcome.name.lower(),
        "exit_code": int(outcome),
        "ledger": {
            "url": make_url(ctx.journal.ledger.url).render_as_string(hide_password=True),
            "head_seq": result.ledger_head[0],
            "head_sha256": result.ledger_head[1],
        },
        "steps": [
            {
                "phase": step.phase,
                "step_id": step.step_id,
                "started_at": step.started_at.isoformat(),
                "seconds": round(_seconds(step), 4),
                "counts": step.counts,
            }
            for step in result.steps
        ],
        "entries": [entry.as_dict() for entry in result.entries()],
    }


def plan_markdown(result: RunResult) -> str:
    counts = result.verdict_counts()
    lines = [
        f"# Plan: incident {result.incident_id} ({result.mode_label} run {result.run_id})",
        "",
        " | ".join(f"{name}: {count}" for name, count in counts.items()),
        "",
        "| phase | step | action | target | status | verdict | how verified | reason | would |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in result.entries():
        lines.append(
            "| "
            + " | ".join(
                _md_cell(x)
                for x in (
                    e.phase,
                    e.step_id,
                    e.action,
                    e.target,
                    e.status,
                    e.verdict or "-",
                    e.method or "-",
                    e.reason or "-",
                    e.would,
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


UNSETTLED = (ItemStatus.CLAIMED, ItemStatus.UNKNOWN)
FULFILLED = frozenset({Status.COMPLETED, Status.ALREADY_DONE, Status.SKIPPED})


def _deadline_state(step: StepResult) -> str:
    """'met' only when the step was fulfilled in time; a step not done never meets its deadline."""
    undone = sorted({e.status.value for e in step.entries if e.status not in FULFILLED})
    if undone:
        return "not done: " + ", ".join(undone)
    assert step.due_at is not None
    return "met" if step.finished_at <= step.due_at else "MISSED"


def _seconds(step: StepResult) -> float:
    return (step.finished_at - step.started_at).total_seconds()


def phase_durations(result: RunResult) -> dict[str, float]:
    durations: dict[str, float] = {}
    for step in result.steps:
        durations[step.phase] = durations.get(step.phase, 0.0) + _seconds(step)
    return durations


def report_markdown(ctx: RunContext, result: RunResult) -> str:
    outcome = result.outcome()
    counts = result.verdict_counts()
    total = sum(counts.values())
    statuses = Counter(e.status for e in result.entries())
    problems = [e for e in result.entries() if e.verdict in (Verdict.FAILED, Verdict.UNVERIFIED)]
    step_counts: Counter[str] = Counter()
    for step in result.steps:
        step_counts.update(step.counts)
    verified_share = counts[Verdict.VERIFIED] / total if total else 0.0
    lines = [
        f"# Report: {ctx.incident.title}",
        "",
        f"- incident: `{result.incident_id}`; playbook: `{ctx.playbook.name}`; mode: **{result.mode_label.upper()}**; run: `{result.run_id}`",
        f"- started {result.started_at.isoformat()}, finished {result.finished_at.isoformat()} "
        f"({(result.finished_at - result.started_at).total_seconds():.1f} s)",
        f"- actions: {total}; verified {counts[Verdict.VERIFIED]} ({verified_share:.0%}), "
        f"failed {counts[Verdict.FAILED]}, unverified {counts[Verdict.UNVERIFIED]}",
        "- statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
        f"- ledger head: entry {result.ledger_head[0]}, sha256 `{result.ledger_head[1]}`",
        f"- outcome: **{outcome.name.lower()}** (exit code {int(outcome)})",
        "",
        "## Counts",
        "",
        *(f"- {name}: {value:,}" for name, value in sorted(step_counts.items())),
        "",
        "## Duration of each phase",
        "",
        "| phase | seconds |",
        "|---|---|",
        *(f"| {phase} | {secs:.2f} |" for phase, secs in phase_durations(result).items()),
        "",
        "## Timeline",
        "",
        "| started | phase | step | seconds | outcome | deadline |",
        "|---|---|---|---|---|---|",
    ]
    for step in result.steps:
        verdicts = Counter(e.verdict or e.status for e in step.entries)
        summary = ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))
        deadline = "-"
        if step.due_at is not None:
            deadline = f"{step.due_at.isoformat()} ({_deadline_state(step)})"
        lines.append(
            f"| {step.started_at.time().isoformat(timespec='seconds')} | {step.phase} | {step.step_id} "
            f"| {_seconds(step):.2f} | {summary} | {deadline} |"
        )
    lines += ["", "## FAILED and UNVERIFIED", ""]
    if not problems:
        lines.append("Every action was verified.")
    for e in problems:
        lines.append(f"- **{e.verdict}** `{e.step_id}` on `{e.target}`: {e.reason}")
    lines += obligation_sections(ctx)
    uncertain = ctx.journal.items_in(UNSETTLED)
    if uncertain:
        lines += [
            "",
            "## To reconcile",
            "",
            "Started and never settled (a crash mid-change, or an outcome the adapter could not "
            "confirm): check each by hand; a re-run never repeats them.",
            "",
        ]
        lines += [f"- `{item.step_id}` `{item.key}`: {item.status.value}" for item in uncertain]
    held = [e for e in result.entries() if e.details.get("waits_for")]
    if held:
        lines += [
            "",
            "## Held until the ledger shows what they state",
            "",
            "These letters say a step was done that is not done yet; a later run sends them once it is.",
            "",
        ]
        lines += [
            f"- `{e.step_id}` `{e.target}`: waits for {', '.join(e.details['waits_for'])}"
            for e in held
        ]
    lines += ["", "## Documents", ""]
    for step in result.steps:
        lines += [f"- `{doc}` ({step.step_id})" for doc in step.documents]
    return "\n".join(lines) + "\n"


def obligation_sections(ctx: RunContext) -> list[str]:
    """Places no rule covers, and the deadline clock of every obligation, from the ledger."""
    found = ctx.journal.get(ASSESSMENT, "-", Assessment)
    if found is None:
        return []
    lines: list[str] = []
    if found.not_covered:
        lines += ["", "## Places with no rule", ""]
        lines += [
            f"- {no_rule_line(place, people, found.not_covered_categories.get(place, {}))}"
            for place, people in found.not_covered.items()
        ]
        lines.append("")
        lines.append(
            "Nobody decided what these residents are owed: a person decides, and the decision "
            "goes into the breach register (register.md)."
        )
    now = ctx.connectors.clock.now()
    rows = deadline_clock(found, ctx.rules, ctx.incident, ctx.journal, now)
    lines += ["", f"## Deadline clock (at {now.isoformat(timespec='seconds')})", ""]
    lines += clock_markdown(rows)
    return lines


def obligations_markdown(ctx: RunContext) -> str:
    """Obligations table from obligations.json, for the artifact: counts and deadlines only."""
    path = ctx.workspace.path("obligations.json")
    if not path.is_file():
        return "No obligations were assessed in this run.\n"
    data = json.loads(path.read_text(encoding="utf-8"))
    lines = [
        f"# Obligations: {data['affected_customers']:,} affected customers",
        "",
        "| obligation | due | affected | citation | to |",
        "|---|---|---|---|---|",
    ]
    for item in data["obligations"]:  # deadlines before the long recipient names
        lines.append(
            f"| {item['id']} | {item['due']} | {item['affected_count']:,} | {item['citation']} | {item['recipient']} |"
        )
    uncovered = data["no_rule_for_jurisdiction"]
    if uncovered:
        lines += ["", "No rule yet for: " + ", ".join(f"{k} ({v:,})" for k, v in uncovered.items())]
    return "\n".join(lines) + "\n"


def write_outputs(ctx: RunContext, result: RunResult) -> None:
    """plan.json, plan.md and, last, report.md; then the run is marked complete."""
    ctx.workspace.write_json("plan.json", plan_data(ctx, result))
    ctx.workspace.write_raw("plan.md", plan_markdown(result))
    ctx.workspace.write_json("register.json", register_json(ctx.journal))
    ctx.workspace.write_document("register.md", register_markdown(ctx.journal))
    ctx.workspace.write_document("report.md", report_markdown(ctx, result))
    ctx.workspace.mark_complete()
