"""A drill killed mid-run leaves a folder that says so and a ledger that still verifies; the
next run into the same folder completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.demo import ensure_demo_world
from tests.conftest import ROOT

DRILL = """
import sys
from pathlib import Path
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, demo_settings
home, out = Path(sys.argv[1]), Path(sys.argv[2])
settings = demo_settings(Settings(home=home), home / "demo" / "customers.sqlite", home / "demo")
execute(RunRequest(mode=Mode.DRILL, incident_file=home / "demo" / "incident.yaml", out_dir=out), settings=settings)
"""


def test_killed_drill_is_marked_incomplete_and_can_be_run_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ensure_demo_world(home / "demo")
    out = tmp_path / "out"
    command = [sys.executable, "-c", DRILL, str(home), str(out)]
    process = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 60
    letters = out / "letters"
    while not (letters.is_dir() and any(letters.rglob("*.txt"))):
        assert process.poll() is None, "the drill ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    assert (out / "RUN-INCOMPLETE.txt").is_file()
    assert not (out / "report.md").exists()
    verified = CliRunner().invoke(app, ["audit", "verify", "--run", str(out)])
    assert verified.exit_code == 0, verified.output

    subprocess.run(command, cwd=ROOT, check=True)
    assert not (out / "RUN-INCOMPLETE.txt").exists()
    assert (out / "report.md").is_file()
