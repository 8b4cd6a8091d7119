"""Printed post into a print folder: one PDF per letter and merged print files per obligation
and country, the files a print-and-mail service (or the office printer) takes.

Layout: `<folder>/<incident>/<rule>/<country>/letters/<customer>.pdf` and
`<folder>/<incident>/<rule>/<country>/print-0001.pdf`. Names are ids only. Each file is
written whole through a temporary file and a rename, so the shop never takes half a letter.

Merging uses pypdf: the letters to merge were written earlier, perhaps by a run that crashed,
and only a PDF library can join finished files without rendering them again.
"""

from __future__ import annotations

from pathlib import Path

from breachbook.connectors import folder_writable
from breachbook.errors import BreachbookError
from breachbook.ports import Check, PrintedLetter
from breachbook.post import merge, write_whole


class PrintFolderError(BreachbookError):
    """A letter to merge is missing from the print folder."""


class FolderPrintShop:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def describe(self) -> str:
        return f"print folder {self.folder}"

    def check_can_print(self) -> Check:
        return folder_writable(self.folder)

    def _group(self, incident_id: str, rule_id: str, country: str) -> Path:
        return self.folder / incident_id / rule_id / country

    def _letter(self, incident_id: str, rule_id: str, country: str, customer_id: str) -> Path:
        return self._group(incident_id, rule_id, country) / "letters" / f"{customer_id}.pdf"

    def print_letter(self, letter: PrintedLetter) -> str:
        target = self._letter(
            letter.incident_id, letter.rule_id, letter.country, letter.customer_id
        )
        write_whole(target, letter.pdf)
        return str(target.relative_to(self.folder))

    def handed_over(
        self, incident_id: str, rule_id: str, country: str, customer_id: str
    ) -> str | None:
        """Written whole or not at all (renamed into place), so a file there is the letter."""
        target = self._letter(incident_id, rule_id, country, customer_id)
        return str(target.relative_to(self.folder)) if target.is_file() else None

    def assemble(
        self, incident_id: str, rule_id: str, country: str, number: int, references: list[str]
    ) -> str:
        target = self._group(incident_id, rule_id, country) / f"print-{number:04d}.pdf"
        sources = [self.folder / reference for reference in references]
        missing = [
            ref for ref, source in zip(references, sources, strict=True) if not source.is_file()
        ]
        if missing:
            raise PrintFolderError(
                f"{missing[0]}: printed letter missing from {self.folder}; print file "
                f"{target.name} not assembled"
            )
        merge(sources, target)
        return str(target.relative_to(self.folder))
