"""Preserve: collect the evidence for legal into a bundle with a signed chain of custody.

prepare reads every source once and streams it into the run folder's bundle (`evidence/`):
each item hashed and, unless a drill leaves contents out, encrypted (the vault), each with a
signed custody record; a source that fails is recorded as failed and the rest is collected.
apply (LIVE) transfers each item's sealed bytes, and the manifest, to the evidence store,
and records the transfer. Nothing is ever read twice, and no plaintext copy is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from breachbook.actions.base import Action, ActionArgs, Prepared, register, require
from breachbook.collectors import find_files, ledger_entries, read_file, war_room_transcript
from breachbook.context import RunContext
from breachbook.custody import MANIFEST as BUNDLE_MANIFEST
from breachbook.custody import Bundle, Event, record_hash
from breachbook.errors import BreachbookError
from breachbook.models import ExposedTable
from breachbook.ports import Changed, Check, Verdict, not_configured

EVIDENCE_SETTING = (
    "set BREACHBOOK_EVIDENCE_DIR (a folder) or BREACHBOOK_EVIDENCE_BUCKET (S3, write-once)"
)
BUNDLE = "evidence"
MANIFEST = f"{BUNDLE}/{BUNDLE_MANIFEST}"
INCIDENT_ITEM = "incident-record"
LEDGER_ITEM = "ledger"
WAR_ROOM_ITEM = "war-room-transcript"
EVIDENCE = "evidence"
TARGETS = "targets"
CLOSED = "manifest-closed"
GIB = 1024**3


class FileSource(ActionArgs):
    """Files under a folder (logs), matched by a glob, within size limits."""

    root: Path
    glob: str = "**/*"
    max_file_bytes: int = Field(default=4 * GIB, gt=0)
    max_total_bytes: int = Field(default=64 * GIB, gt=0)


class QuerySource(ActionArgs):
    """A query whose result rows are evidence (pg_stat_activity, role grants, access logs)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    sql: str = Field(min_length=1)


class S3Source(ActionArgs):
    """Objects under a prefix of a bucket (CloudTrail, load-balancer or application logs)."""

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    max_total_bytes: int = Field(default=64 * GIB, gt=0)


class SnapshotArgs(ActionArgs):
    tables: list[ExposedTable]
    include_incident_record: bool = True
    include_ledger: bool = True
    files: list[FileSource] = []
    queries: list[QuerySource] = []
    s3: list[S3Source] = []
    volumes: list[str] = []
    """EBS volumes to snapshot (LIVE; a drill checks with DryRun), recorded by snapshot id."""
    include_war_room: bool = True
    """The war-room messages queued so far (`breachbook.warroom`), when there are any."""
    legal_hold: bool = True
    retention: timedelta = timedelta(days=7 * 365)
    """How long a write-once store (BREACHBOOK_EVIDENCE_BUCKET) keeps each transferred item
    undeletable, as an ISO 8601 duration (P7Y, P2555D); default 7 years."""


class Item(BaseModel):
    """One evidence item as collected, kept as a run record for the transferring step."""

    item_id: str
    source: str
    sha256: str = ""
    size: int = 0
    blob: str | None = None
    failed: str | None = None


class Targets(BaseModel):
    items: list[str]


class Closed(BaseModel):
    """The bundle's closing record, kept in the ledger too: the anchored audit trail then
    proves where the manifest ended when the collection finished."""

    seq: int
    record_sha256: str


def _item(ctx: RunContext, item_id: str) -> Item:
    found = ctx.journal.get(EVIDENCE, item_id, Item)
    if found is None:
        raise BreachbookError(f"evidence item {item_id} has not been collected in this run")
    return found


def _incident_record(ctx: RunContext) -> Iterator[bytes]:
    yield from read_file(ctx.incident_file)


class _Collection:
    """One prepare: the bundle, the items already in it (a resumed run), what is collected."""

    def __init__(self, ctx: RunContext, legal_hold: bool) -> None:
        policy = ctx.evidence
        if policy is None:
            raise BreachbookError("this run has no evidence policy (built by the wiring)")
        self.ctx = ctx
        self.bundle = Bundle(ctx.workspace.path(BUNDLE), policy.signer, policy.key)
        self.order: list[str] = []
        self.done: set[str] = set()
        self.total = 0
        if self.bundle.manifest.is_file():
            self.done = {
                str(r.get("item"))
                for r in self.bundle.records()
                if r.get("event") == Event.COLLECTED
            }
        else:
            self.bundle.append(
                Event.OPENED,
                incident_id=ctx.incident.id,
                run_id=ctx.run_id,
                mode=policy.mode,
                banner=ctx.workspace.banner or "",
                contents=policy.contents.value,
                evidence_key_id=policy.key.key_id if policy.key else None,
                legal_hold=legal_hold,
                opened_by=ctx.actor,
                at=self.now(),
            )

    def now(self) -> str:
        return self.ctx.connectors.clock.now().isoformat()

    def take(self, item_id: str, source: str, chunks: Iterator[bytes]) -> None:
        self.order.append(item_id)
        if item_id in self.done:
            _close(chunks)
            return
        try:
            record, stored = self.bundle.collect(
                item_id, source, self.ctx.actor, self.now(), chunks
            )
        finally:
            _close(chunks)
        item = Item(item_id=item_id, source=source)
        if stored is None:
            item.failed = str(record["error"])
        else:
            item.sha256, item.size, item.blob = stored.sha256, stored.size, stored.blob
            self.total += stored.size
        self.ctx.journal.put(EVIDENCE, item_id, item)

    def refuse(self, item_id: str, source: str, reason: str) -> None:
        self.take(item_id, source, _failing(reason))


def _failing(reason: str) -> Iterator[bytes]:
    raise BreachbookError(reason)
    yield b""  # pragma: no cover


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


@register
class SnapshotEvidence(Action[SnapshotArgs]):
    name = "evidence.snapshot"
    summary = (
        "Collect the evidence (exposed tables in one snapshot, query results, log files, the "
        "incident record, the ledger) into an encrypted bundle with a signed chain of custody."
    )
    changes = "transfers the sealed evidence bundle to the evidence store"
    args_model = SnapshotArgs

    def targets(self, args: SnapshotArgs, ctx: RunContext) -> list[str]:
        found = ctx.journal.get(EVIDENCE, TARGETS, Targets)
        return found.items if found else []

    def prepare(self, args: SnapshotArgs, ctx: RunContext) -> Prepared:
        run = _Collection(ctx, args.legal_hold)
        if args.include_incident_record:
            run.take(INCIDENT_ITEM, str(ctx.incident_file), _incident_record(ctx))
        self._database(args, ctx, run)
        for files in args.files:
            self._files(files, run)
        for objects in args.s3:
            self._objects(objects, ctx, run)
        for volume in args.volumes:
            run.order.append(f"ebs:{volume}")
            ctx.journal.put(
                EVIDENCE,
                f"ebs:{volume}",
                Item(item_id=f"ebs:{volume}", source=f"EBS volume {volume}"),
            )
        if args.include_ledger:
            ledger = ctx.journal.ledger
            run.take(
                LEDGER_ITEM,
                f"audit ledger of incident {ctx.incident.id}",
                ledger_entries(ledger, ctx.incident.id),
            )
        transcript = war_room_transcript(ctx.journal.ledger, ctx.incident.id)
        if args.include_war_room and transcript is not None:
            run.take(
                WAR_ROOM_ITEM,
                f"war-room transcript of incident {ctx.incident.id} (the ledger's message queue)",
                transcript,
            )
        closed = run.bundle.close(ctx.actor, run.now())
        ctx.journal.put(
            EVIDENCE,
            CLOSED,
            Closed(seq=closed["seq"], record_sha256=record_hash(closed)),
        )
        ctx.journal.put(EVIDENCE, TARGETS, Targets(items=run.order))
        failed = sum(1 for r in run.bundle.records() if r.get("event") == Event.FAILED)
        return Prepared(
            [MANIFEST],
            {
                "evidence_items": len(run.order),
                "evidence_bytes": run.total,
                "evidence_items_failed": failed,
            },
        )

    def _database(self, args: SnapshotArgs, ctx: RunContext, run: _Collection) -> None:
        tables = [(t.table, list(t.columns)) for t in args.tables]
        queries = [(q.name, q.sql) for q in args.queries]
        wanted = [f"table:{t}" for t, _ in tables] + [f"query:{n}" for n, _ in queries]
        if not wanted:
            return
        source = ctx.connectors.evidence_source
        if source is None:
            for item_id in wanted:
                run.refuse(
                    item_id, "no database", "no evidence database: set BREACHBOOK_CUSTOMERS_URL"
                )
            return
        seen: list[str] = []
        try:
            for read in source.read_consistently(tables, queries):
                seen.append(read.item_id)
                run.take(read.item_id, read.source, read.chunks)
        except BreachbookError as exc:
            for item_id in wanted:
                if item_id not in seen:
                    run.refuse(item_id, source.describe(), str(exc))

    def _objects(self, objects: S3Source, ctx: RunContext, run: _Collection) -> None:
        where = f"s3://{objects.bucket}/{objects.prefix}"
        cloud = ctx.connectors.cloud_evidence
        if cloud is None:
            run.refuse(where, where, "no cloud evidence connector: set BREACHBOOK_AWS_REGION")
            return
        try:
            for read in cloud.read_objects(objects.bucket, objects.prefix, objects.max_total_bytes):
                run.take(read.item_id, read.source, read.chunks)
        except BreachbookError as exc:
            run.refuse(where, where, str(exc))

    def _files(self, files: FileSource, run: _Collection) -> None:
        try:
            found = find_files(files.root, files.glob, files.max_file_bytes, files.max_total_bytes)
        except BreachbookError as exc:
            run.refuse(f"files:{files.root}", str(files.root), str(exc))
            return
        for item in found:
            item_id = f"file:{item.path}"
            if item.refused:
                run.refuse(item_id, str(item.path), f"not collected: {item.refused}")
            else:
                run.take(
                    item_id,
                    f"file {item.path} ({item.size} bytes when listed)",
                    read_file(item.path),
                )

    def preflight(self, args: SnapshotArgs, target: str, ctx: RunContext) -> Check:
        item = _item(ctx, target)
        if target.startswith("ebs:"):
            cloud = ctx.connectors.cloud_evidence
            if cloud is None:
                return not_configured("cloud evidence", "set BREACHBOOK_AWS_REGION")
            return cloud.check_snapshot(target.removeprefix("ebs:"))
        if item.failed is not None:
            return Check.failed(f"not collected: {item.failed}", "read once into the vault")
        store = ctx.connectors.evidence
        if store is None:
            return not_configured("evidence store", EVIDENCE_SETTING)
        writable = store.check_writable()
        if writable.verdict != Verdict.VERIFIED:
            return writable
        kept = "sealed in the run's bundle" if item.blob else "hashed, contents left out"
        return Check.verified(
            f"read {item.size} bytes once (sha256 {item.sha256[:12]}...), {kept}; {writable.reason}",
            f"read once into the vault; {writable.method}",
        )

    def would(self, args: SnapshotArgs, target: str, ctx: RunContext) -> str:
        if target.startswith("ebs:"):
            return f"snapshot {target.removeprefix('ebs:')} and record the snapshot id"
        item = _item(ctx, target)
        return f"transfer {target} ({item.size} bytes, sha256 {item.sha256[:12]}...) sealed"

    def apply(self, args: SnapshotArgs, target: str, ctx: RunContext) -> Changed:
        if target.startswith("ebs:"):
            return self._snapshot(target, ctx)
        store = require(ctx.connectors.evidence, "evidence store", EVIDENCE_SETTING)
        item = _item(ctx, target)
        if item.failed is not None:
            raise BreachbookError(f"evidence item {target} was not collected: {item.failed}")
        if item.blob is None:
            raise BreachbookError(f"evidence item {target} has no sealed contents to transfer")
        policy = ctx.evidence
        assert policy is not None
        bundle = Bundle(ctx.workspace.path(BUNDLE), policy.signer, policy.key)
        prefix = f"{ctx.incident.id}/{ctx.run_id}"
        sealed = bundle.folder / item.blob
        expected = _sha_of_file(sealed)
        until = ctx.connectors.clock.now() + args.retention
        stored = store.put(f"{prefix}/{item.blob}", _file_chunks(sealed), until, args.legal_hold)
        if stored != expected:
            raise BreachbookError(f"evidence item {target}: the store kept other bytes than sealed")
        bundle.append(
            Event.TRANSFERRED,
            item=target,
            sha256=item.sha256,
            by=ctx.actor,
            at=ctx.connectors.clock.now().isoformat(),
            detail=f"sealed item to {store.describe()} as {prefix}/{item.blob}",
        )
        store.put(
            f"{prefix}/{BUNDLE_MANIFEST}", _file_chunks(bundle.manifest), until, args.legal_hold
        )
        return Changed({"sha256": item.sha256, "size_bytes": item.size})

    def _snapshot(self, target: str, ctx: RunContext) -> Changed:
        cloud = require(
            ctx.connectors.cloud_evidence, "cloud evidence", "set BREACHBOOK_AWS_REGION"
        )
        policy = ctx.evidence
        assert policy is not None
        volume = target.removeprefix("ebs:")
        snapshot = cloud.create_snapshot(
            volume, f"breachbook evidence, incident {ctx.incident.id}, run {ctx.run_id}"
        )
        Bundle(ctx.workspace.path(BUNDLE), policy.signer, policy.key).append(
            Event.SNAPSHOTTED,
            item=target,
            volume=volume,
            snapshot_id=snapshot,
            by=ctx.actor,
            at=ctx.connectors.clock.now().isoformat(),
        )
        return Changed({"snapshot_id": snapshot})


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            yield chunk


def _sha_of_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for chunk in _file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()
