"""Printed post through the product's path (the real wiring and engine, a folder print shop):
customers without an email address get a printed letter, exactly once per obligation; a drill
renders the PDFs into its own folder only; pages are looked at as a person would (rendered to
an image by poppler's pdftoppm, from .ci/run); and no customer's data reaches the ledger."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
import yaml
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from breachbook.clock import FixedStepClock, SystemClock
from breachbook.connectors.print_post import FolderPrintShop
from breachbook.deadlines import deliveries
from breachbook.demo import DemoWorld
from breachbook.engine import RunResult, Status
from breachbook.errors import BreachbookError
from breachbook.journal import RunJournal
from breachbook.ledger import ItemStatus, Ledger
from breachbook.models import Incident
from breachbook.modes import Mode
from breachbook.ports import Check, OutgoingLetter, PrintedLetter
from breachbook.run import execute
from breachbook.settings import CONTENT_FOLDERS, Settings
from breachbook.wiring import RunRequest, demo_settings
from tests.conftest import ROOT, T0, Fakes, live_ledger
from tests.fakes import RecordingDatabaseAdmin, RecordingMail

INCIDENT = "demo-2026-antiques-leak"
HOSTILE = "<b>Eve</b> & {{ 7 * 7 }} <script>alert(1)</script>"
SAMPLES = ROOT / "tests" / "output"
"""One page per locale, kept for a person to look at (git-ignored)."""


class CountingPrintShop(FolderPrintShop):
    """The real print folder, counting every letter handed over, by key."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.printed: Counter[str] = Counter()

    def print_letter(self, letter: PrintedLetter) -> str:
        reference = super().print_letter(letter)
        self.printed[letter.key] += 1
        return reference


class EmailOnlyMail(RecordingMail):
    """Sends only to customers with an email address (as SMTP delivery does)."""

    def send(self, letter: OutgoingLetter) -> str:
        if not letter.recipient:
            raise BreachbookError(f"letter {letter.key}: no email address")
        return super().send(letter)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the run catches it."""


class DyingPrintShop(CountingPrintShop):
    """Writes letters until the `die_after`th, then dies after writing it and before the
    ledger can record it (the worst moment for exactly once), or, `before_writing`, as it
    was about to write it."""

    def __init__(self, folder: Path, die_after: int, before_writing: bool = False) -> None:
        super().__init__(folder)
        self.die_after = die_after
        self.before_writing = before_writing

    def print_letter(self, letter: PrintedLetter) -> str:
        if self.before_writing and sum(self.printed.values()) + 1 == self.die_after:
            raise Killed
        reference = super().print_letter(letter)
        if sum(self.printed.values()) == self.die_after:
            raise Killed
        return reference


def posted_world(folder: Path, small_world: DemoWorld) -> tuple[DemoWorld, dict[str, str]]:
    """A copy of the small demo world where one customer of each locale gave no email
    address (one of them with a hostile name); returns those customers' id -> locale."""
    shutil.copytree(small_world.folder, folder)
    world = DemoWorld(folder, folder / small_world.customers_db.name, folder / "incident.yaml")
    db = sqlite3.connect(world.customers_db)
    chosen = db.execute(
        "SELECT min(c.id), c.locale FROM customers c JOIN payment_cards p ON p.customer_id = c.id "
        "GROUP BY c.locale, c.region"
    ).fetchall()
    for cid, _ in chosen:
        db.execute("UPDATE customers SET email = '' WHERE id = ?", (cid,))
    german = min(cid for cid, locale in chosen if locale == "de-DE")
    db.execute("UPDATE customers SET full_name = ? WHERE id = ?", (HOSTILE, german))
    db.commit()
    db.close()
    return world, dict(chosen)


@pytest.fixture
def world(small_world: DemoWorld, tmp_path: Path) -> tuple[DemoWorld, dict[str, str]]:
    return posted_world(tmp_path / "world", small_world)


def settings_for(world: DemoWorld, tmp_path: Path, **extra: object) -> Settings:
    base = Settings(home=tmp_path / "home", print_dir=tmp_path / "print", **extra)  # type: ignore[arg-type]
    return demo_settings(base, world.customers_db, world.folder)


def run(
    mode: Mode,
    settings: Settings,
    world: DemoWorld,
    out: Path,
    printer: FolderPrintShop | None = None,
    fakes: Fakes | None = None,
    run_id: str | None = None,
) -> RunResult:
    fakes = fakes or Fakes(out.parent / f"fakes-{out.name}")
    adapters = dataclasses.replace(fakes.adapters(), printer=printer)
    confirm = Incident.from_file(world.incident_file).id if mode is Mode.LIVE else None
    _, result = execute(
        RunRequest(
            mode=mode,
            incident_file=world.incident_file,
            out_dir=out,
            confirm_incident_id=confirm,
            run_id=run_id,
        ),
        settings=settings,
        clock=FixedStepClock(T0),
        adapters=adapters,
    )
    return result


def owed_by_post(result: RunResult, out: Path, posted: dict[str, str]) -> set[str]:
    """rule/customer keys of the posted customers' letters, from the recipients lists."""
    keys = set()
    for listing in (out / "recipients").glob("*.txt"):
        ids = set(listing.read_text().split())
        keys |= {f"{listing.stem}/{cid}" for cid in ids & set(posted)}
    return keys


def personal_data_in(text: str, customers_db: Path, ids: set[str]) -> list[str]:
    """Ids of the given customers whose name, street or phone is in text (not digits a hash
    may hold by chance, like a postal code)."""
    db = sqlite3.connect(customers_db)
    rows = db.execute("SELECT id, full_name, street, phone FROM customers")
    found = [row[0] for row in rows if row[0] in ids and any(v in text for v in row[1:] if v)]
    db.close()
    return found


def print_entries(result: RunResult) -> list[Status]:
    return [e.status for e in result.entries() if e.step_id == "print-letters"]


def test_drill_renders_each_posted_letter_into_its_own_folder_and_nothing_else(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    world, posted = posted_world(tmp_path / "world", small_world)
    settings = settings_for(world, tmp_path)
    out = tmp_path / "drill"
    result = run(Mode.DRILL, settings, world, out)

    owed = owed_by_post(result, out, posted)
    assert len(owed) >= 10  # every locale of the demo world, some owed two letters
    proofs = {f"{p.parent.parent.name}/{p.stem}": p for p in (out / "print").glob("*/*/*.pdf")}
    assert set(proofs) == owed
    assert not (tmp_path / "print").exists()  # the print folder is LIVE's, untouched
    assert set(print_entries(result)) == {Status.PLANNED}
    plan = json.loads((out / "plan.json").read_text())
    planned = [e for e in plan["entries"] if e["step_id"] == "print-letters"]
    assert {e["target"] for e in planned} == {key.split("/")[0] for key in owed}

    for key, path in proofs.items():
        reader = PdfReader(path)
        text = "".join(page.extract_text() for page in reader.pages)
        assert "[DRILL]" in text
        width, height = (round(float(v)) for v in reader.pages[0].mediabox[2:])
        country = path.parent.name
        assert (width, height) == ((612, 792) if country in ("US", "CA") else (595, 842)), key
    # a hostile name is printed as written: not markup, not a template
    german = [p for k, p in proofs.items() if posted[k.split("/")[1]] == "de-DE"]
    assert german
    text = " ".join(PdfReader(german[0]).pages[0].extract_text().split())
    assert "<b>Eve</b> & {{ 7 * 7 }} <script>alert(1)</script>" in text

    # one merged print file per obligation and country, every letter's pages in it
    for merged in (out / "print").glob("*/*.pdf"):
        letters = list((merged.parent / merged.stem).glob("*.pdf"))
        pages = sum(len(PdfReader(p).pages) for p in letters)
        assert letters and len(PdfReader(merged).pages) == pages


def dark_share(pdf: Path, page: int = 1) -> float:
    """The share of dark pixels on one page, rendered by pdftoppm as a greyscale PGM."""
    pgm = subprocess.run(
        ["pdftoppm", "-gray", "-r", "40", "-f", str(page), "-l", str(page), str(pdf)],
        capture_output=True,
        check=True,
    ).stdout
    _, size, _, pixels = pgm.split(b"\n", 3)
    width, height = (int(v) for v in size.split())
    raster = pixels[: width * height]
    return sum(1 for value in raster if value < 128) / len(raster)


def embedded_fonts(pdf: Path) -> set[str]:
    """The names of the fonts the PDF's pages embed."""
    fonts = set()
    for page in PdfReader(pdf).pages:
        resources = cast(DictionaryObject, page["/Resources"])
        for font in cast(DictionaryObject, resources["/Font"]).values():
            fonts.add(str(cast(DictionaryObject, font.get_object())["/BaseFont"]))
    return fonts


def test_a_page_per_locale_is_printed_legibly_and_chinese_in_a_cjk_font(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    world, posted = posted_world(tmp_path / "world", small_world)
    out = tmp_path / "drill"
    run(Mode.DRILL, settings_for(world, tmp_path), world, out)
    SAMPLES.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Path] = {}
    for path in sorted((out / "print").glob("*/*/*.pdf")):
        seen.setdefault(posted[path.stem], path)
    assert set(seen) == set(posted.values())
    blank = tmp_path / "blank.pdf"
    from weasyprint import HTML

    HTML(string="<p></p>").write_pdf(blank)
    assert dark_share(blank) == 0
    for locale, path in seen.items():
        share = dark_share(path)
        assert 0.005 < share < 0.5, (locale, share)  # ink on the page, not a black box
        subprocess.run(
            [
                "pdftoppm",
                "-png",
                "-r",
                "60",
                "-f",
                "1",
                "-l",
                "1",
                "-singlefile",
                str(path),
                str(SAMPLES / f"print-{locale}"),
            ],
            check=True,
        )
        assert (SAMPLES / f"print-{locale}.png").stat().st_size > 5000
    chinese = seen["zh-CN"]
    fonts = embedded_fonts(chinese)
    assert any("CJK" in name and "SC" in name for name in fonts), fonts
    text = PdfReader(chinese).pages[0].extract_text()
    assert "个人信息泄露通知" in text  # the glyphs map back to the text: not boxes
    assert not any("CJK" in name for name in embedded_fonts(seen["de-DE"]))


def test_live_prints_each_posted_letter_once_and_a_rerun_prints_nothing_again(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    world, posted = posted_world(tmp_path / "world", small_world)
    settings = settings_for(world, tmp_path)
    shop = CountingPrintShop(tmp_path / "print")
    mail = Fakes(tmp_path / "fakes", mail=EmailOnlyMail())
    first = run(Mode.LIVE, settings, world, tmp_path / "run-1", shop, mail)
    assert set(print_entries(first)) == {Status.COMPLETED}
    owed = owed_by_post(first, tmp_path / "run-1", posted)
    assert set(shop.printed) == owed and set(shop.printed.values()) == {1}
    letters = list((tmp_path / "print" / INCIDENT).glob("*/*/letters/*.pdf"))
    assert len(letters) == len(owed)
    merged = sorted((tmp_path / "print" / INCIDENT).glob("*/*/print-*.pdf"))
    assert {p.name for p in merged} == {"print-0001.pdf"}
    assert sum(len(PdfReader(p).pages) for p in merged) == sum(
        len(PdfReader(p).pages) for p in letters
    )
    first_page = next(p for p in letters if p.parent.parent.name == "US")
    assert "[DRILL]" not in PdfReader(first_page).pages[0].extract_text()

    # a printed letter counts as delivered for the deadline clock and the notices
    ledger = live_ledger(settings)
    journal = RunJournal(ledger, INCIDENT, "check", "tests", "LIVE", FixedStepClock(T0))
    chinese = (tmp_path / "run-1" / "recipients" / "cn-pipl-57.txt").read_text().split()
    emailed = [m for m in mail.mail.sent if m.key.startswith("cn-pipl-57/")]
    assert len(emailed) < len(chinese) == deliveries(journal)["cn-pipl-57"].delivered
    ledger.close()

    again = run(Mode.LIVE, settings, world, tmp_path / "run-2", shop)
    assert set(print_entries(again)) == {Status.COMPLETED}
    assert set(shop.printed.values()) == {1}
    assert sorted((tmp_path / "print" / INCIDENT).glob("*/*/print-*.pdf")) == merged

    ledger = live_ledger(settings)
    items = ledger.item_statuses(INCIDENT, "letters.print")
    assert set(items) == owed and set(items.values()) == {ItemStatus.DONE}
    assert ledger.verify() == []
    audit = json.dumps(
        [
            [row.target, row.details]
            for row in ledger.entries(INCIDENT)
            if row.step_id in ("letters.print", "print-letters")
        ]
    )
    ledger.close()
    assert personal_data_in(audit, world.customers_db, set(posted)) == []
    assert "Eve" not in audit


def test_a_run_killed_mid_print_prints_no_letter_twice_and_resumed_finds_the_one_in_doubt(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    world, posted = posted_world(tmp_path / "world", small_world)
    settings = settings_for(world, tmp_path)
    dying = DyingPrintShop(tmp_path / "print", die_after=4)
    with pytest.raises(Killed):
        run(Mode.LIVE, settings, world, tmp_path / "run-1", dying, run_id=KILLED_RUN)
    shop = CountingPrintShop(tmp_path / "print")
    again = run(Mode.LIVE, settings, world, tmp_path / "run-2", shop)
    owed = owed_by_post(again, tmp_path / "run-2", posted)

    both = dying.printed + shop.printed
    assert set(both) == owed
    assert max(both.values()) == 1  # nothing printed twice
    items = print_items(settings)
    in_doubt = [key for key, status in items.items() if status is not ItemStatus.DONE]
    # another run leaves the letter the killed run holds to that run: never printed again
    assert len(in_doubt) == 1 and items[in_doubt[0]] is ItemStatus.CLAIMED
    assert in_doubt[0] in dying.printed
    assert Status.INCOMPLETE in print_entries(again)

    # the killed run resumed: its letter is in the print folder, settled as printed, not
    # printed again, and goes into a print file with the others
    resumed = CountingPrintShop(tmp_path / "print")
    run(Mode.LIVE, settings, world, tmp_path / "run-1", resumed, run_id=KILLED_RUN)
    assert resumed.printed == Counter()
    items = print_items(settings)
    assert set(items) == owed and set(items.values()) == {ItemStatus.DONE}
    assert _reconciled(settings) == [in_doubt[0]]
    merged = list((tmp_path / "print" / INCIDENT).glob("*/*/print-*.pdf"))
    letters = list((tmp_path / "print" / INCIDENT).glob("*/*/letters/*.pdf"))
    assert len(letters) == len(owed)
    pages = sum(len(PdfReader(p).pages) for p in merged)
    assert pages == sum(len(PdfReader(p).pages) for p in letters)


def test_a_run_killed_before_it_wrote_a_letter_prints_that_letter_when_resumed(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    world, posted = posted_world(tmp_path / "world", small_world)
    settings = settings_for(world, tmp_path)
    dying = DyingPrintShop(tmp_path / "print", die_after=3, before_writing=True)
    with pytest.raises(Killed):
        run(Mode.LIVE, settings, world, tmp_path / "run-1", dying, run_id=KILLED_RUN)
    assert sum(dying.printed.values()) == 2
    held = [key for key, status in print_items(settings).items() if status is ItemStatus.CLAIMED]
    assert len(held) == 1 and held[0] not in dying.printed

    resumed = CountingPrintShop(tmp_path / "print")
    result = run(Mode.LIVE, settings, world, tmp_path / "run-1", resumed, run_id=KILLED_RUN)
    owed = owed_by_post(result, tmp_path / "run-1", posted)
    assert held[0] in resumed.printed
    both = dying.printed + resumed.printed
    assert set(both) == owed and max(both.values()) == 1
    assert set(print_items(settings).values()) == {ItemStatus.DONE}
    assert _reconciled(settings) == []


KILLED_RUN = "run0printkill"


def print_items(settings: Settings) -> dict[str, ItemStatus]:
    ledger = live_ledger(settings)
    items = ledger.item_statuses(INCIDENT, "letters.print")
    assert ledger.verify() == []
    ledger.close()
    return items


def _reconciled(settings: Settings) -> list[str]:
    """Keys of the print items the ledger shows settled as found made."""
    ledger = live_ledger(settings)
    found = [
        row.target
        for row in ledger.entries(INCIDENT)
        if row.step_id == "letters.print" and row.details.get("reconciled") == "found made"
    ]
    ledger.close()
    return found


def test_printing_waits_for_containment_the_letters_state(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    world, _ = posted_world(tmp_path / "world", small_world)
    settings = settings_for(world, tmp_path)
    shop = CountingPrintShop(tmp_path / "print")
    refusing = Fakes(
        tmp_path / "fakes",
        database=RecordingDatabaseAdmin(check_answer=Check.failed("no privilege", "fake")),
    )
    result = run(Mode.LIVE, settings, world, tmp_path / "run", shop, refusing)
    entries = [e for e in result.entries() if e.step_id == "print-letters"]
    held = [e for e in entries if e.status is Status.BLOCKED]
    assert held and all("lock-db-role" in e.details["waits_for"] for e in held)
    # Massachusetts' letters say nothing of what was done: they need not wait
    assert {e.target for e in entries if e.status is Status.COMPLETED} <= {"us-ma"}
    assert all(not key.startswith(tuple(e.target for e in held)) for key in shop.printed)


def test_a_rule_that_asks_for_written_notice_prints_to_customers_with_email_too(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    world, posted = posted_world(tmp_path / "world", small_world)
    content = tmp_path / "content"
    for folder in CONTENT_FOLDERS:
        shutil.copytree(ROOT / folder, content / folder)
    rules_file = content / "rules" / "obligations.yaml"
    rules = yaml.safe_load(rules_file.read_text())
    for rule in rules["rules"]:
        if rule["id"] == "us-ny":
            rule["written_notice"] = True
    rules_file.write_text(yaml.safe_dump(rules, allow_unicode=True))
    settings = settings_for(world, tmp_path, content_dir=content)
    out = tmp_path / "drill"
    run(Mode.DRILL, settings, world, out)
    new_york = set((out / "recipients" / "us-ny.txt").read_text().split())
    assert len(new_york) > 5
    assert {p.stem for p in (out / "print" / "us-ny" / "US").glob("*.pdf")} == new_york
    texas = set((out / "recipients" / "us-tx.txt").read_text().split())
    assert {p.stem for p in (out / "print" / "us-tx" / "US").glob("*.pdf")} == texas & set(posted)


KILLABLE = """
import sys
from pathlib import Path
from breachbook.connectors.print_post import FolderPrintShop
from breachbook.modes import Mode
from breachbook.ports import PrintedLetter
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import Adapters, RunRequest, demo_settings
from tests.fakes import RecordingCloud, RecordingDatabaseAdmin, RecordingMail, ScriptedApprovals
world, home, prints, log = (Path(arg) for arg in sys.argv[1:5])


class LoggingShop(FolderPrintShop):
    def print_letter(self, letter: PrintedLetter) -> str:
        reference = super().print_letter(letter)
        with log.open("a") as handle:
            handle.write(letter.key + "\\n")
        return reference


execute(
    RunRequest(
        mode=Mode.LIVE,
        incident_file=world / "incident.yaml",
        confirm_incident_id="demo-2026-antiques-leak",
    ),
    settings=demo_settings(Settings(home=home), world / "customers.sqlite", world),
    adapters=Adapters(
        database=RecordingDatabaseAdmin(),
        cloud=RecordingCloud(),
        mail=RecordingMail(),
        approvals=ScriptedApprovals(approve={"legal", "comms", "incident-lead"}),
        printer=LoggingShop(prints),
    ),
)
"""


def test_a_process_killed_with_sigkill_while_printing_prints_no_letter_twice(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    world, _ = posted_world(tmp_path / "world", small_world)
    db = sqlite3.connect(world.customers_db)
    db.execute("UPDATE customers SET email = '' WHERE id IN (SELECT id FROM customers LIMIT 40)")
    db.commit()
    db.close()
    home, prints, log = tmp_path / "home", tmp_path / "print", tmp_path / "printed.log"
    command = [sys.executable, "-c", KILLABLE, str(world.folder), str(home), str(prints), str(log)]
    process = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 300
    while not (log.exists() and log.read_text().count("\n") >= 10):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = log.read_text().split()

    subprocess.run(command, cwd=ROOT, check=False, capture_output=True)
    printed = Counter(log.read_text().split())
    assert max(printed.values()) == 1 and len(printed) > len(before) >= 10
    ledger = Ledger(f"sqlite:///{home / 'ledger.sqlite'}", SystemClock(), create=False)
    items = ledger.item_statuses(INCIDENT, "letters.print")
    assert ledger.verify() == []
    ledger.close()
    stuck = [key for key, status in items.items() if status is not ItemStatus.DONE]
    assert len(stuck) <= 1 and all(items[key] is ItemStatus.CLAIMED for key in stuck)
    done = {key for key, status in items.items() if status is ItemStatus.DONE}
    assert done <= set(printed) and set(printed) - done <= set(stuck)
