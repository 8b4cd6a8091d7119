"""Approvals kept in the ledger: a step that needs one records that it waits, and a person
grants or denies it with `breachbook approve`, from any machine, hours later. Nothing waits
in memory: the run stops, and the same run resumes and reads the decision."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from breachbook.clock import Clock
from breachbook.journal import INCIDENT_SCOPE, RunJournal
from breachbook.ports import Check, Decision, DecisionStatus

DECISION = "decision"
WAIT = "wait"


class Wait(BaseModel):
    """A step waiting for a role's decision: what is asked, since when, by which run."""

    step_id: str
    role: str
    summary: str
    since: datetime
    run_id: str


class LedgerApprovals:
    def __init__(self, journal: RunJournal, clock: Clock) -> None:
        self._journal = journal
        self._clock = clock

    def check_can_ask(self, role: str) -> Check:
        return Check.verified(
            f"role {role!r} decides with `breachbook approve --incident "
            f"{self._journal.incident_id}`; the run waits in the ledger until then",
            "ledger decision",
        )

    def decide(self, step_id: str, role: str, summary: str) -> Decision:
        found = self._journal.get(DECISION, step_id, Decision, scope=INCIDENT_SCOPE)
        if found is not None:
            return found
        if self._journal.get(WAIT, step_id, Wait, scope=INCIDENT_SCOPE) is None:
            wait = Wait(
                step_id=step_id,
                role=role,
                summary=summary,
                since=self._clock.now(),
                run_id=self._journal.run_id,
            )
            self._journal.put(WAIT, step_id, wait, scope=INCIDENT_SCOPE)
        return Decision(step_id=step_id, role=role, status=DecisionStatus.PENDING)


def record_decision(
    journal: RunJournal, step_id: str, granted: bool, by: str, clock: Clock
) -> Decision:
    """What `breachbook approve` writes: the decision, who made it and when, audited."""
    wait = journal.get(WAIT, step_id, Wait, scope=INCIDENT_SCOPE)
    role = wait.role if wait is not None else "-"
    decision = Decision(
        step_id=step_id,
        role=role,
        status=DecisionStatus.GRANTED if granted else DecisionStatus.DENIED,
        by=by,
        at=clock.now(),
    )
    journal.put(DECISION, step_id, decision, scope=INCIDENT_SCOPE)
    journal.record(step_id, "-", "approval", decision.status.value, {"role": role, "by": by})
    return decision


def waiting_steps(journal: RunJournal) -> dict[str, Wait]:
    """Steps of the incident that wait and have no decision yet, by step id."""
    waits = journal.ledger.records_of(journal.incident_id, INCIDENT_SCOPE, WAIT)
    decided = journal.ledger.records_of(journal.incident_id, INCIDENT_SCOPE, DECISION)
    return {key: Wait.model_validate(data) for key, data in waits.items() if key not in decided}
