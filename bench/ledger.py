"""Benchmark: the ledger's appends and claims against a plain insert loop on the same database.

For a SQLite file on disk (a temp dir, not /dev/shm) and for a fresh PostgreSQL database
(`bb_bench_<random>`, created on the server of $TEST_POSTGRES_URL or the local default, dropped
at the end), it measures in the same run:

- the baseline: plain SQLAlchemy inserts of one small row per transaction, with 1 and 4 writer
  threads into one table (on SQLite with the ledger's durability: WAL, synchronous=FULL);
- `append`, one entry per transaction: 1 writer; 4 writers on one incident; 4 on four;
- item work as delivery does it, `claim` then `settle(DONE)` (two transactions, each also
  appending an audit entry): 1 writer; 4 writers on four incidents; 4 writers racing for
  the same keys on one incident, where every key must be won exactly once;
- whether one incident's chain serialises another's writes: 4 writers on one incident against
  4 on four, and an append to incident B while incident A's head row is held locked.

Each ledger configuration runs right after a plain run with the same number of writers, and
its ratios are to that run, so a busy machine slows both sides of a ratio alike. Every
configuration ends with `verify()` of its chains and a check of their lengths and items; a
broken chain stops the benchmark. Writers are threads of this process, so they share its GIL:
`cpu ms/tx` is this process's CPU per transaction (the Python side's cost) and `cores` its CPU
seconds per second: near 1.0 the writers are waiting for the GIL, not for the database.

    python bench/ledger.py [--n 500] [--dir /var/tmp] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, event
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from breachbook.clock import SystemClock
from breachbook.ledger import AUTOMATION, ChainHead, Entry, ItemStatus, Ledger

WRITERS = 4
TARGET = 0.5
HOLD_SECONDS = 0.5
DEFAULT_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
STEP = "send-letters"


@dataclass(frozen=True)
class Timing:
    seconds: float
    cpu: float  # this process's CPU seconds, every thread's


@dataclass(frozen=True)
class Figure:
    """One measured configuration: `ops` rows, appends or items in `transactions` commits."""

    workload: str
    writers: int
    incidents: int
    ops: int
    transactions: int
    timing: Timing
    plain: float | None = None  # plain rows/s just before, with the same number of writers
    chains: str = ""

    @property
    def per_second(self) -> float:
        return self.ops / self.timing.seconds

    @property
    def tx_per_second(self) -> float:
        return self.transactions / self.timing.seconds

    def ratio_per_tx(self) -> float | None:
        return None if self.plain is None else self.tx_per_second / self.plain

    def ratio_per_op(self) -> float | None:
        return None if self.plain is None else self.per_second / self.plain


def concurrently(tasks: list[Callable[[], None]]) -> Timing:
    """Time from a common start until every task has finished; a task's error is raised."""
    start = threading.Barrier(len(tasks) + 1)

    def gated(task: Callable[[], None]) -> None:
        start.wait()
        task()

    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(gated, task) for task in tasks]
        start.wait()
        started, cpu = time.perf_counter(), time.process_time()
        for future in futures:
            future.result()
        return Timing(time.perf_counter() - started, time.process_time() - cpu)


# -- the baseline: a plain insert loop -----------------------------------------------------

PLAIN = Table(
    "bench_plain",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("writer", Integer),
    Column("payload", String(64)),
)


def plain_engine(url: str) -> Engine:
    """A plain engine; on SQLite with the ledger's journal mode and durability, so a ratio is
    the ledger's cost and not a difference of fsyncs."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    PLAIN.metadata.create_all(engine)
    return engine


def plain_inserts(engine: Engine, writers: int, n: int) -> Timing:
    """`writers` threads insert `n` rows each, one commit per row."""

    def writer(number: int) -> Callable[[], None]:
        def work() -> None:
            for i in range(n):
                with engine.begin() as conn:
                    conn.execute(PLAIN.insert().values(writer=number, payload=f"row-{i:08d}"))

        return work

    return concurrently([writer(w) for w in range(writers)])


# -- the ledger ----------------------------------------------------------------------------


def entry(incident_id: str, target: str, phase: str, outcome: str) -> Entry:
    """An entry as delivery writes one: ids and small details, no personal data."""
    return Entry(
        incident_id=incident_id,
        run_id="bench-run-0001",
        step_id=STEP,
        target=target,
        phase=phase,
        actor=AUTOMATION,
        mode="drill",
        outcome=outcome,
        details={"channel": "email", "template": "notice-gdpr"} if phase == "outcome" else {},
    )


def keys_of(n: int) -> list[str]:
    return [f"customer-{i:06d}" for i in range(n)]


def check_chains(ledger: Ledger, expected: Counter[str]) -> str:
    """Verify each incident's chain and its length; stop the benchmark when one is broken."""
    for incident_id, count in expected.items():
        problems = ledger.verify(incident_id=incident_id)
        if problems:
            first = problems[0]
            sys.exit(
                f"CHAIN BROKEN: {incident_id} entry {first.seq}: {first.problem} "
                f"({len(problems)} problems)"
            )
        seq, _ = ledger.head(incident_id)
        if seq != count:
            sys.exit(f"CHAIN WRONG LENGTH: {incident_id} has {seq} entries, expected {count}")
    return f"intact ({expected.total():,} entries)"


def check_delivered(ledger: Ledger, incidents: list[str], n: int) -> str:
    """Every incident has its `n` items done and a verified chain of a claim and an outcome
    entry per item."""
    for incident_id in incidents:
        statuses = ledger.item_statuses(incident_id, STEP)
        done = sum(status is ItemStatus.DONE for status in statuses.values())
        if len(statuses) != n or done != n:
            sys.exit(f"ITEMS WRONG: {incident_id} has {done}/{len(statuses)} done, expected {n}")
    return check_chains(ledger, Counter(dict.fromkeys(incidents, 2 * n)))


def appends(ledger: Ledger, incidents: list[str], n: int) -> Timing:
    """One writer per element of `incidents` (repeat an id to share it), `n` appends each."""

    def writer(incident_id: str) -> Callable[[], None]:
        def work() -> None:
            for key in keys_of(n):
                ledger.append(entry(incident_id, key, "notify", "sent"))

        return work

    return concurrently([writer(incident) for incident in incidents])


def deliver(ledger: Ledger, incident_id: str, keys: list[str]) -> list[str]:
    """Claim then settle each key, as delivery does; returns the keys this writer won."""
    won = []
    for key in keys:
        claim = ledger.claim(entry(incident_id, key, "claim", "claimed"), key)
        if claim is None:
            continue
        ledger.settle(claim, ItemStatus.DONE, entry(incident_id, key, "outcome", "done"))
        won.append(key)
    return won


def items(ledger: Ledger, incidents: list[str], n: int) -> Timing:
    """One writer per incident (distinct), each claiming and settling `n` keys of its own."""

    def writer(incident_id: str) -> Callable[[], None]:
        def work() -> None:
            deliver(ledger, incident_id, keys_of(n))

        return work

    return concurrently([writer(incident) for incident in incidents])


def race(ledger: Ledger, incident_id: str, n: int) -> tuple[Timing, str]:
    """WRITERS threads claim the same `n` keys in the same order on one incident; every key
    must be won exactly once."""
    wins: list[list[str]] = [[] for _ in range(WRITERS)]

    def writer(number: int) -> Callable[[], None]:
        def work() -> None:
            wins[number] = deliver(ledger, incident_id, keys_of(n))

        return work

    timing = concurrently([writer(w) for w in range(WRITERS)])
    counts = Counter(key for won in wins for key in won)
    once = sum(counts[key] == 1 for key in keys_of(n))
    if once != n or counts.total() != n:
        sys.exit(f"RACE LOST ITEMS: {once}/{n} keys won exactly once, {counts.total()} wins")
    split = "/".join(str(len(won)) for won in wins)
    return timing, f"each key won exactly once: {once:,}/{n:,} (wins per writer {split})"


@contextmanager
def head_locked(ledger: Ledger, incident_id: str) -> Iterator[None]:
    """Hold what a writer of `incident_id`'s chain holds: its head row FOR UPDATE on
    PostgreSQL; on SQLite the ledger's only lock, the database's (BEGIN IMMEDIATE)."""
    url = make_url(ledger.url)
    if url.get_backend_name() == "sqlite":
        raw = sqlite3.connect(url.database or "", isolation_level=None, timeout=30)
        try:
            raw.execute("BEGIN IMMEDIATE")
            yield
            raw.execute("ROLLBACK")
        finally:
            raw.close()
        return
    engine = create_engine(ledger.url)
    try:
        with Session(engine) as session, session.begin():
            session.execute(
                sql_select(ChainHead.seq)
                .where(ChainHead.incident_id == incident_id)
                .with_for_update()
            ).one()
            yield
    finally:
        engine.dispose()


def blocked_for(ledger: Ledger, locked: str, writes_to: str) -> float:
    """Seconds an append to `writes_to` takes while `locked`'s chain head is held for
    HOLD_SECONDS: about zero when chains do not serialise each other, about HOLD when they do."""
    for incident_id in (locked, writes_to):
        ledger.append(entry(incident_id, "probe", "probe", "ok"))
    took: list[float] = []

    def write() -> None:
        started = time.perf_counter()
        ledger.append(entry(writes_to, "probe", "probe", "ok"))
        took.append(time.perf_counter() - started)

    with head_locked(ledger, locked):
        worker = threading.Thread(target=write)
        worker.start()
        worker.join(timeout=HOLD_SECONDS)
    worker.join()
    return took[0]


# -- one database --------------------------------------------------------------------------

HEADER = (
    f"{'database':<9}{'workload':<28}{'writers':>7}{'inc':>4}{'ops':>7}{'s':>6}{'ops/s':>7}"
    f"{'tx/s':>7}{'cpu ms/tx':>10}{'cores':>6}{'plain tx/s':>11}{'÷plain tx':>10}"
    f"{'÷plain op':>10}  chains"
)


def show(name: str, figure: Figure) -> None:
    per_tx, per_op = figure.ratio_per_tx(), figure.ratio_per_op()
    cpu = figure.timing.cpu * 1000 / figure.transactions
    print(
        f"{name:<9}{figure.workload:<28}{figure.writers:>7}{figure.incidents or '-':>4}"
        f"{figure.ops:>7,}{figure.timing.seconds:6.1f}{figure.per_second:7,.0f}"
        f"{figure.tx_per_second:7,.0f}{cpu:10.2f}{figure.timing.cpu / figure.timing.seconds:6.2f}"
        f"{'-' if figure.plain is None else f'{figure.plain:,.0f}':>11}"
        f"{'-' if per_tx is None else f'{per_tx:.2f}':>10}"
        f"{'-' if per_op is None else f'{per_op:.2f}':>10}"
        f"  {figure.chains}",
        flush=True,
    )


def bench_database(name: str, url: str, n: int) -> list[str]:
    """Measure every configuration on one database; print its rows, return its conclusions."""
    ledger = Ledger(url, SystemClock())
    plain = plain_engine(url)
    figures: list[Figure] = []

    def measure(
        workload: str,
        run: Callable[[], Timing],
        check: Callable[[], str],
        *,
        writers: int,
        incidents: int,
        ops: int,
        transactions: int,
    ) -> Figure:
        """Time `run` right after a plain run of as many writers, then check its chains."""
        rate = writers * n / plain_inserts(plain, writers, n).seconds
        timing = run()
        figure = Figure(workload, writers, incidents, ops, transactions, timing, rate, check())
        figures.append(figure)
        show(name, figure)
        return figure

    try:
        plain_inserts(plain, WRITERS, 10)  # warm both pools: connections open before timing
        appends(ledger, [f"{name}-warm-{w}" for w in range(WRITERS)], 10)
        for writers in (1, WRITERS):
            show(
                name,
                Figure(
                    "plain insert (baseline)",
                    writers=writers,
                    incidents=0,
                    ops=writers * n,
                    transactions=writers * n,
                    timing=plain_inserts(plain, writers, n),
                ),
            )
        measure(
            "append",
            lambda: appends(ledger, [f"{name}-a1"], n),
            lambda: check_chains(ledger, Counter({f"{name}-a1": n})),
            writers=1,
            incidents=1,
            ops=n,
            transactions=n,
        )
        one_incident = measure(
            "append",
            lambda: appends(ledger, [f"{name}-a4-one"] * WRITERS, n),
            lambda: check_chains(ledger, Counter({f"{name}-a4-one": WRITERS * n})),
            writers=WRITERS,
            incidents=1,
            ops=WRITERS * n,
            transactions=WRITERS * n,
        )
        four = [f"{name}-a4-{w}" for w in range(WRITERS)]
        four_incidents = measure(
            "append",
            lambda: appends(ledger, four, n),
            lambda: check_chains(ledger, Counter(dict.fromkeys(four, n))),
            writers=WRITERS,
            incidents=WRITERS,
            ops=WRITERS * n,
            transactions=WRITERS * n,
        )
        alone, apart = [f"{name}-i1"], [f"{name}-i4-{w}" for w in range(WRITERS)]
        measure(
            "claim+settle items",
            lambda: items(ledger, alone, n),
            lambda: check_delivered(ledger, alone, n),
            writers=1,
            incidents=1,
            ops=n,
            transactions=2 * n,
        )
        measure(
            "claim+settle items",
            lambda: items(ledger, apart, n),
            lambda: check_delivered(ledger, apart, n),
            writers=WRITERS,
            incidents=WRITERS,
            ops=WRITERS * n,
            transactions=2 * WRITERS * n,
        )
        won: list[str] = []

        def racing() -> Timing:
            timing, verdict = race(ledger, f"{name}-race", n)
            won.append(verdict)
            return timing

        # Every writer's claim is a transaction, won or lost: WRITERS * n claims, n settles.
        measure(
            "items, racing for same keys",
            racing,
            lambda: check_delivered(ledger, [f"{name}-race"], n),
            writers=WRITERS,
            incidents=1,
            ops=n,
            transactions=(WRITERS + 1) * n,
        )
        print(f"{'':9}{won[0]}")
        other = blocked_for(ledger, f"{name}-probe-a", f"{name}-probe-b")
        same = blocked_for(ledger, f"{name}-probe-a", f"{name}-probe-a")
    finally:
        plain.dispose()
        ledger.close()
    return conclusions(name, figures, one_incident, four_incidents, other, same)


def conclusions(
    name: str,
    figures: list[Figure],
    one_incident: Figure,
    four_incidents: Figure,
    other: float,
    same: float,
) -> list[str]:
    ratios = [(f, f.ratio_per_tx()) for f in figures]
    short = [
        f"{f.workload} x{f.writers} on {f.incidents} {ratio:.2f}"
        for f, ratio in ratios
        if ratio is not None and ratio < TARGET
    ]
    met = "met by every configuration" if not short else "MISSED by " + "; ".join(short)
    serialised = other > HOLD_SECONDS / 2
    expected = " (expected: a SQLite file has one writer)" if name == "sqlite" else ""
    return [
        f"{name}: target {TARGET} of the plain insert loop per transaction: {met}",
        f"{name}: 4 writers on 4 incidents / 4 writers on 1 incident: "
        f"{four_incidents.per_second / one_incident.per_second:.2f}x appends/s",
        f"{name}: with incident A's chain head held locked {HOLD_SECONDS:.1f} s, an append to "
        f"incident B took {other * 1000:.0f} ms "
        f"({'WAITED: one chain serialises the others' if serialised else 'not blocked'}"
        f"{expected}), an append to A {same * 1000:.0f} ms",
    ]


# -- PostgreSQL: a fresh database for the run -----------------------------------------------


def create_database(server: str) -> tuple[str, str] | None:
    """(name, url) of a new empty database on the server, or None when it does not answer."""
    where = make_url(server).render_as_string(hide_password=True)
    admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    name = f"bb_bench_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        print(f"\nPostgreSQL at {where} DID NOT ANSWER ({reason}): SQLite only", flush=True)
        return None
    finally:
        admin.dispose()
    return name, make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_database(server: str, name: str) -> None:
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


# -- where the time goes --------------------------------------------------------------------


def profile(name: str, url: str, n: int) -> None:
    """cProfile of one writer's appends and items in this thread: the top functions."""
    ledger = Ledger(url, SystemClock())
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        for key in keys_of(n):
            ledger.append(entry(f"{name}-profile", key, "notify", "sent"))
        deliver(ledger, f"{name}-profile-items", keys_of(n))
        profiler.disable()
    finally:
        ledger.close()
    print(f"\n{name}: cProfile of {n:,} appends and {n:,} items (claim+settle), one writer")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(12)
    stats.sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="operations per writer")
    parser.add_argument("--dir", type=Path, help="where the SQLite file goes (default: temp dir)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one writer")
    args = parser.parse_args()
    n: int = args.n
    server = os.environ.get("TEST_POSTGRES_URL") or DEFAULT_SERVER
    started = time.perf_counter()
    summary: list[str] = []
    print(f"{n:,} operations per writer; {WRITERS} writers are {WRITERS} threads; tx = commits")
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        print(f"SQLite: a file in {scratch}")
        print(HEADER, flush=True)
        summary += bench_database("sqlite", f"sqlite:///{Path(scratch) / 'ledger.db'}", n)
        if args.profile:
            profile("sqlite", f"sqlite:///{Path(scratch) / 'profile.db'}", n)
    created = create_database(server)
    if created is not None:
        name, url = created
        try:
            print(f"\nPostgreSQL: fresh database {name} on {make_url(server).render_as_string()}")
            print(HEADER, flush=True)
            summary += bench_database("postgres", url, n)
            if args.profile:
                profile("postgres", url, n)
        finally:
            drop_database(server, name)
    print()
    for line in summary:
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
