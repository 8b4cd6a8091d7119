"""Customer data fed into every error path a template can reach: the run stops with a message
naming the customer id, the template and the problem, and no customer's value is anywhere
Prefect keeps it (its database and files), on the console, in RUN-INCOMPLETE.txt or the ledger.

Each case runs the real command (`breachbook drill`) in a fresh process with its own Prefect
home, so every byte Prefect stored can be read back afterwards."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from breachbook.demo import DemoWorld
from tests.conftest import ROOT

pytestmark = pytest.mark.prefect

LETTER = Path("templates/letters/gdpr-a34/en.txt.j2")
HOSTILE = {
    "a lookup keyed by the name": "{{ {}[recipient_name] }}",
    "a filter named by the name": "{{ [1] | map(recipient_name) | list }}",
    "arithmetic on the phone": "{{ recipient_phone / 2 }}",
    "an unsafe attribute of the email": "{{ recipient_email.__class__.__mro__ }}",
}


def _customer_values(db: Path) -> list[str]:
    connection = sqlite3.connect(db)
    rows = connection.execute("SELECT full_name, email, street, phone FROM customers").fetchall()
    connection.close()
    return [value for row in rows for value in row if value and len(value) >= 6]


def _everything_in(folder: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_template_error_on_customer_data_names_the_customer_never_the_value(
    case: str, small_world: DemoWorld, tmp_path: Path
) -> None:
    content = tmp_path / "content"
    for part in ("playbooks", "templates", "rules", "flows"):
        shutil.copytree(ROOT / part, content / part)
    letter = content / LETTER
    letter.write_text(letter.read_text() + HOSTILE[case] + "\n")
    prefect_home, out = tmp_path / "prefect-home", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BREACHBOOK_"))}
    env |= {
        "PREFECT_HOME": str(prefect_home),
        "DO_NOT_TRACK": "1",
        "BREACHBOOK_HOME": str(tmp_path / "home"),
        "BREACHBOOK_CONTENT_DIR": str(content),
        "BREACHBOOK_CUSTOMERS_URL": f"sqlite:///{small_world.customers_db}",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "breachbook.cli",
            "drill",
            "--incident",
            str(small_world.incident_file),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    console = done.stdout + done.stderr
    assert "en.txt.j2" in console and "customer " in console
    incomplete = (out / "RUN-INCOMPLETE.txt").read_text()
    assert "customer " in incomplete
    stored = {
        "console": console.encode(),
        "RUN-INCOMPLETE.txt": incomplete.encode(),
        "ledger": (out / "audit.sqlite").read_bytes(),
        "Prefect": _everything_in(prefect_home),
    }
    assert len(stored["Prefect"]) > 100_000  # its database was really read
    leaks = {
        where: value
        for where, data in stored.items()
        for value in _customer_values(small_world.customers_db)
        if value.encode() in data
    }
    assert leaks == {}
