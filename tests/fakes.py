"""Named fakes for the ports: they record every call, so tests assert on what was asked."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from breachbook.connectors.evidence_sql import EvidenceReadError
from breachbook.errors import MailUnavailable
from breachbook.models import Customer, DataCategory, Incident, RejectedRecord
from breachbook.ports import (
    Answer,
    ApprovalRequest,
    Changed,
    Check,
    Decision,
    DecisionStatus,
    EvidenceRead,
    EvidenceSource,
    OutgoingLetter,
    PauseSite,
    StatementRelease,
)
from breachbook.receiver import StartRequest


@dataclass
class RecordingCloud:
    """Answers every check with `check_answer` and records checks and changes separately."""

    check_answer: Check = field(default_factory=lambda: Check.verified("allowed", "fake"))
    checks: list[tuple[str, str]] = field(default_factory=list)
    changes: list[tuple[str, str]] = field(default_factory=list)

    def check_deactivate_key(self, access_key_id: str) -> Check:
        self.checks.append(("deactivate_key", access_key_id))
        return self.check_answer

    def deactivate_key(self, access_key_id: str) -> Changed:
        self.changes.append(("deactivate_key", access_key_id))
        return Changed({"status": "Inactive"}, {"status": "Active"})

    def reactivate_key(self, access_key_id: str, prior: Mapping[str, Any]) -> Changed:
        self.changes.append(("reactivate_key", access_key_id))
        return Changed({"status": str(prior["status"])})

    def check_quarantine_host(self, host: str) -> Check:
        self.checks.append(("quarantine_host", host))
        return self.check_answer

    def quarantine_host(self, host: str) -> Changed:
        self.changes.append(("quarantine_host", host))
        return Changed({"group": "quarantine"}, {"groups": "sg-web"})

    def release_host(self, host: str, prior: Mapping[str, Any]) -> Changed:
        self.changes.append(("release_host", host))
        return Changed({"groups": str(prior["groups"])})

    def check_block_address(self, network: str) -> Check:
        self.checks.append(("block_address", network))
        return self.check_answer

    def block_address(self, network: str) -> Changed:
        self.changes.append(("block_address", network))
        return Changed({"rule": "deny"}, {"rule": "none"})

    def unblock_address(self, network: str, prior: Mapping[str, Any]) -> Changed:
        self.changes.append(("unblock_address", network))
        return Changed({"rule": "removed"})

    def check_deny_principal(self, principal: str) -> Check:
        self.checks.append(("deny_principal", principal))
        return self.check_answer

    def deny_principal(self, principal: str) -> Changed:
        self.changes.append(("deny_principal", principal))
        return Changed({"policy": "breachbook-deny-all"}, {"policy": None})

    def allow_principal(self, principal: str, prior: Mapping[str, Any]) -> Changed:
        self.changes.append(("allow_principal", principal))
        return Changed({"policy": "removed"})

    def check_deactivate_user_keys(self, user: str) -> Check:
        self.checks.append(("deactivate_user_keys", user))
        return self.check_answer

    def deactivate_user_keys(self, user: str) -> Changed:
        self.changes.append(("deactivate_user_keys", user))
        return Changed({"count": 1}, {"user": user, "keys": {"AKIAFAKE": "Active"}})

    def reactivate_user_keys(self, user: str, prior: Mapping[str, Any]) -> Changed:
        self.changes.append(("reactivate_user_keys", user))
        return Changed({"count": len(prior["keys"])})


@dataclass
class RecordingDatabaseAdmin:
    check_answer: Check = field(default_factory=lambda: Check.verified("has privilege", "fake"))
    checks: list[tuple[str, str]] = field(default_factory=list)
    changes: list[tuple[str, str]] = field(default_factory=list)

    def check_lock_role(self, role: str) -> Check:
        self.checks.append(("lock_role", role))
        return self.check_answer

    def lock_role(self, role: str, connection_limit: int | None = None) -> Changed:
        self.changes.append(("lock_role", role))
        return Changed({"role": role, "login": "disabled"}, {"login": True})

    def restore_role(self, role: str, prior: Mapping[str, Any]) -> Changed:
        self.changes.append(("restore_role", role))
        return Changed({"role": role, "login": "enabled" if prior["login"] else "disabled"})

    def check_end_sessions(self, role: str) -> Check:
        self.checks.append(("end_sessions", role))
        return self.check_answer

    def end_sessions(self, role: str) -> Changed:
        self.changes.append(("end_sessions", role))
        return Changed({"terminated": "2"})

    def check_revoke_privileges(self, role: str, target: str) -> Check:
        self.checks.append(("revoke_privileges", target))
        return self.check_answer

    def revoke_privileges(self, role: str, target: str) -> Changed:
        self.changes.append(("revoke_privileges", target))
        return Changed({"revoked": 1}, {"role": role, "table": [["SELECT", False]]})

    def restore_privileges(self, role: str, target: str, prior: Mapping[str, Any]) -> Changed:
        self.changes.append(("restore_privileges", target))
        return Changed({"granted": 1})


@dataclass
class RecordingMail:
    sent: list[OutgoingLetter] = field(default_factory=list)
    checks: int = 0

    def describe(self) -> str:
        return "recording mail"

    def check_can_send(self) -> Check:
        self.checks += 1
        return Check.verified("NOOP answered 250", "fake")

    def parallel_sends(self) -> int:
        return 1

    def send(self, letter: OutgoingLetter) -> str:
        self.sent.append(letter)
        return f"ref-{len(self.sent)}"


@dataclass
class RecordingChat:
    posts: list[tuple[str, str]] = field(default_factory=list)
    blocks: list[list[Mapping[str, Any]]] = field(default_factory=list)
    """Each post's Block Kit blocks, in the order of `posts`."""

    def check_can_post(self, channel: str) -> Check:
        return Check.verified(f"member of {channel}", "fake auth.test")

    def post(self, channel: str, text: str, blocks: Sequence[Mapping[str, Any]] = ()) -> str:
        self.posts.append((channel, text))
        self.blocks.append(list(blocks))
        return f"ts-{len(self.posts)}"


@dataclass
class RecordingPublisher:
    published: list[StatementRelease] = field(default_factory=list)

    def describe(self) -> str:
        return "recording publisher"

    def check_can_publish(self) -> Check:
        return Check.verified("token valid", "fake")

    def publish(self, release: StatementRelease) -> str:
        self.published.append(release)
        return f"https://status.example/{len(self.published)}"


@dataclass
class ScriptedApprovals:
    """Approves the roles in `approve`, denies the rest, and remembers who was asked."""

    approve: set[str] = field(default_factory=set)
    asked: list[tuple[str, str]] = field(default_factory=list)

    def check_can_ask(self, request: ApprovalRequest) -> Check:
        return Check.verified(f"can ask {request.gate.role}", "fake")

    def decide(self, request: ApprovalRequest) -> Decision:
        step_id, role = request.step_id, request.gate.role
        self.asked.append((step_id, role))
        granted = role in self.approve
        return Decision(
            step_id=step_id,
            role=role,
            status=DecisionStatus.GRANTED if granted else DecisionStatus.DENIED,
            by=f"fake {role} approver",
        )


@dataclass
class InMemoryCustomers:
    """A customer directory over a list, for tests of the notification rules."""

    records: list[Customer | RejectedRecord]
    snapshot: bytes = b'[1, "row"]\n'

    def describe(self) -> str:
        return "in-memory customers"

    def check_readable(self) -> Check:
        return Check.verified("in memory", "fake")

    def iter_affected(
        self, incident: Incident, batch_size: int, after: str | None = None
    ) -> Iterator[list[Customer | RejectedRecord]]:
        categories = frozenset(incident.data_categories)
        batch = [
            r for r in self.records if isinstance(r, RejectedRecord) or r.categories & categories
        ]
        if after is not None:
            ids = [r.customer_id if isinstance(r, RejectedRecord) else r.id for r in batch]
            batch = batch[ids.index(after) + 1 :]
        for start in range(0, len(batch), batch_size):
            yield batch[start : start + batch_size]

    def table_snapshot(self, table: str, columns: list[str]) -> Iterator[bytes]:
        yield self.snapshot


BASE = frozenset(
    {DataCategory.NAME, DataCategory.EMAIL, DataCategory.POSTAL_ADDRESS, DataCategory.PHONE}
)


def customer(
    cid: str,
    country: str,
    region: str = "",
    locale: str = "en",
    name: str = "Test Person",
    extra: frozenset[DataCategory] = frozenset(),
) -> Customer:
    return Customer(
        id=cid,
        full_name=name,
        email=f"{cid.lower()}@example.org",
        phone="+1 555 0100",
        street="1 Main Street",
        city="Springfield",
        postal_code="12345",
        region=region,
        country=country,
        locale=locale,
        categories=BASE | extra,
    )


class VanishingSource:
    """The real evidence source, except that one item's source vanishes after its first
    chunk (a connection lost, a table dropped mid-read)."""

    def __init__(self, inner: EvidenceSource, vanishing: str) -> None:
        self.inner = inner
        self.vanishing = vanishing

    def describe(self) -> str:
        return self.inner.describe()

    def read_consistently(
        self, tables: list[tuple[str, list[str]]], queries: list[tuple[str, str]]
    ) -> Iterator[EvidenceRead]:
        for read in self.inner.read_consistently(tables, queries):
            if read.item_id == self.vanishing:
                yield EvidenceRead(read.item_id, read.source, self._cut(read.chunks))
            else:
                yield read

    def _cut(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        yield next(chunks)
        raise EvidenceReadError(
            f"{self.describe()}: reading {self.vanishing} failed: the source vanished mid-read"
        )


class RecordingStarter:
    """Starts nothing: records each run the alert receiver asks for; fails the first
    `failures` attempts as an unreachable Prefect API would."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.started: list[StartRequest] = []

    async def start(self, request: StartRequest) -> str:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Prefect API unreachable")
        self.started.append(request)
        return f"flow-run-{len(self.started)}"


@dataclass
class ScriptedPauses:
    """A flow run's pauses, answered in turn by `answers`; None stands for a pause whose time
    ran out. Remembers each pause: its key, the form's description and its timeout."""

    answers: list[Answer | None] = field(default_factory=list)
    pauses: list[tuple[str, str, float]] = field(default_factory=list)

    def site(self) -> PauseSite:
        return PauseSite(
            flow_run_id="0f0e0d0c-0000-4000-8000-000000000001",
            url="http://prefect.test/runs/flow-run/0f0e0d0c-0000-4000-8000-000000000001",
        )

    def wait(self, description: str, key: str, timeout_seconds: float) -> Answer | None:
        self.pauses.append((key, description, timeout_seconds))
        return self.answers.pop(0) if self.answers else None


@dataclass
class RecordingSentFolder:
    """A Sent folder in memory: what was filed, and every question asked of it."""

    filed: set[str] = field(default_factory=set)
    asked: list[list[str]] = field(default_factory=list)
    check_answer: Check = field(
        default_factory=lambda: Check.verified("fake folder opened; nothing was filed", "fake")
    )
    unreadable: bool = False
    name: str = "fake Sent folder"

    def describe(self) -> str:
        return self.name

    def check_can_read(self) -> Check:
        return self.check_answer

    def contains(self, message_ids: Sequence[str]) -> set[str]:
        self.asked.append(list(message_ids))
        if self.unreadable:
            raise MailUnavailable(f"{self.name}: connection refused")
        return self.filed & set(message_ids)

    def file(self, message: bytes) -> None:
        raise AssertionError("nothing files in the fake folder")
