"""Obligations per customer, deadlines, and letters rendered strictly and safely."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from breachbook.errors import TemplateFieldError
from breachbook.models import (
    DataCategory,
    Incident,
    Organisation,
    RejectedRecord,
    describe_validation_error,
    validate_customer,
)
from breachbook.notify import WITHHELD, LetterWriter, assess, obligation_record
from breachbook.rules import RuleBook, add_deadline, check_rule_templates
from breachbook.templates import Renderer
from tests.conftest import ROOT, T0
from tests.fakes import InMemoryCustomers, customer

CARD = frozenset({DataCategory.FINANCIAL_ACCOUNT})
RULES = RuleBook.load(ROOT / "rules" / "obligations.yaml")
ORG = Organisation.model_validate(
    {
        "legal_name": "Example Ltd",
        "contact": {
            "phone": "+1 555 0100",
            "email": "privacy@example.org",
            "web": "https://example.org",
            "postal": "1 Road",
        },
        "dpo_contact": "dpo@example.org",
    }
)


def incident(**changes: object) -> Incident:
    data: dict[str, object] = {
        "id": "inc-test-1",
        "title": "Test breach",
        "description": "Records were copied.",
        "cause": "A leaked key.",
        "started_at": T0 - timedelta(days=2),
        "discovered_at": T0,
        "exposed_tables": [{"table": "customers", "columns": ["full_name"]}],
        "data_categories": ["name", "email", "postal_address", "financial_account"],
        "risk_assessment": {},
        "measures_taken": ["We locked the account."],
        "likely_consequences": "Phishing.",
        "individual_steps": ["Watch your statements."],
    }
    level = changes.pop("risk", None)
    if level is not None:
        data["risk_assessment"] = {
            "override": {
                "level": level,
                "justification": "The test sets this level to check the rules that need it.",
                "by": "tests",
            }
        }
    data.update(changes)
    return Incident.model_validate(data)


def test_obligations_follow_residence_and_exposed_data() -> None:
    people = InMemoryCustomers(
        [
            customer("C1", "DE", locale="de-DE"),
            customer("C2", "US", "CA", "en-US", extra=CARD),
            customer("C3", "US", "CA", "en-US"),  # no card on file: no California notice
            customer("C4", "CN", locale="zh-CN"),
            customer("C5", "US", "TX", "en-US", extra=CARD),
            customer("C6", "US", "OR", "en-US", extra=CARD),  # no Oregon rule yet
            customer("C7", "US", "WA", "en-US", extra=CARD),
        ]
    )
    owed: list[tuple[str, str]] = []
    found = assess(people, RULES, incident(), lambda rule, cid: owed.append((rule, cid)))
    assert found.affected == 7
    assert sorted(owed) == [
        ("cn-pipl-57", "C4"),
        ("gdpr-a34", "C1"),
        ("us-ca", "C2"),
        ("us-tx", "C5"),
        ("us-wa", "C7"),
    ]
    assert {rule: t.count for rule, t in found.individual.items()} == dict.fromkeys(
        ["cn-pipl-57", "gdpr-a34", "us-ca", "us-tx", "us-wa"], 1
    )
    assert found.owed_customers == 5
    assert found.below_threshold == {"US-CA": 1}
    assert found.not_covered == {"US-OR": 1}
    assert set(found.regulator) == {"gdpr-a33", "cn-pipl-57-authority"}  # us-ca-ag needs > 500


def test_gdpr_individual_notice_needs_high_risk_and_encryption_removes_it() -> None:
    people = InMemoryCustomers([customer("C1", "FR", locale="fr-FR")])
    assert "gdpr-a34" not in assess(people, RULES, incident(risk="risk")).individual
    assert "gdpr-a33" in assess(people, RULES, incident(risk="risk")).regulator
    assert assess(people, RULES, incident(risk="unlikely")).regulator == {}
    encrypted = assess(people, RULES, incident(data_encrypted=True))
    assert "gdpr-a34" not in encrypted.individual
    assert (
        "gdpr-a34"
        in assess(people, RULES, incident(data_encrypted=True, key_compromised=True)).individual
    )


def test_california_attorney_general_only_above_500_residents() -> None:
    people = InMemoryCustomers(
        [customer(f"C{i}", "US", "CA", "en-US", extra=CARD) for i in range(500)]
    )
    assert assess(people, RULES, incident()).regulator == {}
    people.records.append(customer("C999", "US", "CA", "en-US", extra=CARD))
    assert assess(people, RULES, incident()).regulator["us-ca-ag"].count == 501


def test_deadlines() -> None:
    start = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)  # a Friday
    assert add_deadline(start, "PT72H") == start + timedelta(hours=72)
    assert add_deadline(start, "P30D") == start + timedelta(days=30)
    assert add_deadline(start, "ASAP") is None
    assert add_deadline(start, "P4BD") == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_rule_templates_exist() -> None:
    check_rule_templates(RULES, ROOT / "templates")


def writer(templates: Path = ROOT / "templates", about: Incident | None = None) -> LetterWriter:
    return LetterWriter(Renderer(templates), ORG, about or incident(), T0)


def test_california_letter_has_the_required_headings_and_fields() -> None:
    rule = next(r for r in RULES.rules if r.id == "us-ca")
    person = customer("C2", "US", "CA", "en-US", name="Maria Lopez", extra=CARD)
    subject, body = writer().render(
        person, rule, person.categories & frozenset(incident().data_categories)
    )
    assert subject == "Notice of Data Breach"
    for heading in (
        "What Happened?",
        "What Information Was Involved?",
        "What We Are Doing.",
        "What You Can Do.",
        "For More Information.",
    ):
        assert heading in body
    assert "Maria Lopez" in body and "Springfield, CA 12345" in body
    assert "your bank account details" in body  # financial_account: an account, not a card
    assert "payment card" not in body and "card statements" not in body
    assert "Date of notice: November 28, 2026" in body


def test_letters_use_the_customer_language_and_count_fallbacks() -> None:
    rule = next(r for r in RULES.rules if r.id == "gdpr-a34")
    exposed = frozenset(incident().data_categories)
    letters = writer()
    _, german = letters.render(customer("C1", "DE", locale="de-DE"), rule, exposed)
    assert "Welche Daten betroffen sind" in german and "Ihre Postanschrift" in german
    _, dutch = letters.render(customer("C6", "NL", locale="nl-NL"), rule, exposed)
    assert "Om welke gegevens het gaat" in dutch and "uw postadres" in dutch
    _, italian = letters.render(customer("C4", "IT", locale="it-IT"), rule, exposed)
    assert "Quali dati sono coinvolti" in italian and "il suo indirizzo postale" in italian
    _, spanish = letters.render(customer("C5", "ES", locale="es-ES"), rule, exposed)
    assert "Qué datos se han visto afectados" in spanish and "su dirección postal" in spanish
    _, polish = letters.render(customer("C7", "PL", locale="pl-PL"), rule, exposed)
    assert "What data was involved" in polish  # no Polish template yet: English
    _, irish = letters.render(customer("C8", "IE", locale="en-IE"), rule, exposed)
    assert "What data was involved" in irish
    assert letters.fallbacks == {("gdpr-a34", "pl-PL"): 1}


GERMAN = {
    "description": "Datensätze wurden kopiert.",
    "cause": "Ein abgeflossener Schlüssel.",
    "likely_consequences": "Phishing.",
    "measures_taken": ["Wir haben das Konto gesperrt."],
    "individual_steps": ["Prüfen Sie Ihre Abrechnungen."],
}


def test_letters_quote_the_incident_in_the_letters_language() -> None:
    rule = next(r for r in RULES.rules if r.id == "gdpr-a34")
    exposed = frozenset(incident().data_categories)
    letters = writer(about=incident(translations={"de": GERMAN}))
    _, german = letters.render(customer("C1", "DE", locale="de-DE"), rule, exposed)
    assert "Datensätze wurden kopiert." in german and "Wir haben das Konto gesperrt." in german
    assert "Records were copied." not in german
    _, english = letters.render(customer("C2", "IE", locale="en-IE"), rule, exposed)
    assert "Records were copied." in english
    _, french = letters.render(customer("C3", "FR", locale="fr-FR"), rule, exposed)
    assert "Records were copied." in french  # no French translation: counted, not hidden
    assert letters.untranslated == {("gdpr-a34", "fr"): 1}


@pytest.mark.parametrize(
    ("translations", "expected"),
    [
        ({"de": GERMAN | {"cause": None}}, "translations.de: missing cause"),
        (
            {"de": GERMAN | {"measures_taken": []}},
            "translations.de: missing measures_taken",
        ),
        (
            {"de": GERMAN | {"individual_steps": ["Eins.", "Zwei."]}},
            "translations.de.individual_steps: 2 items, the incident has 1",
        ),
        ({"en-GB": GERMAN}, "translations.en-GB: same language as the incident's texts"),
        ({"German": GERMAN}, "translations.German.[key]: String should match pattern"),
        ({"de": GERMAN | {"greeting": "Hallo"}}, "translations.de.greeting: Extra inputs"),
    ],
)
def test_incomplete_translations_are_refused_naming_language_and_field(
    translations: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        incident(translations=translations)
    assert expected in describe_validation_error(caught.value)


def test_a_check_across_fields_reads_as_one_plain_line() -> None:
    with pytest.raises(ValidationError) as caught:
        incident(translations={"de": GERMAN | {"cause": None}})
    assert describe_validation_error(caught.value) == "translations.de: missing cause"
    with pytest.raises(ValidationError) as caught:
        incident(started_at=T0 + timedelta(days=1))
    assert describe_validation_error(caught.value) == "discovered_at is before started_at"


def test_hostile_names_are_printed_as_written_never_run() -> None:
    rule = next(r for r in RULES.rules if r.id == "gdpr-a34")
    hostile = "{{ self.__init__.__globals__ }} <script>alert(1)</script> Robert'); DROP TABLE customers;--"
    _, body = writer().render(
        customer("C1", "DE", name=hostile), rule, frozenset(incident().data_categories)
    )
    assert hostile in body


@pytest.mark.parametrize("bad_name", ["Eve\nBcc: all@example.org", "Mallory\x00", "Bob\u202eevil"])
def test_names_with_control_characters_are_rejected_by_id_without_the_value(bad_name: str) -> None:
    raw = customer("C7", "DE").model_dump() | {"full_name": bad_name}
    outcome = validate_customer(raw)
    assert isinstance(outcome, RejectedRecord)
    assert outcome.customer_id == "C7" and "full_name" in outcome.problem
    assert bad_name not in outcome.problem


@pytest.mark.parametrize(
    "bad_email", ["eve.example.org", "eve@", "eve<script>@example.org", "eve@exa mple.org"]
)
def test_malformed_emails_are_rejected_without_quoting_the_address(bad_email: str) -> None:
    raw = customer("C8", "FR").model_dump() | {"email": bad_email}
    outcome = validate_customer(raw)
    assert isinstance(outcome, RejectedRecord)
    assert outcome.customer_id == "C8"
    assert outcome.problem == "email: value is not a valid email address"


def test_valid_emails_are_normalised_the_same_way_twice() -> None:
    raw = customer("C8", "FR").model_dump() | {"email": "Zoe@EXAMPLE.org"}
    first, second = validate_customer(raw), validate_customer(raw)
    assert not isinstance(first, RejectedRecord) and not isinstance(second, RejectedRecord)
    assert first.email == second.email == "Zoe@example.org"


def test_unusable_records_are_counted_not_dropped() -> None:
    bad = RejectedRecord("C9", "email: value is not a valid email address")
    found = assess(InMemoryCustomers([customer("C1", "DE"), bad]), RULES, incident())
    assert [(r.customer_id, r.problem) for r in found.rejected] == [
        ("C9", "email: value is not a valid email address")
    ]
    assert found.affected == 1


def test_missing_template_field_names_template_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "letters" / "gdpr-a34"
    folder.mkdir(parents=True)
    for data in ("category-labels", "advice", "greetings", "claims", "credit-bureaus"):
        (tmp_path / "letters" / f"{data}.yaml").write_text(
            (ROOT / f"templates/letters/{data}.yaml").read_text()
        )
    (folder / "en.txt.j2").write_text("Subject: x\nDear {{ recipient_nmae }},\n")
    rule = next(r for r in RULES.rules if r.id == "gdpr-a34")
    with pytest.raises(TemplateFieldError) as caught:
        writer(tmp_path).render(
            customer("C1", "DE", name="Secret Person"), rule, frozenset(incident().data_categories)
        )
    message = str(caught.value)
    assert "gdpr-a34/en.txt.j2" in message and "'recipient_nmae' is undefined" in message
    assert "Secret Person" not in message


def test_empty_required_field_is_an_error_naming_it() -> None:
    rule = next(r for r in RULES.rules if r.id == "gdpr-a34")
    nobody = ORG.model_copy(update={"dpo_contact": ""})
    letters = LetterWriter(Renderer(ROOT / "templates"), nobody, incident(), T0)
    with pytest.raises(
        TemplateFieldError,
        match=r"^customer C1: rule gdpr-a34, template letters/gdpr-a34/en.txt.j2: "
        r"required field dpo_contact is empty$",
    ):
        letters.render(customer("C1", "DE"), rule, frozenset(incident().data_categories))


def test_a_required_field_of_the_customer_is_checked_on_every_letter_of_a_shape() -> None:
    """The context model runs once per (rule, language, exposed data); the customer's own
    fields still have to be there on each letter, not only on the first of its shape."""
    gdpr = next(r for r in RULES.rules if r.id == "gdpr-a34")
    assert gdpr.letter is not None
    spec = gdpr.letter.model_copy(
        update={"required_fields": [*gdpr.letter.required_fields, "recipient_postal_code"]}
    )
    rule = gdpr.model_copy(update={"letter": spec})
    letters = LetterWriter(Renderer(ROOT / "templates"), ORG, incident(), T0)
    exposed = frozenset(incident().data_categories)
    first, second = customer("C1", "DE"), customer("C2", "DE")
    letters.render(first, rule, exposed)
    homeless = second.model_copy(update={"postal_code": ""})
    with pytest.raises(
        TemplateFieldError,
        match=r"^customer C2: rule gdpr-a34, template letters/gdpr-a34/en.txt.j2: "
        r"required field recipient_postal_code is empty$",
    ):
        letters.render(homeless, rule, exposed)
    assert letters.render(second, rule, exposed)[1]


def test_forbidden_fields_are_withheld_from_the_template(tmp_path: Path) -> None:
    """A Massachusetts-style rule: the letter must not describe the breach."""
    rule = next(r for r in RULES.rules if r.id == "gdpr-a34")
    spec = rule.letter
    assert spec is not None
    quiet = rule.model_copy(
        update={
            "letter": spec.model_copy(
                update={
                    "forbidden_fields": ["incident_description"],
                    "required_fields": ["org_legal_name"],
                }
            )
        }
    )
    with pytest.raises(TemplateFieldError, match="'incident_description' is undefined"):
        writer().render(customer("C1", "DE"), quiet, frozenset(incident().data_categories))


def test_forbidden_fields_are_withheld_from_every_letter_of_a_shape() -> None:
    """Shared fields and the customer's own alike, on the letter that runs the context
    model and on those of its shape that reuse it."""
    rule = next(r for r in RULES.rules if r.id == "gdpr-a34")
    assert rule.letter is not None
    spec = rule.letter.model_copy(
        update={
            "forbidden_fields": ["incident_description", "recipient_email"],
            "required_fields": ["org_legal_name"],
        }
    )
    quiet = rule.model_copy(update={"letter": spec})
    letters = LetterWriter(Renderer(ROOT / "templates"), ORG, incident(), T0)
    exposed = frozenset(incident().data_categories)
    for person in (customer("C1", "DE"), customer("C2", "DE")):
        context = letters.context(person, quiet, exposed, "en")
        assert "incident_description" not in context and "recipient_email" not in context
        assert context["recipient_name"] == person.full_name


def test_a_template_error_quoting_a_customer_value_keeps_only_the_customer_id(
    tmp_path: Path,
) -> None:
    """A template that looks a customer's value up fails with a message quoting it; the
    message reaches Prefect and the ledger, so the value is taken out."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "letters" / "gdpr-a34" / "en.txt.j2").write_text(
        "Subject: Notice\n{{ org_contact[recipient_name] }}\n", encoding="utf-8"
    )
    rule = next(r for r in RULES.rules if r.id == "gdpr-a34")
    letters = LetterWriter(Renderer(templates), ORG, incident(), T0)
    with pytest.raises(TemplateFieldError) as caught:
        letters.render(
            customer("C1", "DE", name="Zoe Quartermain"),
            rule,
            frozenset(incident().data_categories),
        )
    message = str(caught.value)
    assert message.startswith("customer C1: ") and WITHHELD in message
    assert "Quartermain" not in message


def test_the_encryption_safe_harbour_applies_only_to_rules_that_have_one() -> None:
    people = InMemoryCustomers([customer("C1", "CN", locale="zh-CN")])
    encrypted = assess(people, RULES, incident(data_encrypted=True))
    assert not RULES.rule("cn-pipl-57").encryption_safe_harbour
    assert "cn-pipl-57" in encrypted.individual


def test_the_gdpr_clock_starts_at_awareness_not_discovery() -> None:
    aware = T0 + timedelta(hours=5)  # discovered at T0, aware five hours later
    about = incident(aware_at=aware.isoformat())
    people = InMemoryCustomers([customer("C1", "DE", locale="de-DE")])
    tally = assess(people, RULES, about).regulator["gdpr-a33"]
    record = obligation_record(tally, RULES.rule("gdpr-a33"), about, aware)
    assert record["clock_started_at"] == aware.isoformat()
    assert record["due_at"] == (aware + timedelta(hours=72)).isoformat()
    assert record["hours_left"] == 72.0 and record["overdue"] is False
    late = obligation_record(tally, RULES.rule("gdpr-a33"), about, aware + timedelta(hours=73))
    assert late["overdue"] is True and late["hours_left"] == -1.0
