"""One run from request to report, with the failure path that leaves nothing looking complete."""

from __future__ import annotations

from breachbook.clock import Clock
from breachbook.context import RunContext
from breachbook.engine import RunResult, StepRunner, run_directly, run_playbook
from breachbook.errors import BreachbookError
from breachbook.reports import write_outputs
from breachbook.settings import Settings
from breachbook.wiring import Adapters, RunRequest, mode_profile, open_run


def execute(
    request: RunRequest,
    runner: StepRunner = run_directly,
    settings: Settings | None = None,
    clock: Clock | None = None,
    adapters: Adapters | None = None,
) -> tuple[RunContext, RunResult]:
    """Open the run, walk the playbook, write plan and report; on failure mark the folder."""
    ctx = open_run(request, settings, clock, adapters)
    try:
        result = run_playbook(ctx, runner, mode_profile(request.mode).label)
        write_outputs(ctx, result)
    except BaseException as exc:
        message = (
            str(exc) if isinstance(exc, BreachbookError) else f"unexpected {type(exc).__name__}"
        )
        ctx.workspace.mark_failed(message)
        ctx.record("run", "-", "outcome", "error", {"error": message})
        raise
    finally:
        ctx.journal.ledger.close()
    return ctx, result
