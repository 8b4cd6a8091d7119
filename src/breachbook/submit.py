"""`breachbook drill` and `respond` through a running `breachbook serve`.

Run in-process, a command pays Prefect's start-up (a temporary server, about 15-20 s here)
before the playbook's first step. When PREFECT_API_URL names a Prefect server on which
`serve`'s deployments exist, the command instead asks that server for a run of the matching
deployment and follows it: the run is created in a fraction of a second and picked up by the
served process within about a second. The request is two plain HTTP calls, not Prefect's
`run_deployment`, because importing Prefect alone costs the command seconds.

Only what the deployments' forms can say goes this way: the incident and playbook by name
from the incidents and playbooks folders (or `--demo`). An `--out` folder, a `--resume`, or
files elsewhere keep today's in-process run, as does having no server configured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from breachbook.errors import BreachbookError
from breachbook.modes import Mode
from breachbook.settings import Settings, incidents_dir, project_root

FLOW = "breachbook-response"
INCIDENT_KINDS = (".yaml", ".yml", ".json")
ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "PAUSED")


@dataclass(frozen=True)
class Submission:
    """A run of a served deployment that does what the command asked."""

    deployment: str
    parameters: dict[str, Any]


def _named_in(path: Path, folder: Path, kinds: tuple[str, ...]) -> str | None:
    """The file's name as a form gives it, if it is a file of that folder."""
    if path.suffix not in kinds or not path.is_file():
        return None
    return path.stem if path.resolve().parent == folder.resolve() else None


def submission(
    mode: Mode,
    settings: Settings,
    incident: Path | None,
    playbook: Path | None = None,
    demo: bool = False,
    confirm: str | None = None,
    out: Path | None = None,
    resume: str | None = None,
) -> Submission | None:
    """The served run for these options, or None when only an in-process run can do them."""
    if not os.environ.get("PREFECT_API_URL") or out is not None or resume is not None:
        return None
    if demo:
        return Submission("demo-drill", {}) if incident is None and playbook is None else None
    if incident is None:
        return None
    incident_name = _named_in(incident, incidents_dir(settings), INCIDENT_KINDS)
    playbook_name = (
        "customer-data-breach"
        if playbook is None
        else _named_in(playbook, project_root(settings) / "playbooks", (".yaml",))
    )
    if incident_name is None or playbook_name is None:
        return None
    form: dict[str, Any] = {"playbook": playbook_name, "incident": incident_name}
    if mode is Mode.LIVE:
        return Submission("live-response", {"response": form | {"confirm_incident_id": confirm}})
    return Submission("drill", {"drill": form})


def served_deployment(api: str, name: str) -> str | None:
    """The id of `serve`'s deployment on that server, or None if it has none (or no answer)."""
    try:
        answer = httpx.get(f"{api}/deployments/name/{FLOW}/{name}", timeout=2)
    except httpx.TransportError:
        return None
    return str(answer.json()["id"]) if answer.status_code == 200 else None


def _retrying(call: Callable[[], httpx.Response]) -> httpx.Response:
    """Prefect's server answers 503 while its database is busy; its own client retries."""
    for _ in range(10):
        answer = call()
        if answer.status_code != 503:
            return answer
        time.sleep(0.5)
    return answer


def start(api: str, deployment_id: str, submission: Submission) -> dict[str, Any]:
    """Create the flow run; the served process picks it up."""
    answer = _retrying(
        lambda: httpx.post(
            f"{api}/deployments/{deployment_id}/create_flow_run",
            json={"parameters": submission.parameters},
            timeout=30,
        )
    )
    if answer.status_code != 201:
        raise BreachbookError(f"the Prefect server refused the run: {answer.text[:300]}")
    run: dict[str, Any] = answer.json()
    return run


def follow(api: str, flow_run_id: str, poll_seconds: float = 0.5) -> dict[str, Any]:
    """Wait for the run to end (or to be suspended for a decision); returns it."""
    while True:
        answer = _retrying(lambda: httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=30))
        run: dict[str, Any] = answer.json()
        if run["state"]["type"] in ENDED:
            return run
        time.sleep(poll_seconds)


def run_folder(settings: Settings, flow_run_id: str) -> Path | None:
    """The folder a served run wrote: runs/INCIDENT/RUN, RUN from the flow run's id."""
    run_id = flow_run_id.replace("-", "")[:12]
    found = sorted((settings.home / "runs").glob(f"*/{run_id}"))
    return found[0] if found else None
