"""The recorded risk assessment: a table of facts and the level they give, with reasons; an
override only with a written justification and a name; the playbook's conditions still read
`incident.risk`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from breachbook.errors import IncidentFileError
from breachbook.expressions import evaluate
from breachbook.models import DataCategory, Incident
from breachbook.notify import assess
from breachbook.risk import SENSITIVITY
from tests.fakes import InMemoryCustomers, customer
from tests.unit.test_notify import RULES, incident

CARD = frozenset({DataCategory.FINANCIAL_ACCOUNT})


@dataclass
class Case:
    name: str
    categories: list[str]
    level: str
    reason: str
    """A reason the assessment must give."""
    factors: dict[str, Any] = field(default_factory=dict)
    encrypted: bool = False
    key_taken: bool = False


CASES = [
    Case("contact-only", ["name", "email"], "unlikely", "low sensitivity: email, name"),
    Case("address-and-phone", ["name", "phone", "postal_address"], "risk", "medium sensitivity"),
    Case("card", ["name", "financial_account"], "high", "high sensitivity: financial account"),
    Case("ssn", ["name", "government_id"], "high", "high sensitivity: government id"),
    Case("children", ["name", "children"], "high", "high sensitivity: children"),
    Case(
        "card-encrypted-key-safe",
        ["name", "financial_account"],
        "unlikely",
        "key was not compromised",
        encrypted=True,
    ),
    Case(
        "card-encrypted-key-taken",
        ["name", "financial_account"],
        "high",
        "the key was compromised: no protection",
        encrypted=True,
        key_taken=True,
    ),
    Case(
        "pseudonymised",
        ["purchase_history"],
        "unlikely",
        "can hardly be identified",
        {"identifiable": "hardly"},
    ),
    Case(
        "large-scale-contacts",
        ["name", "email"],
        "risk",
        "large scale",
        {"people": 250_000},
    ),
    Case("small-scale-contacts", ["name", "email"], "unlikely", "below 100,000", {"people": 900}),
    Case(
        "effective-mitigation",
        ["account_credentials"],
        "risk",
        "effective mitigation (one step lower): every password was reset",
        {"mitigation": "effective", "mitigation_notes": "every password was reset before use."},
    ),
    Case("nothing-known", [], "unlikely", "no category of personal data is known"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_the_assessment_gives_the_level_with_its_reasons(case: Case) -> None:
    about = incident(
        data_categories=case.categories,
        risk_assessment=case.factors,
        data_encrypted=case.encrypted,
        key_compromised=case.key_taken,
    )
    assessed = about.assessed_risk()
    assert assessed is not None
    assert (about.risk, assessed.assessed) == (case.level, case.level)
    assert any(case.reason in reason for reason in assessed.reasons), assessed.reasons
    assert assessed.overridden_by is None


def test_every_data_category_has_a_sensitivity() -> None:
    assert {c.value for c in DataCategory} == set(SENSITIVITY)


def test_without_an_assessment_the_risk_is_not_known_and_the_notify_steps_wait() -> None:
    about = incident(risk_assessment=None)
    assert about.risk is None and about.assessed_risk() is None
    view = {"incident": about.model_dump(mode="json")}
    assert not evaluate("incident.data_categories and incident.risk", view)
    assessed = {"incident": incident().model_dump(mode="json")}
    assert evaluate("incident.data_categories and incident.risk", assessed)
    assert evaluate("incident.risk == 'high'", assessed)


def test_an_override_sets_the_level_with_the_name_and_the_justification_kept() -> None:
    why = "Card numbers were truncated to the last four digits; no fraud is possible."
    about = incident(
        risk_assessment={"override": {"level": "risk", "justification": why, "by": "legal: Ada"}}
    )
    assessed = about.assessed_risk()
    assert assessed is not None
    assert (assessed.level, assessed.assessed) == ("risk", "high")
    assert (assessed.overridden_by, assessed.justification) == ("legal: Ada", why)
    assert assessed.reasons[-1] == f"overridden from high to risk by legal: Ada: {why}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"level": "unlikely", "by": "legal: Ada"},
            "risk_assessment.override.justification: Field required",
        ),
        (
            {"level": "unlikely", "justification": "not needed", "by": "legal: Ada"},
            "risk_assessment.override.justification: String should have at least 20 characters",
        ),
        (
            {"level": "unlikely", "justification": "A long enough reason for it, written out."},
            "risk_assessment.override.by: Field required",
        ),
        (
            {"level": "unlikely", "justification": " " * 30, "by": "legal: Ada"},
            "an override needs a written justification and a name",
        ),
        (
            {
                "level": "catastrophic",
                "justification": "A long enough reason for it, written out.",
                "by": "Ada",
            },
            "risk_assessment.override.level: Input should be 'unlikely', 'risk' or 'high'",
        ),
    ],
    ids=[
        "no-justification",
        "a-word-is-no-justification",
        "no-name",
        "blank-justification",
        "unknown-level",
    ],
)
def test_an_override_needs_a_written_justification_and_a_name(
    override: dict[str, Any], message: str
) -> None:
    text = (
        "id: inc-risk-1\ntitle: Test\nstarted_at: '2026-11-20T08:00:00+00:00'\n"
        "discovered_at: '2026-11-27T16:30:00+00:00'\ndata_categories: [name]\n"
        f"risk_assessment: {{override: {override!r}}}\n".replace("'", '"')
    )
    with pytest.raises(IncidentFileError, match=r"^incident.yaml: ") as caught:
        Incident.from_text(text, "incident.yaml")
    assert message in str(caught.value)


def test_effective_mitigation_must_be_described() -> None:
    with pytest.raises(
        ValueError, match="mitigation_notes: say what made the mitigation effective"
    ):
        incident(risk_assessment={"mitigation": "effective"})


def test_a_bare_risk_level_is_refused_with_what_to_write_instead() -> None:
    text = (
        "id: inc-risk-1\ntitle: Test\nstarted_at: '2026-11-20T08:00:00+00:00'\n"
        "discovered_at: '2026-11-27T16:30:00+00:00'\nrisk: high\n"
    )
    with pytest.raises(
        IncidentFileError,
        match="risk: a bare level is no longer accepted; describe risk_assessment",
    ):
        Incident.from_text(text, "incident.yaml")


def test_the_facts_read_back_from_the_ledger_keep_their_assessment() -> None:
    about = incident(risk_assessment={"people": 120_000})
    again = Incident.model_validate(about.model_dump(mode="json"))
    assert again == about and again.risk == "high"


def test_encryption_with_a_safe_key_removes_the_individual_notices_where_the_law_says_so() -> None:
    people = InMemoryCustomers(
        [
            customer("C1", "DE", locale="de", extra=CARD),
            customer("C2", "US", "CA", "en-US", extra=CARD),
        ]
    )
    plain = assess(people, RULES, incident(risk_assessment={}))
    assert {"gdpr-a34", "us-ca"} <= set(plain.individual)
    safe = assess(
        people, RULES, incident(risk_assessment={}, data_encrypted=True, key_compromised=False)
    )
    assert safe.individual == {} and safe.regulator == {}
    assert "safe harbour" in safe.not_owed["us-ca"] and "safe harbour" in safe.not_owed["gdpr-a34"]
    assert safe.not_owed["gdpr-a33"].startswith("risk assessed unlikely")
    taken = assess(
        people, RULES, incident(risk_assessment={}, data_encrypted=True, key_compromised=True)
    )
    assert {"gdpr-a34", "us-ca"} <= set(taken.individual)
