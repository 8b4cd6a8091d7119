"""Incident facts as they grow: each version is a ledger record with who and when.

A response starts from what the alert says and learns more; every run of the incident records
the facts it was given when they differ from the latest, and each step reads the latest facts
at its own start, so a fact added while a run waits is seen by the steps that come after.
"""

from __future__ import annotations

from breachbook.journal import INCIDENT_SCOPE, RunJournal
from breachbook.models import Incident

FACTS = "facts"
KEY = "incident"


def record_facts(journal: RunJournal, incident: Incident) -> int | None:
    """Store the incident as a new version when it is new; its version.

    Facts equal to any earlier version are not new (a run resumed with the file it started
    from): recording them again would undo what was learnt since."""
    history = journal.ledger.record_history(journal.incident_id, INCIDENT_SCOPE, FACTS, KEY)
    if any(Incident.model_validate(row.data) == incident for row in history):
        return None
    version = journal.put(FACTS, KEY, incident, scope=INCIDENT_SCOPE)
    journal.record("incident", KEY, "facts", "recorded", {"version": version})
    return version


def incident_as_of_now(journal: RunJournal, current: Incident) -> Incident:
    """The latest facts recorded for the incident (or `current` when none are)."""
    return journal.get(FACTS, KEY, Incident, scope=INCIDENT_SCOPE) or current
