"""`breachbook drill` and `respond` through a running `breachbook serve`.

Run in-process, a command pays Prefect's start-up (a temporary server, about 15-20 s here)
before the playbook's first step. When PREFECT_API_URL names a Prefect server on which
`serve`'s deployments exist, the command instead asks that server for a run of the matching
deployment and follows it: the run is created in a fraction of a second and picked up by the
served process within about a second. The request is two plain HTTP calls, not Prefect's
`run_deployment`, because importing Prefect alone costs the command seconds (and the
command imports nothing it does not need on this path: bench/cli_start.py).

Only what the deployments' forms can say goes this way: the incident and playbook by name
from the incidents and playbooks folders (or `--demo`). An `--out` folder, a `--resume`, or
files elsewhere keep today's in-process run, as does having no server configured.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breachbook.errors import BreachbookError
from breachbook.modes import Mode
from breachbook.settings import Settings, incidents_dir, project_root

FLOW = "breachbook-response"
INCIDENT_KINDS = (".yaml", ".yml", ".json")
ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "PAUSED")


class Unreachable(BreachbookError):
    """PREFECT_API_URL's server does not answer."""


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


class ServeApi:
    """The Prefect server's REST API, as far as this command needs it.

    Through the standard library's urllib, not httpx: the whole command is Python's start,
    the settings and two HTTP calls, and importing httpx with its transport (about 0.1 s of
    CPU, 0.3 s on a loaded machine, bench/cli_start.py) cost more than the calls."""

    def __init__(self, api: str) -> None:
        self.api = api.rstrip("/")

    def call(
        self, method: str, path: str, body: Any = None, timeout: float = 30
    ) -> tuple[int, Any]:
        """Status and JSON answer (or its text when it is not JSON); 503, which Prefect's
        server answers while its database is busy, is retried as Prefect's own client
        does. Raises Unreachable when the server does not answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        for attempt in range(10):
            try:
                with urllib.request.urlopen(request, timeout=timeout) as answer:
                    status, text = answer.status, answer.read()
            except urllib.error.HTTPError as refused:
                status, text = refused.code, refused.read()
            except OSError as exc:
                reason = getattr(exc, "reason", exc)
                raise Unreachable(
                    f"the Prefect server at {self.api} did not answer: {reason}"
                ) from None
            if status != 503 or attempt == 9:
                break
            time.sleep(0.5)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.decode(errors="replace")

    def served_deployment(self, name: str) -> str | None:
        """The id of `serve`'s deployment on that server, or None if it has none (or no
        answer)."""
        try:
            status, found = self.call("GET", f"/deployments/name/{FLOW}/{name}", timeout=2)
        except Unreachable:
            return None
        return str(found["id"]) if status == 200 else None

    def start(self, deployment_id: str, submission: Submission) -> dict[str, Any]:
        """Create the flow run; the served process picks it up."""
        status, run = self.call(
            "POST",
            f"/deployments/{deployment_id}/create_flow_run",
            {"parameters": submission.parameters},
        )
        if status != 201:
            raise BreachbookError(f"the Prefect server refused the run: {str(run)[:300]}")
        return dict(run)

    def follow(self, flow_run_id: str, poll_seconds: float = 0.5) -> dict[str, Any]:
        """Wait for the run to end (or to be suspended for a decision); returns it."""
        while True:
            _status, run = self.call("GET", f"/flow_runs/{flow_run_id}")
            if run["state"]["type"] in ENDED:
                return dict(run)
            time.sleep(poll_seconds)


def run_folder(settings: Settings, flow_run_id: str) -> Path | None:
    """The folder a served run wrote: runs/INCIDENT/RUN, RUN from the flow run's id."""
    run_id = flow_run_id.replace("-", "")[:12]
    found = sorted((settings.home / "runs").glob(f"*/{run_id}"))
    return found[0] if found else None
