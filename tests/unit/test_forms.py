"""The deployments' forms and `serve`'s settings: a form names an incident file or fills one
in and becomes the run's request, or is refused in one line naming the field; the form's
schema offers the playbooks and incidents present and never the mode; `serve` offers the
tabletop exercise with the scenarios and players files present, by name; the settings file
is read under the environment and an unknown key in it is refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from breachbook.errors import BreachbookError, UnknownSetting
from breachbook.forms import (
    DECIDE_IN_FORM,
    FILL_IN,
    DrillForm,
    FormError,
    IncidentFields,
    LiveForm,
    TabletopForm,
    run_request,
    tabletop_files,
)
from breachbook.modes import Mode
from breachbook.settings import Settings
from tests.conftest import ROOT

NOW = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    incidents = tmp_path / "incidents"
    incidents.mkdir()
    (incidents / "alert.yaml").write_bytes(
        (ROOT / "tests" / "data" / "incidents" / "valid" / "alert.yaml").read_bytes()
    )
    return Settings(home=tmp_path / "home", incidents_dir=incidents)


def test_an_incident_named_on_the_form_is_the_runs_incident(settings: Settings) -> None:
    request = run_request(DrillForm(incident="alert"), Mode.DRILL, settings, "r1")
    assert request.incident_file == settings.incidents_dir / "alert.yaml"  # type: ignore[operator]
    assert request.load_incident().id == "inc-2026-002" and request.run_id == "r1"
    assert request.playbook_file == ROOT / "playbooks" / "customer-data-breach.yaml"


def test_an_incident_filled_in_becomes_the_runs_incident_dated_now(settings: Settings) -> None:
    form = LiveForm(
        incident_fields=IncidentFields(
            id="inc-form-7", title="Export seen", hosts=["db-1"], source_addresses=["203.0.113.9"]
        ),
        confirm_incident_id="inc-form-7",
    )
    request = run_request(form, Mode.LIVE, settings, None, now=NOW)
    incident = request.load_incident()
    assert (incident.id, incident.hosts, incident.discovered_at) == ("inc-form-7", ["db-1"], NOW)
    assert request.confirm_incident_id == "inc-form-7" and request.incident_file is None


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (DrillForm(incident="gone"), "incident: no 'gone' in "),
        (DrillForm(playbook="nope", incident="alert"), "playbook: no 'nope' in "),
        (DrillForm(), "incident: pick an incident file, or fill in incident_fields"),
        (
            DrillForm(incident_fields=IncidentFields(id="inc-1", title="x")),
            "incident_fields: title: String should have at least 3 characters",
        ),
        (
            DrillForm(
                incident_fields=IncidentFields(
                    id="inc-1", title="Export", source_addresses=["not-an-address"]
                )
            ),
            "incident_fields: source_addresses.0",
        ),
    ],
)
def test_a_form_that_cannot_start_a_run_is_refused_in_one_line_naming_the_field(
    settings: Settings, form: DrillForm, message: str
) -> None:
    with pytest.raises(FormError) as refused:
        run_request(form, Mode.DRILL, settings, None, now=NOW)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_the_form_offers_what_is_there_and_never_the_mode(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BREACHBOOK_INCIDENTS_DIR", str(settings.incidents_dir))
    schema = LiveForm.model_json_schema()
    properties = schema["properties"]
    assert properties["incident"]["enum"] == [FILL_IN, "alert"]
    assert properties["playbook"]["enum"] == ["customer-data-breach"]
    assert "mode" not in properties and "mode" not in str(schema["$defs"])
    assert properties["incident"]["default"] == FILL_IN


def test_the_settings_file_is_read_under_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "breachbook.yaml"
    config.write_text("receiver_port: 9000\nalert_replay_seconds: 60\n")
    monkeypatch.setenv("BREACHBOOK_CONFIG", str(config))
    monkeypatch.setenv("BREACHBOOK_RECEIVER_PORT", "9100")
    settings = Settings()
    assert (settings.receiver_port, settings.alert_replay_seconds) == (9100, 60)
    config.write_text("receiver_prot: 9000\n")
    with pytest.raises(UnknownSetting, match=r"breachbook.yaml: unknown setting receiver_prot;"):
        Settings()
    monkeypatch.setenv("BREACHBOOK_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(BreachbookError, match="BREACHBOOK_CONFIG names no file"):
        Settings()


def _header(schema: dict[str, Any], name: str) -> str:
    """The header the Prefect UI draws for a parameter (prefect-ui-library's
    useSchemaProperty): its title, else its definition's, then "(Optional)" unless required."""
    field = schema["properties"][name]
    definition = schema["definitions"][field["$ref"].rsplit("/", 1)[1]]
    title = field.get("title", definition.get("title", ""))
    return title if name in schema.get("required", []) else f"{title} (Optional)"


@pytest.mark.parametrize(
    ("function", "parameter", "header"),
    [("drill", "drill", "Drill"), ("live_response", "response", "LIVE response")],
)
def test_the_ui_form_is_headed_by_its_title_and_empty_dates_are_empty_not_none(
    function: str, parameter: str, header: str
) -> None:
    from flows import response

    schema = getattr(response, function).parameters.model_dump_for_openapi()
    assert _header(schema, parameter) == header
    for date in ("started_at", "discovered_at"):
        field = schema["definitions"]["IncidentFields"]["properties"][date]
        # No default: the UI would take null for the "None" choice of the anyOf and show
        # 'Property is type "None"'; absent, it shows the first choice, an empty date.
        assert "default" not in field and field["anyOf"][0]["format"] == "date-time"
    # What the deployment gives as the form ({}), and a form with the dates left out,
    # still starts a run with the dates at the run's start.
    form = DrillForm.model_validate({"incident_fields": {"id": "inc-9", "title": "Export"}})
    assert form.incident_fields.incident(NOW).started_at == NOW
    assert DrillForm.model_validate({}) == DrillForm()


def test_serve_offers_the_tabletop_with_scenarios_and_players_files_by_name(
    tabletop_content: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.utilities.callables import parameter_schema

    from breachbook.cli import _load_flow_module
    from breachbook.serve import TABLETOP_FLOWS, served_deployments

    monkeypatch.setenv("BREACHBOOK_CONTENT_DIR", str(tabletop_content))
    deployments = {d.name: d for d in asyncio.run(served_deployments(_load_flow_module))}
    assert set(deployments) == {
        "drill",
        "demo-drill",
        "live-response",
        "alert-drill",
        "alert-live",
        "tabletop",
    }
    tabletop = deployments["tabletop"]
    assert tabletop.flow_name == "breachbook-tabletop"
    assert str(tabletop.entrypoint).endswith("tabletop.py:tabletop_exercise")
    # the schema the deployment is created with (Prefect's own function, as serve calls it)
    served = _load_flow_module(TABLETOP_FLOWS).tabletop_exercise
    schema = parameter_schema(served).model_dump(exclude_unset=True)
    assert list(schema["properties"]) == ["exercise"]
    assert _header(schema, "exercise") == "Tabletop exercise"
    form = schema["definitions"]["TabletopForm"]["properties"]
    assert form["scenario"]["enum"] == ["harbour"]
    assert form["players"]["enum"] == [DECIDE_IN_FORM, "good-team"]
    assert "mode" not in str(schema)


def test_a_tabletop_form_names_its_files_or_is_refused_naming_the_field(
    tabletop_content: Path,
) -> None:
    settings = Settings(content_dir=tabletop_content)
    scenarios = tabletop_content / "scenarios"
    assert tabletop_files(TabletopForm(scenario="harbour"), settings) == (
        scenarios / "harbour.yaml",
        None,
    )
    picked = TabletopForm(scenario="harbour", players="good-team")
    assert tabletop_files(picked, settings)[1] == scenarios / "good-team.yaml"
    for form, message in [
        (TabletopForm(scenario="gone"), "scenario: no 'gone' in "),
        (TabletopForm(scenario="harbour", players="nobody"), "players: no 'nobody' in "),
    ]:
        with pytest.raises(FormError) as refused:
            tabletop_files(form, settings)
        assert str(refused.value).startswith(message)
