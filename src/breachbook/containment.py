"""Containment at once: the first phase of the response, run in the alert receiver's
process the moment an alert is accepted (rules with `contain_at_once`, the default).

A served Prefect run starts seconds after it is created (the runner polls, then starts a new
Python process: 5 to 10 s on 2 cores, measured by bench/alert_latency.py), too slow to lock a
database role used by an attacker. So for a LIVE rule the receiver runs the playbook's first
phase, with the steps it depends on (the evidence snapshot before a lock), itself, while the
whole playbook starts on the served deployment. Both are runs of the same incident on the
same LIVE ledger: each change is claimed there before it is made, so the served run finds
containment done (or in hand) and does only what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from breachbook.engine import new_run_id
from breachbook.errors import BreachbookError
from breachbook.inputs import PLAYBOOK, load_yaml, read_text
from breachbook.modes import Mode
from breachbook.receiver import StartRequest
from breachbook.run import execute
from breachbook.settings import Settings, project_root
from breachbook.wiring import RunRequest


def first_phase(document: dict[str, Any]) -> dict[str, Any]:
    """The playbook cut to its first phase and every step that phase depends on, in order."""
    phases = document.get("phases") or []
    if not phases:
        raise BreachbookError("the playbook has no phases")
    steps = {step["id"]: step for phase in phases for step in phase.get("steps", [])}
    wanted = {step["id"] for step in phases[0].get("steps", [])}
    todo = list(wanted)
    while todo:
        for needed in steps[todo.pop()].get("depends_on", []) or []:
            if needed not in wanted and needed in steps:
                wanted.add(needed)
                todo.append(needed)
    kept = [
        {**phase, "steps": [s for s in phase.get("steps", []) if s["id"] in wanted]}
        for phase in phases
    ]
    return {**document, "phases": [phase for phase in kept if phase["steps"]]}


class ContainNow:
    """Runs a LIVE request's first phase here and now (in a thread of the receiver)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.home / "serve" / "containment"
        self._playbooks: dict[str, Path] = {}

    def playbook(self, name: str) -> Path:
        """The first-phase cut of a playbook, written once per playbook under the home."""
        if name not in self._playbooks:
            source = project_root(self.settings) / "playbooks" / f"{name}.yaml"
            document = load_yaml(read_text(source, PLAYBOOK), str(source))
            self.folder.mkdir(parents=True, exist_ok=True)
            cut = self.folder / f"{name}.yaml"
            cut.write_text(yaml.safe_dump(first_phase(document), sort_keys=False), "utf-8")
            self._playbooks[name] = cut
        return self._playbooks[name]

    def __call__(self, request: StartRequest) -> str:
        """Contain in the rule's mode; returns the run's id (its folder is
        `runs/INCIDENT/contain-RUN`). A LIVE rule is its own confirmation."""
        run_id = new_run_id()
        execute(
            RunRequest(
                mode=Mode(request.mode),
                incident_file=request.incident_file,
                playbook_file=self.playbook(request.playbook),
                confirm_incident_id=request.incident_id,
                out_dir=self.settings.home / "runs" / request.incident_id / f"contain-{run_id}",
                run_id=run_id,
            ),
            settings=self.settings,
        )
        return run_id
