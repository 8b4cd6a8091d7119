"""The ledger: idempotency and the audit trail legal relies on.

An entry is written before and after every action, keyed by (incident, step, target). Each
entry carries the SHA-256 of its own content and of the entry before it, so an edited,
deleted or reordered entry breaks the chain and `breachbook audit verify` says where.
Details must never hold customer personal data: pass ids and counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Index,
    Integer,
    String,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from breachbook.clock import Clock
from breachbook.errors import BreachbookError

GENESIS = "0" * 64


class LedgerError(BreachbookError):
    """The ledger cannot be opened where it was said to be."""


AUTOMATION = "automation:breachbook"


class Base(DeclarativeBase):
    pass


class LedgerRow(Base):
    __tablename__ = "ledger_entries"

    __table_args__ = (Index("ix_ledger_key", "incident_id", "step_id", "target", "phase"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    incident_id: Mapped[str] = mapped_column(String(64))
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
    seq: int
    problem: str


def _content_hash(seq: int, row: Mapping[str, Any], prev_hash: str) -> str:
    canonical = json.dumps(
        {
            "seq": seq,
            "incident_id": row["incident_id"],
            "run_id": row["run_id"],
            "step_id": row["step_id"],
            "target": row["target"],
            "phase": row["phase"],
            "actor": row["actor"],
            "at": row["at"],
            "mode": row["mode"],
            "outcome": row["outcome"],
            "details": row["details"],
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _engine_for(url: str) -> Engine:
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Ledger:
    """Append-only, hash-chained record of every action attempt and outcome."""

    def __init__(self, url: str, clock: Clock, create: bool = True) -> None:
        """Open (and by default create) the ledger; `create=False` only opens an existing one."""
        self.url = url
        self._clock = clock
        parsed = make_url(url)
        where = parsed.render_as_string(hide_password=True)
        database = parsed.database or ""
        if not create and parsed.get_backend_name() == "sqlite" and not Path(database).is_file():
            raise LedgerError(f"{where}: no ledger file there")
        self._engine = _engine_for(url)
        if create:
            Base.metadata.create_all(self._engine)
        elif not inspect(self._engine).has_table(LedgerRow.__tablename__):
            self._engine.dispose()
            raise LedgerError(f"{where}: no ledger there (table {LedgerRow.__tablename__} missing)")

    def close(self) -> None:
        self._engine.dispose()

    def append(self, entry: Entry) -> int:
        """Write one entry durably and return its sequence number."""
        return self.append_many([entry])[-1]

    def append_many(self, entries: list[Entry]) -> list[int]:
        """Write entries in one transaction; the chain head is locked while it grows."""
        with Session(self._engine) as session, session.begin():
            head_query = (
                select(LedgerRow.seq, LedgerRow.entry_hash).order_by(LedgerRow.seq.desc()).limit(1)
            )
            if self._engine.dialect.name == "postgresql":
                session.connection().exec_driver_sql("LOCK TABLE ledger_entries IN EXCLUSIVE MODE")
            head = session.execute(head_query).first()
            seq, prev = (head[0], head[1]) if head else (0, GENESIS)
            written = []
            for entry in entries:
                seq += 1
                row = {
                    "incident_id": entry.incident_id,
                    "run_id": entry.run_id,
                    "step_id": entry.step_id,
                    "target": entry.target,
                    "phase": entry.phase,
                    "actor": entry.actor,
                    "at": self._clock.now().astimezone(UTC).isoformat(timespec="microseconds"),
                    "mode": entry.mode,
                    "outcome": entry.outcome,
                    "details": json.loads(json.dumps(dict(entry.details), default=str)),
                }
                digest = _content_hash(seq, row, prev)
                session.add(LedgerRow(seq=seq, prev_hash=prev, entry_hash=digest, **row))
                prev = digest
                written.append(seq)
            return written

    def completed(self, incident_id: str, step_id: str, target: str) -> bool:
        """Has apply already succeeded for this (incident, step, target)? Drives re-run skips."""
        return self._exists(incident_id, step_id, target, "outcome", "completed")

    def attempted(self, incident_id: str, step_id: str, target: str) -> bool:
        """Was apply ever started for this key (whatever came of it)?"""
        return self._exists(incident_id, step_id, target, "attempt", None)

    def _exists(
        self, incident_id: str, step_id: str, target: str, phase: str, outcome: str | None
    ) -> bool:
        query = select(LedgerRow.seq).where(
            LedgerRow.incident_id == incident_id,
            LedgerRow.step_id == step_id,
            LedgerRow.target == target,
            LedgerRow.phase == phase,
        )
        if outcome is not None:
            query = query.where(LedgerRow.outcome == outcome)
        with Session(self._engine) as session:
            return session.execute(query.limit(1)).first() is not None

    def entries(self, incident_id: str | None = None) -> Iterator[LedgerRow]:
        query = select(LedgerRow).order_by(LedgerRow.seq)
        if incident_id is not None:
            query = query.where(LedgerRow.incident_id == incident_id)
        with Session(self._engine) as session:
            yield from session.scalars(query)

    def head(self) -> tuple[int, str]:
        """Sequence number and hash of the last entry: an anchor that also catches a cut tail."""
        query = select(LedgerRow.seq, LedgerRow.entry_hash).order_by(LedgerRow.seq.desc()).limit(1)
        with Session(self._engine) as session:
            row = session.execute(query).first()
        return (row[0], row[1]) if row else (0, GENESIS)

    def verify(self, anchor: tuple[int, str] | None = None) -> list[ChainProblem]:
        """Recompute the chain; an empty list means every entry is intact and in order.

        With an anchor (a head recorded elsewhere, e.g. in a run's plan.json) the chain must
        also still contain that entry unchanged, which catches entries cut from the end.
        """
        problems: list[ChainProblem] = []
        seen_anchor = anchor is None or anchor[0] == 0
        expected_seq, prev = 1, GENESIS
        for row in self.entries():
            if row.seq != expected_seq:
                problems.append(
                    ChainProblem(row.seq, f"entries {expected_seq}..{row.seq - 1} are missing")
                )
            if row.prev_hash != prev:
                problems.append(
                    ChainProblem(
                        row.seq, "does not follow the entry before it (deleted or reordered)"
                    )
                )
            as_written = {
                "incident_id": row.incident_id,
                "run_id": row.run_id,
                "step_id": row.step_id,
                "target": row.target,
                "phase": row.phase,
                "actor": row.actor,
                "at": row.at,
                "mode": row.mode,
                "outcome": row.outcome,
                "details": row.details,
            }
            if _content_hash(row.seq, as_written, row.prev_hash) != row.entry_hash:
                problems.append(ChainProblem(row.seq, "content was edited after it was written"))
            if anchor is not None and row.seq == anchor[0]:
                seen_anchor = row.entry_hash == anchor[1]
            expected_seq, prev = row.seq + 1, row.entry_hash
        if not seen_anchor:
            problems.append(
                ChainProblem(anchor[0] if anchor else 0, "the anchored entry is missing or changed")
            )
        return problems
