"""The after-action report and improvement plan (AAR/IP) of an exercise, in markdown.

It follows HSEEP's AAR/IP (docs/tabletop.md): overview, timeline in scenario time, expected
against observed responses, analysis per capability with strengths and areas for improvement,
and an improvement plan row for every rating below P. It names ids, roles and counts only:
no customer personal data.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from breachbook.tabletop.exercise import ExerciseLog, as_data
from breachbook.tabletop.page import aar_html
from breachbook.tabletop.players import scenario_time
from breachbook.tabletop.scoring import Rating, Scored, score


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def aar_markdown(log: ExerciseLog, scored: list[Scored]) -> str:
    scenario = log.loaded.scenario
    incident = log.loaded.incident
    began = incident.awareness
    lines = [
        f"# After-action report: {scenario.exercise.name}",
        "",
        "## Overview",
        "",
        f"- Exercise run: `{log.run_id}` (TABLETOP, simulated clock)",
        f"- Incident: `{incident.id}`, {incident.title}",
        f"- Scenario start (T+00:00): {began.isoformat()}; length {scenario_time(scenario.duration)}",
        f"- Roles taking part: {', '.join(scenario.exercise.roles)}",
        f"- Response rounds run: {log.rounds}; letters delivered in the simulated world: "
        f"{log.letters_sent}",
        "",
        "Objectives:",
        "",
        *(f"- {objective}" for objective in scenario.exercise.objectives),
        "",
        "## Ratings",
        "",
        "| capability | target | rating | measured |",
        "|---|---|---|---|",
    ]
    for item in scored:
        measured = scenario_time(item.measured) if item.measured is not None else "not observed"
        lines.append(
            f"| {item.target.capability} | {_cell(item.target.description)} | "
            f"**{item.rating.value}** ({item.rating.meaning}) | {measured} |"
        )
    lines += _timeline(log)
    lines += _expected(log)
    lines += _decisions(log)
    lines += _analysis(scored)
    lines += _improvement_plan(log, scored)
    return "\n".join(lines) + "\n"


def _timeline(log: ExerciseLog) -> list[str]:
    lines = ["", "## Timeline (scenario time)", "", "| time | kind | what | detail |"]
    lines.append("|---|---|---|---|")
    for entry in sorted(log.lines, key=lambda e: (e.at, e.kind, e.subject)):
        lines.append(
            f"| {scenario_time(entry.at)} | {entry.kind} | {_cell(entry.subject)} | "
            f"{_cell(entry.detail)} |"
        )
    return lines


def _expected(log: ExerciseLog) -> list[str]:
    scenario = log.loaded.scenario
    lines = [
        "",
        "## Expected responses against observed",
        "",
        "| inject | sent | expected | observed | met |",
        "|---|---|---|---|---|",
    ]
    for inject in scenario.injects:
        sent = log.fired.get(inject.id)
        for expect in inject.expect:
            done = log.when(expect)
            by = f" by {scenario_time(expect.by)}" if expect.by is not None else ""
            lines.append(
                f"| {inject.id} | {scenario_time(sent) if sent is not None else 'not sent'} | "
                f"{expect.label()}{by} | {scenario_time(done) if done is not None else '-'} | "
                f"{'yes' if log.met(expect, scenario.duration) else 'no'} |"
            )
    return lines


def _decisions(log: ExerciseLog) -> list[str]:
    scenario = log.loaded.scenario
    late = [
        d
        for d in scenario.decisions
        if d.id not in log.decisions or log.decisions[d.id].at > d.deadline
    ]
    unauthorised = {k: v for k, v in log.decisions.items() if not v.authorised}
    lines = ["", "## Decisions", ""]
    for decision in scenario.decisions:
        taken = log.decisions.get(decision.id)
        if taken is None:
            state = "not taken"
        else:
            state = f"{taken.option} by {taken.role} at {scenario_time(taken.at)}"
        lines.append(
            f"- `{decision.id}` ({decision.role}, due {scenario_time(decision.deadline)}): {state}"
        )
    lines.append(f"- Late or missing decisions: {len(late)}")
    lines.append(f"- Decisions taken by a role without authority: {len(unauthorised)}")
    lines.append(f"- Contingency injects that had to fire: {len(log.contingencies)}")
    if log.fault_hits:
        hits = ", ".join(f"{k} ({v} calls)" for k, v in sorted(log.fault_hits.items()))
        lines.append(f"- Faults met by the response: {hits}")
    return lines


def _analysis(scored: list[Scored]) -> list[str]:
    lines = ["", "## Analysis per capability", ""]
    by_capability: dict[str, list[Scored]] = defaultdict(list)
    for item in scored:
        by_capability[item.target.capability].append(item)
    for capability, items in by_capability.items():
        lines += [f"### {capability}", ""]
        strengths = [i for i in items if i.rating is Rating.P]
        areas = [i for i in items if i.rating is not Rating.P]
        lines.append("Strengths:")
        lines += [f"- {i.target.description}" for i in strengths] or ["- none observed"]
        lines.append("")
        lines.append("Areas for improvement:")
        lines += [f"- {i.target.description} (rated {i.rating.value})" for i in areas] or ["- none"]
        lines.append("")
        lines.append("Observations:")
        for item in items:
            lines += [f"- {note}" for note in item.observations]
        lines.append("")
    return lines


def _improvement_plan(log: ExerciseLog, scored: list[Scored]) -> list[str]:
    scenario = log.loaded.scenario
    began = log.loaded.incident.awareness
    lines = [
        "## Evaluator notes",
        "",
        *(f"- {i.id}: {i.evaluator_notes}" for i in scenario.injects if i.evaluator_notes),
        "",
        "## Improvement plan",
        "",
        "| capability | issue | corrective action | owner | start | due | status |",
        "|---|---|---|---|---|---|---|",
    ]
    end = began + scenario.duration
    due = end + scenario.improvement_due
    for item in scored:
        if item.rating is Rating.P:
            continue
        issue = f"{item.target.description}: rated {item.rating.value}"
        lines.append(
            f"| {item.target.capability} | {_cell(issue)} | "
            f"{_cell(item.target.corrective_action)} | {item.target.owner} | "
            f"{end.date().isoformat()} | {due.date().isoformat()} | open |"
        )
    if all(item.rating is Rating.P for item in scored):
        lines.append("| - | every target rated P | - | - | - | - | - |")
    return lines


def score_data(scored: list[Scored]) -> list[dict[str, str | float | None]]:
    return [
        {
            "target": s.target.id,
            "capability": s.target.capability,
            "rating": s.rating.value,
            "measured_seconds": s.measured.total_seconds() if s.measured is not None else None,
        }
        for s in scored
    ]


AAR = "aar.md"
AAR_PAGE = "aar.html"
SCORE = "score.json"


def write_results(folder: Path, log: ExerciseLog) -> list[Scored]:
    """Score the exercise and write `aar.md`, `aar.html` and `score.json` into its folder."""
    scored = score(log)
    markdown = aar_markdown(log, scored)
    (folder / AAR).write_text(markdown, encoding="utf-8")
    (folder / AAR_PAGE).write_text(aar_html(log, markdown), encoding="utf-8")
    data = {"ratings": score_data(scored), **as_data(log)}
    (folder / SCORE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return scored
