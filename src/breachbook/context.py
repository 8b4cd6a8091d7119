"""What a step sees: the incident, the playbook, the connectors and the run's folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from breachbook.clock import Clock
from breachbook.ledger import Entry, Ledger
from breachbook.models import Incident
from breachbook.playbook import Playbook
from breachbook.ports import (
    Approvals,
    Chat,
    Cloud,
    CustomerDirectory,
    DatabaseAdmin,
    EvidenceStore,
    Mail,
    Publisher,
)
from breachbook.rules import RuleBook
from breachbook.templates import Renderer
from breachbook.workspace import Workspace

if TYPE_CHECKING:
    from breachbook.engine import StepExecutor


@dataclass(frozen=True)
class Connectors:
    """The adapters for one run. Built only by `breachbook.wiring.build_connectors`.

    A port is None when nothing is configured for it; actions then report UNVERIFIED.
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


@dataclass
class RunContext:
    run_id: str
    mode_label: str
    incident: Incident
    incident_file: Path
    playbook: Playbook
    connectors: Connectors
    workspace: Workspace
    ledger: Ledger
    rules: RuleBook
    renderer: Renderer
    actor: str
    state: dict[str, Any] = field(default_factory=dict)

    def record(
        self, step_id: str, target: str, phase: str, outcome: str, details: dict[str, Any]
    ) -> None:
        """Append one audit entry for this run (ids and counts in details, never personal data)."""
        self.ledger.append(
            Entry(
                incident_id=self.incident.id,
                run_id=self.run_id,
                step_id=step_id,
                target=target,
                phase=phase,
                actor=self.actor,
                mode=self.mode_label,
                outcome=outcome,
                details=details,
            )
        )

    def incident_view(self) -> dict[str, Any]:
        """The incident as plain data for playbook expressions."""
        return {"incident": self.incident.model_dump(mode="json")}
