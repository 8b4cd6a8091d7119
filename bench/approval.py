"""Benchmark: from an approval submitted in Prefect to the paused step running again.

Starts `prefect server start` on a free loopback port and runs, in this process, a flow whose
task waits the way a gated step does (`PrefectPauses.wait`: `pause_flow_run` with the
ApprovalForm and its description) --samples times in a row. For each pause, the main thread
waits until the flow run is Paused, submits an answer as `breachbook approve` does
(`submit_answer`: Prefect's `resume_flow_run(run_input=...)`) and notes the time; the task
notes when `wait` returned the answer. The figure is the difference: median, p95 and max,
for each poll interval given (BREACHBOOK_APPROVAL_POLL_SECONDS; Prefect's own default is 10).

Baseline, measured in the same run: Prefect's bare `pause_flow_run` (no form description,
no answer conversion) with the same poll interval, so the ratio shows what the adapter adds.

    python bench/approval.py [--samples 7] [--polls 1,2,10]
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
from pathlib import Path

import httpx

PREFECT_SERVER = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(scratch / "server-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    log = (scratch / "server.log").open("wb")
    server = subprocess.Popen(
        [*PREFECT_SERVER, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return server, api
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((scratch / "server.log").read_text()[-2000:])
        time.sleep(0.5)


def measure(api: str, samples: int, poll: int, bare: bool) -> list[float]:
    """Seconds from each answer submitted to the waiting task running again."""
    from prefect import flow, task
    from prefect.flow_runs import pause_flow_run

    from breachbook.connectors.prefect_pauses import ApprovalForm, PrefectPauses, submit_answer
    from breachbook.ports import Answer

    resumed: list[float] = []
    submitted: list[float] = []
    flow_run_ids: list[str] = []

    @task(persist_result=False)
    def gated_step(flow_run_id: str) -> None:
        pauses = PrefectPauses(flow_run_id, poll)
        for n in range(samples):
            if bare:
                pause_flow_run(
                    wait_for_input=ApprovalForm, timeout=600, poll_interval=poll, key=f"b{n}"
                )
            else:
                answer = pauses.wait("## Approve: bench step\n\n- `t`: would do", f"s{n}", 600)
                assert answer is not None and answer.approve
            resumed.append(time.perf_counter())

    @flow(persist_result=False)
    def paused_flow() -> None:
        from prefect.runtime import flow_run

        flow_run_ids.append(str(flow_run.id))
        gated_step(str(flow_run.id))

    runner = threading.Thread(target=paused_flow)
    runner.start()
    for n in range(samples):
        while not flow_run_ids:
            time.sleep(0.05)
        run_id = flow_run_ids[0]
        while httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]["type"] != "PAUSED":
            time.sleep(0.05)
        while len(resumed) < n:
            time.sleep(0.05)
        submitted.append(time.perf_counter())
        assert submit_answer(run_id, Answer(approve=True, approver="bench", comment=""))
        while len(resumed) <= n:
            time.sleep(0.01)
    runner.join()
    return [after - before for before, after in zip(submitted, resumed, strict=True)]


def report(name: str, seconds: list[float]) -> float:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = statistics.median(ordered)
    print(f"{name:<34} median {median:6.2f} s  p95 {p95:6.2f} s  max {ordered[-1]:6.2f} s")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--polls", default="1,2,10")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-approval-") as folder:
        scratch = Path(folder)
        server, api = start_server(scratch)
        os.environ |= {
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(scratch / "client-home"),
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        try:
            print(f"{args.samples} approvals per row, Prefect server on loopback, 2 cores")
            for poll in [int(p) for p in args.polls.split(",")]:
                ours = report(
                    f"PrefectPauses, poll {poll} s", measure(api, args.samples, poll, False)
                )
                bare = report(
                    f"bare pause_flow_run, poll {poll} s", measure(api, args.samples, poll, True)
                )
                print(f"{'':<34} ratio ours/bare {ours / bare:5.2f}")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
