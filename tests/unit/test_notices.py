"""No silent gaps, the breach register, regulator notices that can be filed and the deadline
clock, through the product's path (`execute` with the real wiring) on the notify phase alone
(tests/data/notices/) with recording fakes behind the ports."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from breachbook.authorities import gdpr_addressees
from breachbook.cli import app
from breachbook.clock import FixedStepClock
from breachbook.deadlines import Deliveries, _letters_state, _regulator_state
from breachbook.engine import Outcome, RunResult, Status
from breachbook.ledger import Ledger
from breachbook.models import DataCategory, Organisation
from breachbook.modes import Mode
from breachbook.register import Filing
from breachbook.settings import Settings
from tests.conftest import ROOT, T0, Fakes, run_with
from tests.fakes import InMemoryCustomers, ScriptedApprovals, customer
from tests.unit.test_notify import RULES

DATA = ROOT / "tests" / "data" / "notices"
PLAYBOOK = DATA / "notify.yaml"
CARD = frozenset({DataCategory.FINANCIAL_ACCOUNT})
EVERYWHERE_COVERED = [
    customer("C-DE", "DE", locale="de", name="Erika Mustermann", extra=CARD),
    customer("C-FR", "FR", locale="fr", name="Jeanne Dupont", extra=CARD),
    customer("C-CN", "CN", locale="zh-CN", name="Li Wei", extra=CARD),
    customer("C-CA", "US", "CA", "en-US", name="Maria Lopez", extra=CARD),
    customer("C-TX", "US", "TX", "en-US", name="Sam Houston", extra=CARD),
]
CALIFORNIA_501 = [
    customer(f"C-CA{n}", "US", "CA", "en-US", name="Maria Lopez", extra=CARD) for n in range(501)
]
"""Over 500 California residents: the Attorney General is owed a sample copy too."""
OREGON = [customer(f"C-OR{n}", "US", "OR", "en-US", extra=CARD) for n in range(3)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def incident_file(tmp_path: Path, **changes: Any) -> Path:
    data = yaml.safe_load((DATA / "incident.yaml").read_text(encoding="utf-8"))
    data.update(changes)
    path = tmp_path / f"incident-{len(list(tmp_path.glob('incident-*')))}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def playbook_file(tmp_path: Path, **organisation: Any) -> Path:
    data = yaml.safe_load(PLAYBOOK.read_text(encoding="utf-8"))
    data["organisation"].update(organisation)
    path = tmp_path / "playbook.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def run(
    mode: Mode,
    settings: Settings,
    tmp_path: Path,
    people: list[Any],
    out: str = "out",
    incident: Path | None = None,
    playbook: Path = PLAYBOOK,
    approve: frozenset[str] = frozenset({"legal"}),
) -> tuple[RunResult, Path]:
    fakes = Fakes(tmp_path)
    fakes.customers = InMemoryCustomers(people)
    fakes.approvals = ScriptedApprovals(approve=set(approve))
    folder = tmp_path / out
    result = run_with(
        mode,
        settings,
        fakes,
        folder,
        incident or incident_file(tmp_path),
        playbook,
        clock=FixedStepClock(T0, timedelta(milliseconds=10)),
    )
    return result, folder


def entry(result: RunResult, step: str, target: str) -> Any:
    return next(e for e in result.entries() if e.step_id == step and e.target == target)


def register(folder: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((folder / "register.json").read_text(encoding="utf-8"))
    return {f"{d['kind']}/{d['subject']}": d for d in data["decisions"]}


def clock_rows(folder: Path) -> dict[str, list[str]]:
    report = (folder / "report.md").read_text(encoding="utf-8")
    section = report.split("## Deadline clock", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {
        cells[0]: cells for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)
    }


# -- no silent gaps ----------------------------------------------------------------------


def test_residents_of_a_place_without_a_rule_are_a_failed_entry_and_a_report_section(
    settings: Settings, tmp_path: Path
) -> None:
    result, folder = run(Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED + OREGON)
    gap = entry(result, "assess-obligations", "no-rule:US-OR")
    assert gap.status is Status.SET_ASIDE and gap.verdict == "FAILED"
    line = "no rule for US-OR: 3 residents, categories email (3), financial_account (3), name (3), postal_address (3)"
    assert gap.reason.startswith(line)
    assert result.outcome() is Outcome.FAILED
    report = (folder / "report.md").read_text(encoding="utf-8")
    assert f"## Places with no rule\n\n- {line}\n" in report
    assert register(folder)["no-rule/US-OR"]["counts"] == {
        "people": 3,
        "email": 3,
        "financial_account": 3,
        "name": 3,
        "postal_address": 3,
    }
    # everyone else's letters are still written: the gap holds nobody back
    assert entry(result, "render-letters", "us-ca").verdict == "VERIFIED"


def test_a_run_where_every_place_is_covered_has_no_gap(settings: Settings, tmp_path: Path) -> None:
    result, folder = run(Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED)
    assert not [e for e in result.entries() if e.target.startswith("no-rule:")]
    assert result.outcome() is Outcome.DONE
    assert "Places with no rule" not in (folder / "report.md").read_text(encoding="utf-8")


# -- the breach register -------------------------------------------------------------------


def test_the_register_records_the_risk_every_obligation_and_every_decision_not_to_notify(
    settings: Settings, tmp_path: Path
) -> None:
    result, folder = run(Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED + OREGON)
    decided = register(folder)
    risk = decided["risk/risk"]
    assert risk["decision"] == "level high"
    assert any("high sensitivity: financial account" in r for r in risk["reasons"])
    assert any("partial mitigation" in r for r in risk["reasons"])
    owed = {key.split("/")[1] for key in decided if key.startswith("owed/")}
    assert owed == {"gdpr-a33", "gdpr-a34", "cn-pipl-57", "cn-pipl-57-authority", "us-ca", "us-tx"}
    not_owed = {
        key.split("/")[1]: d["reasons"][0]
        for key, d in decided.items()
        if key.startswith("not-owed/")
    }
    assert (
        not_owed["us-tx-ag"]
        == "1 people whose exposed data triggers it, below its threshold of 250"
    )
    assert not_owed["cn-cac-2025"].endswith("below its threshold of 1,000,000")
    assert "1 people whose exposed data triggers it, below its threshold of" in not_owed["us-ca-ag"]
    # every rule of a place where someone is affected is decided one way or the other, with why
    places = {"DE", "FR", "CN", "US-CA", "US-TX", "US", "US-OR", "*"}
    rules_there = {
        rule.id
        for rule in RULES.rules
        if RULES.owed_by_organisation(rule) and RULES.expand(rule.applies_to) & places
    }
    assert rules_there == owed | set(not_owed)
    assert all(reason for reason in not_owed.values())
    assert "no-rule/US-OR" in decided
    markdown = (folder / "register.md").read_text(encoding="utf-8")
    for heading in (
        "## Risk assessment",
        "## Obligations triggered",
        "## Decided not to notify",
        "## Places with no rule",
    ):
        assert heading in markdown
    assert "24 months" in markdown and "501.171(4)(c)" in markdown
    # the register is the ledger's: its records are there, not only in the file
    ledger = Ledger(f"sqlite:///{folder / 'audit.sqlite'}", FixedStepClock(T0), create=False)
    stored = ledger.records_of("inc-notices-1", result.run_id, "register")
    ledger.close()
    assert set(stored) == {("risk" if k == "risk/risk" else k) for k in decided}


def test_encryption_with_a_safe_key_lowers_the_risk_and_removes_the_notices_the_law_lifts(
    settings: Settings, tmp_path: Path
) -> None:
    encrypted = incident_file(tmp_path, data_encrypted=True, key_compromised=False)
    _, folder = run(Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED, incident=encrypted)
    decided = register(folder)
    assert decided["risk/risk"]["decision"] == "level unlikely"
    assert any("key was not compromised" in r for r in decided["risk/risk"]["reasons"])
    assert "safe harbour" in decided["not-owed/us-ca"]["reasons"][0]
    assert "safe harbour" in decided["not-owed/gdpr-a34"]["reasons"][0]  # Art. 34(3)(a)
    assert decided["not-owed/gdpr-a33"]["reasons"][0].startswith("risk assessed unlikely")
    assert "owed/us-ca" not in decided and "owed/gdpr-a34" not in decided


# -- regulator notices ---------------------------------------------------------------------


def test_the_gdpr_notice_has_every_element_of_article_33_3(
    settings: Settings, tmp_path: Path
) -> None:
    result, folder = run(Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED)
    notice = (folder / "regulators" / "gdpr-a33.md").read_text(encoding="utf-8")
    assert "**To:** Data Protection Commission (Ireland)" in notice
    assert "main establishment, Example Europe DAC, Dublin (IE)" in notice
    # (a) nature, categories labelled, approximate numbers of people and of records
    assert "An attacker copied customer records" in notice
    assert "Approximate number of data subjects concerned: 2" in notice
    assert "Approximate number of personal data records concerned: 8" in notice
    assert "payment card numbers with expiry dates: 2 data subjects" in notice
    assert "financial_account" not in notice  # every category by its name, never its key
    # (b) DPO, (c) consequences, (d) measures
    assert "## (b) Data protection officer\nDr. Jane Roe, dpo@example.org" in notice
    assert "Fraudulent card payments and phishing." in notice
    assert "We changed the leaked password and locked the account." in notice
    # whether individuals were told (a drill delivers nothing), and the phase
    assert "GDPR Art. 34: 2 data subjects are owed a notice; 0 delivered; 2 not yet told." in notice
    assert "Initial notification" in notice and "(Art. 33(4))" in notice
    assert "Reasons for the delay" not in notice
    assert entry(result, "draft-regulator-notices", "gdpr-a33").verdict == "VERIFIED"


def test_without_an_establishment_in_the_eea_every_authority_where_people_live_is_notified(
    settings: Settings, tmp_path: Path
) -> None:
    playbook = playbook_file(tmp_path, establishments=[{"country": "US", "name": "HQ"}])
    _, folder = run(Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED, playbook=playbook)
    notice = (folder / "regulators" / "gdpr-a33.md").read_text(encoding="utf-8")
    assert "Commission Nationale de l'Informatique et des Libertés (France)" in notice
    assert "(Germany)" in notice and "(Ireland)" not in notice
    assert "no one-stop shop" in notice


@pytest.mark.parametrize(
    ("establishments", "countries", "expected", "lead"),
    [
        (
            [{"country": "IE", "name": "Dublin", "main": True}, {"country": "FR", "name": "Paris"}],
            {"DE"},
            ["Data Protection Commission (Ireland)"],
            True,
        ),
        (
            [{"country": "NL", "name": "Amsterdam"}],
            {"DE", "FR"},
            ["Autoriteit Persoonsgegevens (Netherlands)"],
            True,
        ),
        (
            [{"country": "DE", "name": "Bonn", "main": True, "authority": "BayLDA (Bavaria)"}],
            {"FR"},
            ["BayLDA (Bavaria)"],
            True,
        ),
        (
            [],
            {"FR", "IT", "US", "CN"},
            [
                "Commission Nationale de l'Informatique et des Libertés (France)",
                "Garante per la protezione dei dati personali (Italy)",
            ],
            False,
        ),
        (
            [{"country": "GB", "name": "London", "main": True}],
            {"ES"},
            ["Agencia Española de Protección de Datos (Spain)"],
            False,
        ),
    ],
    ids=[
        "main-establishment",
        "only-eea-establishment",
        "own-authority-named",
        "none",
        "main-outside-eea",
    ],
)
def test_the_lead_authority_is_chosen_from_the_establishments(
    establishments: list[dict[str, Any]], countries: set[str], expected: list[str], lead: bool
) -> None:
    org = Organisation.model_validate(
        {
            "legal_name": "Example Ltd",
            "contact": {"phone": "1", "email": "a@example.org", "web": "w", "postal": "p"},
            "dpo_contact": "dpo",
            "establishments": establishments,
        }
    )
    chosen = gdpr_addressees(org, countries)
    assert chosen.authorities == expected and chosen.lead is lead


def test_two_main_establishments_or_several_in_the_eea_without_a_main_one_are_refused() -> None:
    org = {
        "legal_name": "Example Ltd",
        "contact": {"phone": "1", "email": "a@example.org", "web": "w", "postal": "p"},
        "dpo_contact": "dpo",
    }
    two = [
        {"country": "IE", "name": "a", "main": True},
        {"country": "FR", "name": "b", "main": True},
    ]
    with pytest.raises(ValueError, match=r"establishments: 2 marked main \(IE, FR\)"):
        Organisation.model_validate({**org, "establishments": two})
    several = Organisation.model_validate(
        {**org, "establishments": [{"country": "IE", "name": "a"}, {"country": "FR", "name": "b"}]}
    )
    with pytest.raises(ValueError, match="none marked main"):
        gdpr_addressees(several, {"DE"})


def test_the_pipl_notice_is_written_in_chinese_with_what_individuals_can_do(
    settings: Settings, tmp_path: Path
) -> None:
    result, folder = run(Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED)
    notice = (folder / "regulators" / "cn-pipl-57-authority.md").read_text(encoding="utf-8")
    body = notice.split("\n", 2)[2]  # after the [DRILL] banner
    for part in (
        "一、发生泄露的个人信息种类、原因和可能造成的危害",
        "二、采取的补救措施和个人可以采取的减轻危害的措施",
        "三、个人信息处理者的联系方式",
    ):
        assert part in body
    assert "支付卡号及有效期：1 人" in body  # noqa: RUF001 (the notice's Chinese colon)
    assert "攻击者从网店数据库复制了客户资料" in body and "请留意您的银行卡账单。" in body
    assert "初次报告" in body
    for english in (
        "Categories",
        "Measures",
        "Cause",
        "Contact",
        "financial_account",
        "An attacker",
    ):
        assert english not in body
    assert entry(result, "draft-regulator-notices", "cn-pipl-57-authority").verdict == "VERIFIED"


def test_a_chinese_notice_without_a_chinese_translation_cannot_be_filed(
    settings: Settings, tmp_path: Path
) -> None:
    untranslated = incident_file(tmp_path, translations={})
    result, _ = run(Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED, incident=untranslated)
    drafted = entry(result, "draft-regulator-notices", "cn-pipl-57-authority")
    assert drafted.verdict == "FAILED" and "no 'zh-CN' translation" in drafted.reason


def test_a_late_notice_needs_the_reasons_for_the_delay(settings: Settings, tmp_path: Path) -> None:
    late = {
        "discovered_at": (T0 - timedelta(days=5)).isoformat(),
        "started_at": (T0 - timedelta(days=6)).isoformat(),
    }
    result, folder = run(
        Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED, incident=incident_file(tmp_path, **late)
    )
    drafted = entry(result, "draft-regulator-notices", "gdpr-a33")
    assert drafted.verdict == "FAILED" and "add reasons_for_delay" in drafted.reason
    assert drafted.status is Status.SET_ASIDE  # the other notices are still drafted
    notice = (folder / "regulators" / "gdpr-a33.md").read_text(encoding="utf-8")
    assert "## Reasons for the delay (Art. 33(1))\nNOT GIVEN" in notice
    reasons = "The forensic firm confirmed the exfiltration only on day four."
    given = incident_file(tmp_path, reasons_for_delay=reasons, **late)
    result, folder = run(
        Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED, out="out2", incident=given
    )
    assert entry(result, "draft-regulator-notices", "gdpr-a33").verdict == "VERIFIED"
    notice = (folder / "regulators" / "gdpr-a33.md").read_text(encoding="utf-8")
    assert f"## Reasons for the delay (Art. 33(1))\n{reasons}" in notice


def test_the_california_ag_notice_carries_a_sample_letter_without_personal_data(
    settings: Settings, tmp_path: Path
) -> None:
    _, folder = run(Mode.LIVE, settings, tmp_path, EVERYWHERE_COVERED + CALIFORNIA_501)
    notice = (folder / "regulators" / "us-ca-ag.md").read_text(encoding="utf-8")
    sample = notice.split("## Sample copy of the notice sent to residents", 1)[1]
    assert "[Resident's name]" in sample and "Subject: " in sample
    assert "Maria Lopez" not in notice and "c-ca@example.org" not in notice
    assert "502 residents owed a notice; 502 delivered, the last on 2026-11-28T12:" in notice


# -- phases and the deadline clock -----------------------------------------------------------


def test_filings_are_phased_per_regulator_and_the_clock_shows_them(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, folder = run(Mode.LIVE, settings, tmp_path, EVERYWHERE_COVERED)
    rows = clock_rows(folder)
    assert rows["gdpr-a33"][4] == "drafted (initial), not filed"
    monkeypatch.setenv("BREACHBOOK_HOME", str(settings.home))
    cli = CliRunner()
    early = cli.invoke(
        app,
        [
            "filed",
            "--incident",
            "inc-notices-1",
            "--rule",
            "gdpr-a33",
            "--by",
            "legal: Jane",
            "--phase",
            "follow-up",
        ],
    )
    assert early.exit_code == 2, early.output
    assert "cannot be filed before initial" in early.output
    unknown = cli.invoke(
        app, ["filed", "--incident", "inc-notices-1", "--rule", "us-tx-ag", "--by", "legal: Jane"]
    )
    assert unknown.exit_code == 2 and "no notice 'us-tx-ag' was drafted" in unknown.output
    done = cli.invoke(
        app,
        [
            "filed",
            "--incident",
            "inc-notices-1",
            "--rule",
            "gdpr-a33",
            "--by",
            "legal: Jane",
            "--reference",
            "DPC-123",
            "--at",
            "2026-11-29T09:00:00+00:00",
        ],
    )
    assert done.exit_code == 0, done.output
    second, folder = run(Mode.LIVE, settings, tmp_path, EVERYWHERE_COVERED, out="out2")
    notice = (folder / "regulators" / "gdpr-a33.md").read_text(encoding="utf-8")
    assert "Follow-up notification" in notice
    assert "**Earlier filings:** initial filed" in notice and "(ref. DPC-123)" in notice
    rows = clock_rows(folder)
    assert rows["gdpr-a33"][4] == "filed 2026-11-29T09:00:00+00:00 (initial): met"
    filings = json.loads((folder / "register.json").read_text())["filings"]["gdpr-a33"]
    assert [(f["phase"], f["status"]) for f in filings] == [
        ("initial", "filed"),
        ("follow-up", "drafted"),
    ]
    for phase in ("follow-up", "final"):
        args = ["--rule", "gdpr-a33", "--by", "legal: Jane", "--phase", phase]
        more = cli.invoke(app, ["filed", "--incident", "inc-notices-1", *args])
        assert more.exit_code == 0, more.output
    _, folder = run(Mode.LIVE, settings, tmp_path, EVERYWHERE_COVERED, out="out3")
    filings = json.loads((folder / "register.json").read_text())["filings"]["gdpr-a33"]
    assert [f["status"] for f in filings] == ["filed"] * 3  # a later draft never un-files one
    assert first.run_id != second.run_id


def test_the_clock_counts_delivered_letters_and_starts_the_california_ag_clock_from_them(
    settings: Settings, tmp_path: Path
) -> None:
    _, folder = run(Mode.LIVE, settings, tmp_path, EVERYWHERE_COVERED + CALIFORNIA_501)
    rows = clock_rows(folder)
    assert rows["us-ca"][4] == "delivered 502 of 502: met"
    assert rows["gdpr-a34"][4] == "delivered 2 of 2: met"
    assert rows["us-ca-ag"][2].startswith("2026-12-13T12:")  # 15 days after the letter went out
    assert rows["us-ca-ag"][3].endswith("h left")
    assert (
        rows["gdpr-a33"][2] == "2026-12-01T10:00:00+00:00" and rows["gdpr-a33"][3] == "70.0 h left"
    )


def test_an_undelivered_letter_is_never_met(settings: Settings, tmp_path: Path) -> None:
    _, folder = run(Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED + CALIFORNIA_501)
    assert clock_rows(folder)["us-ca"][4] == "not met: delivered 0 of 502 letters owed"
    assert clock_rows(folder)["us-ca-ag"][3] == "not started: waits for us-ca"
    _, folder = run(
        Mode.LIVE, settings, tmp_path, EVERYWHERE_COVERED, out="out2", approve=frozenset()
    )
    rows = clock_rows(folder)
    assert rows["gdpr-a34"][4] == "not met: delivered 0 of 2 letters owed"
    assert rows["gdpr-a33"][4] == "not drafted"


def test_an_overdue_obligation_says_by_how_much(settings: Settings, tmp_path: Path) -> None:
    late = {
        "discovered_at": (T0 - timedelta(days=5)).isoformat(),
        "started_at": (T0 - timedelta(days=6)).isoformat(),
    }
    _, folder = run(
        Mode.DRILL, settings, tmp_path, EVERYWHERE_COVERED, incident=incident_file(tmp_path, **late)
    )
    assert clock_rows(folder)["gdpr-a33"][3].startswith("OVERDUE by 48.")


DUE = T0 + timedelta(hours=72)


@pytest.mark.parametrize(
    ("filings", "expected", "met"),
    [
        ([], "not drafted", False),
        (
            [Filing(rule_id="r", phase="initial", status="drafted", at=T0.isoformat(), by="a")],
            "drafted (initial), not filed",
            False,
        ),
        (
            [Filing(rule_id="r", phase="initial", status="filed", at=T0.isoformat(), by="a")],
            f"filed {T0.isoformat()} (initial): met",
            True,
        ),
        (
            [
                Filing(
                    rule_id="r",
                    phase="initial",
                    status="filed",
                    at=(DUE + timedelta(hours=1)).isoformat(),
                    by="a",
                )
            ],
            "after the due time: MISSED",
            False,
        ),
    ],
    ids=["not-drafted", "drafted-is-not-filed", "filed-in-time", "filed-late"],
)
def test_regulator_clock_states(filings: list[Filing], expected: str, met: bool) -> None:
    state, is_met = _regulator_state(filings, DUE)
    assert expected in state and is_met is met


@pytest.mark.parametrize(
    ("owed", "sent", "expected", "met"),
    [
        (3, None, "not met: delivered 0 of 3 letters owed", False),
        (3, Deliveries(2, T0), "not met: delivered 2 of 3 letters owed", False),
        (3, Deliveries(3, T0), "delivered 3 of 3: met", True),
        (
            3,
            Deliveries(3, DUE + timedelta(seconds=1)),
            "the last after the due time: MISSED",
            False,
        ),
    ],
    ids=["none-sent", "some-undelivered", "all-in-time", "all-but-late"],
)
def test_letter_clock_states(owed: int, sent: Deliveries | None, expected: str, met: bool) -> None:
    state, is_met = _letters_state(owed, sent, DUE)
    assert expected in state and is_met is met
