"""The incident's risk to the people affected, as a recorded assessment rather than a word.

GDPR Art. 33 and 34, PIPEDA's "real risk of significant harm", Florida's no-harm
determination and the encryption safe harbours all turn on the same question, and a
regulator asks how it was answered. So the incident file describes the facts the answer
rests on (how easily the people are identified, how many, what was done to contain it); the
data categories and the encryption and key status are the incident's own fields. The level
follows from them by the table below, with one reason per factor; a person may set another
level only by writing why and signing with their name. Every reason goes into the breach
register (breachbook.register).

Levels are the words of the law the rules use: `unlikely` (to result in a risk to the
people: low), `risk` (medium) and `high` (a high risk, GDPR Art. 34(1)).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RiskLevel = Literal["unlikely", "risk", "high"]
LEVELS: tuple[RiskLevel, ...] = ("unlikely", "risk", "high")
LEVEL_WORDS: dict[str, str] = {
    "unlikely": "low: unlikely to result in a risk to the people's rights and freedoms",
    "risk": "medium: likely to result in a risk to the people's rights and freedoms",
    "high": "high: likely to result in a high risk to the people's rights and freedoms",
}
Sensitivity = Literal["low", "medium", "high"]

SENSITIVITY: dict[str, Sensitivity] = {
    "name": "low",
    "email": "low",
    "preferences": "low",
    "postal_address": "medium",
    "phone": "medium",
    "purchase_history": "medium",
    "financial_account": "high",
    "payment_card": "high",
    "account_credentials": "high",
    "government_id": "high",
    "medical": "high",
    "health_insurance": "high",
    "biometric": "high",
    "genetic": "high",
    "children": "high",
    "special_category": "high",
}
"""How much harm each data category can do on its own (EDPB Guidelines 9/2022, and the
categories the US statutes list because they enable identity theft or fraud). A category
missing here counts as high: breachbook.models checks that every category has an entry."""
_LEVEL_OF: dict[Sensitivity, RiskLevel] = {"low": "unlikely", "medium": "risk", "high": "high"}

LARGE_SCALE = 100_000
"""People affected from which the volume alone raises the level one step."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskOverride(Strict):
    """A person's decision to set another level than the assessment's: never without why."""

    level: RiskLevel
    justification: Annotated[str, Field(min_length=20, max_length=10_000)] = Field(
        description="Why the assessed level is wrong, in full sentences (kept in the register)"
    )
    by: Annotated[str, Field(min_length=3, max_length=200)] = Field(
        description="Who decided, by name and role ('legal: Ada Lovelace')"
    )

    @model_validator(mode="after")
    def _written(self) -> RiskOverride:
        if not self.justification.strip() or not self.by.strip():
            raise ValueError("an override needs a written justification and a name")
        return self


class RiskFactors(Strict):
    """`risk_assessment:` in the incident file: the facts the level rests on."""

    people: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Approximate number of people affected (volume)"
    )
    identifiable: Literal["directly", "with_effort", "hardly"] = Field(
        default="directly",
        description="How easily the people can be identified from the data exposed: directly "
        "(names, emails), with_effort (needs other data), hardly (pseudonymised)",
    )
    mitigation: Literal["none", "partial", "effective"] = Field(
        default="none",
        description="What was done to keep the data from being misused (effective: e.g. the "
        "copy was recovered and deleted before use, every exposed password was reset)",
    )
    mitigation_notes: Annotated[str, Field(max_length=10_000)] = ""
    override: RiskOverride | None = None

    @model_validator(mode="after")
    def _mitigation_described(self) -> RiskFactors:
        if self.mitigation != "none" and len(self.mitigation_notes.strip()) < 10:
            raise ValueError(
                f"mitigation_notes: say what made the mitigation {self.mitigation} "
                "(at least a sentence)"
            )
        return self


class RiskResult(Strict):
    """The level, how it was reached, and who overrode it if anyone did."""

    level: RiskLevel
    assessed: RiskLevel
    """The level the factors give, before any override."""
    reasons: list[str]
    overridden_by: str | None = None
    justification: str | None = None


def _step(level: RiskLevel, by: int) -> RiskLevel:
    return LEVELS[max(0, min(len(LEVELS) - 1, LEVELS.index(level) + by))]


def assess_risk(
    categories: Iterable[str], encrypted: bool, key_compromised: bool, factors: RiskFactors
) -> RiskResult:
    """The level and one reason per factor that shaped it."""
    return _assess(tuple(sorted(set(categories))), encrypted, key_compromised, factors)


@lru_cache(maxsize=256)
def _assess(
    categories: tuple[str, ...], encrypted: bool, key_compromised: bool, factors: RiskFactors
) -> RiskResult:
    reasons: list[str] = []
    if categories:
        by_level: dict[Sensitivity, list[str]] = {}
        for category in categories:
            by_level.setdefault(SENSITIVITY.get(category, "high"), []).append(category)
        worst: Sensitivity = next(s for s in ("high", "medium", "low") if s in by_level)
        level = _LEVEL_OF[worst]
        for sensitivity in ("high", "medium", "low"):
            if sensitivity in by_level:
                named = ", ".join(c.replace("_", " ") for c in by_level[sensitivity])
                reasons.append(
                    f"{sensitivity} sensitivity: {named}"
                    + (
                        " (the most sensitive exposed sets the starting level)"
                        if sensitivity == worst
                        else ""
                    )
                )
    else:
        level = "unlikely"
        reasons.append("no category of personal data is known to be exposed")
    if factors.identifiable == "hardly":
        level = _step(level, -1)
        reasons.append("the people can hardly be identified from the data (one step lower)")
    elif factors.identifiable == "with_effort":
        reasons.append("the people can be identified with other data (no change)")
    else:
        reasons.append("the people are directly identifiable from the data (no change)")
    if factors.people is not None:
        if factors.people >= LARGE_SCALE:
            level = _step(level, 1)
            reasons.append(
                f"about {factors.people:,} people: large scale, at least {LARGE_SCALE:,} "
                "(one step higher)"
            )
        else:
            reasons.append(f"about {factors.people:,} people (below {LARGE_SCALE:,}: no change)")
    if factors.mitigation == "effective":
        level = _step(level, -1)
        reasons.append(
            f"effective mitigation (one step lower): {factors.mitigation_notes.rstrip('.')}"
        )
    elif factors.mitigation == "partial":
        reasons.append(f"partial mitigation (no change): {factors.mitigation_notes.rstrip('.')}")
    if encrypted and not key_compromised:
        level = "unlikely"
        reasons.append(
            "the data was encrypted and the key was not compromised: unintelligible to whoever "
            "holds it (GDPR Art. 34(3)(a)); rules with an encryption safe harbour are not owed"
        )
    elif encrypted:
        reasons.append("the data was encrypted but the key was compromised: no protection")
    else:
        reasons.append("the data was not encrypted")
    assessed = level
    override = factors.override
    if override is None:
        return RiskResult(level=level, assessed=assessed, reasons=reasons)
    reasons.append(
        f"overridden from {assessed} to {override.level} by {override.by}: {override.justification}"
    )
    return RiskResult(
        level=override.level,
        assessed=assessed,
        reasons=reasons,
        overridden_by=override.by,
        justification=override.justification,
    )
