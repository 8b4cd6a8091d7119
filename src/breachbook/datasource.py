"""The data-source file: an organisation's own customer schema, mapped as data.

It says which table holds the customers and which of its columns are breachbook's identity
fields (id, name, email, address, country, language, ...), which columns of it and of related
tables hold which kind of personal data (ssn -> government_id, diagnosis -> medical), how each
related table joins to the customer, and which column dates a row. The SQL customer directory
builds its queries from it with SQLAlchemy Core; nothing here touches a database.

An incident names the exposed tables and columns; `resolve_exposure` turns them into the
columns to read and the data categories they can hold. A customer's exposed categories are
those of the exposed columns that hold a value for that customer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from breachbook.errors import DataSourceError
from breachbook.inputs import (
    DATASOURCE,
    InputError,
    check_text,
    load_yaml,
    read_text,
    while_unchanged,
)
from breachbook.models import (
    DataCategory,
    Identifier,
    Incident,
    LanguageTag,
    describe_validation_error,
)

DEMO_DATASOURCE = Path(__file__).with_name("demo-datasource.yaml")
"""The demo world's mapping, and the one used when no data-source file is set."""
SETTING = "BREACHBOOK_DATASOURCE"

Column = Annotated[
    Identifier,
    Field(description="A column name: letters, digits and _, starting with a letter or _"),
]
Categories = Annotated[
    dict[Column, DataCategory],
    Field(
        default={},
        max_length=1000,
        description="Columns holding personal data -> the kind of data (ssn: government_id)",
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentityColumns(Strict):
    """The customer table's columns that make breachbook's customer record. A name is either
    full_name or given_name and family_name."""

    id: Column = Field(description="The customer's unique key (keyset pagination orders by it)")
    full_name: Column | None = None
    given_name: Column | None = None
    family_name: Column | None = None
    email: Column
    phone: Column | None = None
    street: Column | None = None
    city: Column | None = None
    postal_code: Column | None = None
    region: Column | None = Field(
        default=None, description="State or province (US: the two-letter state code)"
    )
    country: Column = Field(description="ISO 3166-1 alpha-2 country code")
    locale: Column | None = Field(default=None, description="Language tag such as de-DE")
    honorific: Column | None = Field(default=None, description="As the customer gave it")


IDENTITY_CATEGORIES: dict[str, DataCategory] = {
    "full_name": DataCategory.NAME,
    "given_name": DataCategory.NAME,
    "family_name": DataCategory.NAME,
    "email": DataCategory.EMAIL,
    "phone": DataCategory.PHONE,
    "street": DataCategory.POSTAL_ADDRESS,
    "city": DataCategory.POSTAL_ADDRESS,
    "postal_code": DataCategory.POSTAL_ADDRESS,
}
"""What an identity column holds when it is exposed; id, region, country, locale and
honorific alone hold no category that a law counts."""


class Join(Strict):
    """How a related table reaches the customer: its `column` equals `to_column` of table
    `to` (default: the customer table's id). `to` may be another related table that itself
    joins to the customer (order_lines -> orders -> customers)."""

    column: Column
    to: Identifier | None = Field(default=None, description="Default: the customer table")
    to_column: Column | None = Field(
        default=None, description="Default: the customer id (required when `to` is set)"
    )


class MappedTable(Strict):
    table: Identifier
    categories: Categories
    other_columns: list[Column] = Field(
        default=[],
        max_length=1000,
        description="Columns an incident may name that hold no personal data (row ids, dates, amounts)",
    )
    time_column: Column | None = Field(
        default=None,
        description="When a row was written; an incident's window (rows_from, rows_until) "
        "filters on it",
    )

    def declared(self) -> list[str]:
        """Every column this table's mapping names, once per mention."""
        named = [*self.categories, *self.other_columns]
        if self.time_column is not None:
            named.append(self.time_column)
        return named

    def category_of(self, column: str) -> DataCategory | None:
        return self.categories.get(column)


class CustomerTable(MappedTable):
    columns: IdentityColumns
    default_locale: LanguageTag = Field(
        default="en", description="Letter language of a customer without a locale"
    )

    def identity(self) -> dict[str, str]:
        """Identity field -> column, for the fields this mapping has."""
        return {
            field: column
            for field, column in self.columns.model_dump().items()
            if column is not None
        }

    def declared(self) -> list[str]:
        return [*self.identity().values(), *super().declared()]

    def category_of(self, column: str) -> DataCategory | None:
        found = super().category_of(column)
        if found is not None:
            return found
        for field, named in self.identity().items():
            if named == column:
                return IDENTITY_CATEGORIES.get(field)
        return None


class RelatedTable(MappedTable):
    join: Join

    def declared(self) -> list[str]:
        return [self.join.column, *super().declared()]


class DataSource(Strict):
    """An organisation's customer schema mapped to breachbook (a data-source file)."""

    version: Literal[1]
    description: str = ""
    db_schema: Identifier | None = Field(
        default=None,
        description="Database schema holding the tables (PostgreSQL); default: the search path",
    )
    customers: CustomerTable
    tables: list[RelatedTable] = Field(default=[], max_length=1000)

    def all_tables(self) -> list[MappedTable]:
        return [self.customers, *self.tables]

    def table(self, name: str) -> MappedTable | None:
        return next((t for t in self.all_tables() if t.table == name), None)

    @model_validator(mode="after")
    def _references(self) -> DataSource:
        names = [t.table for t in self.all_tables()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"table {twice[0]} is mapped twice")
        customers = self.customers
        columns = customers.columns
        split = (columns.given_name is not None, columns.family_name is not None)
        if columns.full_name is not None and any(split):
            raise ValueError(
                "customers.columns: map full_name, or given_name and family_name, not both"
            )
        if columns.full_name is None and not all(split):
            raise ValueError("customers.columns: map full_name, or given_name and family_name")
        for mapped in self.all_tables():
            where = "customers" if mapped is customers else f"tables[{mapped.table}]"
            named = mapped.declared()
            again = next((c for c in named if named.count(c) > 1), None)
            if again is not None:
                raise ValueError(f"{where}: column {again} is mapped more than once")
        for related in self.tables:
            join = related.join
            where = f"tables[{related.table}].join"
            if join.to is None:
                if join.to_column is not None:
                    raise ValueError(f"{where}: to_column needs `to`, the table it is in")
                continue
            target = self.table(join.to)
            if target is None:
                raise ValueError(f"{where}.to: no table {join.to} in this data source")
            if join.to_column is None:
                raise ValueError(f"{where}: to_column is required with `to`")
            if join.to_column not in target.declared():
                raise ValueError(
                    f"{where}.to_column: {join.to}.{join.to_column} is not mapped "
                    f"(list it under that table's other_columns)"
                )
        for related in self.tables:
            chain = [related.table]
            step: RelatedTable | None = related
            while step is not None and step.join.to not in (None, customers.table):
                nxt = step.join.to
                if nxt in chain:
                    raise ValueError(
                        f"tables[{related.table}].join: joins in a circle "
                        f"({' -> '.join([*chain, nxt])})"
                    )
                chain.append(str(nxt))
                step = next((t for t in self.tables if t.table == nxt), None)
        return self

    def path_to_customer(self, table: RelatedTable) -> list[RelatedTable]:
        """The related tables from `table` to the one that joins the customer table."""
        path = [table]
        while path[-1].join.to not in (None, self.customers.table):
            path.append(next(t for t in self.tables if t.table == path[-1].join.to))
        return path


def load_datasource(path: Path) -> DataSource:
    """A data-source file, read within the limits of breachbook.inputs; one line names the
    file and the field at fault. Read again only once the file changed
    (breachbook.inputs.while_unchanged)."""
    return _read_datasource(path)


def _load_datasource(path: Path) -> DataSource:
    try:
        text = read_text(path, DATASOURCE)
    except InputError as exc:
        raise DataSourceError(str(exc)) from None
    return parse_datasource(text, str(path))


_read_datasource = while_unchanged(DATASOURCE, _load_datasource)


def is_datasource(path: Path) -> bool:
    """Does this YAML file look like a data-source file (a mapping with `customers:`) rather
    than a playbook? A file that cannot be read is left to the playbook loader to report."""
    try:
        raw = load_yaml(read_text(path, DATASOURCE), str(path))
    except InputError:
        return False
    return isinstance(raw, dict) and "customers" in raw and "phases" not in raw


def parse_datasource(text: str, source: str) -> DataSource:
    try:
        raw = load_yaml(check_text(text, source, DATASOURCE), source)
    except InputError as exc:
        raise DataSourceError(str(exc)) from None
    if not isinstance(raw, dict):
        raise DataSourceError(f"{source}: a data-source file must be a mapping of fields")
    try:
        return DataSource.model_validate(raw)
    except ValidationError as exc:
        raise DataSourceError(f"{source}: {describe_validation_error(exc)}") from None


def json_schema() -> dict[str, Any]:
    schema = DataSource.model_json_schema()
    schema["title"] = "breachbook data source"
    return schema


@dataclass(frozen=True)
class Window:
    """Rows written in [start, end] were exposed (either end open when None)."""

    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class ExposedPart:
    """One mapped table as far as the incident exposed it: the columns and their categories
    (None: the column holds no category), and the rows' time window if the incident gave one."""

    mapped: MappedTable
    columns: dict[str, DataCategory | None]
    window: Window | None

    def categories(self) -> frozenset[DataCategory]:
        return frozenset(c for c in self.columns.values() if c is not None)


@dataclass(frozen=True)
class Exposure:
    parts: list[ExposedPart]

    def categories(self) -> frozenset[DataCategory]:
        return frozenset(c for part in self.parts for c in part.categories())

    def __iter__(self) -> Iterator[ExposedPart]:
        return iter(self.parts)


def resolve_exposure(source: DataSource, incident: Incident, where: str) -> Exposure:
    """The columns an incident exposed, per mapped table. An incident naming no tables (it
    knows what kinds of data leaked, not where) exposes every mapped column of its
    data_categories. `where` names the data-source file in messages."""
    if not incident.exposed_tables:
        wanted = set(incident.data_categories)
        parts = []
        for mapped in source.all_tables():
            columns = {
                column: mapped.category_of(column)
                for column in mapped.declared()
                if mapped.category_of(column) in wanted
            }
            if columns:
                parts.append(ExposedPart(mapped, columns, None))
        return Exposure(parts)
    parts = []
    seen: set[str] = set()
    for number, exposed in enumerate(incident.exposed_tables):
        field = f"exposed_tables[{number}]"
        if exposed.table in seen:
            raise DataSourceError(
                f"incident {incident.id}: {field}: table {exposed.table} is named twice "
                "(list all its exposed columns once)"
            )
        seen.add(exposed.table)
        found = source.table(exposed.table)
        if found is None:
            raise DataSourceError(
                f"incident {incident.id}: {field}: table {exposed.table} is not in the data "
                f"source {where} (map it there)"
            )
        declared = found.declared()
        unknown = [c for c in exposed.columns if c not in declared]
        if unknown:
            raise DataSourceError(
                f"incident {incident.id}: {field}: column(s) {', '.join(unknown)} of "
                f"{exposed.table} are not in the data source {where} (map each to a category "
                "or list it under other_columns)"
            )
        window = None
        if exposed.rows_from is not None or exposed.rows_until is not None:
            if found.time_column is None:
                raise DataSourceError(
                    f"incident {incident.id}: {field}: a time window needs a time_column for "
                    f"{exposed.table} in the data source {where}"
                )
            window = Window(exposed.rows_from, exposed.rows_until)
        columns = {column: found.category_of(column) for column in exposed.columns}
        parts.append(ExposedPart(found, columns, window))
    return Exposure(parts)


def complete_categories(source: DataSource, incident: Incident, where: str) -> Incident:
    """The incident with data_categories completed by the categories its exposed columns can
    hold, so that notices, statements and the playbook's conditions list all of them.
    Categories the incident states beyond the mapped columns (data exposed elsewhere) stay."""
    derived = resolve_exposure(source, incident, where).categories()
    stated = set(incident.data_categories)
    if derived <= stated:
        return incident
    merged = [c for c in DataCategory if c in stated | derived]
    return incident.model_copy(update={"data_categories": merged})
