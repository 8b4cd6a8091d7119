"""Letters true for each customer, and nothing claimed that the ledger does not show.

Every template in every locale it ships renders from its rule's context model; required
fields are enforced by that model and Massachusetts' has no field describing the breach;
consequences and advice follow the reader's own exposed data; dates, numbers and greetings
follow the letter's locale; and a LIVE letter that states containment is not sent before the
ledger shows it done (through `execute`, with recording fakes)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from breachbook.engine import Status
from breachbook.errors import BreachbookError, TemplateFieldError
from breachbook.letters import (
    FAMILIES,
    LetterData,
    MassachusettsLetter,
    family_model,
    long_date,
    number,
)
from breachbook.models import Customer, DataCategory, IdentityTheftOffer, Organisation
from breachbook.modes import Mode
from breachbook.notify import LetterWriter
from breachbook.ports import Changed, Check
from breachbook.rules import Rule
from breachbook.settings import Settings
from breachbook.templates import Renderer
from tests.conftest import ROOT, T0, Fakes, run_with
from tests.fakes import InMemoryCustomers, RecordingDatabaseAdmin, customer
from tests.unit.test_notify import ORG, RULES, incident

TEMPLATES = ROOT / "templates"
LETTER_RULES = [rule for rule in RULES.rules if rule.letter is not None]
OFFER = IdentityTheftOffer(
    provider="Example Identity Guard",
    months=24,
    how_to_enrol="Call +1 555 0199 and quote your reference.",
    enrol_by=date(2027, 3, 31),
)
ORG_WITH_OFFER = ORG.model_copy(update={"identity_theft_offer": OFFER})
CARD = DataCategory.PAYMENT_CARD
GOV_ID = DataCategory.GOVERNMENT_ID
CONTACT = frozenset({DataCategory.NAME, DataCategory.EMAIL, DataCategory.POSTAL_ADDRESS})
EVERYTHING = frozenset(DataCategory)
PLAYBOOK = ROOT / "tests" / "data" / "letters" / "claims.yaml"
INCIDENT = ROOT / "tests" / "data" / "letters" / "incident.yaml"


def writer(org: Organisation = ORG_WITH_OFFER, templates: Path = TEMPLATES) -> LetterWriter:
    return LetterWriter(Renderer(templates), org, incident(), T0)


def rule(rule_id: str) -> Rule:
    return RULES.rule(rule_id)


def person(
    locale: str = "en", country: str = "US", region: str = "CA", honorific: str = ""
) -> Customer:
    found = customer("C1", country, region, locale, name="Maria Lopez")
    return found.model_copy(update={"honorific": honorific})


def shipped() -> list[tuple[Rule, str]]:
    """(rule, locale) for every letter template file of every rule."""
    pairs = []
    for letter_rule in LETTER_RULES:
        assert letter_rule.letter is not None
        folder = TEMPLATES / "letters" / letter_rule.letter.template
        for path in sorted(folder.glob("*.txt.j2")):
            pairs.append((letter_rule, path.name.removesuffix(".txt.j2")))
    return pairs


@pytest.mark.parametrize(("letter_rule", "locale"), shipped(), ids=lambda v: getattr(v, "id", v))
def test_every_template_renders_in_every_locale_it_ships_and_its_model_requires_each_field(
    letter_rule: Rule, locale: str
) -> None:
    letters = writer()
    reader = person(locale)
    subject, body = letters.render(reader, letter_rule, EVERYTHING)
    assert subject and "Maria Lopez" in body
    assert letters.fallbacks.total() == 0, "written in the locale it ships"
    assert letter_rule.letter is not None
    context = letters.context(reader, letter_rule, EVERYTHING, locale)
    model = letters.model(letter_rule)
    for name in letter_rule.letter.required_fields:
        assert context[name], f"{letter_rule.id}: {name} is empty"
        emptied = {**context, name: type(context[name])()}
        with pytest.raises(ValidationError) as caught:
            model.model_validate(emptied)
        assert [e["loc"] for e in caught.value.errors()] == [(name,)]
    for name in letter_rule.letter.forbidden_fields:
        assert name not in context
    template = f"letters/{letter_rule.letter.template}/{locale}.txt.j2"
    renderer = letters.renderer
    assert renderer.render(template, context) == renderer.template(template).render(context), (
        "the renderer's own path writes what jinja2's render does"
    )


def test_every_rule_with_a_letter_has_a_context_model_and_its_data_in_every_language() -> None:
    data = LetterData.load(TEMPLATES)
    languages = {locale for _, locale in shipped()}
    for language in languages:
        assert data.greeting(language)
        assert set(data.advice_for(language)) == set(DataCategory)
        for action in data.claims:
            assert data.claim_text(action, language)
    for letter_rule in LETTER_RULES:
        writer().model(letter_rule)  # raises on a required field the family lacks


def test_massachusetts_has_no_field_for_the_nature_of_the_breach_or_the_count(
    tmp_path: Path,
) -> None:
    ma = rule("us-ma")
    assert ma.letter is not None and FAMILIES["us-ma"] is MassachusettsLetter
    for forbidden in [*ma.letter.forbidden_fields, "affected_count", "incident_description"]:
        assert forbidden not in MassachusettsLetter.model_fields
    body = writer().render(person(region="MA"), ma, CONTACT | {CARD})[1]
    assert "Records were copied." not in body and "A leaked key." not in body
    assert "We locked the account." not in body
    # A template that names one cannot be rendered: StrictUndefined stops it, naming it.
    folder = tmp_path / "letters" / "us-ma"
    folder.mkdir(parents=True)
    for path in (TEMPLATES / "letters").glob("*.yaml"):
        (tmp_path / "letters" / path.name).write_text(path.read_text())
    leaky = (TEMPLATES / "letters/us-ma/en.txt.j2").read_text() + "{{ incident_description }}\n"
    (folder / "en.txt.j2").write_text(leaky)
    with pytest.raises(TemplateFieldError, match="'incident_description' is undefined"):
        writer(templates=tmp_path).render(person(region="MA"), ma, CONTACT | {CARD})


def test_advice_follows_what_each_customer_had_exposed() -> None:
    gdpr = rule("gdpr-a34")
    letters = writer()
    without_card = letters.render(person("en", "IE", ""), gdpr, CONTACT)[1]
    with_card = letters.render(person("en", "IE", ""), gdpr, CONTACT | {CARD})[1]
    card_words = ("card statements", "card number and expiry date")
    for words in card_words:
        assert words not in without_card
        assert words in with_card
    assert "phishing" in without_card and "phishing" in with_card
    # the same advice for name, email and address is said once
    assert without_card.count("Be wary of emails") == 1
    german = letters.render(person("de", "DE", ""), gdpr, CONTACT)[1]
    assert "Kartenabrechnungen" not in german and "Phishing" in german


def test_a_california_letter_with_a_government_id_carries_the_bureaus_and_the_offer() -> None:
    ca = rule("us-ca")
    with_id = writer().render(person("en-US"), ca, CONTACT | {GOV_ID})[1]
    for words in ("Equifax", "Experian", "TransUnion", "1-888-397-3742", "Example Identity Guard"):
        assert words in with_id
    assert "at no cost to you for\n24 months" in with_id
    assert "Please enroll by March 31, 2027." in with_id
    card_only = writer().render(person("en-US"), ca, CONTACT | {CARD})[1]
    assert "Equifax" not in card_only and "Example Identity Guard" not in card_only


def test_a_california_id_letter_without_an_offer_configured_is_a_clear_error() -> None:
    with pytest.raises(TemplateFieldError) as caught:
        writer(ORG).render(person("en-US"), rule("us-ca"), CONTACT | {GOV_ID})
    message = str(caught.value)
    assert message.startswith(
        "customer C1: rule us-ca, template letters/us-ca/en-US.txt.j2: identity_theft_offer: "
    )
    assert "organisation.identity_theft_offer" in message and "1798.82(d)(2)(G)" in message
    assert "Maria" not in message and "\n" not in message


def test_massachusetts_needs_18_months_of_monitoring_when_a_ssn_was_exposed() -> None:
    short = ORG.model_copy(update={"identity_theft_offer": OFFER.model_copy(update={"months": 12})})
    with pytest.raises(TemplateFieldError, match=r"rule us-ma, .*credit_monitoring: .*18 months"):
        writer(short).render(person(region="MA"), rule("us-ma"), CONTACT | {GOV_ID})
    body = writer().render(person(region="MA"), rule("us-ma"), CONTACT | {GOV_ID})[1]
    assert "at no cost for 24 months" in body and "Equifax" in body


def test_babel_writes_dates_and_numbers_for_the_letters_locale() -> None:
    day = date(2026, 11, 30)
    assert long_date(day, "en-US") == "November 30, 2026"
    assert long_date(day, "de") == "30. November 2026"
    assert long_date(day, "fr") == "30 novembre 2026"
    assert long_date(day, "zh-CN") == "2026年11月30日"
    assert number(1234567, "en-US") == "1,234,567"
    assert number(1234567, "de") == "1.234.567"
    german = writer().render(person("de", "DE", ""), rule("gdpr-a34"), CONTACT)[1]
    assert "28. November 2026" in german and "2026-11-28" not in german
    chinese = writer().render(person("zh-CN", "CN", ""), rule("cn-pipl-57"), CONTACT)[1]
    assert "2026年11月28日" in chinese


@pytest.mark.parametrize(
    ("locale", "honorific", "greeting"),
    [
        ("en", "Dr", "Dear Dr Maria Lopez,"),
        ("en", "", "Dear Maria Lopez,"),
        ("de", "Frau", "Guten Tag Frau Maria Lopez,"),
        ("de", "", "Guten Tag Maria Lopez,"),
        ("fr", "", "Bonjour Maria Lopez,"),
        ("es", "", "Buenos días, Maria Lopez:"),
        ("nl", "", "Beste Maria Lopez,"),
    ],
)
def test_the_greeting_uses_the_honorific_given_or_a_neutral_one(
    locale: str, honorific: str, greeting: str
) -> None:
    body = writer().render(person(locale, "IE", "", honorific), rule("gdpr-a34"), CONTACT)[1]
    assert f"\n{greeting}\n" in body
    if not honorific:
        for gendered in ("Madame", "Monsieur", "Herr ", "Frau ", "Estimado", "Ms ", "Mr "):
            assert gendered not in body


# -- claims from the ledger, through execute -------------------------------------------------


class RefusingDatabaseAdmin(RecordingDatabaseAdmin):
    """The lock fails (a definite error) until `refuse` is switched off."""

    refuse: bool = True

    def lock_role(self, role: str, connection_limit: int | None = None) -> Changed:
        if self.refuse:
            raise BreachbookError(f"ALTER ROLE {role} NOLOGIN: permission denied")
        return super().lock_role(role, connection_limit)


PEOPLE = [
    customer("C1", "IE", locale="en", extra=frozenset({CARD})),
    customer("C2", "US", "MA", "en-US", extra=frozenset({CARD})),
]
LOCKING = "We are locking the database account used in the breach."
LOCKED = "We locked the database account used in the breach."


def entry(result: Any, step: str, target: str) -> Any:
    return next(e for e in result.entries() if (e.step_id, e.target) == (step, target))


def test_a_live_letter_claiming_containment_waits_until_the_ledger_shows_it_done(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home")
    database = RefusingDatabaseAdmin()
    fakes = Fakes(tmp_path, database=database, customers=InMemoryCustomers(list(PEOPLE)))
    first = run_with(Mode.LIVE, settings, fakes, tmp_path / "run1", INCIDENT, PLAYBOOK)
    assert entry(first, "lock-db-role", "analytics_etl").status is Status.FAILED
    held = entry(first, "deliver-letters", "gdpr-a34")
    assert held.status is Status.BLOCKED
    assert held.details["waits_for"] == ["lock-db-role"]
    assert "waits for lock-db-role" in held.reason
    # Massachusetts' letter states nothing done: it is not held back
    assert entry(first, "deliver-letters", "us-ma").status is Status.COMPLETED
    assert [letter.key for letter in fakes.mail.sent] == ["us-ma/C2"]
    statement = (tmp_path / "run1" / "statement.md").read_text()
    assert LOCKING in statement and LOCKED not in statement
    report = (tmp_path / "run1" / "report.md").read_text()
    assert "- `deliver-letters` `gdpr-a34`: waits for lock-db-role" in report
    rendered = (tmp_path / "run1" / "letters" / "gdpr-a34" / "C1.txt").read_text()
    assert LOCKING in rendered and LOCKED not in rendered

    database.refuse = False
    second = run_with(Mode.LIVE, settings, fakes, tmp_path / "run2", INCIDENT, PLAYBOOK)
    assert entry(second, "lock-db-role", "analytics_etl").status is Status.COMPLETED
    assert entry(second, "deliver-letters", "gdpr-a34").status is Status.COMPLETED
    sent = {letter.key: letter.body for letter in fakes.mail.sent}
    assert set(sent) == {"us-ma/C2", "gdpr-a34/C1"}
    assert LOCKED in sent["gdpr-a34/C1"] and LOCKING not in sent["gdpr-a34/C1"]
    assert "We engaged an independent forensic firm." in sent["gdpr-a34/C1"]
    assert LOCKED in (tmp_path / "run2" / "statement.md").read_text()


def test_a_drill_letter_says_what_live_would_claim_once_done_and_the_plan_marks_it(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home")
    fakes = Fakes(tmp_path, customers=InMemoryCustomers(list(PEOPLE)))
    result = run_with(Mode.DRILL, settings, fakes, tmp_path / "drill", INCIDENT, PLAYBOOK)
    assert fakes.database.changes == [] and fakes.mail.sent == []
    letter = (tmp_path / "drill" / "letters" / "gdpr-a34" / "C1.txt").read_text()
    assert letter.startswith("[DRILL]") and LOCKED in letter
    render = entry(result, "render-letters", "gdpr-a34")
    assert "DRILL: they state lock-db-role done, as LIVE would word them once done" in (
        render.reason
    )
    deliver = entry(result, "deliver-letters", "gdpr-a34")
    assert deliver.status is Status.PLANNED
    assert "once lock-db-role is done" in deliver.would


def test_a_drill_whose_lock_would_fail_holds_the_letters_as_live_would(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    refused = RecordingDatabaseAdmin(check_answer=Check.failed("no privilege", "fake"))
    fakes = Fakes(tmp_path, database=refused, customers=InMemoryCustomers(list(PEOPLE)))
    result = run_with(Mode.DRILL, settings, fakes, tmp_path / "drill", INCIDENT, PLAYBOOK)
    assert entry(result, "lock-db-role", "analytics_etl").status is Status.REFUSED
    assert entry(result, "deliver-letters", "gdpr-a34").status is Status.BLOCKED
    letter = (tmp_path / "drill" / "letters" / "gdpr-a34" / "C1.txt").read_text()
    assert LOCKING in letter and LOCKED not in letter


def test_a_step_skipped_by_its_condition_is_not_claimed(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    fakes = Fakes(tmp_path, customers=InMemoryCustomers(list(PEOPLE)))
    no_role = tmp_path / "incident.yaml"
    no_role.write_text(INCIDENT.read_text().replace("database_role: analytics_etl\n", ""))
    result = run_with(Mode.LIVE, settings, fakes, tmp_path / "run", no_role, PLAYBOOK)
    assert entry(result, "deliver-letters", "gdpr-a34").status is Status.COMPLETED
    body = next(m.body for m in fakes.mail.sent if m.key == "gdpr-a34/C1")
    assert "database account" not in body


def test_family_models_are_found_by_template_folder() -> None:
    assert family_model("us-ma") is MassachusettsLetter
    assert "incident_description" in family_model("gdpr-a34").model_fields


def test_a_letter_stating_a_step_not_done_is_never_sent_even_past_the_preflight() -> None:
    """The second line of defence: delivery itself refuses, whatever the preflight said."""
    from breachbook.actions.notify import ClaimNotDone, refuse_unclaimed
    from breachbook.letters import ClaimState, StepClaim

    for state in (ClaimState.NOT_DONE, ClaimState.WOULD):
        letters = LetterWriter(
            Renderer(TEMPLATES),
            ORG,
            incident(),
            T0,
            [StepClaim("lock-db-role", "database.lock_role", state)],
        )
        with pytest.raises(ClaimNotDone, match=r"^letter gdpr-a34/C1 would state lock-db-role"):
            refuse_unclaimed(letters, rule("gdpr-a34"), "gdpr-a34/C1")


def test_a_resumed_run_writes_its_letters_again_only_when_what_they_say_has_changed(
    tmp_path: Path,
) -> None:
    """Each round of a tabletop exercise resumes its run: letters written from the same
    claims and customers are kept, and written again once the ledger shows a step done or a
    customer changed (the sent letter is rendered afresh either way)."""
    settings = Settings(home=tmp_path / "home")
    database = RefusingDatabaseAdmin()
    directory = InMemoryCustomers(list(PEOPLE))
    fakes = Fakes(tmp_path, database=database, customers=directory)
    out = tmp_path / "run"
    first = run_with(Mode.LIVE, settings, fakes, out, INCIDENT, PLAYBOOK)
    letter = out / "letters" / "gdpr-a34" / "C1.txt"
    message = out / "messages" / "gdpr-a34" / "C1.eml"
    assert LOCKING in letter.read_text() and LOCKING in message.read_text()
    for written in (letter, message):
        written.write_text("as written by the first round")

    def resume() -> None:
        run_with(Mode.LIVE, settings, fakes, out, INCIDENT, PLAYBOOK, resume=first.run_id)

    resume()  # nothing a letter says has changed: the letters are kept
    assert letter.read_text() == message.read_text() == "as written by the first round"

    renamed = PEOPLE[0].model_copy(update={"full_name": "Ana Renamed"})
    directory.records = [renamed, PEOPLE[1]]
    resume()  # a customer changed: written again
    assert "Ana Renamed" in letter.read_text() and LOCKING in letter.read_text()
    assert "Ana Renamed" in message.read_text()

    database.refuse = False
    resume()  # the lock is done: the letters now say so
    assert LOCKED in letter.read_text() and LOCKING not in letter.read_text()
    assert LOCKED in message.read_text()
    assert [sent.key for sent in fakes.mail.sent] == ["us-ma/C2", "gdpr-a34/C1"]
