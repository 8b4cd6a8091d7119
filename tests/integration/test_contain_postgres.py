"""Containment on a real PostgreSQL: a drill verifies every step and changes nothing, LIVE
locks the role, ends a session another connection holds and revokes its grants, and restore
puts the role and its grants back. Each test has its own database and throwaway roles."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from breachbook.connectors.postgres_admin import PostgresAdmin, libpq_url
from breachbook.engine import Status
from breachbook.errors import DrillWriteBlocked
from breachbook.modes import Mode
from breachbook.ports import Changed, Check
from breachbook.settings import Settings
from breachbook.wiring import database_admin, mode_profile
from tests.integration.contain import by_target, restore_cli, run_contain, write_incident

pytestmark = pytest.mark.postgres

STATE_ROLE = """
SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
       rolreplication, rolconnlimit, rolvaliduntil, rolbypassrls
FROM pg_authid WHERE rolname = %s"""
STATE_ACLS = """
SELECT n.nspname, c.relname, c.relacl::text FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('public', 'sales') AND c.relkind = 'r' ORDER BY 1, 2"""
STATE_SCHEMA = "SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname = 'sales'"


@dataclass
class World:
    """A database with tables the breached role reads, and the roles a test needs."""

    admin_url: str
    """libpq URL to the test database as the superuser."""
    role: str
    weak: str
    """A login role without CREATEROLE, pg_signal_backend or table ownership."""

    def as_role(self, role: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_url, user=role)

    def connect(self, role: str | None = None) -> psycopg.Connection[Any]:
        return psycopg.connect(self.as_role(role or "postgres"), autocommit=True)

    def state(self) -> dict[str, Any]:
        """The role's attributes in pg_authid and every grant in the database, as stored."""
        with self.connect() as conn:
            return {
                "role": conn.execute(STATE_ROLE, (self.role,)).fetchall(),
                "tables": conn.execute(STATE_ACLS).fetchall(),
                "schema": conn.execute(STATE_SCHEMA).fetchall(),
            }

    def sessions(self) -> int:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (self.role,)
            ).fetchone()
            assert row is not None
            return int(row[0])


@pytest.fixture
def world(pg_admin_url: str) -> Iterator[World]:
    tag = uuid.uuid4().hex[:8]
    server = libpq_url(pg_admin_url)
    name, role, weak = f"bb_contain_{tag}", f"bb_etl_{tag}", f"bb_weak_{tag}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        for each in (role, weak):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(each)))
    url = psycopg.conninfo.make_conninfo(server, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        r = sql.Identifier(role)
        for statement in (
            sql.SQL("CREATE TABLE customers (id int)"),
            sql.SQL("CREATE TABLE orders (id int)"),
            sql.SQL("CREATE SCHEMA sales"),
            sql.SQL("CREATE TABLE sales.invoices (id int)"),
            sql.SQL("GRANT SELECT, INSERT ON customers TO {}").format(r),
            sql.SQL("GRANT SELECT ON orders TO {} WITH GRANT OPTION").format(r),
            sql.SQL("GRANT USAGE ON SCHEMA sales TO {}").format(r),
            sql.SQL("GRANT SELECT ON sales.invoices TO {}").format(r),
        ):
            conn.execute(statement)
    yield World(url, role, weak)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        for each in (role, weak):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(each)))


def settings_for(tmp_path: Path, admin_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_admin_url=SecretStr(admin_url))


def incident_for(tmp_path: Path, world: World, incident_id: str) -> Path:
    tables = [{"table": "customers", "columns": ["id"]}, {"table": "orders", "columns": ["id"]}]
    return write_incident(
        tmp_path / "incident", incident_id, database_role=world.role, exposed_tables=tables
    )


DB_STEPS = ("lock-db-role", "end-db-sessions", "revoke-db-privileges")


def test_drill_verifies_each_step_and_leaves_role_grants_and_sessions_as_they_were(
    world: World, tmp_path: Path
) -> None:
    held = world.connect(world.role)
    before = world.state()
    result = run_contain(
        Mode.DRILL,
        settings_for(tmp_path, world.admin_url),
        incident_for(tmp_path, world, "inc-pg-drill"),
        tmp_path / "out",
    )
    entries = [e for e in result.entries() if e.step_id in DB_STEPS]
    assert [(e.step_id, e.target) for e in entries] == [
        ("lock-db-role", world.role),
        ("end-db-sessions", world.role),
        ("revoke-db-privileges", "table:customers"),
        ("revoke-db-privileges", "table:orders"),
        ("revoke-db-privileges", "schema:sales"),
    ]
    assert {e.verdict for e in entries} == {"VERIFIED"}
    assert {e.status for e in entries} == {Status.PLANNED}
    lock, end, customers, _, schema = entries
    assert lock.reason == (
        f"role {world.role} exists (login on, connection limit -1, 1 sessions); "
        "responder postgres is superuser"
    )
    assert lock.method == "PostgreSQL catalogue (read-only)"
    assert lock.would == f"lock database role {world.role} (NOLOGIN, connection limit 0)"
    assert end.reason.startswith(f"role {world.role} has 1 open sessions")
    assert customers.reason.startswith(
        f"table public.customers exists (owner postgres); {world.role} can SELECT/INSERT"
    )
    assert schema.reason.startswith("schema sales exists (owner postgres, 1 tables)")
    assert world.state() == before
    assert held.execute("SELECT 1").fetchone() == (1,)
    held.close()


def test_live_locks_ends_the_held_session_revokes_and_restore_puts_everything_back(
    world: World, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, world.admin_url)
    incident = incident_for(tmp_path, world, "inc-pg-live")
    held = world.connect(world.role)
    before = world.state()

    result = run_contain(Mode.LIVE, settings, incident, tmp_path / "live")

    entries = [e for e in result.entries() if e.step_id in DB_STEPS]
    assert {e.status for e in entries} == {Status.COMPLETED}, [e.details for e in entries]
    assert by_target(result, "end-db-sessions")[world.role].details["terminated"] == 1
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        world.connect(world.role)
    after = world.state()
    assert after["role"][0][5:8] == (False, False, 0)  # rolcanlogin, rolreplication, limit
    with world.connect() as conn:
        can = conn.execute(
            "SELECT has_table_privilege(%s, 'customers', 'SELECT'),"
            " has_table_privilege(%s, 'sales.invoices', 'SELECT'),"
            " has_schema_privilege(%s, 'sales', 'USAGE')",
            (world.role, world.role, world.role),
        ).fetchone()
    assert can == (False, False, False)

    again = run_contain(Mode.LIVE, settings, incident, tmp_path / "again")
    assert {e.status for e in again.entries() if e.step_id in DB_STEPS} == {Status.ALREADY_DONE}
    assert world.state() == after

    output = restore_cli(settings, "inc-pg-live")
    assert "4 change(s) considered" in output
    assert world.state() == before
    world.connect(world.role).close()


def test_a_responder_without_the_rights_gets_failed_with_the_missing_privilege(
    world: World, tmp_path: Path
) -> None:
    before = world.state()
    result = run_contain(
        Mode.DRILL,
        settings_for(tmp_path, world.as_role(world.weak)),
        incident_for(tmp_path, world, "inc-pg-weak"),
        tmp_path / "out",
    )
    reasons = {(e.step_id, e.target): (e.verdict, e.reason) for e in result.entries()}
    lock = reasons[("lock-db-role", world.role)]
    assert lock[0] == "FAILED" and lock[1].endswith(f"responder {world.weak} lacks CREATEROLE")
    # end-db-sessions and revoke depend on the lock: refused, they block what needs them.
    assert reasons[("end-db-sessions", "-")][0] == ""
    assert world.state() == before


def test_each_check_names_what_is_missing(world: World, tmp_path: Path) -> None:
    """The checks one by one on the weak responder and on a role that does not exist."""
    weak = PostgresAdmin(world.as_role(world.weak), read_only=True)
    assert weak.check_end_sessions(world.role) == Check.failed(
        f"role {world.role} has 0 open sessions; responder {world.weak} is neither superuser "
        "nor in pg_signal_backend",
        "PostgreSQL catalogue (read-only)",
    )
    revoke = weak.check_revoke_privileges(world.role, "table:customers")
    assert revoke.verdict.value == "FAILED"
    assert revoke.reason.endswith(
        f"responder {world.weak} is neither superuser nor a member of owner postgres"
    )
    admin = PostgresAdmin(world.admin_url, read_only=True)
    assert admin.check_lock_role("bb_nobody").reason == "role bb_nobody does not exist"
    assert admin.check_revoke_privileges(world.role, "table:nothing").reason == (
        "table nothing does not exist"
    )
    assert admin.check_lock_role("postgres").reason.endswith("it is the responder's own role")


class ReadThatWrites(PostgresAdmin):
    """A deliberately wrong adapter: its read-only check locks the role."""

    def check_lock_role(self, role: str) -> Check:
        self.lock_role(role)
        return Check.verified("locked while checking", "bug")


def test_the_drill_transport_refuses_a_write_behind_a_read_method(
    world: World, tmp_path: Path
) -> None:
    before = world.state()
    drill = mode_profile(Mode.DRILL)
    built = database_admin(settings_for(tmp_path, world.admin_url), drill.transport_read_only)
    assert built is not None
    with pytest.raises(DrillWriteBlocked, match="drill: refused SQL ALTER"):
        built.lock_role(world.role)
    with pytest.raises(DrillWriteBlocked, match="drill: refused SQL SELECT"):
        built.end_sessions(world.role)
    buggy = ReadThatWrites(world.admin_url, read_only=drill.transport_read_only)
    with pytest.raises(DrillWriteBlocked):
        buggy.check_lock_role(world.role)
    # Below the statement list, the session itself is read-only.
    with buggy._session() as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(world.role)))
    assert world.state() == before


def test_restore_puts_back_exactly_the_recorded_grants(world: World) -> None:
    admin = PostgresAdmin(world.admin_url)
    before = world.state()
    changed: Changed = admin.revoke_privileges(world.role, "table:orders")
    assert changed.prior == {"role": world.role, "table": [["SELECT", True]]}
    assert world.state() != before
    admin.restore_privileges(world.role, "table:orders", changed.prior or {})
    assert world.state() == before
