"""Who gets a printed letter, on which paper, addressed how: customers without an email
address are posted to, and one with neither an email nor a postal address is set aside."""

from __future__ import annotations

from breachbook.models import RejectedRecord, validate_customer
from breachbook.post import address_lines, by_post, paper_for
from breachbook.rules import RuleBook
from tests.conftest import ROOT
from tests.fakes import customer

RULES = RuleBook.load(ROOT / "rules" / "obligations.yaml")
GDPR = RULES.rule("gdpr-a34")


def test_a_customer_without_email_is_posted_to_and_one_with_email_is_not() -> None:
    raw = customer("C1", "DE", locale="de-DE").model_dump()
    for missing in ("", "  ", None):
        posted = validate_customer(raw | {"email": missing})
        assert not isinstance(posted, RejectedRecord)
        assert not posted.has_email and by_post(posted, GDPR)
    mailed = validate_customer(raw)
    assert not isinstance(mailed, RejectedRecord) and not by_post(mailed, GDPR)
    written = GDPR.model_copy(update={"written_notice": True})
    assert by_post(mailed, written)


def test_a_customer_with_neither_email_nor_address_is_set_aside_by_id() -> None:
    raw = customer("C2", "FR").model_dump() | {"email": "", "street": "", "city": ""}
    outcome = validate_customer(raw)
    assert isinstance(outcome, RejectedRecord) and outcome.customer_id == "C2"
    assert outcome.problem == "email: no email address, and no street and city to post a letter to"


def test_paper_and_address_follow_the_destination_country() -> None:
    assert [paper_for(c) for c in ("US", "CA", "DE", "CN", "GB")] == [
        "letter",
        "letter",
        "A4",
        "A4",
        "A4",
    ]
    us = customer("C3", "US", "CA", "en-US", name="Ann Lee")
    assert address_lines(us, "en-US") == [
        "Ann Lee",
        "1 Main Street",
        "Springfield, CA 12345",
        "United States",
    ]
    de = customer("C4", "DE", locale="de-DE", name="Jörg Groß")
    assert address_lines(de, "de") == [
        "Jörg Groß",
        "1 Main Street",
        "12345 Springfield",
        "Deutschland",
    ]
