"""The customer directory on SQL (SQLite file or PostgreSQL), read through SQLAlchemy Core.

Any schema: the data-source file (breachbook.datasource) maps the organisation's own tables
and columns, and every query is built from that mapping on tables reflected from the database
(identifiers quoted by SQLAlchemy, never formatted into SQL). Customers stream in keyset pages;
for each page, one grouped query per exposed related table says which exposed columns hold a
value for whom. Opened read-only, the connection itself refuses writes.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
    bindparam,
    case,
    cast,
    create_engine,
    func,
    inspect,
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
from breachbook.models import Customer, DataCategory, Incident, RejectedRecord, validate_customer
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
        union of those columns' categories across every exposed table."""
        exposure = resolve_exposure(self.source, incident, self.source_file)
        mapped = self.source.customers
        identity = mapped.identity()
        try:
            with self._engine.connect() as conn:
                tables = self._reflect(conn)
                table = tables[mapped.table]
                key = table.c[identity["id"]]
                own = next((p for p in exposure if p.mapped is mapped), None)
                flags: list[tuple[str, DataCategory]] = []
                selected: list[ColumnElement[Any]] = [
                    table.c[column].label(f"i_{field}") for field, column in identity.items()
                ]
                if own is not None:
                    for number, (column, category) in enumerate(own.columns.items()):
                        if category is None:
                            continue
                        holds = has_value(table.c[column])
                        if own.window is not None:
                            assert mapped.time_column is not None
                            holds = and_(
                                holds,
                                in_window(table.c[mapped.time_column], own.window, self._sqlite),
                            )
                        selected.append(case((holds, 1), else_=0).label(f"x_{number}"))
                        flags.append((f"x_{number}", category))
                related = [
                    part
                    for part in exposure
                    if isinstance(part.mapped, RelatedTable) and part.categories()
                ]
                lookups = [self._held_in(tables, part) for part in related]
                query = select(*selected).order_by(key).limit(batch_size)
                last: Any = None if after is None else _key_value(key, after)
                while True:
                    page = query if last is None else query.where(key > last)
                    result = conn.execute(page)
                    labels = list(result.keys())
                    rows = [dict(zip(labels, row, strict=True)) for row in result.all()]
                    if not rows:
                        return
                    ids = [row["i_id"] for row in rows]
                    found: defaultdict[Any, set[DataCategory]] = defaultdict(set)
                    for row in rows:
                        found[row["i_id"]].update(cat for label, cat in flags if row[label])
                    for lookup, kinds in lookups:
                        in_page = lookup if last is None else lookup.where(key > last)
                        held_rows = conn.execute(in_page, {"through": ids[-1]}).all()
                        for customer_id, *held in held_rows:
                            found[customer_id].update(
                                kind for kind, flag in zip(kinds, held, strict=True) if flag
                            )
                    batch: list[Customer | RejectedRecord] = []
                    for row in rows:
                        categories = found[row["i_id"]]
                        if categories:
                            batch.append(validate_customer(self._record(row, categories)))
                    last = ids[-1]
                    if batch:
                        yield batch
        except SQLAlchemyError as exc:
            raise CustomerDataError(
                f"{self._where}: cannot read customers ({type(exc).__name__})"
            ) from None

    def _held_in(
        self, tables: dict[str, Table], part: ExposedPart
    ) -> tuple[Select[Any], list[DataCategory]]:
        """The query that says, for the customers of a page (those after the previous page's
        last id, through the `through` parameter: a key range, not a list of ids), which of
        the part's exposed columns hold a value in at least one of their rows (within the
        window), joined up to the customer: one flag per column, in the order of the
        categories returned beside it."""
        assert isinstance(part.mapped, RelatedTable)
        customers = tables[self.source.customers.table]
        key = customers.c[self.source.customers.columns.id]
        start = tables[part.mapped.table]
        joined: FromClause = start
        for hop in self.source.path_to_customer(part.mapped):
            this = tables[hop.table]
            if hop.join.to in (None, self.source.customers.table):
                target = customers.c[hop.join.to_column or self.source.customers.columns.id]
                joined = joined.join(customers, this.c[hop.join.column] == target)
            else:
                assert hop.join.to_column is not None
                other = tables[hop.join.to]
                joined = joined.join(other, this.c[hop.join.column] == other.c[hop.join.to_column])
        columns = [(c, cat) for c, cat in part.columns.items() if cat is not None]
        flags = [
            func.max(case((has_value(start.c[column]), 1), else_=0)).label(f"x_{n}")
            for n, (column, _) in enumerate(columns)
        ]
        query = (
            select(key.label("cid"), *flags).select_from(joined).where(key <= bindparam("through"))
        )
        if part.window is not None:
            assert part.mapped.time_column is not None
            query = query.where(
                in_window(start.c[part.mapped.time_column], part.window, self._sqlite)
            )
        return query.group_by(key), [cat for _, cat in columns if cat is not None]

    def _record(self, row: dict[str, Any], categories: set[DataCategory]) -> dict[str, Any]:
        """A Customer's fields from a row of identity columns; what is absent is empty."""
        text = {
            field: "" if (value := row.get(label)) is None else str(value)
            for field, label in TEXT_FIELDS
        }
        full_name = text.pop("full_name") or " ".join(
            part for part in (text.pop("given_name"), text.pop("family_name")) if part
        )
        text.pop("given_name", None)
        text.pop("family_name", None)
        return text | {
            "full_name": full_name,
            "email": row.get("i_email"),
            "locale": text["locale"] or self.source.customers.default_locale,
            "categories": frozenset(categories),
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
