"""`breachbook worker` (and a flow run with BREACHBOOK_BATCHES_ON=task-workers) refuses to
start without what workers on other machines could share, naming the setting to fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PG = "postgresql+psycopg2://breachbook@127.0.0.1:1/ledger"


@pytest.mark.parametrize(
    ("api", "storage", "ledger", "named"),
    [
        (None, "local-file-system/shared", PG, "PREFECT_API_URL"),
        ("http://127.0.0.1:1/api", None, PG, "PREFECT_TASKS_SCHEDULING_DEFAULT_STORAGE_BLOCK"),
        ("http://127.0.0.1:1/api", "local-file-system/shared", None, "BREACHBOOK_LEDGER_URL"),
    ],
)
def test_a_worker_without_a_shared_server_storage_or_ledger_is_refused_by_name(
    tmp_path: Path, api: str | None, storage: str | None, ledger: str | None, named: str
) -> None:
    env = {
        **os.environ,
        "BREACHBOOK_HOME": str(tmp_path),
        "BREACHBOOK_BATCHES_ON": "task-workers",
        "PREFECT_API_URL": api or "",
        "PREFECT_TASKS_SCHEDULING_DEFAULT_STORAGE_BLOCK": storage or "",
    }
    env.pop("BREACHBOOK_LEDGER_URL", None)
    if ledger:
        env["BREACHBOOK_LEDGER_URL"] = ledger
    # in a process of its own: a worker that was not refused would serve until stopped
    done = subprocess.run(
        [str(Path(sys.executable).parent / "breachbook"), "worker"],
        env={key: value for key, value in env.items() if value},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    said = " ".join(done.stderr.split())
    assert named in said and "BREACHBOOK_BATCHES_ON=task-workers" in said
