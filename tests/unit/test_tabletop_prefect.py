"""The tabletop flow under Prefect's test harness: scripted players, and a facilitator who
answers each decision in the flow run's pause form; the score and the report are artifacts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.conftest import ROOT

DATA = ROOT / "tests" / "data" / "scenarios"
SMALL = str(DATA / "small.yaml")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BREACHBOOK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def ratings(out: Path) -> dict[str, str]:
    score = json.loads((out / "score.json").read_text(encoding="utf-8"))
    return {row["target"]: row["rating"] for row in score["ratings"]}


def artifacts_of(flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=runs)
    return {a.key.rsplit("-", 1)[0]: a.data for a in found if a.key}


def test_scripted_players_give_the_score_and_report_as_artifacts(
    prefect_harness: None, home: Path, tmp_path: Path
) -> None:
    from flows.tabletop import tabletop

    out = tmp_path / "out"
    state = tabletop(
        scenario=SMALL,
        players=str(DATA / "good-players.yaml"),
        out_dir=str(out),
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert ratings(out)["keys-off"] == "S"
    assert state.state_details.flow_run_id is not None
    found = artifacts_of(state.state_details.flow_run_id)
    table = json.loads(found["breachbook-tabletop-score"])
    assert {row["target"]: row["rating"] for row in table}["declared"] == "P"
    assert "# After-action report: Small test exercise" in found["breachbook-tabletop-aar"]


ANSWERS = {
    "decision-declare": {"option": "declare", "by": "Priya", "role": "incident-lead", "minutes": 5},
    "decision-file-notice": {"option": "file", "by": "Dana", "role": "legal", "minutes": 600},
    "decision-approve-keys": {
        "option": "approve",
        "by": "Priya",
        "role": "incident-lead",
        "minutes": 10,
    },
}


@pytest.fixture
def facilitator() -> Iterator[list[str]]:
    """Answers every paused tabletop run through Prefect's API, as the UI's form does."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )
    from prefect.flow_runs import resume_flow_run

    answered: list[str] = []
    stop = threading.Event()

    def answer() -> None:
        paused = FlowRunFilter(
            state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"]))
        )
        with get_client(sync_client=True) as client:
            while not stop.wait(0.2):
                for run in client.read_flow_runs(flow_run_filter=paused):
                    key = run.state.state_details.pause_key if run.state else None
                    if key in ANSWERS:
                        resume_flow_run(run.id, run_input=ANSWERS[key])
                        answered.append(key)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield answered
    stop.set()
    thread.join()


def test_a_facilitator_answers_each_decision_in_the_pause_form(
    prefect_harness: None, home: Path, tmp_path: Path, facilitator: list[str]
) -> None:
    from flows.tabletop import tabletop

    out = tmp_path / "out"
    state = tabletop(scenario=SMALL, players=None, out_dir=str(out), return_state=True)
    assert state.is_completed(), state.message
    assert facilitator == ["decision-declare", "decision-file-notice", "decision-approve-keys"]
    assert ratings(out) == {
        "declared": "P",
        "keys-off": "S",
        "lock-first": "P",
        "notice-filed": "P",
    }


def test_the_served_form_runs_a_scenario_picked_by_name_and_refuses_one_not_there(
    prefect_harness: None,
    home: Path,
    tabletop_content: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.tabletop import tabletop_exercise

    from breachbook.forms import TabletopForm

    monkeypatch.setenv("BREACHBOOK_CONTENT_DIR", str(tabletop_content))
    picked = TabletopForm(scenario="harbour", players="good-team")
    state = tabletop_exercise(picked, return_state=True)
    assert state.is_completed(), state.message
    (out,) = (home / "exercises").glob("*/*")  # the exercise's own folder under the home
    assert ratings(out)["keys-off"] == "S"
    assert state.state_details.flow_run_id is not None
    assert "breachbook-tabletop-aar" in artifacts_of(state.state_details.flow_run_id)

    refused = tabletop_exercise(TabletopForm(scenario="gone"), return_state=True)
    assert refused.is_failed()
    assert refused.message is not None and refused.message.startswith("scenario: no 'gone' in ")
