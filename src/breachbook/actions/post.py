"""Printed post: each letter that goes on paper, exactly once per (incident, customer,
obligation), then the merged print files per obligation and country.

prepare renders every posted letter as a PDF into the run's own folder (`print/`), in every
mode, so a drill rehearses with them; apply (LIVE) renders each letter again from the
customer record as it is now and hands it to the print shop through the ledger, like email
delivery. Only ids and counts reach the ledger, plans and Prefect.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from breachbook.actions.base import Action, Prepared, register, require
from breachbook.actions.notify import ClaimNotDone, NoArgs, assessment, letter_writer
from breachbook.context import RunContext
from breachbook.errors import BreachbookError
from breachbook.journal import INCIDENT_SCOPE, Once
from breachbook.ledger import ItemStatus
from breachbook.models import Customer
from breachbook.notify import LetterWriter, Obligations, iter_valid_customers
from breachbook.ports import Changed, Check, PrintedLetter, PrintShop, Verdict, not_configured
from breachbook.post import PdfLetters, by_post, letter_language, merge, write_whole
from breachbook.rules import Rule

PRINT_SETTING = "set BREACHBOOK_PRINT_DIR"
PRINT_ROLL = "print-roll"
PRINT_FILES = "print-files"
PROOFS = "print"


class PrintRoll(BaseModel):
    """The letters of one obligation that go by post in this run: counts, no personal data."""

    rule_id: str
    letters: int = 0
    by_country: dict[str, int] = Field(default_factory=dict)


class PrintFile(BaseModel):
    """One merged print file: recorded with its letters before it is written, and with its
    reference after, so a run that stops between the two writes the same file again."""

    country: str
    number: int
    keys: list[str]
    references: list[str]
    file: str = ""


class PrintFiles(BaseModel):
    files: list[PrintFile] = Field(default_factory=list)


def proof_path(rule_id: str, country: str, customer_id: str) -> str:
    return f"{PROOFS}/{rule_id}/{country}/{customer_id}.pdf"


def posted(ctx: RunContext) -> Iterator[tuple[Customer, Rule]]:
    """The affected customers' letters that go by post, read afresh from the directory."""
    obligations = Obligations(ctx.rules, ctx.incident)
    for customer in iter_valid_customers(ctx.connectors.customers, ctx.incident, []):
        for rule in obligations.for_customer(customer):
            if by_post(customer, rule):
                yield customer, rule


@register
class PrintLetters(Action[NoArgs]):
    name = "letters.print"
    summary = "Print the letters that go by post (no email address, or a law that asks for writing), exactly once each."
    changes = "writes each posted letter's PDF and the merged print files into the print folder"
    args_model = NoArgs
    itemized = True

    def prepare(self, args: NoArgs, ctx: RunContext) -> Prepared:
        """Every posted letter as a PDF in the run's folder, and one merged file per
        obligation and country, for people to review (a drill's carry its DRILL banner)."""
        writer = letter_writer(ctx)
        pdfs = PdfLetters(ctx.renderer, ctx.playbook.organisation, ctx.workspace.banner)
        groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
        for customer, rule in posted(ctx):
            pdf = _render(pdfs, writer, ctx, customer, rule)
            path = ctx.workspace.path(proof_path(rule.id, customer.country, customer.id))
            write_whole(path, pdf)
            groups[(rule.id, customer.country)].append(path)
        rolls: dict[str, PrintRoll] = {
            rule_id: PrintRoll(rule_id=rule_id) for rule_id in assessment(ctx).individual
        }
        documents = []
        for (rule_id, country), paths in sorted(groups.items()):
            roll = rolls.setdefault(rule_id, PrintRoll(rule_id=rule_id))
            roll.letters += len(paths)
            roll.by_country[country] = len(paths)
            merged = f"{PROOFS}/{rule_id}/{country}.pdf"
            merge(paths, ctx.workspace.path(merged))
            documents.append(merged)
        for roll in rolls.values():
            ctx.journal.put(PRINT_ROLL, roll.rule_id, roll)
        return Prepared(
            documents,
            {
                "printed_letters": sum(len(paths) for paths in groups.values()),
                "print_files": len(groups),
            },
        )

    def _roll(self, ctx: RunContext, rule_id: str) -> PrintRoll:
        return ctx.journal.get(PRINT_ROLL, rule_id, PrintRoll) or PrintRoll(rule_id=rule_id)

    def targets(self, args: NoArgs, ctx: RunContext) -> list[str]:
        """The obligations with letters to post in this run."""
        return [
            rule_id
            for rule_id in sorted(assessment(ctx).individual)
            if self._roll(ctx, rule_id).letters
        ]

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        printer = ctx.connectors.printer
        check = (
            not_configured("print", PRINT_SETTING) if printer is None else printer.check_can_print()
        )
        if check.verdict is Verdict.FAILED:
            return check
        waits = letter_writer(ctx, settle=True).waits_for(ctx.rules.rule(target))
        if waits:
            return check.waiting_for(
                waits,
                f"waits for {', '.join(waits)}: these letters state what was done, and the "
                "ledger does not show it done yet; a later run prints them once it is",
            )
        return check

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        printer = ctx.connectors.printer
        via = printer.describe() if printer else "(no print folder)"
        roll = self._roll(ctx, target)
        where = ", ".join(f"{country} {n}" for country, n in sorted(roll.by_country.items()))
        would = letter_writer(ctx).would_claim(ctx.rules.rule(target))
        verb = "is" if len(would) == 1 else "are"
        claims = f", once {', '.join(would)} {verb} done (the letters state it)" if would else ""
        return (
            f"print {roll.letters} letters for {target} ({where}) into {via}, then merge them "
            f"into one print file per country{claims}"
        )

    def apply_items(self, args: NoArgs, target: str, ctx: RunContext) -> Counter[Once]:
        """Each letter is one item: claimed, rendered from the customer's record as it is
        now, handed to the print shop and settled; then the letters printed and not yet in
        a print file are merged, per country. A letter a killed process of this run left in
        doubt is looked for in the print shop: settled as printed if it is there, else
        printed (a run resumed under its id; another run leaves it to its holder)."""
        printer = require(ctx.connectors.printer, "print", PRINT_SETTING)
        rule = ctx.rules.rule(target)
        writer = letter_writer(ctx)
        pdfs = PdfLetters(ctx.renderer, ctx.playbook.organisation, None)
        known = ctx.journal.statuses(self.name)
        tally: Counter[Once] = Counter()
        for customer, owed in posted(ctx):
            if owed.id != target:
                continue
            key = f"{target}/{customer.id}"
            act = functools.partial(_print, printer, pdfs, writer, ctx, rule, customer, key)
            look = functools.partial(_handed_over, printer, ctx, rule, customer)
            outcome, _ = ctx.journal.once(self.name, key, act, known, in_doubt=look)
            tally[outcome] += 1
        tally.update(self._assemble(ctx, printer, target))
        return tally

    def _assemble(self, ctx: RunContext, printer: PrintShop, rule_id: str) -> Counter[Once]:
        """Merge the letters of this obligation printed (in any run) and not yet in a print
        file into one new file per country; a file recorded but not written is written."""
        record = ctx.journal.get(PRINT_FILES, rule_id, PrintFiles, INCIDENT_SCOPE) or PrintFiles()
        merged = {key for printed in record.files for key in printed.keys}
        fresh: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for item in ctx.journal.items(self.name):
            if (
                item.status is ItemStatus.DONE
                and item.key.startswith(f"{rule_id}/")
                and item.key not in merged
            ):
                fresh[str(item.details["country"])].append(
                    (item.key, str(item.details["reference"]))
                )
        for country, letters in sorted(fresh.items()):
            number = 1 + sum(1 for printed in record.files if printed.country == country)
            record.files.append(
                PrintFile(
                    country=country,
                    number=number,
                    keys=[key for key, _ in letters],
                    references=[reference for _, reference in letters],
                )
            )
        if fresh:
            ctx.journal.put(PRINT_FILES, rule_id, record, INCIDENT_SCOPE)
        tally: Counter[Once] = Counter()
        for printed in record.files:
            if printed.file:
                continue
            target = f"{rule_id}/{printed.country}/print-{printed.number:04d}"
            try:
                printed.file = printer.assemble(
                    ctx.incident.id, rule_id, printed.country, printed.number, printed.references
                )
            except BreachbookError as exc:
                ctx.record(self.name, target, "outcome", "failed", {"error": str(exc)})
                tally[Once.FAILED] += 1
                continue
            ctx.journal.put(PRINT_FILES, rule_id, record, INCIDENT_SCOPE)
            ctx.record(
                self.name,
                target,
                "outcome",
                "done",
                {"file": printed.file, "letters": len(printed.keys)},
            )
        return tally


def _render(
    pdfs: PdfLetters, writer: LetterWriter, ctx: RunContext, customer: Customer, rule: Rule
) -> bytes:
    """One letter's PDF, from the same context and text as its email."""
    exposed = customer.categories & frozenset(ctx.incident.data_categories)
    subject, body = writer.render(customer, rule, exposed)
    language = letter_language(ctx.renderer, rule, customer)
    return pdfs.pdf(customer, rule, subject, body, language)


def _handed_over(
    printer: PrintShop, ctx: RunContext, rule: Rule, customer: Customer
) -> Changed | None:
    """A letter left in doubt by a killed run: in the print folder already, or not."""
    country = customer.country
    found = printer.handed_over(ctx.incident.id, rule.id, country, customer.id)
    return None if found is None else Changed({"reference": found, "country": country})


def _print(
    printer: PrintShop,
    pdfs: PdfLetters,
    writer: LetterWriter,
    ctx: RunContext,
    rule: Rule,
    customer: Customer,
    key: str,
) -> Changed:
    """Print one letter; never one that states a step done the ledger does not show done."""
    held = writer.waits_for(rule) + writer.would_claim(rule)
    if held:
        raise ClaimNotDone(
            f"letter {key} would state {', '.join(held)} done; the ledger does not show it"
        )
    pdf = _render(pdfs, writer, ctx, customer, rule)
    reference = printer.print_letter(
        PrintedLetter(key, ctx.incident.id, rule.id, customer.country, customer.id, pdf)
    )
    return Changed(
        {
            "reference": reference,
            "country": customer.country,
            "sha256": hashlib.sha256(pdf).hexdigest(),
        }
    )
