"""Benchmark: the shipped 72-hour tabletop exercise from start to report, without Prefect.

Prints the wall time of the whole exercise (scenario checked, world generated, every event,
every response round, scoring and the after-action report), and splits it: the response
rounds (the engine and playbook through `breachbook.run.execute`, the same work a drill or
live run does), the world's generation, and what the exercise itself adds (events, ledger
entries, scoring, report). As a baseline measured in the same run: one response round alone
(the first, which does the most). Also the compression: scenario hours per wall second.
With --prefect, also the same exercise as the `tabletop` Prefect flow in a fresh process
against an empty one-task Prefect flow, so Prefect's own start-up shows separately.

    python bench/tabletop.py [--players scenarios/demo-players.yaml] [--prefect]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import breachbook.demo as demo_module
import breachbook.run as run_module
import breachbook.tabletop.exercise as exercise_module
from breachbook.settings import Settings, project_root
from breachbook.tabletop.exercise import run_exercise
from breachbook.tabletop.players import ScriptedPlayers
from breachbook.tabletop.report import aar_markdown
from breachbook.tabletop.scenario import load_players, load_scenario
from breachbook.tabletop.scoring import score

EMPTY_FLOW = """
from prefect import flow, task
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

@task
def step() -> int:
    return 1

@flow
def empty() -> int:
    return step()

with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
    empty()
"""

TABLETOP_FLOW = """
import sys
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from flows.tabletop import tabletop

with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
    tabletop(players=sys.argv[1], out_dir=sys.argv[2])
"""


def wall(code: str, *arguments: str, home: Path) -> float:
    """Wall time of a fresh Python process running `code`."""
    env = {
        **os.environ,
        "BREACHBOOK_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *arguments],
        check=False,
        env=env,
        cwd=project_root(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"a Prefect run failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    root = project_root()
    parser.add_argument("--players", type=Path, default=root / "scenarios" / "demo-players.yaml")
    parser.add_argument("--prefect", action="store_true", help="also under Prefect")
    args = parser.parse_args()
    rounds: list[float] = []
    worlds: list[float] = []
    real_execute = run_module.execute
    real_world = demo_module.ensure_demo_world

    def timed_execute(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return real_execute(*a, **k)
        finally:
            rounds.append(time.perf_counter() - started)

    def timed_world(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return real_world(*a, **k)
        finally:
            worlds.append(time.perf_counter() - started)

    with (
        patch.object(exercise_module, "execute", timed_execute),
        patch.object(exercise_module, "ensure_demo_world", timed_world),
        tempfile.TemporaryDirectory(prefix="bench-tabletop-") as tmp,
    ):
        folder = Path(tmp)
        settings = Settings(home=folder / "home")
        loaded = load_scenario(root / "scenarios" / "antique-dealer-breach.yaml", root)
        size = loaded.scenario.world.customers.generated or 10_000
        started = time.perf_counter()
        players = ScriptedPlayers(load_players(args.players, loaded))
        log = run_exercise(loaded, players, folder / "out", settings, args.players.read_text())
        aar = aar_markdown(log, score(log))
        total = time.perf_counter() - started
    hours = loaded.scenario.duration.total_seconds() / 3600
    in_rounds = sum(rounds)
    world_seconds = sum(worlds)
    own = total - in_rounds - world_seconds
    print(
        f"exercise: {hours:.0f} scenario hours, {len(loaded.scenario.injects)} injects, "
        f"{size} customers, {log.letters_sent} letters, report {len(aar):,} characters"
    )
    print(f"whole exercise, start to report:      {total:7.2f} s")
    print(
        f"  response rounds ({len(rounds)}):               {in_rounds:7.2f} s "
        f"({', '.join(f'{r:.2f}' for r in rounds)})"
    )
    print(f"  world generation:                   {world_seconds:7.2f} s")
    print(f"  the exercise's own work:            {own:7.2f} s")
    print(
        f"baseline: the first response round:   {rounds[0]:7.2f} s; "
        f"whole exercise = {total / rounds[0]:.1f} x the first round"
    )
    print(f"compression: {hours / total:.1f} scenario hours per wall second")
    if args.prefect:
        with tempfile.TemporaryDirectory(prefix="bench-tabletop-prefect-") as tmp:
            wall(EMPTY_FLOW, home=Path(tmp) / "home")  # warms Prefect's own home and database
            empty = wall(EMPTY_FLOW, home=Path(tmp) / "home")
            flow = wall(
                TABLETOP_FLOW, str(args.players), str(Path(tmp) / "out"), home=Path(tmp) / "home"
            )
        print(
            f"prefect: empty one-task flow {empty:.2f} s; tabletop flow {flow:.2f} s; "
            f"beyond the empty flow {flow - empty:.2f} s"
        )


if __name__ == "__main__":
    main()
