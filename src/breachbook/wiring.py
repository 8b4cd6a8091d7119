"""The mode seam: the one place that reads the mode and builds the connectors for a run.

Everything downstream (engine, actions, flows) receives adapters and an executor and never
asks which mode it is in. Default is DRILL; LIVE needs the incident id named to confirm.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
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
    Pauses,
    PrintShop,
    Publisher,
    SentFolder,
)
from breachbook.roster import RoleApprovers
from breachbook.rules import RuleBook, check_rule_templates
from breachbook.settings import Settings, project_root
from breachbook.tabletop.world import simulated_only
from breachbook.templates import Renderer
from breachbook.vault import vault_key
from breachbook.workspace import Workspace

if TYPE_CHECKING:
    from breachbook.connectors.aws import AwsCloud
    from breachbook.connectors.postgres_admin import PostgresAdmin
    from breachbook.connectors.slack import SlackChat
    from breachbook.warroom import WarRoom


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
    chat_drill_channel_only: bool = True
    """Slack is locked to BREACHBOOK_SLACK_DRILL_CHANNEL, every message marked DRILL, no
    channel created; else each incident gets its own war-room channel."""
    builds_from_settings: bool = True
    """Whether adapters are built from settings (URLs, regions, folders) for the ports the
    caller did not give; TABLETOP: never, every port comes from the simulated world."""
    ledger_synced_each_commit: bool = True
    """Each ledger commit waits for the disk (SQLite synchronous=FULL), so a claim or entry
    survives a power cut. TABLETOP: no; its ledger lives and dies with the exercise, which is
    run again rather than resumed, and it commits over a thousand times (every inject,
    decision, check and letter): 14.5 ms each on this machine's disk when synced, 0.2 ms
    when not."""
    message_copies: bool = True
    """A letters step's prepare writes each letter as the email that would leave, under
    messages/ in the run's folder: what a person checks before a live run sends, and a
    drill's output. TABLETOP: no; nobody reads the simulated customers' mail (building 465
    MIME messages is a fifth of a round that writes letters again): each letter is still
    rendered and checked, counted and delivered to the simulated relay."""


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
            chat_drill_channel_only=True,
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
            chat_drill_channel_only=False,
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
            ledger_synced_each_commit=False,
            message_copies=False,
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
    pauses: Pauses | None = None
    """How a gated step waits in a running flow (approvals); default: Prefect's pause in a
    deployment's flow run (BREACHBOOK_APPROVALS_VIA), else none (waits in the ledger)."""
    printer: PrintShop | None = None
    sent_folder: SentFolder | None = None
    relay_log: SentFolder | None = None


NOT_PORTS = frozenset({"clock", "executor", "war_room"})


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
    slack = slack_chat(settings, profile)
    chat = given.chat or slack
    room = war_room(slack, settings, journal, clock)
    asks_in = given.chat or queued_chat(room, slack)
    filed_in = given.sent_folder or sent_folder(settings, profile.transport_read_only)
    built: dict[str, object | None] = {
        "customers": customers,
        "approvals": given.approvals
        or approvals(settings, journal, clock, given.pauses or pauses(settings), asks_in),
        "mail": given.mail or mail(settings, clock, profile.transport_read_only, filed_in),
        "evidence": given.evidence or evidence_store(settings, profile),
        "database": given.database or database_admin(settings, profile.transport_read_only),
        "cloud": given.cloud or cloud(settings, profile.transport_read_only),
        "chat": chat,
        "publisher": given.publisher or publisher(settings),
        "evidence_source": given.evidence_source or evidence_source(settings, customers),
        "cloud_evidence": given.cloud_evidence or aws_evidence(settings, profile),
        "http": given.http or http_client(settings),
        "printer": given.printer or print_shop(settings),
        "sent_folder": filed_in,
        "relay_log": given.relay_log or relay_log(settings),
    }
    guarded = {
        name: None if built.get(name) is None else profile.guard(built[name], port)
        for name, port in port_types().items()
    }
    return Connectors(
        clock=clock,
        executor=profile.executor,
        war_room=room,
        **cast(dict[str, Any], guarded),
    )


def slack_chat(settings: Settings, profile: ModeProfile) -> SlackChat | None:
    """Slack when BREACHBOOK_SLACK_TOKEN is set; in a drill locked to the drill channel at
    the transport (writes anywhere else refused before they are sent)."""
    if settings.slack_token is None:
        return None
    from breachbook.connectors.slack import SlackChat

    locked = profile.chat_drill_channel_only
    return SlackChat(
        settings.slack_token.get_secret_value(),
        settings.slack_api_url,
        locked=locked,
        drill_channel=settings.slack_drill_channel if locked else None,
    )


def war_room(
    slack: SlackChat | None, settings: Settings, journal: RunJournal, clock: Clock
) -> WarRoom | None:
    """The incident's war room over Slack: phase messages and the timeline, queued in the
    ledger first (breachbook.warroom)."""
    if slack is None:
        return None
    from breachbook.connectors.slack import room_name
    from breachbook.warroom import WarRoom

    return WarRoom(slack, journal, clock, room_name(journal.incident_id), settings.slack_members)


def queued_chat(room: WarRoom | None, slack: SlackChat | None) -> Chat | None:
    """Where approval requests are asked: through the war room's ledger queue, so a Slack
    outage delays them rather than losing them."""
    if room is None or slack is None:
        return None
    from breachbook.warroom import QueuedChat

    return QueuedChat(room, slack)


def pauses(settings: Settings) -> Pauses | None:
    """Prefect's pause when this runs inside a flow run that may pause (see
    BREACHBOOK_APPROVALS_VIA); Prefect is only looked at if something already imported it."""
    if settings.approvals_via == "ledger" or "prefect" not in sys.modules:
        return None
    from breachbook.connectors.prefect_pauses import PrefectPauses, current_flow_run

    running = current_flow_run(deployed_only=settings.approvals_via == "auto")
    if running is None:
        return None
    return PrefectPauses(running, settings.approval_poll_seconds)


def approvals(
    settings: Settings, journal: RunJournal, clock: Clock, waits: Pauses | None, chat: Chat | None
) -> Approvals:
    """Approvals that pause the flow run when it can pause, else wait in the ledger; both
    judge answers against BREACHBOOK_APPROVERS and ask in the war room through `chat`."""
    if waits is None:
        return LedgerApprovals(journal, clock, settings.approvers, chat, settings.approval_timeout)
    from breachbook.approvals import PausingApprovals

    return PausingApprovals(
        journal, clock, waits, settings.approvers, chat, settings.approval_timeout
    )


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


def incident_war_room(
    profile: ModeProfile, settings: Settings, journal: RunJournal, clock: Clock
) -> WarRoom:
    """The war room of the journal's incident, for delivering what waits in its queue."""
    room = war_room(slack_chat(settings, profile), settings, journal, clock)
    if room is None:
        raise BreachbookError("no Slack configured: set BREACHBOOK_SLACK_TOKEN")
    return room


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


def mail(
    settings: Settings, clock: Clock, read_only: bool, filed_in: SentFolder | None = None
) -> Mail | None:
    """An SMTP relay when BREACHBOOK_SMTP_HOST is set (filing what it accepted in the Sent
    folder, when one is configured), else the outbox folder when BREACHBOOK_OUTBOX is;
    `read_only` refuses every send at the adapter too."""
    if settings.smtp_host is not None:
        from breachbook.connectors.smtp import SmtpConfig, SmtpMail

        config = SmtpConfig.from_settings(settings)
        return SmtpMail(config, clock, read_only=read_only, sent_folder=filed_in)
    return OutboxMail(settings.outbox, settings.mail_from) if settings.outbox else None


def sent_folder(settings: Settings, read_only: bool) -> SentFolder | None:
    """The IMAP Sent folder when BREACHBOOK_IMAP_HOST is set; `read_only` refuses APPEND at
    the adapter too."""
    if settings.imap_host is None:
        return None
    from breachbook.connectors.imap import ImapConfig, ImapSentFolder

    return ImapSentFolder(
        ImapConfig.from_settings(settings), read_only, connections=settings.smtp_connections
    )


def relay_log(settings: Settings) -> SentFolder | None:
    """The relay's own log when BREACHBOOK_SMTP_RELAY_LOG is set: only ever read, so a
    drill reads it as a live run does."""
    if settings.smtp_relay_log is None:
        return None
    from breachbook.connectors.relay_log import RelayLog

    return RelayLog(settings.smtp_relay_log)


def http_client(settings: Settings) -> HttpClient | None:
    """The organisation's own API over HTTP when BREACHBOOK_HTTP_SECRETS is set (may be {});
    in a drill the guard lets only its health checks (GET, HEAD) through."""
    if settings.http_secrets is None:
        return None
    from breachbook.connectors.http import HttpxClient

    return HttpxClient(settings.http_secrets)


def publisher(settings: Settings) -> Publisher | None:
    """The statement's HTTP publisher when BREACHBOOK_PUBLISHER_URL is set; a drill's guard
    lets only its readiness check (a GET) through."""
    if settings.publisher_url is None:
        return None
    from breachbook.connectors.publisher_http import HttpPublisher

    return HttpPublisher(settings.publisher_url, settings.publisher_token)


def print_shop(settings: Settings) -> PrintShop | None:
    """Printed post into BREACHBOOK_PRINT_DIR, when it is set."""
    if settings.print_dir is None:
        return None
    from breachbook.connectors.print_post import FolderPrintShop

    return FolderPrintShop(settings.print_dir)


@dataclass(frozen=True)
class Inputs:
    playbook: Playbook
    rules: RuleBook
    incident: Incident
    templates: Path
    playbook_file: Path


def load_inputs(request: RunRequest, profile: ModeProfile, settings: Settings) -> Inputs:
    """Read and check playbook, rules, templates and incident; writes nothing anywhere."""
    root = project_root(settings)
    templates = root / "templates"
    playbook_file = request.playbook_file or root / "playbooks" / "customer-data-breach.yaml"
    playbook = load_playbook(playbook_file, templates)
    rules = RuleBook.load(root / "rules" / "obligations.yaml")
    check_rule_templates(rules, templates)
    incident = with_exposure(request.load_incident(), settings)
    if profile.needs_confirmation and request.confirm_incident_id != incident.id:
        raise LiveNotConfirmed(
            f"LIVE changes production systems: confirm by naming the incident id ({incident.id!r})"
        )
    return Inputs(playbook, rules, incident, templates, playbook_file)


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
    ledger = Ledger(ledger_url, clock, synced_each_commit=profile.ledger_synced_each_commit)
    journal = run_journal(ledger, incident.id, run_id, profile, settings, clock)
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
        playbook_file=inputs.playbook_file,
        connectors=connectors,
        workspace=workspace,
        journal=journal,
        rules=inputs.rules,
        renderer=Renderer(inputs.templates),
        actor=settings.actor,
        evidence=evidence,
        batch_size=settings.letters_batch_size,
        message_copies=profile.message_copies,
    )


def run_journal(
    ledger: Ledger,
    incident_id: str,
    run_id: str,
    profile: ModeProfile,
    settings: Settings,
    clock: Clock,
) -> RunJournal:
    """A run's journal on its ledger: written as the settings' actor, in the mode's label,
    taking over another run's letters after BREACHBOOK_LETTERS_RECLAIM_SECONDS if set."""
    reclaim = settings.letters_reclaim_seconds
    return RunJournal(
        ledger,
        incident_id,
        run_id,
        settings.actor,
        profile.label,
        clock,
        reclaim_after=None if reclaim is None else timedelta(seconds=reclaim),
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


def evidence_store(settings: Settings, profile: ModeProfile) -> EvidenceStore | None:
    """Where LIVE transfers evidence bundles: a folder, or an S3 bucket with Object Lock."""
    if settings.evidence_bucket is not None:
        from breachbook.connectors.evidence_s3 import S3EvidenceStore

        return S3EvidenceStore(
            settings.evidence_bucket,
            settings.aws_region,
            settings.aws_endpoint_url,
            settings.aws_profile,
            read_only=profile.transport_read_only,
        )
    return FilesystemEvidenceStore(settings.evidence_dir) if settings.evidence_dir else None


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
        self, incident: Incident, batch_size: int, after: str | None = None
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
    file beside them), an outbox, an evidence folder and a print folder."""
    mapping = demo_folder / "datasource.yaml"
    return settings.model_copy(
        update={
            "customers_url": SecretStr(f"sqlite:///{customers_db.resolve()}"),
            "datasource": mapping if mapping.is_file() else DEMO_DATASOURCE,
            "outbox": settings.outbox or demo_folder / "outbox",
            "evidence_dir": settings.evidence_dir
            or (None if settings.evidence_bucket else demo_folder / "evidence"),
            "approvers": settings.approvers or DEMO_APPROVERS,
            "print_dir": settings.print_dir or demo_folder / "print",
        }
    )


DEMO_APPROVERS = {
    "incident-lead": RoleApprovers(people=["lin"], backup=["ravi"]),
    "security-oncall": RoleApprovers(people=["sam"], backup=["kim"]),
    "legal": RoleApprovers(people=["ada", "ben"], backup=["carol"]),
    "comms": RoleApprovers(people=["grace"], backup=["dan"]),
}
"""The demo world's approvers (fictitious), unless BREACHBOOK_APPROVERS names others."""
