"""A step's batches done by worker processes on any machine, not by the run's own process.

The run shares what a worker needs in the ledger (its mode, incident and playbook: no
customer's data), and hands out ids only: incident, run, action, batch. A worker reopens the
run from those ids, settings and the shared ledger, does the batch (its letters claimed and
settled in the ledger, as in the run's own process), and records the batch's counts and who
did it in the ledger, where the run reads them: nothing a worker keeps in memory or in its
own files is needed by anyone else. A batch is done by one process at a time (a lock in the
ledger's PostgreSQL), so a batch started twice sends nothing twice."""

from __future__ import annotations

import os
import socket
import tempfile
from collections import Counter
from pathlib import Path
from typing import Protocol, cast

from pydantic import BaseModel
from sqlalchemy.engine import make_url

from breachbook.actions.base import registry
from breachbook.batches import BatchStep
from breachbook.clock import Clock, SystemClock
from breachbook.context import RunContext
from breachbook.errors import BreachbookError
from breachbook.journal import Once
from breachbook.ledger import Ledger
from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.templates import Renderer
from breachbook.wiring import (
    INCIDENT_COPY,
    RunRequest,
    build_connectors,
    live_ledger_url,
    load_inputs,
    mode_profile,
    run_journal,
)
from breachbook.workspace import Workspace

SHARED_RUN = "batch-run"
"""The record (scope: the run) from which a worker reopens the run."""
BATCH_DONE = "batch-done"
"""The record (scope: the run; key: action and batch id) of a batch done: counts and who."""
SETTING = "BREACHBOOK_BATCHES_ON"


class SharedRun(BaseModel):
    """What a worker needs of a run besides settings: ids, and the texts of its incident
    and playbook (no customer's data)."""

    mode: Mode
    incident: str
    playbook: str


class BatchDone(BaseModel):
    """One batch's outcome as counts, and the process that did it (host and process id)."""

    counts: dict[str, int]
    by: str


class Batched(Protocol):
    """An action whose items are done in batches named by id."""

    def run_batch(self, batch_id: str, ctx: RunContext) -> Counter[Once]: ...


def worker_identity() -> str:
    """This process, as a batch's record names it: host and process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def require_shared_ledger(url: str) -> None:
    """A SQLite ledger is one machine's file: workers elsewhere could not share it."""
    if make_url(url).get_backend_name() != "postgresql":
        raise BreachbookError(
            f"{SETTING}=task-workers needs the ledger every worker shares in PostgreSQL: "
            "set BREACHBOOK_LEDGER_URL to a postgresql:// URL (a SQLite ledger is one "
            "machine's file)"
        )


def share_run(step: BatchStep) -> None:
    """Put in the ledger what a worker needs to reopen the step's run (once per run)."""
    ctx = step.ctx
    require_shared_ledger(ctx.journal.ledger.url)
    if ctx.journal.get(SHARED_RUN, "run", SharedRun) is not None:
        return
    if ctx.playbook_file is None:
        raise BreachbookError(f"run {ctx.run_id}: its playbook file is unknown")
    shared = SharedRun(
        mode=Mode(ctx.journal.mode),
        incident=ctx.incident_file.read_text(encoding="utf-8"),
        playbook=ctx.playbook_file.read_text(encoding="utf-8"),
    )
    ctx.journal.put(SHARED_RUN, "run", shared)


def batch_counts(step: BatchStep, batch_id: str) -> Counter[Once]:
    """The counts a worker recorded for the step's batch, read from the ledger."""
    done = step.ctx.journal.get(BATCH_DONE, f"{step.action} {batch_id}", BatchDone)
    if done is None:
        raise BreachbookError(f"batch {batch_id} of run {step.ctx.run_id}: no counts recorded")
    return Counter({Once(kind): count for kind, count in done.counts.items()})


def open_shared_run(
    incident_id: str, run_id: str, settings: Settings, scratch: Path, clock: Clock
) -> RunContext:
    """The run `run_id` reopened from its record in the shared ledger, for doing batches:
    its folder stays where the run is; `scratch` (this worker's, temporary) holds the
    incident and playbook read from the ledger."""
    url = live_ledger_url(settings)
    require_shared_ledger(url)
    ledger = Ledger(url, clock, create=False)
    try:
        raw = ledger.get_record(incident_id, run_id, SHARED_RUN, "run")
        if raw is None:
            raise BreachbookError(
                f"run {run_id} of incident {incident_id} shared nothing in the ledger at "
                "BREACHBOOK_LEDGER_URL: is this worker's ledger the run's?"
            )
        shared = SharedRun.model_validate(raw)
        profile = mode_profile(shared.mode)
        playbook_file = scratch / "playbook.yaml"
        playbook_file.write_text(shared.playbook, encoding="utf-8")
        request = RunRequest(
            mode=shared.mode,
            incident_yaml=shared.incident,
            playbook_file=playbook_file,
            confirm_incident_id=incident_id,
            run_id=run_id,
        )
        inputs = load_inputs(request, profile, settings)
        incident_file = scratch / INCIDENT_COPY
        incident_file.write_text(shared.incident, encoding="utf-8")
        journal = run_journal(ledger, incident_id, run_id, profile, settings, clock)
        connectors = build_connectors(profile, settings, clock, journal)
    except BaseException:
        ledger.close()
        raise
    return RunContext(
        run_id=run_id,
        incident=inputs.incident,
        incident_file=incident_file,
        playbook=inputs.playbook,
        playbook_file=playbook_file,
        connectors=connectors,
        workspace=Workspace(scratch, profile.banner),
        journal=journal,
        rules=inputs.rules,
        renderer=Renderer(inputs.templates),
        actor=settings.actor,
        batch_size=settings.letters_batch_size,
        message_copies=profile.message_copies,
    )


def do_batch(
    incident_id: str,
    run_id: str,
    action: str,
    batch_id: str,
    settings: Settings | None = None,
    clock: Clock | None = None,
) -> Counter[Once]:
    """Do one batch of a run's step in this process, from ids alone; its counts and this
    process are recorded in the ledger. A second start of the batch waits for the first
    (killed: its lock goes with its connection) and then finds its letters claimed or done."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    found = registry().get(action)
    if found is None or not hasattr(found, "run_batch"):
        raise BreachbookError(f"{action}: not an action done in batches")
    batched = cast(Batched, found)
    url = live_ledger_url(settings)
    require_shared_ledger(url)
    lock = Ledger(url, clock, create=False)
    try:
        # held from the start: while a batch's task run is running, its lock is held
        with (
            lock.held(batch_lock(incident_id, run_id, action, batch_id)),
            tempfile.TemporaryDirectory(prefix="breachbook-batch-") as scratch,
        ):
            ctx = open_shared_run(incident_id, run_id, settings, Path(scratch), clock)
            try:
                counts = batched.run_batch(batch_id, ctx)
                done = BatchDone(
                    counts={once.value: n for once, n in counts.items()}, by=worker_identity()
                )
                ctx.journal.put(BATCH_DONE, f"{action} {batch_id}", done)
            finally:
                ctx.journal.ledger.close()
    finally:
        lock.close()
    return counts


def batch_lock(incident_id: str, run_id: str, action: str, batch_id: str) -> str:
    """The lock a process holds while it does the batch (Ledger.held)."""
    return f"batch {incident_id} {run_id} {action} {batch_id}"
