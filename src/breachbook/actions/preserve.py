"""Preserve: snapshot the evidence for legal with a chain of custody.

prepare reads and hashes each item (reads only), keeps each hash as a run record and writes
the manifest; apply stores the bytes in the evidence store and proves they are the bytes
that were hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from breachbook.actions.base import Action, ActionArgs, Prepared, register, require
from breachbook.connectors.customers_sql import snapshot_digest
from breachbook.context import RunContext
from breachbook.errors import BreachbookError
from breachbook.ledger import GENESIS
from breachbook.models import ExposedTable
from breachbook.ports import Changed, Check, Verdict, not_configured

EVIDENCE_SETTING = "set BREACHBOOK_EVIDENCE_DIR"
MANIFEST = "evidence/manifest.json"
INCIDENT_ITEM = "incident-record"


class SnapshotArgs(ActionArgs):
    tables: list[ExposedTable]
    include_incident_record: bool = True


EVIDENCE = "evidence"


class Item(BaseModel):
    """One evidence item as read and hashed, kept as a run record for the storing step."""

    item_id: str
    source: str
    sha256: str
    size: int


def _item(ctx: RunContext, item_id: str) -> Item:
    found = ctx.journal.get(EVIDENCE, item_id, Item)
    if found is None:
        raise BreachbookError(f"evidence item {item_id} has not been read in this run")
    return found


def _chunks(item_id: str, args: SnapshotArgs, ctx: RunContext) -> Iterator[bytes]:
    if item_id == INCIDENT_ITEM:
        yield ctx.incident_file.read_bytes()
        return
    table = next(t for t in args.tables if f"table:{t.table}" == item_id)
    yield from ctx.connectors.customers.table_snapshot(table.table, table.columns)


@register
class SnapshotEvidence(Action[SnapshotArgs]):
    name = "evidence.snapshot"
    summary = "Snapshot what was exposed, hashed, with one chain-of-custody record per item."
    changes = "writes the snapshot bytes to the evidence store"
    args_model = SnapshotArgs

    def targets(self, args: SnapshotArgs, ctx: RunContext) -> list[str]:
        items = [f"table:{t.table}" for t in args.tables]
        return [*items, INCIDENT_ITEM] if args.include_incident_record else items

    def prepare(self, args: SnapshotArgs, ctx: RunContext) -> Prepared:
        records: list[dict[str, Any]] = []
        total = 0
        prev = GENESIS
        for item_id in self.targets(args, ctx):
            sha, size = snapshot_digest(_chunks(item_id, args, ctx))
            source = (
                str(ctx.incident_file)
                if item_id == INCIDENT_ITEM
                else f"{ctx.connectors.customers.describe()} {item_id}"
            )
            ctx.journal.put(
                EVIDENCE, item_id, Item(item_id=item_id, source=source, sha256=sha, size=size)
            )
            total += size
            record = {
                "item_id": item_id,
                "source": source,
                "collector": ctx.actor,
                "read_at": ctx.connectors.clock.now().isoformat(),
                "sha256": sha,
                "size_bytes": size,
                "prev_record_sha256": prev,
            }
            prev = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
            record["record_sha256"] = prev
            records.append(record)
        store = ctx.connectors.evidence
        ctx.workspace.write_json(
            MANIFEST,
            {
                "incident_id": ctx.incident.id,
                "run_id": ctx.run_id,
                "run": ctx.workspace.banner or "",
                "store": store.describe() if store else None,
                "items": records,
                "note": "Hashes are of the bytes read; the bytes themselves go only to the evidence store.",
            },
        )
        return Prepared([MANIFEST], {"evidence_items": len(records), "evidence_bytes": total})

    def preflight(self, args: SnapshotArgs, target: str, ctx: RunContext) -> Check:
        item = _item(ctx, target)
        store = ctx.connectors.evidence
        if store is None:
            return not_configured("evidence store", EVIDENCE_SETTING)
        writable = store.check_writable()
        if writable.verdict != Verdict.VERIFIED:
            return writable
        return Check.verified(
            f"read {item.size} bytes (sha256 {item.sha256[:12]}...); {writable.reason}",
            f"read and hash; {writable.method}",
        )

    def would(self, args: SnapshotArgs, target: str, ctx: RunContext) -> str:
        item = _item(ctx, target)
        return f"store {target} ({item.size} bytes, sha256 {item.sha256[:12]}...)"

    def apply(self, args: SnapshotArgs, target: str, ctx: RunContext) -> Changed:
        store = require(ctx.connectors.evidence, "evidence store", EVIDENCE_SETTING)
        expected = _item(ctx, target)
        stored = store.put(target, _chunks(target, args, ctx))
        if stored != expected.sha256:
            raise BreachbookError(f"evidence item {target} changed between hashing and storing")
        return Changed({"sha256": stored, "size_bytes": expected.size})
