"""Benchmark: the demo drill of 10,000 customers, end to end, as a user runs it.

Prints the wall time of `breachbook drill --demo` (Prefect start-up included), the time of
each phase, letters per second, and, as baselines measured in the same run: the wall time
of an empty Prefect flow with one task (Prefect's own start-up and teardown, which breachbook
cannot shorten), and the raw jinja2 render rate of the same letter templates for the same
customers (plain Environment, contexts prepared beforehand), alone and with one file written
per letter. Where /dev/shm exists it also runs the core without Prefect with its output on
that RAM disk, which separates breachbook's own cost from this disk's.

    python bench/drill_demo.py [--fresh-prefect-home]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from breachbook.connectors.customers_sql import SqlCustomerDirectory, sqlite_url
from breachbook.demo import DemoWorld, demo_incident_yaml, ensure_demo_world
from breachbook.models import Customer, Incident
from breachbook.modes import Mode
from breachbook.notify import LetterWriter, Obligations, iter_valid_customers
from breachbook.playbook import load_playbook
from breachbook.rules import RuleBook
from breachbook.run import execute
from breachbook.settings import Settings, project_root
from breachbook.templates import Renderer
from breachbook.wiring import RunRequest, demo_settings

TARGET_SECONDS = 60.0


def timed(arguments: list[str], env: dict[str, str]) -> float:
    """Wall time of a Python process run with these arguments."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *arguments],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


# A one-task Prefect flow, run as the CLI runs the drill (heartbeats off): the floor under any
# drill, Prefect's own start-up and teardown.
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


def raw_render_rate(world_db: Path, incident_file: Path, scratch: Path) -> tuple[int, float, float]:
    """Letters per second of plain jinja2 on the same templates and customers, without and
    with writing each letter to its own file (the file system's share of the cost)."""
    root = project_root()
    incident = Incident.from_file(incident_file)
    rules = RuleBook.load(root / "rules" / "obligations.yaml")
    playbook = load_playbook(root / "playbooks" / "customer-data-breach.yaml", root / "templates")
    writer = LetterWriter(
        Renderer(root / "templates"), playbook.organisation, incident, incident.discovered_at
    )
    obligations = Obligations(rules, incident)
    directory = SqlCustomerDirectory(sqlite_url(world_db, read_only=True), read_only=True)
    jobs: list[tuple[str, dict[str, object]]] = []
    customers: list[Customer] = list(iter_valid_customers(directory, incident, []))
    directory.close()
    renderer = Renderer(root / "templates")
    for person in customers:
        for rule in obligations.for_customer(person):
            assert rule.letter is not None
            name = renderer.pick_locale(
                f"letters/{rule.letter.template}", person.locale, rule.letter.default_locale
            )
            language = Path(name).name.removesuffix(".txt.j2")
            context = writer.context(person, rule, obligations.exposed_for(person), language)
            jobs.append((name, context))
    env = Environment(
        loader=FileSystemLoader(str(root / "templates")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    templates = {name: env.get_template(name) for name, _ in jobs}
    started = time.perf_counter()
    for name, context in jobs:
        templates[name].render(context)
    render_only = len(jobs) / (time.perf_counter() - started)
    folder = scratch / "raw-letters"
    folder.mkdir()
    started = time.perf_counter()
    for number, (name, context) in enumerate(jobs):
        (folder / f"{number}.txt").write_text(templates[name].render(context), encoding="utf-8")
    return len(jobs), render_only, len(jobs) / (time.perf_counter() - started)


def core_on_ram_disk(world: DemoWorld) -> tuple[float, float] | None:
    """(playbook seconds, render-letters seconds) of the core run in this process, without
    Prefect, writing its documents to /dev/shm; None where there is no such RAM disk."""
    ram = Path("/dev/shm")
    if not ram.is_dir():
        return None
    settings = demo_settings(Settings(), world.customers_db, world.folder)
    with tempfile.TemporaryDirectory(dir=ram) as scratch:
        request = RunRequest(
            mode=Mode.DRILL,
            incident_yaml=demo_incident_yaml(datetime.now(UTC)),
            out_dir=Path(scratch) / "drill",
        )
        _, result = execute(request, settings=settings)
    seconds = {
        step.step_id: (step.finished_at - step.started_at).total_seconds() for step in result.steps
    }
    return sum(seconds.values()), seconds["render-letters"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fresh-prefect-home",
        action="store_true",
        help="start Prefect on an empty PREFECT_HOME (first run after install)",
    )
    args = parser.parse_args()
    env = dict(
        os.environ,
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    baseline_env = dict(env)
    with tempfile.TemporaryDirectory() as scratch:
        if args.fresh_prefect_home:
            env["PREFECT_HOME"] = str(Path(scratch) / "prefect-home")
            baseline_env["PREFECT_HOME"] = str(Path(scratch) / "prefect-home-baseline")
        world = ensure_demo_world(Settings().home / "demo")
        out = Path(scratch) / "drill"
        empty_flow = timed(["-c", EMPTY_FLOW], baseline_env)
        wall = timed(["-m", "breachbook.cli", "drill", "--demo", "--out", str(out)], env)
        plan = json.loads((out / "plan.json").read_text())
        raw_letters, raw_rate, raw_write_rate = raw_render_rate(
            world.customers_db, out / "incident.yaml", Path(scratch)
        )
        on_ram_disk = core_on_ram_disk(world)
    phases: dict[str, float] = {}
    for step in plan["steps"]:
        phases[step["phase"]] = phases.get(step["phase"], 0.0) + step["seconds"]
    render = next(s for s in plan["steps"] if s["step_id"] == "render-letters")
    letters = render["counts"]["letters"]
    letters_per_second = letters / render["seconds"]
    run_seconds = sum(phases.values())
    print(f"demo drill, {plan['entries'] and len(plan['entries'])} actions, {letters:,} letters")
    print(
        f"wall time (Prefect start-up included): {wall:6.2f} s  (target < {TARGET_SECONDS:.0f} s: "
        f"{'met' if wall < TARGET_SECONDS else 'MISSED'})"
    )
    print(
        f"playbook run time:                     {run_seconds:6.2f} s  (Prefect start-up and teardown: {wall - run_seconds:.2f} s)"
    )
    print(
        f"empty Prefect flow, one task (baseline):  {empty_flow:6.2f} s  (drill / empty flow: "
        f"{wall / empty_flow:.2f}; drill minus empty flow: {wall - empty_flow:.2f} s)"
    )
    for phase, seconds in phases.items():
        print(f"  phase {phase:<12} {seconds:7.3f} s")
    print(f"letters per second (render, check, write, DRILL mark): {letters_per_second:9,.0f}")
    print(
        f"raw jinja2 render rate, same templates and customers:  {raw_rate:9,.0f} ({raw_letters:,} letters)"
    )
    print(f"raw jinja2 render + one file per letter:                {raw_write_rate:9,.0f}")
    print(
        f"ratio breachbook / raw render: {letters_per_second / raw_rate:.3f}; "
        f"breachbook / raw render + write: {letters_per_second / raw_write_rate:.2f}"
    )
    if on_ram_disk is not None:
        total, rendering = on_ram_disk
        print(
            f"core without Prefect, output on /dev/shm: playbook {total:.2f} s, "
            f"letters per second {letters / rendering:,.0f} "
            f"(ratio to raw render: {letters / rendering / raw_rate:.3f})"
        )


if __name__ == "__main__":
    main()
