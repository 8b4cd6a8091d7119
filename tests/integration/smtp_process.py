"""A LIVE run of the demo incident in a process of its own, its letters sent through the
SMTP relay the BREACHBOOK_SMTP_* environment names (the real wiring builds the adapter), for
the test that kills it.

    python -m tests.integration.smtp_process HOME RUN_ID
"""

from __future__ import annotations

import sys
from pathlib import Path

from breachbook.engine import Status
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import Adapters, RunRequest, demo_settings
from tests.e2e.live_process import INCIDENT, Granted
from tests.fakes import RecordingChat, RecordingCloud, RecordingDatabaseAdmin, RecordingPublisher


def main(home: Path, run_id: str) -> int:
    """The run's outcome as the exit code; every entry not done on stderr."""
    settings = demo_settings(Settings(home=home), home / "demo" / "customers.sqlite", home / "demo")
    _, result = execute(
        RunRequest(
            mode=Mode.LIVE,
            incident_file=home / "demo" / "incident.yaml",
            confirm_incident_id=INCIDENT,
            run_id=run_id,
            out_dir=home / "run",
        ),
        settings=settings.model_copy(update={"outbox": None}),
        adapters=Adapters(
            approvals=Granted(),
            database=RecordingDatabaseAdmin(),
            cloud=RecordingCloud(),
            chat=RecordingChat(),
            publisher=RecordingPublisher(),
        ),
    )
    for entry in result.entries():
        if entry.status not in (Status.COMPLETED, Status.ALREADY_DONE):
            print(f"{entry.step_id} {entry.target}: {entry.status.value}", file=sys.stderr)
    return int(result.outcome())


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
