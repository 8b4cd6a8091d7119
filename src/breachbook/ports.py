"""Narrow typed ports between the core and the world.

Each port has a live adapter and a simulated one; in DRILL every port is wrapped by one
generic guard (`breachbook.connectors.guard`) that lets through only the methods marked
`@reads` here, so a method or port added later is refused in a drill until someone marks it.
Every check a port offers is read-only and answers with a `Check`, so a drill can say for each
action how it was verified. A method that changes the world returns `Changed`: what it did and
the prior state that `breachbook restore` puts back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from breachbook.models import Customer, Incident, RejectedRecord


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
        self, incident: Incident, batch_size: int
    ) -> Iterator[list[Customer | RejectedRecord]]:
        """Customers whose data the incident exposed, in batches, in a stable order, each once;
        `Customer.categories` holds the categories exposed for that customer (the exposed
        columns that hold a value for them, across every exposed table).

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


class Chat(Protocol):
    @reads
    def check_can_post(self, channel: str) -> Check: ...

    def post(self, channel: str, text: str) -> str: ...


class EvidenceStore(Protocol):
    @reads
    def describe(self) -> str: ...

    @reads
    def check_writable(self) -> Check: ...

    def put(self, item_id: str, chunks: Iterator[bytes]) -> str:
        """Store one file of an evidence bundle (a sealed item or the manifest) under the
        relative name `item_id`, whole or not at all; returns the SHA-256 of the bytes stored."""
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


class Publisher(Protocol):
    """Where an approved public statement is published (status page, newsroom)."""

    @reads
    def check_can_publish(self) -> Check: ...

    def publish(self, title: str, body: str) -> str: ...


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


class Approvals(Protocol):
    """Asks a role to approve a step before its changes are made; per step, not per target."""

    @reads
    def check_can_ask(self, role: str) -> Check: ...

    def decide(self, step_id: str, role: str, summary: str) -> Decision:
        """The recorded decision, or PENDING after recording that the step waits for one."""
        ...
