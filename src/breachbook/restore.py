"""After the incident: put back what the response changed, newest change first.

Only items the ledger shows done for this incident, by an action that declares an undo, are
touched, each from the prior state recorded when it was changed. Each restore is itself an
item claimed in the ledger (so running restore twice undoes nothing twice) and audited; the
original item becomes `restored`, so a later LIVE run of the step acts again.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from breachbook.actions import registry
from breachbook.actions.base import Action
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


def restorable(journal: RunJournal) -> list[tuple[Item, Action[Any], Mapping[str, Any]]]:
    """Done items of reversible actions that recorded their prior state, newest first, each
    with its action and that prior state."""
    actions = registry()
    found = []
    for item in journal.items():
        action = actions.get(str(item.details.get("action")))
        if (
            item.status is ItemStatus.DONE
            and item.prior is not None
            and action
            and action.reversible
        ):
            found.append((item, action, item.prior))
    return sorted(found, key=lambda found: found[0].done_order or 0, reverse=True)


def restore_incident(
    journal: RunJournal,
    connectors: Connectors,
    step_id: str | None = None,
    target: str | None = None,
) -> list[Restored]:
    """Undo the incident's changes (optionally one step or target); refuses unknown ones."""
    items = [
        (item, action, prior)
        for item, action, prior in restorable(journal)
        if (step_id is None or item.step_id == step_id) and (target is None or item.key == target)
    ]
    if not items and (step_id is not None or target is not None):
        raise BreachbookError(
            f"incident {journal.incident_id} changed nothing reversible matching "
            f"step {step_id or '*'} target {target or '*'}; restore touches only what it changed"
        )
    results = []
    for item, action, prior in items:
        undo = functools.partial(action.undo, item.key, prior, connectors)
        key = f"{item.step_id}/{item.key}@{item.generation}"
        outcome, details = journal.once(RESTORE, key, undo)
        if outcome in (Once.DONE, Once.ALREADY_DONE):
            journal.mark_restored(item)
        results.append(Restored(item.step_id, item.key, outcome, details))
    return results
