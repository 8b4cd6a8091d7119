"""Narrow typed ports between the core and the world.

Each port has a live adapter and a simulated one; in DRILL every port is wrapped by one
generic guard (`breachbook.connectors.guard`) that lets through only the methods marked
`@reads` here, so a method or port added later is refused in a drill until someone marks it.
Every check a port offers is read-only and answers with a `Check`, so a drill can say for each
action how it was verified. A method that changes the world returns `Changed`: what it did and
the prior state that `breachbook restore` puts back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from breachbook.models import Customer, Incident, RejectedRecord
from breachbook.playbook import ApprovalGate


class Verdict(StrEnum):
    VERIFIED = "VERIFIED"
    FAILED = "FAILED"
    UNVERIFIED = "UNVERIFIED"


class Check(BaseModel):
    """The answer of a read-only preflight: can apply succeed, and how do we know."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    reason: str
    method: str = ""
    holds_back_dependents: bool = True
    """A FAILED check on one customer's record sets that record aside; it must not stop the
    steps that serve everyone else (False), where a failed lock or key must (True)."""
    waits_for: tuple[str, ...] = ()
    """Steps that must be done first (letters that claim a containment step wait for it):
    the target is BLOCKED, naming them, and a later run acts once they are done."""

    @classmethod
    def verified(cls, reason: str, method: str) -> Check:
        return cls(verdict=Verdict.VERIFIED, reason=reason, method=method)

    @classmethod
    def failed(cls, reason: str, method: str) -> Check:
        return cls(verdict=Verdict.FAILED, reason=reason, method=method)

    @classmethod
    def set_aside(cls, reason: str, method: str) -> Check:
        """FAILED for one record only: reported, handled by a person, nobody else held back."""
        return cls(
            verdict=Verdict.FAILED, reason=reason, method=method, holds_back_dependents=False
        )

    def waiting_for(self, steps: list[str], reason: str) -> Check:
        """This check, holding the target back until `steps` are done."""
        return self.model_copy(
            update={"waits_for": tuple(steps), "reason": f"{self.reason}; {reason}"}
        )

    @classmethod
    def unverified(cls, reason: str) -> Check:
        return cls(verdict=Verdict.UNVERIFIED, reason=reason, method="none")


def not_configured(port: str, remedy: str) -> Check:
    """UNVERIFIED: the run has no adapter for this port; `remedy` says what would give one."""
    return Check.unverified(f"no {port} connector configured: {remedy}")


F = TypeVar("F", bound=Callable[..., Any])


def reads(method: F) -> F:
    """Mark a port method as read-only: the drill guard lets only these through."""
    method.__breachbook_reads__ = True  # type: ignore[attr-defined]
    return method


def is_read(method: object) -> bool:
    return bool(getattr(method, "__breachbook_reads__", False))


@dataclass(frozen=True)
class Changed:
    """What a change did (ledger details: ids and counts) and the state before it, for undo.

    `prior` is None when there is nothing to put back."""

    details: Mapping[str, Any] = field(default_factory=dict)
    prior: Mapping[str, Any] | None = None


class CustomerDirectory(Protocol):
    """Read access to the customer database. The only port that returns personal data."""

    @reads
    def describe(self) -> str: ...

    @reads
    def check_readable(self) -> Check: ...

    @reads
    def iter_affected(
        self, incident: Incident, batch_size: int, after: str | None = None
    ) -> Iterator[list[Customer | RejectedRecord]]:
        """Customers whose data the incident exposed, in batches, in a stable order, each once;
        `Customer.categories` holds the categories exposed for that customer (the exposed
        columns that hold a value for them, across every exposed table). With `after`, only
        those that come after the customer with that id in that order (a delivery batch
        starts there, on any worker, without reading the customers before it).

        A record that does not validate comes back as a RejectedRecord, so one bad row is
        reported by id instead of stopping the notification of everyone else.
        """
        ...

    @reads
    def table_snapshot(self, table: str, columns: list[str]) -> Iterator[bytes]:
        """A deterministic serialisation of the exposed rows, for evidence hashing."""
        ...


class DatabaseAdmin(Protocol):
    """Containment on the production database: lock a role, end its sessions, revoke its
    privileges on a table or schema (target `table:NAME`, `table:SCHEMA.NAME`, `schema:NAME`)."""

    @reads
    def check_lock_role(self, role: str) -> Check: ...

    def lock_role(self, role: str, connection_limit: int | None = None) -> Changed: ...

    def restore_role(self, role: str, prior: Mapping[str, Any]) -> Changed: ...

    @reads
    def check_end_sessions(self, role: str) -> Check: ...

    def end_sessions(self, role: str) -> Changed: ...

    @reads
    def check_revoke_privileges(self, role: str, target: str) -> Check: ...

    def revoke_privileges(self, role: str, target: str) -> Changed: ...

    def restore_privileges(self, role: str, target: str, prior: Mapping[str, Any]) -> Changed: ...


class Cloud(Protocol):
    """Containment in the cloud account: keys, hosts, network."""

    @reads
    def check_deactivate_key(self, access_key_id: str) -> Check: ...

    def deactivate_key(self, access_key_id: str) -> Changed: ...

    def reactivate_key(self, access_key_id: str, prior: Mapping[str, Any]) -> Changed: ...

    @reads
    def check_quarantine_host(self, host: str) -> Check: ...

    def quarantine_host(self, host: str) -> Changed: ...

    def release_host(self, host: str, prior: Mapping[str, Any]) -> Changed: ...

    @reads
    def check_block_address(self, network: str) -> Check: ...

    def block_address(self, network: str) -> Changed: ...

    def unblock_address(self, network: str, prior: Mapping[str, Any]) -> Changed: ...

    @reads
    def check_deny_principal(self, principal: str) -> Check:
        """`principal` is `user/NAME` or `role/NAME`."""
        ...

    def deny_principal(self, principal: str) -> Changed: ...

    def allow_principal(self, principal: str, prior: Mapping[str, Any]) -> Changed: ...

    @reads
    def check_deactivate_user_keys(self, user: str) -> Check:
        """Lists the IAM user's access keys, read-only, and says which would be deactivated."""
        ...

    def deactivate_user_keys(self, user: str) -> Changed:
        """Deactivates every active key of the user; `prior` holds each key changed."""
        ...

    def reactivate_user_keys(self, user: str, prior: Mapping[str, Any]) -> Changed: ...


@dataclass(frozen=True)
class HttpCall:
    """One request to an organisation's own API. A header value `secret:NAME` is a reference
    the adapter resolves from BREACHBOOK_HTTP_SECRETS when sending: the value never leaves it."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None


class HttpClient(Protocol):
    """An organisation's own containment API (disable a portal account, revoke a token)."""

    @reads
    def describe(self) -> str: ...

    @reads
    def probe(self, call: HttpCall) -> int:
        """Send a safe request (GET or HEAD only, refused otherwise); returns its status."""
        ...

    def send(self, call: HttpCall) -> int:
        """Send the request; returns its status."""
        ...


@dataclass(frozen=True)
class OutgoingLetter:
    """A rendered letter ready to send. Its body is personal data."""

    key: str
    recipient: str
    subject: str
    body: str
    html: str = ""
    """The same letter as HTML (values escaped); empty: text only."""
    message_id: str = ""
    """Deterministic per (incident, customer, obligation): a resend carries the same one, so
    the receiving side can tell a copy (breachbook.connectors.message.message_id)."""
    language: str = ""
    """The language the letter is written in (Content-Language)."""


class Mail(Protocol):
    @reads
    def describe(self) -> str: ...

    @reads
    def check_can_send(self) -> Check: ...

    @reads
    def parallel_sends(self) -> int:
        """How many `send` calls may run at once from different threads (its pool size)."""
        ...

    def send(self, letter: OutgoingLetter) -> str:
        """Deliver one letter; returns a delivery reference (no personal data). Raises
        MailRefused (a permanent refusal, with the reply code), MailUnavailable (not sent,
        worth another try later) or OutcomeUnknown (it may have been accepted)."""
        ...


class SentFolder(Protocol):
    """Where the letters the relay accepted are filed (an IMAP Sent folder), looked up by
    their deterministic Message-ID: a run that cannot tell whether a letter went out asks
    here instead of sending it again."""

    @reads
    def describe(self) -> str: ...

    @reads
    def check_can_read(self) -> Check:
        """Log in and open the folder (nothing filed); FAILED names the setting to fix."""
        ...

    @reads
    def contains(self, message_ids: Sequence[str]) -> set[str]:
        """The ones of `message_ids` filed in the folder (asked in batches). Raises
        MailUnavailable when the folder cannot be read."""
        ...

    def file(self, message: bytes) -> None:
        """File one message the relay accepted (its bytes as sent)."""
        ...


@dataclass(frozen=True)
class PrintedLetter:
    """One letter rendered for the post, as a PDF. Its bytes are personal data; the other
    fields are ids (the incident, the rule, the customer) and the destination country."""

    key: str
    incident_id: str
    rule_id: str
    country: str
    customer_id: str
    pdf: bytes


class PrintShop(Protocol):
    """Where printed post goes: the print folder a print-and-mail service takes files from."""

    @reads
    def describe(self) -> str: ...

    @reads
    def check_can_print(self) -> Check: ...

    def print_letter(self, letter: PrintedLetter) -> str:
        """Hand over one letter's PDF, whole or not at all; returns its reference (a file name
        made of ids, no personal data)."""
        ...

    @reads
    def handed_over(
        self, incident_id: str, rule_id: str, country: str, customer_id: str
    ) -> str | None:
        """The reference of this letter if its PDF was handed over whole already (a run
        killed after handing it over and before the ledger heard of it), else None."""
        ...

    def assemble(
        self, incident_id: str, rule_id: str, country: str, number: int, references: list[str]
    ) -> str:
        """Merge letters already handed over into print file `number` of one obligation and
        country, in the order given; the same arguments give the same file. Returns its
        reference."""
        ...


class Chat(Protocol):
    @reads
    def check_can_post(self, channel: str) -> Check: ...

    def post(self, channel: str, text: str, blocks: Sequence[Mapping[str, Any]] = ()) -> str:
        """Post `text` (with Block Kit `blocks` where the chat shows them; the text is the
        notification and the fallback); returns the message's reference."""
        ...


@dataclass(frozen=True)
class RoomSpec:
    """An incident's war-room channel: its name, topic and the Slack user ids to invite."""

    name: str
    topic: str
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatMessage:
    """One war-room message: plain text (the notification fallback), Block Kit blocks, and
    the thread it answers (a message's timestamp) or None for the channel itself."""

    text: str
    blocks: tuple[Mapping[str, Any], ...] = ()
    thread: str | None = None


class WarRoomChat(Chat, Protocol):
    """A chat that can also open an incident's room and post Block Kit messages in threads."""

    def open_room(self, room: RoomSpec) -> str:
        """Create the channel (or join it if it exists), set its topic, invite the members;
        returns the channel's id."""
        ...

    def send(self, channel: str, message: ChatMessage) -> str:
        """Post one message; returns its timestamp (Slack's message id)."""
        ...


class EvidenceStore(Protocol):
    @reads
    def describe(self) -> str: ...

    @reads
    def check_writable(self) -> Check: ...

    def put(
        self,
        item_id: str,
        chunks: Iterator[bytes],
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> str:
        """Store one file of an evidence bundle (a sealed item or the manifest) under the
        relative name `item_id`, whole or not at all; returns the SHA-256 of the bytes stored.
        A write-once store keeps it undeletable until `retain_until` (and while on hold)."""
        ...


@dataclass(frozen=True)
class EvidenceRead:
    """One item of a consistent database read: its id, where it came from, and its bytes
    (JSON lines), which must be consumed before the next item is asked for."""

    item_id: str
    source: str
    chunks: Iterator[bytes]


class EvidenceSource(Protocol):
    """The production database as evidence: tables and query results read once, inside one
    consistent read-only snapshot."""

    @reads
    def describe(self) -> str: ...

    @reads
    def read_consistently(
        self, tables: list[tuple[str, list[str]]], queries: list[tuple[str, str]]
    ) -> Iterator[EvidenceRead]:
        """Each table's (name, columns) rows in primary-key order, then each (name, SQL)
        query's rows, all from one snapshot (REPEATABLE READ, read-only)."""
        ...


class CloudEvidence(Protocol):
    """The cloud account as evidence: objects under a prefix (CloudTrail logs), and volume
    snapshots recorded by id."""

    @reads
    def describe(self) -> str: ...

    @reads
    def read_objects(
        self, bucket: str, prefix: str, max_total_bytes: int
    ) -> Iterator[EvidenceRead]:
        """Each object under the prefix, in key order, streamed; an object that would take
        the total over `max_total_bytes` is yielded with chunks that fail, saying so."""
        ...

    @reads
    def check_snapshot(self, volume_id: str) -> Check:
        """Could a snapshot of the volume be taken (a DryRun request)?"""
        ...

    def create_snapshot(self, volume_id: str, description: str) -> str:
        """Snapshot the volume; returns the snapshot's id."""
        ...


@dataclass(frozen=True)
class StatementRelease:
    """One language of one approved version of a public statement, as it is published."""

    incident_id: str
    statement: str
    version: int
    language: str
    title: str
    body: str
    sha256: str

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt at this version and language, so a retried request
        (a timeout after the server accepted it) never publishes twice."""
        return f"{self.incident_id}:{self.statement}-v{self.version}:{self.language}"


class Publisher(Protocol):
    """Where an approved public statement is published (status page, newsroom)."""

    @reads
    def describe(self) -> str: ...

    @reads
    def check_can_publish(self) -> Check: ...

    def publish(self, release: StatementRelease) -> str:
        """Publish one language of one version; returns where it was published."""
        ...


class DecisionStatus(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    PENDING = "pending"


class Decision(BaseModel):
    """A role's answer on one step of an incident: who decided and when, or still pending."""

    model_config = ConfigDict(frozen=True)

    step_id: str
    role: str
    status: DecisionStatus
    by: str | None = None
    at: datetime | None = None
    comment: str | None = None
    """What the person said with the decision (a rejection's reason, for the redraft)."""
    version: str | None = None
    """The version of what was decided (`full-v2`); it counts for that version only."""


class ApprovalRequest(BaseModel):
    """What a person is asked to approve: ids, counts, targets and public text only, never a
    customer's personal data (it is shown in the Prefect UI and posted to the war room)."""

    model_config = ConfigDict(frozen=True)

    step_id: str
    title: str
    gate: ApprovalGate
    starter: str
    """Who started the run (BREACHBOOK_ACTOR): refused where the gate says not_the_starter."""
    war_room: str
    targets: list[str]
    would: list[str]
    statement: str | None = None
    """The public statement's text as drafted, for a step that publishes it."""
    letters: dict[str, int] = Field(default_factory=dict)
    """Letters per obligation, for a step that delivers them."""
    letter_sample: dict[str, list[str]] = Field(default_factory=dict)
    """A few customer ids per obligation (ids only), for spot checks."""
    version: str | None = None
    """Which version is asked about when what is approved changes between runs (the
    statement's `full-v2`): a decision counts for its version only, so an answer about v1
    never lets v2 out. None: the step is decided once."""
    digest: str | None = None
    """SHA-256 of that version's text(s), recorded with each answer."""


class Answer(BaseModel):
    """A person's answer to an approval request, as given in the Prefect form or the terminal."""

    model_config = ConfigDict(frozen=True)

    approve: bool
    approver: str
    comment: str = ""
    version: str | None = None
    """The version the person read and answers about (`--version`); None: the one asked
    about now. An answer about another version is refused as stale."""


class Approvals(Protocol):
    """Asks a role to approve a step before its changes are made; per step, not per target."""

    @reads
    def check_can_ask(self, request: ApprovalRequest) -> Check:
        """Could the step be approved: are there enough named people of the role (and a war
        room to reach them, if a chat is configured)? Says who would be asked."""
        ...

    def decide(self, request: ApprovalRequest) -> Decision:
        """The recorded decision, or PENDING after recording that the step waits for one."""
        ...


@dataclass(frozen=True)
class PauseSite:
    """Where a paused run can be answered: its Prefect flow run and that run's page."""

    flow_run_id: str
    url: str | None
    """The run's page in the Prefect UI, or None when no UI is known."""


class Pauses(Protocol):
    """How a running flow waits for a person's answer (Prefect's pause with a form)."""

    def site(self) -> PauseSite: ...

    def wait(self, description: str, key: str, timeout_seconds: float) -> Answer | None:
        """Pause until someone answers the form (the answer) or the time is up (None)."""
        ...
