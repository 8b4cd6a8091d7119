"""The customer database, opened through the wiring a run uses, refuses every write itself,
whatever form its SQLite URL takes; a misspelt path fails instead of creating a database."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from breachbook.demo import DemoWorld
from breachbook.errors import CustomerDataError
from breachbook.settings import Settings
from breachbook.wiring import open_customers

URL_FORMS = [
    "sqlite:///{path}",
    "sqlite+pysqlite:///{path}",
    "sqlite:///file:{path}?uri=true",
    "sqlite:///file:{path}?mode=rwc&uri=true",
]
WRITES = [
    "DELETE FROM favourites",
    "INSERT INTO favourites (customer_id, antique) SELECT id, 'Ming vase' FROM customers LIMIT 1",
]


@pytest.fixture
def customers_copy(small_world: DemoWorld, tmp_path: Path) -> Path:
    """A copy, so that a broken promise cannot damage the world the other tests share."""
    copy = tmp_path / "customers.sqlite"
    shutil.copyfile(small_world.customers_db, copy)
    return copy


def _favourites(db: Path) -> int:
    connection = sqlite3.connect(db)
    count: int = connection.execute("SELECT count(*) FROM favourites").fetchone()[0]
    connection.close()
    return count


@pytest.mark.parametrize("statement", WRITES)
@pytest.mark.parametrize("form", URL_FORMS)
def test_writes_through_the_wired_directory_fail(
    customers_copy: Path, form: str, statement: str
) -> None:
    before = _favourites(customers_copy)
    assert before > 0
    directory = open_customers(Settings(customers_url=form.format(path=customers_copy)))
    try:
        with (
            pytest.raises(OperationalError, match="readonly database"),
            directory._engine.begin() as conn,
        ):
            conn.execute(text(statement))
    finally:
        directory.close()
    assert _favourites(customers_copy) == before


def test_a_misspelt_path_fails_and_creates_no_file(tmp_path: Path) -> None:
    misspelt = tmp_path / "custmers.sqlite"
    with pytest.raises(
        CustomerDataError, match=re.escape(f"{misspelt}: no such customer database")
    ):
        open_customers(Settings(customers_url=f"sqlite:///{misspelt}"))
    assert list(tmp_path.iterdir()) == []
