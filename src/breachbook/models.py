"""Pydantic models at the edges: the incident file, customer records, the organisation."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any

import email_validator
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    computed_field,
    field_serializer,
    model_validator,
)

from breachbook.errors import IncidentFileError
from breachbook.inputs import INCIDENT, InputError, check_text, load_yaml, read_text
from breachbook.risk import RiskFactors, RiskLevel, RiskResult, assess_risk


class DataCategory(StrEnum):
    """Kinds of personal data; obligations are triggered by combinations of these."""

    NAME = "name"
    EMAIL = "email"
    POSTAL_ADDRESS = "postal_address"
    PHONE = "phone"
    PURCHASE_HISTORY = "purchase_history"
    PREFERENCES = "preferences"
    FINANCIAL_ACCOUNT = "financial_account"
    """A bank or other financial account number (IBAN, account and routing number)."""
    PAYMENT_CARD = "payment_card"
    """A credit or debit card number (with or without its expiry or security code)."""
    ACCOUNT_CREDENTIALS = "account_credentials"
    GOVERNMENT_ID = "government_id"
    MEDICAL = "medical"
    HEALTH_INSURANCE = "health_insurance"
    BIOMETRIC = "biometric"
    GENETIC = "genetic"
    CHILDREN = "children"
    """Data about a child (GDPR Art. 8, COPPA): raises the risk of any breach."""
    SPECIAL_CATEGORY = "special_category"
    """GDPR Art. 9 data not covered above: beliefs, political opinions, union membership,
    sex life or orientation, ethnic origin."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(Strict):
    phone: str
    email: str
    web: str
    postal: str


class IdentityTheftOffer(Strict):
    """The identity-theft prevention and mitigation service the organisation offers, at no
    cost, to people whose Social Security, driver's licence or ID number was exposed. California
    asks for at least 12 months (Cal. Civ. Code 1798.82(d)(2)(G)); Massachusetts for 18 months
    of credit monitoring (M.G.L. c. 93H, s. 3A)."""

    provider: str = Field(min_length=1, max_length=200)
    months: int = Field(ge=12, le=120, description="Length of the service, at least 12")
    how_to_enrol: str = Field(
        min_length=1, max_length=1000, description="All a person needs to take up the offer"
    )
    enrol_by: date = Field(description="Last day to enrol")


class Establishment(Strict):
    """One place the organisation is established, for the GDPR one-stop shop (Art. 56)."""

    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    main: bool = Field(
        default=False,
        description="The place of central administration in the EEA (GDPR Art. 4(16))",
    )
    authority: Annotated[str, Field(max_length=300)] = Field(
        default="", description="Its supervisory authority; default: from rules/authorities.yaml"
    )


class Organisation(Strict):
    """Who is writing to customers and regulators; every letter names them."""

    legal_name: str
    contact: Contact
    dpo_contact: str
    lead_supervisory_authority: str = "the lead supervisory authority"
    identity_theft_offer: IdentityTheftOffer | None = None
    """Needed when a California letter covers an exposed government id (else a clear error)."""
    establishments: list[Establishment] = Field(
        default=[],
        max_length=1_000,
        description="Where the organisation is established: the GDPR lead authority is the "
        "one of the main (or only) establishment in the EEA (Art. 56); with none there, "
        "every authority where affected people live is notified",
    )

    @model_validator(mode="after")
    def _one_main_establishment(self) -> Organisation:
        main = [e.country for e in self.establishments if e.main]
        if len(main) > 1:
            raise ValueError(
                f"establishments: {len(main)} marked main ({', '.join(main)}); the main "
                "establishment is one place of central administration (GDPR Art. 4(16))"
            )
        return self


Network = IPv4Network | IPv6Network
IncidentId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$")]
LanguageTag = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=35)]

MAX_TEXT = 10_000
"""Characters in one of the incident's texts (a description, a cause, one measure): about
three pages, and each is copied into every letter."""
MAX_TEXT_ITEMS = 100
"""Measures taken, or steps for the customer, in one list."""
MAX_LETTER_TEXTS = 20_000
"""Characters of all the incident's texts in one language together: what one letter quotes."""
MAX_TRANSLATIONS = 100
"""Languages an incident's texts are translated into."""
MAX_TARGETS = 1_000
"""Tables, keys, hosts or networks in one list; each becomes a target of the plan."""
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
"""Incident times lie in [EARLIEST, LATEST): year 1 or 9999 is a typo, and deadlines added to
9999 overflow. A fixed window, not one around now, so a file (and a version of the facts read
back from the ledger) validates the same on any day, and tests and tabletops may date their
incidents freely."""

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Texts = Annotated[
    list[Annotated[str, Field(max_length=MAX_TEXT)]], Field(max_length=MAX_TEXT_ITEMS)
]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)]


def _in_window(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be from {EARLIEST:%Y-%m-%d} and before {LATEST:%Y-%m-%d} (UTC)")
    return value


IncidentTime = Annotated[AwareDatetime, AfterValidator(_in_window)]


class ExposedTable(Strict):
    table: Identifier
    columns: list[Identifier] = Field(min_length=1, max_length=MAX_TARGETS)
    rows_from: IncidentTime | None = Field(
        default=None,
        description="Only rows written from this time were exposed (needs the table's "
        "time_column in the data-source file)",
    )
    rows_until: IncidentTime | None = Field(
        default=None, description="Only rows written up to this time were exposed"
    )

    @model_validator(mode="after")
    def _window_in_order(self) -> ExposedTable:
        if self.rows_from and self.rows_until and self.rows_until < self.rows_from:
            raise ValueError(f"{self.table}: rows_until is before rows_from")
        return self


def base_language(tag: str) -> str:
    """'zh' for 'zh-CN': the part that decides which words a reader understands."""
    return tag.split("-", maxsplit=1)[0]


class LetterTexts(Strict):
    """The incident's words to customers in one more language. A translation must carry
    every text the incident has, so no letter mixes two languages."""

    description: Text | None = None
    cause: Text | None = None
    likely_consequences: Text | None = None
    measures_taken: Texts | None = None
    individual_steps: Texts | None = None

    def length(self) -> int:
        """Characters of all the texts together: what one letter quotes."""
        singles = (self.description, self.cause, self.likely_consequences)
        items = [*(self.measures_taken or []), *(self.individual_steps or [])]
        return sum(len(text or "") for text in singles) + sum(len(item) for item in items)


class Incident(Strict):
    """What is known about a breach: the alert enriched by the on-call. Holds no customer data.

    An alert knows little (what fired, where, when); what is not known yet is left out, and
    the playbook's conditions skip the steps that need it until a later version of the facts
    says it."""

    id: IncidentId
    title: str = Field(min_length=3, max_length=200)
    description: Text | None = None
    cause: Text | None = None
    started_at: IncidentTime
    discovered_at: IncidentTime
    aware_at: IncidentTime | None = None
    exposed_tables: list[ExposedTable] = Field(default=[], max_length=MAX_TARGETS)
    data_categories: list[DataCategory] = Field(
        default=[],
        max_length=len(DataCategory),
        description="Kinds of personal data exposed. A run adds the categories the exposed "
        "columns can hold (per the data-source file); with no exposed_tables, every mapped "
        "column of these categories counts as exposed",
    )
    risk_assessment: RiskFactors | None = None
    """The facts the risk level rests on (breachbook.risk); not yet assessed when absent."""
    reasons_for_delay: Text | None = None
    """Why a regulator is notified late (GDPR Art. 33(1): reasons for a delay past 72 hours)."""
    data_encrypted: bool = False
    key_compromised: bool = False
    law_enforcement_delay: bool = False
    database_role: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")] | None = None
    access_key_ids: list[Annotated[str, Field(pattern=r"^[A-Z0-9]{16,128}$")]] = Field(
        default=[], max_length=MAX_TARGETS
    )
    hosts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=253)]] = (
        Field(default=[], max_length=MAX_TARGETS)
    )
    source_addresses: list[Network] = Field(default=[], max_length=MAX_TARGETS)
    measures_taken: Texts = []
    likely_consequences: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    individual_steps: Texts = []
    language: LanguageTag = "en"
    """The language of the texts above (description, cause, consequences, measures, steps)."""
    translations: dict[LanguageTag, LetterTexts] = Field(default={}, max_length=MAX_TRANSLATIONS)
    """The same texts in the customers' languages, keyed 'de' or 'zh-CN'."""

    def texts_in(self, language: str) -> LetterTexts | None:
        """The texts for a letter in `language`: the incident's own when the language is the
        same, else its translation (exact tag, then base language), else None."""
        if base_language(language) == base_language(self.language):
            return LetterTexts(
                description=self.description,
                cause=self.cause,
                likely_consequences=self.likely_consequences or None,
                measures_taken=self.measures_taken,
                individual_steps=self.individual_steps,
            )
        return self.translations.get(language) or self.translations.get(base_language(language))

    @model_validator(mode="wrap")
    @classmethod
    def _risk_is_assessed(cls, data: Any, handler: ModelWrapValidatorHandler[Incident]) -> Incident:
        """`risk` is computed from risk_assessment; a dump read back carries it, and it must
        agree. A bare level (the old `risk: high`) without the assessment is refused."""
        if not isinstance(data, dict) or "risk" not in data:
            return handler(data)
        echoed = data["risk"]
        incident = handler({k: v for k, v in data.items() if k != "risk"})
        if echoed != incident.risk:
            raise ValueError(
                "risk: a bare level is no longer accepted; describe risk_assessment (people, "
                "identifiable, mitigation; an override needs level, justification and by)"
            )
        return incident

    @computed_field  # type: ignore[prop-decorator]
    @property
    def risk(self) -> RiskLevel | None:
        """The assessed level (or a person's override), None while not assessed."""
        assessed = self.assessed_risk()
        return None if assessed is None else assessed.level

    def assessed_risk(self) -> RiskResult | None:
        """The level with its reasons, None while the incident has no risk_assessment."""
        if self.risk_assessment is None:
            return None
        return assess_risk(
            (c.value for c in self.data_categories),
            self.data_encrypted,
            self.key_compromised,
            self.risk_assessment,
        )

    @model_validator(mode="after")
    def _times_in_order(self) -> Incident:
        if self.discovered_at < self.started_at:
            raise ValueError("discovered_at is before started_at")
        if self.aware_at is not None and self.aware_at < self.discovered_at:
            raise ValueError("aware_at is before discovered_at")
        return self

    @model_validator(mode="after")
    def _letter_texts_bounded(self) -> Incident:
        own = self.texts_in(self.language)
        assert own is not None
        languages = {"texts": own} | {
            f"translations.{tag}": t for tag, t in self.translations.items()
        }
        for where, texts in languages.items():
            if texts.length() > MAX_LETTER_TEXTS:
                raise ValueError(
                    f"{where}: {texts.length():,} characters together, more than the "
                    f"{MAX_LETTER_TEXTS:,} one letter may quote"
                )
        return self

    @model_validator(mode="after")
    def _translations_complete(self) -> Incident:
        own = self.texts_in(self.language)
        assert own is not None
        for tag, texts in self.translations.items():
            if base_language(tag) == base_language(self.language):
                raise ValueError(f"translations.{tag}: same language as the incident's texts")
            missing = [
                name
                for name in LetterTexts.model_fields
                if getattr(own, name) and not getattr(texts, name)
            ]
            if missing:
                raise ValueError(f"translations.{tag}: missing {', '.join(missing)}")
            for name in ("measures_taken", "individual_steps"):
                ours, theirs = getattr(own, name) or [], getattr(texts, name) or []
                if len(theirs) != len(ours):
                    raise ValueError(
                        f"translations.{tag}.{name}: {len(theirs)} items, the incident has {len(ours)}"
                    )
        return self

    @property
    def awareness(self) -> datetime:
        """When the controller became aware: the clock start for GDPR and most laws."""
        return self.aware_at or self.discovered_at

    @classmethod
    def from_file(cls, path: Path) -> Incident:
        """Load an incident file (YAML or JSON) within the limits of breachbook.inputs; one
        clear line names the file and field at fault."""
        try:
            text = read_text(path, INCIDENT)
        except InputError as exc:
            raise IncidentFileError(str(exc)) from None
        return cls._parse(text, str(path))

    @classmethod
    def from_text(cls, text: str, source: str) -> Incident:
        """Parse an incident document; errors name `source` and the field at fault."""
        try:
            checked = check_text(text, source, INCIDENT)
        except InputError as exc:
            raise IncidentFileError(str(exc)) from None
        return cls._parse(checked, source)

    @classmethod
    def _parse(cls, text: str, source: str) -> Incident:
        try:
            raw = load_yaml(text, source)
        except InputError as exc:
            raise IncidentFileError(str(exc)) from None
        if not isinstance(raw, dict):
            raise IncidentFileError(f"{source}: an incident file must be a mapping of fields")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise IncidentFileError(f"{source}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """Field paths and messages of a validation error, without the offending values. Checks
    across fields (model validators) have no path of their own: their message names them."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        message = err["msg"].removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


MAY_BE_FORMAT = re.compile(
    "[\u00ad\u0600-\u070f\u0890-\u08ff\u180e\u200b-\u206f\ufeff\ufff0-\uffff"
    "\U00011000-\U0001ffff\U000e0000-\U000e0fff]"
)
"""The blocks that hold every invisible formatting character (Unicode category Cf; a test
checks each one is covered); only characters found here are looked up one by one."""


def _invisible(value: str) -> bool:
    return any(unicodedata.category(ch) == "Cf" for ch in MAY_BE_FORMAT.findall(value))


def _no_control_characters(value: str) -> str:
    invisible = not value.isascii() and _invisible(value)
    if invisible or _CONTROL.search(value):
        raise ValueError("contains control or invisible formatting characters")
    return value


_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
"""The common address (ASCII dot-atom, lower-case host name, alphabetic top-level domain)
that email-validator accepts unchanged; anything else is left to email-validator."""


def _plain_address(value: str) -> bool:
    if len(value) > 254 or not _PLAIN_ADDRESS.fullmatch(value):
        return False
    local, _, domain = value.partition("@")
    return (
        len(local) <= 64
        and "--" not in domain
        and not ("." + domain).endswith(
            _special_suffixes(*email_validator.SPECIAL_USE_DOMAIN_NAMES)
        )
    )


@lru_cache(maxsize=4)
def _special_suffixes(*names: str) -> tuple[str, ...]:
    return tuple("." + name for name in names)


@lru_cache(maxsize=4096)
def _checked_unusual_email(value: str) -> str:
    try:
        return email_validator.validate_email(value, check_deliverability=False).normalized
    except email_validator.EmailNotValidError:
        raise ValueError("value is not a valid email address") from None


def _checked_email(value: str) -> str:
    """Syntax check of an address (no DNS). A plain address passes a regular expression that
    accepts only what email-validator accepts unchanged (tests/unit/test_models_email.py holds
    them to it) at a fraction of its cost; the rest goes through email-validator itself. The
    reason is not kept: it can quote characters of the address."""
    return value if _plain_address(value) else _checked_unusual_email(value)


Email = Annotated[str, Field(max_length=320), AfterValidator(_checked_email)]


PRINTABLE_FIELDS = ("full_name", "phone", "street", "city", "postal_code", "region", "honorific")


def _email_or_none(value: str) -> str:
    """An empty address means the customer gave none: their letters go by post."""
    return "" if not value.strip() else _checked_email(value)


CustomerEmail = Annotated[
    str,
    BeforeValidator(lambda value: "" if value is None else value),
    Field(max_length=320),
    AfterValidator(_email_or_none),
]
"""A customer's email address, or "" when there is none (printed post, breachbook.post)."""


class Customer(Strict):
    """One customer's record as read from the customer directory. Personal data: never log it."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    full_name: Annotated[str, Field(min_length=1, max_length=200)]
    email: CustomerEmail
    phone: Annotated[str, Field(max_length=64)]
    street: Annotated[str, Field(max_length=300)]
    city: Annotated[str, Field(max_length=200)]
    postal_code: Annotated[str, Field(max_length=32)]
    region: Annotated[str, Field(max_length=64)] = ""
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    locale: LanguageTag
    honorific: Annotated[str, Field(max_length=40)] = ""
    """As the customer gave it (Ms, Dr, Herr); letters never guess one from a name."""
    categories: frozenset[DataCategory]
    """The kinds of this customer's data the incident exposed: the categories of the exposed
    columns that hold a value for them, across every exposed table (breachbook.datasource)."""

    @field_serializer("categories", when_used="json")
    def _categories_in_order(self, categories: frozenset[DataCategory]) -> list[str]:
        """Sorted: a set's order changes with each process's hash seed, and a resumed run
        compares the customers' JSON with its last run's to keep the letters it prepared."""
        return sorted(categories)

    @model_validator(mode="after")
    def _printable(self) -> Customer:
        """One check over every free-text field at once (millions of records go through
        here); only a record that fails is looked at field by field, to name the field."""
        values = [getattr(self, name) for name in PRINTABLE_FIELDS]
        joined = "".join(values)
        if _CONTROL.search(joined) or (not joined.isascii() and _invisible(joined)):
            for name, value in zip(PRINTABLE_FIELDS, values, strict=True):
                try:
                    _no_control_characters(value)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _reachable(self) -> Customer:
        if not self.email and not (self.street.strip() and self.city.strip()):
            raise ValueError("email: no email address, and no street and city to post a letter to")
        return self

    @property
    def has_email(self) -> bool:
        """Whether letters can go by email; without an address they are printed and posted."""
        return bool(self.email)

    @property
    def jurisdiction(self) -> str:
        """Country, plus state for the US: 'US-CA', 'DE', 'CN'."""
        return (
            f"{self.country}-{self.region}"
            if self.country == "US" and self.region
            else self.country
        )


@dataclass(frozen=True)
class RejectedRecord:
    """A customer record that cannot be used, by id and reason; never its values."""

    customer_id: str
    problem: str


def validate_customer(raw: dict[str, Any]) -> Customer | RejectedRecord:
    """A record from the directory as a Customer, or why it is unusable (without its values)."""
    try:
        return Customer.model_validate(raw)
    except ValidationError as exc:
        bad_id = any(e["loc"] and e["loc"][0] == "id" for e in exc.errors(include_input=False))
        return RejectedRecord(
            "(invalid id)" if bad_id else str(raw.get("id")), describe_validation_error(exc)
        )


_PLAIN_PAGE = re.compile(
    r"(?:(?=[^\n]{1,254}\n)(?=[^@\n]{1,64}@)" + _PLAIN_ADDRESS.pattern + r"\n)*"
)
"""Lines of plain addresses, each as `_plain_address` accepts it (length limits included)."""


@lru_cache(maxsize=4)
def _special_use_page(*names: str) -> re.Pattern[str]:
    return re.compile(r"[.@](?:" + "|".join(re.escape(name) for name in names) + r")\n")


def _plain_or_empty(values: list[Any]) -> bool:
    """Whether every value is "" or a plain address, which `_email_or_none` returns as it is:
    one pass over the page instead of one call per customer. A '--' anywhere (allowed in
    the name part, not in a host) or anything else unusual sends the page to the field's
    own validator."""
    try:
        joined = "\n".join(value for value in values if value != "") + "\n"
    except TypeError:
        return False
    special = _special_use_page(*email_validator.SPECIAL_USE_DOMAIN_NAMES)
    return (
        "--" not in joined
        and _PLAIN_PAGE.fullmatch(joined) is not None
        and special.search(joined) is None
    )


@lru_cache(maxsize=1)
def _column_validators() -> dict[str, TypeAdapter[list[Any]]]:
    """Each Customer field's own type and constraints, over a list of values."""
    adapters: dict[str, TypeAdapter[list[Any]]] = {}
    for name, field in Customer.model_fields.items():
        kind: Any = (
            Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        )
        adapters[name] = TypeAdapter(list[kind])
    return adapters


def _valid_column(name: str, values: list[Any]) -> list[Any]:
    if name == "email" and _plain_or_empty(values):
        return values
    adapter = _column_validators()[name]
    if name == "categories":  # a few distinct sets: each validated once
        distinct = list(dict.fromkeys(values))
        valid = dict(zip(distinct, adapter.validate_python(distinct), strict=True))
        return [valid[value] for value in values]
    return adapter.validate_python(values)


CUSTOMER_CHECKS = ("_printable", "_reachable")
"""Customer's checks across fields, each also run over whole pages by `validate_customers`
(a test holds this to the model's validators)."""


def _page_passes_checks(valid: dict[str, list[Any]]) -> bool:
    """`Customer._printable` and `Customer._reachable` over a page: the free text of every
    record at once, and every record without an address to email has one to post to."""
    joined = "".join("".join(valid[name]) for name in PRINTABLE_FIELDS)
    if _CONTROL.search(joined) or (not joined.isascii() and _invisible(joined)):
        return False
    return all(
        email or (street.strip() and city.strip())
        for email, street, city in zip(valid["email"], valid["street"], valid["city"], strict=True)
    )


_new = object.__new__
_set = object.__setattr__


def _built(names: tuple[str, ...], values: tuple[Any, ...]) -> Customer:
    """A Customer from values already validated: what `BaseModel.model_construct` sets (the
    fields, which were set, no extra, no private), without its per-call cost."""
    customer: Customer = _new(Customer)
    _set(customer, "__dict__", dict(zip(names, values, strict=True)))
    _set(customer, "__pydantic_fields_set__", set(names))
    _set(customer, "__pydantic_extra__", None)
    _set(customer, "__pydantic_private__", None)
    return customer


def customer_batches(
    columns: dict[str, list[Any]], size: int
) -> Iterator[list[Customer | RejectedRecord]]:
    """A page of records, given field by field (every Customer field, one value per record),
    as `validate_customer` would return them one by one: the same checks, run once per
    field and page (a million customers are read per incident). A page where any check
    fails is validated record by record, so each problem is named as it always is.

    Returned `size` at a time: customers built for a whole page at once would all outlive
    the garbage collector's young generations, and a million of them would keep it
    scanning its oldest."""
    names = tuple(Customer.model_fields)
    if set(columns) != set(names):
        raise ValueError(f"customer_batches: needs exactly the fields {', '.join(names)}")
    try:
        valid = {name: _valid_column(name, columns[name]) for name in names}
    except ValidationError:
        valid = {}
    count = len(columns["id"])
    if valid and _page_passes_checks(valid):
        for start in range(0, count, size):
            part = (column[start : start + size] for column in valid.values())
            yield [_built(names, values) for values in zip(*part, strict=True)]
        return
    for start in range(0, count, size):
        yield [
            validate_customer({name: columns[name][i] for name in names})
            for i in range(start, min(start + size, count))
        ]


def validate_customers(columns: dict[str, list[Any]]) -> list[Customer | RejectedRecord]:
    """`customer_batches` as one list."""
    return [item for batch in customer_batches(columns, len(columns["id"]) or 1) for item in batch]
