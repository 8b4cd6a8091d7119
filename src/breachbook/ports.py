"""Narrow typed ports between the core and the world.

Each port has a live adapter, a drill adapter (reads only, writes refused at the transport)
and a simulated one for tabletops. Every check a port offers is read-only and answers with a
`Check`, so a drill can say for each action how it was verified.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from breachbook.models import Customer, DataCategory, RejectedRecord


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

    @classmethod
    def verified(cls, reason: str, method: str) -> Check:
        return cls(verdict=Verdict.VERIFIED, reason=reason, method=method)

    @classmethod
    def failed(cls, reason: str, method: str) -> Check:
        return cls(verdict=Verdict.FAILED, reason=reason, method=method)

    @classmethod
    def unverified(cls, reason: str) -> Check:
        return cls(verdict=Verdict.UNVERIFIED, reason=reason, method="none")


def not_configured(port: str, setting: str) -> Check:
    return Check.unverified(f"no {port} connector configured (set {setting})")


class CustomerDirectory(Protocol):
    """Read access to the customer database. The only port that returns personal data."""

    def describe(self) -> str: ...

    def check_readable(self) -> Check: ...

    def iter_affected(
        self, categories: frozenset[DataCategory], batch_size: int
    ) -> Iterator[list[Customer | RejectedRecord]]:
        """Customers holding any of the exposed categories, in batches, in a stable order.

        A record that does not validate comes back as a RejectedRecord, so one bad row is
        reported by id instead of stopping the notification of everyone else.
        """
        ...

    def table_snapshot(self, table: str, columns: list[str]) -> Iterator[bytes]:
        """A deterministic serialisation of the exposed rows, for evidence hashing."""
        ...


class DatabaseAdmin(Protocol):
    """Containment on the production database: lock a role, end its sessions."""

    def check_lock_role(self, role: str) -> Check: ...

    def lock_role(self, role: str) -> dict[str, str]: ...

    def check_end_sessions(self, role: str) -> Check: ...

    def end_sessions(self, role: str) -> dict[str, str]: ...


class Cloud(Protocol):
    """Containment in the cloud account: keys, hosts, network."""

    def check_deactivate_key(self, access_key_id: str) -> Check: ...

    def deactivate_key(self, access_key_id: str) -> dict[str, str]: ...

    def check_quarantine_host(self, host: str) -> Check: ...

    def quarantine_host(self, host: str) -> dict[str, str]: ...

    def check_block_address(self, network: str) -> Check: ...

    def block_address(self, network: str) -> dict[str, str]: ...


@dataclass(frozen=True)
class OutgoingLetter:
    """A rendered letter ready to send. Its body is personal data."""

    key: str
    recipient: str
    subject: str
    body: str


class Mail(Protocol):
    def describe(self) -> str: ...

    def check_can_send(self) -> Check: ...

    def send(self, letter: OutgoingLetter) -> str:
        """Deliver one letter; returns a delivery reference (no personal data)."""
        ...


class Chat(Protocol):
    def check_can_post(self, channel: str) -> Check: ...

    def post(self, channel: str, text: str) -> str: ...


class EvidenceStore(Protocol):
    def describe(self) -> str: ...

    def check_writable(self) -> Check: ...

    def put(self, item_id: str, chunks: Iterator[bytes]) -> str:
        """Store one evidence item; returns its SHA-256."""
        ...


class Publisher(Protocol):
    """Where an approved public statement is published (status page, newsroom)."""

    def check_can_publish(self) -> Check: ...

    def publish(self, title: str, body: str) -> str: ...


class Approvals(Protocol):
    """Asks a role to approve a step before its changes are made."""

    def check_can_ask(self, role: str) -> Check: ...

    def request(self, step_id: str, role: str, summary: str) -> bool: ...
