"""A LIVE run of the demo incident in a process of its own, its letters sent through the
SMTP relay the BREACHBOOK_SMTP_* environment names (the real wiring builds the adapter), for
the test that kills it. With `--prefect`, the run is a flow run on the Prefect server
PREFECT_API_URL names, each step and each letter batch a task run (flows/response.py's
runners), of the notify phase alone: one worker of the test that runs two at once.

    python -m tests.integration.smtp_process HOME RUN_ID [--prefect]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from breachbook.batches import BatchRunner, run_batches_here
from breachbook.engine import Status, StepRunner, run_directly
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import Adapters, RunRequest, demo_settings
from tests.e2e.live_process import INCIDENT, Granted
from tests.fakes import RecordingChat, RecordingCloud, RecordingDatabaseAdmin, RecordingPublisher

ROOT = Path(__file__).parents[2]


def notify_only(home: Path) -> Path:
    """The notify phase of tests/data/notices/notify.yaml under the reference playbook's
    organisation (its identity-theft offer for California's letters)."""
    phases = yaml.safe_load((ROOT / "tests" / "data" / "notices" / "notify.yaml").read_text())
    reference = yaml.safe_load((ROOT / "playbooks" / "customer-data-breach.yaml").read_text())
    target = home / "notify-only.yaml"
    target.write_text(yaml.safe_dump(phases | {"organisation": reference["organisation"]}))
    return target


def main(
    home: Path,
    run_id: str,
    runner: StepRunner = run_directly,
    batches: BatchRunner | None = None,
    playbook: Path | None = None,
) -> int:
    """The run's outcome as the exit code; every entry not done on stderr."""
    settings = demo_settings(Settings(home=home), home / "demo" / "customers.sqlite", home / "demo")
    _, result = execute(
        RunRequest(
            mode=Mode.LIVE,
            incident_file=home / "demo" / "incident.yaml",
            confirm_incident_id=INCIDENT,
            run_id=run_id,
            out_dir=home / ("run" if batches is None else run_id),
            playbook_file=playbook,
        ),
        runner=runner,
        batches=batches or run_batches_here,
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


def on_prefect(home: str, run_id: str) -> int:
    """`main` as a flow run: its parameters are a folder and a run id, nothing else."""
    from flows.response import PrefectSteps, batch_runner
    from prefect import flow

    def worker(home: str, run_id: str) -> int:
        batches = batch_runner(Settings())
        return main(Path(home), run_id, PrefectSteps(), batches, notify_only(Path(home)))

    return flow(name="breachbook-delivery-worker", persist_result=False)(worker)(home, run_id)


if __name__ == "__main__":
    if sys.argv[3:] == ["--prefect"]:
        sys.exit(on_prefect(sys.argv[1], sys.argv[2]))
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
