"""The ledger: the run's memory, idempotency per item, and the audit trail legal relies on.

Three tables behind one SQLAlchemy engine (SQLite file by default, PostgreSQL by URL):

- `ledger_entries`: the audit trail. One hash chain per incident: each entry carries the
  SHA-256 of its own content and of the incident's entry before it, so an edited, deleted or
  reordered entry breaks the chain and `breachbook audit verify` says where. A chain grows under
  a lock on its own head row, so one incident's writes never wait for another's (on
  PostgreSQL; a SQLite file has one writer at a time whatever the incident).
- `ledger_items`: one row per unit of side effect (one letter, one role locked), claimed with an
  atomic insert before it is acted on, so two runs can never act twice on one key.
- `ledger_records`: typed, versioned run state (assessment, rendered-letter digests, evidence
  hashes, statement, waits, decisions, incident facts) that any worker reads back.

Nothing here may hold customer personal data: details and records carry ids, counts, hashes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from breachbook.clock import Clock
from breachbook.errors import BreachbookError
from breachbook.settings import AUTOMATION as AUTOMATION  # noqa: PLC0414 (re-exported)

GENESIS = "0" * 64
RECORD_RETRIES = 5
KEYS_PER_QUERY = 500
"""Item keys asked about in one IN list: within SQLite's and PostgreSQL's parameter limits."""


class LedgerError(BreachbookError):
    """The ledger cannot be opened where it was said to be."""


class ItemStatus(StrEnum):
    """The latest outcome of one unit of side effect."""

    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"
    RESTORED = "restored"


RECLAIMABLE = (ItemStatus.FAILED, ItemStatus.RESTORED)


class Base(DeclarativeBase):
    pass


class LedgerRow(Base):
    __tablename__ = "ledger_entries"

    incident_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    run_id: Mapped[str] = mapped_column(String(64))
    step_id: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(256))
    phase: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class ChainHead(Base):
    """The last entry of one incident's chain; its row is the lock that chain grows under."""

    __tablename__ = "ledger_heads"

    incident_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[str] = mapped_column(String(64))


class ItemRow(Base):
    __tablename__ = "ledger_items"

    incident_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    item_key: Mapped[str] = mapped_column(String(256), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[str] = mapped_column(String(40))
    done_order: Mapped[int | None] = mapped_column(Integer, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prior: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RecordRow(Base):
    __tablename__ = "ledger_records"

    incident_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[str] = mapped_column(String(40))
    data: Mapped[Any] = mapped_column(JSON)


ENTRIES = cast(Table, LedgerRow.__table__)
HEADS = cast(Table, ChainHead.__table__)
ITEMS = cast(Table, ItemRow.__table__)
RECORDS = cast(Table, RecordRow.__table__)

# The write paths run prebuilt Core statements with bound parameters: built once, not per call.
READ_HEAD = select(HEADS.c.seq, HEADS.c.entry_hash).where(HEADS.c.incident_id == bindparam("head"))
READ_HEAD_LOCKED = READ_HEAD.with_for_update()
MOVE_HEAD = (
    HEADS.update()
    .where(HEADS.c.incident_id == bindparam("head"))
    .values(seq=bindparam("new_seq"), entry_hash=bindparam("new_hash"))
)
_THIS_ITEM = and_(
    ITEMS.c.incident_id == bindparam("incident"),
    ITEMS.c.step_id == bindparam("step"),
    ITEMS.c.item_key == bindparam("key"),
)
RECLAIM = (
    ITEMS.update()
    .where(_THIS_ITEM, ITEMS.c.status.in_([s.value for s in RECLAIMABLE]))
    .values(
        status=ItemStatus.CLAIMED.value,
        generation=ITEMS.c.generation + 1,
        run_id=bindparam("run"),
        updated_at=bindparam("now"),
    )
    .returning(ITEMS.c.generation)
)
TAKE_OVER = (
    ITEMS.update()
    .where(
        _THIS_ITEM,
        or_(
            ITEMS.c.status == ItemStatus.UNKNOWN.value,
            and_(
                ITEMS.c.status == ItemStatus.CLAIMED.value,
                or_(
                    ITEMS.c.run_id == bindparam("run"),
                    ITEMS.c.updated_at <= bindparam("stale_before"),
                ),
            ),
        ),
    )
    .values(
        status=ItemStatus.CLAIMED.value,
        generation=ITEMS.c.generation + 1,
        run_id=bindparam("run"),
        updated_at=bindparam("now"),
    )
    .returning(ITEMS.c.generation)
)
SETTLE = (
    ITEMS.update()
    .where(_THIS_ITEM, ITEMS.c.generation == bindparam("gen"))
    .values(
        status=bindparam("new_status"),
        updated_at=bindparam("now"),
        details=bindparam("new_details", type_=JSON),
        done_order=bindparam("order"),
    )
)
SETTLE_WITH_PRIOR = SETTLE.values(prior=bindparam("new_prior", type_=JSON))
_THIS_RECORD = and_(
    RECORDS.c.incident_id == bindparam("incident"),
    RECORDS.c.scope == bindparam("scope"),
    RECORDS.c.kind == bindparam("kind"),
    RECORDS.c.key == bindparam("key"),
)
LATEST_RECORD = (
    select(RECORDS.c.data).where(_THIS_RECORD).order_by(RECORDS.c.version.desc()).limit(1)
)
LAST_RECORD_VERSION = select(func.coalesce(func.max(RECORDS.c.version), 0)).where(_THIS_RECORD)
RESTORED = (
    ITEMS.update()
    .where(
        _THIS_ITEM,
        ITEMS.c.generation == bindparam("gen"),
        ITEMS.c.status == ItemStatus.DONE.value,
    )
    .values(status=ItemStatus.RESTORED.value, updated_at=bindparam("now"))
)


def _item_params(claim: Claim) -> dict[str, Any]:
    return {
        "incident": claim.incident_id,
        "step": claim.step_id,
        "key": claim.key,
        "gen": claim.generation,
    }


def _claimed_again(claim: Claim) -> LedgerError:
    return LedgerError(
        f"item {claim.step_id}/{claim.key} was claimed again before its outcome was recorded"
    )


def _counted(result: Any) -> CursorResult[Any]:
    """A write's result, whose row count decides what happens next."""
    return cast(CursorResult[Any], result)


@dataclass(frozen=True)
class Entry:
    incident_id: str
    run_id: str
    step_id: str
    target: str
    phase: str
    actor: str
    mode: str
    outcome: str
    details: Mapping[str, Any]


@dataclass(frozen=True)
class ChainProblem:
    incident_id: str
    seq: int
    problem: str


@dataclass(frozen=True)
class Anchor:
    """A chain head recorded elsewhere (plan.json): catches entries cut from the end.

    Unsigned, and usually kept beside the ledger: it proves nothing against someone who can
    write both. The signed anchors of `breachbook.anchors` do."""

    incident_id: str
    seq: int
    entry_hash: str


@dataclass
class ChainSummary:
    """What a walk saw of one incident's chain: enough to check anchors against it."""

    incident_id: str
    last_seq: int = 0
    last_hash: str = GENESIS
    first_hash: str | None = None
    run_ids: set[str] = field(default_factory=set)
    hashes: dict[int, str] = field(default_factory=dict)
    """The entry hash at each sequence number the walk was asked to watch (if present)."""


@dataclass(frozen=True)
class Claim:
    """The right to act once on one item, held from the claim until its outcome is recorded."""

    incident_id: str
    step_id: str
    key: str
    generation: int


@dataclass(frozen=True)
class Item:
    """One item's latest state, as read back."""

    step_id: str
    key: str
    status: ItemStatus
    generation: int
    run_id: str
    done_order: int | None
    details: dict[str, Any]
    prior: dict[str, Any] | None
    updated_at: str = ""
    """When its latest outcome was recorded (ISO 8601, the ledger's clock)."""


def _content_hash(seq: int, row: Mapping[str, Any], prev_hash: str) -> str:
    canonical = json.dumps(
        {**{name: row[name] for name in HASHED_FIELDS}, "seq": seq, "prev_hash": prev_hash},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


HASHED_FIELDS = (
    "incident_id",
    "run_id",
    "step_id",
    "target",
    "phase",
    "actor",
    "at",
    "mode",
    "outcome",
    "details",
)


def _plain(data: Any) -> Any:
    """JSON-safe copy (dates become strings), as the database will hand it back."""
    return json.loads(json.dumps(data, default=str))


SNAPSHOT_READ = "breachbook_snapshot_read"
"""Execution option of a long read (a whole chain streamed out): on SQLite it begins a deferred
transaction, a WAL snapshot that never holds the write lock while its consumer works."""


WAL_SWITCH_SECONDS = 30.0
"""How long a connection retries switching a new ledger file to WAL while others open it."""


def _use_wal(cur: Any) -> None:
    """Put the file in WAL mode (a setting the file keeps; an in-memory ledger stays in
    memory). Switching takes an exclusive lock for which SQLite returns "database is locked"
    at once, without its busy wait, so two runs opening a new ledger together retry here
    instead of failing."""
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        try:
            if cur.execute("PRAGMA journal_mode=WAL").fetchone()[0] in ("wal", "memory"):
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("the ledger file could not be switched to WAL mode")
        time.sleep(0.02)


def _engine_for(url: str, synced: bool) -> Engine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        synchronous = "FULL" if synced else "NORMAL"

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _use_wal(cur)
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            snapshot = conn.get_execution_options().get(SNAPSHOT_READ, False)
            conn.exec_driver_sql("BEGIN" if snapshot else "BEGIN IMMEDIATE")

    return engine


def _lock_key(name: str) -> int:
    """A named lock's PostgreSQL advisory lock key (64 bits of the name's SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


SCHEMA_LOCK = 0x6272_6561_6368
"""PostgreSQL advisory lock key held while the ledger's tables are created ("breach")."""


class Ledger:
    """Append-only audit chains, atomic item claims and versioned run records."""

    def __init__(
        self, url: str, clock: Clock, create: bool = True, synced_each_commit: bool = True
    ) -> None:
        """Open (and by default create) the ledger; `create=False` only opens an existing one.

        A SQLite ledger waits for the disk at each commit (synchronous=FULL), so a power cut
        never loses a claim or an entry that was acknowledged; `synced_each_commit=False`
        (a tabletop exercise's own ledger, see ModeProfile) does not (synchronous=NORMAL:
        still consistent and chained, but the last commits may be lost to a power cut)."""
        self.url = url
        self._clock = clock
        parsed = make_url(url)
        where = parsed.render_as_string(hide_password=True)
        database = parsed.database or ""
        if not create and parsed.get_backend_name() == "sqlite" and not Path(database).is_file():
            raise LedgerError(f"{where}: no ledger file there")
        self._engine = _engine_for(url, synced_each_commit)
        self._dialect = self._engine.dialect.name
        if create:
            with self._engine.begin() as conn:
                if self._dialect == "postgresql":
                    # two runs starting at once on a new ledger would both create the tables
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
                Base.metadata.create_all(conn)
        elif not inspect(self._engine).has_table(LedgerRow.__tablename__):
            self._engine.dispose()
            raise LedgerError(f"{where}: no ledger there (table {LedgerRow.__tablename__} missing)")

    def close(self) -> None:
        self._engine.dispose()

    def is_held(self, name: str) -> bool:
        """Whether a process holds the lock `name` (`held`) now; on SQLite: never."""
        if self._dialect != "postgresql":
            return False
        key = _lock_key(name)
        with self._engine.connect() as conn:
            free = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            if free:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            conn.commit()
        return not free

    @contextmanager
    def held(self, name: str) -> Iterator[None]:
        """Hold the lock `name` while the block runs: one process at a time across every
        machine sharing a PostgreSQL ledger (an advisory lock on a connection of its own,
        freed when that process dies); a SQLite ledger is one machine's, where it holds
        nothing."""
        if self._dialect != "postgresql":
            yield
            return
        key = _lock_key(name)
        with self._engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()

    def _now(self) -> str:
        return self._clock.now().astimezone(UTC).isoformat(timespec="microseconds")

    def _insert(self, table: Table) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING in the engine's dialect."""
        dialect = postgresql if self._dialect == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    # -- the audit chain -------------------------------------------------------------------

    def append(self, entry: Entry) -> int:
        """Write one entry durably and return its sequence number in its incident's chain."""
        return self.append_many([entry])[-1]

    def append_many(self, entries: list[Entry]) -> list[int]:
        """Write entries in one transaction; each incident's chain head is locked while it grows."""
        with self._engine.begin() as conn:
            return self._chain(conn, entries)

    def _chain(self, conn: Connection, entries: list[Entry]) -> list[int]:
        """Append entries to their chains inside the caller's transaction: lock each chain's
        head, insert the entries, move the head. Three statements for one incident."""
        rows = [
            {
                "incident_id": entry.incident_id,
                "run_id": entry.run_id,
                "step_id": entry.step_id,
                "target": entry.target,
                "phase": entry.phase,
                "actor": entry.actor,
                "mode": entry.mode,
                "outcome": entry.outcome,
                "details": _plain(dict(entry.details)),
            }
            for entry in entries
        ]
        heads: dict[str, tuple[int, str]] = {}
        written = []
        for row in rows:
            incident_id = row["incident_id"]
            if incident_id not in heads:
                heads[incident_id] = self._lock_head(conn, incident_id)
            seq, prev = heads[incident_id]
            seq += 1
            row["at"] = self._now()
            digest = _content_hash(seq, row, prev)
            row.update(seq=seq, prev_hash=prev, entry_hash=digest)
            heads[incident_id] = (seq, digest)
            written.append(seq)
        conn.execute(ENTRIES.insert(), rows)
        conn.execute(
            MOVE_HEAD,
            [{"head": i, "new_seq": seq, "new_hash": h} for i, (seq, h) in heads.items()],
        )
        return written

    def _lock_head(self, conn: Connection, incident_id: str) -> tuple[int, str]:
        """The chain's head, locked until the transaction ends (on SQLite the whole file is)."""
        read = READ_HEAD_LOCKED if self._dialect == "postgresql" else READ_HEAD
        found = conn.execute(read, {"head": incident_id}).first()
        if found is None:
            conn.execute(
                self._insert(HEADS).values(incident_id=incident_id, seq=0, entry_hash=GENESIS)
            )
            found = conn.execute(read, {"head": incident_id}).one()
        return found[0], found[1]

    def entries(self, incident_id: str | None = None) -> Iterator[LedgerRow]:
        query = select(LedgerRow).order_by(LedgerRow.incident_id, LedgerRow.seq)
        if incident_id is not None:
            query = query.where(LedgerRow.incident_id == incident_id)
        reading = self._engine.connect().execution_options(**{SNAPSHOT_READ: True})
        with reading, Session(bind=reading) as session:
            yield from session.scalars(query.execution_options(yield_per=2000))

    def head(self, incident_id: str) -> tuple[int, str]:
        """Sequence number and hash of an incident's last entry."""
        query = select(ChainHead.seq, ChainHead.entry_hash).where(
            ChainHead.incident_id == incident_id
        )
        with Session(self._engine) as session:
            row = session.execute(query).first()
        return (row[0], row[1]) if row else (0, GENESIS)

    def entry_hash(self, incident_id: str, seq: int) -> str | None:
        """The stored hash of one entry, or None if there is no such entry."""
        query = select(ENTRIES.c.entry_hash).where(
            ENTRIES.c.incident_id == incident_id, ENTRIES.c.seq == seq
        )
        with self._engine.connect() as conn:
            found: str | None = conn.execute(query).scalar_one_or_none()
        return found

    def heads(self) -> dict[str, tuple[int, str]]:
        """Every incident's chain head."""
        with Session(self._engine) as session:
            return {
                head.incident_id: (head.seq, head.entry_hash)
                for head in session.scalars(select(ChainHead))
            }

    def verify(
        self, anchor: Anchor | None = None, incident_id: str | None = None
    ) -> list[ChainProblem]:
        """Recompute every incident's chain (or one); an empty list means intact and in order.

        With an anchor the named chain must also still hold that entry unchanged, and the
        head row must agree with the last entry, which catches entries cut from the end.
        """
        watched = {anchor.seq} if anchor is not None else set()
        problems, chains = self.walk(
            incident_id,
            lambda name: watched if anchor is not None and name == anchor.incident_id else set(),
        )
        if anchor is not None and anchor.seq != 0:
            chain = chains.get(anchor.incident_id)
            if chain is None or chain.hashes.get(anchor.seq) != anchor.entry_hash:
                problems.append(
                    ChainProblem(
                        anchor.incident_id, anchor.seq, "the anchored entry is missing or changed"
                    )
                )
        return problems

    def walk(
        self,
        incident_id: str | None = None,
        watch: Callable[[str], set[int]] = lambda _incident: set(),
    ) -> tuple[list[ChainProblem], dict[str, ChainSummary]]:
        """Recompute every incident's chain (or one) in one pass, and summarise each.

        Returns the problems (edited, missing, reordered entries; a head row that disagrees
        with the last entry or is missing) and, per incident, its first and last hashes, the
        runs that wrote it and the hashes at the sequence numbers `watch(incident)` names."""
        problems: list[ChainProblem] = []
        chains: dict[str, ChainSummary] = {}
        wanted: dict[str, set[int]] = {}
        for row in self.entries(incident_id):
            where = row.incident_id
            chain = chains.get(where)
            if chain is None:
                chain = chains[where] = ChainSummary(where)
                wanted[where] = watch(where)
            expected_seq = chain.last_seq + 1
            if row.seq != expected_seq:
                problems.append(
                    ChainProblem(
                        where, row.seq, f"entries {expected_seq}..{row.seq - 1} are missing"
                    )
                )
            if row.prev_hash != chain.last_hash:
                problems.append(
                    ChainProblem(
                        where, row.seq, "does not follow the entry before it (deleted or reordered)"
                    )
                )
            as_written = {name: getattr(row, name) for name in HASHED_FIELDS}
            if _content_hash(row.seq, as_written, row.prev_hash) != row.entry_hash:
                problems.append(
                    ChainProblem(where, row.seq, "content was edited after it was written")
                )
            if chain.first_hash is None:
                chain.first_hash = row.entry_hash
            if row.seq in wanted[where]:
                chain.hashes[row.seq] = row.entry_hash
            chain.run_ids.add(row.run_id)
            chain.last_seq, chain.last_hash = row.seq, row.entry_hash
        heads = self.heads()
        for head_incident, head in sorted(heads.items()):
            if incident_id is not None and head_incident != incident_id:
                continue
            chain = chains.get(head_incident) or ChainSummary(head_incident)
            if (chain.last_seq, chain.last_hash) != head:
                problems.append(
                    ChainProblem(
                        head_incident, head[0], "the chain's last entries are missing or changed"
                    )
                )
        for name, chain in sorted(chains.items()):
            if name not in heads:
                problems.append(
                    ChainProblem(name, chain.last_seq, "the chain's head row is missing")
                )
        return problems, chains

    # -- items: idempotency per unit of side effect ------------------------------------------

    def claim(self, claimant: Entry, key: str) -> Claim | None:
        """Claim one item atomically and audit the claim; None when it is not free.

        Free means never claimed, or its latest outcome is failed or restored. The claim
        and its audit entry commit together.
        """
        now = self._now()
        item = {"incident": claimant.incident_id, "step": claimant.step_id, "key": key}
        with self._engine.begin() as conn:
            inserted = _counted(
                conn.execute(
                    self._insert(ITEMS).values(
                        incident_id=claimant.incident_id,
                        step_id=claimant.step_id,
                        item_key=key,
                        status=ItemStatus.CLAIMED.value,
                        generation=1,
                        run_id=claimant.run_id,
                        updated_at=now,
                        details={},
                    )
                )
            )
            generation = 1
            if inserted.rowcount != 1:
                reclaimed = conn.execute(
                    RECLAIM, {**item, "run": claimant.run_id, "now": now}
                ).first()
                if reclaimed is None:
                    return None
                generation = reclaimed[0]
            self._chain(conn, [claimant])
        return Claim(claimant.incident_id, claimant.step_id, key, generation)

    def claim_many(self, claimants: list[tuple[Entry, str]]) -> list[Claim | None]:
        """`claim` for many items in one transaction (one commit, not one per item): each
        result is its Claim, or None when that item is not free."""
        now = self._now()
        found: list[Claim | None] = []
        audited: list[Entry] = []
        insert = self._insert(ITEMS)  # one statement, its compiled form reused for every item
        with self._engine.begin() as conn:
            for claimant, key in claimants:
                row = {
                    "incident_id": claimant.incident_id,
                    "step_id": claimant.step_id,
                    "item_key": key,
                    "status": ItemStatus.CLAIMED.value,
                    "generation": 1,
                    "run_id": claimant.run_id,
                    "updated_at": now,
                    "details": {},
                }
                inserted = _counted(conn.execute(insert, row))
                generation = 1
                if inserted.rowcount != 1:
                    item = {"incident": claimant.incident_id, "step": claimant.step_id, "key": key}
                    reclaimed = conn.execute(
                        RECLAIM, {**item, "run": claimant.run_id, "now": now}
                    ).first()
                    if reclaimed is None:
                        found.append(None)
                        continue
                    generation = reclaimed[0]
                audited.append(claimant)
                found.append(Claim(claimant.incident_id, claimant.step_id, key, generation))
            if audited:
                self._chain(conn, audited)
        return found

    def settle_many(self, outcomes: list[tuple[Claim, ItemStatus, Entry]]) -> None:
        """`settle` for many claimed items in one transaction (no prior state to keep)."""
        if not outcomes:
            return
        with self._engine.begin() as conn:
            seqs = self._chain(conn, [audit for _, _, audit in outcomes])
            now = self._now()
            rows = [
                {
                    **_item_params(claim),
                    "new_status": status.value,
                    "now": now,
                    "new_details": _plain(dict(audit.details)),
                    "order": seq if status is ItemStatus.DONE else None,
                }
                for (claim, status, audit), seq in zip(outcomes, seqs, strict=True)
            ]
            claims = [claim for claim, _, _ in outcomes]
            if conn.dialect.supports_sane_multi_rowcount:  # one executemany, its count summed
                if _counted(conn.execute(SETTLE, rows)).rowcount != len(rows):
                    raise _claimed_again(next(c for c in claims if not self._holds(conn, c)))
                return
            for claim, params in zip(claims, rows, strict=True):
                if _counted(conn.execute(SETTLE, params)).rowcount != 1:
                    raise _claimed_again(claim)

    @staticmethod
    def _holds(conn: Connection, claim: Claim) -> bool:
        """Whether the item is still at the claim's generation (no one took it over)."""
        query = select(ITEMS.c.generation).where(
            ITEMS.c.incident_id == claim.incident_id,
            ITEMS.c.step_id == claim.step_id,
            ITEMS.c.item_key == claim.key,
        )
        return conn.execute(query).scalar_one_or_none() == claim.generation

    def take_over(self, claimant: Entry, key: str, stale_before: str) -> Claim | None:
        """Claim an item whose outcome was never heard: `unknown`, or claimed by this same run
        (an earlier process of it was killed mid-change) or not settled since `stale_before`
        (empty: never). The generation moves on, so the earlier holder can no longer settle
        it; the claim and its audit entry commit together."""
        item = {"incident": claimant.incident_id, "step": claimant.step_id, "key": key}
        params = {**item, "run": claimant.run_id, "now": self._now(), "stale_before": stale_before}
        with self._engine.begin() as conn:
            taken = conn.execute(TAKE_OVER, params).first()
            if taken is None:
                return None
            self._chain(conn, [claimant])
        return Claim(claimant.incident_id, claimant.step_id, key, taken[0])

    def settle(
        self,
        claim: Claim,
        status: ItemStatus,
        audit: Entry,
        prior: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a claimed item's outcome (with the prior state, for undo) and audit it."""
        with self._engine.begin() as conn:
            (seq,) = self._chain(conn, [audit])
            params = {
                **_item_params(claim),
                "new_status": status.value,
                "now": self._now(),
                "new_details": _plain(dict(audit.details)),
                "order": seq if status is ItemStatus.DONE else None,
            }
            if prior is None:
                changed = _counted(conn.execute(SETTLE, params))
            else:
                params["new_prior"] = _plain(dict(prior))
                changed = _counted(conn.execute(SETTLE_WITH_PRIOR, params))
            if changed.rowcount != 1:
                raise _claimed_again(claim)

    def mark_restored(self, claim: Claim, audit: Entry) -> None:
        """A done item whose change was undone becomes `restored` (free to claim again)."""
        with self._engine.begin() as conn:
            changed = _counted(conn.execute(RESTORED, {**_item_params(claim), "now": self._now()}))
            if changed.rowcount == 1:
                self._chain(conn, [audit])

    def items(
        self,
        incident_id: str,
        step_id: str | None = None,
        statuses: tuple[ItemStatus, ...] | None = None,
    ) -> list[Item]:
        query = select(ItemRow).where(ItemRow.incident_id == incident_id)
        if step_id is not None:
            query = query.where(ItemRow.step_id == step_id)
        if statuses is not None:
            query = query.where(ItemRow.status.in_([s.value for s in statuses]))
        with Session(self._engine) as session:
            return [
                Item(
                    step_id=row.step_id,
                    key=row.item_key,
                    status=ItemStatus(row.status),
                    generation=row.generation,
                    run_id=row.run_id,
                    done_order=row.done_order,
                    details=dict(row.details),
                    prior=dict(row.prior) if row.prior is not None else None,
                    updated_at=row.updated_at,
                )
                for row in session.scalars(query.order_by(ItemRow.step_id, ItemRow.item_key))
            ]

    def items_of_step(self, step_id: str, status: ItemStatus) -> list[tuple[str, Item]]:
        """(incident, item) of one step in one status across every incident: what a process
        that restarts must take up again (the alert receiver's runs not started)."""
        query = select(ItemRow).where(ItemRow.step_id == step_id, ItemRow.status == status.value)
        with Session(self._engine) as session:
            return [
                (
                    row.incident_id,
                    Item(
                        step_id=row.step_id,
                        key=row.item_key,
                        status=ItemStatus(row.status),
                        generation=row.generation,
                        run_id=row.run_id,
                        done_order=row.done_order,
                        details=dict(row.details),
                        prior=None,
                    ),
                )
                for row in session.scalars(query)
            ]

    def item_status(self, incident_id: str, step_id: str, key: str) -> ItemStatus | None:
        """One item's latest outcome, or None if it was never claimed."""
        query = select(ITEMS.c.status).where(
            ITEMS.c.incident_id == incident_id,
            ITEMS.c.step_id == step_id,
            ITEMS.c.item_key == key,
        )
        with self._engine.connect() as conn:
            found = conn.execute(query).scalar_one_or_none()
        return None if found is None else ItemStatus(found)

    def item_statuses(
        self, incident_id: str, step_id: str, keys: Sequence[str] | None = None
    ) -> dict[str, ItemStatus]:
        """Every item of one step and its latest outcome, in one query (a re-run's skip list),
        or only the items named by `keys` (a batch asks about its own letters, not the
        million of its step), in queries of KEYS_PER_QUERY keys."""
        where = and_(ItemRow.incident_id == incident_id, ItemRow.step_id == step_id)
        with Session(self._engine) as session:
            if keys is None:
                query = select(ItemRow.item_key, ItemRow.status).where(where)
                return {key: ItemStatus(status) for key, status in session.execute(query)}
            found: dict[str, ItemStatus] = {}
            for start in range(0, len(keys), KEYS_PER_QUERY):
                chunk = keys[start : start + KEYS_PER_QUERY]
                query = select(ItemRow.item_key, ItemRow.status).where(
                    where, ItemRow.item_key.in_(chunk)
                )
                found.update((key, ItemStatus(status)) for key, status in session.execute(query))
            return found

    def steps_item_statuses(
        self, incident_id: str, step_ids: Sequence[str]
    ) -> dict[str, dict[str, ItemStatus]]:
        """`item_statuses` of several steps in one query (each letter step's claim check
        asks for every claimable step's); a step without items maps to an empty dict."""
        query = select(ItemRow.step_id, ItemRow.item_key, ItemRow.status).where(
            and_(ItemRow.incident_id == incident_id, ItemRow.step_id.in_(step_ids))
        )
        found: dict[str, dict[str, ItemStatus]] = {step_id: {} for step_id in step_ids}
        with Session(self._engine) as session:
            for step_id, key, status in session.execute(query):
                found[step_id][key] = ItemStatus(status)
        return found

    # -- run records ----------------------------------------------------------------------

    def put_record(
        self, incident_id: str, scope: str, kind: str, key: str, data: Any, actor: str
    ) -> int:
        """Store a new version of a record; returns its version (1, 2, ...).

        Two writers of one record race for the next version number; the loser retries."""
        for _ in range(RECORD_RETRIES - 1):
            try:
                return self._put_record(incident_id, scope, kind, key, data, actor)
            except IntegrityError:
                continue
        return self._put_record(incident_id, scope, kind, key, data, actor)

    def _put_record(
        self, incident_id: str, scope: str, kind: str, key: str, data: Any, actor: str
    ) -> int:
        this = {"incident": incident_id, "scope": scope, "kind": kind, "key": key}
        with self._engine.begin() as conn:
            version = int(conn.execute(LAST_RECORD_VERSION, this).scalar_one()) + 1
            conn.execute(
                RECORDS.insert(),
                {
                    "incident_id": incident_id,
                    "scope": scope,
                    "kind": kind,
                    "key": key,
                    "version": version,
                    "actor": actor,
                    "at": self._now(),
                    "data": _plain(data),
                },
            )
        return version

    def get_record(self, incident_id: str, scope: str, kind: str, key: str) -> Any | None:
        """The latest version of a record, or None."""
        parameters = {"incident": incident_id, "scope": scope, "kind": kind, "key": key}
        with self._engine.connect() as conn:
            row = conn.execute(LATEST_RECORD, parameters).first()
        return row[0] if row else None

    def records_of(self, incident_id: str, scope: str, kind: str) -> dict[str, Any]:
        """The latest version of every record of one kind, by key."""
        query = (
            select(RecordRow.key, RecordRow.data)
            .where(
                RecordRow.incident_id == incident_id,
                RecordRow.scope == scope,
                RecordRow.kind == kind,
            )
            .order_by(RecordRow.key, RecordRow.version)
        )
        with Session(self._engine) as session:
            return {key: data for key, data in session.execute(query)}

    def incidents_with_record(self, scope: str, kind: str) -> list[str]:
        """Incidents that hold a record of this kind (which incident a run waits in)."""
        query = (
            select(RecordRow.incident_id)
            .where(RecordRow.scope == scope, RecordRow.kind == kind)
            .distinct()
            .order_by(RecordRow.incident_id)
        )
        with Session(self._engine) as session:
            return list(session.scalars(query))

    def record_history(self, incident_id: str, scope: str, kind: str, key: str) -> list[RecordRow]:
        """Every version of a record, oldest first (who changed it, when)."""
        query = (
            select(RecordRow)
            .where(
                RecordRow.incident_id == incident_id,
                RecordRow.scope == scope,
                RecordRow.kind == kind,
                RecordRow.key == key,
            )
            .order_by(RecordRow.version)
        )
        with Session(self._engine) as session:
            return list(session.scalars(query))
