"""The deadline clock of each obligation, from the ledger: due, time left, done or not.

What counts as done is what the ledger shows, never what a step planned: a regulator notice
is filed only when a filing record says a person filed it (a draft is not a filing), and
individual letters are done only when every letter owed was delivered (an undelivered
letter is never "met"). A clock that starts when another obligation is fulfilled (the
California AG: 15 days after the residents are notified) starts at the time the ledger
shows that obligation's last letter delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from breachbook.journal import RunJournal
from breachbook.ledger import ItemStatus
from breachbook.models import Incident
from breachbook.notify import Assessment
from breachbook.register import Filing, filings
from breachbook.rules import RuleBook, describe_deadline

DELIVER_ACTION = "letters.deliver"
PRINT_ACTION = "letters.print"
DELIVERY_ACTIONS = (DELIVER_ACTION, PRINT_ACTION)


@dataclass(frozen=True)
class Deliveries:
    """Letters delivered for one rule (across every delivery step) and when the last was."""

    delivered: int
    last: datetime | None


def deliveries(journal: RunJournal) -> dict[str, Deliveries]:
    """Delivered letters per rule id, read from the ledger's items (each letter is an item of
    a delivery action, keyed rule/customer: sent by email, or printed for the post), across
    every run of the incident. A letter both sent and printed counts once, when first done."""
    first: dict[str, datetime | None] = {}
    for action in DELIVERY_ACTIONS:
        for item in journal.items(action):
            if item.status is not ItemStatus.DONE:
                continue
            at = datetime.fromisoformat(item.updated_at) if item.updated_at else None
            known = first.get(item.key)
            if item.key not in first or (at is not None and (known is None or at < known)):
                first[item.key] = at
    counts: dict[str, int] = {}
    last: dict[str, datetime] = {}
    for key, at in first.items():
        rule_id = key.split("/", 1)[0]
        counts[rule_id] = counts.get(rule_id, 0) + 1
        if at is not None:
            last[rule_id] = max(at, last.get(rule_id, at))
    return {rule_id: Deliveries(n, last.get(rule_id)) for rule_id, n in counts.items()}


def fulfilled_times(found: Assessment, sent: dict[str, Deliveries]) -> dict[str, datetime]:
    """Rule id -> when the individual obligation was fulfilled: every letter owed delivered."""
    out: dict[str, datetime] = {}
    for rule_id, tally in found.individual.items():
        done = sent.get(rule_id)
        if done is not None and done.last is not None and done.delivered >= tally.count:
            out[rule_id] = done.last
    return out


@dataclass(frozen=True)
class ClockRow:
    rule_id: str
    recipient: str
    due: str
    left: str
    state: str
    met: bool


def _left(due: datetime | None, now: datetime, waiting: str | None) -> str:
    if waiting is not None:
        return f"not started: waits for {waiting}"
    if due is None:
        return "as soon as possible"
    hours = (due - now).total_seconds() / 3600
    return f"{hours:,.1f} h left" if hours >= 0 else f"OVERDUE by {-hours:,.1f} h"


def _regulator_state(done: list[Filing], due: datetime | None) -> tuple[str, bool]:
    filed = [f for f in done if f.status == "filed"]
    if filed:
        first = filed[0]
        at = datetime.fromisoformat(first.at)
        phases = ", ".join(f.phase for f in filed)
        if due is not None and at > due:
            return f"filed {first.at} ({phases}), after the due time: MISSED", False
        return f"filed {first.at} ({phases}): met", True
    if done:
        return f"drafted ({done[-1].phase}), not filed", False
    return "not drafted", False


def _letters_state(owed: int, sent: Deliveries | None, due: datetime | None) -> tuple[str, bool]:
    delivered = sent.delivered if sent else 0
    if owed and delivered >= owed and sent is not None and sent.last is not None:
        if due is not None and sent.last > due:
            return (
                f"delivered {delivered:,} of {owed:,}, the last after the due time: MISSED",
                False,
            )
        return f"delivered {delivered:,} of {owed:,}: met", True
    return f"not met: delivered {delivered:,} of {owed:,} letters owed", False


def deadline_clock(
    found: Assessment,
    book: RuleBook,
    incident: Incident,
    journal: RunJournal,
    now: datetime,
) -> list[ClockRow]:
    """One row per obligation: regulators first, then letters, each by rule id."""
    sent = deliveries(journal)
    fulfilled = fulfilled_times(found, sent)
    filed = filings(journal)
    rows = []
    for audience, tallies in (("regulator", found.regulator), ("individual", found.individual)):
        for rule_id, tally in sorted(tallies.items()):
            rule = book.rule(rule_id)
            started = rule.clock_start(incident, fulfilled)
            due = rule.due_at(incident, fulfilled)
            waiting = rule.after if started is None else None
            if waiting is not None:
                due_text = f"{describe_deadline(rule.deadline)} after {waiting} is fulfilled"
            else:
                due_text = due.isoformat() if due else "ASAP"
            if audience == "regulator":
                state, met = _regulator_state(filed.get(rule_id, []), due)
            else:
                state, met = _letters_state(tally.count, sent.get(rule_id), due)
            rows.append(
                ClockRow(rule_id, rule.recipient, due_text, _left(due, now, waiting), state, met)
            )
    return rows


def clock_markdown(rows: list[ClockRow]) -> list[str]:
    if not rows:
        return ["No obligation was assessed in this run."]
    lines = ["| obligation | to | due | time | done |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (row.rule_id, row.recipient, row.due, row.left, row.state)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines
