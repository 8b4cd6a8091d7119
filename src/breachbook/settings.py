"""Settings, from BREACHBOOK_* environment variables, and where the editable content lives.

The content (playbooks/, templates/, rules/, flows/) is edited at the top of the checkout and
also ships inside the package, so an installed wheel runs without a checkout.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from breachbook.errors import BreachbookError, UnknownSetting
from breachbook.roster import RoleApprovers

LETTERS_BATCH_SIZE = 5000
"""Letters per delivery batch unless BREACHBOOK_LETTERS_BATCH_SIZE says otherwise."""

AUTOMATION = "automation:breachbook"
"""The actor of what breachbook does by itself (here, not in the ledger, so that reading the
settings does not load SQLAlchemy: commands that only talk to `serve` start faster)."""

PREFIX = "BREACHBOOK_"
CONTENT_FOLDERS = ("playbooks", "templates", "rules", "flows", "scenarios")
PACKAGED_CONTENT = Path(__file__).resolve().parent / "content"


class Settings(BaseSettings):
    """Connector settings, from BREACHBOOK_* environment variables. Secrets stay SecretStr.

    A BREACHBOOK_* variable that is not a field is refused: ignored, a misspelt
    BREACHBOOK_CUSTOMERS_URL or BREACHBOOK_OUTBOX would silently fall back to a default."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid")

    home: Path = Path.home() / ".breachbook"
    content_dir: Path | None = None
    ledger_url: SecretStr | None = None
    customers_url: SecretStr | None = None
    datasource: Path | None = None
    """The data-source file mapping the customer database's own tables and columns
    (breachbook.datasource); default: the demo world's mapping, shipped in the package."""
    outbox: Path | None = None
    evidence_dir: Path | None = None
    mail_from: str = "privacy-office@example.invalid"
    actor: str = AUTOMATION
    signing_key: Path | None = None
    """Ed25519 private key (PEM) that signs the ledger's anchors; default: one created once
    under the home (`keys/signing-key`). Never inside a run folder."""
    verify_key: Path | None = None
    """Ed25519 public key (PEM) that `audit verify` trusts; default: the signing key's own."""
    anchors_dir: Path | None = None
    """Where signed anchors are published, one JSON-lines file per incident; default: the
    home's `anchors/`. Never inside a run folder."""
    database_admin_url: SecretStr | None = None
    """PostgreSQL URL of the production database as the responder's role, for containment
    (lock a role, end its sessions, revoke its privileges); none: those steps are UNVERIFIED."""
    aws_region: str | None = None
    """AWS region for containment (keys, hosts, network ACLs) and for evidence (S3 objects, EBS
    snapshots); none: no cloud connector. The credentials come the standard AWS way
    (environment, shared files, instance role), never from breachbook."""
    aws_profile: str | None = None
    """A named profile of the shared AWS config and credentials files."""
    aws_endpoint_url: str | None = None
    """Another endpoint for every AWS service (moto, LocalStack); default: AWS's own, or
    the standard AWS_ENDPOINT_URL variable."""
    aws_quarantine_group: str = "breachbook-quarantine"
    """Name of the security group (no ingress, no egress) hosts are moved into; created in the
    host's VPC when missing."""
    aws_acl_rule_base: int = Field(default=1, ge=1, le=32766)
    """Lowest network ACL rule number the deny entries use (they must come before the allows)."""
    aws_vpc_id: str | None = None
    """Block addresses in this VPC's network ACLs; default: every network ACL of the region."""
    evidence_bucket: str | None = None
    """S3 bucket, created with Object Lock enabled, that LIVE evidence bundles are transferred
    to write-once (compliance mode, retained as the step's `retention` says); through the AWS
    settings above. Instead of BREACHBOOK_EVIDENCE_DIR, not beside it."""
    evidence_key: SecretStr | None = None
    """The AES-256 key that encrypts evidence at rest: base64 of 32 random bytes. Else
    BREACHBOOK_EVIDENCE_KEY_FILE; else the home's `keys/evidence-key`, created once."""
    evidence_key_file: Path | None = None
    """A file holding the evidence key (base64, mode 0600). Never inside a run folder or
    the evidence it protects."""
    evidence_drill_contents: Literal["omitted", "encrypted"] = "omitted"
    """What a drill keeps of the evidence it reads: only the signed manifest of hashes
    (omitted, the default: drills do not multiply copies of leaked data), or the contents
    too, encrypted."""

    http_secrets: dict[str, SecretStr] | None = None
    """Secrets for the `http.request` action, as a JSON object {"NAME": "value"}; a header
    value `secret:NAME` is replaced by the value when sending, never logged or recorded.
    None: no HTTP connector, those steps are UNVERIFIED."""
    incidents_dir: Path | None = None
    """Incident files the Prefect UI's forms offer by name, and where the alert receiver
    writes the incidents it opens; default: the home's `incidents/`."""
    config: Path | None = None
    """A YAML file of these settings (keys as the field names, `alert_token: ...`); the
    environment wins over it. Only read from BREACHBOOK_CONFIG."""
    alert_rules: Path | None = None
    """YAML rules mapping alerts to a playbook, a mode and the incident's fields; the alert
    receiver of `breachbook serve` runs only when set."""
    alert_token: SecretStr | None = None
    """Bearer token a sender may give (Alertmanager's `http_config.authorization`)."""
    alert_hmac_key: SecretStr | None = None
    """Shared key of senders that sign: HMAC-SHA256 over `timestamp.body`."""
    alert_replay_seconds: int = 300
    """How far a signed alert's timestamp may lie from now before it is refused."""
    receiver_host: str = "127.0.0.1"
    receiver_port: int = 8787
    prefect_port: int = 4200
    """Port of the Prefect server `breachbook serve` starts when PREFECT_API_URL is not set."""
    serve_limit: int = 4
    """Served runs `breachbook serve` runs at once (each a Python process); more wait their
    turn. Containment in the receiver does not wait for it."""
    live_wait_seconds: float = Field(default=30.0, gt=0, le=3600)
    """How long a LIVE flow run waits for its incident's slot (one LIVE response per
    incident) before it is refused. Prefect grants a free slot in well under a second on a
    quiet machine, but took up to 2.8 s on a loaded 2-core one and up to 12 s with eight
    other runs taking slots (measured, README): a wait shorter than that refuses a LIVE
    response that should run, while a longer one only delays refusing a duplicate."""

    # Slack war room (issue 9): breachbook.connectors.slack, breachbook.warroom.
    slack_token: SecretStr | None = None
    """Slack bot token (xoxb-...) of the war room; none: no chat connector, chat steps are
    UNVERIFIED and no war-room messages are queued."""
    slack_api_url: str = "https://slack.com/api/"
    """Slack Web API base URL: Slack's own, or a proxy or a stand-in."""
    slack_drill_channel: str | None = None
    """The only channel a drill posts to (an id, or a name such as `#inc-drill`), every
    message marked DRILL; a drill creates no channel."""
    slack_members: dict[str, list[str]] = Field(default_factory=dict)
    """Playbook role -> Slack user ids invited to an incident's war-room channel, as JSON
    ({"security-oncall": ["U012AB3CD"]})."""

    # The public statement's publisher (statement.publish; connectors/publisher_http.py).
    publisher_url: str | None = Field(default=None, pattern=r"^https?://")
    """Status page or newsroom endpoint the approved statement is POSTed to (JSON, one request
    per version and language); none: publishing is UNVERIFIED in a drill and not done LIVE."""
    publisher_token: SecretStr | None = None
    """Bearer token sent to BREACHBOOK_PUBLISHER_URL."""

    # Approvals (people in the loop): who may approve, how long they have, how runs wait.
    approvers: dict[str, RoleApprovers] | None = None
    """Role -> {"people": [...], "backup": [...], "timeout": "PT1H"} as JSON (or a mapping
    in the BREACHBOOK_CONFIG file). Only these people may approve a role's steps."""
    approval_timeout: timedelta = timedelta(hours=1)
    """How long a role's people have before its backup is asked (a role or step may say
    otherwise); the backup has as long again, then the step waits without proceeding."""
    approval_poll_seconds: int = Field(default=2, ge=1, le=60)
    """How often a paused flow run asks Prefect whether it has been answered."""
    approvals_via: Literal["auto", "prefect", "ledger"] = "auto"
    """auto: a deployment's flow run pauses in Prefect for a form, other runs stop and wait
    in the ledger; prefect: every flow run pauses (needs a shared PREFECT_API_URL); ledger:
    never pause."""

    # Printed post (letters.print)
    print_dir: Path | None = None
    """The print folder: LIVE writes one PDF per posted letter and the merged print files per
    obligation and country here, for the print shop; none: printing is UNVERIFIED."""

    # -- SMTP delivery of letters (issue 10) ------------------------------------------------
    smtp_host: str | None = None
    """The SMTP relay letters are sent through; unset: the outbox folder (BREACHBOOK_OUTBOX)."""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    """Log in (AUTH) as this user after STARTTLS; unset: no AUTH."""
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    """Upgrade each connection with STARTTLS before AUTH and the first letter."""
    smtp_ca_file: Path | None = None
    """CA certificates (PEM) the relay's certificate is checked against; unset: the system's."""
    smtp_connections: int = Field(default=4, ge=1, le=64)
    """Connections to the relay kept open at once; that many letters are in flight."""
    smtp_rate_per_minute: int = Field(default=6000, ge=1)
    """Letters handed to the relay per minute at most, across every connection of a run."""
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    # -- The IMAP Sent folder letters are filed in and reconciled against (issue 10) --------
    imap_host: str | None = None
    """IMAP server whose Sent folder records every letter the relay accepted; a letter whose
    outcome is unknown is looked up there by Message-ID before it is sent again. Unset: such
    a letter is resent with the same Message-ID."""
    imap_port: int = Field(default=993, ge=1, le=65535)
    """993 for IMAP over TLS; 143 with BREACHBOOK_IMAP_STARTTLS."""
    imap_username: str | None = None
    imap_password: SecretStr | None = None
    imap_sent_folder: str = "Sent"
    imap_starttls: bool = False
    """Connect in plain text and upgrade with STARTTLS (port 143) instead of TLS from the start."""
    imap_ca_file: Path | None = None
    """CA certificates (PEM) the IMAP server's certificate is checked against; unset: the
    system's."""
    imap_append: bool = True
    """APPEND each letter the relay accepted to the Sent folder; false when the mail system
    files what its relay sends itself (then breachbook only looks there)."""
    # -- The relay's own log, the other record letters are reconciled against (issue 10) --
    smtp_relay_log: Path | None = None
    """A log file the relay writes, naming each message it accepts by Message-ID before it
    answers (Postfix's maillog: `postfix/cleanup[123]: 4F1A2B: message-id=<...>`), readable
    by breachbook: a letter whose outcome is unknown is looked up there before it is sent
    again. Only read, never written; with BREACHBOOK_IMAP_HOST too, both are asked and a
    letter found in either is not sent again."""
    letters_batch_size: int = Field(default=LETTERS_BATCH_SIZE, ge=1)
    """Letters per delivery batch: the unit a flow runs as one task run, in parallel with
    the other batches of the obligation; the split is kept in the ledger."""
    batches_on: Literal["flow", "task-workers"] = "flow"
    """Where a flow's delivery batches run. flow: task runs on the flow run's own task
    runner, threads of its one process (the only choice without a Prefect server).
    task-workers: Prefect background task runs, picked up by every `breachbook worker`
    process serving them, on any machine, so the batches of one run spread across them;
    needs PREFECT_API_URL (a Prefect server), BREACHBOOK_LEDGER_URL on PostgreSQL (shared
    by every worker) and PREFECT_TASKS_SCHEDULING_DEFAULT_STORAGE_BLOCK (a storage block
    every worker can read, where Prefect keeps a background task's parameters: ids only)."""
    letters_reclaim_seconds: int | None = Field(default=None, ge=0)
    """A letter another run claimed and never settled (that run was killed mid-send) is
    taken over after this long and sent again with the same Message-ID; unset: only the
    run itself, resumed under its id, takes it over. Set it only when no other run of the
    incident can still be sending."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the BREACHBOOK_CONFIG file."""
        return (init_settings, env_settings, ConfigFile(settings_cls))

    @model_validator(mode="after")
    def _one_evidence_store(self) -> Settings:
        if self.evidence_dir is not None and self.evidence_bucket is not None:
            raise BreachbookError(
                "set BREACHBOOK_EVIDENCE_DIR or BREACHBOOK_EVIDENCE_BUCKET, not both: "
                "evidence goes to one store"
            )
        return self

    @model_validator(mode="after")
    def _relay_log_of_the_relay(self) -> Settings:
        if self.smtp_relay_log is not None and self.smtp_host is None:
            raise BreachbookError(
                "BREACHBOOK_SMTP_RELAY_LOG is the log of the relay BREACHBOOK_SMTP_HOST names: "
                "set that too, or unset BREACHBOOK_SMTP_RELAY_LOG"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_variables(cls, values: Any) -> Any:
        known = {PREFIX + name.upper() for name in cls.model_fields}
        unknown = sorted(
            name
            for name in os.environ
            if name.upper().startswith(PREFIX) and name.upper() not in known
        )
        if unknown:
            raise UnknownSetting(
                f"unknown setting {', '.join(unknown)} in the environment; "
                f"the settings are {', '.join(sorted(known))}"
            )
        return values


class ConfigFile(PydanticBaseSettingsSource):
    """The YAML file named by BREACHBOOK_CONFIG; a key that names no setting is refused."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        named = os.environ.get(PREFIX + "CONFIG")
        if not named:
            return {}
        path = Path(named)
        if not path.is_file():
            raise BreachbookError(f"{path}: BREACHBOOK_CONFIG names no file")
        values = YamlConfigSettingsSource(self.settings_cls, yaml_file=path)()
        unknown = sorted(set(values) - set(self.settings_cls.model_fields))
        if unknown:
            raise UnknownSetting(
                f"{path}: unknown setting {', '.join(unknown)}; "
                f"the settings are {', '.join(sorted(self.settings_cls.model_fields))}"
            )
        return values


def builtin_content() -> Path:
    """The content this install ships: the checkout's own folders when running from one (an
    editable install), else the copy packaged in the wheel."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and all(
        (checkout / folder).is_dir() for folder in CONTENT_FOLDERS
    ):
        return checkout
    return PACKAGED_CONTENT


def incidents_dir(settings: Settings) -> Path:
    """Where incident files are offered by name: BREACHBOOK_INCIDENTS_DIR, else the home's."""
    return settings.incidents_dir or settings.home / "incidents"


def project_root(settings: Settings | None = None) -> Path:
    """Where playbooks/, templates/, rules/ and flows/ are read from: BREACHBOOK_CONTENT_DIR,
    else the checkout when running from one, else the packaged copy."""
    configured = (settings or Settings()).content_dir
    if configured is None:
        return builtin_content()
    if not configured.is_dir():
        raise BreachbookError(f"{configured}: BREACHBOOK_CONTENT_DIR is not a folder")
    return configured.resolve()
