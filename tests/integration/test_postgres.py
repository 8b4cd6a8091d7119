"""The ledger and the customer directory on a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, insert, text
from sqlalchemy.exc import DBAPIError

from breachbook.clock import SystemClock
from breachbook.connectors.customers_sql import SqlCustomerDirectory, metadata
from breachbook.demo import DemoWorld
from breachbook.ledger import AUTOMATION, Entry, ItemStatus, Ledger
from breachbook.models import DataCategory
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, open_customers
from tests.conftest import Fakes, run_with
from tests.fakes import RecordingMail

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
            run_with(Mode.LIVE, settings, fakes, None, small_world.incident_file)
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
    settings = Settings(home=tmp_path, customers_url=pg_customers)
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
    affected = sum(len(b) for b in directory.iter_affected(frozenset(DataCategory), 100))
    directory.close()
    assert f"- affected_customers: {affected:,}" in (tmp_path / "out" / "report.md").read_text()
    engine = create_engine(pg_customers)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM write_log")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM customers")).scalar_one() == 400
    engine.dispose()
