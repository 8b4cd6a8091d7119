from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.clock import FixedStepClock
from breachbook.ledger import AUTOMATION, Entry, Ledger
from tests.conftest import T0


def entry(
    step: str, target: str = "t", outcome: str = "completed", phase: str = "outcome"
) -> Entry:
    return Entry("inc-1", "run-1", step, target, phase, AUTOMATION, "live", outcome, {"count": 3})


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}", FixedStepClock(T0))
    book.append_many([entry("a"), entry("b"), entry("c"), entry("d")])
    return book


def raw(book: Ledger, sql: str) -> None:
    engine = create_engine(book.url)
    with engine.begin() as conn:
        conn.execute(text(sql))
    engine.dispose()


def test_intact_ledger_verifies(ledger: Ledger) -> None:
    assert ledger.verify() == []
    seq, head = ledger.head()
    assert seq == 4 and len(head) == 64
    assert ledger.verify((seq, head)) == []


def test_edited_entry_is_reported(ledger: Ledger) -> None:
    raw(ledger, "UPDATE ledger_entries SET outcome = 'failed' WHERE seq = 2")
    problems = ledger.verify()
    assert [(p.seq, p.problem) for p in problems] == [
        (2, "content was edited after it was written")
    ]


def test_edited_details_are_reported(ledger: Ledger) -> None:
    raw(ledger, """UPDATE ledger_entries SET details = '{"count": 4}' WHERE seq = 3""")
    assert [p.seq for p in ledger.verify()] == [3]


def test_deleted_entry_is_reported(ledger: Ledger) -> None:
    raw(ledger, "DELETE FROM ledger_entries WHERE seq = 2")
    problems = ledger.verify()
    assert problems[0].seq == 3
    assert "entries 2..2 are missing" in problems[0].problem
    assert any("deleted or reordered" in p.problem for p in problems)


def test_reordered_entries_are_reported(ledger: Ledger) -> None:
    raw(ledger, "UPDATE ledger_entries SET seq = 100 WHERE seq = 2")
    raw(ledger, "UPDATE ledger_entries SET seq = 2 WHERE seq = 3")
    raw(ledger, "UPDATE ledger_entries SET seq = 3 WHERE seq = 100")
    assert ledger.verify() != []


def test_cut_tail_is_caught_by_the_anchor(ledger: Ledger) -> None:
    anchor = ledger.head()
    raw(ledger, "DELETE FROM ledger_entries WHERE seq = 4")
    assert ledger.verify() == []  # the chain alone cannot see a cut tail
    problems = ledger.verify(anchor)
    assert [p.problem for p in problems] == ["the anchored entry is missing or changed"]


def test_completed_is_keyed_by_incident_step_and_target(ledger: Ledger) -> None:
    ledger.append(entry("lock", "role-x", outcome="started", phase="attempt"))
    assert not ledger.completed("inc-1", "lock", "role-x")
    ledger.append(entry("lock", "role-x"))
    assert ledger.completed("inc-1", "lock", "role-x")
    assert not ledger.completed("inc-1", "lock", "role-y")
    assert not ledger.completed("inc-2", "lock", "role-x")


def test_entries_survive_reopening(ledger: Ledger) -> None:
    url = ledger.url
    ledger.close()
    again = Ledger(url, FixedStepClock(T0))
    assert [row.step_id for row in again.entries()] == ["a", "b", "c", "d"]
    assert again.verify() == []


def test_audit_verify_on_a_missing_ledger_is_an_error_not_an_empty_pass(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["audit", "verify", "--ledger", f"sqlite:///{tmp_path / 'typo.sqlite'}"]
    )
    assert result.exit_code == 2
    assert "typo.sqlite: no ledger file there" in result.output
    assert not (tmp_path / "typo.sqlite").exists()


def test_audit_verify_reports_an_edited_entry(ledger: Ledger) -> None:
    raw(ledger, "UPDATE ledger_entries SET target = 'other' WHERE seq = 3")
    result = CliRunner().invoke(app, ["audit", "verify", "--ledger", ledger.url])
    assert result.exit_code == 1
    assert "entry 3: content was edited after it was written" in result.output
