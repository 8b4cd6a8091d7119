"""Benchmark: the shipped 72-hour tabletop exercise from start to report.

In-process (no Prefect): the wall and CPU time of the whole exercise (scenario checked, world
generated, every event, every response round, scoring and the after-action report), split
into the response rounds (the engine and playbook through `breachbook.run.execute`, the same
work a drill or live run does), the world's generation, and what the exercise itself adds.
With --profile, the in-process exercise under cProfile (CPU time), its top functions.

With --prefect, the figure the target is set on: the `tabletop` Prefect flow in a fresh
process against an empty one-task Prefect flow in a fresh process, measured in the same run
(--repeat N times each, alternating; the quickest of each counts, as the one least slowed by
other work on the machine). Prints the total, the baseline, what the exercise costs beyond
it and its ratio to the target (under 5 s beyond the baseline), with each process's CPU
time (its own and its children's), which a loaded machine inflates far less than wall time.

    python bench/tabletop.py [--players scenarios/demo-players.yaml] [--prefect [--repeat N]]
                             [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
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


TARGET_SECONDS = 5.0
"""Issue 12's target: the exercise under Prefect in under 5 s beyond an empty flow."""


def children_cpu() -> float:
    """CPU seconds (user and system) of the waited-for child processes so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed_process(code: str, *arguments: str, home: Path) -> tuple[float, float]:
    """Wall and CPU time of a fresh Python process running `code` (CPU: its own and that of
    the children it waited for)."""
    env = {
        **os.environ,
        "BREACHBOOK_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
    }
    cpu = children_cpu()
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
    return time.perf_counter() - started, children_cpu() - cpu


def under_prefect(players: Path, repeat: int) -> None:
    """The tabletop flow against the empty flow, alternating, each in a fresh process."""
    empty: list[tuple[float, float]] = []
    flows: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-tabletop-prefect-") as tmp:
        home = Path(tmp) / "home"
        timed_process(EMPTY_FLOW, home=home)  # warms Prefect's own home and database
        for n in range(repeat):
            empty.append(timed_process(EMPTY_FLOW, home=home))
            out = str(Path(tmp) / f"out-{n}")
            flows.append(timed_process(TABLETOP_FLOW, str(players), out, home=home))
    for label, runs in (("empty one-task flow", empty), ("tabletop flow", flows)):
        listed = ", ".join(f"{w:.2f} s (CPU {c:.2f} s)" for w, c in runs)
        print(f"prefect: {label}: {listed}")
    (base_wall, base_cpu), (flow_wall, flow_cpu) = min(empty), min(flows)
    beyond, beyond_cpu = flow_wall - base_wall, flow_cpu - base_cpu
    print(f"total (the tabletop flow, quickest):  {flow_wall:7.2f} s   CPU {flow_cpu:6.2f} s")
    print(f"baseline (empty flow, quickest):      {base_wall:7.2f} s   CPU {base_cpu:6.2f} s")
    print(f"beyond the baseline:                  {beyond:7.2f} s   CPU {beyond_cpu:6.2f} s")
    print(
        f"target: under {TARGET_SECONDS:.0f} s beyond the baseline; ratio {beyond / TARGET_SECONDS:.2f} "
        f"of the target (CPU {beyond_cpu / TARGET_SECONDS:.2f}): "
        + ("met" if beyond < TARGET_SECONDS else "NOT met")
        + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    root = project_root()
    parser.add_argument("--players", type=Path, default=root / "scenarios" / "demo-players.yaml")
    parser.add_argument("--prefect", action="store_true", help="also under Prefect")
    parser.add_argument("--repeat", type=int, default=1, help="Prefect runs of each flow")
    parser.add_argument("--profile", action="store_true", help="cProfile the exercise (CPU)")
    args = parser.parse_args()
    in_process(args.players, args.profile)
    if args.prefect:
        under_prefect(args.players, args.repeat)


def in_process(players_file: Path, profiled: bool) -> None:
    """The exercise without Prefect, its response rounds and world generation timed apart."""
    root = project_root()
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
        profile = cProfile.Profile(time.process_time) if profiled else None
        started, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        players = ScriptedPlayers(load_players(players_file, loaded))
        log = run_exercise(loaded, players, folder / "out", settings, players_file.read_text())
        aar = aar_markdown(log, score(log))
        if profile is not None:
            profile.disable()
        total, cpu = time.perf_counter() - started, time.process_time() - cpu
    hours = loaded.scenario.duration.total_seconds() / 3600
    in_rounds = sum(rounds)
    world_seconds = sum(worlds)
    own = total - in_rounds - world_seconds
    print(
        f"exercise: {hours:.0f} scenario hours, {len(loaded.scenario.injects)} injects, "
        f"{size} customers, {log.letters_sent} letters, report {len(aar):,} characters"
    )
    print(f"whole exercise, start to report:      {total:7.2f} s   CPU {cpu:6.2f} s")
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
    if profile is not None:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(40)
        print(text.getvalue())


if __name__ == "__main__":
    main()
