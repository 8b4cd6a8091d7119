"""Two workers deliver the same incident's letters at once, each a flow run on one Prefect
server whose steps and letter batches are task runs (batch id in, counts out), sharing the
PostgreSQL ledger, through a real SMTP relay that records every message: each letter arrives
once and none is lost, and Prefect holds batch ids and counts, no customer's data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import create_engine, text

from breachbook.clock import SystemClock
from breachbook.demo import ensure_demo_world
from breachbook.ledger import ItemStatus, Ledger
from tests.conftest import ROOT, customers_named_in
from tests.integration.smtp_server import recording_relay

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]

INCIDENT = "demo-2026-antiques-leak"
WORKERS = ("run0worker0a", "run0worker0b")
BATCH = 30
RATE = 1200
"""Letters per minute per worker: about 10 s for one worker alone, so that the two overlap
whichever reaches the delivery first, and each meets letters the other holds."""
ENTRY = re.compile(r"^\S+ \S+: [a-z-]+$")
"""A plan entry that did not end done, as smtp_process prints it (Prefect's log lines differ)."""
AFTER_DELIVERY = "draft-regulator-notices -: blocked"


def test_two_workers_on_a_prefect_server_with_the_postgres_ledger_deliver_each_letter_once(
    prefect_harness: None, pg_url: str, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "home"
    world = ensure_demo_world(home / "demo", size=220)
    with recording_relay(tmp_path) as relay:
        env = {
            **os.environ,
            **relay.env(),
            "BREACHBOOK_HOME": str(home),
            "BREACHBOOK_LEDGER_URL": pg_url,
            "BREACHBOOK_LETTERS_BATCH_SIZE": str(BATCH),
            "BREACHBOOK_SMTP_RATE_PER_MINUTE": str(RATE),
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "DO_NOT_TRACK": "1",
        }
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.smtp_process",
                    str(home),
                    run,
                    "--prefect",
                ],
                cwd=ROOT,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for run in WORKERS
        ]
        for worker in workers:
            # a worker that meets letters the other holds in flight ends incomplete for them
            # (and the notices drafted after the delivery wait for it)
            _, stderr = worker.communicate(timeout=240)
            unfinished = [line for line in stderr.splitlines() if ENTRY.match(line)]
            rest = [
                line
                for line in unfinished
                if not line.startswith("assess-obligations no-rule:") and line != AFTER_DELIVERY
            ]
            assert worker.returncode == 0 or (
                worker.returncode == 1 and rest and all(s.endswith(": incomplete") for s in rest)
            ), stderr[-3000:]
        copies = relay.recorder.by_key()

    ledger = Ledger(pg_url, SystemClock(), create=False)
    items = ledger.item_statuses(INCIDENT, "letters.deliver")
    assert ledger.verify() == []
    ledger.close()
    owed = {
        f"{path.stem}/{cid}"
        for path in (home / WORKERS[0] / "recipients").glob("*.txt")
        for cid in path.read_text().split()
    }
    assert len(owed) > 2 * BATCH
    assert set(items.values()) == {ItemStatus.DONE}
    assert set(copies) == owed == set(items), "a letter was lost"
    twice = [key for key, got in copies.items() if len(got) > 1]
    assert twice == [], f"{len(twice)} letters arrived more than once"
    _assert_batches_shown_and_no_personal_data(world.customers_db)
    print(f"{len(owed)} letters, each once; sent per worker: {_sent_by_run(pg_url)}")


def _sent_by_run(url: str) -> dict[str, int]:
    """How many letters each worker's run sent (the run that holds the item's last claim)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT run_id, count(*) FROM ledger_items WHERE step_id = 'letters.deliver' "
                "GROUP BY run_id ORDER BY run_id"
            )
        ).all()
    engine.dispose()
    return {str(run): int(count) for run, count in rows}


def _assert_batches_shown_and_no_personal_data(customers_db: Path) -> None:
    """Each worker's flow run has batch task runs named by batch id, a progress artifact per
    delivery at 100 %, and nothing Prefect stored names a customer."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from tests.e2e.test_drill_flow import prefect_texts

    with get_client(sync_client=True) as client:
        runs = [  # this test's: the session's server holds other tests' runs of the flow
            run
            for run in client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["breachbook-delivery-worker"]))
            )
            if run.parameters.get("run_id") in WORKERS
        ]
    assert len(runs) == len(WORKERS)
    texts: list[str] = []
    for run in runs:
        found, _ = prefect_texts(UUID(str(run.id)))
        texts += found
        with get_client(sync_client=True) as client:
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

            only = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            progress = [
                a
                for a in client.read_artifacts(flow_run_filter=only)
                if a.key and a.key.startswith("breachbook-batches-letters-deliver")
            ]
        assert progress and all(a.data == 100 for a in progress), progress
        assert all("batches done" in (a.description or "") for a in progress)
    joined = "\n".join(texts)
    assert "#0" in joined  # the batch task runs were really read
    assert customers_named_in(joined, customers_db) == []
