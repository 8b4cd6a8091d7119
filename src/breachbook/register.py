"""The breach register: every decision about notifying, and why, kept in the ledger.

GDPR Art. 33(5) asks the controller to document every personal data breach, its effects and
the remedial action, so the authority can verify compliance; Florida (Fla. Stat.
501.171(4)(c)) asks for the written determination that no harm is likely, kept five years;
PIPEDA s. 10.3 and the Breach of Security Safeguards Regulations s. 6 ask for a record of
every breach kept 24 months. So each run records as ledger records (hash-chained beside the
audit entries, counts and rule ids only): the risk assessment and its reasons or override,
each obligation triggered, each obligation not owed and why (below a threshold, encrypted
data, risk, data that does not trigger it) and each place with no rule. The run exports
them as register.json and register.md; filings of regulator notices (one record per
regulator and phase) are incident-wide and exported with them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from breachbook.journal import INCIDENT_SCOPE, RunJournal
from breachbook.models import Incident
from breachbook.notify import Assessment
from breachbook.rules import RuleBook

REGISTER = "register"
FILING = "filing"
RETENTION = (
    "Keep at least 24 months after the breach was determined (PIPEDA s. 10.3; Breach of "
    "Security Safeguards Regulations s. 6) and five years for a Florida no-harm determination "
    "(Fla. Stat. 501.171(4)(c)); GDPR Art. 33(5) asks for it to be available to the authority."
)

DecisionKind = Literal["risk", "owed", "not-owed", "no-rule"]
Phase = Literal["initial", "follow-up", "final"]
PHASES: tuple[Phase, ...] = ("initial", "follow-up", "final")


class Decision(BaseModel):
    """One entry of the register. Ids, counts, categories and reasons: no personal data."""

    kind: DecisionKind
    subject: str
    """'risk', a rule id, or a place ('US-WA')."""
    decision: str
    reasons: list[str]
    citation: str = ""
    counts: dict[str, int] = Field(default_factory=dict)
    decided_by: str
    decided_at: str


class Filing(BaseModel):
    """One regulator notice in one phase (GDPR Art. 33(4): information may be provided in
    phases): drafted by a run, filed when a person says they filed it."""

    rule_id: str
    phase: Phase
    status: Literal["drafted", "filed"]
    at: str
    by: str
    document: str = ""
    reference: str = ""
    """The regulator's case or submission number, once filed."""


def _key(decision: Decision) -> str:
    return decision.kind if decision.kind == "risk" else f"{decision.kind}/{decision.subject}"


def decisions(
    found: Assessment, book: RuleBook, incident: Incident, actor: str, now: datetime
) -> list[Decision]:
    """What the register says about one assessment: risk, owed, not owed and no rule."""
    at = now.isoformat()
    out: list[Decision] = []
    risk = incident.assessed_risk()
    if risk is None:
        out.append(
            Decision(
                kind="risk",
                subject="risk",
                decision="not assessed: counted as high",
                reasons=["the incident file has no risk_assessment yet"],
                decided_by=actor,
                decided_at=at,
            )
        )
    else:
        out.append(
            Decision(
                kind="risk",
                subject="risk",
                decision=f"level {risk.level}"
                + (f" (assessed {risk.assessed}, overridden)" if risk.overridden_by else ""),
                reasons=risk.reasons,
                citation="GDPR Art. 33(1), 34(1), 34(3)(a); EDPB Guidelines 9/2022",
                decided_by=risk.overridden_by or actor,
                decided_at=at,
            )
        )
    for tally in [*found.regulator.values(), *found.individual.values()]:
        rule = book.rule(tally.rule_id)
        categories = ", ".join(sorted(tally.categories))
        out.append(
            Decision(
                kind="owed",
                subject=rule.id,
                decision=f"notify {rule.recipient}",
                reasons=[
                    f"{tally.count:,} people in {', '.join(sorted(tally.by_jurisdiction))} "
                    f"with {categories or 'data'} exposed reach the rule (risk {incident.risk or 'not assessed: high'})"
                ],
                citation=rule.citation,
                counts={"people": tally.count, "records": tally.records},
                decided_by=actor,
                decided_at=at,
            )
        )
    for rule_id, reason in found.not_owed.items():
        rule = book.rule(rule_id)
        out.append(
            Decision(
                kind="not-owed",
                subject=rule_id,
                decision=f"do not notify {rule.recipient}",
                reasons=[reason],
                citation=rule.citation,
                decided_by=actor,
                decided_at=at,
            )
        )
    for place, people in found.not_covered.items():
        gap = found.not_covered_categories.get(place, {})
        out.append(
            Decision(
                kind="no-rule",
                subject=place,
                decision="no notice decided: no rule covers this place",
                reasons=[no_rule_line(place, people, gap) + "; a person must decide"],
                counts={"people": people, **gap},
                decided_by=actor,
                decided_at=at,
            )
        )
    return out


def no_rule_line(place: str, people: int, categories: dict[str, int]) -> str:
    """'no rule for US-WA: 312 residents, categories email (312), financial_account (40)'."""
    listed = ", ".join(f"{name} ({count:,})" for name, count in sorted(categories.items()))
    return f"no rule for {place}: {people:,} residents, categories {listed or 'none known'}"


def record_decisions(journal: RunJournal, entries: list[Decision]) -> None:
    for decision in entries:
        journal.put(REGISTER, _key(decision), decision)


def run_register(journal: RunJournal) -> list[Decision]:
    raw = journal.ledger.records_of(journal.incident_id, journal.run_id, REGISTER)
    order = {"risk": 0, "owed": 1, "not-owed": 2, "no-rule": 3}
    found = [Decision.model_validate(data) for data in raw.values()]
    return sorted(found, key=lambda d: (order[d.kind], d.subject))


def filings(journal: RunJournal) -> dict[str, list[Filing]]:
    """Every regulator's filing records, by rule id, in phase order (incident-wide)."""
    raw = journal.ledger.records_of(journal.incident_id, INCIDENT_SCOPE, FILING)
    out: dict[str, list[Filing]] = {}
    for data in raw.values():
        filing = Filing.model_validate(data)
        out.setdefault(filing.rule_id, []).append(filing)
    for items in out.values():
        items.sort(key=lambda f: PHASES.index(f.phase))
    return out


def next_phase(done: list[Filing]) -> Phase:
    """The phase a new draft is for: the first not yet filed (the final one stays final)."""
    filed = {f.phase for f in done if f.status == "filed"}
    return next((p for p in PHASES if p not in filed), "final")


def record_draft(
    journal: RunJournal, rule_id: str, phase: Phase, document: str, at: datetime
) -> Filing:
    """A run drafted the notice for this phase; a phase already filed is never un-filed."""
    key = f"{rule_id}/{phase}"
    known = journal.get(FILING, key, Filing, scope=INCIDENT_SCOPE)
    if known is not None and known.status == "filed":
        return known
    filing = Filing(
        rule_id=rule_id,
        phase=phase,
        status="drafted",
        at=at.isoformat(),
        by=journal.actor,
        document=document,
    )
    journal.put(FILING, key, filing, scope=INCIDENT_SCOPE)
    return filing


def record_filed(
    journal: RunJournal, rule_id: str, phase: Phase, by: str, at: datetime, reference: str
) -> Filing:
    """A person filed the notice of this phase with the regulator."""
    filing = Filing(
        rule_id=rule_id, phase=phase, status="filed", at=at.isoformat(), by=by, reference=reference
    )
    journal.put(FILING, f"{rule_id}/{phase}", filing, scope=INCIDENT_SCOPE)
    journal.record(
        "filings", f"{rule_id}/{phase}", "outcome", "filed", {"by": by, "reference": reference}
    )
    return filing


def register_json(journal: RunJournal) -> dict[str, Any]:
    return {
        "incident_id": journal.incident_id,
        "run_id": journal.run_id,
        "retention": RETENTION,
        "decisions": [d.model_dump() for d in run_register(journal)],
        "filings": {
            rule_id: [f.model_dump() for f in items]
            for rule_id, items in sorted(filings(journal).items())
        },
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def register_markdown(journal: RunJournal) -> str:
    data = run_register(journal)
    titles = {
        "risk": "Risk assessment",
        "owed": "Obligations triggered",
        "not-owed": "Decided not to notify",
        "no-rule": "Places with no rule",
    }
    lines = [
        f"# Breach register: incident {journal.incident_id} (run {journal.run_id})",
        "",
        RETENTION,
    ]
    for kind, title in titles.items():
        chosen = [d for d in data if d.kind == kind]
        if not chosen:
            continue
        lines += ["", f"## {title}", "", "| subject | decision | why | citation | by | at |"]
        lines.append("|---|---|---|---|---|---|")
        for d in chosen:
            lines.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        d.subject,
                        d.decision,
                        "; ".join(d.reasons),
                        d.citation or "-",
                        d.decided_by,
                        d.decided_at,
                    )
                )
                + " |"
            )
    filed = filings(journal)
    if filed:
        lines += [
            "",
            "## Regulator filings",
            "",
            "| regulator rule | phase | status | by | at | reference |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for rule_id, items in sorted(filed.items()):
            for f in items:
                lines.append(
                    f"| {rule_id} | {f.phase} | {f.status} | {_cell(f.by)} | {f.at} | {_cell(f.reference) or '-'} |"
                )
    return "\n".join(lines) + "\n"
