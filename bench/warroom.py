"""Benchmark: the Slack war room against the Slack stand-in on loopback (the real slack-sdk).

1. Latency: for 100 phases, the time from a phase ending (the engine's `phase_ended` hook)
   to its Block Kit message accepted by the stand-in: the message written to the ledger's
   queue (a SQLite ledger), claimed, posted, settled. Baseline in the same run: a bare
   slack-sdk `chat.postMessage` to the same stand-in, no ledger.
2. Throughput under a forced 429 regime: 100 messages queued, then delivered while every
   second call answers 429 with `Retry-After: 0` (slack-sdk then waits 0-1 s at random);
   messages per second, with the check that every message arrived once and in order.
   Baseline: the same delivery with no 429.

    python bench/warroom.py [--messages 100] [--every 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.slack_standin import SlackStandIn, serve_standin

from breachbook.clock import SystemClock
from breachbook.connectors.slack import SlackChat
from breachbook.journal import RunJournal
from breachbook.ledger import Ledger
from breachbook.playbook import Phase
from breachbook.warroom import MessageKind, QueuedMessage, WarRoom

TOKEN = "xoxb-test"


def _room(folder: Path, standin: SlackStandIn, incident: str) -> tuple[WarRoom, Any]:
    clock = SystemClock()
    ledger = Ledger(f"sqlite:///{folder / (incident + '.sqlite')}", clock)
    journal = RunJournal(ledger, incident, "bench", "bench", "live", clock)
    room = WarRoom(SlackChat(TOKEN, standin.url), journal, clock, f"inc-{incident}", {})
    # what the hooks read of the run: the incident's id and the journal (no assessment yet)
    ctx = SimpleNamespace(incident=SimpleNamespace(id=incident), journal=journal)
    return room, ctx


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def latency(folder: Path, standin: SlackStandIn, messages: int) -> tuple[list[float], list[float]]:
    room, ctx = _room(folder, standin, "latency")
    phase = Phase.model_validate(
        {
            "id": "contain",
            "title": "Contain",
            "steps": [{"id": "s", "title": "S", "action": "chat.post"}],
        }
    )
    room.say("opening")  # the room is opened once, before the phases measured
    measured = []
    for _ in range(messages):
        before = len(standin.calls)
        ended = time.monotonic()
        room.phase_ended(cast(Any, ctx), phase, [])
        accepted = next(
            c.at
            for c in standin.calls[before:]
            if str(c.params.get("text", "")).startswith("Phase")
        )
        measured.append(accepted - ended)
    bare = SlackChat(TOKEN, standin.url)
    baseline = []
    for _ in range(messages):
        sent = time.monotonic()
        bare.post("#inc-latency", "bare")
        baseline.append(standin.calls[-1].at - sent)
    return measured, baseline


def throughput(folder: Path, standin: SlackStandIn, messages: int, every: int) -> float:
    room, _ = _room(folder, standin, f"burst{every}")
    room.say("opening")
    for n in range(messages):
        room.enqueue(QueuedMessage(kind=MessageKind.CHANNEL, text=f"message {n:04d}"))
    standin.rate_limit_every = every
    before = len(standin.posts())
    started = time.monotonic()
    delivery = room.deliver()
    elapsed = time.monotonic() - started
    standin.rate_limit_every = 0
    got = [str(c.params["text"]) for c in standin.posts()[before:]]
    wanted = [f"message {n:04d}" for n in range(messages)]
    if got != wanted or delivery.waiting:
        raise SystemExit(f"lost or out of order: {len(got)} of {messages}, {delivery}")
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--every", type=int, default=2, help="every Nth call answers 429")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, serve_standin() as standin:
        folder = Path(tmp)
        measured, baseline = latency(folder, standin, args.messages)
        ms = [1000 * v for v in measured]
        base = [1000 * v for v in baseline]
        print(f"phase end -> message accepted, {args.messages} phases:")
        print(f"  war room:  median {statistics.median(ms):.1f} ms, p95 {_p95(ms):.1f} ms")
        print(f"  bare post: median {statistics.median(base):.1f} ms, p95 {_p95(base):.1f} ms")
        print(f"  ratio (median): {statistics.median(ms) / statistics.median(base):.1f}x")
        free = throughput(folder, standin, args.messages, 0)
        limited = throughput(folder, standin, args.messages, args.every)
        print(f"delivery of {args.messages} queued messages, none lost, in order:")
        print(f"  no 429:                       {free:.1f} messages/s")
        print(f"  every {args.every}nd call 429 (Retry-After 0): {limited:.1f} messages/s")
        print(f"  ratio: {free / limited:.1f}x slower under 429")


if __name__ == "__main__":
    main()
