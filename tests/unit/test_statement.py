"""The statement's wording on small LIVE runs through the real wiring (claims playbook, people
in memory): plurals by the language's rule, the whole table versus a window of its rows, the
holding statement, and the facts each sentence names."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from breachbook.errors import TemplateFieldError
from breachbook.models import Customer
from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.statement import Fact, Sentences, plural_for
from tests.conftest import ROOT, Fakes, run_with
from tests.fakes import InMemoryCustomers, customer

PLAYBOOK = ROOT / "tests" / "data" / "letters" / "claims.yaml"
INCIDENT = ROOT / "tests" / "data" / "letters" / "incident.yaml"
ONE = [customer("C1", "IE")]
TWO = [customer("C1", "IE"), customer("C2", "FR", locale="fr")]


def draft(tmp_path: Path, people: list[Customer], incident: Path = INCIDENT) -> str:
    out = tmp_path / "run"
    fakes = Fakes(tmp_path, customers=InMemoryCustomers(list(people)))
    run_with(Mode.LIVE, Settings(home=tmp_path / "home"), fakes, out, incident, PLAYBOOK)
    return " ".join((out / "statements" / "full-v1.en.md").read_text().split())


def test_one_customer_is_singular(tmp_path: Path) -> None:
    text = draft(tmp_path, ONE)
    assert "1 customer is affected, living in 1 country." in text
    assert "We have written to the 1 person owed a letter from us." in text
    assert "1 customers" not in text and "About" not in text


def test_two_customers_are_plural(tmp_path: Path) -> None:
    text = draft(tmp_path, TWO)
    assert "2 customers are affected, living in 2 countries." in text
    assert "We have written to each of the 2 people owed a letter from us." in text


def test_plural_follows_the_language_rule() -> None:
    english, chinese = plural_for("en"), plural_for("zh-CN")
    assert english(1, "{n} letter", "{n} letters") == "1 letter"
    assert english(10000, "{n} letter", "{n} letters") == "10,000 letters"
    assert chinese(1, "{n} 封", "{n} 封信") == "1 封信"  # one form in Chinese: CLDR 'other'


def test_a_whole_table_is_said_whole_and_a_window_of_rows_is_not(tmp_path: Path) -> None:
    whole = draft(tmp_path / "whole", ONE)
    assert "copied the entire customers table and the entire payment_cards table" in whole
    facts = yaml.safe_load(INCIDENT.read_text())
    facts["exposed_tables"].append(
        {
            "table": "orders",
            "columns": ["item"],
            "rows_from": "2026-11-01T00:00:00+00:00",
            "rows_until": "2026-11-20T00:00:00+00:00",
        }
    )
    windowed = tmp_path / "windowed.yaml"
    windowed.write_text(yaml.safe_dump(facts))
    text = draft(tmp_path / "window", ONE, windowed)
    assert (
        "the records of the orders table written between November 1, 2026 and November 20, 2026"
        in text
    )
    assert "the entire orders table" not in text


def test_each_sentence_lists_its_facts_and_a_template_cannot_cite_an_unknown_one(
    tmp_path: Path,
) -> None:
    draft(tmp_path, ONE)
    facts = json.loads((tmp_path / "run" / "statements" / "full-v1.facts.json").read_text())
    sentences = facts["languages"]["en"]["sentences"]
    cited = {f["id"] for s in sentences for f in s["facts"]}
    assert {"people.affected", "letters.delivered", "authorities.notified"} <= cited
    assert all(s["facts"] for s in sentences)
    said = Sentences({"a": Fact(id="a", value=1, source="x")}, "t.md.j2")
    try:
        said("nowhere", caller=lambda: "We notified everyone.")
    except TemplateFieldError as exc:
        assert "unknown facts (nowhere)" in str(exc)
    else:  # pragma: no cover - the assertion below names the failure
        raise AssertionError("a sentence citing an unknown fact was accepted")


def test_the_holding_statement_says_what_is_done_and_what_will_be(tmp_path: Path) -> None:
    playbook = yaml.safe_load(PLAYBOOK.read_text())
    steps = playbook["phases"][-1]["steps"]
    steps.append(
        {
            "id": "draft-holding",
            "title": "Holding statement",
            "action": "statement.draft",
            "with": {"statement": "holding", "languages": ["en", "zh-CN"]},
        }
    )
    with_holding = tmp_path / "playbook.yaml"
    with_holding.write_text(yaml.safe_dump(playbook, allow_unicode=True))
    out = tmp_path / "run"
    fakes = Fakes(tmp_path, customers=InMemoryCustomers(list(ONE)))
    result = run_with(
        Mode.LIVE, Settings(home=tmp_path / "home"), fakes, out, INCIDENT, with_holding
    )
    en = " ".join((out / "statements" / "holding-v1.en.md").read_text().split())
    assert "We locked the database account used in the breach." in en
    assert "(1 letter delivered so far)" in en
    assert "We will notify the authorities where the law requires it." in en
    zh = "".join((out / "statements" / "holding-v1.zh-CN.md").read_text().split())
    assert "我们将在法律要求时通知监管机构。" in zh and "我们已通知" not in zh
    holding = next(e for e in result.entries() if e.step_id == "draft-holding")
    assert "the incident texts have no zh-CN translation" in holding.reason
