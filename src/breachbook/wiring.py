"""The mode seam: the one place that reads the mode and builds the connectors for a run.

Everything downstream (engine, actions, flows) receives adapters and an executor and never
asks which mode it is in. Default is DRILL; LIVE needs the incident id named to confirm.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import SecretStr

from breachbook.clock import Clock, SystemClock
from breachbook.connectors.customers_sql import SqlCustomerDirectory
from breachbook.connectors.evidence_fs import FilesystemEvidenceStore
from breachbook.connectors.evidence_sql import DirectoryEvidenceSource, SqlEvidenceSource
from breachbook.connectors.guard import read_only
from breachbook.connectors.ledger_approvals import LedgerApprovals
from breachbook.connectors.outbox import OutboxMail
from breachbook.context import Connectors, RunContext
from breachbook.custody import Contents, EvidencePolicy, run_signer
from breachbook.datasource import DEMO_DATASOURCE, DataSource, complete_categories, load_datasource
from breachbook.engine import ApplyChanges, PlanOnly, StepExecutor, new_run_id
from breachbook.errors import BreachbookError, CustomerDataError, LiveNotConfirmed
from breachbook.facts import record_facts
from breachbook.journal import RunJournal
from breachbook.ledger import Ledger
from breachbook.models import Customer, Incident, RejectedRecord
from breachbook.modes import Mode
from breachbook.playbook import Playbook, load_playbook
from breachbook.ports import (
    Approvals,
    Chat,
    Check,
    Cloud,
    CloudEvidence,
    CustomerDirectory,
    DatabaseAdmin,
    EvidenceSource,
    EvidenceStore,
    HttpClient,
    Mail,
    Publisher,
)
from breachbook.rules import RuleBook, check_rule_templates
from breachbook.settings import Settings, project_root
from breachbook.tabletop.world import simulated_only
from breachbook.templates import Renderer
from breachbook.vault import vault_key
from breachbook.workspace import Workspace

if TYPE_CHECKING:
    from breachbook.connectors.aws import AwsCloud
    from breachbook.connectors.postgres_admin import PostgresAdmin


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
    run_id: str | None = None
    """The run's id: new when None; the id of a run that waited resumes that run."""

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
TABLETOP_BANNER = (
    "[TABLETOP] Exercise output of a breachbook tabletop: everything here happened in a "
    "simulated world, on a simulated clock."
)


def open_customers(settings: Settings) -> SqlCustomerDirectory:
    """The customer directory, read-only in every mode; fails early if it cannot be read."""
    if settings.customers_url is None:
        raise CustomerDataError(
            "no customer database configured: set BREACHBOOK_CUSTOMERS_URL, or drill the demo world "
            "(--demo on the command line, the demo-drill deployment in Prefect)"
        )
    source_file, source = open_datasource(settings)
    customers = SqlCustomerDirectory(
        settings.customers_url.get_secret_value(), True, source, source_file
    )
    customers.require_readable()
    return customers


def open_datasource(settings: Settings) -> tuple[Path, DataSource]:
    """The data-source file in use (BREACHBOOK_DATASOURCE, else the demo world's mapping)."""
    path = settings.datasource or DEMO_DATASOURCE
    return path, load_datasource(path)


def with_exposure(incident: Incident, settings: Settings) -> Incident:
    """The incident checked against the data-source file (every exposed table and column is
    mapped) and its data_categories completed with what the exposed columns can hold."""
    path, source = open_datasource(settings)
    return complete_categories(source, incident, str(path))


def _unchanged(adapter: T, port: type) -> T:
    return adapter


Guard = Callable[[Any, type], Any]
"""Wraps one adapter, given the port it implements: unchanged, or read-only for a drill."""


@dataclass(frozen=True)
class ModeProfile:
    """Everything that differs between modes, decided once by `mode_profile`."""

    label: str
    executor: StepExecutor
    banner: str | None
    needs_confirmation: bool
    ledger_in_output_folder: bool
    guard: Guard
    transport_read_only: bool = True
    """Adapters refuse writes at the transport too (a read-only database session, a botocore
    hook), so a bug behind a read method cannot change anything either."""
    evidence_contents_optional: bool = False
    """Whether evidence contents may be left out (BREACHBOOK_EVIDENCE_DRILL_CONTENTS), or
    are always kept, encrypted."""
    builds_from_settings: bool = True
    """Whether adapters are built from settings (URLs, regions, folders) for the ports the
    caller did not give; TABLETOP: never, every port comes from the simulated world."""


def mode_profile(mode: Mode) -> ModeProfile:
    """The only function that reads the mode."""
    if mode is Mode.DRILL:
        return ModeProfile(
            label=mode.value,
            executor=PlanOnly(),
            banner=DRILL_BANNER,
            needs_confirmation=False,
            ledger_in_output_folder=True,
            guard=read_only,
            transport_read_only=True,
            evidence_contents_optional=True,
        )
    if mode is Mode.LIVE:
        return ModeProfile(
            label=mode.value,
            executor=ApplyChanges(),
            banner=None,
            needs_confirmation=True,
            ledger_in_output_folder=False,
            guard=_unchanged,
            transport_read_only=False,
        )
    if mode is Mode.TABLETOP:
        return ModeProfile(
            label=mode.value,
            executor=ApplyChanges(),
            banner=TABLETOP_BANNER,
            needs_confirmation=False,
            ledger_in_output_folder=True,
            guard=simulated_only,
            transport_read_only=False,
            builds_from_settings=False,
        )
    raise BreachbookError(f"unknown mode {mode!r}")


@dataclass(frozen=True)
class Adapters:
    """Adapters given instead of the ones settings would build (a test's recording fakes, an
    embedding application's own). They still pass through the mode's guard."""

    customers: CustomerDirectory | None = None
    approvals: Approvals | None = None
    database: DatabaseAdmin | None = None
    cloud: Cloud | None = None
    mail: Mail | None = None
    chat: Chat | None = None
    evidence: EvidenceStore | None = None
    publisher: Publisher | None = None
    evidence_source: EvidenceSource | None = None
    cloud_evidence: CloudEvidence | None = None
    http: HttpClient | None = None


NOT_PORTS = frozenset({"clock", "executor"})


def port_types() -> dict[str, type]:
    """Each port field of Connectors and the Protocol it holds, read from the type hints, so
    a port added to Connectors is guarded without anyone listing it here."""
    hints = typing.get_type_hints(Connectors, localns={"StepExecutor": StepExecutor})
    ports = {}
    for item in dataclasses.fields(Connectors):
        if item.name in NOT_PORTS:
            continue
        protocol = next(
            a
            for a in typing.get_args(hints[item.name]) or [hints[item.name]]
            if a is not type(None)
        )
        ports[item.name] = protocol
    return ports


def build_connectors(
    profile: ModeProfile,
    settings: Settings,
    clock: Clock,
    journal: RunJournal,
    given: Adapters | None = None,
) -> Connectors:
    """The adapters for a run, every port passed through the profile's guard."""
    given = given or Adapters()
    if not profile.builds_from_settings:
        return _given_only(profile, clock, given)
    customers = given.customers or open_customers(settings)
    built: dict[str, object | None] = {
        "customers": customers,
        "approvals": given.approvals or LedgerApprovals(journal, clock),
        "mail": given.mail
        or (OutboxMail(settings.outbox, settings.mail_from) if settings.outbox else None),
        "evidence": given.evidence
        or (FilesystemEvidenceStore(settings.evidence_dir) if settings.evidence_dir else None),
        "database": given.database or database_admin(settings, profile.transport_read_only),
        "cloud": given.cloud or cloud(settings, profile.transport_read_only),
        "chat": given.chat,
        "publisher": given.publisher,
        "evidence_source": given.evidence_source or evidence_source(settings, customers),
        "cloud_evidence": given.cloud_evidence or aws_evidence(settings, profile),
        "http": given.http or http_client(settings),
    }
    guarded = {
        name: None if built.get(name) is None else profile.guard(built[name], port)
        for name, port in port_types().items()
    }
    return Connectors(clock=clock, executor=profile.executor, **cast(dict[str, Any], guarded))


def _given_only(profile: ModeProfile, clock: Clock, given: Adapters) -> Connectors:
    """The given adapters and nothing else (TABLETOP: the simulated world's), each guarded;
    settings are never read for a connector, so no credential can reach a real system."""
    guarded = {
        name: None if getattr(given, name) is None else profile.guard(getattr(given, name), port)
        for name, port in port_types().items()
    }
    if guarded["customers"] is None or guarded["approvals"] is None:
        raise BreachbookError(
            f"{profile.label}: the run needs its customers and approvals given (a tabletop's "
            "simulated world: run it with `breachbook tabletop`)"
        )
    return Connectors(clock=clock, executor=profile.executor, **cast(dict[str, Any], guarded))


CONTAIN_EXTRA = "pip install 'breachbook[contain]'"


def database_admin(settings: Settings, read_only: bool) -> PostgresAdmin | None:
    """Containment on PostgreSQL when BREACHBOOK_DATABASE_ADMIN_URL is set; `read_only`
    makes the session read-only and refuses every statement but the adapter's reads."""
    if settings.database_admin_url is None:
        return None
    try:
        from breachbook.connectors.postgres_admin import PostgresAdmin
    except ImportError as exc:
        raise BreachbookError(
            f"BREACHBOOK_DATABASE_ADMIN_URL needs psycopg 3 ({exc.name} is missing): {CONTAIN_EXTRA}"
        ) from None
    return PostgresAdmin(settings.database_admin_url.get_secret_value(), read_only=read_only)


def cloud(settings: Settings, read_only: bool) -> AwsCloud | None:
    """Containment on AWS when BREACHBOOK_AWS_REGION is set; `read_only` hooks every
    client so that only reads and honoured dry runs are sent."""
    if settings.aws_region is None:
        return None
    try:
        from breachbook.connectors.aws import AwsCloud, AwsConfig
    except ImportError as exc:
        raise BreachbookError(
            f"BREACHBOOK_AWS_REGION needs boto3 ({exc.name} is missing): {CONTAIN_EXTRA}"
        ) from None
    config = AwsConfig(
        region=settings.aws_region,
        profile=settings.aws_profile,
        endpoint_url=settings.aws_endpoint_url,
        quarantine_group=settings.aws_quarantine_group,
        rule_base=settings.aws_acl_rule_base,
        vpc_id=settings.aws_vpc_id,
    )
    return AwsCloud(config, read_only=read_only)


def http_client(settings: Settings) -> HttpClient | None:
    """The organisation's own API over HTTP when BREACHBOOK_HTTP_SECRETS is set (may be {});
    in a drill the guard lets only its health checks (GET, HEAD) through."""
    if settings.http_secrets is None:
        return None
    from breachbook.connectors.http import HttpxClient

    return HttpxClient(settings.http_secrets)


@dataclass(frozen=True)
class Inputs:
    playbook: Playbook
    rules: RuleBook
    incident: Incident
    templates: Path


def load_inputs(request: RunRequest, profile: ModeProfile, settings: Settings) -> Inputs:
    """Read and check playbook, rules, templates and incident; writes nothing anywhere."""
    root = project_root(settings)
    templates = root / "templates"
    playbook = load_playbook(
        request.playbook_file or root / "playbooks" / "customer-data-breach.yaml", templates
    )
    rules = RuleBook.load(root / "rules" / "obligations.yaml")
    check_rule_templates(rules, templates)
    incident = with_exposure(request.load_incident(), settings)
    if profile.needs_confirmation and request.confirm_incident_id != incident.id:
        raise LiveNotConfirmed(
            f"LIVE changes production systems: confirm by naming the incident id ({incident.id!r})"
        )
    return Inputs(playbook, rules, incident, templates)


def open_run(
    request: RunRequest,
    settings: Settings | None = None,
    clock: Clock | None = None,
    adapters: Adapters | None = None,
) -> RunContext:
    """Validate every input, then build the run: nothing is written before all of it is valid."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    profile = mode_profile(request.mode)
    inputs = load_inputs(request, profile, settings)
    incident = inputs.incident
    given = adapters or Adapters()
    if given.customers is None and profile.builds_from_settings:
        given = dataclasses.replace(given, customers=open_customers(settings))
    run_id = request.run_id or new_run_id()
    out = request.out_dir or settings.home / "runs" / incident.id / run_id
    evidence = evidence_policy(profile, settings, out)
    workspace = Workspace.claim(
        out, profile.banner, run_id, f"breachbook {profile.label} run {run_id}"
    )
    if request.incident_file is not None:
        incident_file = request.incident_file.resolve()
    else:
        assert request.incident_yaml is not None
        incident_file = workspace.write_raw(INCIDENT_COPY, request.incident_yaml)
    if profile.ledger_in_output_folder:
        ledger_url = folder_ledger_url(workspace)
    else:
        ledger_url = live_ledger_url(settings)
    ledger = Ledger(ledger_url, clock)
    journal = RunJournal(ledger, incident.id, run_id, settings.actor, profile.label, clock)
    try:
        connectors = build_connectors(profile, settings, clock, journal, given)
    except BaseException:
        ledger.close()
        raise
    record_facts(journal, incident)
    return RunContext(
        run_id=run_id,
        incident=incident,
        incident_file=incident_file,
        playbook=inputs.playbook,
        connectors=connectors,
        workspace=workspace,
        journal=journal,
        rules=inputs.rules,
        renderer=Renderer(inputs.templates),
        actor=settings.actor,
        evidence=evidence,
    )


def folder_ledger_url(workspace: Workspace) -> str:
    """The ledger of a run kept in its own folder (DRILL, TABLETOP)."""
    return f"sqlite:///{workspace.path('audit.sqlite')}"


def evidence_source(
    settings: Settings, customers: CustomerDirectory | None
) -> EvidenceSource | None:
    """The database evidence is read from: the customer database's URL (one consistent
    snapshot), else the given customer directory (each table once)."""
    if settings.customers_url is not None:
        return SqlEvidenceSource(settings.customers_url.get_secret_value())
    return DirectoryEvidenceSource(customers) if customers is not None else None


def aws_evidence(settings: Settings, profile: ModeProfile) -> CloudEvidence | None:
    """S3 objects and EBS snapshots as evidence, when an AWS region or endpoint is set."""
    if settings.aws_region is None and settings.aws_endpoint_url is None:
        return None
    from breachbook.connectors.evidence_aws import AwsEvidence

    return AwsEvidence(settings.aws_region, settings.aws_endpoint_url, profile.transport_read_only)


def evidence_policy(profile: ModeProfile, settings: Settings, run_folder: Path) -> EvidencePolicy:
    """The signing key and, unless a drill leaves contents out, the evidence key, kept away
    from the run folder and the evidence folder. A key problem stops the run before it starts."""
    contents = (
        Contents(settings.evidence_drill_contents)
        if profile.evidence_contents_optional
        else Contents.ENCRYPTED
    )
    away = [run_folder] + ([settings.evidence_dir] if settings.evidence_dir else [])
    key = vault_key(settings, away_from=away) if contents is Contents.ENCRYPTED else None
    return EvidencePolicy(profile.label, run_signer(settings), key)


def incident_journal(
    profile: ModeProfile,
    incident_id: str,
    settings: Settings,
    clock: Clock,
    purpose: str,
    actor: str | None = None,
) -> RunJournal:
    """The LIVE ledger seen by a command that acts on an incident outside a run (approve,
    restore); `purpose` names it in the audit trail as a run id would."""
    ledger = Ledger(live_ledger_url(settings), clock, create=False)
    run_id = f"{purpose}-{new_run_id()}"
    return RunJournal(ledger, incident_id, run_id, actor or settings.actor, profile.label, clock)


def restore_connectors(
    profile: ModeProfile,
    settings: Settings,
    clock: Clock,
    journal: RunJournal,
    adapters: Adapters | None = None,
) -> Connectors:
    """The adapters for undoing changes; the customer database is never opened for it."""
    given = adapters or Adapters()
    if given.customers is None:
        given = dataclasses.replace(given, customers=CustomersNotRead())
    return build_connectors(profile, settings, clock, journal, given)


class CustomersNotRead:
    """The customer directory of a command that must not read customers (restore)."""

    def _refuse(self) -> CustomerDataError:
        return CustomerDataError("restore does not read the customer database")

    def describe(self) -> str:
        return "no customer database (not needed)"

    def check_readable(self) -> Check:
        return Check.unverified("restore does not read the customer database")

    def iter_affected(
        self, incident: Incident, batch_size: int
    ) -> Iterator[list[Customer | RejectedRecord]]:
        raise self._refuse()

    def table_snapshot(self, table: str, columns: list[str]) -> Iterator[bytes]:
        raise self._refuse()


def live_ledger_url(settings: Settings) -> str:
    """The ledger LIVE runs share: BREACHBOOK_LEDGER_URL, or a SQLite file under the home."""
    if settings.ledger_url is not None:
        return settings.ledger_url.get_secret_value()
    settings.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(settings.home / 'ledger.sqlite').resolve()}"


def demo_settings(settings: Settings, customers_db: Path, demo_folder: Path) -> Settings:
    """Settings pointing at the demo world: its customers and their mapping (the data-source
    file beside them), an outbox and an evidence folder."""
    mapping = demo_folder / "datasource.yaml"
    return settings.model_copy(
        update={
            "customers_url": SecretStr(f"sqlite:///{customers_db.resolve()}"),
            "datasource": mapping if mapping.is_file() else DEMO_DATASOURCE,
            "outbox": settings.outbox or demo_folder / "outbox",
            "evidence_dir": settings.evidence_dir or demo_folder / "evidence",
        }
    )
