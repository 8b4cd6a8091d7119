"""A fresh PostgreSQL database per test module.

The server is, in this order: the one `TEST_POSTGRES_URL` names; the one on
127.0.0.1:5432 (which `.ci/run` starts); or, when neither answers, a private cluster made for
this test session with the PostgreSQL binaries installed on the machine (`initdb`, `pg_ctl`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tests.conftest import free_port

DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def _postgres_binaries() -> Path | None:
    """Debian keeps initdb and pg_ctl under /usr/lib/postgresql/<version>/bin, off the PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if versions:
        return versions[0].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")


def _as_postgres_user(folder: Path) -> list[str]:
    """initdb refuses to run as root: run the cluster as the 'postgres' account then."""
    if os.geteuid() != 0:
        return []
    shutil.chown(folder, "postgres", "postgres")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    configured = os.environ.get("TEST_POSTGRES_URL")
    if configured or _answers(DEFAULT_URL):
        yield configured or DEFAULT_URL
        return
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.fail(
            "PostgreSQL is needed: none answers on 127.0.0.1:5432, TEST_POSTGRES_URL is "
            "not set, and no initdb is installed (apt-get install postgresql)"
        )
    # Not under pytest's temporary folder: as root, that is closed to the postgres account.
    folder = Path(tempfile.mkdtemp(prefix="breachbook-test-pg-"))
    prefix = _as_postgres_user(folder)
    data, port = folder / "data", free_port()
    _run([*prefix, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
    control = [*prefix, str(binaries / "pg_ctl"), "-D", str(data)]
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -F"
    _run([*control, "-o", options, "-l", str(folder / "server.log"), "-w", "start"])
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*control, "-m", "fast", "-w", "stop"], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def fresh_database(pg_admin_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the server, dropped afterwards."""
    name = f"bb_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    with fresh_database(pg_admin_url) as url:
        yield url
