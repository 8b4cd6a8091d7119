"""The production database as evidence: every table and query read once, in one snapshot.

Tables still being written during an incident are read inside one transaction that sees a
single snapshot (PostgreSQL REPEATABLE READ READ ONLY; SQLite one read transaction on a file
opened with mode=ro), and each row is streamed straight into the vault: hashed and stored
from that single read, so nothing can change between the hash and the copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, MetaData, Table, create_engine, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from breachbook.errors import CustomerDataError
from breachbook.ports import CustomerDirectory, EvidenceRead

BATCH = 5000


class EvidenceReadError(CustomerDataError):
    """A database source could not be read, or vanished mid-read."""


def _read_only_url(url: str) -> tuple[URL, dict[str, Any], str]:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = (parsed.database or "").removeprefix("file:")
        path = Path(database).resolve()
        if database in ("", ":memory:"):
            raise EvidenceReadError("an in-memory SQLite database holds no evidence")
        query = {k: v for k, v in parsed.query.items() if k not in ("mode", "uri")}
        ro = parsed.set(
            database=f"file:{quote(str(path))}", query={**query, "mode": "ro", "uri": "true"}
        )
        return ro, {}, str(path)
    if backend == "postgresql":
        options = {"options": "-c default_transaction_read_only=on"}
        return parsed, options, parsed.render_as_string(hide_password=True)
    raise EvidenceReadError(
        f"{parsed.render_as_string(hide_password=True)}: evidence is read from SQLite or PostgreSQL only"
    )


def _lines(rows: Any) -> Iterator[bytes]:
    for part in rows.partitions(BATCH):
        yield b"".join(
            json.dumps(list(row), ensure_ascii=False, default=str).encode() + b"\n" for row in part
        )


class SqlEvidenceSource:
    def __init__(self, url: str) -> None:
        parsed, connect_args, self._where = _read_only_url(url)
        self._backend = parsed.get_backend_name()
        self._engine = create_engine(parsed, connect_args=connect_args)

    def describe(self) -> str:
        return f"database {self._where}"

    def close(self) -> None:
        self._engine.dispose()

    def _begin(self, conn: Connection) -> None:
        if self._backend == "sqlite":
            conn.exec_driver_sql("BEGIN")  # one read transaction: one snapshot for every read
        else:
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _table_rows(self, conn: Connection, table: str, columns: list[str]) -> Iterator[bytes]:
        try:
            known = Table(table, MetaData(), autoload_with=conn)
        except NoSuchTableError:
            raise EvidenceReadError(f"{self._where}: no table {table!r} to read") from None
        unknown = [c for c in columns if c not in known.c]
        if unknown:
            raise EvidenceReadError(f"{self._where}: table {table!r} has no column(s) {unknown}")
        key = list(known.primary_key.columns)
        query = select(*key, *(known.c[c] for c in columns)).order_by(*key)
        yield from _lines(conn.execution_options(yield_per=BATCH).execute(query))

    def _guarded(self, what: str, rows: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from rows
        except SQLAlchemyError as exc:
            raise EvidenceReadError(
                f"{self._where}: reading {what} failed ({type(exc).__name__}): the source "
                "vanished or refused mid-read"
            ) from None

    def read_consistently(
        self, tables: list[tuple[str, list[str]]], queries: list[tuple[str, str]]
    ) -> Iterator[EvidenceRead]:
        try:
            conn = self._engine.connect()
        except SQLAlchemyError as exc:
            raise EvidenceReadError(
                f"{self._where}: cannot connect ({type(exc).__name__})"
            ) from None
        try:
            self._guarded_begin(conn)
            for table, columns in tables:
                yield EvidenceRead(
                    f"table:{table}",
                    f"{self.describe()} table {table} (one snapshot)",
                    self._guarded(f"table {table}", self._table_rows(conn, table, columns)),
                )
            for name, sql in queries:
                rows = conn.execution_options(yield_per=BATCH)
                yield EvidenceRead(
                    f"query:{name}",
                    f"{self.describe()} query {name} (one snapshot)",
                    self._guarded(f"query {name}", self._query_rows(rows, sql)),
                )
        finally:
            try:
                conn.rollback()
                conn.close()
            except SQLAlchemyError:
                conn.invalidate()

    def _guarded_begin(self, conn: Connection) -> None:
        try:
            self._begin(conn)
        except SQLAlchemyError as exc:
            raise EvidenceReadError(
                f"{self._where}: cannot open a read-only snapshot ({type(exc).__name__})"
            ) from None

    def _query_rows(self, conn: Connection, sql: str) -> Iterator[bytes]:
        yield from _lines(conn.execute(text(sql)))


class DirectoryEvidenceSource:
    """The exposed tables through the customer directory when no evidence database is
    configured: each table read once (not one snapshot across tables); no queries."""

    def __init__(self, customers: CustomerDirectory) -> None:
        self._customers = customers

    def describe(self) -> str:
        return self._customers.describe()

    def read_consistently(
        self, tables: list[tuple[str, list[str]]], queries: list[tuple[str, str]]
    ) -> Iterator[EvidenceRead]:
        for table, columns in tables:
            yield EvidenceRead(
                f"table:{table}",
                f"{self.describe()} table {table}",
                self._customers.table_snapshot(table, columns),
            )
        for name, _ in queries:
            yield EvidenceRead(f"query:{name}", self.describe(), _refuse(name))


def _refuse(name: str) -> Iterator[bytes]:
    raise EvidenceReadError(
        f"query {name}: no evidence database to run it on: set BREACHBOOK_CUSTOMERS_URL"
    )
    yield b""  # pragma: no cover
