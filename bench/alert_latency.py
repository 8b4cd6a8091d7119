"""Benchmark: from an alert's HTTP request to the first containment action, over 50 alerts.

Starts `breachbook serve` as a user does (its own Prefect server, the receiver, the served
deployments) on a small demo world, with a rule that sends each alert to a LIVE response, and
posts 50 Alertmanager alerts (each a new incident), one every 2 s. For each alert it reports:

- ack: the request until the 202 (the alert recorded and anchored in the ledger);
- first containment: the request until the ledger's claim of the first containment step,
  made by the receiver's in-process containment (breachbook.containment). No containment
  adapter is configured here (they are built separately), so the claim, taken just before an
  adapter would be called, is the moment measured;
- Prefect start, queueing included (at most --limit served runs at once; served runs play the containment cut of the playbook, so that 50 of them,
  each a new Python process, fit on two cores): the served run's creation until Prefect marks it Running (the runner's poll
  and a new Python process), and the request until then: what containment would wait for if
  it ran only on the served deployment.

Median and p95 of each. Target: first containment p95 under 1 s.

The containment figures are printed as soon as every alert's first claim is found; the
served runs are then waited for at most --served-wait seconds (on a loaded machine 50 of them
can take longer than that to start: the figure then says how many had).

    python bench/alert_latency.py [--alerts 50] [--every 2.0] [--limit 2] [--served-wait 600]
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
from typing import Any

import httpx
import yaml

from breachbook.clock import SystemClock
from breachbook.containment import first_phase
from breachbook.demo import ensure_demo_world
from breachbook.inputs import PLAYBOOK, load_yaml, read_text
from breachbook.ledger import Ledger
from breachbook.serve import DEPLOYMENTS
from breachbook.settings import project_root

TOKEN = "bench-token"
TARGET_SECONDS = 1.0
RULES = """
rules:
  - name: db-export
    match: {source: alertmanager, alertname: CustomerDbExport}
    mode: live
    playbook: customer-data-breach
    incident:
      title: "Unusual export from {labels.instance}"
      database_role: "{labels.role}"
"""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<44} no samples"
    return (
        f"{name:<44} median {statistics.median(values):6.3f} s   "
        f"p95 {percentile(values, 0.95):6.3f} s   (n={len(values)})"
    )


def wait_until(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def light_content(folder: Path) -> Path:
    """The project's content with the reference playbook cut to its containment phase, so
    the 50 served runs (each a new Python process) fit on two cores; containment and
    Prefect's start are the same as with the whole playbook."""
    root = project_root()
    folder.mkdir(parents=True)
    for name in ("templates", "rules", "flows"):
        (folder / name).symlink_to(root / name)
    (folder / "playbooks").mkdir()
    source = root / "playbooks" / "customer-data-breach.yaml"
    cut = first_phase(load_yaml(read_text(source, PLAYBOOK), str(source)))
    (folder / "playbooks" / source.name).write_text(yaml.safe_dump(cut, sort_keys=False))
    return folder


def main() -> None:  # noqa: PLR0915 (one measured scenario, read top to bottom)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=50)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between alerts")
    parser.add_argument("--limit", type=int, default=2, help="served runs at once")
    parser.add_argument("--served-wait", type=float, default=600.0, help="seconds")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="alert-latency-"))
    home = scratch / "home"
    world = ensure_demo_world(scratch / "world", size=200)
    rules = scratch / "rules.yaml"
    rules.write_text(RULES)
    prefect_port, receiver_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BREACHBOOK_"))}
    env |= {
        "PREFECT_HOME": str(scratch / "prefect-home"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "BREACHBOOK_HOME": str(home),
        "BREACHBOOK_CONTENT_DIR": str(light_content(scratch / "content")),
        "BREACHBOOK_CUSTOMERS_URL": f"sqlite:///{world.customers_db}",
        "BREACHBOOK_OUTBOX": str(scratch / "outbox"),
        "BREACHBOOK_EVIDENCE_DIR": str(scratch / "evidence"),
        "BREACHBOOK_ALERT_RULES": str(rules),
        "BREACHBOOK_ALERT_TOKEN": TOKEN,
        "BREACHBOOK_PREFECT_PORT": str(prefect_port),
        "BREACHBOOK_RECEIVER_PORT": str(receiver_port),
        "BREACHBOOK_SERVE_LIMIT": str(args.limit),
    }
    api = f"http://127.0.0.1:{prefect_port}/api"
    receiver = f"http://127.0.0.1:{receiver_port}"
    log = scratch / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "breachbook.cli", "serve"],
            env=env,
            cwd=scratch,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    client = httpx.Client(timeout=30)

    def ready() -> bool:
        try:
            deployments = client.post(f"{api}/deployments/filter", json={}).json()
            served = len(deployments) == len(DEPLOYMENTS)
            return served and client.get(f"{receiver}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, 180, "breachbook serve")
        sent: dict[str, float] = {}
        acks: list[float] = []
        for n in range(args.alerts):
            body = {
                "version": "4",
                "groupKey": "bench",
                "status": "firing",
                "receiver": "breachbook",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {
                            "alertname": "CustomerDbExport",
                            "instance": f"db-{n}",
                            "role": "analytics_etl",
                        },
                        "startsAt": "2026-11-30T00:00:00Z",
                        "fingerprint": f"bench{n:04d}",
                    }
                ],
            }
            started = time.time()
            answer = client.post(
                f"{receiver}/alerts/alertmanager",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            acks.append(time.time() - started)
            assert answer.status_code == 202, answer.text
            sent[answer.json()["accepted"][0]["incident"]] = started
            time.sleep(args.every)
        ledger = Ledger(f"sqlite:///{home / 'ledger.sqlite'}", SystemClock(), create=False)

        def first_claim(incident_id: str) -> float | None:
            for entry in ledger.entries(incident_id):
                if entry.phase == "claim" and entry.step_id != "alert.start":
                    return datetime.fromisoformat(entry.at).timestamp()
            return None

        contained = [
            wait_until(lambda i=i: first_claim(i), 120, f"containment of {i}") - sent[i]
            for i in sent
        ]
        print(
            f"{args.alerts} alerts, one every {args.every} s, {args.limit} served runs at "
            f"once, on {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} now)"
        )
        print(summary("request -> 202 (recorded in the ledger)", acks))
        print(summary("request -> first containment claim", contained), flush=True)

        def started_runs() -> list[dict[str, Any]]:
            runs = client.post(f"{api}/flow_runs/filter", json={}).json()
            live = [r for r in runs if r["parameters"].get("incident") in sent]
            return [r for r in live if r["start_time"]]

        served_deadline = time.monotonic() + args.served_wait
        while len(runs := started_runs()) < len(sent) and time.monotonic() < served_deadline:
            time.sleep(1)
        prefect_start, via_prefect = [], []
        for run in runs:
            begun = datetime.fromisoformat(run["start_time"]).timestamp()
            prefect_start.append(begun - datetime.fromisoformat(run["created"]).timestamp())
            via_prefect.append(begun - sent[run["parameters"]["incident"]])
        ledger.close()
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    print(f"served runs started within --served-wait: {len(runs)} of {len(sent)}")
    print(summary("Prefect: served run created -> Running", prefect_start))
    print(summary("request -> served run Running", via_prefect))
    p95 = percentile(contained, 0.95)
    verdict = "met" if p95 < TARGET_SECONDS else "NOT met"
    print(f"target: first containment p95 < {TARGET_SECONDS:.0f} s: {verdict} ({p95:.3f} s)")


if __name__ == "__main__":
    main()
