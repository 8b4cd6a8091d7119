"""One LIVE flow run on a Prefect server whose delivery batches are done by two `breachbook
worker` processes (BREACHBOOK_BATCHES_ON=task-workers: Prefect background task runs given
ids only), sharing the PostgreSQL ledger, through a real SMTP relay that records every
message: each letter arrives once and none is lost, both workers did batches (the ledger
names the process that did each), and Prefect holds ids and counts, no customer's data."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import flow

from breachbook.batch_workers import BATCH_DONE, BatchDone
from breachbook.clock import SystemClock
from breachbook.demo import ensure_demo_world
from breachbook.journal import Once
from breachbook.ledger import ItemStatus, Ledger
from tests.conftest import ROOT, customers_named_in
from tests.integration.conftest import fresh_database
from tests.integration.smtp_server import recording_relay

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]

INCIDENT = "demo-2026-antiques-leak"
RUN = "run0batches0"
BATCH = 20
RATE = 1200
"""Letters per minute per worker: a batch takes about a second, so both workers are busy."""
SUBSCRIBED = "Subscribing to runs of task(s)"


def test_one_flow_runs_batches_on_two_task_workers_each_letter_once(
    prefect_harness: None, pg_url: str, tmp_path: Path
) -> None:
    from prefect.filesystems import LocalFileSystem

    home = tmp_path / "home"
    world = ensure_demo_world(home / "demo", size=220)
    storage = tmp_path / "task-parameters"
    LocalFileSystem(basepath=str(storage)).save("breachbook-batches", overwrite=True)
    storage_block = "local-file-system/breachbook-batches"
    with recording_relay(tmp_path) as relay:
        env = _env(relay.env(), home, pg_url, storage_block, RATE)
        workers = _started_workers(env, tmp_path)
        try:
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.smtp_process",
                    str(home),
                    RUN,
                    "--prefect",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            assert run.returncode == 0, run.stderr[-3000:]
            sent = relay.recorder.by_key()
            ended, again = _start_batches_again(storage_block, ledger_of(pg_url))
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)
        copies = relay.recorder.by_key()

    ledger = Ledger(pg_url, SystemClock(), create=False)
    items = ledger.item_statuses(INCIDENT, "letters.deliver")
    done = ledger.records_of(INCIDENT, RUN, BATCH_DONE)
    first = {key: _first_version(ledger, key) for key in done}
    assert ledger.verify() == []
    ledger.close()
    owed = {
        f"{path.stem}/{cid}"
        for path in (home / RUN / "recipients").glob("*.txt")
        for cid in path.read_text().split()
    }
    assert len(owed) > 3 * BATCH
    assert set(items.values()) == {ItemStatus.DONE}
    assert set(copies) == owed == set(items), "a letter was lost"
    twice = [key for key, got in copies.items() if len(got) > 1]
    assert twice == [], f"{len(twice)} letters arrived more than once"
    assert copies == sent, "a batch started again sent a letter again"
    assert ended == {"COMPLETED"}
    assert len(again) == AGAIN
    assert again == {key: (3, {Once.ALREADY_DONE.value}) for key in again}, "a start did not run"
    batches = {key: BatchDone.model_validate(raw) for key, raw in first.items()}
    assert sum(sum(b.counts.values()) for b in batches.values()) == len(owed)
    by = {b.by.rsplit(" pid ", 1)[1] for b in batches.values()}
    assert by == {str(w.pid) for w in workers}, f"batches done by {sorted(by)}"
    stored = _stored_parameters(storage)
    assert len(stored) == len(batches) + 2 * AGAIN
    assert {tuple(sorted(given)) for given, _ in stored} == {
        ("action", "batch_id", "incident_id", "run_id")
    }
    assert {given["run_id"] for given, _ in stored} == {RUN}
    texts = _prefect_texts_of_the_run() + [raw for _, raw in stored]
    joined = "\n".join(texts)
    assert "#0" in joined  # the batch task runs were really read
    assert customers_named_in(joined, world.customers_db) == []
    print(f"{len(owed)} letters in {len(batches)} batches, each once; by worker: {_per(batches)}")


def ledger_of(url: str) -> Ledger:
    return Ledger(url, SystemClock(), create=False)


def _first_version(ledger: Ledger, key: str) -> Any:
    """A batch's counts as its first start recorded them (a later start records its own)."""
    return ledger.record_history(INCIDENT, RUN, BATCH_DONE, key)[0].data


AGAIN = 4
"""Batches started again, twice each, in one flow run of their own."""


@flow(name="breachbook-batches-again", persist_result=False)
def start_again(keys: list[str]) -> list[str]:
    """Each batch started, waited for, and started again: under Prefect's default cache
    policy (a task worker's, for a task without one) the second start in one flow run
    would be answered from a cache instead of running."""
    from flows.response import deliver_batch

    ended = []
    for _ in range(2):
        futures = [deliver_batch.delay(INCIDENT, RUN, *key.split(" ", 1)) for key in keys]
        for future in futures:
            future.wait(timeout=120)
            ended.append(str(future.state.type.value))
    return ended


def _start_batches_again(
    storage_block: str, ledger: Ledger
) -> tuple[set[str], dict[str, tuple[int, set[str]]]]:
    """Some batches the run did, started again twice as background task runs, as retries
    would (by ids alone): how their task runs ended, and for each batch how many times its
    counts were recorded and its last counts' kinds."""
    from prefect.settings import PREFECT_TASKS_SCHEDULING_DEFAULT_STORAGE_BLOCK, temporary_settings

    keys = sorted(ledger.records_of(INCIDENT, RUN, BATCH_DONE))[:AGAIN]
    with temporary_settings(
        updates={PREFECT_TASKS_SCHEDULING_DEFAULT_STORAGE_BLOCK: storage_block}
    ):
        ended = set(start_again(keys))
    again = {
        key: (
            len(ledger.record_history(INCIDENT, RUN, BATCH_DONE, key)),
            set(BatchDone.model_validate(ledger.get_record(INCIDENT, RUN, BATCH_DONE, key)).counts),
        )
        for key in keys
    }
    ledger.close()
    return ended, again


def _stored_parameters(storage: Path) -> list[tuple[dict[str, str], str]]:
    """What Prefect stored for each batch task run in the scheduling storage block: its
    parameters, and the whole record (parameters and the flow run's context) as text."""
    import cloudpickle  # type: ignore[import-untyped]

    found = []
    for path in storage.rglob("*"):
        if path.is_file():
            pickled = base64.b64decode(json.loads(path.read_text())["result"])
            found.append(
                (cloudpickle.loads(pickled)["parameters"], pickled.decode("utf-8", "replace"))
            )
    return found


def _per(batches: dict[str, BatchDone]) -> dict[str, int]:
    found: dict[str, int] = {}
    for batch in batches.values():
        found[batch.by] = found.get(batch.by, 0) + 1
    return found


def _env(
    relay: dict[str, str], home: Path, pg_url: str, storage_block: str, rate: int
) -> dict[str, str]:
    """The settings of the flow's process and the workers' alike."""
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        **relay,
        "BREACHBOOK_HOME": str(home),
        "BREACHBOOK_LEDGER_URL": pg_url,
        "BREACHBOOK_CUSTOMERS_URL": f"sqlite:///{(home / 'demo' / 'customers.sqlite').resolve()}",
        "BREACHBOOK_DATASOURCE": str(home / "demo" / "datasource.yaml"),
        "BREACHBOOK_LETTERS_BATCH_SIZE": str(BATCH),
        "BREACHBOOK_SMTP_RATE_PER_MINUTE": str(rate),
        "BREACHBOOK_BATCHES_ON": "task-workers",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_TASKS_SCHEDULING_DEFAULT_STORAGE_BLOCK": storage_block,
        "DO_NOT_TRACK": "1",
        # the flow the run's context names is a test's (tests.integration.smtp_process)
        "PYTHONPATH": str(ROOT),
    }


def _started_workers(env: dict[str, str], folder: Path) -> list[subprocess.Popen[bytes]]:
    """Two `breachbook worker` processes, once each listens for batches (it says so)."""
    logs = [folder / f"worker{n}.log" for n in range(2)]
    workers = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "breachbook"), "worker"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        for log in logs
    ]
    try:
        _wait_until_subscribed(logs, workers)
    except BaseException:
        for worker in workers:
            worker.kill()
            worker.wait()
        raise
    return workers


def _wait_until_subscribed(logs: list[Path], workers: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 90
    while not all(SUBSCRIBED in log.read_text(errors="replace") for log in logs):
        dead = [w.args for w in workers if w.poll() is not None]
        assert not dead, "\n".join(log.read_text(errors="replace")[-2000:] for log in logs)
        assert time.monotonic() < deadline, "a worker did not subscribe"
        time.sleep(0.2)


def _prefect_texts_of_the_run() -> list[str]:
    """What Prefect holds of the one flow run: its batch task runs, named by batch id, each
    ended Completed, and its delivery progress artifacts at 100 %."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from tests.e2e.test_drill_flow import prefect_texts

    with get_client(sync_client=True) as client:
        runs = [  # this test's: the session's server holds other tests' runs of the flow
            run
            for run in client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["breachbook-delivery-worker"]))
            )
            if run.parameters.get("run_id") == RUN
        ]
        assert len(runs) == 1
        only = FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id]))
        progress = [
            a
            for a in client.read_artifacts(flow_run_filter=only)
            if a.key and a.key.startswith("breachbook-batches-letters-deliver")
        ]
        batch_runs = [t for t in client.read_task_runs(flow_run_filter=only) if "#" in t.name]
    assert progress and all(a.data == 100 for a in progress), progress
    assert batch_runs and all(t.state and t.state.is_completed() for t in batch_runs)
    texts, _ = prefect_texts(UUID(str(runs[0].id)))
    return texts


HOLD = """
import sys, time
from breachbook.clock import SystemClock
from breachbook.ledger import Ledger
with Ledger(sys.argv[1], SystemClock(), create=False).held("batch x"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_batch_is_done_by_one_process_at_a_time_and_a_killed_ones_lock_goes_with_it(
    pg_url: str,
) -> None:
    """What keeps a batch started twice (a retry, a second delivery of its task run) from
    sending a letter twice: the second start waits for the first; a killed process's lock
    is freed with its connection, so a retry is not held up by it."""
    Ledger(pg_url, SystemClock()).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, pg_url], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        entered: list[float] = []
        ledger = ledger_of(pg_url)

        def second_start() -> None:
            with ledger.held("batch x"):
                entered.append(time.monotonic())

        waiting = threading.Thread(target=second_start)
        waiting.start()
        time.sleep(1.0)
        assert entered == [], "a second start went ahead while the first held the batch"
        killed = time.monotonic()
        holder.kill()
        waiting.join(timeout=20)
        assert entered and entered[0] >= killed
        ledger.close()
    finally:
        holder.kill()
        holder.wait()


KILLED_RUN = "run0killed00"


@pytest.fixture
def own_pg_url(pg_admin_url: str) -> Iterator[str]:
    """A database of this test's own: letters are the incident's, so the other test's run
    of the same incident in the module's database would have sent them all already."""
    with fresh_database(pg_admin_url) as url:
        yield url


def test_a_worker_killed_mid_batch_leaves_its_batch_to_the_other_and_no_letter_lost(
    prefect_harness: None, own_pg_url: str, tmp_path: Path
) -> None:
    """A worker killed while it sends a batch leaves its task run running: the flow sees the
    batch's lock free, marks the task run crashed and starts the batch again; the other
    worker takes over the letters left in flight (sent again with the same Message-ID, as a
    resumed run does) and every letter arrives."""
    from prefect.filesystems import LocalFileSystem

    home = tmp_path / "home"
    ensure_demo_world(home / "demo", size=220)
    storage_block = "local-file-system/breachbook-batches-killed"
    LocalFileSystem(basepath=str(tmp_path / "task-parameters")).save(
        storage_block.split("/")[1], overwrite=True
    )
    with recording_relay(tmp_path) as relay:
        env = _env(relay.env(), home, own_pg_url, storage_block, rate=300)
        workers = _started_workers(env, tmp_path)
        try:
            run = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.smtp_process",
                    str(home),
                    KILLED_RUN,
                    "--prefect",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            log = tmp_path / "worker0.log"
            deadline = time.monotonic() + 120
            while "Received task run" not in log.read_text(errors="replace"):
                assert time.monotonic() < deadline and run.poll() is None
                time.sleep(0.1)
            time.sleep(2)  # opened the run, sending its batch (20 letters at 5 a second)
            workers[0].kill()
            _, stderr = run.communicate(timeout=240)
        finally:
            for worker in workers:
                worker.kill()
                worker.wait(timeout=30)
        assert run.returncode == 0, stderr[-3000:]
        copies = relay.recorder.by_key()

    restarted = [line for line in stderr.splitlines() if "started again" in line]
    assert restarted, stderr[-3000:]
    ledger = ledger_of(own_pg_url)
    items = ledger.item_statuses(INCIDENT, "letters.deliver")
    ledger.close()
    owed = {
        f"{path.stem}/{cid}"
        for path in (home / KILLED_RUN / "recipients").glob("*.txt")
        for cid in path.read_text().split()
    }
    assert set(items.values()) == {ItemStatus.DONE}
    assert set(copies) == owed == set(items), "a letter was lost"
    again = {key: got for key, got in copies.items() if len(got) > 1}
    assert 0 < len(again) <= BATCH  # only the killed batch's letters in flight
    assert all(len({str(m["Message-ID"]) for m in got}) == 1 for got in again.values())
    print(f"{len(owed)} letters; {len(again)} sent again, same Message-ID; {restarted}")
