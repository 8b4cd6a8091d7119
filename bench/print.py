"""Benchmark: printed post, 1,000 letters as PDFs, beside a naive WeasyPrint loop.

On a demo world where nobody gave an email address (built once under
$BREACHBOOK_HOME/bench and reused), through the product's code (`letters.print`'s render:
LetterWriter's text, the print template, WeasyPrint with shared fonts and style sheet):

- breachbook: the first N posted letters rendered to PDF and written whole to disk (PDFs
  per second), then merged into one print file per obligation and country with pypdf;
- naive: the same letters' HTML through a fresh `HTML(...).write_pdf()` each, with no font
  configuration or style sheet shared between letters, for a sample (PDFs per second);
- text: the same letters rendered as text only, as email sends them (letters per second);
- peak resident memory of the process.

It prints breachbook's PDFs per second against the naive loop's (target: at least 1.0).

    python bench/print.py [--letters 1000] [--sample 100]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sqlite3
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from breachbook.actions.notify import letter_writer
from breachbook.actions.post import posted
from breachbook.context import RunContext
from breachbook.demo import DemoWorld, demo_incident_yaml, ensure_demo_world
from breachbook.models import Customer
from breachbook.modes import Mode
from breachbook.post import PRINT_STYLE, PdfLetters, letter_language, merge, write_whole
from breachbook.rules import Rule
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, demo_settings, open_run


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux's VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def posted_world(size: int) -> DemoWorld:
    """The demo world of `size` customers, copied once with every email address removed."""
    folder = Settings().home / "bench" / f"print-world-{size}"
    if not (folder / "customers.sqlite").is_file():
        source = ensure_demo_world(Settings().home / "bench" / f"world-{size}", size=size)
        shutil.copytree(source.folder, folder, dirs_exist_ok=True)
        db = sqlite3.connect(folder / "customers.sqlite")
        db.execute("UPDATE customers SET email = ''")
        db.commit()
        db.close()
    return DemoWorld(folder, folder / "customers.sqlite", folder / "incident.yaml")


def print_letters(
    ctx: RunContext, pdfs: PdfLetters, letters: list[tuple[Customer, Rule]], out: Path
) -> tuple[float, int, dict[tuple[str, str], list[Path]]]:
    """The product's path per letter: its text (LetterWriter), then its PDF, written whole.
    Returns the seconds taken, the bytes written and the files per obligation and country."""
    writer = letter_writer(ctx)
    exposed = frozenset(ctx.incident.data_categories)
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    written = 0
    started = time.perf_counter()
    for customer, rule in letters:
        subject, body = writer.render(customer, rule, customer.categories & exposed)
        language = letter_language(ctx.renderer, rule, customer)
        pdf = pdfs.pdf(customer, rule, subject, body, language)
        path = out / rule.id / customer.country / f"{customer.id}.pdf"
        write_whole(path, pdf)
        written += len(pdf)
        groups[(rule.id, customer.country)].append(path)
    return time.perf_counter() - started, written, groups


def naive_loop(ctx: RunContext, pdfs: PdfLetters, letters: list[tuple[Customer, Rule]]) -> float:
    """The same letters' HTML through a fresh WeasyPrint document each, nothing shared."""
    from weasyprint import CSS, HTML

    writer = letter_writer(ctx)
    exposed = frozenset(ctx.incident.data_categories)
    style = str(ctx.renderer.templates_dir / PRINT_STYLE)
    started = time.perf_counter()
    for customer, rule in letters:
        subject, body = writer.render(customer, rule, customer.categories & exposed)
        language = letter_language(ctx.renderer, rule, customer)
        html = pdfs.html(customer, rule, subject, body, language)
        HTML(string=html).write_pdf(stylesheets=[CSS(filename=style)])
    return time.perf_counter() - started


def text_only(ctx: RunContext, letters: list[tuple[Customer, Rule]]) -> float:
    writer = letter_writer(ctx)
    exposed = frozenset(ctx.incident.data_categories)
    started = time.perf_counter()
    for customer, rule in letters:
        writer.render(customer, rule, customer.categories & exposed)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--world", type=int, default=2000, help="customers in the demo world")
    options = parser.parse_args()

    world = posted_world(options.world)
    settings = demo_settings(Settings(), world.customers_db, world.folder)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        ctx = open_run(
            RunRequest(
                mode=Mode.DRILL,
                incident_yaml=demo_incident_yaml(datetime.now(UTC)),
                out_dir=out / "drill",
            ),
            settings=settings,
        )
        pdfs = PdfLetters(ctx.renderer, ctx.playbook.organisation, None)
        letters = list(itertools.islice(posted(ctx), options.letters))
        if len(letters) < options.letters:
            raise SystemExit(f"only {len(letters)} posted letters in a world of {options.world}")
        text_seconds = text_only(ctx, letters)
        pdf_seconds, written, groups = print_letters(ctx, pdfs, letters, out / "print")
        started = time.perf_counter()
        pages = sum(
            merge(paths, out / "merged" / f"{rule_id}-{country}.pdf")
            for (rule_id, country), paths in groups.items()
        )
        merge_seconds = time.perf_counter() - started
        sample = letters[: options.sample]
        naive_seconds = naive_loop(ctx, pdfs, sample)
        ctx.journal.ledger.close()

    ours = len(letters) / pdf_seconds
    naive = len(sample) / naive_seconds
    print(f"letters: {len(letters)} ({len(groups)} print files, {pages} pages)")
    print(f"text only (as email):        {len(letters) / text_seconds:8.1f} letters/s")
    print(f"breachbook PDFs, written:    {ours:8.1f} PDFs/s  ({pdf_seconds:.1f} s)")
    print(f"naive WeasyPrint loop:       {naive:8.1f} PDFs/s  (sample of {len(sample)})")
    print(
        f"merge into print files:      {pages / merge_seconds:8.1f} pages/s ({merge_seconds:.1f} s)"
    )
    print(f"average PDF size:            {written / len(letters) / 1024:8.1f} KiB")
    print(f"peak memory:                 {peak_rss_mb():8.1f} MiB")
    print(f"ratio breachbook / naive:    {ours / naive:8.2f}  (target >= 1.0)")


if __name__ == "__main__":
    main()
