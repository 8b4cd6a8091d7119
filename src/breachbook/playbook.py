"""The playbook: reviewable YAML validated into a typed model.

Unknown keys are rejected, step ids are unique, `depends_on` and approval roles must refer to
something that exists, dependencies have no cycles, every action is registered and every
template it names exists, and conditions and arguments name only fields the incident has.
Each problem is reported with its path in the YAML and its line.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from breachbook.errors import PlaybookError
from breachbook.expressions import Scope, expression_problems, value_problems
from breachbook.inputs import PLAYBOOK, InputError, parse_yaml, read_text, while_unchanged
from breachbook.models import Incident, Organisation

StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
RoleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]

EXPRESSION_SCOPE: Scope = {"incident": Incident}
"""What `when` and `with` expressions see at run time (Context.incident_view): the incident."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ApprovalGate(Strict):
    """Who must approve a step: a role, how many different people of it, and whether the
    person who started the LIVE run may be one of them."""

    role: RoleName
    people: int = Field(
        default=1, ge=1, le=5, description="How many different people of the role must approve"
    )
    not_the_starter: bool = Field(
        default=False,
        description="The person who started the LIVE run (BREACHBOOK_ACTOR) may not approve",
    )
    timeout: timedelta | None = Field(
        default=None,
        description="ISO 8601 duration to wait before escalating to the role's backup "
        "(default: the role's, else BREACHBOOK_APPROVAL_TIMEOUT)",
    )


def _gate_of_role(value: Any) -> Any:
    """`approval: legal` is short for `approval: {role: legal}`."""
    return {"role": value} if isinstance(value, str) else value


class Step(Strict):
    id: StepId
    title: str = Field(min_length=1)
    action: str = Field(description="Name of a registered action, e.g. database.lock_role")
    args: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="Arguments of the action; a string may refer to the incident: '{{ incident.hosts }}'",
    )
    when: str | None = Field(
        default=None, description="Condition on the incident; the step is skipped when false"
    )
    depends_on: list[StepId] = Field(default_factory=list)
    approval: Annotated[ApprovalGate | None, BeforeValidator(_gate_of_role)] = Field(
        default=None,
        description="Role that must approve before the step changes anything, or "
        "{role, people, not_the_starter, timeout}",
    )
    deadline: timedelta | None = Field(
        default=None, description="ISO 8601 duration from the start of the run, e.g. PT15M"
    )


class Phase(Strict):
    id: StepId
    title: str = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)


class WarRoom(Strict):
    channel: str = Field(pattern=r"^#[a-z0-9_-]{1,80}$")
    drill_channel: str = Field(pattern=r"^#[a-z0-9_-]{1,80}$")


class Playbook(Strict):
    version: Literal[1]
    name: StepId
    title: str = Field(min_length=1)
    description: str = ""
    organisation: Organisation
    roles: list[RoleName] = Field(min_length=1)
    war_room: WarRoom
    phases: list[Phase] = Field(min_length=1)

    def steps(self) -> list[tuple[Phase, Step]]:
        return [(phase, step) for phase in self.phases for step in phase.steps]

    def ordered_steps(self) -> list[tuple[Phase, Step]]:
        """Steps in phase order, each after the steps it depends on (checked acyclic)."""
        by_id = {step.id: (phase, step) for phase, step in self.steps()}
        done: set[str] = set()
        ordered: list[tuple[Phase, Step]] = []

        def visit(step_id: str) -> None:
            if step_id in done:
                return
            done.add(step_id)
            phase, step = by_id[step_id]
            for dep in step.depends_on:
                visit(dep)
            ordered.append((phase, step))

        for _, step in self.steps():
            visit(step.id)
        return ordered


def json_schema() -> dict[str, Any]:
    """The playbook JSON Schema, with the registered action names as an enum for editors."""
    from breachbook.actions import registry

    schema = Playbook.model_json_schema(by_alias=True)
    schema["$defs"]["Step"]["properties"]["action"]["enum"] = sorted(registry())
    approval = schema["$defs"]["Step"]["properties"]["approval"]
    role = schema["$defs"]["ApprovalGate"]["properties"]["role"]
    approval["anyOf"] = [{"type": "string", "pattern": role["pattern"]}, *approval["anyOf"]]
    schema["title"] = "breachbook playbook"
    return schema


class _LineFinder:
    """Maps a path in the YAML document (('phases', 0, 'steps', 1, 'action')) to its line."""

    def __init__(self, root: yaml.Node | None) -> None:
        self._root = root

    def line(self, loc: tuple[str | int, ...]) -> int | None:
        node = self._root
        best = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = next(
                    ((k, v) for k, v in node.value if getattr(k, "value", None) == part), None
                )
                if match is None:
                    break
                node = match[1]
                best = match[0].start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                best = node.start_mark.line + 1
            else:
                break
        return best


def _format_loc(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class _Problems:
    def __init__(self, lines: _LineFinder) -> None:
        self.lines = lines
        self.items: list[str] = []

    def add(self, loc: tuple[str | int, ...], message: str) -> None:
        line = self.lines.line(loc)
        where = f" (line {line})" if line is not None else ""
        self.items.append(f"{_format_loc(loc)}{where}: {message}")


def _check_templates(playbook: Playbook, templates_dir: Path, problems: _Problems) -> None:
    """Every template a step's action needs is a file of the templates folder (checked on
    every load: the folder can change while the playbook does not)."""
    from breachbook.actions import registry

    actions = registry()
    for p_index, phase in enumerate(playbook.phases):
        for s_index, step in enumerate(phase.steps):
            action = actions.get(step.action)
            if action is None:
                continue
            for template in action.required_templates(step.args):
                if not (templates_dir / template).is_file():
                    problems.add(
                        ("phases", p_index, "steps", s_index, "with"),
                        f"template {template!r} not found in {templates_dir}",
                    )


def _check_references(playbook: Playbook, problems: _Problems) -> None:
    """Ids, actions and their arguments, roles, conditions and dependencies: what the
    playbook's own text decides."""
    from breachbook.actions import registry

    actions = registry()
    phase_ids: set[str] = set()
    where: dict[str, tuple[int, int]] = {}
    for p_index, phase in enumerate(playbook.phases):
        if phase.id in phase_ids:
            problems.add(("phases", p_index, "id"), f"duplicate phase id {phase.id!r}")
        phase_ids.add(phase.id)
        for s_index, step in enumerate(phase.steps):
            loc: tuple[str | int, ...] = ("phases", p_index, "steps", s_index)
            if step.id in where:
                problems.add((*loc, "id"), f"duplicate step id {step.id!r}")
            else:
                where[step.id] = (p_index, s_index)
            action = actions.get(step.action)
            if action is None:
                known = ", ".join(sorted(actions))
                problems.add(
                    (*loc, "action"), f"unknown action {step.action!r}; registered actions: {known}"
                )
            else:
                _check_args(action.args_model.model_fields, step, loc, problems)
                _check_literal_args(action.args_model, step, loc, problems)
            gate = step.approval
            if gate is not None and gate.role not in playbook.roles:
                problems.add(
                    (*loc, "approval"),
                    f"approval role {gate.role!r} is not one of roles: {playbook.roles}",
                )
            if step.when is not None:
                for problem in expression_problems(step.when, EXPRESSION_SCOPE):
                    problems.add((*loc, "when"), problem)
    for step_id, (p_index, s_index) in where.items():
        step = playbook.phases[p_index].steps[s_index]
        for d_index, dep in enumerate(step.depends_on):
            loc = ("phases", p_index, "steps", s_index, "depends_on", d_index)
            if dep == step_id:
                problems.add(loc, f"step {step_id!r} depends on itself")
            elif dep not in where:
                problems.add(loc, f"depends on unknown step {dep!r}")
    cycle = _find_cycle(playbook)
    if cycle:
        p_index, s_index = where[cycle[0]]
        problems.add(
            ("phases", p_index, "steps", s_index, "depends_on"),
            "dependency cycle: " + " -> ".join(cycle),
        )


def _check_args(
    fields: dict[str, Any], step: Step, loc: tuple[str | int, ...], problems: _Problems
) -> None:
    for key, value in step.args.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "none"
            problems.add(
                (*loc, "with", key),
                f"unknown argument {key!r} for {step.action} (allowed: {allowed})",
            )
            continue
        for problem in value_problems(value, EXPRESSION_SCOPE):
            problems.add((*loc, "with", key), problem)
    for name, info in fields.items():
        if info.is_required() and name not in step.args:
            problems.add((*loc, "with"), f"missing required argument {name!r} for {step.action}")


def _check_literal_args(
    model: type[BaseModel], step: Step, loc: tuple[str | int, ...], problems: _Problems
) -> None:
    """Validate the arguments written out literally as the run will (the engine's
    `parse_args`); one holding an expression is only known at run time, and one that is
    missing or unknown is reported by _check_args."""
    literal = {key: value for key, value in step.args.items() if not _templated(value)}
    try:
        model.model_validate(literal)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            if err["loc"] and err["loc"][0] in literal and err["type"] != "extra_forbidden":
                message = err["msg"].removeprefix("Value error, ")
                problems.add((*loc, "with", *err["loc"]), message)


def _templated(value: Any) -> bool:
    """Does the value hold an expression that expressions.resolve replaces at run time?"""
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, list):
        return any(_templated(item) for item in value)
    if isinstance(value, dict):
        return any(_templated(item) for item in value.values())
    return False


def _find_cycle(playbook: Playbook) -> list[str]:
    graph = {step.id: [d for d in step.depends_on if d != step.id] for _, step in playbook.steps()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def load_playbook(path: Path, templates_dir: Path) -> Playbook:
    """Read (within the limits of breachbook.inputs), validate and cross-check a playbook;
    raise PlaybookError listing every problem. The file is parsed and checked again only once
    it changed (breachbook.inputs.while_unchanged); the templates it needs are looked for on
    every call."""
    playbook, root, found = _parsed_playbook(path)
    problems = _Problems(_LineFinder(root))
    problems.items.extend(found)
    _check_templates(playbook, templates_dir, problems)
    if problems.items:
        raise PlaybookError(str(path), problems.items)
    return playbook


def _parse_playbook(path: Path) -> tuple[Playbook, yaml.Node | None, tuple[str, ...]]:
    """The playbook, its node tree (for the lines of later problems) and the problems of its
    own text; raises PlaybookError when it is not a valid playbook at all."""
    try:
        raw, root = parse_yaml(read_text(path, PLAYBOOK), str(path))
    except InputError as exc:
        raise PlaybookError(str(path), [exc.problem]) from None
    problems = _Problems(_LineFinder(root))
    if not isinstance(raw, dict):
        raise PlaybookError(str(path), ["a playbook must be a mapping with version, name, phases"])
    try:
        playbook = Playbook.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            problems.add(tuple(err["loc"]), err["msg"])
        raise PlaybookError(str(path), problems.items) from None
    _check_references(playbook, problems)
    return playbook, root, tuple(problems.items)


_parsed_playbook = while_unchanged(PLAYBOOK, _parse_playbook)
