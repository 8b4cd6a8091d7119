"""Benchmark: how the drill's core scales with the number of customers, in time and memory.

Runs the playbook without Prefect (the core, as the flow calls it) in a fresh process for each
size, on synthetic worlds of 10,000 (the baseline, measured in the same run) and N customers,
and prints each run's time per phase, letters per second and peak resident memory. Worlds are
built once under $BREACHBOOK_HOME/bench and reused. Output goes to /dev/shm where it exists,
so the figures are breachbook's and not the disk's.

    python bench/scale.py [--customers 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from breachbook.demo import DemoWorld, demo_incident_yaml, ensure_demo_world
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, demo_settings

BASELINE = 10_000


def world_of(size: int) -> DemoWorld:
    return ensure_demo_world(Settings().home / "bench" / f"world-{size}", size=size)


def run_once(size: int, out_root: Path) -> dict[str, float]:
    """One drill of the core on a world of `size` customers (already built), in this process."""
    world = world_of(size)
    settings = demo_settings(Settings(), world.customers_db, world.folder)
    started = time.perf_counter()
    _, result = execute(
        RunRequest(
            mode=Mode.DRILL,
            incident_yaml=demo_incident_yaml(datetime.now(UTC)),
            out_dir=out_root / "drill",
        ),
        settings=settings,
    )
    figures = {"seconds": time.perf_counter() - started}
    for step in result.steps:
        figures[step.phase] = figures.get(step.phase, 0.0) + (
            (step.finished_at - step.started_at).total_seconds()
        )
        if step.step_id == "render-letters":
            figures["letters"] = step.counts["letters"]
            figures["render_seconds"] = (step.finished_at - step.started_at).total_seconds()
    figures["peak_rss_mb"] = peak_rss_mb()
    return figures


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM, because ru_maxrss carries over
    the parent's peak through fork and exec."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(size: int) -> dict[str, float]:
    """Run one size in a fresh process, so peak memory is that run's alone."""
    ram = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=ram if ram.is_dir() else None) as scratch:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(size), "--out", scratch],
            check=True,
            capture_output=True,
            text=True,
        )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_once(args.one, args.out)))
        return
    sizes = (BASELINE, args.customers)
    for size in sizes:
        world_of(size)  # built here, so no run's time or memory includes building it
    runs = {size: measure(size) for size in sizes}
    base = runs[BASELINE]
    print(
        f"{'customers':>10} {'seconds':>8} {'notify':>8} {'letters':>8} {'letters/s':>10} {'peak MB':>8}"
    )
    for size, figures in runs.items():
        print(
            f"{size:>10,} {figures['seconds']:8.2f} {figures['notify']:8.2f} "
            f"{figures['letters']:>8,.0f} {figures['letters'] / figures['render_seconds']:10,.0f} "
            f"{figures['peak_rss_mb']:8.0f}"
        )
    large = runs[args.customers]
    factor = args.customers / BASELINE
    print(
        f"{factor:.0f}x the customers: {large['seconds'] / base['seconds']:.1f}x the time, "
        f"{large['peak_rss_mb'] / base['peak_rss_mb']:.2f}x the peak memory"
    )


if __name__ == "__main__":
    main()
