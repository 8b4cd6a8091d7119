"""One run from request to report, with the failure path that leaves nothing looking complete.

The incident's ledger head is signed and published outside the ledger after every step and
at the end of the run, on the failure path too (`breachbook.anchors`)."""

from __future__ import annotations

from collections.abc import Callable

from breachbook.anchors import Anchoring
from breachbook.batches import BatchRunner, run_batches_here
from breachbook.clock import Clock
from breachbook.context import RunContext
from breachbook.engine import (
    Position,
    RunResult,
    StepResult,
    StepRunner,
    run_directly,
    run_playbook,
)
from breachbook.errors import BreachbookError
from breachbook.journal import RunJournal
from breachbook.reports import write_outputs
from breachbook.settings import Settings
from breachbook.wiring import Adapters, RunRequest, mode_profile, open_run


def anchored_steps(runner: StepRunner, anchoring: Anchoring, journal: RunJournal) -> StepRunner:
    """The runner, with the incident's head signed after each step it runs (a checkpoint: a
    run killed mid-way leaves its finished steps anchored)."""

    def run_step(name: str, work: Callable[[], StepResult], position: Position) -> StepResult:
        result = runner(name, work, position)
        anchoring.checkpoint(journal, f"step {name}")
        return result

    return run_step


def execute(
    request: RunRequest,
    runner: StepRunner = run_directly,
    settings: Settings | None = None,
    clock: Clock | None = None,
    adapters: Adapters | None = None,
    batches: BatchRunner = run_batches_here,
) -> tuple[RunContext, RunResult]:
    """Open the run, walk the playbook, sign the ledger's head, write plan and report; on
    failure mark the folder and still sign the head (with the error recorded). `batches`
    runs a step's batches (a flow makes each one a task)."""
    settings = settings or Settings()
    # A signing key that cannot be used stops the run before anything is written.
    anchoring = Anchoring.from_settings(settings, request.out_dir)
    ctx = open_run(request, settings, clock, adapters)
    ctx.batches = batches
    try:
        anchoring.refuse_inside(ctx.workspace.root)
        steps = anchored_steps(runner, anchoring, ctx.journal)
        result = run_playbook(ctx, steps, mode_profile(request.mode).label)
        anchoring.checkpoint(ctx.journal, "end", again=True)
        write_outputs(ctx, result)
    except BaseException as exc:
        message = (
            str(exc) if isinstance(exc, BreachbookError) else f"unexpected {type(exc).__name__}"
        )
        ctx.workspace.mark_failed(message)
        ctx.record("run", "-", "outcome", "error", {"error": message})
        try:
            anchoring.checkpoint(ctx.journal, "failed")
        except Exception as failed:  # the run's own error is the one to report
            exc.add_note(f"the ledger's head could not be anchored: {failed}")
        raise
    finally:
        ctx.journal.ledger.close()
    return ctx, result
