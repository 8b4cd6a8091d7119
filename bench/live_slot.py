"""Benchmark: how long Prefect takes to grant a free LIVE slot, which decides
BREACHBOOK_LIVE_WAIT_SECONDS (breachbook.live_lock).

Starts `prefect server start` (SQLite, as `breachbook serve` does) and takes a new incident's
slot --runs times through `one_live_response` (making the limit, then the strict acquire),
first alone, then while --others threads keep taking and giving back slots of other
incidents. Baseline in the same run: a GET of the server's /health. Median, p95 and the
longest of each; a wait shorter than the longest refuses a LIVE response that should run.

    python bench/live_slot.py [--runs 30] [--others 8]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

PREFECT_SERVER = (sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1")
WAIT = 600.0
"""Long enough that no take is refused: what is measured is how long granting takes."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<44} median {statistics.median(values):6.3f} s   "
        f"p95 {percentile(values, 0.95):6.3f} s   max {max(values):6.3f} s   (n={len(values)})"
    )


def timed(work: Callable[[], object], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:  # noqa: PLR0915 (one measured scenario, read top to bottom)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--others", type=int, default=8, help="threads taking other slots")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-live-slot-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = os.environ | {
        "PREFECT_HOME": str(scratch / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    with (scratch / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [*PREFECT_SERVER, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Prefect server did not start; see {scratch}/server.log")
            time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = api  # before Prefect is first imported
        from breachbook.live_lock import one_live_response

        taken = iter(range(1_000_000))

        def take(prefix: str) -> None:
            with one_live_response(f"{prefix}-{next(taken)}", wait_seconds=WAIT):
                pass

        client = httpx.Client()
        timed(lambda: take("warm"), 3)
        health = timed(lambda: client.get(f"{api}/health"), args.runs)
        alone = timed(lambda: take("alone"), args.runs)
        stop = threading.Event()

        def keep_taking(other: int) -> None:
            while not stop.is_set():
                take(f"other-{other}")

        others = [
            threading.Thread(target=keep_taking, args=(n,), daemon=True) for n in range(args.others)
        ]
        for thread in others:
            thread.start()
        time.sleep(2)
        loaded = timed(lambda: take("loaded"), args.runs)
        stop.set()
        for thread in others:
            thread.join(timeout=120)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(summary("baseline: GET /api/health", health))
    print(summary("a free slot, the server otherwise idle", alone))
    print(summary(f"a free slot, {args.others} other runs taking slots", loaded))
    ratio = statistics.median(alone) / statistics.median(health)
    print(f"free slot / health check (medians): {ratio:.0f}x")


if __name__ == "__main__":
    main()
