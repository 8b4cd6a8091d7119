"""The breach response as a Prefect flow: parse parameters, build the run, call the core.

Parameters are paths, flags and ids only: Prefect stores them in plain text, so customer
data never passes through here. Each playbook step is one task run; per-customer work is
batched inside its step, and a delivery's batches are task runs of their own, in parallel,
given batch ids and answering counts.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import copy_context
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import cloudpickle  # type: ignore[import-untyped]
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.flow_runs import suspend_flow_run
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import deployment, flow_run
from prefect.states import Crashed, Failed
from pydantic import Field

from breachbook.anchors import Anchoring, anchor_artifact, last_anchor_of_run
from breachbook.batch_workers import (
    SETTING,
    batch_counts,
    batch_lock,
    do_batch,
    require_shared_ledger,
    share_run,
)
from breachbook.batches import BatchStep
from breachbook.clock import SystemClock
from breachbook.connectors.ledger_approvals import (
    decision_of,
    record_answer,
    wait_of,
    waiting_steps,
)
from breachbook.connectors.prefect_pauses import ApprovalForm
from breachbook.context import RunContext
from breachbook.demo import demo_inputs
from breachbook.engine import Position, RunResult, StepResult, new_run_id
from breachbook.errors import BreachbookError
from breachbook.forms import (
    DEFAULT_PLAYBOOK,
    NAME_PATTERN,
    DrillForm,
    LiveForm,
    form_title,
    run_request,
)
from breachbook.journal import Once
from breachbook.live_lock import one_live_response
from breachbook.modes import Mode
from breachbook.reports import obligations_markdown, phase_durations
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.statement import versions_markdown
from breachbook.wiring import RunRequest, incident_journal, live_ledger_url, mode_profile

if __name__ in sys.modules:
    # A background task started in a flow run carries the flow run's context, this module's
    # flow among it: pickled by value, a worker needs breachbook installed, not this file
    # importable under the name it was loaded by here (Prefect's loader gives it its own).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


class PrefectSteps:
    """Runs each playbook step as a Prefect task run, logs its verdicts and counts, and keeps
    a progress artifact on the flow run."""

    def __init__(self, folder: Path | None = None) -> None:
        """Made inside the flow run, so the artifact belongs to it; its key is the run's."""
        where = f" (folder {folder})" if folder else ""
        created = create_progress_artifact(
            0.0, key=artifact_key("progress"), description=f"starting the first step{where}"
        )
        assert isinstance(created, UUID)  # called from synchronous code: not a coroutine
        self._progress = created
        self._done = 0.0
        self._last = "none"

    def failed(self, message: str) -> None:
        """Say in the progress artifact that the run failed, where, and why (one line)."""
        update_progress_artifact(
            self._progress,
            self._done,
            description=f"FAILED after step {self._last}: {message}",
        )

    def __call__(self, name: str, work: Callable[[], StepResult], position: Position) -> StepResult:
        def step() -> StepResult:
            return work()

        result: StepResult = task(name=name, persist_result=False, cache_policy=NO_CACHE)(step)()
        tally = Counter(e.verdict or e.status for e in result.entries)
        counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items()))
        get_run_logger().info(
            "%s: %s%s",
            name,
            ", ".join(f"{k} {v}" for k, v in sorted(tally.items())),
            f" ({counts})" if counts else "",
        )
        self._done, self._last = 100 * position.number / position.total, name
        update_progress_artifact(
            self._progress,
            self._done,
            description=f"{position.number} of {position.total} steps done; last: {name}",
        )
        return result


class PrefectBatches:
    """Runs a step's batches as Prefect task runs mapped onto the flow's task runner, so they
    run in parallel: each task is given a batch id and answers counts (never customer data,
    which each batch reads from the customer database itself). A progress artifact per step
    moves as each batch finishes."""

    def __call__(self, label: str, batch_ids: list[str], work: BatchStep) -> Counter[Once]:
        started = self._start(label, batch_ids, work)
        progress = create_progress_artifact(
            0.0,
            key=artifact_key("batches-" + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")),
            description=f"{label}: 0 of {len(batch_ids)} batches done",
        )
        assert isinstance(progress, UUID)  # called from synchronous code: not a coroutine
        total: Counter[Once] = Counter()
        stopped: BaseException | None = None
        for done, future in enumerate(self._finished(work, started), start=1):
            try:
                total.update(self._counts(work, started[future], future))
            except BaseException as exc:  # the others still finish and settle their letters
                stopped = stopped or exc
            tally = ", ".join(f"{kind.value} {count}" for kind, count in sorted(total.items()))
            update_progress_artifact(
                progress,
                100 * done / len(batch_ids),
                description=f"{label}: {done} of {len(batch_ids)} batches done ({tally})",
            )
        if stopped is not None:
            raise stopped
        return total

    def _start(
        self, label: str, batch_ids: list[str], work: BatchStep
    ) -> dict[PrefectFuture[dict[str, int]], str]:
        """Each batch as a task run of this flow run's task runner, by its id."""

        def batch(batch_id: str) -> dict[str, int]:
            return {once.value: count for once, count in work(batch_id).items()}

        runs = task(
            name=label, task_run_name="{batch_id}", persist_result=False, cache_policy=NO_CACHE
        )(batch)
        return dict(zip(runs.map(batch_ids), batch_ids, strict=True))

    def _finished(
        self, work: BatchStep, started: dict[PrefectFuture[dict[str, int]], str]
    ) -> Iterator[PrefectFuture[dict[str, int]]]:
        """The started batches' task runs, each as it ends."""
        return as_completed(list(started))

    def _counts(
        self, work: BatchStep, batch_id: str, future: PrefectFuture[dict[str, int]]
    ) -> Counter[Once]:
        return Counter({Once(kind): count for kind, count in future.result().items()})


class EveryStartRuns(CachePolicy):
    """No cache key, so a batch started again always runs, and the ledger decides what is
    left to send. A task worker gives a task without a cache policy (or with results not
    persisted, which drops the policy) Prefect's default, under which a batch started again
    in the same flow run is answered from a cache without running."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return None


@task(name="batch", task_run_name="{batch_id}", cache_policy=EveryStartRuns())
def deliver_batch(incident_id: str, run_id: str, action: str, batch_id: str) -> dict[str, int]:
    """One batch of a run's step, done by a `breachbook worker` process from ids alone
    (BREACHBOOK_BATCHES_ON=task-workers): the worker reopens the run from the shared ledger;
    the batch's counts are recorded there, and answered here too."""
    counts = do_batch(incident_id, run_id, action, batch_id)
    return {once.value: count for once, count in counts.items()}


BATCH_POLL_SECONDS = 1.0
ORPHANED_SECONDS = 10
"""A batch's task run still running while no process has held its batch this long is
taken for one whose worker died (a live worker holds it from the task run's start to its
end, give or take milliseconds)."""
MAX_STALL_SECONDS = 600


class TaskWorkerBatches(PrefectBatches):
    """Runs a step's batches as Prefect background task runs (`deliver_batch.delay`), each
    picked up by one of the `breachbook worker` processes serving it, on any machine: the
    batches of one run spread across them. Each is given ids only (incident, run, action,
    batch); its counts are read from the shared ledger, not from a result only its worker's
    machine could read. The progress artifact moves as each batch finishes."""

    def __init__(self, settings: Settings) -> None:
        """Refuses, naming the setting, what the workers could not share."""
        require_task_workers(settings)

    def _start(
        self, label: str, batch_ids: list[str], work: BatchStep
    ) -> dict[PrefectFuture[dict[str, int]], str]:
        share_run(work)
        self._label = label
        return {self._delay(work, batch_id): batch_id for batch_id in batch_ids}

    def _delay(self, work: BatchStep, batch_id: str) -> PrefectFuture[dict[str, int]]:
        """The batch as a background task run, started as the flow run's, not the step
        task's: Prefect stores the context a background task is started in beside its
        parameters, and the step's context holds its function, whose closure holds the run
        (connections, and customers' data)."""
        ctx = work.ctx
        runs = deliver_batch.with_options(name=self._label)
        outside_step = copy_context()
        outside_step.run(TaskRunContext.__var__.set, None)  # type: ignore[arg-type]
        return outside_step.run(runs.delay, ctx.incident.id, ctx.run_id, work.action, batch_id)

    def _finished(
        self, work: BatchStep, started: dict[PrefectFuture[dict[str, int]], str]
    ) -> Iterator[PrefectFuture[dict[str, int]]]:
        """Each batch's task run as it ends, asked of the server once a second for all those
        still running. A task run the server no longer has (a worker could not read its
        parameters, and Prefect deleted it) stops the wait, naming the batch. A task run
        left running by a worker that died (its batch's lock in the ledger free for
        ORPHANED_SECONDS), and those waiting while none of the step's batches runs (a dead worker
        had received them), are marked crashed and their batches started again: the next
        worker takes over what the dead one left in flight, as a resumed run does."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

        ctx = work.ctx
        pending = {future.task_run_id: future for future in started}
        free_since: dict[UUID, float] = {}
        moved, stall = time.monotonic(), float(ORPHANED_SECONDS)
        with get_client(sync_client=True) as client:

            def start_again(run_id: UUID, why: str) -> None:
                batch_id = started[pending[run_id]]
                get_run_logger().warning("batch %s: %s; started again", batch_id, why)
                client.set_task_run_state(run_id, Crashed(message=why), force=True)
                del started[pending.pop(run_id)]
                again = self._delay(work, batch_id)
                started[again] = batch_id
                pending[again.task_run_id] = again

            while pending:
                only = TaskRunFilter(id=TaskRunFilterId(any_=list(pending)))
                runs = {run.id: run for run in client.read_task_runs(task_run_filter=only)}
                if any(
                    r.state and (r.state.is_running() or r.state.is_final()) for r in runs.values()
                ):
                    moved = time.monotonic()
                elif time.monotonic() - moved >= stall:
                    # none of the step's batches running for this long: those waiting were
                    # received by a worker that died before it started them (a task worker
                    # takes one more than it runs), or no worker is up (then: each time
                    # after twice as long)
                    for run_id in list(pending):
                        start_again(run_id, f"waited {stall:.0f} s with no batch running")
                    moved, stall = time.monotonic(), min(2 * stall, MAX_STALL_SECONDS)
                    continue
                for run_id in list(pending):
                    run, batch_id = runs.get(run_id), started[pending[run_id]]
                    if run is None:
                        raise BreachbookError(
                            f"batch {batch_id}: Prefect has no task run for it any more "
                            "(see the log of the worker that received it)"
                        )
                    if run.state is not None and run.state.is_final():
                        yield pending.pop(run_id)
                        continue
                    lock = batch_lock(ctx.incident.id, ctx.run_id, work.action, batch_id)
                    if run.state is None or not run.state.is_running():
                        continue
                    if ctx.journal.ledger.is_held(lock):
                        free_since.pop(run_id, None)
                        continue
                    since = free_since.setdefault(run_id, time.monotonic())
                    if time.monotonic() - since >= ORPHANED_SECONDS:
                        start_again(run_id, "its worker is gone (running, the batch not held)")
                if pending:
                    time.sleep(BATCH_POLL_SECONDS)

    def _counts(
        self, work: BatchStep, batch_id: str, future: PrefectFuture[dict[str, int]]
    ) -> Counter[Once]:
        state = future.state
        if not state.is_completed():
            raise BreachbookError(f"batch {batch_id}: its task run ended {state.name}")
        return batch_counts(work, batch_id)


def require_task_workers(settings: Settings) -> None:
    """What BREACHBOOK_BATCHES_ON=task-workers needs: a Prefect server every worker reaches,
    where Prefect keeps a background task's parameters somewhere every worker can read, and
    the ledger in PostgreSQL."""
    from prefect.settings import get_current_settings

    prefect = get_current_settings()
    if prefect.api.url is None:
        raise BreachbookError(
            f"{SETTING}=task-workers needs a Prefect server the workers share: set "
            "PREFECT_API_URL (or BREACHBOOK_BATCHES_ON=flow)"
        )
    if prefect.tasks.scheduling.default_storage_block is None:
        raise BreachbookError(
            f"{SETTING}=task-workers needs PREFECT_TASKS_SCHEDULING_DEFAULT_STORAGE_BLOCK: a "
            "storage block every worker can read (Prefect keeps each batch's ids there; by "
            "default it would be this machine's own folder)"
        )
    require_shared_ledger(live_ledger_url(settings))


def batch_runner(settings: Settings) -> PrefectBatches:
    """The flow's batch runner, as BREACHBOOK_BATCHES_ON says."""
    return (
        TaskWorkerBatches(settings) if settings.batches_on == "task-workers" else PrefectBatches()
    )


def artifact_key(kind: str) -> str:
    """`breachbook-KIND-RUN`: one key per flow run, so the artifacts index never shows one
    run's progress beside another run's report."""
    run = str(flow_run.id or "").replace("-", "")[:12]
    return f"breachbook-{kind}-{run}" if run else f"breachbook-{kind}"


def _publish_artifacts(ctx: RunContext, result: RunResult) -> None:
    counts = result.verdict_counts()
    create_markdown_artifact(
        key=artifact_key("summary"),
        description=f"{result.mode_label} run {result.run_id}",
        markdown="\n".join(
            [
                f"# {result.mode_label.upper()} run of incident `{result.incident_id}`",
                "",
                *(f"- {verdict}: {count}" for verdict, count in counts.items()),
                *(
                    f"- phase {phase}: {secs:.1f} s"
                    for phase, secs in phase_durations(result).items()
                ),
                f"- output folder: `{ctx.workspace.root}`",
            ]
        ),
    )
    create_table_artifact(
        key=artifact_key("plan"),
        description="Every action, its target and how it was verified",
        table=[
            {  # what decides first, so a laptop's width shows it; action and status last
                "step": e.step_id,
                "verdict": e.verdict,
                "target": e.target,
                "reason": e.reason,
                "action": e.action,
                "status": e.status,
            }
            for e in result.entries()
        ],
    )
    create_markdown_artifact(
        key=artifact_key("obligations"),
        description="Who must be told, by when, under which law (counts only)",
        markdown=obligations_markdown(ctx),
    )
    for statement in ("holding", "full"):
        versions = versions_markdown(ctx.journal, statement)
        if versions is not None:
            create_markdown_artifact(
                key=artifact_key(f"statement-{statement}"),
                description=f"Every version of the {statement} statement and its facts",
                markdown=versions,
            )
    create_markdown_artifact(
        key=artifact_key("report"),
        description="Timeline, phase durations, counts, FAILED and UNVERIFIED actions",
        markdown=ctx.workspace.path("report.md").read_text(encoding="utf-8"),
    )


APPROVAL_WAIT = timedelta(days=3)


def _run_id_of_deployed_flow_run() -> str | None:
    """A deployed flow run that is suspended starts again from the top after resuming: it
    keeps its breachbook run (and folder) by deriving the run id from the flow run's id."""
    if deployment.id is None or flow_run.id is None:
        return None
    return str(flow_run.id).replace("-", "")[:12]


def _wait_for_decision(incident_id: str, step_id: str, settings: Settings) -> None:
    """Suspend until someone resumes the flow run with an answer; judge and record it.

    Reached when a step's pause ran out twice (role, then backup) with no decision: the run
    gives up its process. The first call ends the process (the run is Suspended). When
    resumed, the flow runs again, reaches the same wait, and Prefect hands back the answer
    given with the resume (the same form as the pause's)."""
    journal = incident_journal(
        mode_profile(Mode.LIVE), incident_id, settings, SystemClock(), "approval"
    )
    try:
        wait = wait_of(journal, step_id)
        if wait is None or decision_of(journal, step_id, wait.version) is not None:
            return
        form = ApprovalForm.with_initial_data(
            description=f"{step_id} waits for {wait.role}; {wait.summary}"
        )
        given = suspend_flow_run(
            wait_for_input=form,
            key=f"decision-{step_id}-{wait.expiries}",
            timeout=int(APPROVAL_WAIT.total_seconds()),
        )
        record_answer(journal, wait, settings.approvers, given.answer(), "prefect", SystemClock())
        Anchoring.from_settings(settings).checkpoint(journal, f"approve {step_id}")
    finally:
        journal.ledger.close()


def _answers_given_on_resume(request: RunRequest, settings: Settings) -> None:
    """A suspended run that was resumed starts again from the top: read the answers it was
    resumed with before its steps run, so a step does not pause again for one given."""
    if deployment.id is None or (flow_run.run_count or 0) <= 1 or request.run_id is None:
        return
    incident_id = request.load_incident().id
    journal = incident_journal(
        mode_profile(Mode.LIVE), incident_id, settings, SystemClock(), "approval"
    )
    try:
        suspended = [
            w.step_id
            for w in waiting_steps(journal).values()
            if w.run_id == request.run_id and w.expiries > 0
        ]
    finally:
        journal.ledger.close()
    for step_id in suspended:
        _wait_for_decision(incident_id, step_id, settings)


@flow(name="breachbook-response", persist_result=False)
def response(
    incident_file: str | None = None,
    out_dir: str | None = None,
    mode: Mode = Mode.DRILL,
    confirm_incident_id: str | None = None,
    playbook_file: str | None = None,
    demo: bool = False,
    resume_run_id: str | None = None,
) -> dict[str, str]:
    """Run the breach playbook. DRILL by default; LIVE only with the incident id confirmed.

    A step that waits for a person's decision stops the run; in a deployment the flow run is
    suspended (no process, no connection held) and resumed with the decision as its input,
    then carries on under the same run id. Returns where the run's documents are."""
    settings = Settings()
    demo_yaml = None
    if demo:
        settings, demo_yaml = demo_inputs(settings, incident_given=bool(incident_file))
    elif incident_file is None:
        raise ValueError("incident_file is required unless demo is true")
    request = RunRequest(
        mode=mode,
        incident_file=Path(incident_file) if incident_file else None,
        incident_yaml=demo_yaml,
        out_dir=Path(out_dir) if out_dir else None,
        playbook_file=Path(playbook_file) if playbook_file else None,
        confirm_incident_id=confirm_incident_id,
        run_id=resume_run_id or _run_id_of_deployed_flow_run(),
    )
    return _run(request, settings)


def _run(request: RunRequest, settings: Settings) -> dict[str, str]:
    """Run the request with one task run per step; a failure is said in the progress
    artifact before it propagates."""
    steps = PrefectSteps(request.out_dir)
    try:
        return _run_steps(request, settings, steps)
    except BaseException as exc:
        steps.failed(str(exc) if isinstance(exc, BreachbookError) else type(exc).__name__)
        raise


def _run_steps(request: RunRequest, settings: Settings, steps: PrefectSteps) -> dict[str, str]:
    _answers_given_on_resume(request, settings)
    batches = batch_runner(settings)
    ctx, result = execute(request, runner=steps, settings=settings, batches=batches)
    while result.waiting_for and deployment.id is not None:
        for step_id in result.waiting_for:
            _wait_for_decision(ctx.incident.id, step_id, settings)
        ctx, result = execute(request, runner=steps, settings=settings, batches=batches)
    for step_id in result.waiting_for:
        get_run_logger().info(
            "%s waits for a decision: breachbook approve %s %s --by NAME, "
            "then breachbook respond ... --resume %s",
            step_id,
            result.run_id,
            step_id,
            result.run_id,
        )
    _publish_artifacts(ctx, result)
    anchor = last_anchor_of_run(settings, ctx.incident.id, result.run_id)
    if anchor is not None:
        create_table_artifact(
            key=artifact_key("anchor"),
            description="The ledger's head, signed: what `breachbook audit verify` checks",
            table=[anchor_artifact(anchor)],
        )
    get_run_logger().info("report: %s", ctx.workspace.path("report.md"))
    return {"run_id": result.run_id, "out_dir": str(ctx.workspace.root)}


def _run_form(
    form: DrillForm, mode: Mode, one_per_incident: bool = False
) -> dict[str, str] | State:
    """A deployment's run from its form. A form that cannot start a run, or a run refused on
    its inputs, ends Failed with one line naming the field (no traceback). With
    `one_per_incident` (the LIVE deployments) the run is refused while another holds the
    incident."""
    settings = Settings()
    try:
        run_id = _run_id_of_deployed_flow_run() or new_run_id()
        request = run_request(form, mode, settings, run_id)
        incident = request.load_incident()
        request = replace(request, out_dir=settings.home / "runs" / incident.id / run_id)
        if one_per_incident:
            with one_live_response(incident.id, settings.live_wait_seconds):
                return _run(request, settings)
        return _run(request, settings)
    except BreachbookError as exc:
        get_run_logger().error("refused: %s", exc)
        return Failed(message=str(exc))


@flow(name="breachbook-response", persist_result=False)
def drill(drill: Annotated[DrillForm, form_title(DrillForm)]) -> dict[str, str] | State:
    """Rehearse the breach playbook: every permission checked, every document produced,
    nothing changed. Pick an incident file by name or fill one in; the run writes to its own
    new folder, named in its artifacts."""
    return _run_form(drill, Mode.DRILL)


@flow(name="breachbook-response", persist_result=False)
def live_response(
    response: Annotated[LiveForm, form_title(LiveForm)],
) -> dict[str, str] | State:
    """LIVE response to a real incident: contains, preserves and notifies. Refuses to start
    unless the incident id is typed to confirm; waits (suspended) for each approval."""
    return _run_form(response, Mode.LIVE, one_per_incident=True)


@flow(name="breachbook-response", persist_result=False)
def demo_drill() -> dict[str, str]:
    """The drill against the synthetic demo world (created once): nothing to fill in. The run
    writes to its own new folder, named in its artifacts."""
    settings, demo_yaml = demo_inputs(Settings(), incident_given=False)
    run_id = _run_id_of_deployed_flow_run() or new_run_id()
    request = RunRequest(
        mode=Mode.DRILL,
        incident_yaml=demo_yaml,
        out_dir=settings.home / "runs" / "demo" / run_id,
        run_id=run_id,
    )
    return _run(request, settings)


AlertIncident = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="The incident file (by name, in the incidents folder) the alert receiver "
        "wrote for the alert.",
    ),
]
AlertPlaybook = Annotated[str, Field(pattern=NAME_PATTERN, description="The rule's playbook.")]


@flow(name="breachbook-response", persist_result=False)
def alert_drill(
    incident: AlertIncident, playbook: AlertPlaybook = DEFAULT_PLAYBOOK
) -> dict[str, str] | State:
    """A drill started by an alert whose rule says drill (`breachbook serve`)."""
    return _run_form(DrillForm(incident=incident, playbook=playbook), Mode.DRILL)


@flow(name="breachbook-response", persist_result=False)
def alert_live(
    incident: AlertIncident, playbook: AlertPlaybook = DEFAULT_PLAYBOOK
) -> dict[str, str] | State:
    """A LIVE response started by an alert whose rule says live: the rules file, written
    and reviewed beforehand, is the confirmation a person gives on the LIVE form."""
    form = LiveForm(incident=incident, playbook=playbook, confirm_incident_id=incident)
    return _run_form(form, Mode.LIVE, one_per_incident=True)
