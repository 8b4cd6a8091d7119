"""From the customer database to letters: who is owed which notice, and the letters themselves.

Work is streamed in batches from the customer directory; nothing here logs or raises with
customer personal data (only customer ids, which are internal keys).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from breachbook.errors import TemplateFieldError
from breachbook.inputs import LABELS, read_yaml
from breachbook.letters import (
    ClaimState,
    Greeting,
    LetterContext,
    LetterData,
    Offer,
    StepClaim,
    date_range,
    describe_context_error,
    long_date,
    number,
    rule_model,
)
from breachbook.models import (
    Customer,
    DataCategory,
    Incident,
    LetterTexts,
    Organisation,
    RejectedRecord,
    base_language,
)
from breachbook.ports import CustomerDirectory
from breachbook.rules import WORLDWIDE, Rule, RuleBook, describe_deadline
from breachbook.templates import Renderer

BATCH_SIZE = 5000
LABELS_FILE = "letters/category-labels.yaml"


class Tally(BaseModel):
    """How many customers one obligation covers, where, and which (ids only)."""

    rule_id: str
    count: int = 0
    by_jurisdiction: dict[str, int] = Field(default_factory=dict)
    records: int = 0
    """Personal data records concerned: one per person and category of data exposed."""
    categories: dict[str, int] = Field(default_factory=dict)
    """People per exposed data category."""

    def add(self, place: str, exposed: frozenset[DataCategory] = frozenset()) -> None:
        self.count += 1
        self.by_jurisdiction[place] = self.by_jurisdiction.get(place, 0) + 1
        self.records += len(exposed)
        for category in _values(exposed):
            self.categories[category] = self.categories.get(category, 0) + 1


@lru_cache(maxsize=1024)
def _values(categories: frozenset[DataCategory]) -> tuple[str, ...]:
    return tuple(category.value for category in categories)


class Rejected(BaseModel):
    customer_id: str
    problem: str


class Assessment(BaseModel):
    """Per-obligation tallies for one incident, stored as a run record so that every later
    step and worker reads the same one. Customer ids and counts only, no personal data."""

    affected: int = 0
    owed_customers: int = 0
    """Customers owed at least one individual notice (who they are: `Owed`, streamed)."""
    by_jurisdiction: dict[str, int] = Field(default_factory=dict)
    individual: dict[str, Tally] = Field(default_factory=dict)
    regulator: dict[str, Tally] = Field(default_factory=dict)
    not_covered: dict[str, int] = Field(default_factory=dict)
    below_threshold: dict[str, int] = Field(default_factory=dict)
    rejected: list[Rejected] = Field(default_factory=list)
    not_covered_categories: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Place with no rule -> data category -> people there with it exposed (counts only)."""
    not_owed: dict[str, str] = Field(default_factory=dict)
    """Rule id -> why it is not owed, for every rule of a place where people are affected."""


class Obligations:
    """Decides, per customer, which individual notices the incident triggers."""

    def __init__(self, book: RuleBook, incident: Incident) -> None:
        self.book = book
        self.incident = incident
        self.exposed = frozenset(incident.data_categories)
        self._by_place: dict[tuple[str, str], list[Rule]] = {}
        self._owed: dict[tuple[str, str, frozenset[DataCategory]], list[Rule]] = {}
        self._reaches: dict[str, bool] = {}
        self._exposed: dict[frozenset[DataCategory], frozenset[DataCategory]] = {}

    def _rules_for(self, customer: Customer) -> list[Rule]:
        key = (customer.jurisdiction, customer.country)
        rules = self._by_place.get(key)
        if rules is None:
            rules = self.book.individual_rules(customer)
            self._by_place[key] = rules
        return rules

    def exposed_for(self, customer: Customer) -> frozenset[DataCategory]:
        """Once per set of categories (customers read from the database share those)."""
        categories = customer.categories
        exposed = self._exposed.get(categories)
        if exposed is None:
            exposed = self._exposed[categories] = categories & self.exposed
        return exposed

    def covered(self, customer: Customer) -> bool:
        return bool(self._rules_for(customer))

    def for_customer(self, customer: Customer) -> list[Rule]:
        """The rules owed to this customer: decided once per place and set of exposed data
        categories, which are all a rule looks at (millions of customers, a few hundred
        distinct answers): looked up by the customer's own categories, of which the exposed
        ones are a function."""
        key = (customer.jurisdiction, customer.country, customer.categories)
        owed = self._owed.get(key)
        if owed is None:
            exposed = self.exposed_for(customer)
            owed = [
                rule
                for rule in self._rules_for(customer)
                if self._reaches_incident(rule) and rule.applies_to_data(exposed)
            ]
            self._owed[key] = owed
        return owed

    def _reaches_incident(self, rule: Rule) -> bool:
        reaches = self._reaches.get(rule.id)
        if reaches is None:
            reaches = self._reaches[rule.id] = rule.applies_to_incident(self.incident)
        return reaches


WITHHELD = "[customer data withheld]"
PERSON_FIELDS = (
    "customer_id",
    "greeting",
    "recipient_name",
    "recipient_email",
    "recipient_address",
    "recipient_street",
    "recipient_city",
    "recipient_postal_code",
    "recipient_region",
    "recipient_country",
)
"""The letter fields that come from the customer's record (`LetterWriter._person`)."""
_LABELS: dict[Path, tuple[int | None, dict[str, dict[str, str]]]] = {}


@lru_cache(maxsize=1024)
def template_language(name: str) -> str:
    """The language a letter template is written in: its file name ('letters/x/de.txt.j2')."""
    return Path(name).name.removesuffix(".txt.j2")


def without_customer_data(message: str, customer: Customer) -> str:
    """An error message with every value of the customer's record taken out.

    A template that looks a customer's value up (`labels[recipient_name]`) fails with a
    message quoting it; errors reach Prefect, the console and the ledger, so the value goes."""
    values = [
        customer.full_name,
        customer.email,
        customer.phone,
        customer.street,
        customer.city,
        customer.postal_code,
        customer.region,
        customer.honorific,
        *customer.full_name.split(),
        customer.email.split("@")[0],
    ]
    for value in sorted({v for v in values if len(v) >= 3}, key=len, reverse=True):
        message = message.replace(value, WITHHELD)
    return message


def iter_valid_customers(
    directory: CustomerDirectory, incident: Incident, rejected: list[RejectedRecord]
) -> Iterator[Customer]:
    """Affected customers as validated models; unusable records are set aside by id."""
    for batch in directory.iter_affected(incident, BATCH_SIZE):
        for item in batch:
            if isinstance(item, Customer):
                yield item
            else:
                rejected.append(item)


Owed = Callable[[str, str], None]
"""Told each (rule id, customer id) owed a letter as the assessment finds it, so that the
recipients of a million-customer incident are streamed to a file, never held in memory."""


def assess(
    directory: CustomerDirectory,
    book: RuleBook,
    incident: Incident,
    on_owed: Owed | None = None,
) -> Assessment:
    obligations = Obligations(book, incident)
    owed_customers = 0
    by_jurisdiction: Counter[str] = Counter()
    not_covered: Counter[str] = Counter()
    below_threshold: Counter[str] = Counter()
    individual: dict[str, Tally] = {}
    regulator: dict[str, Tally] = {}
    rejected: list[RejectedRecord] = []
    regulators = [
        r
        for r in book.regulator_rules()
        if r.applies_to_incident(incident) or r.applies_at_scale(incident)
    ]
    reg_places = {rule.id: book.expand(rule.applies_to) for rule in regulators}
    reaches = {rule.id: rule.applies_to_incident(incident) for rule in regulators}
    scales = {rule.id: rule.applies_at_scale(incident) for rule in regulators}
    to_regulators: dict[tuple[str, str, frozenset[DataCategory]], list[tuple[str, bool, bool]]]
    to_regulators = {}
    at_scale: dict[str, Tally] = {}
    uncovered_categories: dict[str, Counter[str]] = {}
    for customer in iter_valid_customers(directory, incident, rejected):
        place = customer.jurisdiction
        by_jurisdiction[place] += 1
        rules = obligations.for_customer(customer)
        exposed = obligations.exposed_for(customer)
        if not obligations.covered(customer):
            not_covered[place] += 1
            gap = uncovered_categories.setdefault(place, Counter())
            gap.update(category.value for category in exposed)
        elif not rules:
            below_threshold[place] += 1
        if rules:
            owed_customers += 1
        for rule in rules:
            individual.setdefault(rule.id, Tally(rule_id=rule.id)).add(place, exposed)
            if on_owed is not None:
                on_owed(rule.id, customer.id)
        key = (place, customer.country, exposed)
        counted = to_regulators.get(key)
        if counted is None:
            counted = to_regulators[key] = [
                (rule.id, reaches[rule.id] and rule.applies_to_data(exposed), scales[rule.id])
                for rule in regulators
                if {place, customer.country, WORLDWIDE} & reg_places[rule.id]
            ]
        for rule_id, by_data, by_scale in counted:
            if by_data:
                regulator.setdefault(rule_id, Tally(rule_id=rule_id)).add(place, exposed)
            if by_scale:
                at_scale.setdefault(rule_id, Tally(rule_id=rule_id)).add(place, exposed)
    owed: dict[str, Tally] = {}
    for rule in regulators:
        everyone, triggered = at_scale.get(rule.id), regulator.get(rule.id)
        if everyone is not None and rule.meets_scale(everyone.count):
            owed[rule.id] = everyone
        elif triggered is not None and rule.meets_threshold(triggered.by_jurisdiction):
            owed[rule.id] = triggered
    return Assessment(
        affected=sum(by_jurisdiction.values()),
        owed_customers=owed_customers,
        by_jurisdiction=dict(sorted(by_jurisdiction.items())),
        individual=individual,
        regulator=owed,
        not_covered=dict(sorted(not_covered.items())),
        below_threshold=dict(sorted(below_threshold.items())),
        rejected=[Rejected(customer_id=r.customer_id, problem=r.problem) for r in rejected],
        not_covered_categories={
            place: dict(sorted(uncovered_categories[place].items()))
            for place in sorted(uncovered_categories)
        },
        not_owed=why_not_owed(
            book, incident, set(by_jurisdiction), individual, owed, regulator, at_scale
        ),
    )


def why_not_owed(
    book: RuleBook,
    incident: Incident,
    places: set[str],
    individual: Mapping[str, Tally],
    owed: Mapping[str, Tally],
    triggered: Mapping[str, Tally],
    at_scale: Mapping[str, Tally],
) -> dict[str, str]:
    """For each rule of a place where people are affected (and of this kind of organisation)
    that is not owed, the reason, in words for the breach register."""
    countries = {place.split("-")[0] for place in places}
    reasons: dict[str, str] = {}
    for rule in book.rules:
        covers = book.expand(rule.applies_to)
        if not book.owed_by_organisation(rule) or not covers & (places | countries | {WORLDWIDE}):
            continue
        if rule.id in individual or rule.id in owed:
            continue
        reasons[rule.id] = _why_not(rule, incident, triggered.get(rule.id), at_scale.get(rule.id))
    return dict(sorted(reasons.items()))


def _why_not(
    rule: Rule, incident: Incident, triggered: Tally | None, everyone: Tally | None
) -> str:
    if rule.safe_harbour(incident):
        return (
            "encrypted data whose key was not compromised: the rule's encryption safe harbour "
            "applies"
        )
    risk = incident.risk or "high"
    if not rule.applies_to_incident(incident) and not rule.applies_at_scale(incident):
        return f"risk assessed {risk}; the rule is owed from {rule.min_risk} to {rule.max_risk}"
    if triggered is not None and rule.audience == "regulator":
        per = " in one jurisdiction" if rule.min_affected_per == "jurisdiction" else ""
        return (
            f"{triggered.count:,} people whose exposed data triggers it, below its threshold "
            f"of {rule.min_affected:,}{per}"
        )
    if everyone is not None and rule.or_min_affected is not None:
        reach = f"{everyone.count:,} people affected, below the {rule.or_min_affected:,} that oblige it whatever the data"
        if not rule.applies_to_incident(incident):
            return f"risk assessed {risk} (owed from {rule.min_risk}); {reach}"
        return f"no affected person's exposed data triggers it; {reach}"
    return "no affected person's exposed data includes what triggers it"


def obligation_record(
    tally: Tally,
    rule: Rule,
    incident: Incident,
    now: datetime,
    fulfilled: Mapping[str, datetime] | None = None,
) -> dict[str, Any]:
    """One obligation for obligations.json and the notices. A clock that starts when another
    obligation is fulfilled (`after:`) has no date until `fulfilled` (rule id -> when) says
    so: `due_at` is null, `due_after` names that rule and `due` says it in words."""
    started = rule.clock_start(incident, fulfilled)
    due = rule.due_at(incident, fulfilled)
    waiting = started is None
    if due is not None:
        due_text = due.isoformat()
    elif waiting:
        due_text = f"{describe_deadline(rule.deadline)} after {rule.after} is fulfilled"
    else:
        due_text = "ASAP"
    return {
        "id": rule.id,
        "title": rule.title,
        "citation": rule.citation,
        "audience": rule.audience,
        "recipient": rule.recipient,
        "deadline": rule.deadline,
        "clock_starts": rule.clock_starts,
        "clock_started_at": started.isoformat() if started else None,
        "due_at": None if waiting else (due.isoformat() if due else "ASAP"),
        "due_after": rule.after,
        "due": due_text,
        "hours_left": round((due - now).total_seconds() / 3600, 1) if due else None,
        "overdue": bool(due and due < now),
        "affected_count": tally.count,
        "by_jurisdiction": dict(sorted(tally.by_jurisdiction.items())),
        "verified_citation": rule.verified,
        "notes": rule.notes,
    }


@dataclass(frozen=True)
class RenderedLetter:
    """One customer's letter: personal data, never logged."""

    subject: str
    text: str
    html: str
    language: str


def html_page(escaped_body: str, language: str) -> str:
    """An escaped text body as a plain HTML page: paragraphs at blank lines, line breaks
    kept, so the HTML part says word for word what the text part says."""
    paragraphs = [p for p in escaped_body.strip("\n").split("\n\n") if p.strip()]
    inner = "\n".join("<p>" + "<br>\n".join(p.split("\n")) + "</p>" for p in paragraphs)
    return (
        f'<!DOCTYPE html>\n<html lang="{html.escape(language)}">\n<head><meta charset="utf-8">'
        f"</head>\n<body>\n{inner}\n</body>\n</html>\n"
    )


class LetterWriter:
    """Builds each customer's letter context as the template family's model (required fields
    non-empty, forbidden ones absent) and renders it. What is the same in many letters (the
    organisation, the incident's texts, dates and claims per rule and language; the advice
    per set of exposed categories) is built once and shared."""

    def __init__(
        self,
        renderer: Renderer,
        org: Organisation,
        incident: Incident,
        notice_date: datetime,
        claims: Sequence[StepClaim] = (),
    ) -> None:
        self.renderer = renderer
        self.org = org
        self.incident = incident
        self.notice_day = notice_date.date()
        self.labels = self._load_labels(renderer.templates_dir / LABELS_FILE)
        self.data = LetterData.load(renderer.templates_dir)
        self.claims = tuple(claims)
        """The playbook's claimable steps as the ledger shows them (see letters.ClaimState)."""
        self._template_for: dict[tuple[str, str], str] = {}
        self.fallbacks: Counter[tuple[str, str]] = Counter()
        """(rule, customer locale) -> letters written in another language than the customer's."""
        self.untranslated: Counter[tuple[str, str]] = Counter()
        """(rule, letter language) -> letters whose incident texts are not in that language."""
        self._texts: dict[str, tuple[LetterTexts, bool]] = {}
        self._shared: dict[tuple[str, str], dict[str, Any]] = {}
        self._about: dict[tuple[str, frozenset[DataCategory]], tuple[list[str], ...]] = {}
        self._greetings: dict[str, Greeting] = {}
        self._checked: dict[tuple[str, str, frozenset[DataCategory]], dict[str, Any]] = {}
        """(rule, language, exposed categories) -> the letter's fields that are the same for
        every customer of that shape, as validated by the rule's context model (the fields
        the rule forbids taken out)."""
        self._person_rules: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        """Rule -> (required, forbidden) fields of those that come from the customer."""
        self._plans: dict[tuple[str, str], tuple[str, str, bool, bool]] = {}
        """(rule, customer locale) -> (template, its language, whether that is a fallback,
        whether the incident's texts are untranslated in it)."""

    def model(self, rule: Rule) -> type[LetterContext]:
        spec = rule.letter
        assert spec is not None
        return rule_model(
            rule.id, spec.template, tuple(spec.required_fields), tuple(spec.forbidden_fields)
        )

    def states_claims(self, rule: Rule) -> bool:
        """Whether this rule's letters say what the organisation did (Massachusetts' do not)."""
        spec = rule.letter
        assert spec is not None
        return (
            "org_measures_taken" in self.model(rule).model_fields
            and "org_measures_taken" not in spec.forbidden_fields
        )

    def waits_for(self, rule: Rule) -> list[str]:
        """Steps a LIVE letter for `rule` must wait for: it claims them and they are not done."""
        if not self.states_claims(rule):
            return []
        return [c.step_id for c in self.claims if c.state is ClaimState.NOT_DONE]

    def would_claim(self, rule: Rule) -> list[str]:
        """Steps a drill's letter claims as LIVE would word them once done (none is done)."""
        if not self.states_claims(rule):
            return []
        return [c.step_id for c in self.claims if c.state is ClaimState.WOULD]

    def _texts_in(self, language: str) -> tuple[LetterTexts, bool]:
        """The incident's texts for a letter in `language`, and whether they are in it (if
        not, they are the incident's own and the letter is counted as untranslated)."""
        if language not in self._texts:
            texts = self.incident.texts_in(language)
            translated = texts is not None
            if texts is None:
                texts = self.incident.texts_in(self.incident.language)
                assert texts is not None
            self._texts[language] = (texts, translated)
        return self._texts[language]

    def _measures(self, language: str, texts: LetterTexts) -> list[str]:
        """What was done as the ledger shows it, the incident's other measures, then what is
        planned but not done, worded as planned."""
        done, planned = [], []
        for claim in self.claims:
            text = self.data.claim_text(claim.action, language)
            if text is None:
                continue
            if claim.state is ClaimState.NOT_DONE:
                planned.append(text.planned)
            else:
                done.append(text.done)
        return [*done, *(texts.measures_taken or []), *planned]

    def _offer(self, language: str, at_least: int) -> Offer | None:
        offer = self.org.identity_theft_offer
        if offer is None or offer.months < at_least:
            return None
        return Offer(
            provider=offer.provider,
            months=number(offer.months, language),
            how_to_enrol=offer.how_to_enrol,
            enrol_by=long_date(offer.enrol_by, language),
        )

    def _shared_for(self, rule: Rule, language: str) -> dict[str, Any]:
        """Fields from the organisation, the incident and the ledger, once per rule and
        language. Letters share them safely: templates run in jinja2's immutable sandbox."""
        key = (rule.id, language)
        shared = self._shared.get(key)
        if shared is None:
            incident = self.incident
            texts = self._texts_in(language)[0]
            everything: dict[str, Any] = {
                "org_legal_name": self.org.legal_name,
                "org_contact": self.org.contact.model_dump(),
                "dpo_contact": self.org.dpo_contact,
                "notice_date": long_date(self.notice_day, language),
                "breach_date_or_range": date_range(
                    incident.started_at.date(), incident.discovered_at.date(), language
                ),
                "discovery_date": long_date(incident.discovered_at.date(), language),
                "law_enforcement_delay": incident.law_enforcement_delay,
                "notice_title": rule.title,
                "citation": rule.citation,
                "incident_description": texts.description or "",
                "incident_cause": texts.cause or "",
                "org_measures_taken": self._measures(language, texts),
            }
            fields = self.model(rule).model_fields
            shared = {name: value for name, value in everything.items() if name in fields}
            self._shared[key] = shared
        return shared

    def _about_for(self, language: str, exposed: frozenset[DataCategory]) -> tuple[list[str], ...]:
        """(category labels, consequences, advice) for one set of exposed categories: a
        customer is told only about data of theirs that was exposed."""
        key = (language, exposed)
        about = self._about.get(key)
        if about is None:
            advice = self.data.advice_for(language)
            present = [cat for cat in DataCategory if cat in exposed]
            about = (
                [self._label(cat, language) for cat in present],
                list(dict.fromkeys(advice[cat].consequence for cat in present)),
                list(dict.fromkeys(advice[cat].advice for cat in present)),
            )
            self._about[key] = about
        return about

    @staticmethod
    def _load_labels(path: Path) -> dict[str, dict[str, str]]:
        """Read once per file version: a run builds a letter writer for every step that asks
        what a letter says, and a tabletop exercise builds one per response round."""
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        cached = _LABELS.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        loaded = read_yaml(path, LABELS)
        if not isinstance(loaded, dict) or "en" not in loaded:
            raise TemplateFieldError(f"{path}: needs a mapping of locales with at least 'en'")
        _LABELS[path] = (stamp, loaded)
        return loaded

    def _label(self, category: DataCategory, locale: str) -> str:
        for key in (locale, base_language(locale), "en"):
            table = self.labels.get(key)
            if table and category.value in table:
                return table[category.value]
        raise TemplateFieldError(
            f"{self.renderer.templates_dir / LABELS_FILE}: no label for data category {category.value!r}"
        )

    def context(
        self,
        customer: Customer,
        rule: Rule,
        exposed: frozenset[DataCategory],
        language: str | None = None,
        template: str = "",
    ) -> dict[str, Any]:
        """The fields of one letter written in `language` (default: the customer's),
        validated by the rule's context model; raises naming rule, template and field.

        The model runs once per shape (rule, language, exposed data); for the other letters
        of a shape only the customer's own fields differ, and those the rule requires are
        checked non-empty, letter by letter."""
        language = language or customer.locale
        spec = rule.letter
        assert spec is not None
        person = self._person(customer, language)
        required, forbidden = self._person_fields(rule)
        shape = (rule.id, language, exposed)
        same = self._checked.get(shape)
        if same is None:
            checked = self._validated(customer, rule, exposed, language, template, person)
            same = {
                k: v
                for k, v in checked.items()
                if k not in person and k not in spec.forbidden_fields
            }
            self._checked[shape] = same
        else:
            empty = [name for name in required if not person[name]]
            if empty:
                where = template or f"letters/{spec.template}"
                raise TemplateFieldError(
                    f"rule {rule.id}, template {where}: "
                    + "; ".join(f"required field {name} is empty" for name in empty)
                )
        context = {**same, **person}
        for name in forbidden:
            del context[name]
        return context

    def _person_fields(self, rule: Rule) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The rule's required and forbidden fields among the customer's own (`_person`)."""
        fields = self._person_rules.get(rule.id)
        if fields is None:
            spec = rule.letter
            assert spec is not None
            fields = self._person_rules[rule.id] = (
                tuple(name for name in spec.required_fields if name in PERSON_FIELDS),
                tuple(name for name in spec.forbidden_fields if name in PERSON_FIELDS),
            )
        return fields

    def _person(self, customer: Customer, language: str) -> dict[str, Any]:
        """The letter's fields that come from the customer's record (already validated as a
        Customer), the only ones that differ between letters of one shape."""
        greeting = self._greetings.get(language)
        if greeting is None:
            greeting = self._greetings[language] = self.data.greeting(language)
        street, city, postal_code = customer.street, customer.city, customer.postal_code
        address = [street, f"{postal_code} {city}".strip(), customer.country]
        return {
            "customer_id": customer.id,
            "greeting": greeting.say(customer.honorific, customer.full_name),
            "recipient_name": customer.full_name,
            "recipient_email": customer.email,
            "recipient_address": address if all(address) else list(filter(None, address)),
            "recipient_street": street,
            "recipient_city": city,
            "recipient_postal_code": postal_code,
            "recipient_region": customer.region,
            "recipient_country": customer.country,
        }

    def _validated(
        self,
        customer: Customer,
        rule: Rule,
        exposed: frozenset[DataCategory],
        language: str,
        template: str,
        person: dict[str, Any],
    ) -> dict[str, Any]:
        """Every field of the letter through the rule's context model: once per shape, and
        for a customer whose letter fails it (the error names rule, template and field)."""
        spec = rule.letter
        assert spec is not None
        model = self.model(rule)
        fields = model.model_fields
        labels, consequences, steps = self._about_for(language, exposed)
        government_id = DataCategory.GOVERNMENT_ID in exposed
        mine: dict[str, Any] = {
            **person,
            "data_categories": labels,
            "likely_consequences": consequences,
            "individual_steps": steps,
        }
        if "government_id_exposed" in fields:  # California
            mine["government_id_exposed"] = government_id
            mine["credit_bureaus"] = self.data.bureaus.bureaus if government_id else []
            mine["identity_theft_offer"] = self._offer(language, 12) if government_id else None
        if "ssn_exposed" in fields:  # Massachusetts
            mine["ssn_exposed"] = government_id
            mine["credit_bureaus"] = self.data.bureaus.bureaus
            mine["credit_monitoring"] = self._offer(language, 18) if government_id else None
        try:
            checked = model.model_validate({**self._shared_for(rule, language), **mine})
        except ValidationError as exc:
            where = template or f"letters/{spec.template}"
            raise TemplateFieldError(
                f"rule {rule.id}, template {where}: {describe_context_error(exc)}"
            ) from None
        return dict(checked.__dict__)

    def render(
        self, customer: Customer, rule: Rule, exposed: frozenset[DataCategory]
    ) -> tuple[str, str]:
        """(subject, body) of one letter. The template's first line is 'Subject: ...'."""
        name, _, text, _ = self._rendered(customer, rule, exposed, with_html=False)
        return self._subject_and_body(name, text)

    def render_letter(
        self,
        customer: Customer,
        rule: Rule,
        exposed: frozenset[DataCategory],
        with_html: bool = True,
    ) -> RenderedLetter:
        """One letter as text and, `with_html`, as HTML from the same template and context
        with every value escaped; in the language it was written in."""
        name, language, text, escaped = self._rendered(customer, rule, exposed, with_html)
        subject, body = self._subject_and_body(name, text)
        page = html_page(escaped.partition("\n")[2], language) if with_html else ""
        return RenderedLetter(subject, body, page, language)

    def _plan(self, rule: Rule, locale: str) -> tuple[str, str, bool, bool]:
        """The template for a rule's letter to a customer locale, its language, whether
        that language is a fallback and whether the incident's texts are untranslated in it."""
        key = (rule.id, locale)
        plan = self._plans.get(key)
        if plan is None:
            spec = rule.letter
            assert spec is not None
            name = self.renderer.pick_locale(
                f"letters/{spec.template}", locale, spec.default_locale
            )
            self._template_for[key] = name
            language = template_language(name)
            plan = self._plans[key] = (
                name,
                language,
                language not in (locale, base_language(locale)),
                not self._texts_in(language)[1],
            )
        return plan

    def _rendered(
        self,
        customer: Customer,
        rule: Rule,
        exposed: frozenset[DataCategory],
        with_html: bool,
    ) -> tuple[str, str, str, str]:
        """(template, language, text, escaped text or "") of one letter, counted as written
        in a fallback language or with untranslated incident texts."""
        plan = self._plans.get((rule.id, customer.locale)) or self._plan(rule, customer.locale)
        name, language, fallback, untranslated = plan
        if fallback:
            self.fallbacks[(rule.id, customer.locale)] += 1
        if untranslated:
            self.untranslated[(rule.id, language)] += 1
        try:
            context = self.context(customer, rule, exposed, language, name)
            text = self.renderer.render(name, context)
            escaped = self.renderer.render_escaped(name, context) if with_html else ""
        except TemplateFieldError as exc:
            raise TemplateFieldError(
                f"customer {customer.id}: {without_customer_data(str(exc), customer)}"
            ) from None
        except Exception as exc:
            raise TemplateFieldError(
                f"{self.renderer.templates_dir / name}: customer {customer.id}: "
                f"{type(exc).__name__} while rendering (message withheld: it may quote "
                "customer data)"
            ) from None
        return name, language, text, escaped

    def _subject_and_body(self, name: str, text: str) -> tuple[str, str]:
        first, _, body = text.partition("\n")
        if not first.startswith("Subject: "):
            raise TemplateFieldError(
                f"{self.renderer.templates_dir / name}: first line must be 'Subject: ...'"
            )
        return first.removeprefix("Subject: ").strip(), body.lstrip("\n")
