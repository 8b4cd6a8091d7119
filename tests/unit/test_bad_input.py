"""Bad input stops the run with one clear line naming the file and field, and nothing left
looking complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.demo import DemoWorld
from breachbook.errors import (
    CustomerDataError,
    IncidentFileError,
    OutputFolderError,
    TemplateFieldError,
)
from breachbook.models import Incident
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import RunRequest
from breachbook.workspace import INCOMPLETE
from tests.conftest import ROOT

INCIDENTS = Path(__file__).parents[1] / "data" / "incidents"


@pytest.mark.parametrize(
    "path", sorted((INCIDENTS / "invalid").glob("*.yaml")), ids=lambda path: path.stem
)
def test_each_kind_of_invalid_incident_gets_one_line_naming_file_and_problem(path: Path) -> None:
    """tests/data/incidents/invalid/ holds one file per kind of error; its first line says
    the message it must get."""
    expected = path.read_text(encoding="utf-8").splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(IncidentFileError) as caught:
        Incident.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:") and expected in message, message
    assert "\n" not in message


def test_the_minimal_incident_the_invalid_ones_vary_is_valid() -> None:
    assert Incident.from_file(INCIDENTS / "valid" / "minimal.yaml").id == "inc-2026-001"


def drill(world: DemoWorld, settings: Settings, out: Path, incident: Path | None = None) -> None:
    execute(
        RunRequest(mode=Mode.DRILL, incident_file=incident or world.incident_file, out_dir=out),
        settings=settings,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("id: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "an incident file must be a mapping"),
        ("id: ok-id\n", "title: Field required"),
    ],
)
def test_malformed_incident_names_file_and_field(
    small_world: DemoWorld, demo_run_settings: Settings, tmp_path: Path, content: str, expected: str
) -> None:
    incident = tmp_path / "incident.yaml"
    incident.write_text(content)
    with pytest.raises(IncidentFileError) as caught:
        drill(small_world, demo_run_settings, tmp_path / "out", incident)
    assert str(incident) in str(caught.value) and expected in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_incident_with_a_wrong_field_value(
    small_world: DemoWorld, demo_run_settings: Settings, tmp_path: Path
) -> None:
    text = small_world.incident_file.read_text()
    assert "identifiable: directly" in text
    text = text.replace("identifiable: directly", "identifiable: catastrophic")
    incident = tmp_path / "incident.yaml"
    incident.write_text(text)
    with pytest.raises(
        IncidentFileError,
        match=r"incident.yaml: risk_assessment.identifiable: Input should be 'directly', "
        r"'with_effort' or 'hardly'",
    ):
        drill(small_world, demo_run_settings, tmp_path / "out", incident)


def test_unreadable_customer_database_names_the_file(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    broken = tmp_path / "customers.sqlite"
    broken.write_bytes(b"this is not a database" * 100)
    settings = Settings(home=tmp_path, customers_url=f"sqlite:///{broken}")
    with pytest.raises(CustomerDataError, match=rf"{broken}: cannot read"):
        drill(small_world, settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_customer_database_without_the_tables(small_world: DemoWorld, tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    import sqlite3

    sqlite3.connect(empty).close()
    settings = Settings(home=tmp_path, customers_url=f"sqlite:///{empty}")
    with pytest.raises(
        CustomerDataError,
        match=r"table\(s\) consignor_accounts, customers, favourites, orders, payment_cards, web_accounts missing \(mapped in the data source .*demo-datasource.yaml; BREACHBOOK_DATASOURCE names your own\)",
    ):
        drill(small_world, settings, tmp_path / "out")


def test_missing_template_field_stops_the_run_and_marks_it_incomplete(
    small_world: DemoWorld, demo_run_settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    for part in ("playbooks", "templates", "rules", "flows"):
        shutil.copytree(ROOT / part, root / part)
    letter = root / "templates" / "letters" / "us-ca" / "en-US.txt.j2"
    letter.write_text(letter.read_text().replace("{{ discovery_date }}", "{{ discovery_dat }}"))
    settings = demo_run_settings.model_copy(update={"content_dir": root})
    out = tmp_path / "out"
    with pytest.raises(TemplateFieldError) as caught:
        drill(small_world, settings, out)
    assert "us-ca/en-US.txt.j2: field 'discovery_dat' is undefined" in str(caught.value)
    assert not (out / "report.md").exists() and not (out / "plan.json").exists()
    assert "stopped before it finished" in (out / INCOMPLETE).read_text()
    assert "discovery_dat" in (out / INCOMPLETE).read_text()


def test_output_folder_of_something_else_is_refused(
    small_world: DemoWorld, demo_run_settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputFolderError, match="not empty and was not written by breachbook"):
        drill(small_world, demo_run_settings, out)
    assert (out / "thesis.tex").read_text() == "years of work"


def test_cli_reports_bad_input_in_one_line_before_starting_prefect(tmp_path: Path) -> None:
    incident = tmp_path / "alert.yaml"
    incident.write_text("id: x\n")
    result = CliRunner().invoke(
        app, ["drill", "--incident", str(incident), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert (
        "error:" in result.output and "alert.yaml: id: String should match pattern" in result.output
    )
    assert not (tmp_path / "o").exists()


def test_cli_refuses_another_runs_folder_before_starting_prefect(
    small_world: DemoWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / ".breachbook-run").write_text("abc123def456\nbreachbook drill run abc123def456\n")
    (out / "report.md").write_text("kept")
    monkeypatch.setenv("BREACHBOOK_CUSTOMERS_URL", f"sqlite:///{small_world.customers_db}")
    monkeypatch.setattr("breachbook.cli._run_flow", _prefect_must_not_start)
    result = CliRunner().invoke(
        app, ["drill", "--incident", str(small_world.incident_file), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "holds the documents of run abc123def456, which are kept" in result.output
    assert (out / "report.md").read_text() == "kept"


def _prefect_must_not_start(**parameters: object) -> Path:
    raise AssertionError("Prefect was started for an input that could be refused before")


def test_cli_live_response_refuses_without_confirmation(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["respond", "--incident", str(small_world.incident_file)])
    assert result.exit_code == 2
    assert "LIVE changes production systems: confirm by naming the incident id" in result.output


def test_a_second_drill_never_replaces_the_first(
    small_world: DemoWorld, demo_run_settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    drill(small_world, demo_run_settings, out)
    first = json.loads((out / "plan.json").read_text())["run_id"]
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    with pytest.raises(OutputFolderError, match=f"holds the documents of run {first}"):
        drill(small_world, demo_run_settings, out)
    assert json.loads((out / "plan.json").read_text())["run_id"] == first
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
