"""The tabletop exercise as a Prefect flow: a facilitator runs it from the browser.

Parameters are file names and flags only: `tabletop` takes them as plain parameters
(prefect.yaml's deployment), `tabletop_exercise` as a form (`breachbook serve`'s deployment:
a scenario of scenarios/ by name, a players file or none). Scripted players answer from a
players file; with none, each decision pauses the flow run with a typed form
(`pause_flow_run(wait_for_input=...)`) whose option field lists the decision's options, and
the exercise carries on with the answer.
The score and the after-action report are artifacts of the flow run.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import State
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import Field, create_model

from breachbook.errors import BreachbookError
from breachbook.forms import TabletopForm, form_title, tabletop_files
from breachbook.settings import Settings, project_root
from breachbook.tabletop.exercise import run_exercise
from breachbook.tabletop.players import Players, ScriptedPlayers, scenario_time
from breachbook.tabletop.report import AAR, score_data, write_results
from breachbook.tabletop.scenario import (
    Answer,
    DecisionPoint,
    Inject,
    load_players,
    load_scenario,
)

DECISION_WAIT = timedelta(hours=4)
"""How long a paused decision waits for the facilitator before the exercise gives up."""


class DecisionForm(RunInput):
    """The facilitator's answer to one decision (the option field is narrowed per decision)."""

    option: str
    by: str = Field(min_length=1, description="Who answered")
    role: str = Field(description="In which role")
    minutes: int = Field(default=10, ge=0, description="Minutes of scenario time taken")


def form_for(decision: DecisionPoint) -> type[DecisionForm]:
    """A form whose option is one of this decision's options, and whose role defaults to the
    role with the authority."""
    options = cast(Any, Literal.__getitem__(tuple(decision.options)))
    return create_model(
        "Decision",
        __base__=DecisionForm,
        option=(options, Field(description=decision.question)),
        role=(str, Field(default=decision.role, description="In which role")),
    )


class PrefectPlayers:
    """Injects go to the flow run's log; each decision pauses the run for the form."""

    def show(self, inject: Inject, at: timedelta) -> None:
        get_run_logger().info(
            "%s %s to %s [%s]: %s",
            scenario_time(at),
            inject.type,
            inject.to,
            inject.id,
            inject.text,
        )

    def answer(self, decision: DecisionPoint, asked_at: timedelta) -> Answer | None:
        get_run_logger().info(
            "%s decision %s for %s: %s",
            scenario_time(asked_at),
            decision.id,
            decision.role,
            decision.question,
        )
        given = pause_flow_run(
            wait_for_input=form_for(decision),
            key=f"decision-{decision.id}",
            timeout=int(DECISION_WAIT.total_seconds()),
            poll_interval=1,
        )
        if given is None:
            return None
        return Answer(
            decision=decision.id,
            by=given.by,
            role=given.role,
            option=given.option,
            after=timedelta(minutes=given.minutes),
        )


@flow(name="breachbook-tabletop", persist_result=False)
def tabletop(
    scenario: str = "antique-dealer-breach.yaml",
    players: str | None = "demo-players.yaml",
    out_dir: str | None = None,
) -> dict[str, str]:
    """Run a tabletop exercise: a scenario in scenarios/ (or a path), scripted players (a
    players file) or none, for decisions taken in this form as the run pauses."""
    settings = Settings()
    root = project_root(settings)
    return _exercise(
        settings,
        _in_scenarios(root, scenario),
        _in_scenarios(root, players) if players else None,
        Path(out_dir) if out_dir else None,
    )


@flow(name="breachbook-tabletop", persist_result=False)
def tabletop_exercise(
    exercise: Annotated[TabletopForm, form_title(TabletopForm)],
) -> dict[str, str] | State:
    """A scored tabletop exercise, `breachbook serve`'s deployment: pick a scenario of
    scenarios/ by name, and a players file or none (then each decision pauses the run for the
    facilitator's answer). A form naming what is not there, or a scenario that does not
    check, ends Failed with one line saying why."""
    settings = Settings()
    try:
        scenario, players = tabletop_files(exercise, settings)
        return _exercise(settings, scenario, players, None)
    except BreachbookError as exc:
        get_run_logger().error("refused: %s", exc)
        return Failed(message=str(exc))


def _exercise(
    settings: Settings, scenario: Path, players: Path | None, out: Path | None
) -> dict[str, str]:
    """The exercise to its end in a folder of its own (or `out`); the score and the report
    become artifacts of the flow run."""
    loaded = load_scenario(scenario, project_root(settings))
    team: Players
    answers_text = ""
    if players is not None:
        team = ScriptedPlayers(load_players(players, loaded))
        answers_text = players.read_text(encoding="utf-8")
    else:
        team = PrefectPlayers()
    run = str(flow_run.id or "local").replace("-", "")[:12]
    out = out or settings.home / "exercises" / loaded.incident.id / run
    log = run_exercise(loaded, team, out, settings, answers_text)
    scored = write_results(out, log)
    create_table_artifact(
        key=f"breachbook-tabletop-score-{run}",
        description=f"P/S/M/U per capability target: {loaded.scenario.exercise.name}",
        table=score_data(scored),
    )
    create_markdown_artifact(
        key=f"breachbook-tabletop-aar-{run}",
        description="After-action report and improvement plan",
        markdown=(out / AAR).read_text(encoding="utf-8"),
    )
    return {"run_id": log.run_id, "out_dir": str(out)}


def _in_scenarios(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / "scenarios" / path
