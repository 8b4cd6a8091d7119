"""Scenario and players files: reviewable YAML validated into typed models.

A scenario follows the structure of a professional exercise (HSEEP; docs/tabletop.md): the
exercise, the incident, the simulated world with its faults, the master scenario events list
(MSEL) of injects, the decisions asked of the players and the evaluation guide, whose capability
targets are rated P, S, M or U. Times are ISO 8601 durations of scenario time from the start of
the exercise (the incident's awareness). Every problem names the file and the path in it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from breachbook.errors import BreachbookError, IncidentFileError
from breachbook.inputs import InputError, Kind, parse_yaml, read_text
from breachbook.models import Incident
from breachbook.playbook import _format_loc, _LineFinder, load_playbook

SCENARIO = Kind("scenario file", 1024 * 1024)
PLAYERS = Kind("players file", 1024 * 1024)

Id = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
RoleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
Line = Annotated[str, Field(min_length=1, max_length=2000)]
Text = Annotated[str, Field(min_length=1, max_length=10_000)]


class ScenarioError(BreachbookError):
    """A scenario or players file is malformed or refers to something that does not exist."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Exercise(Strict):
    name: Line
    objectives: list[Line] = Field(min_length=1)
    roles: list[RoleName] = Field(min_length=1, description="Roles taking part")


class Customers(Strict):
    """The synthetic customer database: the demo world's, or one of `generated` customers."""

    demo: bool = False
    generated: int | None = Field(default=None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_source(self) -> Customers:
        if self.demo == (self.generated is not None):
            raise ValueError("give exactly one of demo: true and generated: COUNT")
        return self


Port = Literal["database", "cloud", "mail", "chat", "evidence", "publisher", "approvals", "http"]


class Fault(Strict):
    """A port of the simulated world failing for a while: every call to it (or to one
    `operation`, or the decisions of one `role`) fails from `from` until `until`."""

    id: Id
    port: Port
    operation: Annotated[str, Field(pattern=r"^[a-z_]+$")] | None = None
    role: RoleName | None = Field(default=None, description="approvals only: who is silent")
    start: timedelta = Field(default=timedelta(0), alias="from")
    until: timedelta | None = Field(default=None, description="none: to the end")
    reason: Line

    @model_validator(mode="after")
    def _window(self) -> Fault:
        if self.start < timedelta(0):
            raise ValueError("from: a fault cannot start before the incident (negative time)")
        if self.until is not None and self.until <= self.start:
            raise ValueError("until: must come after from")
        if self.role is not None and self.port != "approvals":
            raise ValueError("role: only an approvals fault names a role")
        return self


class World(Strict):
    """What the simulated adapters know; a change to anything else is refused as unknown."""

    customers: Customers
    database_roles: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")]] = []
    access_keys: list[Annotated[str, Field(pattern=r"^[A-Z0-9]{16,128}$")]] = []
    hosts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]] = []
    action_time: timedelta = Field(
        default=timedelta(minutes=2), description="Scenario time one change takes"
    )
    faults: list[Fault] = []


class Expect(Strict):
    """An expected player response: a playbook step done, or a decision taken (with this
    option), by `by` (scenario time; none: by the end of the exercise)."""

    step: Id | None = None
    decision: Id | None = None
    option: Id | None = None
    by: timedelta | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> Expect:
        if (self.step is None) == (self.decision is None):
            raise ValueError("give exactly one of step and decision")
        if self.option is not None and self.decision is None:
            raise ValueError("option: only a decision has options")
        return self

    def label(self) -> str:
        if self.step is not None:
            return f"step {self.step}"
        chosen = f" = {self.option}" if self.option else ""
        return f"decision {self.decision}{chosen}"


InjectType = Literal[
    "alert",
    "email",
    "chat",
    "phone",
    "document",
    "press-inquiry",
    "regulator-inquiry",
    "fault",
]


class Inject(Strict):
    """One row of the master scenario events list."""

    id: Id
    at: timedelta = Field(description="Scenario time from the start, e.g. PT20H")
    type: InjectType
    to: RoleName
    text: Text
    expect: list[Expect] = []
    capability: Id | None = None
    evaluator_notes: str = Field(default="", description="Hidden from players")
    unless: list[Expect] = Field(
        default=[],
        description="A contingency inject: sent only if one of these responses has not "
        "happened by `at`",
    )
    asks: Id | None = Field(default=None, description="The decision this inject puts to players")

    @property
    def contingency(self) -> bool:
        return bool(self.unless)


class DecisionPoint(Strict):
    """A question put to one role. With `step`, the decision is the step's approval gate and
    the options are approve and deny."""

    id: Id
    question: Text
    role: RoleName
    options: list[Id] = Field(min_length=2)
    deadline: timedelta
    step: Id | None = None

    @model_validator(mode="after")
    def _gate_options(self) -> DecisionPoint:
        if self.step is not None and set(self.options) != {"approve", "deny"}:
            raise ValueError("options: a step's approval has the options approve and deny")
        return self


class Rules(Strict):
    """The measured delay up to `P` rates P (performed without challenges), up to `S` S (some
    challenges), up to `M` M (major challenges); beyond, or never observed, U (unable)."""

    P: timedelta
    S: timedelta
    M: timedelta

    @model_validator(mode="after")
    def _ascending(self) -> Rules:
        if not timedelta(0) <= self.P <= self.S <= self.M:
            raise ValueError("P, S and M must be durations from zero, in ascending order")
        return self


class Measure(Strict):
    """What is timed: a step done or a decision taken (delay from the start), or an order
    (how long `first` came after `then`; zero when in order)."""

    step: Id | None = None
    decision: Id | None = None
    option: Id | None = None
    first: Id | None = None
    then: Id | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Measure:
        kinds = [self.step is not None, self.decision is not None, self.first is not None]
        if sum(kinds) != 1 or (self.first is None) != (self.then is None):
            raise ValueError("measure one of: step, decision (option), first and then")
        return self


class Target(Strict):
    """A capability target of the evaluation guide, with its P/S/M/U rules."""

    id: Id
    capability: Id
    description: Line
    measure: Measure
    rules: Rules
    corrective_action: Line
    owner: RoleName


class Scenario(Strict):
    version: Literal[1]
    exercise: Exercise
    incident: Incident | str = Field(description="The incident inline, or a file beside this one")
    playbook: str | None = Field(default=None, description="Playbook file; default the reference")
    duration: timedelta = Field(description="How long the exercise runs in scenario time")
    world: World
    injects: list[Inject] = Field(min_length=1)
    decisions: list[DecisionPoint] = []
    evaluation: list[Target] = Field(min_length=1)
    improvement_due: timedelta = Field(
        default=timedelta(days=30), description="Improvement-plan rows are due this long after"
    )


class Answer(Strict):
    """A scripted player's answer: who, in which role, chose what, how long after being asked."""

    decision: Id
    by: Line
    role: RoleName
    option: Id
    after: timedelta = Field(ge=timedelta(0))


class PlayersFile(Strict):
    version: Literal[1]
    answers: list[Answer] = []


class LoadedScenario:
    """A checked scenario with its incident and the playbook's step ids resolved."""

    def __init__(self, path: Path, scenario: Scenario, incident: Incident, playbook: Path) -> None:
        self.path = path
        self.scenario = scenario
        self.incident = incident
        self.playbook_file = playbook

    def decision(self, decision_id: str) -> DecisionPoint:
        return next(d for d in self.scenario.decisions if d.id == decision_id)


def _parse(path: Path, kind: Kind) -> tuple[Any, _LineFinder]:
    try:
        raw, root = parse_yaml(read_text(path, kind), str(path))
    except InputError as exc:
        raise ScenarioError(str(exc)) from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: {kind.a} must be a mapping")
    return raw, _LineFinder(root)


def _problem(path: Path, lines: _LineFinder, loc: tuple[str | int, ...], message: str) -> str:
    line = lines.line(loc)
    where = f" (line {line})" if line is not None else ""
    return f"{path}: {_format_loc(loc)}{where}: {message}"


def _validated(path: Path, kind: Kind, model: type[Strict]) -> tuple[Any, _LineFinder]:
    raw, lines = _parse(path, kind)
    try:
        return model.model_validate(raw), lines
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        message = err["msg"].removeprefix("Value error, ")
        raise ScenarioError(_problem(path, lines, tuple(err["loc"]), message)) from None


def load_scenario(path: Path, project: Path) -> LoadedScenario:
    """Read and cross-check a scenario: the steps, roles, decisions, capabilities and injects
    it names exist, and nothing is scheduled before the incident."""
    scenario, lines = _validated(path, SCENARIO, Scenario)
    assert isinstance(scenario, Scenario)
    checker = _Checker(path, lines, scenario)
    incident = checker.incident()
    playbook_file = (
        path.parent / scenario.playbook
        if scenario.playbook
        else project / "playbooks" / "customer-data-breach.yaml"
    )
    try:
        playbook = load_playbook(playbook_file, project / "templates")
    except BreachbookError as exc:
        raise checker.fail(("playbook",), str(exc)) from None
    checker.steps = {step.id for _, step in playbook.steps()}
    checker.decisions()
    checker.injects()
    checker.world_and_evaluation()
    return LoadedScenario(path, scenario, incident, playbook_file)


class _Checker:
    """The cross-references of one scenario, each failure naming the file and the path."""

    def __init__(self, path: Path, lines: _LineFinder, scenario: Scenario) -> None:
        self.path = path
        self.lines = lines
        self.scenario = scenario
        self.steps: set[str] = set()
        self.roles = set(scenario.exercise.roles)
        self.by_id = {d.id: d for d in scenario.decisions}

    def fail(self, loc: tuple[str | int, ...], message: str) -> ScenarioError:
        return ScenarioError(_problem(self.path, self.lines, loc, message))

    def incident(self) -> Incident:
        if not isinstance(self.scenario.incident, str):
            return self.scenario.incident
        try:
            return Incident.from_file(self.path.parent / self.scenario.incident)
        except IncidentFileError as exc:
            raise self.fail(("incident",), str(exc)) from None

    def role(self, loc: tuple[str | int, ...], role: str | None) -> None:
        if role is not None and role not in self.roles:
            raise self.fail(loc, f"unknown role {role!r}")

    def step(self, loc: tuple[str | int, ...], step: str | None) -> None:
        if step is not None and step not in self.steps:
            raise self.fail(loc, f"unknown step {step!r}")

    def decisions(self) -> None:
        seen: set[str] = set()
        for n, decision in enumerate(self.scenario.decisions):
            self.role(("decisions", n, "role"), decision.role)
            self.step(("decisions", n, "step"), decision.step)
            if decision.id in seen:
                raise self.fail(("decisions", n, "id"), f"duplicate decision id {decision.id!r}")
            seen.add(decision.id)

    def expect(self, loc: tuple[str | int, ...], expect: Expect) -> None:
        self.step((*loc, "step"), expect.step)
        if expect.decision is None:
            return
        found = self.by_id.get(expect.decision)
        if found is None:
            raise self.fail((*loc, "decision"), f"unknown decision {expect.decision!r}")
        if expect.option is not None and expect.option not in found.options:
            raise self.fail((*loc, "option"), f"{expect.option!r} is not an option of it")

    def injects(self) -> None:
        capabilities = {t.capability for t in self.scenario.evaluation}
        seen: set[str] = set()
        for n, inject in enumerate(self.scenario.injects):
            loc: tuple[str | int, ...] = ("injects", n)
            if inject.id in seen:
                raise self.fail((*loc, "id"), f"duplicate inject id {inject.id!r}")
            seen.add(inject.id)
            if inject.at < timedelta(0):
                raise self.fail(
                    (*loc, "at"), "scheduled before the incident (negative scenario time)"
                )
            if inject.at > self.scenario.duration:
                raise self.fail((*loc, "at"), "scheduled after the end of the exercise")
            self.role((*loc, "to"), inject.to)
            if inject.capability is not None and inject.capability not in capabilities:
                raise self.fail((*loc, "capability"), f"unknown capability {inject.capability!r}")
            if inject.asks is not None and inject.asks not in self.by_id:
                raise self.fail((*loc, "asks"), f"unknown decision {inject.asks!r}")
            for m, expect in enumerate(inject.expect):
                self.expect((*loc, "expect", m), expect)
            for m, expect in enumerate(inject.unless):
                self.expect((*loc, "unless", m), expect)

    def world_and_evaluation(self) -> None:
        for n, fault in enumerate(self.scenario.world.faults):
            self.role(("world", "faults", n, "role"), fault.role)
        for n, target in enumerate(self.scenario.evaluation):
            loc: tuple[str | int, ...] = ("evaluation", n, "measure")
            self.step((*loc, "step"), target.measure.step)
            self.step((*loc, "first"), target.measure.first)
            self.step((*loc, "then"), target.measure.then)
            if target.measure.decision is not None:
                self.expect(
                    loc, Expect(decision=target.measure.decision, option=target.measure.option)
                )
            self.role(("evaluation", n, "owner"), target.owner)


def load_players(path: Path, loaded: LoadedScenario) -> list[Answer]:
    """Scripted answers, each to a decision of the scenario with one of its options."""
    players, lines = _validated(path, PLAYERS, PlayersFile)
    assert isinstance(players, PlayersFile)
    decisions = {d.id: d for d in loaded.scenario.decisions}
    for n, answer in enumerate(players.answers):
        found = decisions.get(answer.decision)
        if found is None:
            raise ScenarioError(
                _problem(
                    path,
                    lines,
                    ("answers", n, "decision"),
                    f"no decision {answer.decision!r} in {loaded.path.name}",
                )
            )
        if answer.option not in found.options:
            raise ScenarioError(
                _problem(
                    path, lines, ("answers", n, "option"), f"{answer.option!r} is not an option"
                )
            )
    return list(players.answers)


def tabletop_file_kind(path: Path) -> Literal["scenario", "players"] | None:
    """What a YAML file of scenarios/ is: a scenario (a top-level `exercise:`), a players
    file (a top-level `answers:`), or neither (an incident, or not YAML)."""
    try:
        raw, _ = parse_yaml(read_text(path, SCENARIO), str(path))
    except InputError:
        return None
    if not isinstance(raw, dict):
        return None
    if "exercise" in raw:
        return "scenario"
    return "players" if "answers" in raw else None


def is_scenario(path: Path) -> bool:
    """Whether a YAML file is a scenario (a top-level `exercise:`), for `breachbook validate`."""
    return tabletop_file_kind(path) == "scenario"


def scenario_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema(by_alias=True)
    schema["title"] = "breachbook tabletop scenario"
    return schema


def players_schema() -> dict[str, Any]:
    schema = PlayersFile.model_json_schema(by_alias=True)
    schema["title"] = "breachbook tabletop players"
    return schema
