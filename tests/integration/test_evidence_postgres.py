"""Evidence collected from a real PostgreSQL server: the exposed tables and the investigators'
queries (pg_stat_activity, role grants, the access log) read once in one REPEATABLE READ
snapshot, nothing written there, and a connection killed mid-read failing only its item."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, text
from typer.testing import CliRunner

from breachbook.anchors import Signer, generate_key
from breachbook.cli import app
from breachbook.connectors.evidence_sql import EvidenceReadError, SqlEvidenceSource
from breachbook.custody import Bundle, Event
from breachbook.demo import DemoWorld, metadata
from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.vault import VaultKey
from tests.conftest import Fakes, run_with
from tests.evidence_playbook import snapshot_playbook

pytestmark = pytest.mark.postgres

ACCESS_ROWS = 20_000

PLAYBOOK = snapshot_playbook(
    "evidence-pg",
    """\
tables: "{{ incident.exposed_tables }}"
queries:
  - name: sessions
    sql: SELECT pid, usename, application_name, state FROM pg_stat_activity ORDER BY pid
  - name: role-grants
    sql: >-
      SELECT grantee, table_name, privilege_type
      FROM information_schema.role_table_grants
      WHERE table_schema = 'public' ORDER BY 1, 2, 3
  - name: access-log
    sql: SELECT id, actor, action, at FROM access_log ORDER BY id
""",
)


@pytest.fixture(scope="module")
def pg_world(pg_url: str, small_world: DemoWorld) -> str:
    """The small demo world and an application access log in PostgreSQL, a role granted on
    it, and a trigger table recording every write to any of them."""
    engine = create_engine(pg_url)
    metadata.create_all(engine)
    source = sqlite3.connect(small_world.customers_db)
    source.row_factory = sqlite3.Row
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            conn.execute(
                insert(table), [dict(r) for r in source.execute(f"SELECT * FROM {table.name}")]
            )
        conn.execute(
            text(
                "CREATE TABLE access_log (id serial PRIMARY KEY, actor text, action text, "
                "at timestamptz DEFAULT '2026-11-28T12:00:00Z')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO access_log (actor, action) SELECT 'analytics_etl', "
                "'SELECT customers #' || g FROM generate_series(1, :n) g"
            ),
            {"n": ACCESS_ROWS},
        )
        conn.execute(
            text(
                "DO $$ BEGIN CREATE ROLE analytics_etl; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
        )
        conn.execute(text("GRANT SELECT ON customers, access_log TO analytics_etl"))
        conn.execute(text("CREATE TABLE write_log (tbl text, op text)"))
        conn.execute(
            text(
                "CREATE FUNCTION record_write() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN INSERT INTO write_log VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END $$"
            )
        )
        for name in [*(t.name for t in metadata.sorted_tables), "access_log"]:
            conn.execute(
                text(
                    f"CREATE TRIGGER record_{name} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                    f"ON {name} FOR EACH STATEMENT EXECUTE FUNCTION record_write()"
                )
            )
    source.close()
    engine.dispose()
    return pg_url


def _writes(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count: int = conn.execute(text("SELECT count(*) FROM write_log")).scalar_one()
    engine.dispose()
    return count


def test_a_drill_on_postgres_seals_tables_and_query_results_and_writes_nothing_there(
    pg_world: str, small_world: DemoWorld, tmp_path: Path
) -> None:
    before = _writes(pg_world)
    playbook = tmp_path / "playbook.yaml"
    playbook.write_text(PLAYBOOK)
    settings = Settings(
        home=tmp_path / "home", customers_url=pg_world, evidence_drill_contents="encrypted"
    )
    out = tmp_path / "out"
    run_with(Mode.DRILL, settings, Fakes(tmp_path), out, small_world.incident_file, playbook)
    records = [
        json.loads(x) for x in (out / "evidence" / "manifest.jsonl").read_text().splitlines()
    ]
    collected = {r["item"]: r for r in records if r["event"] == "collected"}
    assert {"query:sessions", "query:role-grants", "query:access-log", "table:customers"} <= set(
        collected
    )
    assert [r for r in records if r["event"] == "failed"] == []
    assert "one snapshot" in collected["table:customers"]["source"]
    env = {"BREACHBOOK_HOME": str(tmp_path / "home")}
    verified = CliRunner().invoke(app, ["evidence", "verify", str(out / "evidence")], env=env)
    assert verified.exit_code == 0, verified.output
    exported = CliRunner().invoke(
        app, ["evidence", "export", str(out / "evidence"), "--to", str(tmp_path / "legal")], env=env
    )
    assert exported.exit_code == 0, exported.output
    files = {
        p.name.rsplit("-", 1)[0]: p.read_text() for p in (tmp_path / "legal" / "items").iterdir()
    }
    grants = [json.loads(line) for line in files["query_role-grants"].splitlines()]
    assert ["analytics_etl", "customers", "SELECT"] in grants
    log = files["query_access-log"].splitlines()
    assert len(log) == ACCESS_ROWS and json.loads(log[0])[:3] == [
        1,
        "analytics_etl",
        "SELECT customers #1",
    ]
    assert _writes(pg_world) == before


def test_every_table_and_query_comes_from_one_snapshot(pg_world: str) -> None:
    source = SqlEvidenceSource(pg_world)
    reads = source.read_consistently(
        [("orders", ["item"]), ("favourites", ["antique"])],
        [("access-log", "SELECT count(*) FROM access_log")],
    )
    first = next(reads)
    b"".join(first.chunks)  # the snapshot is taken: now someone writes
    writer = create_engine(pg_world)
    with writer.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO favourites (id, customer_id, antique) SELECT 999999, id, 'Snapshot vase' "
                "FROM customers LIMIT 1"
            )
        )
        conn.execute(text("INSERT INTO access_log (actor, action) VALUES ('late', 'x')"))
    favourites = b"".join(next(reads).chunks)
    count = b"".join(next(reads).chunks)
    assert b"Snapshot vase" not in favourites
    assert count == f"[{ACCESS_ROWS}]\n".encode()
    with writer.begin() as conn:
        conn.execute(text("DELETE FROM favourites WHERE antique = 'Snapshot vase'"))
        conn.execute(text("DELETE FROM access_log WHERE actor = 'late'"))
    writer.dispose()
    source.close()


def test_a_connection_killed_mid_read_fails_that_item_only(pg_world: str, tmp_path: Path) -> None:
    generate_key(tmp_path / "keys" / "signing-key")
    key = VaultKey.generate(tmp_path / "keys" / "evidence-key")
    bundle = Bundle(tmp_path / "bundle", Signer.load(tmp_path / "keys" / "signing-key"), key)
    bundle.append(Event.OPENED, contents="encrypted", evidence_key_id=key.key_id, legal_hold=True)
    source = SqlEvidenceSource(pg_world)
    admin = create_engine(pg_world)

    def killed_after_first_batch(chunks: Iterator[bytes]) -> Iterator[bytes]:
        yield next(chunks)
        with admin.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "datname = current_database() AND pid <> pg_backend_pid() AND "
                    "state = 'idle in transaction'"
                )
            )
        yield from chunks

    for read in source.read_consistently(
        [], [("access-log", "SELECT id, actor, action FROM access_log ORDER BY id")]
    ):
        record, stored = bundle.collect(
            read.item_id, read.source, "t", "now", killed_after_first_batch(read.chunks)
        )
    assert stored is None and record["event"] == "failed"
    assert "reading query access-log failed" in record["error"] and "vanished" in record["error"]
    assert bundle.vault.stored() == set() and bundle.vault.leftovers() == []
    # the next read opens a new snapshot and works
    reads = source.read_consistently([("orders", ["item"]), ("nope", ["x"])], [])
    assert b"".join(next(reads).chunks).count(b"\n") > 0
    with pytest.raises(EvidenceReadError, match="no table 'nope'"):
        b"".join(next(reads).chunks)
    admin.dispose()
    source.close()
