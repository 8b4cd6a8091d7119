"""Breach-notification obligations as data (rules/obligations.yaml), never as if-chains."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from breachbook.errors import BreachbookError
from breachbook.inputs import RULES, InputError, read_yaml, while_unchanged
from breachbook.models import Customer, DataCategory, Incident, describe_validation_error

RISK_ORDER = {"unlikely": 0, "risk": 1, "high": 2}
_DURATION = TypeAdapter(timedelta)
Risk = Literal["unlikely", "risk", "high"]
CLOCKS = ("awareness", "discovery", "occurrence")
AFTER = "after:"
"""`clock_starts: after:<rule id>`: the clock starts when that obligation is fulfilled."""
WORLDWIDE = "*"
"""`applies_to: ["*"]`: wherever the affected people live (an obligation of the organisation,
such as an SEC filing, not of the people's residence)."""
RuleId = Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]
EntityType = Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]


class RulesError(BreachbookError):
    """The obligations rules file is malformed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(Strict):
    """Exposed data that makes a law apply: all of `all_of` and at least one of `any_of`."""

    all_of: list[DataCategory] = []
    any_of: list[DataCategory] = []

    def matches(self, exposed: frozenset[DataCategory]) -> bool:
        if not all(cat in exposed for cat in self.all_of):
            return False
        return not self.any_of or any(cat in exposed for cat in self.any_of)


class LetterSpec(Strict):
    template: str = Field(description="Folder under templates/letters/ with <locale>.txt.j2 files")
    default_locale: str
    required_fields: list[str]
    forbidden_fields: list[str] = []


class Rule(Strict):
    id: RuleId
    title: str
    citation: str
    audience: Literal["individual", "regulator"]
    applies_to: list[str] = Field(min_length=1)
    recipient: str
    deadline: str
    clock_starts: str = Field(
        description="awareness, discovery, occurrence, or after:<rule id> (when that "
        "obligation is fulfilled)"
    )
    min_risk: Risk = "unlikely"
    max_risk: Risk = Field(
        default="high",
        description="Owed only up to this risk: an obligation that exists because the "
        "organisation found no likely harm (Florida's written determination)",
    )
    encryption_safe_harbour: bool = False
    triggers: list[Trigger] = []
    min_affected: int = Field(default=1, ge=1)
    min_affected_per: Literal["rule", "jurisdiction"] = Field(
        default="rule",
        description="rule: min_affected counts everyone in the rule's jurisdictions; "
        "jurisdiction: one jurisdiction alone must reach it (HIPAA media: one state)",
    )
    or_min_affected: int | None = Field(
        default=None,
        ge=1,
        description="Also owed, whatever the risk and the data exposed, once this many people "
        "in the rule's jurisdictions are affected (Singapore: 500; Japan: over 1,000)",
    )
    only_for: list[EntityType] = Field(
        default=[],
        description="Owed only by an organisation that declares all of these entity_types",
    )
    not_for: list[EntityType] = Field(
        default=[],
        description="Not owed by an organisation that declares any of these entity_types",
    )
    letter: LetterSpec | None = None
    written_notice: bool = Field(
        default=False,
        description="The law asks for notice in writing (on paper): each letter is also "
        "printed for the post, even to a customer with an email address. Set it only with the "
        "provision that says so in the rule's citation or notes",
    )
    notice_template: str | None = None
    notice_language: str = Field(
        default="en",
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="The language the regulator's notice is written in (zh-CN for the CAC)",
    )
    verified: bool = True
    notes: str = ""

    @field_validator("deadline")
    @classmethod
    def _deadline_form(cls, value: str) -> str:
        parse_deadline(value)
        return value

    @field_validator("clock_starts")
    @classmethod
    def _clock_form(cls, value: str) -> str:
        if value not in CLOCKS and not re.fullmatch(rf"{AFTER}[a-z0-9-]+", value):
            raise ValueError(f"must be one of {', '.join(CLOCKS)} or after:<rule id>")
        return value

    @model_validator(mode="after")
    def _counts_are_per_incident(self) -> Rule:
        if self.audience == "individual" and (
            self.min_affected != 1
            or self.min_affected_per != "rule"
            or self.or_min_affected is not None
        ):
            raise ValueError(
                f"rule {self.id}: an individual obligation is decided per person; "
                "min_affected, min_affected_per and or_min_affected are for regulator rules"
            )
        if RISK_ORDER[self.max_risk] < RISK_ORDER[self.min_risk]:
            raise ValueError(f"rule {self.id}: max_risk is below min_risk")
        return self

    @property
    def after(self) -> str | None:
        """The rule whose fulfilment starts this rule's clock, if any."""
        if self.clock_starts.startswith(AFTER):
            return self.clock_starts.removeprefix(AFTER)
        return None

    def applies_to_data(self, exposed: frozenset[DataCategory]) -> bool:
        return not self.triggers or any(trigger.matches(exposed) for trigger in self.triggers)

    def safe_harbour(self, incident: Incident) -> bool:
        """Is the incident's data exempt under this rule's encryption safe harbour?"""
        safe = incident.data_encrypted and not incident.key_compromised
        return self.encryption_safe_harbour and safe

    def applies_to_incident(self, incident: Incident) -> bool:
        """Does the incident reach this rule's risk (and miss its safe harbour)? A risk not yet
        assessed counts as high: a draft that owes too much is safer than a missed deadline."""
        risk = incident.risk or "high"
        if not RISK_ORDER[self.min_risk] <= RISK_ORDER[risk] <= RISK_ORDER[self.max_risk]:
            return False
        return not self.safe_harbour(incident)

    def applies_at_scale(self, incident: Incident) -> bool:
        """Can the number of people affected alone make this rule owed (or_min_affected)?"""
        return self.or_min_affected is not None and not self.safe_harbour(incident)

    def meets_threshold(self, by_jurisdiction: Mapping[str, int]) -> bool:
        """Do the people counted (those whose exposed data triggers the rule) reach it?"""
        if self.min_affected_per == "jurisdiction":
            return any(count >= self.min_affected for count in by_jurisdiction.values())
        return sum(by_jurisdiction.values()) >= self.min_affected

    def meets_scale(self, count: int) -> bool:
        return self.or_min_affected is not None and count >= self.or_min_affected

    def clock_start(
        self, incident: Incident, fulfilled: Mapping[str, datetime] | None = None
    ) -> datetime | None:
        """When the clock started; None while it waits for another obligation (`after:`)
        that is not fulfilled yet (`fulfilled`: rule id -> when it was fulfilled)."""
        other = self.after
        if other is not None:
            return (fulfilled or {}).get(other)
        return {
            "awareness": incident.awareness,
            "discovery": incident.discovered_at,
            "occurrence": incident.started_at,
        }[self.clock_starts]

    def due_at(
        self, incident: Incident, fulfilled: Mapping[str, datetime] | None = None
    ) -> datetime | None:
        """When notice is due; None means ASAP (due now, escalating), or, for a clock that
        starts after another obligation, not known until that one is fulfilled."""
        start = self.clock_start(incident, fulfilled)
        return None if start is None else add_deadline(start, self.deadline)


def parse_deadline(text: str) -> timedelta | int | None:
    """'ASAP' -> None, 'P4BD' -> 4 (business days), ISO 8601 duration -> timedelta."""
    if text == "ASAP":
        return None
    if text.startswith("P") and text.endswith("BD") and text[1:-2].isdigit():
        return int(text[1:-2])
    try:
        return _DURATION.validate_python(text)
    except ValidationError:
        raise ValueError(f"deadline {text!r} is not ASAP, P<n>BD or an ISO 8601 duration") from None


def add_deadline(start: datetime, deadline: str) -> datetime | None:
    amount = parse_deadline(deadline)
    if amount is None:
        return None
    if isinstance(amount, timedelta):
        return start + amount
    day = start
    remaining = amount
    while remaining:
        day += timedelta(days=1)
        if day.weekday() < 5:
            remaining -= 1
    return day


def describe_deadline(deadline: str) -> str:
    """'P15D' -> '15 days', 'PT72H' -> '72 hours', 'P4BD' -> '4 business days', 'ASAP'."""
    amount = parse_deadline(deadline)
    if amount is None:
        return "as soon as possible"
    if isinstance(amount, int):
        return f"{amount} business day{'s' if amount != 1 else ''}"
    seconds = int(amount.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    raise AssertionError("unreachable: every whole number of seconds divides by 1")


class RuleBook(Strict):
    entity_types: list[EntityType] = Field(
        default=[],
        description="What kind of organisation this is (nydfs-covered-entity, sec-registrant, "
        "hipaa-covered-entity, cn-cii-operator, cn-state-body): rules with only_for or not_for "
        "apply accordingly",
    )
    groups: dict[str, list[str]] = {}
    rules: list[Rule]

    @model_validator(mode="after")
    def _consistent(self) -> RuleBook:
        ids = [rule.id for rule in self.rules]
        twice = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
        if twice:
            raise ValueError(f"rule id(s) {', '.join(twice)} used more than once")
        known = set(ids)
        for rule in self.rules:
            if rule.after is not None and rule.after not in known:
                raise ValueError(f"rule {rule.id}: clock_starts names no rule {rule.after!r}")
        for rule in self.rules:
            seen = [rule.id]
            while (other := self.rule(seen[-1]).after) is not None:
                if other in seen:
                    raise ValueError(
                        f"rule {rule.id}: clocks start after each other in a circle "
                        f"({' -> '.join([*seen, other])})"
                    )
                seen.append(other)
        named = {flag for rule in self.rules for flag in (*rule.only_for, *rule.not_for)}
        unknown = sorted(set(self.entity_types) - named)
        if unknown:
            raise ValueError(
                f"entity_types {', '.join(unknown)} named by no rule's only_for or not_for"
            )
        return self

    def expand(self, codes: list[str]) -> set[str]:
        out: set[str] = set()
        for code in codes:
            out.update(self.groups.get(code, [code]))
        return out

    def owed_by_organisation(self, rule: Rule) -> bool:
        """Is this organisation (its entity_types) one the rule binds?"""
        declared = set(self.entity_types)
        return set(rule.only_for) <= declared and not declared & set(rule.not_for)

    def individual_rules(self, customer: Customer) -> list[Rule]:
        """Individual rules whose jurisdiction includes this customer (data not yet checked)."""
        places = {customer.jurisdiction, customer.country, WORLDWIDE}
        return [
            rule
            for rule in self.rules
            if rule.audience == "individual"
            and self.owed_by_organisation(rule)
            and places & self.expand(rule.applies_to)
        ]

    def rule(self, rule_id: str) -> Rule:
        found = next((rule for rule in self.rules if rule.id == rule_id), None)
        if found is None:
            raise RulesError(f"no rule {rule_id!r} in the rule book")
        return found

    def regulator_rules(self) -> list[Rule]:
        return [
            rule
            for rule in self.rules
            if rule.audience == "regulator" and self.owed_by_organisation(rule)
        ]

    @classmethod
    def load(cls, path: Path) -> RuleBook:
        """Read the rules within the limits of breachbook.inputs; read again only once the
        file changed (breachbook.inputs.while_unchanged)."""
        return _read_rule_book(path)

    @classmethod
    def read(cls, path: Path) -> RuleBook:
        """Read and check the rules file now."""
        try:
            raw = read_yaml(path, RULES)
        except InputError as exc:
            raise RulesError(str(exc)) from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise RulesError(f"{path}: {describe_validation_error(exc)}") from None


def check_rule_templates(book: RuleBook, templates_dir: Path) -> None:
    """Every letter folder has its default-locale template; every notice template exists."""
    missing = []
    for rule in book.rules:
        if rule.letter is not None:
            name = f"letters/{rule.letter.template}/{rule.letter.default_locale}.txt.j2"
            if not (templates_dir / name).is_file():
                missing.append(f"rule {rule.id}: letter template {name}")
        if (
            rule.notice_template is not None
            and not (templates_dir / rule.notice_template).is_file()
        ):
            missing.append(f"rule {rule.id}: notice template {rule.notice_template}")
        if rule.audience == "individual" and rule.letter is None:
            missing.append(f"rule {rule.id}: an individual obligation needs a letter")
        if rule.audience == "regulator" and rule.notice_template is None:
            missing.append(f"rule {rule.id}: a regulator obligation needs a notice_template")
    if missing:
        raise RulesError(f"{templates_dir}: missing " + "; ".join(missing))


_read_rule_book = while_unchanged(RULES, RuleBook.read)
