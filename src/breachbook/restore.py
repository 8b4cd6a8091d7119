"""After the incident: put back what the response changed, newest change first.

Only items the ledger shows done for this incident, by an action that declares an undo, are
touched, each from the prior state recorded when it was changed. Each restore is itself an
item claimed in the ledger (so running restore twice undoes nothing twice) and audited; the
original item becomes `restored`, so a later LIVE run of the step acts again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from breachbook.actions import registry
from breachbook.context import Connectors
from breachbook.errors import BreachbookError
from breachbook.journal import Once, RunJournal
from breachbook.ledger import Item, ItemStatus

RESTORE = "restore"


@dataclass(frozen=True)
class Restored:
    step_id: str
    target: str
    outcome: Once
    details: dict[str, object]


def restorable(journal: RunJournal) -> list[Item]:
    """Done items of reversible actions that recorded their prior state, newest first."""
    actions = registry()
    found = [
        item
        for item in journal.items()
        if item.status is ItemStatus.DONE
        and item.prior is not None
        and actions.get(str(item.details.get("action")), None) is not None
        and actions[str(item.details["action"])].reversible
    ]
    return sorted(found, key=lambda item: item.done_order or 0, reverse=True)


def restore_incident(
    journal: RunJournal,
    connectors: Connectors,
    step_id: str | None = None,
    target: str | None = None,
) -> list[Restored]:
    """Undo the incident's changes (optionally one step or target); refuses unknown ones."""
    items = [
        item
        for item in restorable(journal)
        if (step_id is None or item.step_id == step_id) and (target is None or item.key == target)
    ]
    if not items and (step_id is not None or target is not None):
        raise BreachbookError(
            f"incident {journal.incident_id} changed nothing reversible matching "
            f"step {step_id or '*'} target {target or '*'}; restore touches only what it changed"
        )
    results = []
    for item in items:
        action = registry()[str(item.details["action"])]
        assert item.prior is not None
        undo = functools.partial(action.undo, item.key, item.prior, connectors)
        key = f"{item.step_id}/{item.key}@{item.generation}"
        outcome, details = journal.once(RESTORE, key, undo)
        if outcome in (Once.DONE, Once.ALREADY_DONE):
            journal.mark_restored(item)
        results.append(Restored(item.step_id, item.key, outcome, details))
    return results
