"""The mode seam: the one place that reads the mode and builds the connectors for a run.

Everything downstream (engine, actions, flows) receives adapters and an executor and never
asks which mode it is in. Default is DRILL; LIVE needs the incident id named to confirm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import SecretStr

from breachbook.clock import Clock, SystemClock
from breachbook.connectors.customers_sql import SqlCustomerDirectory
from breachbook.connectors.drill import DrillEvidenceStore, DrillMail, NoApprovals
from breachbook.connectors.evidence_fs import FilesystemEvidenceStore
from breachbook.connectors.outbox import OutboxMail
from breachbook.context import Connectors, RunContext
from breachbook.engine import ApplyChanges, PlanOnly, StepExecutor, new_run_id
from breachbook.errors import BreachbookError, CustomerDataError, LiveNotConfirmed
from breachbook.ledger import Ledger
from breachbook.models import Incident
from breachbook.modes import Mode
from breachbook.playbook import Playbook, load_playbook
from breachbook.ports import EvidenceStore, Mail
from breachbook.rules import RuleBook, check_rule_templates
from breachbook.settings import Settings, project_root
from breachbook.templates import Renderer
from breachbook.workspace import Workspace


@dataclass(frozen=True)
class RunRequest:
    """What to run. The incident comes from a file, or as text (the demo's, dated now) that
    the run keeps as incident.yaml in its own folder, so a drill writes nothing elsewhere."""

    mode: Mode
    incident_file: Path | None = None
    out_dir: Path | None = None
    playbook_file: Path | None = None
    confirm_incident_id: str | None = None
    incident_yaml: str | None = None

    def __post_init__(self) -> None:
        if (self.incident_file is None) == (self.incident_yaml is None):
            raise BreachbookError("give exactly one of an incident file and an incident document")

    def load_incident(self) -> Incident:
        if self.incident_file is not None:
            return Incident.from_file(self.incident_file)
        assert self.incident_yaml is not None
        return Incident.from_text(self.incident_yaml, "incident document")


T = TypeVar("T")

INCIDENT_COPY = "incident.yaml"

DRILL_BANNER = (
    "[DRILL] Rehearsal output of a breachbook drill: nothing was sent, published or changed."
)


def open_customers(settings: Settings) -> SqlCustomerDirectory:
    """The customer directory, read-only in every mode; fails early if it cannot be read."""
    if settings.customers_url is None:
        raise CustomerDataError(
            "no customer database configured: set BREACHBOOK_CUSTOMERS_URL, or drill the demo world "
            "(--demo on the command line, demo=true in a deployment)"
        )
    customers = SqlCustomerDirectory(settings.customers_url.get_secret_value(), read_only=True)
    customers.require_readable()
    return customers


def _unchanged(adapter: T) -> T:
    return adapter


@dataclass(frozen=True)
class ModeProfile:
    """Everything that differs between modes, decided once by `mode_profile`."""

    label: str
    executor: StepExecutor
    banner: str | None
    needs_confirmation: bool
    ledger_in_output_folder: bool
    guard_mail: Callable[[Mail], Mail]
    guard_evidence: Callable[[EvidenceStore], EvidenceStore]


def mode_profile(mode: Mode) -> ModeProfile:
    """The only function that reads the mode."""
    if mode is Mode.DRILL:
        return ModeProfile(
            label=mode.value,
            executor=PlanOnly(),
            banner=DRILL_BANNER,
            needs_confirmation=False,
            ledger_in_output_folder=True,
            guard_mail=DrillMail,
            guard_evidence=DrillEvidenceStore,
        )
    if mode is Mode.LIVE:
        return ModeProfile(
            label=mode.value,
            executor=ApplyChanges(),
            banner=None,
            needs_confirmation=True,
            ledger_in_output_folder=False,
            guard_mail=_unchanged,
            guard_evidence=_unchanged,
        )
    raise BreachbookError("TABLETOP mode needs the simulated world, which is not built yet")


def build_connectors(profile: ModeProfile, settings: Settings, clock: Clock) -> Connectors:
    """The adapters for a run, with the profile's guards around every writing port."""
    mail = OutboxMail(settings.outbox, settings.mail_from) if settings.outbox else None
    evidence = FilesystemEvidenceStore(settings.evidence_dir) if settings.evidence_dir else None
    return Connectors(
        clock=clock,
        customers=open_customers(settings),
        executor=profile.executor,
        approvals=NoApprovals(),
        mail=profile.guard_mail(mail) if mail else None,
        evidence=profile.guard_evidence(evidence) if evidence else None,
    )


@dataclass(frozen=True)
class Inputs:
    playbook: Playbook
    rules: RuleBook
    incident: Incident
    templates: Path


def load_inputs(request: RunRequest, profile: ModeProfile) -> Inputs:
    """Read and check playbook, rules, templates and incident; writes nothing anywhere."""
    root = project_root()
    templates = root / "templates"
    playbook = load_playbook(
        request.playbook_file or root / "playbooks" / "customer-data-breach.yaml", templates
    )
    rules = RuleBook.load(root / "rules" / "obligations.yaml")
    check_rule_templates(rules, templates)
    incident = request.load_incident()
    if profile.needs_confirmation and request.confirm_incident_id != incident.id:
        raise LiveNotConfirmed(
            f"LIVE changes production systems: confirm by naming the incident id ({incident.id!r})"
        )
    return Inputs(playbook, rules, incident, templates)


def open_run(
    request: RunRequest, settings: Settings | None = None, clock: Clock | None = None
) -> RunContext:
    """Validate every input, then build the run: nothing is written before all of it is valid."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    profile = mode_profile(request.mode)
    inputs = load_inputs(request, profile)
    incident, playbook, rules, templates = (
        inputs.incident,
        inputs.playbook,
        inputs.rules,
        inputs.templates,
    )
    connectors = build_connectors(profile, settings, clock)
    run_id = new_run_id()
    if profile.ledger_in_output_folder and request.out_dir is None:
        raise BreachbookError(f"a {profile.label} run needs an output folder (--out)")
    out = request.out_dir or settings.home / "runs" / incident.id / run_id
    workspace = Workspace.open_fresh(
        out, profile.banner, f"breachbook {profile.label} run {run_id}"
    )
    if request.incident_file is not None:
        incident_file = request.incident_file.resolve()
    else:
        assert request.incident_yaml is not None
        incident_file = workspace.write_raw(INCIDENT_COPY, request.incident_yaml)
    if profile.ledger_in_output_folder:
        ledger_url = f"sqlite:///{workspace.path('audit.sqlite')}"
    elif settings.ledger_url is not None:
        ledger_url = settings.ledger_url.get_secret_value()
    else:
        settings.home.mkdir(parents=True, exist_ok=True)
        ledger_url = f"sqlite:///{(settings.home / 'ledger.sqlite').resolve()}"
    return RunContext(
        run_id=run_id,
        mode_label=profile.label,
        incident=incident,
        incident_file=incident_file,
        playbook=playbook,
        connectors=connectors,
        workspace=workspace,
        ledger=Ledger(ledger_url, clock),
        rules=rules,
        renderer=Renderer(templates),
        actor=settings.actor,
    )


def demo_settings(settings: Settings, customers_db: Path, demo_folder: Path) -> Settings:
    """Settings pointing at the demo world: its customers, an outbox and an evidence folder."""
    return settings.model_copy(
        update={
            "customers_url": SecretStr(f"sqlite:///{customers_db.resolve()}"),
            "outbox": settings.outbox or demo_folder / "outbox",
            "evidence_dir": settings.evidence_dir or demo_folder / "evidence",
        }
    )
