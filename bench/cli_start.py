"""Benchmark: how soon `breachbook drill` starts the playbook, on a running `breachbook serve`
versus in-process (Prefect's temporary server), measured in the same run.

Starts `breachbook serve` (its own Prefect server) on a small demo world, then runs
`breachbook drill --incident INCIDENTS/antiques-leak.yaml` as a user does, --runs times each
way, one after the other:

- served (PREFECT_API_URL names serve's server): command start until the flow run exists on
  the server (its `created` time), and until the run's folder appears (the playbook started);
- in-process (no PREFECT_API_URL): command start until the run's folder appears.

The folder is made by the run's first step on either path, so the two last figures compare
like with like. Median of each, and the ratio.

Baselines, measured between the served runs in the same run (a loaded machine slows
everything alike): `python -c pass` (the interpreter's start) and `python -c "import httpx"`
(the start of the smallest Python HTTP client one could write). The served command's figure
is also given as a multiple of the second.

    python bench/cli_start.py [--runs 3] [--in-process-runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from breachbook.demo import ensure_demo_world


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _runs(home: Path) -> set[Path]:
    return set((home / "runs").glob("*/*"))


def _drill(env: dict[str, str], incident: Path, home: Path) -> tuple[float, float, Path]:
    """Run one drill; returns (wall start, seconds to its folder, the folder)."""
    before = _runs(home)
    wall, started = time.time(), time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "breachbook.cli", "drill", "--incident", str(incident)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    folder_seconds, folder = 0.0, None
    while folder is None:
        new = _runs(home) - before
        if new:
            folder_seconds, folder = time.perf_counter() - started, new.pop()
        elif process.poll() is not None:
            raise SystemExit(f"drill ended with {process.returncode} before its folder appeared")
        time.sleep(0.02)
    # 0 or 1: the run ended with its report. Its verdicts are not measured here (with no
    # mail connector or approvers configured, delivering letters FAILS: exit 1).
    if process.wait(timeout=600) not in (0, 1):
        raise SystemExit(f"drill ended with {process.returncode}")
    return wall, folder_seconds, folder


def _seconds(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    return time.perf_counter() - started


def main() -> None:  # noqa: PLR0915 (one measured scenario, read top to bottom)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--in-process-runs", type=int, default=None, help="default: --runs")
    arguments = parser.parse_args()
    runs = arguments.runs
    in_process_runs = runs if arguments.in_process_runs is None else arguments.in_process_runs
    scratch = Path(tempfile.mkdtemp(prefix="bench-cli-start-"))
    world = ensure_demo_world(scratch / "world", size=200)
    home = scratch / "home"
    (home / "incidents").mkdir(parents=True)
    incident = home / "incidents" / "antiques-leak.yaml"
    incident.write_bytes(world.incident_file.read_bytes())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BREACHBOOK_"))}
    env |= {
        "PREFECT_HOME": str(scratch / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "BREACHBOOK_HOME": str(home),
        "BREACHBOOK_CUSTOMERS_URL": f"sqlite:///{world.customers_db}",
        "BREACHBOOK_PREFECT_PORT": str(port),
    }
    api = f"http://127.0.0.1:{port}/api"
    serve = subprocess.Popen(
        [sys.executable, "-m", "breachbook.cli", "serve"],
        env=env,
        stdout=(scratch / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{api}/deployments/name/breachbook-response/drill").is_success:
                    break
            except httpx.TransportError:
                pass
            if serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start; see {scratch / 'serve.log'}")
            time.sleep(0.5)
        served_created, served_folder, local_folder = [], [], []
        python_start: list[float] = []
        httpx_start: list[float] = []
        for _ in range(runs):
            python_start.append(_seconds([sys.executable, "-c", "pass"], env))
            httpx_start.append(_seconds([sys.executable, "-c", "import httpx"], env))
            wall, seconds, folder = _drill(env | {"PREFECT_API_URL": api}, incident, home)
            flow_run = httpx.post(
                f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 1}
            ).json()[0]
            assert flow_run["id"].replace("-", "")[:12] == folder.name, (flow_run, folder)
            created = datetime.fromisoformat(flow_run["created"]).timestamp()
            served_created.append(created - wall)
            served_folder.append(seconds)
        for _ in range(in_process_runs):
            _wall, seconds, _folder = _drill(env, incident, home)
            local_folder.append(seconds)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    created_s = statistics.median(served_created)
    served_s = statistics.median(served_folder)
    python_s, httpx_s = statistics.median(python_start), statistics.median(httpx_start)

    def shown(values: list[float]) -> str:
        return "[" + ", ".join(f"{value:.2f}" for value in values) + "]"

    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"baseline: python -c pass                    median {python_s:6.3f} s  {shown(python_start)}"
    )
    print(
        f"baseline: python -c 'import httpx'          median {httpx_s:6.3f} s  {shown(httpx_start)}"
    )
    print(
        f"served: command start to flow run created   median {created_s:6.3f} s  {shown(served_created)}"
    )
    print(
        f"served: command start to the run's folder   median {served_s:6.3f} s  {shown(served_folder)}"
    )
    print(f"served (to created) / import httpx: {created_s / httpx_s:.2f}x")
    if local_folder:
        local_s = statistics.median(local_folder)
        print(
            f"in-process: command start to the run's folder median {local_s:6.3f} s  {shown(local_folder)}"
        )
        print(f"in-process / served (to the folder): {local_s / served_s:.1f}x")


if __name__ == "__main__":
    main()
