"""The simulated world of a tabletop: a clock that jumps from event to event, and one
simulated adapter per port that changes only this world and applies the scenario's faults.

Every adapter here says `simulated = True`; the TABLETOP guard in the wiring refuses any
other, so a tabletop can never reach a live or drill adapter whatever the settings hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from breachbook.connectors.evidence_fs import FilesystemEvidenceStore
from breachbook.connectors.evidence_sql import DirectoryEvidenceSource
from breachbook.connectors.ledger_approvals import LedgerApprovals
from breachbook.errors import BreachbookError, ContainmentRefused, MailUnavailable
from breachbook.journal import RunJournal
from breachbook.models import Customer, Incident, RejectedRecord
from breachbook.ports import (
    ApprovalRequest,
    Changed,
    Check,
    CustomerDirectory,
    Decision,
    DecisionStatus,
    EvidenceRead,
    HttpCall,
    OutgoingLetter,
    PrintedLetter,
    StatementRelease,
)
from breachbook.tabletop.scenario import Fault, World

METHOD = "simulated world"


class SimulatedClock:
    """Discrete-event time: `now` stands still until the exercise jumps it to the next event
    or an adapter spends the time a change takes; `sleep` moves on without waiting."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("SimulatedClock needs a timezone-aware start")
        self.start = start
        self._now = start

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def jump_to(self, moment: datetime) -> None:
        """Move to `moment`; time never goes back (a change may have run past it)."""
        self._now = max(self._now, moment)

    @property
    def elapsed(self) -> timedelta:
        return self._now - self.start


class FaultHit(BreachbookError):
    """A call failed because the scenario says this part of the world is down."""


@dataclass
class SimulatedWorld:
    """The state the simulated adapters change, and the faults that make them fail."""

    spec: World
    clock: SimulatedClock
    locked_roles: set[str] = field(default_factory=set)
    ended_sessions: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    inactive_keys: set[str] = field(default_factory=set)
    quarantined: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)
    denied_principals: set[str] = field(default_factory=set)
    letters_sent: int = 0
    letters_printed: int = 0
    posts: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    http_calls: int = 0
    fault_hits: list[tuple[timedelta, str]] = field(default_factory=list)

    def in_force(
        self, port: str, operation: str | None = None, role: str | None = None
    ) -> Fault | None:
        """The scenario fault in force now for such a call, if any."""
        now = self.clock.elapsed
        for fault in self.spec.faults:
            if fault.port != port or now < fault.start:
                continue
            if fault.until is not None and now >= fault.until:
                continue
            if fault.operation is not None and fault.operation != operation:
                continue
            if fault.role is not None and fault.role != role:
                continue
            return fault
        return None

    def fault(
        self, port: str, operation: str | None = None, role: str | None = None
    ) -> Fault | None:
        """The fault in force for this call, remembered as a hit for the report."""
        fault = self.in_force(port, operation, role)
        if fault is not None:
            self.fault_hits.append((self.clock.elapsed, fault.id))
        return fault

    def check(self, port: str, operation: str, known: bool, what: str) -> Check:
        """The preflight of a change: FAILED under a fault or for something the world lacks."""
        fault = self.fault(port, operation)
        if fault is not None:
            return Check.failed(f"simulated fault {fault.id}: {fault.reason}", METHOD)
        if not known:
            return Check.failed(f"{what} does not exist in the simulated world", METHOD)
        return Check.verified(f"{what} exists in the simulated world", METHOD)

    def change(self, port: str, operation: str, known: bool, what: str) -> None:
        """Spend the time a change takes, or refuse it as the scenario's fault says."""
        fault = self.fault(port, operation)
        if fault is not None:
            raise ContainmentRefused(f"simulated fault {fault.id}: {fault.reason}")
        if not known:
            raise ContainmentRefused(f"{what} does not exist in the simulated world")
        self.clock.sleep(self.spec.action_time.total_seconds())


class SimulatedDatabaseAdmin:
    simulated = True

    def __init__(self, world: SimulatedWorld) -> None:
        self._world = world

    def _known(self, role: str) -> bool:
        return role in self._world.spec.database_roles

    def check_lock_role(self, role: str) -> Check:
        return self._world.check("database", "lock_role", self._known(role), f"role {role}")

    def lock_role(self, role: str, connection_limit: int | None = None) -> Changed:
        self._world.change("database", "lock_role", self._known(role), f"role {role}")
        self._world.locked_roles.add(role)
        return Changed({"login": False}, {"login": True})

    def restore_role(self, role: str, prior: Mapping[str, Any]) -> Changed:
        self._world.locked_roles.discard(role)
        return Changed({"login": True})

    def check_end_sessions(self, role: str) -> Check:
        return self._world.check("database", "end_sessions", self._known(role), f"role {role}")

    def end_sessions(self, role: str) -> Changed:
        self._world.change("database", "end_sessions", self._known(role), f"role {role}")
        self._world.ended_sessions.add(role)
        return Changed({"sessions_ended": 1})

    def check_revoke_privileges(self, role: str, target: str) -> Check:
        return self._world.check("database", "revoke_privileges", self._known(role), f"role {role}")

    def revoke_privileges(self, role: str, target: str) -> Changed:
        self._world.change("database", "revoke_privileges", self._known(role), f"role {role}")
        self._world.revoked.add(f"{role}@{target}")
        return Changed({"revoked": target}, {"privileges": ["SELECT"]})

    def restore_privileges(self, role: str, target: str, prior: Mapping[str, Any]) -> Changed:
        self._world.revoked.discard(f"{role}@{target}")
        return Changed({"restored": target})


class SimulatedCloud:
    simulated = True

    def __init__(self, world: SimulatedWorld) -> None:
        self._world = world

    def _key(self, key: str) -> bool:
        return key in self._world.spec.access_keys

    def _host(self, host: str) -> bool:
        return host in self._world.spec.hosts

    def check_deactivate_key(self, access_key_id: str) -> Check:
        return self._world.check("cloud", "deactivate_key", self._key(access_key_id), "the key")

    def deactivate_key(self, access_key_id: str) -> Changed:
        self._world.change("cloud", "deactivate_key", self._key(access_key_id), "the key")
        self._world.inactive_keys.add(access_key_id)
        return Changed({"status": "Inactive"}, {"status": "Active"})

    def reactivate_key(self, access_key_id: str, prior: Mapping[str, Any]) -> Changed:
        self._world.inactive_keys.discard(access_key_id)
        return Changed({"status": "Active"})

    def check_quarantine_host(self, host: str) -> Check:
        return self._world.check("cloud", "quarantine_host", self._host(host), f"host {host}")

    def quarantine_host(self, host: str) -> Changed:
        self._world.change("cloud", "quarantine_host", self._host(host), f"host {host}")
        self._world.quarantined.add(host)
        return Changed({"group": "quarantine"}, {"groups": "simulated"})

    def release_host(self, host: str, prior: Mapping[str, Any]) -> Changed:
        self._world.quarantined.discard(host)
        return Changed({"groups": "simulated"})

    def check_block_address(self, network: str) -> Check:
        return self._world.check("cloud", "block_address", True, f"network ACL for {network}")

    def block_address(self, network: str) -> Changed:
        self._world.change("cloud", "block_address", True, f"network ACL for {network}")
        self._world.blocked.add(network)
        return Changed({"rule": "deny"}, {"rule": "none"})

    def unblock_address(self, network: str, prior: Mapping[str, Any]) -> Changed:
        self._world.blocked.discard(network)
        return Changed({"rule": "removed"})

    def check_deny_principal(self, principal: str) -> Check:
        return self._world.check("cloud", "deny_principal", True, f"principal {principal}")

    def deny_principal(self, principal: str) -> Changed:
        self._world.change("cloud", "deny_principal", True, f"principal {principal}")
        self._world.denied_principals.add(principal)
        return Changed({"policy": "deny-all"}, {"policy": None})

    def allow_principal(self, principal: str, prior: Mapping[str, Any]) -> Changed:
        self._world.denied_principals.discard(principal)
        return Changed({"policy": "removed"})

    def check_deactivate_user_keys(self, user: str) -> Check:
        return self._world.check("cloud", "deactivate_user_keys", True, f"user {user}")

    def deactivate_user_keys(self, user: str) -> Changed:
        self._world.change("cloud", "deactivate_user_keys", True, f"user {user}")
        return Changed({"deactivated": 0}, {"keys": []})

    def reactivate_user_keys(self, user: str, prior: Mapping[str, Any]) -> Changed:
        return Changed({"reactivated": 0})


class SimulatedMail:
    """Counts letters; keeps no body or address (they are personal data)."""

    simulated = True

    def __init__(self, world: SimulatedWorld) -> None:
        self._world = world

    def describe(self) -> str:
        return "simulated mail relay"

    def check_can_send(self) -> Check:
        return self._world.check("mail", "send", True, "the simulated mail relay")

    def parallel_sends(self) -> int:
        return 1

    def send(self, letter: OutgoingLetter) -> str:
        fault = self._world.fault("mail", "send")
        if fault is not None:
            raise MailUnavailable(f"simulated fault {fault.id}: {fault.reason}")
        self._world.letters_sent += 1
        return f"sim-{hashlib.sha256(letter.key.encode()).hexdigest()[:16]}"


class SimulatedChat:
    simulated = True

    def __init__(self, world: SimulatedWorld) -> None:
        self._world = world

    def check_can_post(self, channel: str) -> Check:
        return self._world.check("chat", "post", True, f"channel {channel}")

    def post(self, channel: str, text: str, blocks: Sequence[Mapping[str, Any]] = ()) -> str:
        self._world.change("chat", "post", True, f"channel {channel}")
        self._world.posts.append(channel)
        return f"sim-{len(self._world.posts)}"


class SimulatedPublisher:
    simulated = True

    def __init__(self, world: SimulatedWorld) -> None:
        self._world = world

    def describe(self) -> str:
        return "the simulated status page"

    def check_can_publish(self) -> Check:
        return self._world.check("publisher", "publish", True, "the simulated status page")

    def publish(self, release: StatementRelease) -> str:
        self._world.change("publisher", "publish", True, "the simulated status page")
        self._world.published.append(f"{release.statement}-v{release.version}.{release.language}")
        return f"sim-statement-{len(self._world.published)}"


class SimulatedPrintShop:
    """Counts printed letters; keeps no PDF (they are personal data)."""

    simulated = True

    def __init__(self, world: SimulatedWorld) -> None:
        self._world = world

    def describe(self) -> str:
        return "simulated print shop"

    def check_can_print(self) -> Check:
        return self._world.check("printer", "print", True, "the simulated print shop")

    def print_letter(self, letter: PrintedLetter) -> str:
        fault = self._world.fault("printer", "print")
        if fault is not None:
            raise FaultHit(f"simulated fault {fault.id}: {fault.reason}")
        self._world.letters_printed += 1
        return f"sim-print-{letter.rule_id}-{letter.customer_id}"

    def handed_over(
        self, incident_id: str, rule_id: str, country: str, customer_id: str
    ) -> str | None:
        return None  # a simulated run is never killed mid-print

    def assemble(
        self, incident_id: str, rule_id: str, country: str, number: int, references: list[str]
    ) -> str:
        return f"sim-print-{rule_id}-{country}-{number:04d}"


class SimulatedHttp:
    simulated = True

    def __init__(self, world: SimulatedWorld) -> None:
        self._world = world

    def describe(self) -> str:
        return "simulated organisation API"

    def probe(self, call: HttpCall) -> int:
        return 503 if self._world.fault("http", "probe") else 200

    def send(self, call: HttpCall) -> int:
        if self._world.fault("http", "send") is not None:
            return 503
        self._world.http_calls += 1
        return 200


class SimulatedEvidenceStore:
    """Evidence kept in the run's own folder (`world/evidence`), failing under a fault."""

    simulated = True

    def __init__(self, world: SimulatedWorld, store: FilesystemEvidenceStore) -> None:
        self._world = world
        self._store = store

    def describe(self) -> str:
        return f"simulated evidence store ({self._store.describe()})"

    def check_writable(self) -> Check:
        fault = self._world.fault("evidence", "put")
        if fault is not None:
            return Check.failed(f"simulated fault {fault.id}: {fault.reason}", METHOD)
        return self._store.check_writable()

    def put(
        self,
        item_id: str,
        chunks: Iterator[bytes],
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> str:
        fault = self._world.fault("evidence", "put")
        if fault is not None:
            raise FaultHit(f"simulated fault {fault.id}: {fault.reason}")
        return self._store.put(item_id, chunks, retain_until, legal_hold)


class SimulatedCloudEvidence:
    simulated = True

    def __init__(self, world: SimulatedWorld) -> None:
        self._world = world

    def describe(self) -> str:
        return "simulated cloud evidence"

    def read_objects(
        self, bucket: str, prefix: str, max_total_bytes: int
    ) -> Iterator[EvidenceRead]:
        return iter(())

    def check_snapshot(self, volume_id: str) -> Check:
        return self._world.check("evidence", "snapshot", True, f"volume {volume_id}")

    def create_snapshot(self, volume_id: str, description: str) -> str:
        self._world.change("evidence", "snapshot", True, f"volume {volume_id}")
        self._world.snapshots.append(volume_id)
        return f"snap-sim{len(self._world.snapshots):08d}"


class SimulatedCustomers:
    """The synthetic customer database of the exercise (in its own folder), read-only."""

    simulated = True

    def __init__(self, directory: CustomerDirectory) -> None:
        self._directory = directory

    def describe(self) -> str:
        return f"simulated world: {self._directory.describe()}"

    def check_readable(self) -> Check:
        return self._directory.check_readable()

    def iter_affected(
        self, incident: Incident, batch_size: int, after: str | None = None
    ) -> Iterator[list[Customer | RejectedRecord]]:
        return self._directory.iter_affected(incident, batch_size, after)

    def table_snapshot(self, table: str, columns: list[str]) -> Iterator[bytes]:
        return self._directory.table_snapshot(table, columns)


class SimulatedEvidenceSource(DirectoryEvidenceSource):
    """The synthetic database as evidence, read table by table."""

    simulated = True


class SimulatedApprovals:
    """Decisions the players record in the ledger (`record_decision`), as `breachbook approve`
    does; a role the scenario makes silent has no decision delivered while the fault lasts."""

    simulated = True

    def __init__(self, world: SimulatedWorld, journal: RunJournal) -> None:
        self._world = world
        self._ledger = LedgerApprovals(journal, world.clock)

    def check_can_ask(self, request: ApprovalRequest) -> Check:
        return Check.verified(f"role {request.gate.role!r} answers in the exercise", METHOD)

    def decide(self, request: ApprovalRequest) -> Decision:
        decision = self._ledger.decide(request)
        role = request.gate.role
        if self._world.fault("approvals", "decide", role) is not None:
            return Decision(step_id=request.step_id, role=role, status=DecisionStatus.PENDING)
        return decision


def simulated_only(adapter: Any, port: type) -> Any:
    """The TABLETOP guard: an adapter that is not part of the simulated world is refused."""
    if getattr(adapter, "simulated", False) is not True:
        raise BreachbookError(
            f"tabletop: refused {type(adapter).__name__} for {port.__name__}: a tabletop runs "
            "only on the simulated world"
        )
    return adapter
