"""Where every letter of a run stands, by id: sent, failed, unknown, unsent, left for post.

Read from the run folder (who is owed which letter: recipients/<rule>.txt, ids only) and the
ledger (what became of each letter). Nothing here reads the customer database, so the answer
carries ids and reply codes, never an address.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from breachbook.errors import BreachbookError
from breachbook.ledger import ItemStatus, Ledger
from breachbook.workspace import OWNER_MARK

DELIVER_STEP = "letters.deliver"
FOR_POST = "letters-for-post"


@dataclass
class LetterStatus:
    incident_id: str
    run_id: str
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Letter key -> why (the relay's reply code, or the error), never an address."""
    unknown: list[str] = field(default_factory=list)
    """Claimed, outcome never heard (killed mid-send) or in doubt: a re-run resends them
    with the same Message-ID."""
    unsent: list[str] = field(default_factory=list)
    for_post: list[str] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return not (self.failed or self.unknown or self.unsent)


def run_identity(run: Path) -> tuple[str, str]:
    """(incident id, run id) of a run folder, from the files every run writes first."""
    mark = run / OWNER_MARK
    audience = run / "audience.json"
    if not mark.is_file() or not audience.is_file():
        raise BreachbookError(
            f"{run}: not a run folder that found its audience ({OWNER_MARK} or audience.json missing)"
        )
    run_id = mark.read_text(encoding="utf-8").split("\n", 1)[0].strip()
    try:
        incident_id = str(json.loads(audience.read_text(encoding="utf-8"))["incident_id"])
    except (ValueError, KeyError, TypeError):
        raise BreachbookError(f"{audience}: no incident_id in it") from None
    return incident_id, run_id


def owed_letters(run: Path) -> dict[str, list[str]]:
    """Obligation -> customer ids owed its letter, as the run's assessment wrote them."""
    folder = run / "recipients"
    return {
        path.stem: path.read_text(encoding="utf-8").split() for path in sorted(folder.glob("*.txt"))
    }


def letter_status(run: Path, ledger: Ledger) -> LetterStatus:
    incident_id, run_id = run_identity(run)
    found = LetterStatus(incident_id, run_id)
    items = {item.key: item for item in ledger.items(incident_id, DELIVER_STEP)}
    for rule_id, customer_ids in owed_letters(run).items():
        record = ledger.get_record(incident_id, run_id, FOR_POST, rule_id)
        by_post = set(record["customer_ids"]) if isinstance(record, dict) else set()
        for customer_id in customer_ids:
            key = f"{rule_id}/{customer_id}"
            item = items.get(key)
            if customer_id in by_post:
                found.for_post.append(key)
            elif item is None or item.status is ItemStatus.RESTORED:
                found.unsent.append(key)
            elif item.status is ItemStatus.DONE:
                found.sent.append(key)
            elif item.status is ItemStatus.FAILED:
                reply = item.details.get("reply")
                found.failed[key] = (
                    f"reply {reply}" if reply else str(item.details.get("error", ""))
                )
            else:
                found.unknown.append(key)
    return found
