"""Breach-notification obligations as data (rules/obligations.yaml), never as if-chains."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from breachbook.errors import BreachbookError
from breachbook.inputs import RULES, InputError, read_yaml
from breachbook.models import Customer, DataCategory, Incident, describe_validation_error

RISK_ORDER = {"unlikely": 0, "risk": 1, "high": 2}
_DURATION = TypeAdapter(timedelta)


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
    id: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]
    title: str
    citation: str
    audience: Literal["individual", "regulator"]
    applies_to: list[str] = Field(min_length=1)
    recipient: str
    deadline: str
    clock_starts: Literal["awareness", "discovery", "occurrence"]
    min_risk: Literal["unlikely", "risk", "high"] = "unlikely"
    encryption_safe_harbour: bool = False
    triggers: list[Trigger] = []
    min_affected: int = 1
    letter: LetterSpec | None = None
    notice_template: str | None = None
    verified: bool = True
    notes: str = ""

    @field_validator("deadline")
    @classmethod
    def _deadline_form(cls, value: str) -> str:
        parse_deadline(value)
        return value

    def applies_to_data(self, exposed: frozenset[DataCategory]) -> bool:
        return not self.triggers or any(trigger.matches(exposed) for trigger in self.triggers)

    def applies_to_incident(self, incident: Incident) -> bool:
        """Does the incident reach this rule's risk (and miss its safe harbour)? A risk not yet
        assessed counts as high: a draft that owes too much is safer than a missed deadline."""
        risk = incident.risk or "high"
        if RISK_ORDER[risk] < RISK_ORDER[self.min_risk]:
            return False
        safe = incident.data_encrypted and not incident.key_compromised
        return not (self.encryption_safe_harbour and safe)

    def clock_start(self, incident: Incident) -> datetime:
        return {
            "awareness": incident.awareness,
            "discovery": incident.discovered_at,
            "occurrence": incident.started_at,
        }[self.clock_starts]

    def due_at(self, incident: Incident) -> datetime | None:
        """When notice is due; None means ASAP (due now, escalating)."""
        return add_deadline(self.clock_start(incident), self.deadline)


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


class RuleBook(Strict):
    groups: dict[str, list[str]] = {}
    rules: list[Rule]

    def expand(self, codes: list[str]) -> set[str]:
        out: set[str] = set()
        for code in codes:
            out.update(self.groups.get(code, [code]))
        return out

    def individual_rules(self, customer: Customer) -> list[Rule]:
        """Individual rules whose jurisdiction includes this customer (data not yet checked)."""
        places = {customer.jurisdiction, customer.country}
        return [
            rule
            for rule in self.rules
            if rule.audience == "individual" and places & self.expand(rule.applies_to)
        ]

    def rule(self, rule_id: str) -> Rule:
        found = next((rule for rule in self.rules if rule.id == rule_id), None)
        if found is None:
            raise RulesError(f"no rule {rule_id!r} in the rule book")
        return found

    def regulator_rules(self) -> list[Rule]:
        return [rule for rule in self.rules if rule.audience == "regulator"]

    @classmethod
    def load(cls, path: Path) -> RuleBook:
        """Read the rules within the limits of breachbook.inputs."""
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
