"""The customer directory on a schema that looks nothing like the demo's, mapped by a
data-source file (tests/clinic.py): exposed categories per customer from the exposed columns
that hold a value, across tables, within the time window; read-only through the wiring; odd
and reserved names quoted by SQLAlchemy. tests/integration/test_postgres.py runs the same
schema on PostgreSQL."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    text,
)
from sqlalchemy.exc import OperationalError

from breachbook.connectors.customers_sql import SqlCustomerDirectory, sqlite_url
from breachbook.datasource import DataSource, load_datasource
from breachbook.errors import BreachbookError
from breachbook.models import Customer, DataCategory, Incident, RejectedRecord
from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.wiring import open_customers
from tests import clinic
from tests.conftest import Fakes, run_with


@pytest.fixture(scope="module")
def clinic_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clinic") / "clinic.sqlite"
    engine = create_engine(sqlite_url(path, read_only=False))
    clinic.build_clinic(engine)
    engine.dispose()
    return path


def directory_on(url: str) -> SqlCustomerDirectory:
    return SqlCustomerDirectory(url, True, load_datasource(clinic.MAPPING), clinic.MAPPING)


def affected(
    directory: SqlCustomerDirectory, incident: dict[str, Any], batch_size: int = 2
) -> tuple[dict[str, Customer], list[str]]:
    found: dict[str, Customer] = {}
    rejected: list[str] = []
    for batch in directory.iter_affected(Incident.model_validate(incident), batch_size):
        for item in batch:
            if isinstance(item, RejectedRecord):
                rejected.append(item.customer_id)
            else:
                assert item.id not in found, f"customer {item.id} came twice"
                found[item.id] = item
    return found, rejected


def check_clinic_breach(directory: SqlCustomerDirectory) -> None:
    """What the clinic breach exposes, customer by customer (shared with PostgreSQL)."""
    found, rejected = affected(directory, clinic.breach())
    assert {cid: set(c.categories) for cid, c in found.items()} == clinic.EXPECTED
    assert rejected == ["6"]
    ada = found["1"]
    assert (ada.full_name, ada.honorific, ada.locale) == ("Ada Quill", "Dr", "en-US")
    assert (ada.country, ada.region, ada.jurisdiction) == ("US", "WA", "US-WA")
    assert found["2"].locale == "en"  # no language on file: the mapping's default_locale


def test_exposed_categories_follow_the_columns_that_hold_a_value(clinic_db: Path) -> None:
    directory = directory_on(sqlite_url(clinic_db, read_only=True))
    try:
        check_clinic_breach(directory)
    finally:
        directory.close()


def test_reading_after_a_customer_continues_in_key_order_with_the_same_categories(
    clinic_db: Path,
) -> None:
    """A delivery batch starts after the previous batch's last customer, in the directory's
    order (here an integer key), with each customer's categories from every table as before."""
    directory = directory_on(sqlite_url(clinic_db, read_only=True))
    incident = Incident.model_validate(clinic.breach())
    try:
        everyone = [c for page in directory.iter_affected(incident, 2) for c in page]
        rest = [c for page in directory.iter_affected(incident, 2, after="2") for c in page]
    finally:
        directory.close()
    ids = [c.customer_id if isinstance(c, RejectedRecord) else c.id for c in everyone]
    assert rest == everyone[ids.index("2") + 1 :] != []


def test_a_customer_table_column_counts_only_where_it_holds_a_value(clinic_db: Path) -> None:
    directory = directory_on(sqlite_url(clinic_db, read_only=True))
    breach = clinic.breach(
        exposed_tables=[{"table": "patients", "columns": ["first_nm", "last_nm", "ssn"]}]
    )
    try:
        found, rejected = affected(directory, breach, batch_size=3)
    finally:
        directory.close()
    name, ssn = DataCategory.NAME, DataCategory.GOVERNMENT_ID
    assert {cid: set(c.categories) for cid, c in found.items()} == {
        "1": {name, ssn},
        "2": {name},  # ssn NULL
        "3": {name},  # ssn only spaces
        "4": {name},
        "5": {name},
        "7": {name},
    }
    assert rejected == ["6"]


def test_rows_outside_the_time_window_are_not_counted(clinic_db: Path) -> None:
    directory = directory_on(sqlite_url(clinic_db, read_only=True))
    diagnoses = {"table": "diagnoses", "columns": ["diagnosis"]}
    try:
        everything, _ = affected(directory, clinic.breach(exposed_tables=[diagnoses]))
        windowed, _ = affected(directory, clinic.breach(exposed_tables=[diagnoses | clinic.WINDOW]))
        before, _ = affected(
            directory,
            clinic.breach(
                exposed_tables=[
                    diagnoses
                    | {"rows_from": "2026-09-01T00:00:00Z", "rows_until": "2026-10-15T00:00:00Z"}
                ]
            ),
        )
    finally:
        directory.close()
    assert set(everything) == {"1", "5", "7"}  # 2's rows are empty; 6 is unusable
    assert set(windowed) == {"1", "7"}
    assert set(before) == {"1", "5"}


def test_the_evidence_snapshot_reads_the_mapped_columns_in_key_order(clinic_db: Path) -> None:
    directory = directory_on(sqlite_url(clinic_db, read_only=True))
    try:
        lines = b"".join(directory.table_snapshot("diagnoses", ["icd_code"])).splitlines()
        with pytest.raises(BreachbookError, match="has no mapped column"):
            list(directory.table_snapshot("diagnoses", ["secret"]))
    finally:
        directory.close()
    assert [json.loads(line) for line in lines][:2] == [[1, "J45"], [2, "Z00"]]


def clinic_settings(clinic_db: Path, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        customers_url=SecretStr(f"sqlite:///{clinic_db}"),
        datasource=clinic.MAPPING,
    )


@pytest.mark.parametrize(
    "statement", ["DELETE FROM diagnoses", "UPDATE patients SET ssn = NULL", "DROP TABLE visits"]
)
def test_the_wired_directory_cannot_write(clinic_db: Path, tmp_path: Path, statement: str) -> None:
    before = clinic_db.read_bytes()
    directory = open_customers(clinic_settings(clinic_db, tmp_path))
    try:
        with (
            pytest.raises(OperationalError, match="readonly database"),
            directory._engine.begin() as conn,
        ):
            conn.execute(text(statement))
    finally:
        directory.close()
    assert clinic_db.read_bytes() == before


def test_a_drill_on_the_clinic_schema_owes_the_us_states_and_writes_nothing_there(
    clinic_db: Path, tmp_path: Path, fakes: Fakes
) -> None:
    """Through the product's path: settings name the clinic and its mapping; the incident
    names only tables and columns, and the run derives its data categories."""
    before = clinic_db.read_bytes()
    incident_file = tmp_path / "incident.yaml"
    breach = clinic.breach()
    breach["exposed_tables"].append({"table": "patients", "columns": ["first_nm", "last_nm"]})
    incident_file.write_text(json.dumps(breach), encoding="utf-8")
    out = tmp_path / "out"
    run_with(Mode.DRILL, clinic_settings(clinic_db, tmp_path), fakes, out, incident_file)
    obligations = json.loads((out / "obligations.json").read_text(encoding="utf-8"))
    owed = {o["id"]: o["by_jurisdiction"] for o in obligations["obligations"]}
    assert owed["us-wa"] == {"US-WA": 1}  # Ada: name and diagnosis
    assert owed["us-il"] == {"US-IL": 2}  # Ben (bank account), Gus (diagnoses, account, login)
    assert owed["us-ca"] == {"US-CA": 1}  # Dev: login
    assert obligations["no_rule_for_jurisdiction"] == {}
    assert obligations["unusable_records"] == ["6"]
    audience = json.loads((out / "audience.json").read_text(encoding="utf-8"))
    assert audience["exposed_categories"] == sorted(
        ["name", "medical", "financial_account", "health_insurance", "account_credentials"]
    )
    assert (out / "letters" / "us-wa" / "1.txt").is_file()
    assert "Ada Quill" in (out / "letters" / "us-wa" / "1.txt").read_text(encoding="utf-8")
    for document in ("plan.json", "obligations.json", "audience.json", "report.md"):
        written = (out / document).read_text(encoding="utf-8")
        assert not re.search(r"Quill|Ortiz|Brandt|clinic\.example|000-11-1111", written)
    assert clinic_db.read_bytes() == before


def test_an_incident_naming_an_unmapped_column_stops_before_the_run(
    clinic_db: Path, tmp_path: Path, fakes: Fakes
) -> None:
    incident_file = tmp_path / "incident.yaml"
    breach = clinic.breach(exposed_tables=[{"table": "diagnoses", "columns": ["notes"]}])
    incident_file.write_text(json.dumps(breach), encoding="utf-8")
    with pytest.raises(
        BreachbookError,
        match=r"column\(s\) notes of diagnoses are not in the data source .*clinic.yaml",
    ):
        run_with(
            Mode.DRILL, clinic_settings(clinic_db, tmp_path), fakes, tmp_path / "out", incident_file
        )
    assert not (tmp_path / "out").exists()


# ---- names that are SQL keywords or need quoting reach the database quoted ---------------

ODD = MetaData()
ODD_PEOPLE = Table(
    "user",
    ODD,
    Column("select", String(10), primary_key=True),
    Column("from", String(80)),
    Column("where", String(200)),
    Column("Group", String(2)),
)
ODD_ORDERS = Table(
    "order",
    ODD,
    Column("by", Integer, primary_key=True),
    Column("table", String(10), ForeignKey("user.select")),
    Column("desc", String(80)),
)


def odd_mapping() -> DataSource:
    return DataSource.model_validate(
        {
            "version": 1,
            "customers": {
                "table": "user",
                "columns": {
                    "id": "select",
                    "full_name": "from",
                    "email": "where",
                    "country": "Group",
                },
            },
            "tables": [
                {
                    "table": "order",
                    "join": {"column": "table"},
                    "categories": {"desc": "purchase_history"},
                    "other_columns": ["by"],
                }
            ],
        }
    )


@pytest.fixture
def odd_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "odd.sqlite"
    engine = create_engine(sqlite_url(path, read_only=False))
    ODD.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(ODD_PEOPLE),
            [
                {
                    "select": "u1",
                    "from": 'Robert\'); DROP TABLE "order";--',
                    "where": "u1@example.org",
                    "Group": "DE",
                },
                {"select": "u2", "from": "Second Person", "where": "u2@example.org", "Group": "FR"},
            ],
        )
        conn.execute(insert(ODD_ORDERS), [{"by": 1, "table": "u1", "desc": "a lamp"}])
    engine.dispose()
    yield path


def test_keyword_names_are_quoted_and_values_are_never_sql(odd_db: Path) -> None:
    directory = SqlCustomerDirectory(sqlite_url(odd_db, read_only=True), True, odd_mapping())
    incident = {
        **clinic.breach(),
        "exposed_tables": [{"table": "order", "columns": ["table", "desc"]}],
    }
    try:
        assert directory.check_readable().verdict == "VERIFIED"
        found, rejected = affected(directory, incident)
        snapshot = b"".join(directory.table_snapshot("order", ["desc"]))
    finally:
        directory.close()
    assert {cid: set(c.categories) for cid, c in found.items()} == {
        "u1": {DataCategory.PURCHASE_HISTORY}
    }
    assert rejected == []
    assert json.loads(snapshot) == [1, "a lamp"]
    connection = sqlite3.connect(odd_db)
    assert connection.execute('SELECT count(*) FROM "order"').fetchone()[0] == 1
    connection.close()


def test_a_hostile_name_in_a_mapping_is_refused_before_any_query() -> None:
    raw = odd_mapping().model_dump()
    raw["tables"][0]["table"] = 'order"; DROP TABLE "user'
    with pytest.raises(ValueError, match="String should match pattern"):
        DataSource.model_validate(raw)


def test_a_demo_world_made_by_an_earlier_version_is_made_again_with_its_mapping(
    tmp_path: Path,
) -> None:
    """A world without a column this version maps (customers.tax_id) would fail every drill:
    it is rebuilt, and its data-source file written."""
    from breachbook.demo import customers, ensure_demo_world, metadata

    folder = tmp_path / "demo"
    folder.mkdir()
    engine = create_engine(sqlite_url(folder / "customers.sqlite", read_only=False))
    metadata.create_all(engine, tables=[t for t in metadata.sorted_tables if t is not customers])
    engine.dispose()
    old = sqlite3.connect(folder / "customers.sqlite")
    old.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, full_name TEXT)")
    old.executemany("INSERT INTO customers VALUES (?, 'x')", [(f"C{n}",) for n in range(20)])
    old.commit()
    old.close()
    world = ensure_demo_world(folder, size=20)
    mapping = load_datasource(folder / "datasource.yaml")
    directory = SqlCustomerDirectory(sqlite_url(world.customers_db, True), True, mapping)
    try:
        assert directory.check_readable().verdict == "VERIFIED"
    finally:
        directory.close()
