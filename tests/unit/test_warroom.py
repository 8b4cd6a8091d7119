"""The war room's phase message: counts, FAILED actions by id, deadlines within 24 h only."""

from __future__ import annotations

from datetime import UTC, datetime

from breachbook.engine import PlanEntry, Status, StepResult
from breachbook.warroom import phase_blocks

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def step(step_id: str, *statuses: Status, counts: dict[str, int] | None = None) -> StepResult:
    entries = [
        PlanEntry("contain", step_id, step_id, "database.lock_role", f"t{n}", s, "", "", "", "")
        for n, s in enumerate(statuses)
    ]
    return StepResult("contain", step_id, step_id, "x", NOW, NOW, entries, counts=counts or {})


def test_a_phase_message_counts_lists_failures_and_near_deadlines() -> None:
    results = [
        step("lock", Status.COMPLETED, Status.FAILED),
        step("letters", Status.COMPLETED, counts={"letters": 6748}),
    ]
    soon = ["2026-11-28 15:00 UTC gdpr-a33 notice to the regulator"]
    blocks = phase_blocks("Phase contain ended: Contain", "inc-1", results, [], soon)
    text = repr(blocks)
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Phase contain ended: Contain"},
    }
    assert "*Actions:* completed 2, failed 1" in text
    assert "letters 6,748" in text
    assert "`lock` database.lock_role on `t1`: failed" in text
    assert "`t0`" not in text, "only what failed is listed"
    assert "2026-11-28 15:00 UTC gdpr-a33 notice to the regulator" in text


def test_a_long_list_of_failures_is_cut_and_counted() -> None:
    results = [step(f"s{n}", Status.FAILED) for n in range(13)]
    text = repr(phase_blocks("Phase x ended: X", "inc-1", results, [], []))
    assert "`s9`" in text and "`s10`" not in text and "and 3 more" in text
    assert "Due within 24 h" not in text
