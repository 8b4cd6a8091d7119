"""Every rule of rules/obligations.yaml against a table of incidents: who is owed what, by when.

Each case is one incident (where the affected people live and how many, what was exposed,
encryption and key, risk, which kind of organisation) and the complete set of obligations
it must produce, each with its due time: a date, "ASAP", or "after:<rule>" for a clock that
starts when another obligation is fulfilled. Run through `assess` and `obligation_record`
as the obligations step does. The incident was discovered at T0, the organisation became
aware six hours later and the breach started two days before, so each due time also shows
which clock the rule counts from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from breachbook.models import Customer, DataCategory, Incident, RejectedRecord
from breachbook.notices import NoticeWriter
from breachbook.notify import Assessment, LetterWriter, Tally, assess, obligation_record
from breachbook.rules import Rule, RuleBook, RulesError, check_rule_templates
from breachbook.templates import Renderer
from tests.conftest import ROOT, T0
from tests.fakes import InMemoryCustomers, customer
from tests.unit.test_notify import ORG

RULES = RuleBook.load(ROOT / "rules" / "obligations.yaml")
DISCOVERED = T0  # Saturday 2026-11-28 12:00 UTC
AWARE = T0 + timedelta(hours=6)  # Saturday 18:00
STARTED = T0 - timedelta(days=2)

CARD = frozenset({DataCategory.FINANCIAL_ACCOUNT})
PAYMENT_CARD = frozenset({DataCategory.PAYMENT_CARD})
MEDICAL = frozenset({DataCategory.MEDICAL})
BIOMETRIC = frozenset({DataCategory.BIOMETRIC})
LOGIN = frozenset({DataCategory.ACCOUNT_CREDENTIALS})
NONE: frozenset[DataCategory] = frozenset()

WITH_CARD = ("name", "email", "postal_address", "financial_account")
NAME_ONLY = ("name", "email", "postal_address")
WITH_CARD_NUMBER = ("name", "email", "postal_address", "payment_card")
WITH_LOGIN = ("email", "account_credentials")

CN_SCALE = 10_000
"""The China CAC measures start at a leak of 1,000,000 people: the table runs them with that
threshold divided by CN_SCALE (100 people), so a case takes milliseconds, and
test_the_cac_threshold_is_one_million_people checks the rules file says 1,000,000."""


def days(n: int) -> timedelta:
    return timedelta(days=n)


def hours(n: int) -> timedelta:
    return timedelta(hours=n)


Due = datetime | str


@dataclass(frozen=True)
class Case:
    name: str
    people: list[tuple[str, int, frozenset[DataCategory]]]
    expected: dict[str, Due]
    exposed: tuple[str, ...] = WITH_CARD
    risk: str | None = "high"
    encrypted: bool = False
    key_taken: bool = False
    entity: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)


def ca_30() -> Due:
    return DISCOVERED + days(30)


CASES = [
    # ---- California: the AG's sample copy is due 15 days after the residents are told
    Case("ca-one-card", [("US-CA", 1, CARD)], {"us-ca": ca_30()}),
    Case("ca-500-no-ag", [("US-CA", 500, CARD)], {"us-ca": ca_30()}),
    Case(
        "ca-501-ag-after-residents",
        [("US-CA", 501, CARD)],
        {"us-ca": ca_30(), "us-ca-ag": "after:us-ca"},
        counts={"us-ca-ag": 501},
    ),
    Case("ca-name-without-card", [("US-CA", 1, NONE)], {}),
    Case(
        "ca-login-without-name",
        [("US-CA", 1, LOGIN)],
        {"us-ca": ca_30()},
        exposed=("email", "account_credentials"),
    ),
    Case("ca-encrypted", [("US-CA", 1, CARD)], {}, encrypted=True),
    Case(
        "ca-encrypted-key-taken",
        [("US-CA", 1, CARD)],
        {"us-ca": ca_30()},
        encrypted=True,
        key_taken=True,
    ),
    # ---- New York
    Case(
        "ny-one",
        [("US-NY", 1, CARD)],
        {"us-ny": DISCOVERED + days(30), "us-ny-agencies": DISCOVERED + days(30)},
    ),
    Case(
        "ny-5000-no-bureaus",
        [("US-NY", 5000, CARD)],
        {"us-ny": DISCOVERED + days(30), "us-ny-agencies": DISCOVERED + days(30)},
    ),
    Case(
        "ny-5001-bureaus",
        [("US-NY", 5001, CARD)],
        {
            "us-ny": DISCOVERED + days(30),
            "us-ny-agencies": DISCOVERED + days(30),
            "us-ny-cra": DISCOVERED + days(30),
        },
        counts={"us-ny-cra": 5001},
    ),
    Case(
        "ny-biometric",
        [("US-NY", 1, BIOMETRIC)],
        {"us-ny": DISCOVERED + days(30), "us-ny-agencies": DISCOVERED + days(30)},
        exposed=("name", "biometric"),
    ),
    Case(
        "ny-login-without-name",
        [("US-NY", 1, LOGIN)],
        {"us-ny": DISCOVERED + days(30), "us-ny-agencies": DISCOVERED + days(30)},
        exposed=("email", "account_credentials"),
    ),
    Case("ny-encrypted", [("US-NY", 1, CARD)], {}, encrypted=True),
    # ---- NYDFS: only for a DFS-regulated organisation, wherever the people live
    Case(
        "nydfs-covered-entity",
        [("US-NY", 1, CARD)],
        {
            "us-ny": DISCOVERED + days(30),
            "us-ny-agencies": DISCOVERED + days(30),
            "us-nydfs": AWARE + hours(72),
        },
        entity=("nydfs-covered-entity",),
    ),
    Case(
        "nydfs-for-people-outside-new-york",
        [("DE", 1, NONE)],
        {"gdpr-a33": AWARE + hours(72), "gdpr-a34": "ASAP", "us-nydfs": AWARE + hours(72)},
        entity=("nydfs-covered-entity",),
    ),
    # ---- Texas: AG at 250 or more, bureaus above 10,000; clock from determination
    Case("tx-249", [("US-TX", 249, CARD)], {"us-tx": AWARE + days(60)}),
    Case(
        "tx-250-ag",
        [("US-TX", 250, CARD)],
        {"us-tx": AWARE + days(60), "us-tx-ag": AWARE + days(30)},
        counts={"us-tx-ag": 250},
    ),
    Case(
        "tx-10000-no-bureaus",
        [("US-TX", 10_000, CARD)],
        {"us-tx": AWARE + days(60), "us-tx-ag": AWARE + days(30)},
    ),
    Case(
        "tx-10001-bureaus",
        [("US-TX", 10_001, CARD)],
        {"us-tx": AWARE + days(60), "us-tx-ag": AWARE + days(30), "us-tx-cra": "ASAP"},
    ),
    Case(
        "tx-login-is-not-sensitive",
        [("US-TX", 1, LOGIN)],
        {},
        exposed=("email", "account_credentials"),
    ),
    Case(
        "tx-medical",
        [("US-TX", 1, MEDICAL)],
        {"us-tx": AWARE + days(60)},
        exposed=("name", "medical"),
    ),
    # ---- Florida: AG at 500 or more, bureaus above 1,000, no-harm determination
    Case("fl-499", [("US-FL", 499, CARD)], {"us-fl": DISCOVERED + days(30)}),
    Case(
        "fl-500-ag",
        [("US-FL", 500, CARD)],
        {"us-fl": DISCOVERED + days(30), "us-fl-ag": DISCOVERED + days(30)},
    ),
    Case(
        "fl-1000-no-bureaus",
        [("US-FL", 1000, CARD)],
        {"us-fl": DISCOVERED + days(30), "us-fl-ag": DISCOVERED + days(30)},
    ),
    Case(
        "fl-1001-bureaus",
        [("US-FL", 1001, CARD)],
        {
            "us-fl": DISCOVERED + days(30),
            "us-fl-ag": DISCOVERED + days(30),
            "us-fl-cra": "ASAP",
        },
    ),
    Case(
        "fl-no-likely-harm",
        [("US-FL", 1, CARD)],
        {"us-fl-no-harm": DISCOVERED + days(30)},
        risk="unlikely",
    ),
    Case(
        "fl-no-likely-harm-500",
        [("US-FL", 500, CARD)],
        {"us-fl-ag": DISCOVERED + days(30), "us-fl-no-harm": DISCOVERED + days(30)},
        risk="unlikely",
    ),
    Case("fl-encrypted-no-harm", [("US-FL", 1, CARD)], {}, risk="unlikely", encrypted=True),
    Case(
        "fl-risk-not-assessed-counts-as-high",
        [("US-FL", 1, CARD)],
        {"us-fl": DISCOVERED + days(30)},
        risk=None,
    ),
    # ---- Massachusetts
    Case(
        "ma-one",
        [("US-MA", 1, CARD)],
        {"us-ma": "ASAP", "us-ma-regulators": "ASAP"},
    ),
    Case("ma-no-substantial-risk", [("US-MA", 1, CARD)], {}, risk="unlikely"),
    Case(
        "ma-medical-is-not-personal-information",
        [("US-MA", 1, MEDICAL)],
        {},
        exposed=("name", "medical"),
    ),
    # ---- HIPAA: covered entities only
    Case(
        "hipaa-not-a-covered-entity",
        [("US-CA", 1, MEDICAL)],
        {"us-ca": ca_30()},
        exposed=("name", "medical"),
    ),
    Case(
        "hipaa-covered-entity",
        [("US-CA", 1, MEDICAL)],
        {"us-ca": ca_30(), "us-hipaa": DISCOVERED + days(60)},
        exposed=("name", "medical"),
        entity=("hipaa-covered-entity",),
    ),
    Case(
        "hipaa-500-across-states-hhs-no-media",
        [("US-WA", 300, MEDICAL), ("US-IL", 200, MEDICAL)],
        {
            "us-hipaa": DISCOVERED + days(60),
            "us-hipaa-hhs": DISCOVERED + days(60),
            "us-wa": DISCOVERED + days(30),  # the states' own laws count medical data too
            "us-il": "ASAP",
        },
        exposed=("name", "medical"),
        entity=("hipaa-covered-entity",),
        counts={"us-hipaa-hhs": 500},
    ),
    Case(
        "hipaa-501-in-one-state-media",
        [("US-WA", 501, MEDICAL), ("US-IL", 10, MEDICAL)],
        {
            "us-hipaa": DISCOVERED + days(60),
            "us-hipaa-hhs": DISCOVERED + days(60),
            "us-hipaa-media": DISCOVERED + days(60),
            "us-wa": DISCOVERED + days(30),
            "us-wa-ag": DISCOVERED + days(30),
            "us-il": "ASAP",
        },
        exposed=("name", "medical"),
        entity=("hipaa-covered-entity",),
    ),
    Case(
        "hipaa-low-probability",
        [("US-WA", 1, MEDICAL)],
        {},
        exposed=("name", "medical"),
        entity=("hipaa-covered-entity",),
        risk="unlikely",
    ),
    # ---- SEC: registrants only, four business days (Saturday 18:00 -> Thursday 18:00)
    Case(
        "sec-registrant",
        [("DE", 1, NONE)],
        {
            "gdpr-a33": AWARE + hours(72),
            "gdpr-a34": "ASAP",
            "us-sec-8k": datetime(2026, 12, 3, 18, 0, tzinfo=UTC),
        },
        entity=("sec-registrant",),
    ),
    # ---- China
    Case(
        "cn-one",
        [("CN", 1, NONE)],
        {"cn-pipl-57": "ASAP", "cn-pipl-57-authority": "ASAP"},
    ),
    Case(
        "cn-cac-below-threshold",
        [("CN", 1_000_000 // CN_SCALE - 1, NONE)],
        {"cn-pipl-57": "ASAP", "cn-pipl-57-authority": "ASAP"},
    ),
    Case(
        "cn-cac-other-operator",
        [("CN", 1_000_000 // CN_SCALE, NONE)],
        {
            "cn-pipl-57": "ASAP",
            "cn-pipl-57-authority": "ASAP",
            "cn-cac-2025": DISCOVERED + hours(4),
        },
    ),
    Case(
        "cn-cac-cii-operator",
        [("CN", 1_000_000 // CN_SCALE, NONE)],
        {
            "cn-pipl-57": "ASAP",
            "cn-pipl-57-authority": "ASAP",
            "cn-cac-2025-cii": DISCOVERED + hours(1),
        },
        entity=("cn-cii-operator",),
    ),
    Case(
        "cn-cac-state-body",
        [("CN", 1_000_000 // CN_SCALE, NONE)],
        {
            "cn-pipl-57": "ASAP",
            "cn-pipl-57-authority": "ASAP",
            "cn-cac-2025-state": DISCOVERED + hours(2),
        },
        entity=("cn-state-body",),
    ),
    Case(
        "cn-encrypted-no-safe-harbour",
        [("CN", 1, NONE)],
        {"cn-pipl-57": "ASAP", "cn-pipl-57-authority": "ASAP"},
        encrypted=True,
    ),
    # ---- Singapore: significant harm, or 500 people whatever the harm
    Case(
        "sg-significant-harm",
        [("SG", 1, NONE)],
        {"sg-pdpa-pdpc": AWARE + days(3), "sg-pdpa": "ASAP"},
    ),
    Case("sg-499-no-significant-harm", [("SG", 499, NONE)], {}, risk="risk"),
    Case(
        "sg-500-no-significant-harm",
        [("SG", 500, NONE)],
        {"sg-pdpa-pdpc": AWARE + days(3)},
        risk="risk",
        counts={"sg-pdpa-pdpc": 500},
    ),
    Case(
        "sg-encrypted-still-owed",
        [("SG", 1, NONE)],
        {"sg-pdpa-pdpc": AWARE + days(3), "sg-pdpa": "ASAP"},
        encrypted=True,
    ),
    # ---- Australia
    Case("au-serious-harm", [("AU", 1, NONE)], {"au-ndb-oaic": "ASAP", "au-ndb": "ASAP"}),
    Case("au-no-serious-harm", [("AU", 1, NONE)], {}, risk="risk"),
    # ---- Canada (CA is Canada; US-CA is California)
    Case(
        "canada-real-risk",
        [("CA", 1, CARD)],
        {"ca-pipeda-opc": "ASAP", "ca-pipeda": "ASAP"},
    ),
    Case("canada-no-real-risk", [("CA", 1, CARD)], {}, risk="risk"),
    # ---- Japan: sensitive or card data, or more than 1,000 people
    Case(
        "jp-card",
        [("JP", 1, CARD)],
        {
            "jp-appi-ppc-preliminary": AWARE + days(3),
            "jp-appi-ppc-final": AWARE + days(30),
            "jp-appi": "ASAP",
        },
        risk="risk",
    ),
    Case("jp-1000-names", [("JP", 1000, NONE)], {}),
    Case(
        "jp-1001-names",
        [("JP", 1001, NONE)],
        {
            "jp-appi-ppc-preliminary": AWARE + days(3),
            "jp-appi-ppc-final": AWARE + days(30),
        },
        counts={"jp-appi-ppc-final": 1001},
    ),
    Case("jp-encrypted", [("JP", 1001, CARD)], {}, encrypted=True),
    # ---- Brazil: three business days (Saturday 18:00 -> Wednesday 18:00)
    Case(
        "br-card",
        [("BR", 1, CARD)],
        {
            "br-lgpd-anpd": datetime(2026, 12, 2, 18, 0, tzinfo=UTC),
            "br-lgpd": datetime(2026, 12, 2, 18, 0, tzinfo=UTC),
        },
    ),
    Case("br-names-only", [("BR", 1, NONE)], {}),
    Case("br-not-significant", [("BR", 1, CARD)], {}, risk="risk"),
    # ---- GDPR and UK GDPR
    Case("eu-high", [("DE", 1, NONE)], {"gdpr-a33": AWARE + hours(72), "gdpr-a34": "ASAP"}),
    Case("eu-risk", [("FR", 1, NONE)], {"gdpr-a33": AWARE + hours(72)}, risk="risk"),
    Case("eu-unlikely", [("IT", 1, NONE)], {}, risk="unlikely"),
    Case(
        "uk-high",
        [("GB", 1, NONE)],
        {"uk-gdpr-ico": AWARE + hours(72), "uk-gdpr-a34": "ASAP"},
    ),
    # ---- Washington: 30 days from discovery, the AG above 500, no notice without risk of harm
    Case(
        "wa-card",
        [("US-WA", 1, PAYMENT_CARD)],
        {"us-wa": DISCOVERED + days(30)},
        exposed=WITH_CARD_NUMBER,
    ),
    Case("wa-bank-account", [("US-WA", 1, CARD)], {"us-wa": DISCOVERED + days(30)}),
    Case("wa-500-no-ag", [("US-WA", 500, CARD)], {"us-wa": DISCOVERED + days(30)}),
    Case(
        "wa-501-ag",
        [("US-WA", 501, CARD)],
        {"us-wa": DISCOVERED + days(30), "us-wa-ag": DISCOVERED + days(30)},
        counts={"us-wa-ag": 501},
    ),
    Case("wa-no-risk-of-harm", [("US-WA", 1, CARD)], {}, risk="unlikely"),
    Case(
        "wa-password-alone",
        [("US-WA", 1, LOGIN)],
        {"us-wa": DISCOVERED + days(30)},
        exposed=WITH_LOGIN,
    ),
    Case("wa-encrypted", [("US-WA", 1, CARD)], {}, encrypted=True),
    # ---- Illinois: most expedient time; the AG above 500, no later than the residents
    Case("il-card", [("US-IL", 1, PAYMENT_CARD)], {"us-il": "ASAP"}, exposed=WITH_CARD_NUMBER),
    Case("il-name-only", [("US-IL", 1, NONE)], {}, exposed=NAME_ONLY),
    Case(
        "il-501-ag",
        [("US-IL", 501, MEDICAL)],
        {"us-il": "ASAP", "us-il-ag": "ASAP"},
        exposed=("name", "medical"),
    ),
    Case("il-no-harm-test", [("US-IL", 1, CARD)], {"us-il": "ASAP"}, risk="unlikely"),
    # ---- Card numbers and bank accounts are two categories; each triggers the US laws
    Case(
        "ca-card-number",
        [("US-CA", 1, PAYMENT_CARD)],
        {"us-ca": DISCOVERED + days(30)},
        exposed=WITH_CARD_NUMBER,
    ),
    # ---- No rule for the place
    Case("oregon-no-rule-yet", [("US-OR", 1, CARD)], {}),
    # ---- Many places at once, each with its own clock
    Case(
        "everyone-at-once",
        [
            ("US-CA", 1, CARD),
            ("US-NY", 1, CARD),
            ("US-TX", 1, CARD),
            ("US-FL", 1, CARD),
            ("US-MA", 1, CARD),
            ("DE", 1, NONE),
            ("GB", 1, NONE),
            ("CN", 1, NONE),
            ("SG", 1, NONE),
            ("AU", 1, NONE),
            ("CA", 1, NONE),
            ("JP", 1, CARD),
            ("BR", 1, CARD),
        ],
        {
            "us-ca": ca_30(),
            "us-ny": DISCOVERED + days(30),
            "us-ny-agencies": DISCOVERED + days(30),
            "us-tx": AWARE + days(60),
            "us-fl": DISCOVERED + days(30),
            "us-ma": "ASAP",
            "us-ma-regulators": "ASAP",
            "gdpr-a33": AWARE + hours(72),
            "gdpr-a34": "ASAP",
            "uk-gdpr-ico": AWARE + hours(72),
            "uk-gdpr-a34": "ASAP",
            "cn-pipl-57": "ASAP",
            "cn-pipl-57-authority": "ASAP",
            "sg-pdpa-pdpc": AWARE + days(3),
            "sg-pdpa": "ASAP",
            "au-ndb-oaic": "ASAP",
            "au-ndb": "ASAP",
            "ca-pipeda-opc": "ASAP",
            "ca-pipeda": "ASAP",
            "jp-appi-ppc-preliminary": AWARE + days(3),
            "jp-appi-ppc-final": AWARE + days(30),
            "jp-appi": "ASAP",
            "br-lgpd-anpd": datetime(2026, 12, 2, 18, 0, tzinfo=UTC),
            "br-lgpd": datetime(2026, 12, 2, 18, 0, tzinfo=UTC),
        },
    ),
]


def book_for(entity: tuple[str, ...]) -> RuleBook:
    """The committed rules, for an organisation of these entity types, with the CAC
    threshold scaled down (see CN_SCALE)."""
    raw = RULES.model_dump()
    raw["entity_types"] = list(entity)
    for rule in raw["rules"]:
        if rule["id"].startswith("cn-cac-2025"):
            rule["min_affected"] //= CN_SCALE
    return RuleBook.model_validate(raw)


BOOKS = {entity: book_for(entity) for entity in {case.entity for case in CASES}}


def people_of(case: Case) -> list[Customer | RejectedRecord]:
    """`count` customers per place (one record repeated: assess reads, never mutates it)."""
    out: list[Customer | RejectedRecord] = []
    for number, (place, count, extra) in enumerate(case.people):
        country, _, region = place.partition("-")
        out += [customer(f"C{number}", country, region, extra=extra)] * count
    return out


def set_by_a_person(level: str) -> dict[str, Any]:
    """The table gives each case its level outright: a person's override of the assessment."""
    justification = "The table case sets this level to test the rules that depend on it."
    return {"override": {"level": level, "justification": justification, "by": "tests"}}


def incident_of(case: Case) -> Incident:
    return Incident.model_validate(
        {
            "id": "inc-table-1",
            "title": "Table case",
            "description": "Records were copied.",
            "cause": "A leaked key.",
            "started_at": STARTED,
            "discovered_at": DISCOVERED,
            "aware_at": AWARE,
            "data_categories": list(case.exposed),
            "risk_assessment": None if case.risk is None else set_by_a_person(case.risk),
            "data_encrypted": case.encrypted,
            "key_compromised": case.key_taken,
        }
    )


def due_of(record: dict[str, Any]) -> Due:
    if record["due_after"] is not None:
        assert record["due_at"] is None
        return f"after:{record['due_after']}"
    if record["due_at"] == "ASAP":
        return "ASAP"
    return datetime.fromisoformat(record["due_at"])


def records_of(case: Case) -> dict[str, dict[str, Any]]:
    book = BOOKS[case.entity]
    about = incident_of(case)
    found = assess(InMemoryCustomers(people_of(case)), book, about)
    tallies = [*found.regulator.values(), *found.individual.values()]
    return {t.rule_id: obligation_record(t, book.rule(t.rule_id), about, T0) for t in tallies}


def test_the_table_has_forty_cases_and_reaches_every_rule() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)
    reached = {rule_id for case in CASES for rule_id in case.expected}
    assert reached == {rule.id for rule in RULES.rules}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_obligations_and_due_times(case: Case) -> None:
    records = records_of(case)
    assert {rule_id: due_of(r) for rule_id, r in records.items()} == case.expected
    for rule_id, count in case.counts.items():
        assert records[rule_id]["affected_count"] == count


def test_the_cac_threshold_is_one_million_people() -> None:
    for rule_id in ("cn-cac-2025", "cn-cac-2025-cii", "cn-cac-2025-state"):
        rule = RULES.rule(rule_id)
        assert rule.min_affected == 1_000_000
        assert not rule.meets_threshold({"CN": 999_999})
        assert rule.meets_threshold({"CN": 1_000_000})


@pytest.mark.parametrize(
    ("rule_id", "at_least"),
    [
        ("us-ca-ag", 501),  # more than 500
        ("us-ny-cra", 5001),  # more than 5,000
        ("us-tx-ag", 250),  # at least 250
        ("us-tx-cra", 10_001),  # more than 10,000
        ("us-fl-ag", 500),  # 500 or more
        ("us-fl-cra", 1001),  # more than 1,000
        ("us-hipaa-hhs", 500),  # 500 or more
        ("us-hipaa-media", 501),  # more than 500 residents of one state
    ],
)
def test_thresholds_follow_the_laws_wording(rule_id: str, at_least: int) -> None:
    rule = RULES.rule(rule_id)
    assert rule.min_affected == at_least
    assert not rule.meets_threshold({"X": at_least - 1})
    assert rule.meets_threshold({"X": at_least})


def test_hipaa_media_counts_one_state_at_a_time() -> None:
    rule = RULES.rule("us-hipaa-media")
    assert not rule.meets_threshold({"US-WA": 500, "US-IL": 500})
    assert rule.meets_threshold({"US-WA": 501, "US-IL": 1})


# ---- the California AG's clock: 15 days after the residents are notified --------------


def california_501() -> tuple[Tally, Incident]:
    case = next(case for case in CASES if case.name == "ca-501-ag-after-residents")
    about = incident_of(case)
    found = assess(InMemoryCustomers(people_of(case)), RULES, about)
    return found.regulator["us-ca-ag"], about


def test_the_california_ag_copy_has_no_date_until_the_residents_are_notified() -> None:
    tally, about = california_501()
    record = obligation_record(tally, RULES.rule("us-ca-ag"), about, T0 + days(40))
    assert record["due_at"] is None
    assert record["due_after"] == "us-ca"
    assert record["due"] == "15 days after us-ca is fulfilled"
    assert record["clock_starts"] == "after:us-ca" and record["deadline"] == "P15D"
    assert record["clock_started_at"] is None
    assert record["hours_left"] is None and record["overdue"] is False
    assert record["affected_count"] == 501


def test_the_california_ag_copy_is_due_15_days_after_the_residents_are_notified() -> None:
    tally, about = california_501()
    notified = DISCOVERED + days(20)
    record = obligation_record(
        tally, RULES.rule("us-ca-ag"), about, notified, fulfilled={"us-ca": notified}
    )
    assert record["due_at"] == (notified + days(15)).isoformat()
    assert record["due"] == record["due_at"]
    assert record["clock_started_at"] == notified.isoformat()
    assert record["hours_left"] == 360.0 and record["overdue"] is False


def test_every_record_keeps_the_fields_other_code_reads() -> None:
    for rule_id, record in records_of(CASES[-1]).items():
        assert {
            "id",
            "title",
            "citation",
            "audience",
            "recipient",
            "deadline",
            "clock_starts",
            "clock_started_at",
            "due_at",
            "due_after",
            "due",
            "hours_left",
            "overdue",
            "affected_count",
            "by_jurisdiction",
            "verified_citation",
            "notes",
        } <= set(record), rule_id


# ---- the rules file itself -------------------------------------------------------------


def rules_with(**changes: Any) -> dict[str, Any]:
    raw = RULES.model_dump()
    raw.update(changes)
    return raw


def test_every_rule_cites_its_source_and_unverified_facts_are_flagged() -> None:
    for rule in RULES.rules:
        assert rule.citation.strip(), rule.id
        if "[unverified]" in rule.notes:
            assert not rule.verified, rule.id


def test_a_clock_after_an_unknown_rule_is_refused() -> None:
    raw = rules_with()
    next(r for r in raw["rules"] if r["id"] == "us-ca-ag")["clock_starts"] = "after:us-zz"
    with pytest.raises(ValueError, match="clock_starts names no rule 'us-zz'"):
        RuleBook.model_validate(raw)


def test_clocks_that_start_after_each_other_in_a_circle_are_refused() -> None:
    raw = rules_with()
    next(r for r in raw["rules"] if r["id"] == "us-ca")["clock_starts"] = "after:us-ca-ag"
    with pytest.raises(ValueError, match=r"in a circle \(us-ca -> us-ca-ag -> us-ca\)"):
        RuleBook.model_validate(raw)


@pytest.mark.parametrize("clock", ["after:", "after:US-CA", "determination", "after us-ca"])
def test_a_malformed_clock_is_refused(clock: str) -> None:
    raw = rules_with()
    raw["rules"][0]["clock_starts"] = clock
    with pytest.raises(ValueError, match="or after:<rule id>"):
        RuleBook.model_validate(raw)


def test_an_unknown_entity_type_is_refused() -> None:
    with pytest.raises(ValueError, match="entity_types nydfs-regulated named by no rule"):
        RuleBook.model_validate(rules_with(entity_types=["nydfs-regulated"]))


def test_an_individual_rule_cannot_have_a_count_threshold() -> None:
    raw = rules_with()
    next(r for r in raw["rules"] if r["id"] == "us-tx")["min_affected"] = 250
    with pytest.raises(ValueError, match="rule us-tx: an individual obligation is decided per"):
        RuleBook.model_validate(raw)


def test_a_rule_id_used_twice_is_refused() -> None:
    raw = rules_with()
    raw["rules"].append(dict(raw["rules"][0]))
    with pytest.raises(ValueError, match="rule id\\(s\\) gdpr-a33 used more than once"):
        RuleBook.model_validate(raw)


def test_the_rules_file_loads_and_every_template_exists() -> None:
    assert RuleBook.load(ROOT / "rules" / "obligations.yaml") == RULES
    check_rule_templates(RULES, ROOT / "templates")
    with pytest.raises(RulesError):
        RULES.rule("us-zz")


def test_docs_name_every_rule() -> None:
    docs = (ROOT / "docs" / "jurisdictions.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z0-9-]+)`", docs))
    assert {rule.id for rule in RULES.rules} <= named


# ---- every new letter and notice renders from the context the run gives it -------------


def full_incident() -> Incident:
    return incident_of(CASES[0]).model_copy(
        update={
            "measures_taken": ["We locked the account."],
            "likely_consequences": "Phishing.",
            "individual_steps": ["Watch your statements."],
        }
    )


@pytest.mark.parametrize(
    "rule", [r for r in RULES.rules if r.letter is not None], ids=lambda r: r.id
)
def test_every_letter_renders_with_a_subject(rule: Rule) -> None:
    about = full_incident()
    person = customer("C1", "US", "NY", "en-US", name="Maria Lopez", extra=CARD)
    writer = LetterWriter(Renderer(ROOT / "templates"), ORG, about, T0)
    subject, body = writer.render(person, rule, person.categories & frozenset(WITH_CARD))
    assert subject and "Maria Lopez" in body and "C1" in body


def test_the_massachusetts_letter_never_states_the_nature_of_the_breach() -> None:
    rule = RULES.rule("us-ma")
    assert rule.letter is not None
    assert {"incident_description", "affected_count"} <= set(rule.letter.forbidden_fields)
    person = customer("C1", "US", "MA", "en-US", extra=CARD)
    writer = LetterWriter(Renderer(ROOT / "templates"), ORG, full_incident(), T0)
    _, body = writer.render(person, rule, person.categories & frozenset(WITH_CARD))
    for said in ("Records were copied.", "A leaked key.", "We locked the account."):
        assert said not in body
    assert "police report" in body and "security freeze" in body
    assert "Credit monitoring" not in body  # offered when a Social Security number was exposed


def notice_context(tally: Tally, rule: Rule, about: Incident) -> dict[str, Any]:
    """What DraftRegulatorNotices gives a notice: statement_context(ctx) and the fields the
    product's NoticeWriter adds for this obligation."""
    base = {
        "org": ORG.model_dump(),
        "incident": {
            "id": about.id,
            "title": about.title,
            "description": about.description,
            "cause": about.cause,
            "started_at": about.started_at.isoformat(),
            "discovered_at": about.discovered_at.isoformat(),
            "data_categories": [c.value for c in about.data_categories],
            "measures_taken": about.measures_taken,
            "individual_steps": about.individual_steps,
            "likely_consequences": about.likely_consequences,
        },
        "today": T0.date().isoformat(),
        "affected_customers": tally.count,
        "affected_by_country": {"US": tally.count},
    }
    writer = NoticeWriter(Renderer(ROOT / "templates"), ORG, RULES, about)
    found = Assessment(affected=tally.count, regulator={rule.id: tally})
    context, _ = writer.context(found, rule, T0, {}, {}, [], base)
    return context


@pytest.mark.parametrize(
    "rule", [r for r in RULES.rules if r.audience == "regulator"], ids=lambda r: r.id
)
def test_every_notice_renders_with_its_due_time(rule: Rule) -> None:
    about = full_incident()
    tally = Tally(rule_id=rule.id, count=600, by_jurisdiction={"US-WA": 600})
    record = obligation_record(tally, rule, about, T0)
    assert rule.notice_template is not None
    text = Renderer(ROOT / "templates").render(
        rule.notice_template, notice_context(tally, rule, about)
    )
    assert about.id in text and record["due"] in text


def test_the_california_ag_notice_says_when_it_is_due_without_inventing_a_date() -> None:
    tally, about = california_501()
    text = Renderer(ROOT / "templates").render(
        "regulators/us-ca-ag.md.j2", notice_context(tally, RULES.rule("us-ca-ag"), about)
    )
    assert "**Due:** 15 days after us-ca is fulfilled" in text
    assert "None" not in text
