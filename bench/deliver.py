"""Benchmark: letters delivered per second to a local aiosmtpd, beside a plain smtplib loop.

The relay is aiosmtpd in processes of its own (`--servers`, sharing one loopback port with
SO_REUSEPORT, as a relay host spreads its connections), counting what it takes. The letters
are real: a sample rendered from the demo world (text and HTML), sent under distinct keys,
recipients and Message-IDs, made one by one as they are sent (memory stays flat).

For each size (default 10,000 letters), in a fresh process so that peak memory is that
size's alone:

- baseline (the target's): a plain smtplib loop over one connection, each letter built with
  the standard library's email package and handed over with `send_message`;
- the same loop handing over breachbook's message bytes (`message_bytes`) with `sendmail`:
  what one connection can do at best, so the gain from building is told apart from the
  gain from the pool;
- breachbook: `SmtpMail` (its pool of connections, rate limit and retries), `parallel_sends`
  threads handing the same letters over;
- breachbook with the ledger: the same, each letter claimed before and settled after in a
  SQLite ledger, LETTERS_PER_COMMIT per transaction, as `letters.deliver` does;
- workers: the letters in batches of BREACHBOOK_LETTERS_BATCH_SIZE (5,000) spread over
  `--workers` processes at once (as a flow spreads a delivery's batch tasks over workers),
  each with its own pool, claiming and settling in one shared SQLite ledger;
- peak resident memory of the process.

It prints letters per second and breachbook's against the baseline (target: at least 2x),
and the relay's CPU time per letter. `--accept-ms` makes the relay take that long before it
answers each letter, as a relay that writes its queue file to disk before it says 250 does
(and as one across a network does by its round trip); 0, the default, is a relay on the
same two cores as its client that answers as fast as it can parse.

    python bench/deliver.py [--sizes 10000 100000] [--connections 8] [--servers 2]
        [--workers 2] [--accept-ms 0] [--ways plain bytes pool ledger workers]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from breachbook.actions.notify import LETTERS_PER_COMMIT, letter_writer
from breachbook.clock import SystemClock
from breachbook.connectors.message import build_message, message_bytes, message_id
from breachbook.connectors.smtp import SmtpConfig, SmtpMail
from breachbook.demo import demo_incident_yaml, ensure_demo_world
from breachbook.journal import RunJournal
from breachbook.ledger import Claim, ItemStatus, Ledger
from breachbook.modes import Mode
from breachbook.notify import Obligations, iter_valid_customers
from breachbook.ports import OutgoingLetter
from breachbook.settings import LETTERS_BATCH_SIZE, Settings
from breachbook.wiring import RunRequest, demo_settings, open_run

SENDER = "privacy@bench.example"
SAMPLE = 200


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# -- the relay -------------------------------------------------------------------------------


class Counting:
    def __init__(self, accept_seconds: float) -> None:
        self.taken = 0
        self.accept_seconds = accept_seconds

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.accept_seconds:
            await asyncio.sleep(self.accept_seconds)
        self.taken += 1
        return "250 OK"


def serve(port: int, accept_ms: float) -> None:
    """One aiosmtpd process on the shared port, until killed."""
    from aiosmtpd.smtp import SMTP

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        handler = Counting(accept_ms / 1000)
        server = await loop.create_server(lambda: SMTP(handler), sock=listener)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float:
    """User and system CPU time the relay's processes have taken so far."""
    total = 0
    for process in processes:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as probe:
                probe.noop()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the relay did not start")


# -- the letters -----------------------------------------------------------------------------


def sample_letters(home: Path) -> list[OutgoingLetter]:
    """Letters rendered from the demo world as `letters.deliver` renders them."""
    world = ensure_demo_world(home / "bench" / "world-600", size=600)
    settings = demo_settings(Settings(home=home), world.customers_db, world.folder)
    out = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    ctx = open_run(
        RunRequest(
            mode=Mode.DRILL,
            incident_yaml=demo_incident_yaml(datetime.now(UTC)),
            out_dir=out / "run",
        ),
        settings=settings,
    )
    writer = letter_writer(ctx)
    obligations = Obligations(ctx.rules, ctx.incident)
    letters = []
    for customer in iter_valid_customers(ctx.connectors.customers, ctx.incident, []):
        for rule in obligations.for_customer(customer):
            rendered = writer.render_letter(customer, rule, obligations.exposed_for(customer))
            letters.append(
                OutgoingLetter(
                    "", "", rendered.subject, rendered.text, rendered.html, "", rendered.language
                )
            )
        if len(letters) >= SAMPLE:
            break
    ctx.journal.ledger.close()
    return letters


def stream(sample: list[OutgoingLetter], count: int) -> Iterator[OutgoingLetter]:
    """`count` letters, each with its own key, recipient and Message-ID, made when asked."""
    for n in range(count):
        base = sample[n % len(sample)]
        key = f"bench/C{n:07d}"
        yield OutgoingLetter(
            key,
            f"customer{n}@example.org",
            base.subject,
            base.body,
            base.html,
            message_id("bench", "bench", f"C{n:07d}", SENDER),
            base.language,
        )


# -- the three ways ------------------------------------------------------------------------


def plain_loop(port: int, letters: Iterator[OutgoingLetter]) -> int:
    sent = 0
    with smtplib.SMTP("127.0.0.1", port) as connection:
        for letter in letters:
            connection.send_message(
                build_message(letter, SENDER), from_addr=SENDER, to_addrs=[letter.recipient]
            )
            sent += 1
    return sent


def plain_bytes_loop(port: int, letters: Iterator[OutgoingLetter]) -> int:
    sent = 0
    with smtplib.SMTP("127.0.0.1", port) as connection:
        for letter in letters:
            data = message_bytes(letter, SENDER, "\r\n")
            connection.sendmail(SENDER, [letter.recipient], data)
            sent += 1
    return sent


def mail_of(port: int, connections: int) -> SmtpMail:
    config = SmtpConfig(
        "127.0.0.1",
        port,
        SENDER,
        starttls=False,
        connections=connections,
        rate_per_minute=100_000_000,
    )
    return SmtpMail(config, SystemClock())


def pooled(port: int, connections: int, letters: Iterator[OutgoingLetter]) -> int:
    mail = mail_of(port, connections)
    sent = 0
    with ThreadPoolExecutor(connections) as pool:
        pending: set[Future[str]] = set()
        for letter in letters:
            pending.add(pool.submit(mail.send, letter))
            if len(pending) >= 2 * connections:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                sent += sum(1 for f in done if f.result())
        sent += sum(1 for f in pending if f.result())
    mail.close()
    return sent


def pooled_with_ledger(
    port: int, connections: int, letters: Iterator[OutgoingLetter], folder: Path
) -> int:
    """Claim, hand over, settle, LETTERS_PER_COMMIT letters per ledger transaction:
    `letters.deliver`'s loop on a SQLite ledger."""
    clock = SystemClock()
    ledger = Ledger(f"sqlite:///{folder / 'ledger.sqlite'}", clock)
    journal = RunJournal(ledger, "bench", "bench-run", "bench", "LIVE", clock)
    mail = mail_of(port, connections)
    sent = 0
    outcomes: list[tuple[Claim, ItemStatus, Mapping[str, Any]]] = []
    with ThreadPoolExecutor(connections) as pool:
        pending: dict[Future[str], Claim] = {}

        def collect(until: str) -> None:
            done, _ = wait(list(pending), return_when=until)
            for future in done:
                outcomes.append((pending.pop(future), ItemStatus.DONE, {"ref": future.result()}))

        for chunk in batched(letters, LETTERS_PER_COMMIT):
            claims = journal.claim_many(
                "letters.deliver",
                [(letter.key, {"message_id": letter.message_id}) for letter in chunk],
            )
            for letter, claim in zip(chunk, claims, strict=True):
                assert claim is not None
                pending[pool.submit(mail.send, letter)] = claim
            while len(pending) > LETTERS_PER_COMMIT:
                collect(FIRST_COMPLETED)
            if len(outcomes) >= LETTERS_PER_COMMIT:
                sent += len(outcomes)
                journal.settle_many(outcomes)
                outcomes.clear()
        while pending:
            collect(ALL_COMPLETED)
        sent += len(outcomes)
        journal.settle_many(outcomes)
    mail.close()
    ledger.close()
    return sent


def part_of(letters: Iterator[OutgoingLetter], part: int, parts: int) -> Iterator[OutgoingLetter]:
    """The letters of every `parts`th batch of LETTERS_BATCH_SIZE, from batch `part`: one
    worker's share when the batches of a delivery are spread over `parts` workers."""
    for number, letter in enumerate(letters):
        if (number // LETTERS_BATCH_SIZE) % parts == part:
            yield letter


def batched(items: Iterator[OutgoingLetter], size: int) -> Iterator[list[OutgoingLetter]]:
    chunk: list[OutgoingLetter] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_part(size: int, port: int, connections: int, way: str) -> dict[str, float]:
    """One worker of `workers`: its share of the batches, on the ledger the workers share.
    Its start and end are wall-clock times, so the run's rate spans every worker."""
    _, part, parts, folder = way.split(":")
    sample = sample_letters(Settings().home)
    start = time.time()
    letters = part_of(stream(sample, size), int(part), int(parts))
    sent = pooled_with_ledger(port, connections, letters, Path(folder))
    return {"sent": sent, "start": start, "end": time.time(), "peak_mb": peak_rss_mb()}


def run_once(size: int, port: int, connections: int, way: str) -> dict[str, float]:
    if way.startswith("part:"):
        return run_part(size, port, connections, way)
    sample = sample_letters(Settings().home)
    start = time.perf_counter()
    if way == "plain":
        sent = plain_loop(port, stream(sample, size))
    elif way == "bytes":
        sent = plain_bytes_loop(port, stream(sample, size))
    elif way == "pool":
        sent = pooled(port, connections, stream(sample, size))
    else:
        with tempfile.TemporaryDirectory() as folder:
            sent = pooled_with_ledger(port, connections, stream(sample, size), Path(folder))
    seconds = time.perf_counter() - start
    assert sent == size
    return {"letters_per_s": size / seconds, "seconds": seconds, "peak_mb": peak_rss_mb()}


WAYS = ["plain", "bytes", "pool", "ledger", "workers"]


def one(size: int, port: int, connections: int, way: str) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--connections",
        str(connections),
        "--one",
        str(size),
        str(port),
        way,
    ]


def workers(size: int, port: int, connections: int, count: int) -> dict[str, float]:
    """`count` worker processes at once, each sending its share of the batches of
    LETTERS_BATCH_SIZE on one shared SQLite ledger; the rate spans the first start to the
    last end, and the peak memory is the largest worker's."""
    with tempfile.TemporaryDirectory() as folder:
        started = [
            subprocess.Popen(
                one(size, port, connections, f"part:{n}:{count}:{folder}"),
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(count)
        ]
        parts = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in started]
    assert all(p.returncode == 0 for p in started)
    assert sum(part["sent"] for part in parts) == size
    seconds = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    peak = max(p["peak_mb"] for p in parts)
    return {"letters_per_s": size / seconds, "seconds": seconds, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--accept-ms", type=float, default=0.0)
    parser.add_argument("--ways", nargs="+", default=WAYS, choices=WAYS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.accept_ms)
        return
    if args.one:
        size, port, way = int(args.one[0]), int(args.one[1]), args.one[2]
        print(json.dumps(run_once(size, port, args.connections, way)))
        return
    port = free_port()
    servers = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), "--accept-ms", str(args.accept_ms)]
        )
        for _ in range(args.servers)
    ]
    try:
        wait_for(port)
        print(
            f"relay: {args.servers} aiosmtpd processes on 127.0.0.1:{port}, "
            f"{args.accept_ms:g} ms to accept a letter; "
            f"breachbook with {args.connections} connections"
        )
        for size in args.sizes:
            figures = {}
            for way in args.ways:
                relay_before = cpu_seconds(servers)
                if way == "workers":
                    figures[way] = workers(size, port, args.connections, args.workers)
                else:
                    done = subprocess.run(
                        one(size, port, args.connections, way),
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    figures[way] = json.loads(done.stdout.strip().splitlines()[-1])
                figures[way]["relay_ms"] = 1000 * (cpu_seconds(servers) - relay_before) / size
            base = figures["plain"]["letters_per_s"] if "plain" in figures else None
            for way, label in (
                ("plain", "plain smtplib loop, email package"),
                ("bytes", "plain smtplib loop, breachbook's bytes"),
                ("pool", "breachbook SmtpMail pool"),
                ("ledger", "breachbook pool + ledger claim/settle"),
                ("workers", f"{args.workers} workers, batches + shared ledger"),
            ):
                if way not in figures:
                    continue
                f = figures[way]
                ratio = f"{f['letters_per_s'] / base:>5.2f}x" if base else "     "
                print(
                    f"{size:>8} letters  {label:<40} {f['letters_per_s']:>8.0f} letters/s  "
                    f"{ratio}  peak {f['peak_mb']:.0f} MB  relay CPU {f['relay_ms']:.3f} ms/letter"
                )
    finally:
        for server in servers:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
