"""A LIVE run of the demo incident in a process of its own, for tests that kill it or run two
at once. Letters go to a mail adapter that appends each letter's key and Message-ID to a
shared log with one O_APPEND write (what a recording mail server would see): a lost letter,
or one sent as two different messages, shows in the log, and a killed process loses nothing
it wrote.

    python -m tests.e2e.live_process HOME RUN_ID SEND_LOG [SECONDS_PER_LETTER]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from breachbook.engine import Status
from breachbook.modes import Mode
from breachbook.ports import ApprovalRequest, Check, Decision, DecisionStatus, OutgoingLetter
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import Adapters, RunRequest, demo_settings
from tests.fakes import RecordingChat, RecordingCloud, RecordingDatabaseAdmin, RecordingPublisher

INCIDENT = "demo-2026-antiques-leak"


class AppendingMail:
    def __init__(self, log: Path, seconds_per_letter: float) -> None:
        self._fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._pause = seconds_per_letter

    def describe(self) -> str:
        return "appending mail log"

    def check_can_send(self) -> Check:
        return Check.verified("log open", "test")

    def parallel_sends(self) -> int:
        return 1

    def send(self, letter: OutgoingLetter) -> str:
        """Accepted first, answered after a pause: a kill in the pause leaves a letter sent
        whose outcome the ledger never heard, the case exactly-once must survive."""
        os.write(self._fd, f"{letter.key} {letter.message_id}\n".encode())
        time.sleep(self._pause)
        return letter.key


class Granted:
    def check_can_ask(self, request: ApprovalRequest) -> Check:
        return Check.verified("granted in advance by the test", "test")

    def decide(self, request: ApprovalRequest) -> Decision:
        return Decision(
            step_id=request.step_id,
            role=request.gate.role,
            status=DecisionStatus.GRANTED,
            by="test",
        )


def main(home: Path, run_id: str, log: Path, seconds_per_letter: float) -> int:
    """The run's outcome as the exit code, with every entry that did not end done on
    stderr: a test that sees a non-zero code also sees why."""
    settings = demo_settings(Settings(home=home), home / "demo" / "customers.sqlite", home / "demo")
    _, result = execute(
        RunRequest(
            mode=Mode.LIVE,
            incident_file=home / "demo" / "incident.yaml",
            confirm_incident_id=INCIDENT,
            run_id=run_id,
        ),
        settings=settings,
        adapters=Adapters(
            mail=AppendingMail(log, seconds_per_letter),
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
    pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), pause))
