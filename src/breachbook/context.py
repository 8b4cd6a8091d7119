"""What a step sees: the incident, the playbook, the connectors, the run's journal in the
ledger (its memory: typed records, item claims, audit) and the folder written for people.

There is no mode here and no in-memory state: what a later step needs is a journal record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from breachbook.batches import BatchRunner, run_batches_here
from breachbook.clock import Clock
from breachbook.custody import EvidencePolicy
from breachbook.journal import RunJournal
from breachbook.models import Incident
from breachbook.playbook import Phase, Playbook
from breachbook.ports import (
    Approvals,
    Chat,
    Cloud,
    CloudEvidence,
    CustomerDirectory,
    DatabaseAdmin,
    EvidenceSource,
    EvidenceStore,
    HttpClient,
    Mail,
    PrintShop,
    Publisher,
    SentFolder,
)
from breachbook.rules import RuleBook
from breachbook.settings import LETTERS_BATCH_SIZE
from breachbook.templates import Renderer
from breachbook.workspace import Workspace

if TYPE_CHECKING:
    from breachbook.engine import StepExecutor, StepResult


class WarRoomHooks(Protocol):
    """The incident's war room: told when each phase starts and ends, and given the
    messages of `chat.post` steps; it queues them in the ledger and delivers them in order."""

    @property
    def label(self) -> str: ...

    def say(self, text: str) -> str: ...

    def phase_started(self, ctx: RunContext, phase: Phase) -> None: ...

    def phase_ended(self, ctx: RunContext, phase: Phase, results: Sequence[StepResult]) -> None: ...


@dataclass(frozen=True)
class Connectors:
    """The adapters for one run. Built only by `breachbook.wiring.build_connectors`.

    A port is None when nothing is configured for it; actions then report UNVERIFIED. In a
    drill every port here is seen through the read-only guard.
    """

    clock: Clock
    customers: CustomerDirectory
    executor: StepExecutor
    approvals: Approvals
    database: DatabaseAdmin | None = None
    cloud: Cloud | None = None
    mail: Mail | None = None
    chat: Chat | None = None
    evidence: EvidenceStore | None = None
    publisher: Publisher | None = None
    evidence_source: EvidenceSource | None = None
    cloud_evidence: CloudEvidence | None = None
    http: HttpClient | None = None
    printer: PrintShop | None = None
    sent_folder: SentFolder | None = None
    relay_log: SentFolder | None = None
    """The relay's own log: looked in like the Sent folder, never filed in."""
    war_room: WarRoomHooks | None = None
    """Not a port: the war room, told of each phase (wiring decides where it posts)."""


@dataclass
class RunContext:
    run_id: str
    incident: Incident
    incident_file: Path
    playbook: Playbook
    connectors: Connectors
    workspace: Workspace
    journal: RunJournal
    rules: RuleBook
    renderer: Renderer
    actor: str
    playbook_file: Path | None = None
    """The playbook's file, which a batch worker elsewhere reads again from the ledger."""
    evidence: EvidencePolicy | None = None
    """How this run keeps evidence (signing key, evidence key or contents left out)."""
    batches: BatchRunner = field(default=run_batches_here)
    """How a step's batches run: here one after another, or as tasks of a flow."""
    batch_size: int = LETTERS_BATCH_SIZE
    """Items per batch (BREACHBOOK_LETTERS_BATCH_SIZE)."""
    message_copies: bool = True
    """Whether letters are also written as the email messages that would leave (the mode's
    `message_copies`)."""

    def record(
        self, step_id: str, target: str, phase: str, outcome: str, details: dict[str, Any]
    ) -> None:
        """Append one audit entry for this run (ids and counts in details, never personal data)."""
        self.journal.record(step_id, target, phase, outcome, details)

    def incident_view(self) -> dict[str, Any]:
        """The incident as plain data for playbook expressions."""
        return {"incident": self.incident.model_dump(mode="json")}
