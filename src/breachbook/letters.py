"""What a letter may say, as typed models and data.

Each template family has a pydantic context model: the fields it may use and nothing else, so
a field the law forbids (Massachusetts: the nature of the breach, the number of residents) is
not there to render, and StrictUndefined stops a template that names it. Per rule, the fields
its law requires are made non-empty in a model derived from the family's, so an empty one
stops the run naming the rule, the template and the field, never a customer's value.

What a letter says about its reader comes from data beside the templates
(templates/letters/): advice and consequences per exposed data category and language
(advice.yaml), greetings (greetings.yaml), what the organisation did per playbook action
(claims.yaml, said as done only when the ledger shows it) and the credit bureaus
(credit-bureaus.yaml). Dates and numbers are written for the letter's locale with Babel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, cast, get_origin

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_interval
from babel.numbers import format_decimal
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from breachbook.errors import TemplateFieldError
from breachbook.inputs import LETTER_DATA, read_yaml
from breachbook.models import DataCategory, base_language, describe_validation_error

ADVICE_FILE = "letters/advice.yaml"
GREETINGS_FILE = "letters/greetings.yaml"
CLAIMS_FILE = "letters/claims.yaml"
BUREAUS_FILE = "letters/credit-bureaus.yaml"
DATA_FILES = (ADVICE_FILE, GREETINGS_FILE, CLAIMS_FILE, BUREAUS_FILE)

ITEM = Annotated[str, Field(min_length=1, max_length=2000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- data beside the templates ---------------------------------------------------------------


class Advice(Strict):
    consequence: ITEM
    advice: ITEM


class Greeting(Strict):
    honorific: ITEM
    neutral: ITEM

    @model_validator(mode="after")
    def _placeholders(self) -> Greeting:
        if "{name}" not in self.neutral:
            raise ValueError("neutral: must contain {name}")
        if "{name}" not in self.honorific or "{honorific}" not in self.honorific:
            raise ValueError("honorific: must contain {honorific} and {name}")
        return self

    def say(self, honorific: str, name: str) -> str:
        """Replaces the two placeholders only: a customer's value is never interpreted."""
        if honorific:
            return self.honorific.replace("{honorific}", honorific).replace("{name}", name)
        return self.neutral.replace("{name}", name)


class ClaimText(Strict):
    done: ITEM
    planned: ITEM


class Bureau(Strict):
    name: ITEM
    phone: ITEM
    web: ITEM
    postal: ITEM


class Bureaus(Strict):
    citation: ITEM
    bureaus: list[Bureau] = Field(min_length=1)


class _AdviceFile(Strict):
    languages: dict[str, dict[DataCategory, Advice]]


class _GreetingsFile(Strict):
    languages: dict[str, Greeting]


class _ClaimsFile(Strict):
    actions: dict[str, dict[str, ClaimText]]


def _load(path: Path, model: type[Strict], wrap: str | None) -> Any:
    raw = read_yaml(path, LETTER_DATA)
    try:
        return model.model_validate({wrap: raw} if wrap else raw)
    except ValidationError as exc:
        message = describe_validation_error(exc)
        if wrap:
            message = message.replace(f"{wrap}.", "", 1)
        raise TemplateFieldError(f"{path}: {message}") from None


def in_language(table: dict[str, Any], language: str) -> Any | None:
    """The entry for a letter language: exact tag ('zh-CN'), then language ('zh'), then 'en'."""
    for key in (language, base_language(language), "en"):
        if key in table:
            return table[key]
    return None


@dataclass(frozen=True)
class LetterData:
    """The data files every letter draws on, read once per writer."""

    advice: dict[str, dict[DataCategory, Advice]]
    greetings: dict[str, Greeting]
    claims: dict[str, dict[str, ClaimText]]
    bureaus: Bureaus
    folder: Path

    @classmethod
    def load(cls, templates_dir: Path) -> LetterData:
        """Read once per folder and version of its files (about 0.1 s: every step that asks
        what a letter may claim would otherwise read them again)."""
        files = [templates_dir / name for name in DATA_FILES]
        stamp = tuple(path.stat().st_mtime_ns if path.is_file() else None for path in files)
        cached = _LOADED.get(templates_dir)
        if cached is None or cached[0] != stamp:
            cached = (stamp, cls._read(templates_dir))
            _LOADED[templates_dir] = cached
        return cached[1]

    @classmethod
    def _read(cls, templates_dir: Path) -> LetterData:
        advice = _load(templates_dir / ADVICE_FILE, _AdviceFile, "languages")
        for language, table in advice.languages.items():
            missing = [c.value for c in DataCategory if c not in table]
            if missing:
                raise TemplateFieldError(
                    f"{templates_dir / ADVICE_FILE}: {language}: no advice for {', '.join(missing)}"
                )
        return cls(
            advice=advice.languages,
            greetings=_load(templates_dir / GREETINGS_FILE, _GreetingsFile, "languages").languages,
            claims=_load(templates_dir / CLAIMS_FILE, _ClaimsFile, "actions").actions,
            bureaus=_load(templates_dir / BUREAUS_FILE, Bureaus, None),
            folder=templates_dir,
        )

    def greeting(self, language: str) -> Greeting:
        found = in_language(self.greetings, language)
        if found is None:
            raise TemplateFieldError(
                f"{self.folder / GREETINGS_FILE}: no greeting for {language!r} nor 'en'"
            )
        assert isinstance(found, Greeting)
        return found

    def advice_for(self, language: str) -> dict[DataCategory, Advice]:
        found = in_language(self.advice, language)
        if found is None:
            raise TemplateFieldError(f"{self.folder / ADVICE_FILE}: no advice for {language!r}")
        return dict(found)

    def claim_text(self, action: str, language: str) -> ClaimText | None:
        texts = self.claims.get(action)
        if texts is None:
            return None
        found = in_language(texts, language)
        if found is None:
            raise TemplateFieldError(
                f"{self.folder / CLAIMS_FILE}: {action}: no text for {language!r} nor 'en'"
            )
        assert isinstance(found, ClaimText)
        return found


_LOADED: dict[Path, tuple[tuple[int | None, ...], LetterData]] = {}


# -- what the ledger lets a letter claim -----------------------------------------------------


class ClaimState(StrEnum):
    DONE = "done"
    """The ledger shows every target of the step done."""
    WOULD = "would"
    """A drill planned it: the letter reads as LIVE would word it once done; nothing was done."""
    NOT_DONE = "not-done"
    """Not (yet) done: written as planned, and a LIVE letter carrying it waits."""


@dataclass(frozen=True)
class StepClaim:
    step_id: str
    action: str
    state: ClaimState


# -- Babel -----------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def babel_locale(tag: str) -> Locale:
    """The Babel locale of a letter language: exact ('en-US'), then the language, then English."""
    for candidate in (tag, base_language(tag), "en"):
        try:
            return Locale.parse(candidate, sep="-")
        except (ValueError, UnknownLocaleError):
            continue
    raise TemplateFieldError(f"no Babel locale for {tag!r}")  # pragma: no cover - 'en' exists


def long_date(day: date, tag: str) -> str:
    """'November 30, 2026' (en-US), '30. November 2026' (de), '2026年11月30日' (zh-CN)."""
    return format_date(day, format="long", locale=babel_locale(tag))


def date_range(start: date, end: date, tag: str) -> str:
    if start == end:
        return long_date(start, tag)
    return format_interval(start, end, skeleton="yMMMMd", locale=babel_locale(tag))


def number(value: int, tag: str) -> str:
    return format_decimal(value, locale=babel_locale(tag))


# -- context models --------------------------------------------------------------------------


class Offer(Strict):
    """The identity-theft protection offer as a letter states it (dates and numbers formatted)."""

    provider: str
    months: str
    how_to_enrol: str
    enrol_by: str


class LetterContext(Strict):
    """Fields every letter may use: who writes, to whom, when, what of theirs was exposed,
    what it may mean for them and what they can do."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    customer_id: str
    greeting: str
    recipient_name: str
    recipient_email: str
    recipient_address: list[str]
    recipient_street: str
    recipient_city: str
    recipient_postal_code: str
    recipient_region: str
    recipient_country: str
    notice_title: str
    citation: str
    org_legal_name: str
    org_contact: dict[str, str]
    dpo_contact: str
    notice_date: str
    breach_date_or_range: str
    discovery_date: str
    law_enforcement_delay: bool
    data_categories: list[str]
    likely_consequences: list[str]
    """Per exposed category (advice.yaml): nobody is told about data of theirs not exposed."""
    individual_steps: list[str]


class DescribedLetter(LetterContext):
    """A letter that describes the breach and what the organisation did about it."""

    incident_description: str
    incident_cause: str
    org_measures_taken: list[str]
    """Playbook steps as the ledger shows them (done, or planned while not), then the
    incident's own `measures_taken` (measures outside the playbook)."""


class CaliforniaLetter(DescribedLetter):
    """Cal. Civ. Code 1798.82(d): when a Social Security, driver's licence or California ID
    number was exposed, the credit bureaus' contacts ((d)(2)(F)) and an identity-theft
    prevention and mitigation service at no cost for at least 12 months ((d)(2)(G))."""

    government_id_exposed: bool
    credit_bureaus: list[Bureau]
    identity_theft_offer: Offer | None

    @model_validator(mode="after")
    def _government_id(self) -> CaliforniaLetter:
        if self.government_id_exposed:
            if not self.credit_bureaus:
                raise ValueError("credit_bureaus: required when a government id was exposed")
            if self.identity_theft_offer is None:
                raise ValueError(
                    "identity_theft_offer: a government id was exposed, so Cal. Civ. Code "
                    "1798.82(d)(2)(G) requires the offer: set organisation.identity_theft_offer "
                    "in the playbook"
                )
        return self


class MassachusettsLetter(LetterContext):
    """M.G.L. c. 93H, s. 3(b): the letter must not state the nature of the breach nor the
    number of residents affected. There is no such field here (no incident description or
    cause, no measures, no count), so no template can render one."""

    credit_bureaus: list[Bureau] = Field(min_length=1)
    ssn_exposed: bool
    credit_monitoring: Offer | None

    @model_validator(mode="after")
    def _monitoring(self) -> MassachusettsLetter:
        if self.ssn_exposed and self.credit_monitoring is None:
            raise ValueError(
                "credit_monitoring: a Social Security number was exposed, so M.G.L. c. 93H, "
                "s. 3A requires 18 months of credit monitoring at no cost: set "
                "organisation.identity_theft_offer in the playbook with months: 18 or more"
            )
        return self


FAMILIES: dict[str, type[LetterContext]] = {
    "us-ca": CaliforniaLetter,
    "us-ma": MassachusettsLetter,
}
"""Template family (folder under templates/letters/) -> its context model; others describe."""


def family_model(template: str) -> type[LetterContext]:
    return FAMILIES.get(template, DescribedLetter)


def _requirable(annotation: Any) -> bool:
    origin = get_origin(annotation) or annotation
    return origin in (str, list, dict)


@lru_cache(maxsize=256)
def rule_model(
    rule_id: str, template: str, required: tuple[str, ...], forbidden: tuple[str, ...]
) -> type[LetterContext]:
    """The family's model with the rule's required fields made non-empty.

    A required field the family has not, or one that cannot be empty (a flag), or a forbidden
    field the family's model still has and that is required too, is a rule error."""
    family = family_model(template)
    fields = family.model_fields
    problems = [name for name in required if name not in fields]
    if problems:
        raise TemplateFieldError(
            f"rule {rule_id}: letter template {template}: required field(s) "
            f"{', '.join(problems)} are not fields of {family.__name__}"
        )
    both = sorted(set(required) & set(forbidden))
    if both:
        raise TemplateFieldError(
            f"rule {rule_id}: field(s) {', '.join(both)} both required and forbidden"
        )
    overrides: dict[str, Any] = {}
    for name in required:
        annotation = fields[name].annotation
        if not _requirable(annotation):
            raise TemplateFieldError(
                f"rule {rule_id}: required field {name} of {family.__name__} cannot be empty"
            )
        overrides[name] = (annotation, Field(min_length=1))
    model = create_model(
        f"{family.__name__}_{rule_id.replace('-', '_')}", __base__=family, **overrides
    )
    return cast(type[LetterContext], model)


def describe_context_error(exc: ValidationError) -> str:
    """The fields at fault, never their values: an empty required field says so plainly."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] in ("too_short", "string_too_short"):
            parts.append(f"required field {loc} is empty")
        else:
            message = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)
