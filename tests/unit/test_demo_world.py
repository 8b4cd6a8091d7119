"""The generated world is the same in every process: a tabletop exercise promises
byte-identical results for the same scenario and answers, and its world is generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DIGEST = """
import hashlib, sqlite3, sys
from pathlib import Path
from breachbook.demo import ensure_demo_world

world = ensure_demo_world(Path(sys.argv[1]), size=400)
db = sqlite3.connect(world.customers_db)
tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
rows = [db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables]
print(hashlib.sha256(repr(rows).encode()).hexdigest())
"""


def world_digest(folder: Path, hash_seed: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", DIGEST, str(folder)],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_the_generated_world_does_not_depend_on_the_processs_hash_seed(tmp_path: Path) -> None:
    # Faker's it_IT cities come from a set: unsorted, each process drew other cities.
    digests = {world_digest(tmp_path / seed, seed) for seed in ("1", "2", "3")}
    assert len(digests) == 1


CUSTOMER_JSON = """
from breachbook.models import Customer, DataCategory

every = frozenset(DataCategory)
print(Customer(id="C1", full_name="A B", email="", phone="", street="1 Via Roma", city="Roma",
               postal_code="00100", country="IT", locale="it", categories=every).model_dump_json())
"""


def test_a_customers_json_does_not_depend_on_the_processs_hash_seed() -> None:
    """A resumed run compares its customers' JSON with the last run's to keep the letters it
    prepared: a set's order (the exposed categories) made every process differ, so every
    resumed run prepared all its letters again."""
    answers = {
        subprocess.run(
            [sys.executable, "-c", CUSTOMER_JSON],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(answers) == 1
