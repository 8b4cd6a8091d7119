"""The customer directory on SQL (SQLite file or PostgreSQL), read through SQLAlchemy.

The schema below is what breachbook expects of a customer database; an organisation with a
different one maps it with a view. Opened read-only, the connection itself refuses writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    exists,
    inspect,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from breachbook.errors import CustomerDataError
from breachbook.models import Customer, DataCategory, RejectedRecord, validate_customer
from breachbook.ports import Check

metadata = MetaData()

customers = Table(
    "customers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("full_name", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("phone", String(64), nullable=False),
    Column("street", String(300), nullable=False),
    Column("city", String(200), nullable=False),
    Column("postal_code", String(32), nullable=False),
    Column("region", String(64), nullable=False, default=""),
    Column("country", String(2), nullable=False),
    Column("locale", String(16), nullable=False),
)
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.id"), index=True, nullable=False),
    Column("ordered_at", String(32), nullable=False),
    Column("item", String(200), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
)
favourites = Table(
    "favourites",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.id"), index=True, nullable=False),
    Column("antique", String(200), nullable=False),
)
payment_cards = Table(
    "payment_cards",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.id"), index=True, nullable=False),
    Column("card_number", String(32), nullable=False),
    Column("expiry", String(7), nullable=False),
)

BASE_CATEGORIES = frozenset(
    {DataCategory.NAME, DataCategory.EMAIL, DataCategory.PHONE, DataCategory.POSTAL_ADDRESS}
)
CATEGORY_TABLES = {
    DataCategory.PURCHASE_HISTORY: orders,
    DataCategory.PREFERENCES: favourites,
    DataCategory.FINANCIAL_ACCOUNT: payment_cards,
}


def sqlite_url(path: Path, read_only: bool) -> str:
    if read_only:
        return f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&uri=true"
    return f"sqlite:///{path.resolve()}"


def read_only_sqlite(url: URL) -> tuple[URL, Path]:
    """The SQLite database a URL names, opened with mode=ro whatever the URL asked: nothing
    writes through the connection, and a misspelt path fails instead of creating a database."""
    database = url.database or ""
    if database.startswith("file:"):
        database = database.removeprefix("file:").removeprefix("//localhost").removeprefix("//")
    if database in ("", ":memory:"):
        raise CustomerDataError("an in-memory SQLite database cannot be the customer database")
    path = Path(database).resolve()
    if not path.is_file():
        raise CustomerDataError(f"{path}: no such customer database (it is never created)")
    query = {k: v for k, v in url.query.items() if k not in ("mode", "uri")}
    query |= {"mode": "ro", "uri": "true"}
    return url.set(database=f"file:{quote(str(path))}", query=query), path


def _redact(url: str) -> str:
    """Where the data is, fit for messages: the file of a SQLite URL, else the URL sans password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return (parsed.database or "").removeprefix("file:")
    return parsed.render_as_string(hide_password=True)


class SqlCustomerDirectory:
    def __init__(self, url: str, read_only: bool) -> None:
        """Read-only is enforced by the database, not by breachbook's good behaviour: SQLite
        opens the file with mode=ro, PostgreSQL makes every transaction read-only."""
        self.url = url
        self.read_only = read_only
        self._where = _redact(url)
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        connect_args: dict[str, Any] = {}
        if read_only and backend == "sqlite":
            parsed, path = read_only_sqlite(parsed)
            self._where = str(path)
        elif read_only and backend == "postgresql":
            connect_args["options"] = "-c default_transaction_read_only=on"
        elif read_only:
            raise CustomerDataError(
                f"{self._where}: read-only access is built for SQLite and PostgreSQL only"
            )
        self._engine: Engine = create_engine(parsed, connect_args=connect_args)

    def describe(self) -> str:
        return f"customer database {self._where}"

    def close(self) -> None:
        self._engine.dispose()

    def check_readable(self) -> Check:
        try:
            with self._engine.connect() as conn:
                present = set(inspect(conn).get_table_names())
                missing = sorted({t.name for t in metadata.sorted_tables} - present)
                if missing:
                    return Check.failed(
                        f"{self._where}: table(s) {', '.join(missing)} missing", "schema inspection"
                    )
                for table in metadata.sorted_tables:
                    conn.execute(select(table).limit(1)).all()
        except SQLAlchemyError as exc:
            original = getattr(exc, "orig", None)
            reason = str(original) if original is not None else type(exc).__name__
            return Check.failed(f"{self._where}: cannot read ({reason})", "SELECT")
        return Check.verified(f"{self._where}: all customer tables readable", "SELECT ... LIMIT 1")

    def require_readable(self) -> None:
        check = self.check_readable()
        if check.verdict != "VERIFIED":
            raise CustomerDataError(check.reason)

    def iter_affected(
        self, categories: frozenset[DataCategory], batch_size: int
    ) -> Iterator[list[Customer | RejectedRecord]]:
        flags = {
            cat: exists().where(table.c.customer_id == customers.c.id).label(cat.value)
            for cat, table in CATEGORY_TABLES.items()
        }
        query = select(customers, *flags.values()).order_by(customers.c.id).limit(batch_size)
        last: str | None = None
        try:
            with self._engine.connect() as conn:
                while True:
                    page = query if last is None else query.where(customers.c.id > last)
                    rows = conn.execute(page).mappings().all()
                    if not rows:
                        return
                    batch: list[Customer | RejectedRecord] = []
                    for row in rows:
                        held = set(BASE_CATEGORIES)
                        held.update(cat for cat in flags if row[cat.value])
                        if not held & categories:
                            continue
                        record = {c.name: row[c.name] for c in customers.columns}
                        record["categories"] = frozenset(held)
                        batch.append(validate_customer(record))
                    last = rows[-1]["id"]
                    if batch:
                        yield batch
        except SQLAlchemyError as exc:
            raise CustomerDataError(
                f"{self._where}: cannot read customers ({type(exc).__name__})"
            ) from None

    def table_snapshot(self, table: str, columns: list[str]) -> Iterator[bytes]:
        """Rows of the exposed columns as JSON lines, in primary-key order."""
        known = metadata.tables.get(table)
        if known is None:
            raise CustomerDataError(f"{self._where}: exposed table {table!r} is not in the schema")
        unknown = [c for c in columns if c not in known.c]
        if unknown:
            raise CustomerDataError(f"{self._where}: table {table!r} has no column(s) {unknown}")
        key = list(known.primary_key.columns)
        query = select(*key, *(known.c[c] for c in columns)).order_by(*key)
        try:
            with self._engine.connect() as conn:
                result = conn.execution_options(yield_per=5000).execute(query)
                for part in result.partitions():
                    yield b"".join(
                        json.dumps(list(row), ensure_ascii=False, default=str).encode() + b"\n"
                        for row in part
                    )
        except SQLAlchemyError as exc:
            raise CustomerDataError(
                f"{self._where}: cannot read {table} ({type(exc).__name__})"
            ) from None


def snapshot_digest(chunks: Iterator[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
