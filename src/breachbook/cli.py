"""The `breachbook` command."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from breachbook.errors import BreachbookError
from breachbook.modes import Mode

if TYPE_CHECKING:
    from breachbook.submit import Submission

app = typer.Typer(
    help="breachbook: the data-breach response plan as Prefect flows, run LIVE, rehearsed as a DRILL, or exercised as a scored TABLETOP.",
    no_args_is_help=True,
    add_completion=False,
)
audit_app = typer.Typer(help="Check the audit ledger.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
evidence_app = typer.Typer(help="Check and open evidence bundles.", no_args_is_help=True)
app.add_typer(evidence_app, name="evidence")
warroom_app = typer.Typer(help="The Slack war room's message queue.", no_args_is_help=True)
app.add_typer(warroom_app, name="warroom")
letters_app = typer.Typer(help="Where the customer letters stand.", no_args_is_help=True)
app.add_typer(letters_app, name="letters")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

PREFECT_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
}
FLOW_FILE = Path("flows", "response.py")


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.callback()
def _refuse_unknown_settings() -> None:
    # Before any command: a misspelt BREACHBOOK_* variable must not be silently ignored.
    from breachbook.settings import Settings

    try:
        Settings()
    except BreachbookError as exc:
        raise _fail(str(exc)) from None


def _load_flow_module(flow_file: Path = FLOW_FILE) -> ModuleType:
    """A flow file of the content folder in use, or the one this install ships if it has
    none (flows/response.py unless named)."""
    from breachbook.settings import builtin_content, project_root

    path = project_root() / flow_file
    if not path.is_file():
        path = builtin_content() / flow_file
    spec = importlib.util.spec_from_file_location(f"breachbook_flows_{path.stem}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise BreachbookError(f"{path}: flow file not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_flow(**parameters: Any) -> Path:
    """Run the response flow in-process (Prefect's temporary server); returns its folder.

    Flow heartbeats are off: they let a server notice a worker that died, but this server
    lives and dies with this process, and joining the heartbeat thread costs about a second."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    module = _load_flow_module()
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        result: dict[str, str] = module.response(**parameters)
    return Path(result["out_dir"])


def _check_before_start(
    mode: Mode,
    incident: Path | None,
    playbook: Path | None,
    demo: bool,
    confirm: str | None = None,
    out: Path | None = None,
    resume: str | None = None,
) -> None:
    """Fail on bad input in a second, before Prefect starts, with one line naming the problem."""
    from breachbook.anchors import Anchoring
    from breachbook.demo import demo_inputs
    from breachbook.settings import Settings
    from breachbook.wiring import (
        RunRequest,
        load_inputs,
        mode_profile,
        open_customers,
    )
    from breachbook.workspace import check_claimable

    settings = Settings()
    demo_yaml = None
    if demo:
        settings, demo_yaml = demo_inputs(settings, incident_given=incident is not None)
    request = RunRequest(
        mode=mode,
        incident_file=incident,
        incident_yaml=demo_yaml,
        playbook_file=playbook,
        confirm_incident_id=confirm,
    )
    load_inputs(request, mode_profile(mode), settings)
    open_customers(settings).close()
    Anchoring.from_settings(settings, out)
    if out is not None:
        check_claimable(out, resume)


FINE = frozenset({"planned", "completed", "already-done", "skipped"})


def _summary(out: Path, seconds: float) -> int:
    """Verdicts and statuses of the run, each action that is not fine, the report; returns
    the run's exit code (README: Exit codes)."""
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    table = Table(title=f"breachbook {plan['mode']} run {plan['run_id']}", show_header=True)
    table.add_column("verdict")
    table.add_column("actions", justify="right")
    for verdict, count in plan["verdicts"].items():
        table.add_row(verdict, str(count))
    statuses = Counter(entry["status"] for entry in plan["entries"])
    table.add_section()
    for status, count in sorted(statuses.items()):
        table.add_row(status, str(count))
    console.print(table)
    for entry in plan["entries"]:
        status, verdict = entry["status"], entry["verdict"]
        if verdict in ("FAILED", "UNVERIFIED") or status not in FINE:
            label = f"{status} ({verdict})" if verdict and status not in FINE else verdict or status
            line = f"  {label:<10} {entry['step_id']} ({entry['target']}): {entry['reason']}"
            console.print(escape(line), highlight=False, soft_wrap=True)
    code = int(plan["exit_code"])
    console.print(
        f"{plan['outcome']} (exit {code}) in {seconds:.1f} s; "
        f"report: [bold]{escape(str(out / 'report.md'))}[/]",
        highlight=False,
    )
    return code


def _run_served(submitted: Submission) -> Path | None:
    """The run on a running `breachbook serve` (README: Run it for real), followed to its
    end; its folder, or None when PREFECT_API_URL's server does not serve the deployment."""
    from breachbook.settings import Settings
    from breachbook.submit import ServeApi, run_folder

    served = ServeApi(os.environ["PREFECT_API_URL"])
    deployment_id = served.served_deployment(submitted.deployment)
    if deployment_id is None:
        return None
    run = served.start(deployment_id, submitted)
    link = f"{served.api.removesuffix('/api')}/runs/flow-run/{run['id']}"
    console.print(f"started {run['name']} on breachbook serve: {link}", highlight=False)
    run = served.follow(run["id"])
    folder = run_folder(Settings(), run["id"])
    if run["state"]["type"] == "PAUSED":
        raise BreachbookError(f"run {run['name']} waits for a decision: resume it at {link}")
    if run["state"]["type"] != "COMPLETED" or folder is None:
        state = run["state"]
        raise BreachbookError(
            f"run {run['name']} is {state['type']}: {state.get('message') or 'see the Prefect UI'}"
        )
    return folder


def _run_and_report(
    check: Callable[[], None], submitted: Submission | None = None, **parameters: Any
) -> None:
    """Run the flow on a running `serve` when one serves it (its form is checked there, before
    the run acts), else check the inputs (a second, before Prefect starts) and run it
    in-process; print the summary, and exit with the run's code."""
    started = time.perf_counter()
    try:
        folder = _run_served(submitted) if submitted is not None else None
        if folder is None:
            check()
            folder = _run_flow(**parameters)
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    code = _summary(folder, time.perf_counter() - started)
    if code:
        raise typer.Exit(code)


@app.command()
def serve() -> None:
    """Serve the deployments (drill, demo-drill, live-response, alert-drill, alert-live,
    tabletop) and, with BREACHBOOK_ALERT_RULES, the alert receiver, against PREFECT_API_URL
    or a Prefect server it starts. Runs until Ctrl-C or SIGTERM."""
    from breachbook.serve import serve as serve_all
    from breachbook.settings import Settings

    try:
        settings = Settings()
        serve_all(_load_flow_module, settings)
    except BreachbookError as exc:
        raise _fail(str(exc)) from None


@app.command()
def worker(
    limit: Annotated[
        int, typer.Option(min=1, help="Batches this process does at once (threads).")
    ] = 1,
) -> None:
    """Do delivery batches of flow runs whose BREACHBOOK_BATCHES_ON is task-workers: serve
    them as Prefect background tasks from PREFECT_API_URL, each reopened from the shared
    ledger (BREACHBOOK_LEDGER_URL) with this machine's BREACHBOOK_* settings. Start one or
    more on any machine. Runs until Ctrl-C or SIGTERM."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from prefect.task_worker import serve as serve_tasks

    from breachbook.settings import Settings

    try:
        module = _load_flow_module()
        module.require_task_workers(Settings())
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    serve_tasks(module.deliver_batch, limit=limit)


@app.command()
def drill(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder, new or empty (default: a new folder under "
            "~/.breachbook/runs/INCIDENT/). A run never writes into another run's folder.",
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Use the synthetic demo world (created once in ~/.breachbook/demo)."
        ),
    ] = False,
    incident: Annotated[
        Path | None, typer.Option("--incident", help="Incident file (YAML or JSON).")
    ] = None,
    playbook: Annotated[
        Path | None,
        typer.Option("--playbook", help="Playbook YAML (default: the reference playbook)."),
    ] = None,
) -> None:
    """Rehearse the playbook: check every permission, produce every document, change nothing."""
    if not demo and incident is None:
        raise _fail("give --incident FILE, or --demo to drill against the synthetic world")
    from breachbook.settings import Settings
    from breachbook.submit import submission

    _run_and_report(
        lambda: _check_before_start(Mode.DRILL, incident, playbook, demo, out=out),
        submission(Mode.DRILL, Settings(), incident, playbook, demo, out=out),
        incident_file=str(incident) if incident else None,
        out_dir=str(out) if out else None,
        mode=Mode.DRILL,
        playbook_file=str(playbook) if playbook else None,
        demo=demo,
    )


@app.command()
def respond(
    incident: Annotated[Path, typer.Option("--incident", help="Incident file (YAML or JSON).")],
    confirm: Annotated[
        str, typer.Option("--confirm", help="The incident id, typed to confirm a LIVE run.")
    ] = "",
    out: Annotated[Path | None, typer.Option("--out", help="Output folder for documents.")] = None,
    playbook: Annotated[Path | None, typer.Option("--playbook")] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Run id of a run that waited for a decision: carry on where it stopped.",
        ),
    ] = None,
) -> None:
    """LIVE response: really contains, preserves and notifies. Needs --confirm INCIDENT_ID."""
    from breachbook.settings import Settings
    from breachbook.submit import submission

    _run_and_report(
        lambda: _check_before_start(
            Mode.LIVE, incident, playbook, False, confirm or None, out=out, resume=resume
        ),
        submission(
            Mode.LIVE, Settings(), incident, playbook, confirm=confirm, out=out, resume=resume
        ),
        incident_file=str(incident),
        out_dir=str(out) if out else None,
        mode=Mode.LIVE,
        confirm_incident_id=confirm or None,
        playbook_file=str(playbook) if playbook else None,
        resume_run_id=resume,
    )


@app.command()
def approve(
    run: Annotated[
        str | None,
        typer.Argument(help="The run that waits: its id, or its Prefect flow run's id."),
    ] = None,
    step_at: Annotated[
        str | None, typer.Argument(metavar="STEP", help="The step waiting for a decision.")
    ] = None,
    by: Annotated[
        str,
        typer.Option(
            "--by", help="Who decides: a name listed for the role in BREACHBOOK_APPROVERS."
        ),
    ] = "",
    deny: Annotated[bool, typer.Option("--deny", help="Reject instead of approving.")] = False,
    comment: Annotated[
        str, typer.Option("--comment", help="Why (kept with the decision; a rejection's reason).")
    ] = "",
    incident: Annotated[
        str | None, typer.Option("--incident", help="The incident id (instead of RUN).")
    ] = None,
    step: Annotated[str | None, typer.Option("--step", help="The step (instead of STEP).")] = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="The version you read (e.g. full-v2, as the request names it): refused as "
            "stale if another version waits. Default: the version waiting now.",
        ),
    ] = None,
) -> None:
    """Approve (or --deny) a step that waits: `approve RUN STEP --by NAME`. A decision counts
    for the version waiting (a statement's v2 after v1 was rejected). A run paused in Prefect
    gets the answer through Prefect's API, as its form would; otherwise the answer is
    recorded in the ledger and the run carries on with `respond --resume`."""
    from breachbook.anchors import Anchoring
    from breachbook.clock import SystemClock
    from breachbook.connectors.ledger_approvals import record_answer, stale
    from breachbook.ports import Answer
    from breachbook.roster import Ruling
    from breachbook.settings import Settings
    from breachbook.wiring import incident_journal, mode_profile

    step_id = step_at or step
    if step_id is None or not by.strip() or (run is None and incident is None):
        raise _fail("give the run, the step and your name: breachbook approve RUN STEP --by NAME")
    answer = Answer(approve=not deny, approver=by, comment=comment, version=version)
    try:
        settings = Settings()
        incident_id = incident or _incident_waiting_in(settings, run or "")
        journal = incident_journal(
            mode_profile(Mode.LIVE), incident_id, settings, SystemClock(), "approval", actor=by
        )
        try:
            wait = _the_wait(journal, step_id, run)
            before = journal.head()[0]
            fresh = stale(answer, wait) is None
            if fresh and wait.flow_run_id and _submitted_to_prefect(wait.flow_run_id, answer):
                outcome = _outcome_in_ledger(journal, step_id, by, before)
                console.print(escape(f"{step_id}: {outcome}"), highlight=False)
                if outcome.startswith(Ruling.REFUSED.value):
                    raise typer.Exit(1)
                return
            judgement = record_answer(
                journal, wait, settings.approvers, answer, "terminal", SystemClock()
            )
            Anchoring.from_settings(settings).checkpoint(journal, f"approve {step_id}")
        finally:
            journal.ledger.close()
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    if judgement.ruling is Ruling.REFUSED:
        raise _fail(f"{step_id}: refused: {judgement.reason}", code=1)
    about = f" on {wait.version}" if wait.version else ""
    then = (
        f"carry on with: breachbook respond --incident FILE --confirm {incident_id} "
        f"--resume {wait.run_id}"
        if judgement.ruling.final
        else "the step waits for the next approver"
    )
    console.print(
        escape(f"{step_id}: {judgement.ruling.value}{about} ({judgement.reason}); {then}"),
        highlight=False,
    )


def _is_run(wait: Any, run: str) -> bool:
    """RUN names the waiting run: its breachbook id, or its Prefect flow run's id (a deployed
    run's breachbook id is that id's first 12 hex digits)."""
    hexed = run.replace("-", "").lower()
    flow_run = (wait.flow_run_id or "").replace("-", "")
    return (
        run == wait.run_id or hexed == flow_run or (len(hexed) == 32 and hexed[:12] == wait.run_id)
    )


def _incident_waiting_in(settings: Any, run: str) -> str:
    """The incident in which the run has a step waiting for a decision."""
    from breachbook.clock import SystemClock
    from breachbook.connectors.ledger_approvals import WAIT, waiting_steps
    from breachbook.journal import INCIDENT_SCOPE, RunJournal
    from breachbook.ledger import Ledger
    from breachbook.wiring import live_ledger_url

    ledger = Ledger(live_ledger_url(settings), SystemClock(), create=False)
    try:
        for incident_id in ledger.incidents_with_record(INCIDENT_SCOPE, WAIT):
            journal = RunJournal(ledger, incident_id, "-", "-", "live", SystemClock())
            if any(_is_run(w, run) for w in waiting_steps(journal).values()):
                return incident_id
    finally:
        ledger.close()
    raise BreachbookError(f"no step of run {run} waits for a decision")


def _the_wait(journal: Any, step_id: str, run: str | None) -> Any:
    from breachbook.connectors.ledger_approvals import waiting_steps

    waits = waiting_steps(journal)
    wait = waits.get(step_id)
    if wait is None or (run is not None and not _is_run(wait, run)):
        listed = ", ".join(f"{w.step_id} (run {w.run_id})" for w in waits.values())
        raise BreachbookError(
            f"incident {journal.incident_id}: no step {step_id!r} waits for a decision"
            f"{f' in run {run}' if run else ''}; waiting: {listed or 'none'}"
        )
    return wait


def _submitted_to_prefect(flow_run_id: str, answer: Any) -> bool:
    """Answer the paused flow run's form through Prefect's API when PREFECT_API_URL names
    its server and it is paused there; False otherwise (the ledger takes the answer)."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("PREFECT_API_URL"):
        return False
    from breachbook.connectors.prefect_pauses import submit_answer

    try:
        return submit_answer(flow_run_id, answer)
    except Exception as exc:
        raise BreachbookError(
            f"Prefect refused the answer for flow run {flow_run_id}: {type(exc).__name__}: "
            f"{str(exc)[:200]}"
        ) from None


APPROVAL_ECHO_SECONDS = 60.0


def _outcome_in_ledger(journal: Any, step_id: str, by: str, after_seq: int) -> str:
    """What the paused run made of the answer, once it has recorded it."""
    from breachbook.roster import Ruling, same_person

    answers = {r.value for r in Ruling}
    deadline = time.monotonic() + APPROVAL_ECHO_SECONDS
    while time.monotonic() < deadline:
        for entry in journal.ledger.entries(journal.incident_id):
            if (
                entry.seq > after_seq
                and entry.step_id == step_id
                and entry.phase == "approval"
                and entry.outcome in answers
                and same_person(entry.actor, by)
            ):
                return f"{entry.outcome}: {entry.details.get('reason', '')}"
        time.sleep(0.5)
    return "submitted to Prefect; the run has not recorded it yet (see its page)"


@app.command()
def filed(
    incident: Annotated[str, typer.Option("--incident", help="The incident id.")],
    rule: Annotated[str, typer.Option("--rule", help="The regulator obligation, e.g. gdpr-a33.")],
    by: Annotated[str, typer.Option("--by", help="Who filed it (recorded in the register).")],
    phase: Annotated[
        str, typer.Option("--phase", help="initial, follow-up or final (GDPR Art. 33(4)).")
    ] = "initial",
    reference: Annotated[
        str, typer.Option("--reference", help="The regulator's case or submission number.")
    ] = "",
    at: Annotated[
        str | None,
        typer.Option("--at", help="When it was filed, ISO 8601 with a zone (default: now)."),
    ] = None,
) -> None:
    """Record that a drafted regulator notice was filed; the deadline clock then counts it."""
    from breachbook.anchors import Anchoring
    from breachbook.clock import SystemClock
    from breachbook.register import PHASES, Phase, filings, record_filed
    from breachbook.settings import Settings
    from breachbook.wiring import incident_journal, mode_profile

    if phase not in PHASES:
        raise _fail(f"--phase: {phase!r} is not one of {', '.join(PHASES)}", 2)
    chosen: Phase = phase
    try:
        when = datetime.fromisoformat(at) if at else None
    except ValueError:
        raise _fail(f"--at: {at!r} is not an ISO 8601 time", 2) from None
    if when is not None and when.tzinfo is None:
        raise _fail(f"--at: {at!r} has no time zone (add +00:00 or Z)", 2)
    try:
        settings = Settings()
        clock = SystemClock()
        journal = incident_journal(mode_profile(Mode.LIVE), incident, settings, clock, "filing", by)
        try:
            done = filings(journal).get(rule, [])
            if not done:
                drafted = ", ".join(sorted(filings(journal))) or "none"
                raise BreachbookError(
                    f"incident {incident}: no notice {rule!r} was drafted; drafted: {drafted}"
                )
            earlier = PHASES[: PHASES.index(chosen)]
            missing = [
                p for p in earlier if p not in {f.phase for f in done if f.status == "filed"}
            ]
            if missing:
                raise BreachbookError(
                    f"incident {incident}: {rule} {phase} cannot be filed before {', '.join(missing)}"
                )
            record_filed(journal, rule, chosen, by, when or clock.now(), reference)
            Anchoring.from_settings(settings).checkpoint(journal, f"filed {rule} {phase}")
        finally:
            journal.ledger.close()
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    console.print(escape(f"{rule} ({phase}): filed by {by}"), highlight=False)


@app.command()
def restore(
    incident: Annotated[str, typer.Option("--incident", help="The incident id.")],
    confirm: Annotated[
        str, typer.Option("--confirm", help="The incident id again: restore changes production.")
    ] = "",
    step: Annotated[str | None, typer.Option("--step", help="Only this step.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Only this target.")] = None,
) -> None:
    """After the incident: undo what the response changed, newest first, each once, audited."""
    from breachbook.anchors import Anchoring
    from breachbook.clock import SystemClock
    from breachbook.restore import restore_incident
    from breachbook.settings import Settings
    from breachbook.wiring import incident_journal, mode_profile, restore_connectors

    if confirm != incident:
        raise _fail(f"restore changes production systems: confirm with --confirm {incident}")
    settings = Settings()
    live = mode_profile(Mode.LIVE)
    try:
        journal = incident_journal(live, incident, settings, SystemClock(), "restore")
        try:
            connectors = restore_connectors(live, settings, SystemClock(), journal)
            done = restore_incident(journal, connectors, step, target)
            Anchoring.from_settings(settings).checkpoint(journal, "restore", again=True)
        finally:
            journal.ledger.close()
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    for item in done:
        console.print(
            escape(f"{item.outcome.value:<12} {item.step_id} {item.target}"), highlight=False
        )
    console.print(f"{len(done)} change(s) considered", highlight=False)
    if any(item.outcome.value not in ("done", "already-done") for item in done):
        raise typer.Exit(1)


@app.command()
def obligations(
    incident: Annotated[
        Path | None, typer.Option("--incident", help="Incident file (YAML or JSON).")
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="The demo incident against the demo world.")
    ] = False,
) -> None:
    """Who must be told what, by when: the obligations the incident triggers on the customer
    database now, with how many people, the due time from the incident's own clocks and the
    time left. Reads only; writes nothing."""
    from datetime import UTC, datetime

    from breachbook.demo import demo_inputs
    from breachbook.models import Incident
    from breachbook.notify import assess, obligation_record
    from breachbook.register import no_rule_line
    from breachbook.rules import RuleBook
    from breachbook.settings import Settings, project_root
    from breachbook.wiring import open_customers, with_exposure

    if not demo and incident is None:
        raise _fail("give --incident FILE, or --demo for the demo incident and world")
    try:
        settings, demo_yaml = (
            demo_inputs(Settings(), incident_given=incident is not None)
            if demo
            else (Settings(), None)
        )
        about = with_exposure(
            Incident.from_file(incident)
            if incident is not None
            else Incident.from_text(demo_yaml or "", "demo incident"),
            settings,
        )
        rules = RuleBook.load(project_root(settings) / "rules" / "obligations.yaml")
        customers = open_customers(settings)
        try:
            found = assess(customers, rules, about)
        finally:
            customers.close()
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    now = datetime.now(UTC)
    table = Table(title=f"obligations of {about.id}: {found.affected:,} affected customers")
    for column in ("obligation", "citation", "to", "people", "due", "time left"):
        table.add_column(column, justify="right" if column == "people" else "left")
    for tally in [*found.regulator.values(), *found.individual.values()]:
        record = obligation_record(tally, rules.rule(tally.rule_id), about, now)
        left = record["hours_left"]
        when = "-" if left is None else ("OVERDUE by" if left < 0 else "") + f" {abs(left):g} h"
        table.add_row(
            escape(record["id"]),
            escape(record["citation"] + ("" if record["verified_citation"] else " (unverified)")),
            escape(record["recipient"]),
            f"{tally.count:,}",
            escape(record["due"]),
            when.strip(),
        )
    console.print(table)
    for rule_id, reason in found.not_owed.items():
        console.print(escape(f"not owed: {rule_id}: {reason}"), highlight=False)
    for place, count in found.not_covered.items():
        gap = no_rule_line(place, count, found.not_covered_categories.get(place, {}))
        console.print(escape(f"{gap}: a person decides"), highlight=False)


@app.command()
def validate(
    playbook: Annotated[
        Path,
        typer.Argument(help="Playbook, data-source or tabletop scenario file (YAML) to check."),
    ],
    templates: Annotated[
        Path | None, typer.Option(help="Templates folder (default: the project's).")
    ] = None,
) -> None:
    """Check a playbook (every problem with its path and line), a data-source file (a file
    with a top-level `customers:` mapping) or a tabletop scenario (a top-level `exercise:`)."""
    from breachbook.datasource import is_datasource, load_datasource
    from breachbook.errors import PlaybookError
    from breachbook.playbook import load_playbook
    from breachbook.settings import project_root
    from breachbook.tabletop.scenario import is_scenario, load_scenario

    try:
        if is_scenario(playbook):
            checked = load_scenario(playbook, project_root()).scenario
            console.print(
                f"{playbook}: valid scenario ({len(checked.injects)} injects, "
                f"{len(checked.decisions)} decisions, "
                f"{len(checked.evaluation)} capability targets)",
                highlight=False,
            )
            return
        if is_datasource(playbook):
            source = load_datasource(playbook)
            columns = sum(len(t.declared()) for t in source.all_tables())
            console.print(
                f"{playbook}: valid data source ({len(source.all_tables())} tables, "
                f"{columns} mapped columns)",
                highlight=False,
            )
            return
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    try:
        loaded = load_playbook(playbook, templates or project_root() / "templates")
    except PlaybookError as exc:
        for problem in exc.problems:
            errors.print(escape(f"{exc.path}: {problem}"), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    steps = len(loaded.steps())
    console.print(
        f"{playbook}: valid ({len(loaded.phases)} phases, {steps} steps)", highlight=False
    )


@app.command()
def schema(
    check: Annotated[
        bool, typer.Option("--check", help="Fail if a committed schema is stale.")
    ] = False,
) -> None:
    """Write the playbook and incident JSON Schemas from the models (or check they are current)."""
    from breachbook.schemas import schema_texts
    from breachbook.settings import PACKAGED_CONTENT, project_root

    try:
        root = project_root()
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    if root == PACKAGED_CONTENT:
        raise _fail(
            "the schemas live in a checkout: run from one, or set BREACHBOOK_CONTENT_DIR to its folder"
        )
    stale = []
    for relative, text in schema_texts().items():
        target = root / relative
        if check:
            current = target.read_text(encoding="utf-8") if target.is_file() else ""
            if current != text:
                stale.append(str(target))
                continue
            console.print(f"{target}: current", highlight=False)
        else:
            target.write_text(text, encoding="utf-8")
            console.print(f"wrote {target}", highlight=False)
    if stale:
        raise _fail(f"{', '.join(stale)} stale: run `breachbook schema`", 1)


@audit_app.command("verify")
def audit_verify(
    run: Annotated[
        Path | None,
        typer.Option(
            "--run",
            help="A run's output folder, DRILL or LIVE (its audit.sqlite, or the ledger its "
            "plan.json names).",
        ),
    ] = None,
    ledger: Annotated[str | None, typer.Option("--ledger", help="Ledger database URL.")] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="Public key (PEM) the anchors must be signed with (default: "
            "BREACHBOOK_VERIFY_KEY, else the signing key's own).",
        ),
    ] = None,
) -> None:
    """Recompute the ledger's hash chains and check them against the signed anchors.

    Exit 0: intact and anchored; 1: tampered; 3: unproven (no anchor, or entries after the
    last one); 2: bad input."""
    from sqlalchemy.engine import make_url

    from breachbook.anchors import (
        RESULT_LABELS,
        AnchorLog,
        Proof,
        anchors_dir,
        run_folder_target,
        verdict_lines,
        verify_key,
        verify_ledger,
        worst,
    )
    from breachbook.clock import SystemClock
    from breachbook.ledger import Ledger, LedgerError
    from breachbook.settings import Settings

    if run is None and ledger is None:
        raise _fail("give --run DIR or --ledger URL")
    settings = Settings()
    try:
        target = run_folder_target(run, settings, ledger) if run is not None else None
        trusted = verify_key(settings, key, run)
        log = AnchorLog(anchors_dir(settings))
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    url = target.ledger_url if target is not None else ledger
    assert url is not None
    try:
        book = Ledger(url, SystemClock(), create=False)
    except LedgerError as exc:
        if target is None or not target.anchored:
            raise _fail(str(exc)) from None
        # The folder's run published anchors: its ledger was there and is gone.
        errors.print(
            escape(f"{exc}; yet run {', '.join(sorted(target.expected_runs))} anchored it"),
            highlight=False,
        )
        errors.print("result: TAMPERED (exit 1)", highlight=False)
        raise typer.Exit(Proof.TAMPERED) from None
    try:
        verdicts = verify_ledger(
            book,
            log,
            trusted,
            only=target.only if target else None,
            include=target.include if target else frozenset(),
            expected_runs=target.expected_runs if target else frozenset(),
            plan_head=target.plan_head if target else None,
        )
    finally:
        book.close()
    where = make_url(url).render_as_string(hide_password=True)
    signer = f"key {trusted.key_id} ({trusted.source})" if trusted else "no public key"
    console.print(escape(f"ledger {where}; anchors {log.folder}; {signer}"), highlight=False)
    for note in target.notes if target else []:
        console.print(escape(f"note: {note}"), highlight=False)
    for verdict in verdicts:
        out, err = verdict_lines(verdict)
        for line in err:
            errors.print(escape(line), highlight=False)
        for line in out:
            console.print(escape(line), highlight=False)
    if not verdicts:
        errors.print("the ledger holds no entries: nothing proven", highlight=False)
    result = worst(verdicts)
    console.print(f"result: {RESULT_LABELS[result]} (exit {int(result)})", highlight=False)
    if result is not Proof.INTACT:
        raise typer.Exit(int(result))


@audit_app.command("keygen")
def audit_keygen(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Where to write the private key (mode 0600); the public key goes to OUT.pub. "
            "Never inside a run folder; an existing file is never replaced.",
        ),
    ],
) -> None:
    """Create an Ed25519 key pair for signing the ledger's anchors; print the public key."""
    from breachbook.anchors import generate_key, key_id, public_key_path, public_pem

    try:
        public = generate_key(out)
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    console.print(public_pem(public), end="", highlight=False)
    console.print(
        escape(
            f"key id {key_id(public)}; private key {out} (mode 0600), public key "
            f"{public_key_path(out)}\nsign with BREACHBOOK_SIGNING_KEY={out.resolve()}; "
            "verify elsewhere with BREACHBOOK_VERIFY_KEY=<a copy of the public key>"
        ),
        highlight=False,
    )


KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Public key (PEM) the custody records must be signed with (default: "
        "BREACHBOOK_VERIFY_KEY, else the signing key's own).",
    ),
]


def _open_bundle(bundle: Path, key: Path | None) -> tuple[Any, Any]:
    """The bundle (with the evidence key if there is one, and the signing key if it is the
    trusted one, to record the access) and the trusted public key."""
    from breachbook.anchors import Signer, default_key_path, verify_key
    from breachbook.custody import Bundle
    from breachbook.settings import Settings
    from breachbook.vault import vault_key

    settings = Settings()
    if not (bundle / "manifest.jsonl").is_file():
        raise _fail(f"{bundle}: no manifest.jsonl: not an evidence bundle")
    try:
        trusted = verify_key(settings, key, bundle)
        if trusted is None:
            raise _fail(
                "no public key to check the custody records with: set BREACHBOOK_VERIFY_KEY "
                "or pass --key"
            )
        secret = vault_key(settings, create=False, away_from=[bundle])
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    signer = None
    path = settings.signing_key or default_key_path(settings)
    if path.is_file():
        try:
            candidate = Signer.load(path)
            signer = candidate if candidate.key_id == trusted.key_id else None
        except BreachbookError:
            signer = None
    return Bundle(bundle, signer, secret), trusted


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


@evidence_app.command("verify")
def evidence_verify(
    bundle: Annotated[Path, typer.Argument(help="An evidence bundle folder (a run's evidence/).")],
    key: KeyOption = None,
) -> None:
    """Check every custody record's chain and signature, every item's hash (decrypting it),
    and that no item is missing or extra; record the check in the bundle.

    Exit 0: intact; 1: tampered (each problem named); 2: cannot check (no manifest, no key,
    the wrong evidence key); 3: intact, but items failed to be collected (listed)."""
    from breachbook.custody import Event, Outcome, verify_bundle, verify_lines
    from breachbook.settings import Settings

    opened, trusted = _open_bundle(bundle, key)
    try:
        verdict = verify_bundle(opened, trusted)
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    out, err = verify_lines(verdict)
    for line in err:
        errors.print(escape(line), highlight=False)
    for line in out:
        console.print(escape(line), highlight=False)
    result = verdict.outcome
    if opened.signer is not None:
        opened.append(
            Event.VERIFIED,
            by=Settings().actor,
            at=_now(),
            detail=f"{result.name.lower()}: {len(verdict.problems)} problem(s)",
        )
    else:
        console.print("note: access not recorded: the signing key is not the trusted key's")
    labels = {
        Outcome.INTACT: "intact",
        Outcome.TAMPERED: "TAMPERED",
        Outcome.INCOMPLETE: "intact but incomplete",
        Outcome.CANNOT_CHECK: "cannot check",
    }
    console.print(
        f"result: {labels[result]}, signed by key {trusted.key_id} (exit {int(result)})",
        highlight=False,
    )
    if result is not Outcome.INTACT:
        raise typer.Exit(int(result))


@evidence_app.command("export")
def evidence_export(
    bundle: Annotated[Path, typer.Argument(help="An evidence bundle folder (a run's evidence/).")],
    to: Annotated[Path, typer.Option("--to", help="A new folder for the decrypted copy.")],
    key: KeyOption = None,
) -> None:
    """Give legal a decrypted copy: every item (checked while decrypted), the manifest and a
    custody report in markdown. Verifies first and refuses a tampered bundle; the export is
    recorded in the custody chain.

    Exit 0: exported; 1: the bundle is tampered; 2: cannot export (see the message)."""
    from breachbook.custody import (
        MANIFEST,
        Event,
        Outcome,
        custody_report,
        export_bundle,
        verify_bundle,
    )
    from breachbook.settings import Settings

    opened, trusted = _open_bundle(bundle, key)
    if opened.signer is None:
        raise _fail(
            "an export is recorded in the custody chain: it needs the signing key of the "
            f"trusted key {trusted.key_id} (BREACHBOOK_SIGNING_KEY)"
        )
    try:
        verdict = verify_bundle(opened, trusted)
        if verdict.outcome is Outcome.TAMPERED:
            for problem in verdict.problems:
                errors.print(escape(f"TAMPERED: {problem}"), highlight=False)
            errors.print("not exported: the bundle is tampered (exit 1)", highlight=False)
            raise typer.Exit(1)
        written = export_bundle(opened, to)
        opened.append(
            Event.EXPORTED,
            by=Settings().actor,
            at=_now(),
            detail=f"{len(written)} decrypted item(s) to {to.resolve()}",
        )
        (to / MANIFEST).write_bytes(opened.manifest.read_bytes())
        (to / "custody-report.md").write_text(
            custody_report(opened.records(), trusted.key_id), encoding="utf-8"
        )
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    console.print(
        escape(
            f"exported {len(written)} item(s) to {to}; custody-report.md and {MANIFEST} beside them"
        ),
        highlight=False,
    )


@app.command("demo")
def demo_world() -> None:
    """Create (once) the synthetic demo world and print where it is."""
    from breachbook.demo import ensure_demo_world
    from breachbook.settings import Settings

    try:
        world = ensure_demo_world(Settings().home / "demo")
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"customers: {world.customers_db}\n"
        f"their data-source file (BREACHBOOK_DATASOURCE): {world.folder / 'datasource.yaml'}\n"
        f"sample incident (to copy and edit; drills with --demo date it now): {world.incident_file}",
        highlight=False,
    )


@warroom_app.command("flush")
def warroom_flush(
    incident: Annotated[str, typer.Option("--incident", help="The incident id.")],
) -> None:
    """Deliver the incident's war-room messages still waiting in the LIVE ledger (after a
    Slack outage), oldest first, each once. Exit 1 if some still wait."""
    from breachbook.anchors import Anchoring
    from breachbook.clock import SystemClock
    from breachbook.settings import Settings
    from breachbook.wiring import incident_journal, incident_war_room, mode_profile

    try:
        settings = Settings()
        clock = SystemClock()
        live = mode_profile(Mode.LIVE)
        journal = incident_journal(live, incident, settings, clock, "warroom")
        try:
            delivery = incident_war_room(live, settings, journal, clock).deliver()
            Anchoring.from_settings(settings).checkpoint(journal, "warroom flush")
        finally:
            journal.ledger.close()
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{delivery.delivered} delivered, {delivery.waiting} waiting"
        + (f" ({escape(delivery.error)})" if delivery.error else ""),
        highlight=False,
    )
    if delivery.waiting:
        raise typer.Exit(1)


@letters_app.command("status")
def letters_status(
    run: Annotated[Path, typer.Option("--run", help="A run's output folder, DRILL or LIVE.")],
    ids: Annotated[
        bool, typer.Option("--ids", help="List the ids of sent letters too, not only the rest.")
    ] = False,
) -> None:
    """Count the run's letters as sent, failed, unknown, unsent and left for post, and list
    each one not sent by id (ids and reply codes only, never an address).

    Exit 0: every letter sent or left for post; 1: some failed, unknown or unsent; 2: bad input."""
    from breachbook.anchors import run_folder_target
    from breachbook.clock import SystemClock
    from breachbook.ledger import Ledger, LedgerError
    from breachbook.letter_status import letter_status
    from breachbook.settings import Settings

    try:
        target = run_folder_target(run, Settings(), None)
        book = Ledger(target.ledger_url, SystemClock(), create=False)
    except (BreachbookError, LedgerError) as exc:
        raise _fail(str(exc)) from None
    try:
        found = letter_status(run, book)
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    finally:
        book.close()
    console.print(
        escape(
            f"incident {found.incident_id}, run {found.run_id}: sent {len(found.sent)}, "
            f"failed {len(found.failed)}, unknown {len(found.unknown)}, "
            f"unsent {len(found.unsent)}, left for post {len(found.for_post)}"
        ),
        highlight=False,
    )
    listed: list[tuple[str, list[str]]] = [
        ("failed", [f"{key} ({why})" for key, why in sorted(found.failed.items())]),
        ("unknown", sorted(found.unknown)),
        ("unsent", sorted(found.unsent)),
        ("left for post", sorted(found.for_post)),
    ]
    if ids:
        listed.insert(0, ("sent", sorted(found.sent)))
    for label, keys in listed:
        for key in keys:
            console.print(escape(f"{label}: {key}"), highlight=False)
    if not found.settled:
        raise typer.Exit(1)


@app.command()
def tabletop(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario file (YAML); --demo: the shipped exercise.")
    ] = None,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="The shipped 72-hour antique-dealer breach exercise."),
    ] = False,
    players: Annotated[
        Path | None,
        typer.Option("--players", help="Scripted players file; without it, --interactive."),
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive", help="A facilitator types the team's answers as injects arrive."
        ),
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder, new or empty.")] = None,
) -> None:
    """TABLETOP exercise: the playbook run against a simulated world on a simulated clock,
    with injects and the players' decisions; writes a score and an after-action report."""
    from breachbook.settings import Settings, builtin_content, project_root
    from breachbook.tabletop.exercise import run_exercise
    from breachbook.tabletop.players import (
        Players,
        ScriptedPlayers,
        TerminalPlayers,
        scenario_time,
    )
    from breachbook.tabletop.report import write_results
    from breachbook.tabletop.scenario import load_players, load_scenario

    if (scenario is None) == (not demo):
        raise _fail("give a scenario file, or --demo for the shipped exercise")
    if (players is None) == (not interactive):
        raise _fail("give --players FILE (scripted players), or --interactive")
    started = time.perf_counter()
    try:
        settings = Settings()
        root = project_root(settings)
        if scenario is None:
            shipped = root / DEMO_SCENARIO
            scenario = shipped if shipped.is_file() else builtin_content() / DEMO_SCENARIO
        loaded = load_scenario(scenario, root)
        team: Players
        answers_text = ""
        if players is not None:
            team = ScriptedPlayers(load_players(players, loaded))
            answers_text = players.read_text(encoding="utf-8")
        else:
            team = TerminalPlayers(console, loaded.scenario.exercise.roles)
        folder = out or settings.home / "exercises" / loaded.incident.id / f"{int(time.time())}"
        log = run_exercise(loaded, team, folder, settings, answers_text)
    except BreachbookError as exc:
        raise _fail(str(exc)) from None
    scored = write_results(folder, log)
    table = Table(title=f"tabletop {escape(loaded.scenario.exercise.name)}")
    table.add_column("capability")
    table.add_column("target")
    table.add_column("rating")
    for item in scored:
        table.add_row(item.target.capability, item.target.id, item.rating.value)
    console.print(table)
    console.print(
        f"{log.rounds} response rounds over {scenario_time(loaded.scenario.duration)} of scenario time in "
        f"{time.perf_counter() - started:.1f} s; report: [bold]{escape(str(folder / 'aar.md'))}[/]",
        highlight=False,
    )


DEMO_SCENARIO = Path("scenarios", "antique-dealer-breach.yaml")


if __name__ == "__main__":
    app()
