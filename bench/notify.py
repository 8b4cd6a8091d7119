"""Benchmark: assessment and letter rendering at scale, beside jinja2's own sandbox render.

For each size (default 100,000 and 1,000,000 customers: the demo world generator scaled up,
worlds built once under $BREACHBOOK_HOME/bench and reused), in a fresh process so that peak
memory is that size's alone:

- assessment: `notify.assess` over the whole customer database (customers per second);
- breachbook letters: the affected customers streamed from the database, validated, each
  one's obligations decided and each letter rendered through `LetterWriter` (context model,
  advice, claims), nothing written (letters per second);
- raw jinja2: the same templates rendered in a plain `ImmutableSandboxedEnvironment` with
  the same contexts, built beforehand, for a sample of the letters (letters per second),
  through jinja2's `Template.render`, which copies each context twice; breachbook's renderer
  hands the context to the compiled template with its globals read once per template
  (`templates._render`: same output, a test holds it to `Template.render`);
- peak resident memory of the process.

It prints breachbook's letters per second as a share of the raw render (target: at least
0.5) and the largest size's peak memory against the smallest's (target: at most 1.3).
Rates are per second of the process's CPU time, so that other work on a shared machine does
not move the ratio (wall time under such load is two to three times longer, for both).

    python bench/notify.py [--sizes 100000 1000000] [--sample 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from breachbook.actions.notify import letter_writer
from breachbook.demo import DemoWorld, demo_incident_yaml, ensure_demo_world
from breachbook.modes import Mode
from breachbook.notify import Obligations, assess, iter_valid_customers
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, demo_settings, open_run


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux's VmHWM; ru_maxrss would carry over the
    parent's peak through fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def world_of(size: int) -> DemoWorld:
    return ensure_demo_world(Settings().home / "bench" / f"world-{size}", size=size)


def run_once(size: int, out_root: Path, sample: int) -> dict[str, float]:
    """Assessment, then every letter rendered, then the raw baseline, in this process."""
    world = world_of(size)
    settings = demo_settings(Settings(), world.customers_db, world.folder)
    ctx = open_run(
        RunRequest(
            mode=Mode.DRILL,
            incident_yaml=demo_incident_yaml(datetime.now(UTC)),
            out_dir=out_root / "drill",
        ),
        settings=settings,
    )
    try:
        directory, incident = ctx.connectors.customers, ctx.incident
        started = time.process_time()
        found = assess(directory, ctx.rules, incident)
        assess_seconds = time.process_time() - started

        writer = letter_writer(ctx)
        obligations = Obligations(ctx.rules, incident)
        letters = 0
        started = time.process_time()
        for customer in iter_valid_customers(directory, incident, []):
            for rule in obligations.for_customer(customer):
                writer.render(customer, rule, obligations.exposed_for(customer))
                letters += 1
        render_seconds = time.process_time() - started
        kept = _sample_contexts(writer, obligations, directory, incident, sample)

        raw = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(ctx.renderer.templates_dir)),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        templates = {name: raw.get_template(name) for name in {name for name, _ in kept}}
        started = time.process_time()
        for name, context in kept:
            templates[name].render(context)
        raw_seconds = time.process_time() - started
    finally:
        ctx.journal.ledger.close()
    return {
        "customers": size,
        "affected": found.affected,
        "assess_seconds": assess_seconds,
        "letters": letters,
        "render_seconds": render_seconds,
        "raw_letters": len(kept),
        "raw_seconds": raw_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def _sample_contexts(
    writer: Any, obligations: Obligations, directory: Any, incident: Any, sample: int
) -> list[tuple[str, dict[str, Any]]]:
    """The first `sample` letters' template names and contexts, built after the timed loop
    (breachbook's work again, untimed) for the raw render to use."""
    kept: list[tuple[str, dict[str, Any]]] = []
    for customer in iter_valid_customers(directory, incident, []):
        for rule in obligations.for_customer(customer):
            if len(kept) >= sample:
                return kept
            name = writer._template_for[(rule.id, customer.locale)]
            language = Path(name).name.removesuffix(".txt.j2")
            exposed = obligations.exposed_for(customer)
            kept.append((name, writer.context(customer, rule, exposed, language, name)))
    return kept


def measure(size: int, sample: int) -> dict[str, float]:
    ram = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=ram if ram.is_dir() else None) as scratch:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(size),
                "--out",
                scratch,
                "--sample",
                str(sample),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_once(args.one, args.out, args.sample)))
        return
    for size in args.sizes:
        started = time.perf_counter()
        world_of(size)  # built here, so no measured run includes building it
        print(f"world of {size:,} customers ready in {time.perf_counter() - started:.0f} s")
    runs = [measure(size, args.sample) for size in args.sizes]
    print(
        f"{'customers':>10} {'assess/s':>10} {'letters':>9} {'letters/s':>10} "
        f"{'raw/s':>9} {'ratio':>6} {'peak MB':>8}"
    )
    for run in runs:
        letters_rate = run["letters"] / run["render_seconds"]
        raw_rate = run["raw_letters"] / run["raw_seconds"]
        print(
            f"{run['customers']:>10,.0f} {run['customers'] / run['assess_seconds']:>10,.0f} "
            f"{run['letters']:>9,.0f} {letters_rate:>10,.0f} {raw_rate:>9,.0f} "
            f"{letters_rate / raw_rate:>6.2f} {run['peak_rss_mb']:>8.0f}"
        )
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        print(
            f"{large['customers'] / small['customers']:.0f}x the customers: "
            f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x the peak memory"
        )


if __name__ == "__main__":
    main()
