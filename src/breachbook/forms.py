"""The forms of the deployments: what a person fills in the Prefect UI to start a run.

Each form is a pydantic model with titles, descriptions, choices and defaults, so the UI reads
well; the mode is never a field (each deployment fixes it). A form only names things: an
incident file of the incidents folder, or an incident filled in (what an alert knows: ids,
hosts, roles, addresses and times; never a customer's personal data, since Prefect keeps
parameters in plain text). `run_request` turns a form into a `RunRequest`, refusing a bad
form with one line naming the field before anything is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from breachbook.errors import BreachbookError, IncidentFileError
from breachbook.models import DataCategory, Incident, describe_validation_error
from breachbook.modes import Mode
from breachbook.settings import Settings, incidents_dir, project_root
from breachbook.wiring import RunRequest

FILL_IN = "(fill in the incident below)"
"""The incident choice that means: use the fields filled in below."""
DEFAULT_PLAYBOOK = "customer-data-breach"
DEFAULT_SCENARIO = "antique-dealer-breach"
DECIDE_IN_FORM = "(the facilitator answers each decision in a form)"
"""The players choice that means: no players file; each decision pauses the run for a form."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class FormError(BreachbookError):
    """A form that cannot start a run; the message names the field."""


def playbook_names(settings: Settings) -> list[str]:
    """The playbooks a form offers: every `*.yaml` of the content's playbooks/ folder."""
    folder = project_root(settings) / "playbooks"
    return sorted(p.stem for p in folder.glob("*.yaml")) or [DEFAULT_PLAYBOOK]


def incident_names(settings: Settings) -> list[str]:
    """The incident files a form offers by name (`*.yaml`, `*.yml`, `*.json`)."""
    folder = incidents_dir(settings)
    if not folder.is_dir():
        return []
    return sorted(
        p.stem for p in folder.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
    )


def _offer_choices(schema: dict[str, Any]) -> None:
    """The playbooks and incidents present when the form is drawn, as its choices (an enum
    the UI shows as a list); a name gone by run time is refused then, naming the field."""
    try:
        settings = Settings()
    except BreachbookError:
        return
    properties = schema.get("properties", {})
    properties.get("playbook", {})["enum"] = playbook_names(settings)
    properties.get("incident", {})["enum"] = [FILL_IN, *incident_names(settings)]


def _starts_empty(schema: dict[str, Any]) -> None:
    """No `default: null` in the form's schema: the Prefect UI takes a null value for its
    None choice and shows `Property is type "None"` under the field; with no default the
    date picker shows, empty, and an empty field is left out (None when the run starts)."""
    schema.pop("default", None)


def form_title(form: type[BaseModel]) -> Any:
    """The `Field` that titles a flow's form parameter as its form. Prefect titles every
    parameter with its Python name (the UI's header read "drill"); a title given in the
    field's JSON schema wins, and equal to the form's own it is left to the form."""
    return Field(json_schema_extra={"title": form.model_config.get("title") or form.__name__})


def scenario_names(settings: Settings) -> tuple[list[str], list[str]]:
    """The scenarios (a top-level `exercise:`) and players files (a top-level `answers:`) of
    the content's scenarios/ folder, by name."""
    from breachbook.tabletop.scenario import tabletop_file_kind

    scenarios: list[str] = []
    players: list[str] = []
    for path in sorted((project_root(settings) / "scenarios").glob("*.yaml")):
        kind = tabletop_file_kind(path)
        if kind == "scenario":
            scenarios.append(path.stem)
        elif kind == "players":
            players.append(path.stem)
    return scenarios or [DEFAULT_SCENARIO], players


def _offer_scenarios(schema: dict[str, Any]) -> None:
    """The scenarios and players files present when the form is drawn, as its choices."""
    try:
        settings = Settings()
    except BreachbookError:
        return
    scenarios, players = scenario_names(settings)
    properties = schema.get("properties", {})
    properties.get("scenario", {})["enum"] = scenarios
    properties.get("players", {})["enum"] = [DECIDE_IN_FORM, *players]


class IncidentFields(BaseModel):
    """An incident filled in on the form: what an alert knows in its first minutes."""

    model_config = ConfigDict(extra="forbid", title="Incident (filled in)")

    id: str = Field(
        default="",
        title="Incident id",
        description="Letters, digits, dot, dash or underscore, 3-64 characters: inc-2026-042.",
        pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$",
    )
    title: str = Field(default="", title="Title", max_length=200)
    description: str = Field(
        default="", title="What happened", description="Quoted in letters.", max_length=10_000
    )
    started_at: datetime | None = Field(
        default=None,
        title="Started at",
        description="Default: when the run starts.",
        json_schema_extra=_starts_empty,
    )
    discovered_at: datetime | None = Field(
        default=None,
        title="Discovered at",
        description="Default: when the run starts.",
        json_schema_extra=_starts_empty,
    )
    database_role: str = Field(
        default="", title="Database role involved", description="Locked in LIVE.", max_length=63
    )
    access_key_ids: list[str] = Field(
        default=[], title="Leaked cloud access key ids", max_length=1_000
    )
    hosts: list[str] = Field(default=[], title="Hosts to quarantine", max_length=1_000)
    source_addresses: list[str] = Field(
        default=[], title="Attacker addresses (IP or CIDR)", max_length=1_000
    )
    data_categories: list[DataCategory] = Field(
        default=[], title="Data categories exposed", description="Leave empty until known."
    )
    risk: Literal["not assessed", "unlikely", "risk", "high"] = Field(
        default="not assessed", title="Risk to the people affected"
    )

    def incident(self, now: datetime) -> Incident:
        """The incident these fields describe, checked as an incident file is."""
        raw: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "started_at": self.started_at or now,
            "discovered_at": self.discovered_at or now,
            "access_key_ids": self.access_key_ids,
            "hosts": self.hosts,
            "source_addresses": self.source_addresses,
            "data_categories": self.data_categories,
        }
        if self.description:
            raw["description"] = self.description
        if self.database_role:
            raw["database_role"] = self.database_role
        if self.risk != "not assessed":
            raw["risk"] = self.risk
        try:
            return Incident.model_validate(raw)
        except ValidationError as exc:
            raise FormError(f"incident_fields: {describe_validation_error(exc)}") from None


class DrillForm(BaseModel):
    """Rehearse the playbook on an incident: every permission checked, every document
    produced, nothing changed. The run writes to a new folder of its own, named in its
    artifacts."""

    model_config = ConfigDict(extra="forbid", title="Drill", json_schema_extra=_offer_choices)

    playbook: str = Field(
        default=DEFAULT_PLAYBOOK,
        title="Playbook",
        description="A playbook of the content's playbooks/ folder, by name.",
        pattern=NAME_PATTERN,
    )
    incident: str = Field(
        default=FILL_IN,
        title="Incident",
        description="An incident file of the incidents folder (BREACHBOOK_INCIDENTS_DIR) by "
        "name, or fill one in below.",
        pattern=rf"{NAME_PATTERN}|^\(fill in the incident below\)$",
    )
    incident_fields: IncidentFields = Field(
        default_factory=IncidentFields,
        title="Incident (filled in)",
        description="Used when Incident is '(fill in the incident below)'. No customer's "
        "personal data: Prefect keeps what is typed here in plain text.",
    )


class LiveForm(DrillForm):
    """LIVE response: really contains, preserves and notifies. Type the incident id to
    confirm."""

    model_config = ConfigDict(
        extra="forbid", title="LIVE response", json_schema_extra=_offer_choices
    )

    confirm_incident_id: str = Field(
        default="",
        title="Confirm: type the incident id",
        description="LIVE changes production systems; the run refuses to start unless this is "
        "the incident's id.",
        max_length=64,
    )


class TabletopForm(BaseModel):
    """A scored tabletop exercise on a simulated clock: the playbook against a simulated
    world, with the scenario's injects. Players' decisions come from a players file, or the
    run pauses at each decision for the facilitator's answer. Nothing real is touched."""

    model_config = ConfigDict(
        extra="forbid", title="Tabletop exercise", json_schema_extra=_offer_scenarios
    )

    scenario: str = Field(
        default=DEFAULT_SCENARIO,
        title="Scenario",
        description="A scenario of the content's scenarios/ folder, by name.",
        pattern=NAME_PATTERN,
    )
    players: str = Field(
        default=DECIDE_IN_FORM,
        title="Players' decisions",
        description="A players file of scenarios/ (scripted answers, by name), or none: the "
        "run then pauses at each decision for the facilitator's answer.",
        pattern=rf"{NAME_PATTERN}|^\(the facilitator answers each decision in a form\)$",
    )


def tabletop_files(form: TabletopForm, settings: Settings) -> tuple[Path, Path | None]:
    """The scenario file and the players file (None: decisions in forms) a form names; a
    name not in scenarios/ is refused naming the field."""
    folder = project_root(settings) / "scenarios"
    scenario = _find(folder, form.scenario, (".yaml",), "scenario")
    if form.players == DECIDE_IN_FORM:
        return scenario, None
    return scenario, _find(folder, form.players, (".yaml",), "players")


def _find(folder: Path, name: str, kinds: tuple[str, ...], field: str) -> Path:
    for suffix in kinds:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    raise FormError(f"{field}: no {name!r} in {folder}")


def run_request(
    form: DrillForm, mode: Mode, settings: Settings, run_id: str | None, now: datetime | None = None
) -> RunRequest:
    """The run a form asks for; a form that cannot start one is refused naming its field.
    The run writes to its own new folder under the home (`runs/INCIDENT/RUN`)."""
    playbook = _find(project_root(settings) / "playbooks", form.playbook, (".yaml",), "playbook")
    confirm = form.confirm_incident_id if isinstance(form, LiveForm) else None
    if form.incident != FILL_IN:
        found = _find(
            incidents_dir(settings), form.incident, (".yaml", ".yml", ".json"), "incident"
        )
        return RunRequest(
            mode=mode,
            incident_file=found,
            playbook_file=playbook,
            confirm_incident_id=confirm or None,
            run_id=run_id,
        )
    if not form.incident_fields.id:
        raise FormError("incident: pick an incident file, or fill in incident_fields (id, title)")
    incident = form.incident_fields.incident(now or datetime.now(UTC))
    document = yaml.safe_dump(incident.model_dump(mode="json", exclude_defaults=True))
    return RunRequest(
        mode=mode,
        incident_yaml=document,
        playbook_file=playbook,
        confirm_incident_id=confirm or None,
        run_id=run_id,
    )


def check_form(payload: Any, form: type[DrillForm]) -> DrillForm:
    """A form's raw parameters validated, or one line naming the field at fault."""
    try:
        return form.model_validate(payload)
    except ValidationError as exc:
        raise IncidentFileError(f"form: {describe_validation_error(exc)}") from None
