"""The ledger and the customer directory on a real PostgreSQL server."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, insert, text
from sqlalchemy.exc import DBAPIError

from breachbook.clock import SystemClock
from breachbook.connectors.customers_sql import SqlCustomerDirectory
from breachbook.datasource import DataSource, load_datasource
from breachbook.demo import DemoWorld, metadata
from breachbook.ledger import AUTOMATION, Entry, ItemStatus, Ledger
from breachbook.models import DataCategory, Incident, RejectedRecord
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import DEMO_APPROVERS, RunRequest, open_customers
from tests import clinic
from tests.conftest import Fakes, run_with
from tests.fakes import RecordingMail
from tests.unit.test_any_schema import check_clinic_breach

pytestmark = pytest.mark.postgres


def test_ledger_chain_on_postgres_under_concurrent_writers(pg_url: str) -> None:
    ledger = Ledger(pg_url, SystemClock())

    def write(worker: int) -> None:
        for n in range(25):
            ledger.append(
                Entry(
                    "inc-pg",
                    f"run-{worker}",
                    f"step-{n}",
                    "t",
                    "outcome",
                    AUTOMATION,
                    "live",
                    "completed",
                    {"n": n},
                )
            )

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ledger.head("inc-pg")[0] == 100
    assert ledger.verify() == []
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE ledger_entries SET actor = 'someone-else' WHERE seq = 42"))
    engine.dispose()
    assert [(p.incident_id, p.seq) for p in ledger.verify()] == [("inc-pg", 42)]
    ledger.close()


def test_concurrent_claims_on_postgres_act_once_per_key(pg_url: str) -> None:
    """Eight writers race for the same 100 items: each item is won exactly once."""
    ledger = Ledger(pg_url, SystemClock())
    won: list[str] = []
    lock = threading.Lock()

    def race(worker: int) -> None:
        for n in range(100):
            claimant = Entry(
                "inc-race",
                f"run-{worker}",
                "deliver",
                f"k{n}",
                "claim",
                AUTOMATION,
                "live",
                "claimed",
                {},
            )
            claim = ledger.claim(claimant, f"k{n}")
            if claim is not None:
                with lock:
                    won.append(claim.key)

    threads = [threading.Thread(target=race, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == sorted(f"k{n}" for n in range(100))
    assert ledger.verify(incident_id="inc-race") == []
    ledger.close()


def test_two_live_runs_of_one_incident_in_parallel_send_each_letter_once(
    pg_url: str, small_world: DemoWorld, demo_run_settings: Settings, tmp_path: Path
) -> None:
    """The whole playbook twice at once, the ledger on PostgreSQL: no letter goes twice."""
    settings = demo_run_settings.model_copy(update={"ledger_url": SecretStr(pg_url)})
    mail = RecordingMail()
    errors: list[BaseException] = []

    def respond(n: int) -> None:
        fakes = Fakes(tmp_path / f"run-{n}", mail=mail)
        try:
            # the real clock: a run that meets an item the other holds really waits for it
            run_with(
                Mode.LIVE, settings, fakes, None, small_world.incident_file, clock=SystemClock()
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=respond, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    keys = [letter.key for letter in mail.sent]
    assert len(keys) == len(set(keys)) > 100
    ledger = Ledger(pg_url, SystemClock())
    done = ledger.item_statuses("demo-2026-antiques-leak", "letters.deliver")
    assert set(done.values()) == {ItemStatus.DONE} and len(done) == len(keys)
    ledger.close()


@pytest.fixture(scope="module")
def pg_customers(pg_url: str, small_world: DemoWorld) -> str:
    """The small demo world copied into PostgreSQL, with triggers recording every write."""
    engine = create_engine(pg_url)
    metadata.create_all(engine)
    source = sqlite3.connect(small_world.customers_db)
    source.row_factory = sqlite3.Row
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            rows = [dict(r) for r in source.execute(f"SELECT * FROM {table.name}")]
            conn.execute(insert(table), rows)
        conn.execute(
            text("CREATE TABLE write_log (tbl text, op text, at timestamptz DEFAULT now())")
        )
        conn.execute(
            text(
                "CREATE FUNCTION record_write() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN INSERT INTO write_log(tbl, op) VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END $$"
            )
        )
        for table in metadata.sorted_tables:
            conn.execute(
                text(
                    f"CREATE TRIGGER record_{table.name} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                    f"ON {table.name} FOR EACH STATEMENT EXECUTE FUNCTION record_write()"
                )
            )
    source.close()
    engine.dispose()
    return pg_url


def test_read_only_directory_cannot_write(pg_customers: str) -> None:
    directory = SqlCustomerDirectory(pg_customers, read_only=True)
    with (
        pytest.raises(DBAPIError, match="read-only transaction"),
        directory._engine.begin() as conn,
    ):
        conn.execute(text("DELETE FROM customers"))
    directory.close()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM favourites",
        "INSERT INTO favourites (customer_id, antique) SELECT id, 'Ming vase' FROM customers LIMIT 1",
    ],
)
def test_wired_directory_cannot_write_on_postgres(pg_customers: str, statement: str) -> None:
    directory = open_customers(Settings(customers_url=pg_customers))
    try:
        with (
            pytest.raises(DBAPIError, match="read-only transaction"),
            directory._engine.begin() as conn,
        ):
            conn.execute(text(statement))
    finally:
        directory.close()
    engine = create_engine(pg_customers)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM write_log")).scalar_one() == 0
    engine.dispose()


def test_drill_against_postgres_writes_nothing_there(
    pg_customers: str, small_world: DemoWorld, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, customers_url=pg_customers, approvers=DEMO_APPROVERS)
    _, result = execute(
        RunRequest(
            mode=Mode.DRILL, incident_file=small_world.incident_file, out_dir=tmp_path / "out"
        ),
        settings=settings,
    )
    failed = [e for e in result.entries() if e.verdict == "FAILED"]
    # only residents of places no rule covers: each FAILED for a person to decide
    assert all(e.target.startswith("no-rule:") for e in failed), failed
    directory = SqlCustomerDirectory(pg_customers, read_only=True)
    about = Incident.from_file(small_world.incident_file)
    affected = sum(len(b) for b in directory.iter_affected(about, 100))
    directory.close()
    assert f"- affected_customers: {affected:,}" in (tmp_path / "out" / "report.md").read_text()
    engine = create_engine(pg_customers)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM write_log")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar_one() == 400
    engine.dispose()


# ---- a second customer schema, mapped by a data-source file -------------------------------


@pytest.fixture(scope="module")
def pg_clinic(pg_url: str) -> str:
    """The clinic schema of tests/clinic.py on PostgreSQL (dates and timestamps typed), with
    triggers recording every write."""
    engine = create_engine(pg_url)
    clinic.build_clinic(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE clinic_write_log (tbl text, op text)"))
        conn.execute(
            text(
                "CREATE FUNCTION record_clinic_write() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN INSERT INTO clinic_write_log VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END $$"
            )
        )
        for table in clinic.metadata.sorted_tables:
            conn.execute(
                text(
                    f"CREATE TRIGGER log_{table.name} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                    f"ON {table.name} FOR EACH STATEMENT EXECUTE FUNCTION record_clinic_write()"
                )
            )
    engine.dispose()
    return pg_url


def _clinic_writes(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count: int = conn.execute(text("SELECT count(*) FROM clinic_write_log")).scalar_one()
    engine.dispose()
    return count


def test_the_clinic_mapping_gives_the_same_exposure_on_postgres(pg_clinic: str) -> None:
    directory = SqlCustomerDirectory(
        pg_clinic, True, load_datasource(clinic.MAPPING), clinic.MAPPING
    )
    try:
        check_clinic_breach(directory)
    finally:
        directory.close()


def test_the_clinic_window_is_exact_on_typed_postgres_columns(pg_clinic: str) -> None:
    """A timestamp column is compared to the second on PostgreSQL (SQLite counts whole days)."""
    directory = SqlCustomerDirectory(pg_clinic, True, load_datasource(clinic.MAPPING))
    hour_after = {"rows_from": "2026-11-05T10:30:00Z", "rows_until": "2026-11-05T23:00:00Z"}
    exposed = [{"table": "diagnoses", "columns": ["diagnosis"], **hour_after}]
    try:
        batches = list(
            directory.iter_affected(
                Incident.model_validate(clinic.breach(exposed_tables=exposed)), 10
            )
        )
    finally:
        directory.close()
    assert batches == []  # every diagnosis of that day was recorded at 09:30


@pytest.mark.parametrize("statement", ["DELETE FROM diagnoses", "UPDATE patients SET ssn = NULL"])
def test_the_wired_clinic_directory_cannot_write_on_postgres(
    pg_clinic: str, statement: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, customers_url=pg_clinic, datasource=clinic.MAPPING)
    directory = open_customers(settings)
    try:
        with (
            pytest.raises(DBAPIError, match="read-only transaction"),
            directory._engine.begin() as conn,
        ):
            conn.execute(text(statement))
    finally:
        directory.close()
    assert _clinic_writes(pg_clinic) == 0


def test_a_drill_on_the_clinic_schema_on_postgres_writes_nothing_there(
    pg_clinic: str, tmp_path: Path
) -> None:
    breach = clinic.breach()
    breach["exposed_tables"].append({"table": "patients", "columns": ["first_nm", "last_nm"]})
    incident_file = tmp_path / "incident.json"
    incident_file.write_text(json.dumps(breach), encoding="utf-8")
    settings = Settings(home=tmp_path / "home", customers_url=pg_clinic, datasource=clinic.MAPPING)
    run_with(Mode.DRILL, settings, Fakes(tmp_path), tmp_path / "out", incident_file)
    obligations = json.loads((tmp_path / "out" / "obligations.json").read_text(encoding="utf-8"))
    owed = {o["id"]: o["affected_count"] for o in obligations["obligations"]}
    assert (owed["us-wa"], owed["us-il"], owed["us-ca"]) == (1, 2, 1)
    assert _clinic_writes(pg_clinic) == 0


def test_a_mapping_reads_tables_in_their_own_postgres_schema(pg_url: str) -> None:
    """db_schema: the tables live in a schema other than the search path's."""
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA crm"))
        conn.execute(
            text("CREATE TABLE crm.people (pid int PRIMARY KEY, nm text, mail text, cc text)")
        )
        conn.execute(text("CREATE TABLE crm.ids (pid int, national_id text)"))
        conn.execute(
            text(
                "INSERT INTO crm.people VALUES (1, 'Ana Lima', 'ana@example.org', 'BR'), "
                "(2, 'Bo Berg', 'bo@example.org', 'SE')"
            )
        )
        conn.execute(text("INSERT INTO crm.ids VALUES (1, '000.000.000-00'), (2, NULL)"))
    engine.dispose()
    mapping = DataSource.model_validate(
        {
            "version": 1,
            "db_schema": "crm",
            "customers": {
                "table": "people",
                "columns": {"id": "pid", "full_name": "nm", "email": "mail", "country": "cc"},
            },
            "tables": [
                {
                    "table": "ids",
                    "join": {"column": "pid"},
                    "categories": {"national_id": "government_id"},
                }
            ],
        }
    )
    directory = SqlCustomerDirectory(pg_url, True, mapping)
    incident = clinic.breach(exposed_tables=[{"table": "ids", "columns": ["national_id"]}])
    try:
        assert directory.check_readable().verdict == "VERIFIED"
        found = [
            c for b in directory.iter_affected(Incident.model_validate(incident), 10) for c in b
        ]
    finally:
        directory.close()
    assert [(c.id, set(c.categories)) for c in found if not isinstance(c, RejectedRecord)] == [
        ("1", {DataCategory.GOVERNMENT_ID})
    ]
