"""A LIVE delivery through a real SMTP server, killed with SIGKILL at random points, some
between the server's acceptance of a letter and the ledger's record of it, and resumed.

What is measured at the server, honestly: every owed letter arrives (0 lost), each under one
Message-ID (0 letters sent as two different messages). A letter in flight at a kill is sent
again with the same Message-ID, so the server may hold two copies of it: a receiving system
that keeps the Message-IDs it delivered drops the second (this test server does not, so the
copies are counted and bounded by the letters that can be claimed and unsettled at a kill)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from breachbook.actions.notify import LETTERS_PER_COMMIT
from breachbook.cli import app
from breachbook.clock import SystemClock
from breachbook.demo import ensure_demo_world
from breachbook.ledger import ItemStatus, Ledger
from tests.conftest import ROOT
from tests.integration.smtp_server import recording_relay

INCIDENT = "demo-2026-antiques-leak"
KILLS = 6
CONNECTIONS = 4
RUN_ID = "run0smtpkill1"


def test_smtp_delivery_killed_at_random_points_loses_none_and_sends_each_letter_as_one_message(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    ensure_demo_world(home / "demo", size=1200)
    seed = int(time.time())
    chance = random.Random(seed)
    command = [sys.executable, "-m", "tests.integration.smtp_process", str(home), RUN_ID]
    with recording_relay(tmp_path) as relay:
        env = {
            **os.environ,
            **relay.env(),
            "BREACHBOOK_HOME": str(home),
            "BREACHBOOK_SMTP_CONNECTIONS": str(CONNECTIONS),
        }
        received = relay.recorder.messages
        for kill in range(KILLS):
            # a random number of letters more (10-90), then a random moment (0-20 ms): with
            # four letters in flight, a kill often lands after the server took one and
            # before the ledger heard of it
            target = len(received) + chance.randint(10, 90)
            process = subprocess.Popen(command, cwd=ROOT, env=env)
            deadline = time.monotonic() + 240
            while len(received) < target:
                assert process.poll() is None, f"seed {seed}: run ended before kill {kill + 1}"
                assert time.monotonic() < deadline, f"seed {seed}: no progress"
                time.sleep(0.001)
            time.sleep(chance.uniform(0.0, 0.02))
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        killed_at = len(received)
        last = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        assert last.returncode in (0, 1), last.stderr
        copies = relay.recorder.by_key()

    ledger = Ledger(f"sqlite:///{home / 'ledger.sqlite'}", SystemClock(), create=False)
    items = ledger.item_statuses(INCIDENT, "letters.deliver")
    assert ledger.verify() == []
    ledger.close()
    owed = {
        f"{path.stem}/{cid}"
        for path in (home / "run" / "recipients").glob("*.txt")
        for cid in path.read_text().split()
    }
    assert len(owed) > 1000 and 0 < killed_at < len(owed), f"seed {seed}"
    assert set(items.values()) == {ItemStatus.DONE}, f"seed {seed}: letters left unsettled"
    lost = owed - set(copies)
    assert not lost, f"seed {seed}: {len(lost)} letters lost"
    assert set(copies) == owed == set(items)
    two_messages = [k for k, got in copies.items() if len({str(m["Message-ID"]) for m in got}) > 1]
    assert not two_messages, f"seed {seed}: sent as different messages: {two_messages[:5]}"
    resent = sum(len(got) - 1 for got in copies.values())
    assert resent <= KILLS * 3 * LETTERS_PER_COMMIT, f"seed {seed}: {resent} copies"

    status = CliRunner().invoke(
        app, ["letters", "status", "--run", str(home / "run")], env={"BREACHBOOK_HOME": str(home)}
    )
    assert status.exit_code == 0, status.output
    assert f"sent {len(owed)}, failed 0, unknown 0, unsent 0" in status.output
    print(  # figures for the report: pytest -s shows them
        f"seed {seed}: {KILLS} kills, {len(owed)} letters, 0 lost, each under one Message-ID; "
        f"{resent} resent with the same Message-ID (copies a receiving side drops)"
    )
