"""The customer directory on SQL (SQLite file or PostgreSQL), read through SQLAlchemy Core.

Any schema: the data-source file (breachbook.datasource) maps the organisation's own tables
and columns, and every query is built from that mapping on tables reflected from the database
(identifiers quoted by SQLAlchemy, never formatted into SQL). Customers stream in keyset pages,
one query per page: beside each customer's identity, a mask of the exposed categories that hold
a value for them, in their own row or (one correlated EXISTS per related table and category) in
a related row. Opened read-only, the connection itself refuses writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Select,
    Table,
    Text,
    and_,
    case,
    cast,
    create_engine,
    func,
    inspect,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause

from breachbook.datasource import (
    DEMO_DATASOURCE,
    DataSource,
    ExposedPart,
    RelatedTable,
    Window,
    load_datasource,
    resolve_exposure,
)
from breachbook.errors import CustomerDataError
from breachbook.models import (
    Customer,
    DataCategory,
    Incident,
    RejectedRecord,
    customer_batches,
)
from breachbook.ports import Check


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


def has_value(column: ColumnElement[Any]) -> ColumnElement[bool]:
    """True where the column holds something: not NULL and not only spaces. The cast to text
    works for every column type on SQLite and PostgreSQL."""
    return func.trim(cast(column, Text)) != ""


def in_window(column: ColumnElement[Any], window: Window, sqlite: bool) -> ColumnElement[bool]:
    """Rows whose time column lies in the window. A PostgreSQL date or timestamp column is
    compared exactly; a text column (and any on SQLite, which has no time type) is read as
    ISO 8601 text by whole days, both boundary days included: a row on the window's first or
    last day counts even if it is hours outside, never the other way round."""
    kind = column.type
    conditions: list[ColumnElement[bool]] = []
    start, end = window.start, window.end
    if not sqlite and isinstance(kind, sqltypes.DateTime):

        def as_bound(moment: datetime) -> datetime:
            utc = moment.astimezone(UTC)
            return utc if kind.timezone else utc.replace(tzinfo=None)

        if start is not None:
            conditions.append(column >= as_bound(start))
        if end is not None:
            conditions.append(column <= as_bound(end))
    elif not sqlite and isinstance(kind, sqltypes.Date):
        if start is not None:
            conditions.append(column >= start.astimezone(UTC).date())
        if end is not None:
            conditions.append(column <= end.astimezone(UTC).date())
    else:
        text = cast(column, Text)
        if start is not None:
            conditions.append(text >= start.astimezone(UTC).date().isoformat())
        if end is not None:
            day_after = end.astimezone(UTC).date() + timedelta(days=1)
            conditions.append(text < day_after.isoformat())
    return and_(true(), *conditions)


CATEGORIES = tuple(DataCategory)
BUILT_AT_ONCE = 100
"""Customers of a page built and handed on at a time (`customer_batches`)."""


def category_bit(category: DataCategory) -> int:
    return 1 << CATEGORIES.index(category)


def category_mask(held: dict[DataCategory, list[ColumnElement[bool]]]) -> ColumnElement[int]:
    """The categories of which something holds a value, as one integer: the sum of their
    bits (`category_bit`)."""
    mask: ColumnElement[int] = literal(0)
    for category, holds in held.items():
        mask = mask + case((or_(*holds), category_bit(category)), else_=0)
    return mask


@lru_cache(maxsize=1024)
def categories_of(mask: int) -> frozenset[DataCategory]:
    return frozenset(c for c in CATEGORIES if mask & category_bit(c))


def fetch_all(
    conn: Connection, query: Select[Any], params: dict[str, Any] | None = None
) -> Sequence[Sequence[Any]]:
    """Every row of a query as the driver returns it (plain tuples) when SQLAlchemy would
    convert none of its columns, else as its rows: building SQLAlchemy's row objects costs a
    third of reading a page of customers."""
    result = conn.execute(query, params)
    try:
        dialect = conn.dialect
        if all(
            column.type.dialect_impl(dialect).result_processor(dialect, None) is None
            for column in query.selected_columns
        ):
            rows: Sequence[Sequence[Any]] = result.cursor.fetchall()
            return rows
        return result.all()
    finally:
        result.close()


TEXT_FIELDS = [
    (field, f"i_{field}")
    for field in (
        "id",
        "full_name",
        "given_name",
        "family_name",
        "phone",
        "street",
        "city",
        "postal_code",
        "region",
        "country",
        "locale",
        "honorific",
    )
]
"""Identity fields read as text (NULL -> ""), and their labels in a page's rows."""


class SqlCustomerDirectory:
    def __init__(
        self,
        url: str,
        read_only: bool,
        source: DataSource | None = None,
        source_file: Path | None = None,
    ) -> None:
        """Read-only is enforced by the database, not by breachbook's good behaviour: SQLite
        opens the file with mode=ro, PostgreSQL makes every transaction read-only.

        `source` maps the schema (default: the demo world's mapping, `source_file` names it)."""
        self.url = url
        self.read_only = read_only
        if source is None:
            source_file = source_file or DEMO_DATASOURCE
            source = load_datasource(source_file)
        self.source = source
        self.source_file = str(source_file or "(given data source)")
        self._where = _redact(url)
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        self._sqlite = backend == "sqlite"
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
        self._tables: dict[str, Table] | None = None

    def describe(self) -> str:
        return f"customer database {self._where}"

    def close(self) -> None:
        self._engine.dispose()

    def _reflect(self, conn: Connection) -> dict[str, Table]:
        """The mapped tables as the database has them (reflected once), every mapped column
        checked to exist."""
        if self._tables is not None:
            return self._tables
        schema = self.source.db_schema
        present = set(inspect(conn).get_table_names(schema=schema))
        names = [mapped.table for mapped in self.source.all_tables()]
        missing = sorted(name for name in names if name not in present)
        if missing:
            raise CustomerDataError(
                f"{self._where}: table(s) {', '.join(missing)} missing (mapped in the data "
                f"source {self.source_file}; BREACHBOOK_DATASOURCE names your own)"
            )
        metadata = MetaData(schema=schema)
        tables: dict[str, Table] = {}
        for mapped in self.source.all_tables():
            try:
                table = Table(mapped.table, metadata, autoload_with=conn)
            except NoSuchTableError:
                raise CustomerDataError(f"{self._where}: table {mapped.table} missing") from None
            absent = [column for column in mapped.declared() if column not in table.c]
            if absent:
                raise CustomerDataError(
                    f"{self._where}: table {mapped.table} has no column(s) {', '.join(absent)} "
                    f"(mapped in the data source {self.source_file})"
                )
            tables[mapped.table] = table
        self._tables = tables
        return tables

    def check_readable(self) -> Check:
        try:
            with self._engine.connect() as conn:
                tables = self._reflect(conn)
                for mapped in self.source.all_tables():
                    table = tables[mapped.table]
                    conn.execute(select(*(table.c[c] for c in mapped.declared())).limit(1)).all()
        except CustomerDataError as exc:
            return Check.failed(str(exc), "schema inspection")
        except SQLAlchemyError as exc:
            original = getattr(exc, "orig", None)
            reason = str(original) if original is not None else type(exc).__name__
            return Check.failed(f"{self._where}: cannot read ({reason})", "SELECT")
        return Check.verified(
            f"{self._where}: the {len(tables)} tables mapped in {self.source_file} are readable",
            "SELECT ... LIMIT 1",
        )

    def require_readable(self) -> None:
        check = self.check_readable()
        if check.verdict != "VERIFIED":
            raise CustomerDataError(check.reason)

    def iter_affected(
        self, incident: Incident, batch_size: int, after: str | None = None
    ) -> Iterator[list[Customer | RejectedRecord]]:
        """Customers with at least one exposed column holding a value, each once with the
        union of those columns' categories across every exposed table.

        One query per page says which categories were found as one bit mask per customer (a
        bit per category, `category_bit`): the customer's own exposed columns, and for each
        related table whether a row of theirs holds a value (`_held_in`). The page is
        validated field by field (`validate_customers`)."""
        exposure = resolve_exposure(self.source, incident, self.source_file)
        mapped = self.source.customers
        identity = mapped.identity()
        try:
            with self._engine.connect() as conn:
                tables = self._reflect(conn)
                table = tables[mapped.table]
                key = table.c[identity["id"]]
                own = next((p for p in exposure if p.mapped is mapped), None)
                held: dict[DataCategory, list[ColumnElement[bool]]] = {}
                if own is not None:
                    for column, category in own.columns.items():
                        if category is None:
                            continue
                        holds = has_value(table.c[column])
                        if own.window is not None:
                            assert mapped.time_column is not None
                            holds = and_(
                                holds,
                                in_window(table.c[mapped.time_column], own.window, self._sqlite),
                            )
                        held.setdefault(category, []).append(holds)
                for part in exposure:
                    if isinstance(part.mapped, RelatedTable) and part.categories():
                        for category, found in self._held_in(tables, part).items():
                            held.setdefault(category, []).append(found)
                fields = list(identity)
                selected: list[ColumnElement[Any]] = [
                    *(table.c[column] for column in identity.values()),
                    category_mask(held).label("mask"),
                ]
                query = select(*selected).order_by(key).limit(batch_size)
                at_id = fields.index("id")
                last: Any = None if after is None else _key_value(key, after)
                while True:
                    page = query if last is None else query.where(key > last)
                    rows = fetch_all(conn, page)
                    if not rows:
                        return
                    last = rows[-1][at_id]
                    exposed = [row for row in rows if row[-1]]
                    if exposed:
                        yield from customer_batches(self._columns(fields, exposed), BUILT_AT_ONCE)
        except SQLAlchemyError as exc:
            raise CustomerDataError(
                f"{self._where}: cannot read customers ({type(exc).__name__})"
            ) from None

    def _held_in(
        self, tables: dict[str, Table], part: ExposedPart
    ) -> dict[DataCategory, ColumnElement[bool]]:
        """Per category of the part's exposed columns: whether at least one of the customer's
        rows (within the window), joined up to the customer, holds a value in one of that
        category's columns. Correlated to the customer of the page's row, and answered from
        the first such row (the join column is indexed in any schema fit for this)."""
        assert isinstance(part.mapped, RelatedTable)
        customers = tables[self.source.customers.table]
        start = tables[part.mapped.table]
        joined: FromClause = start
        link: ColumnElement[bool] | None = None
        for hop in self.source.path_to_customer(part.mapped):
            this = tables[hop.table]
            if hop.join.to in (None, self.source.customers.table):
                target = customers.c[hop.join.to_column or self.source.customers.columns.id]
                link = this.c[hop.join.column] == target
            else:
                assert hop.join.to_column is not None
                other = tables[hop.join.to]
                joined = joined.join(other, this.c[hop.join.column] == other.c[hop.join.to_column])
        assert link is not None
        rows = select(literal(1)).select_from(joined).where(link)
        if part.window is not None:
            assert part.mapped.time_column is not None
            rows = rows.where(
                in_window(start.c[part.mapped.time_column], part.window, self._sqlite)
            )
        holds: dict[DataCategory, list[ColumnElement[bool]]] = {}
        for column, category in part.columns.items():
            if category is not None:
                holds.setdefault(category, []).append(has_value(start.c[column]))
        return {category: rows.where(or_(*columns)).exists() for category, columns in holds.items()}

    def _columns(self, fields: list[str], rows: list[Any]) -> dict[str, list[Any]]:
        """A Customer's fields, one list per field, from rows of identity columns (in the
        order of `fields`, the mask last); what is absent is empty."""
        count = len(rows)
        *identity, masks = zip(*rows, strict=True)
        read = dict(zip(fields, identity, strict=True))
        text = {
            field: ["" if value is None else str(value) for value in read[field]]
            if field in read
            else [""] * count
            for field, _ in TEXT_FIELDS
        }
        full_name = text.pop("full_name")
        given, family = text.pop("given_name"), text.pop("family_name")
        if not all(full_name):
            full_name = [
                name or " ".join(part for part in (first, last) if part)
                for name, first, last in zip(full_name, given, family, strict=True)
            ]
        default_locale = self.source.customers.default_locale
        return text | {
            "full_name": full_name,
            "email": list(read["email"]) if "email" in read else [None] * count,
            "locale": [locale or default_locale for locale in text["locale"]],
            "categories": [categories_of(mask) for mask in masks],
        }

    def table_snapshot(self, table: str, columns: list[str]) -> Iterator[bytes]:
        """Rows of the exposed columns as JSON lines, in primary-key order."""
        mapped = self.source.table(table)
        if mapped is None:
            raise CustomerDataError(
                f"{self._where}: exposed table {table!r} is not in the data source {self.source_file}"
            )
        unknown = [c for c in columns if c not in mapped.declared()]
        if unknown:
            raise CustomerDataError(
                f"{self._where}: table {table!r} has no mapped column(s) {unknown}"
            )
        try:
            with self._engine.connect() as conn:
                known = self._reflect(conn)[table]
                key = list(known.primary_key.columns) or [known.c[c] for c in columns]
                query = select(*key, *(known.c[c] for c in columns)).order_by(*key)
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


def _key_value(key: ColumnElement[Any], customer_id: str) -> Any:
    """A customer id (always text in a Customer) as the key column's own type, so `key >`
    compares as the table orders (an integer key is not ordered as text)."""
    try:
        python_type = key.type.python_type
    except NotImplementedError:
        return customer_id
    return python_type(customer_id) if python_type is not str else customer_id
