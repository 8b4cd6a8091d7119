from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.clock import FixedStepClock
from breachbook.ledger import AUTOMATION, Anchor, Entry, ItemStatus, Ledger, LedgerError
from breachbook.models import Incident
from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, mode_profile, open_run
from tests.conftest import ROOT, T0, Fakes
from tests.fakes import InMemoryCustomers


def entry(
    step: str,
    target: str = "t",
    outcome: str = "completed",
    phase: str = "outcome",
    incident: str = "inc-1",
) -> Entry:
    return Entry(incident, "run-1", step, target, phase, AUTOMATION, "live", outcome, {"count": 3})


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


def test_runs_opening_a_new_ledger_together_all_open_it(tmp_path: Path) -> None:
    """Two LIVE runs started at once both create the ledger file; switching it to WAL is
    refused at once by SQLite while another connection holds it, which failed a run."""
    failures: list[BaseException] = []

    def open_and_append(url: str, n: int) -> None:
        try:
            book = Ledger(url, FixedStepClock(T0))
            book.append_many([entry(f"s{n}")])
            book.close()
        except BaseException as exc:
            failures.append(exc)

    for trial in range(60):
        url = f"sqlite:///{tmp_path / f'ledger-{trial}.sqlite'}"
        threads = [threading.Thread(target=open_and_append, args=(url, n)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_intact_ledger_verifies(ledger: Ledger) -> None:
    assert ledger.verify() == []
    seq, head = ledger.head("inc-1")
    assert seq == 4 and len(head) == 64
    assert ledger.verify(Anchor("inc-1", seq, head)) == []


def test_edited_entry_is_reported(ledger: Ledger) -> None:
    raw(ledger, "UPDATE ledger_entries SET outcome = 'failed' WHERE seq = 2")
    problems = ledger.verify()
    assert [(p.incident_id, p.seq, p.problem) for p in problems] == [
        ("inc-1", 2, "content was edited after it was written")
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


def test_cut_tail_is_caught_by_the_head_row_and_the_anchor(ledger: Ledger) -> None:
    seq, head = ledger.head("inc-1")
    raw(ledger, "DELETE FROM ledger_entries WHERE seq = 4")
    problems = ledger.verify(Anchor("inc-1", seq, head))
    assert [p.problem for p in problems] == [
        "the chain's last entries are missing or changed",
        "the anchored entry is missing or changed",
    ]


def test_each_incident_has_its_own_chain(ledger: Ledger) -> None:
    ledger.append_many([entry("x", incident="inc-2"), entry("y", incident="inc-2")])
    assert ledger.head("inc-2")[0] == 2 and ledger.head("inc-1")[0] == 4
    raw(
        ledger,
        "UPDATE ledger_entries SET outcome = 'failed' WHERE incident_id = 'inc-2' AND seq = 1",
    )
    assert [(p.incident_id, p.seq) for p in ledger.verify()] == [("inc-2", 1)]


def test_an_item_is_claimed_once_and_reclaimed_only_after_failure(ledger: Ledger) -> None:
    claimant = entry("lock", "role-x", outcome="claimed", phase="claim")
    claim = ledger.claim(claimant, "role-x")
    assert claim is not None and claim.generation == 1
    assert ledger.claim(claimant, "role-x") is None  # held
    ledger.settle(claim, ItemStatus.FAILED, entry("lock", "role-x", outcome="failed"))
    again = ledger.claim(claimant, "role-x")
    assert again is not None and again.generation == 2
    ledger.settle(again, ItemStatus.DONE, entry("lock", "role-x"), prior={"login": True})
    assert ledger.claim(claimant, "role-x") is None  # done: never again
    assert ledger.item_statuses("inc-1", "lock") == {"role-x": ItemStatus.DONE}
    (item,) = ledger.items("inc-1", "lock")
    assert item.prior == {"login": True} and item.done_order == ledger.head("inc-1")[0]
    assert ledger.verify() == []


def test_records_are_versioned(ledger: Ledger) -> None:
    assert ledger.put_record("inc-1", "run-1", "statement", "-", {"v": 1}, "a") == 1
    assert ledger.put_record("inc-1", "run-1", "statement", "-", {"v": 2}, "b") == 2
    assert ledger.get_record("inc-1", "run-1", "statement", "-") == {"v": 2}
    assert ledger.get_record("inc-1", "run-2", "statement", "-") is None
    history = ledger.record_history("inc-1", "run-1", "statement", "-")
    assert [(h.version, h.actor) for h in history] == [(1, "a"), (2, "b")]


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
    assert "incident inc-1, entry 3: content was edited after it was written" in result.output


def test_one_walk_summarises_each_chain_for_its_anchors(ledger: Ledger) -> None:
    ledger.append(entry("x", incident="inc-2"))
    problems, chains = ledger.walk(watch=lambda incident: {2, 9} if incident == "inc-1" else set())
    assert problems == []
    one = chains["inc-1"]
    assert (one.last_seq, one.last_hash) == ledger.head("inc-1")
    assert one.first_hash == ledger.entry_hash("inc-1", 1) and one.run_ids == {"run-1"}
    assert one.hashes == {2: ledger.entry_hash("inc-1", 2)}  # entry 9 does not exist
    assert chains["inc-2"].hashes == {} and ledger.entry_hash("inc-2", 2) is None


def test_a_missing_head_row_is_reported(ledger: Ledger) -> None:
    raw(ledger, "DELETE FROM ledger_heads")
    assert [(p.seq, p.problem) for p in ledger.verify()] == [(4, "the chain's head row is missing")]


def synchronous_of(book: Ledger) -> int:
    """SQLite's synchronous setting on the ledger's own connections (2 FULL, 1 NORMAL)."""
    with book._engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


@pytest.mark.parametrize(("mode", "synchronous"), [(Mode.LIVE, 2), (Mode.DRILL, 2)])
def test_a_response_runs_ledger_waits_for_the_disk_at_each_commit(
    tmp_path: Path, mode: Mode, synchronous: int
) -> None:
    """A claim or entry acknowledged is on disk: a power cut loses none (only a tabletop
    exercise's own ledger, run again rather than resumed, does not wait)."""
    incident = ROOT / "tests" / "data" / "engine" / "incident.yaml"
    request = RunRequest(
        mode=mode,
        incident_file=incident,
        out_dir=tmp_path / "run",
        playbook_file=ROOT / "tests" / "data" / "engine" / "contain.yaml",
        confirm_incident_id=Incident.from_file(incident).id,
    )
    fakes = Fakes(tmp_path, customers=InMemoryCustomers([]))
    ctx = open_run(request, Settings(home=tmp_path / "home"), FixedStepClock(T0), fakes.adapters())
    try:
        assert synchronous_of(ctx.journal.ledger) == synchronous
    finally:
        ctx.journal.ledger.close()
    exercise = Ledger(
        f"sqlite:///{tmp_path / 'exercise.sqlite'}",
        FixedStepClock(T0),
        synced_each_commit=mode_profile(Mode.TABLETOP).ledger_synced_each_commit,
    )
    assert synchronous_of(exercise) == 1
    exercise.close()


def _letter_entry(key: str, phase: str = "claim", outcome: str = "claimed") -> Entry:
    return Entry(
        incident_id="INC-1",
        run_id="run-a",
        step_id="letters.deliver",
        target=key,
        phase=phase,
        actor="test",
        mode="LIVE",
        outcome=outcome,
        details={},
    )


def test_settling_many_refuses_the_whole_set_naming_the_item_taken_over_meanwhile(
    tmp_path: Path,
) -> None:
    """Settled in one statement, the letters' outcomes still each check their claim: one
    taken over since (its run resumed elsewhere) refuses the set, naming it, and nothing of
    the set is recorded."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}", FixedStepClock(T0))
    keys = [f"gdpr-a34/C{n}" for n in range(5)]
    claims = ledger.claim_many([(_letter_entry(key), key) for key in keys])
    assert all(claim is not None for claim in claims)
    assert ledger.take_over(_letter_entry(keys[3]), keys[3], "") is not None
    outcomes = [
        (claim, ItemStatus.DONE, _letter_entry(claim.key, "outcome", "done"))
        for claim in claims
        if claim is not None
    ]
    with pytest.raises(LedgerError, match=r"item letters.deliver/gdpr-a34/C3 was claimed again"):
        ledger.settle_many(outcomes)
    statuses = ledger.item_statuses("INC-1", "letters.deliver")
    assert set(statuses.values()) == {ItemStatus.CLAIMED}
    ledger.settle_many(outcomes[:3])
    assert [ledger.item_status("INC-1", "letters.deliver", k) for k in keys[:3]] == [
        ItemStatus.DONE
    ] * 3
    assert ledger.verify() == []
