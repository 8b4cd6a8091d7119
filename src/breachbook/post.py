"""Printed post: which letters go on paper, and each one as a PDF ready for the envelope.

A letter is printed when its customer gave no email address, or when its rule asks for
notice in writing (`written_notice`). The text is the letter LetterWriter renders for email,
from the same context; the print template (templates/print/letter.html.j2, autoescaped, so a
hostile name stays text) adds the sender, the address block in the envelope window and the
paper size of the destination country: US Letter in the US and Canada, A4 elsewhere.

PDFs are made with WeasyPrint: HTML and CSS like the other templates, and Pango with
fontconfig picks a font per script, so Chinese, Japanese and German render from the Noto
fonts of the OS (Debian fonts-noto-core, fonts-noto-cjk), whose CJK faces are OpenType CFF
that ReportLab cannot embed. Nothing here logs or raises with customer data.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pypdf import PdfWriter

from breachbook.errors import TemplateFieldError
from breachbook.letters import babel_locale
from breachbook.models import Customer, Organisation
from breachbook.rules import Rule
from breachbook.templates import Renderer

if TYPE_CHECKING:
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

PRINT_TEMPLATE = "print/letter.html.j2"
PRINT_STYLE = "print/letter.css"

LETTER_PAPER = frozenset({"US", "CA"})
"""Countries whose post uses US Letter; everywhere else A4 (ISO 216)."""

CITY_LINES = {
    "US": "{city}, {region} {postal_code}",
    "CA": "{city} {region}  {postal_code}",
    "AU": "{city} {region} {postal_code}",
    "GB": "{city}\n{postal_code}",
}
"""How the city line of an address is written where it is not 'postal code, city'."""


def by_post(customer: Customer, rule: Rule) -> bool:
    """Whether this customer's letter for this rule is printed and posted."""
    return not customer.has_email or rule.written_notice


def paper_for(country: str) -> str:
    return "letter" if country in LETTER_PAPER else "A4"


def address_lines(customer: Customer, language: str) -> list[str]:
    """The address block: name, street, city line, country in the letter's language."""
    city = CITY_LINES.get(customer.country, "{postal_code} {city}").format(
        city=customer.city, region=customer.region, postal_code=customer.postal_code
    )
    country = babel_locale(language).territories.get(customer.country, customer.country)
    lines = [customer.full_name, *customer.street.splitlines(), *city.splitlines(), country]
    return [line.strip() for line in lines if line.strip()]


def paragraphs(customer: Customer, body: str) -> list[str]:
    """The letter's paragraphs, less the name-and-address paragraph an email letter opens
    with: on paper the address block in the envelope window says it."""
    parts = [part.strip("\n") for part in body.split("\n\n") if part.strip()]
    if parts and parts[0].splitlines()[0].strip() == customer.full_name.strip():
        parts = parts[1:]
    return parts


def letter_language(renderer: Renderer, rule: Rule, customer: Customer) -> str:
    """The language the customer's letter is written in (the template LetterWriter picks)."""
    spec = rule.letter
    assert spec is not None
    name = renderer.pick_locale(f"letters/{spec.template}", customer.locale, spec.default_locale)
    return Path(name).name.removesuffix(".txt.j2")


class PdfLetters:
    """Renders letters to PDF, sharing fonts and the style sheet between letters."""

    def __init__(self, renderer: Renderer, org: Organisation, banner: str | None) -> None:
        self.renderer = renderer
        self.org = org
        self.banner = banner
        self._style_file = renderer.templates_dir / PRINT_STYLE
        if not self._style_file.is_file():
            raise TemplateFieldError(f"{self._style_file}: print style sheet not found")

    @functools.cached_property
    def _typesetting(self) -> tuple[CSS, FontConfiguration]:
        """The style sheet and fonts, loaded at the first letter printed: WeasyPrint's import
        alone takes most of a second, and most runs (every tabletop round) print none."""
        from weasyprint import CSS
        from weasyprint.text.fonts import FontConfiguration

        fonts = FontConfiguration()
        return CSS(filename=str(self._style_file), font_config=fonts), fonts

    def html(self, customer: Customer, rule: Rule, subject: str, body: str, language: str) -> str:
        context: dict[str, Any] = {
            "lang": language,
            "paper": paper_for(customer.country),
            "banner": self.banner or "",
            "sender": [self.org.legal_name, *self.org.contact.postal.splitlines()],
            "recipient": address_lines(customer, language),
            "subject": subject,
            "paragraphs": paragraphs(customer, body),
            "customer_id": customer.id,
            "rule_id": rule.id,
        }
        try:
            return self.renderer.render(PRINT_TEMPLATE, context)
        except TemplateFieldError as exc:
            raise TemplateFieldError(f"customer {customer.id}: {exc}") from None

    def pdf(self, customer: Customer, rule: Rule, subject: str, body: str, language: str) -> bytes:
        """One letter as PDF bytes (personal data: written only where letters belong)."""
        from weasyprint import HTML

        style, fonts = self._typesetting
        page = HTML(string=self.html(customer, rule, subject, body, language))
        try:
            pdf: bytes = page.write_pdf(stylesheets=[style], font_config=fonts)
        except Exception as exc:
            raise TemplateFieldError(
                f"customer {customer.id}: {type(exc).__name__} while printing the letter for "
                f"{rule.id} (message withheld: it may quote customer data)"
            ) from None
        return pdf


def write_whole(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a temporary file and a rename: whole or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def merge(sources: Iterable[Path], target: Path) -> int:
    """Join finished PDFs into one print file (pypdf: no rendering again); returns pages."""
    merged = PdfWriter()
    for source in sources:
        merged.append(source)
    pages = len(merged.pages)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{target.name}")
    with tmp.open("wb") as handle:
        merged.write(handle)
    os.replace(tmp, target)
    return pages
