"""The after-action report as one self-contained HTML page: the markdown report rendered
(raw HTML in it escaped, no scripts, nothing fetched) and a timeline chart of injects, steps
done, decisions and their deadlines in scenario time, drawn as inline SVG."""

from __future__ import annotations

from html import escape

from markdown_it import MarkdownIt

from breachbook.tabletop.exercise import ExerciseLog
from breachbook.tabletop.players import scenario_time

WIDTH, LEFT, RIGHT = 960, 130, 20
LANES = ("injects", "steps done", "decisions", "deadlines")
LANE_HEIGHT = 34
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
svg text { font-size: 11px; fill: #444; }
"""


def timeline_svg(log: ExerciseLog) -> str:
    """Injects (contingency injects in red), steps done, decisions taken (red when taken by
    a role without authority) and decision deadlines, on one axis of scenario hours."""
    scenario = log.loaded.scenario
    span = scenario.duration.total_seconds() or 1.0
    height = LANE_HEIGHT * len(LANES) + 40

    def x(seconds: float) -> float:
        return round(LEFT + (WIDTH - LEFT - RIGHT) * min(seconds, span) / span, 1)

    def mark(lane: int, seconds: float, label: str, colour: str) -> str:
        y = 20 + LANE_HEIGHT * lane + LANE_HEIGHT / 2
        return (
            f'<circle cx="{x(seconds)}" cy="{y}" r="5" fill="{colour}">'
            f"<title>{escape(label)}</title></circle>"
        )

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'role="img" aria-label="timeline in scenario time">'
    ]
    for n, lane in enumerate(LANES):
        y = 20 + LANE_HEIGHT * n + LANE_HEIGHT / 2
        parts.append(f'<text x="4" y="{y + 4}">{lane}</text>')
        parts.append(f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#ddd"/>')
    hours = int(span // 3600)
    step = 12 if hours > 24 else 1
    for hour in range(0, hours + 1, step):
        tick = x(hour * 3600.0)
        parts.append(f'<line x1="{tick}" y1="14" x2="{tick}" y2="{height - 20}" stroke="#eee"/>')
        parts.append(f'<text x="{tick - 12}" y="{height - 6}">T+{hour}h</text>')
    for inject_id, at in sorted(log.fired.items(), key=lambda item: item[1]):
        colour = "#c0392b" if inject_id in log.contingencies else "#2c7fb8"
        label = f"{scenario_time(at)} inject {inject_id}"
        parts.append(mark(0, at.total_seconds(), label, colour))
    for step_id, at in sorted(log.steps_done.items(), key=lambda item: item[1]):
        parts.append(mark(1, at.total_seconds(), f"{scenario_time(at)} {step_id} done", "#31a354"))
    for decision_id, taken in sorted(log.decisions.items(), key=lambda item: item[1].at):
        colour = "#756bb1" if taken.authorised else "#c0392b"
        label = f"{scenario_time(taken.at)} {decision_id}: {taken.option} by {taken.role}"
        parts.append(mark(2, taken.at.total_seconds(), label, colour))
    for decision in scenario.decisions:
        label = f"{scenario_time(decision.deadline)} deadline of {decision.id}"
        parts.append(mark(3, decision.deadline.total_seconds(), label, "#e6550d"))
    parts.append("</svg>")
    return "\n".join(parts)


def aar_html(log: ExerciseLog, markdown: str) -> str:
    """The whole page; it loads nothing and runs nothing."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    title = escape(f"After-action report: {log.loaded.scenario.exercise.name}")
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>\n"
        f"<h2>Timeline</h2>\n{timeline_svg(log)}\n{body}</body></html>\n"
    )
