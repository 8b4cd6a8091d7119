"""Containment on PostgreSQL (psycopg 3): lock a role, end its sessions, revoke its privileges.

Each check reads the catalogue only (role attributes, `pg_has_role`, `has_table_privilege`)
and says, one clause per check, what it found; each change first reads the state it will
alter and returns it as the prior state that `restore_role` / `restore_privileges` put back.
Identifiers are quoted by `psycopg.sql`, never formatted into the text.

Opened `read_only` (a drill), the session is read-only and every statement is checked against
`READS`, the adapter's list of read statements, before it is sent: a read-only transaction
still runs `SELECT pg_terminate_backend(...)`, so the session alone is not enough.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from breachbook.errors import ContainmentRefused, DrillWriteBlocked
from breachbook.ports import Changed, Check

METHOD = "PostgreSQL catalogue (read-only)"

RESPONDER: LiteralString = """
SELECT current_user, r.rolsuper, r.rolcreaterole,
       pg_has_role(current_user, 'pg_signal_backend', 'MEMBER'),
       current_setting('server_version_num')::int
FROM pg_roles r WHERE r.rolname = current_user"""

TARGET_ROLE: LiteralString = """
SELECT r.rolsuper, r.rolcanlogin, r.rolconnlimit,
       pg_has_role(current_user, r.oid, 'MEMBER WITH ADMIN OPTION'),
       pg_has_role(current_user, r.oid, 'USAGE'),
       (SELECT count(*) FROM pg_stat_activity a
         WHERE a.usename = r.rolname AND a.pid <> pg_backend_pid())
FROM pg_roles r WHERE r.rolname = %s"""

TABLE: LiteralString = """
SELECT n.nspname, c.relname, o.rolname, pg_has_role(current_user, c.relowner, 'USAGE'),
       has_table_privilege(%s, c.oid, 'SELECT'), has_table_privilege(%s, c.oid, 'INSERT'),
       has_table_privilege(%s, c.oid, 'UPDATE'), has_table_privilege(%s, c.oid, 'DELETE')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_roles o ON o.oid = c.relowner
WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"""

TABLE_GRANTS: LiteralString = """
SELECT a.privilege_type, a.is_grantable
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = to_regclass(%s) AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
ORDER BY 1"""

SCHEMA: LiteralString = """
SELECT n.nspname, o.rolname, pg_has_role(current_user, n.nspowner, 'USAGE'),
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))
FROM pg_namespace n JOIN pg_roles o ON o.oid = n.nspowner WHERE n.nspname = %s"""

SCHEMA_GRANTS: LiteralString = """
SELECT a.privilege_type, a.is_grantable
FROM pg_namespace n, aclexplode(n.nspacl) a
WHERE n.nspname = %s AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
ORDER BY 1"""

SCHEMA_TABLE_GRANTS: LiteralString = """
SELECT c.relname, a.privilege_type, a.is_grantable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
WHERE n.nspname = %s AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
ORDER BY 1, 2"""

READS = frozenset(
    {RESPONDER, TARGET_ROLE, TABLE, TABLE_GRANTS, SCHEMA, SCHEMA_GRANTS, SCHEMA_TABLE_GRANTS}
)
"""Every statement a drill may send. Anything else is refused before it leaves the process."""

PRIVILEGES: dict[str, sql.SQL] = {
    word: sql.SQL(word)
    for word in (
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
        "MAINTAIN",
    )
}
SCHEMA_PRIVILEGES: dict[str, sql.SQL] = {word: sql.SQL(word) for word in ("USAGE", "CREATE")}
"""The privilege words a restore may grant back, each a fixed piece of SQL."""
TABLE_TARGET = re.compile(r"^table:(?:([A-Za-z_][A-Za-z0-9_]*)\.)?([A-Za-z_][A-Za-z0-9_]*)$")
SCHEMA_TARGET = re.compile(r"^schema:([A-Za-z_][A-Za-z0-9_]*)$")
ADMIN_OPTION_NEEDED = 160000
"""From PostgreSQL 16, CREATEROLE alters only roles the responder holds with ADMIN OPTION."""


@dataclass(frozen=True)
class Responder:
    name: str
    superuser: bool
    createrole: bool
    signal_backend: bool
    server_version: int


@dataclass(frozen=True)
class Target:
    superuser: bool
    can_login: bool
    connection_limit: int
    admin_option: bool
    has_privileges_of: bool
    sessions: int


def libpq_url(url: str) -> str:
    """A SQLAlchemy-style URL (postgresql+psycopg://) as libpq takes it (postgresql://)."""
    return re.sub(r"^postgres(?:ql)?\+[a-z0-9]+://", "postgresql://", url)


class PostgresAdmin:
    """The DatabaseAdmin port on one PostgreSQL server, as the role the URL logs in with."""

    def __init__(self, url: str, read_only: bool = False, connect_timeout: int = 5) -> None:
        self._url = libpq_url(url)
        self._read_only = read_only
        self._timeout = connect_timeout

    # -- transport ------------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        options = "-c default_transaction_read_only=on" if self._read_only else ""
        with psycopg.connect(
            self._url, autocommit=True, connect_timeout=self._timeout, options=options
        ) as conn:
            yield conn

    def _run(
        self,
        conn: psycopg.Connection[Any],
        statement: LiteralString | sql.SQL | sql.Composed,
        params: Sequence[object] = (),
    ) -> list[tuple[Any, ...]]:
        """The one way a statement reaches the server; in a drill, reads from `READS` only."""
        if self._read_only and not (isinstance(statement, str) and statement in READS):
            shown = statement if isinstance(statement, str) else statement.as_string(conn)
            raise DrillWriteBlocked(f"drill: refused SQL {shown.split()[0]} (not a listed read)")
        try:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ContainmentRefused(f"PostgreSQL refused: {exc.diag.message_primary}") from exc
        except psycopg.errors.UndefinedObject as exc:
            raise ContainmentRefused(f"PostgreSQL: {exc.diag.message_primary}") from exc

    def _responder(self, conn: psycopg.Connection[Any]) -> Responder:
        name, superuser, createrole, signal, version = self._run(conn, RESPONDER)[0]
        return Responder(name, superuser, createrole, signal, version)

    def _target(self, conn: psycopg.Connection[Any], role: str) -> Target | None:
        rows = self._run(conn, TARGET_ROLE, (role,))
        return Target(*rows[0]) if rows else None

    def _existing(self, conn: psycopg.Connection[Any], role: str) -> Target:
        target = self._target(conn, role)
        if target is None:
            raise ContainmentRefused(f"database role {role} does not exist")
        return target

    # -- lock the role --------------------------------------------------------------------

    def check_lock_role(self, role: str) -> Check:
        with self._session() as conn:
            me, target = self._responder(conn), self._target(conn, role)
        if target is None:
            return Check.failed(f"role {role} does not exist", METHOD)
        found = (
            f"role {role} exists (login {'on' if target.can_login else 'off'}, "
            f"connection limit {target.connection_limit}, {target.sessions} sessions)"
        )
        if role == me.name:
            return Check.failed(f"{found}; it is the responder's own role", METHOD)
        if me.superuser:
            return Check.verified(f"{found}; responder {me.name} is superuser", METHOD)
        if target.superuser:
            return Check.failed(
                f"{found}; it is a superuser and responder {me.name} is not", METHOD
            )
        if not me.createrole:
            return Check.failed(f"{found}; responder {me.name} lacks CREATEROLE", METHOD)
        if me.server_version >= ADMIN_OPTION_NEEDED and not target.admin_option:
            return Check.failed(
                f"{found}; responder {me.name} has CREATEROLE but not ADMIN OPTION on {role}",
                METHOD,
            )
        return Check.verified(f"{found}; responder {me.name} has CREATEROLE", METHOD)

    def lock_role(self, role: str, connection_limit: int | None = None) -> Changed:
        with self._session() as conn:
            before = self._existing(conn, role)
            statement = sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role))
            if connection_limit is not None:
                statement = sql.SQL("{} CONNECTION LIMIT {}").format(
                    statement, sql.Literal(connection_limit)
                )
            self._run(conn, statement)
        details: dict[str, Any] = {"role": role, "login": "disabled"}
        if connection_limit is not None:
            details["connection_limit"] = connection_limit
        return Changed(
            details, {"login": before.can_login, "connection_limit": before.connection_limit}
        )

    def restore_role(self, role: str, prior: Mapping[str, Any]) -> Changed:
        login = bool(prior["login"])
        limit = int(prior.get("connection_limit", -1))
        with self._session() as conn:
            self._existing(conn, role)
            self._run(
                conn,
                sql.SQL("ALTER ROLE {} {} CONNECTION LIMIT {}").format(
                    sql.Identifier(role),
                    sql.SQL("LOGIN" if login else "NOLOGIN"),
                    sql.Literal(limit),
                ),
            )
        return Changed(
            {"role": role, "login": "enabled" if login else "disabled", "connection_limit": limit}
        )

    # -- end the sessions -----------------------------------------------------------------

    def check_end_sessions(self, role: str) -> Check:
        with self._session() as conn:
            me, target = self._responder(conn), self._target(conn, role)
        if target is None:
            return Check.failed(f"role {role} does not exist", METHOD)
        found = f"role {role} has {target.sessions} open sessions"
        if me.superuser:
            return Check.verified(f"{found}; responder {me.name} is superuser", METHOD)
        if target.superuser:
            return Check.failed(
                f"{found}; it is a superuser and responder {me.name} is not", METHOD
            )
        if me.signal_backend:
            return Check.verified(f"{found}; responder {me.name} is in pg_signal_backend", METHOD)
        if target.has_privileges_of:
            return Check.verified(
                f"{found}; responder {me.name} has the privileges of {role}", METHOD
            )
        return Check.failed(
            f"{found}; responder {me.name} is neither superuser nor in pg_signal_backend", METHOD
        )

    def end_sessions(self, role: str) -> Changed:
        with self._session() as conn:
            self._existing(conn, role)
            ended = self._run(
                conn,
                sql.SQL(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE usename = {} AND pid <> pg_backend_pid()"
                ).format(sql.Literal(role)),
            )
        return Changed({"role": role, "terminated": int(ended[0][0])})

    # -- revoke privileges ----------------------------------------------------------------

    def check_revoke_privileges(self, role: str, target: str) -> Check:
        with self._session() as conn:
            me, grantee = self._responder(conn), self._target(conn, role)
            if grantee is None:
                return Check.failed(f"role {role} does not exist", METHOD)
            table = TABLE_TARGET.match(target)
            if table:
                return self._check_table(conn, me, role, _qualified(table))
            schema = SCHEMA_TARGET.match(target)
            if schema:
                return self._check_schema(conn, me, role, schema.group(1))
        return Check.failed(f"target {target} is neither table:NAME nor schema:NAME", METHOD)

    def _check_table(
        self, conn: psycopg.Connection[Any], me: Responder, role: str, name: str
    ) -> Check:
        rows = self._run(conn, TABLE, (role, role, role, role, name))
        if not rows:
            return Check.failed(f"table {name} does not exist", METHOD)
        nsp, rel, owner, owns, *can = rows[0]
        held = [
            p for p, yes in zip(("SELECT", "INSERT", "UPDATE", "DELETE"), can, strict=True) if yes
        ]
        found = (
            f"table {nsp}.{rel} exists (owner {owner}); {role} can {'/'.join(held) or 'nothing'}"
        )
        return _owner_verdict(found, me, owner, owns)

    def _check_schema(
        self, conn: psycopg.Connection[Any], me: Responder, role: str, name: str
    ) -> Check:
        rows = self._run(conn, SCHEMA, (name,))
        if not rows:
            return Check.failed(f"schema {name} does not exist", METHOD)
        nsp, owner, owns, tables = rows[0]
        granted = self._run(conn, SCHEMA_TABLE_GRANTS, (name, role))
        found = (
            f"schema {nsp} exists (owner {owner}, {tables} tables); {role} holds "
            f"{len(granted)} table privileges in it"
        )
        return _owner_verdict(found, me, owner, owns)

    def revoke_privileges(self, role: str, target: str) -> Changed:
        with self._session() as conn:
            self._existing(conn, role)
            grantee = sql.Identifier(role)
            table = TABLE_TARGET.match(target)
            if table:
                name = _qualified(table)
                if not self._run(conn, TABLE, (role, role, role, role, name)):
                    raise ContainmentRefused(f"table {name} does not exist")
                held = self._run(conn, TABLE_GRANTS, (name, role))
                self._run(
                    conn,
                    sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(_table_id(table), grantee),
                )
                prior = {"role": role, "table": [[p, g] for p, g in held]}
                return Changed({"role": role, "revoked": len(held)}, prior)
            schema = SCHEMA_TARGET.match(target)
            if not schema:
                raise ContainmentRefused(f"target {target} is neither table:NAME nor schema:NAME")
            name = schema.group(1)
            on_schema = self._run(conn, SCHEMA_GRANTS, (name, role))
            on_tables = self._run(conn, SCHEMA_TABLE_GRANTS, (name, role))
            nsp = sql.Identifier(name)
            self._run(conn, sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(nsp, grantee))
            self._run(
                conn, sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(nsp, grantee)
            )
        prior = {
            "role": role,
            "schema": [[p, g] for p, g in on_schema],
            "tables": [[t, p, g] for t, p, g in on_tables],
        }
        return Changed({"role": role, "revoked": len(on_schema) + len(on_tables)}, prior)

    def restore_privileges(self, role: str, target: str, prior: Mapping[str, Any]) -> Changed:
        grants: list[sql.Composed] = []
        grantee = sql.Identifier(role)
        table = TABLE_TARGET.match(target)
        schema = SCHEMA_TARGET.match(target)
        if table:
            grants = [
                _grant(p, g, sql.SQL("TABLE {}").format(_table_id(table)), grantee)
                for p, g in prior.get("table", [])
            ]
        elif schema:
            nsp = schema.group(1)
            grants = [
                _grant(
                    p,
                    g,
                    sql.SQL("SCHEMA {}").format(sql.Identifier(nsp)),
                    grantee,
                    SCHEMA_PRIVILEGES,
                )
                for p, g in prior.get("schema", [])
            ] + [
                _grant(p, g, sql.SQL("TABLE {}").format(sql.Identifier(nsp, t)), grantee)
                for t, p, g in prior.get("tables", [])
            ]
        else:
            raise ContainmentRefused(f"target {target} is neither table:NAME nor schema:NAME")
        with self._session() as conn:
            self._existing(conn, role)
            for grant in grants:
                self._run(conn, grant)
        return Changed({"role": role, "granted": len(grants)})


def _qualified(match: re.Match[str]) -> str:
    schema, table = match.group(1), match.group(2)
    return f"{schema}.{table}" if schema else table


def _table_id(match: re.Match[str]) -> sql.Identifier:
    schema, table = match.group(1), match.group(2)
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


def _grant(
    privilege: str,
    grantable: bool,
    on: sql.Composable,
    grantee: sql.Identifier,
    allowed: Mapping[str, sql.SQL] = PRIVILEGES,
) -> sql.Composed:
    """GRANT one recorded privilege back; the privilege word comes from a fixed list."""
    if privilege not in allowed:
        raise ContainmentRefused(f"recorded privilege {privilege!r} is not one breachbook grants")
    statement = sql.SQL("GRANT {} ON {} TO {}").format(allowed[privilege], on, grantee)
    if grantable:
        statement = sql.SQL("{} WITH GRANT OPTION").format(statement)
    return statement


def _owner_verdict(found: str, me: Responder, owner: str, owns: bool) -> Check:
    """Only a superuser or a member of the owner may revoke on a table or schema."""
    if me.superuser:
        return Check.verified(f"{found}; responder {me.name} is superuser", METHOD)
    if owns:
        return Check.verified(f"{found}; responder {me.name} has the owner's privileges", METHOD)
    return Check.failed(
        f"{found}; responder {me.name} is neither superuser nor a member of owner {owner}",
        METHOD,
    )
