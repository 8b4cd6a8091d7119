"""Scenario and players files: the shipped ones validate, and each kind of mistake has an
example that must fail with its one-line message naming the file and the path in it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.schemas import schema_texts
from breachbook.tabletop.scenario import ScenarioError, load_players, load_scenario
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data" / "scenarios"
INVALID = sorted((DATA / "invalid").glob("*.yaml"))
SHIPPED = ROOT / "scenarios" / "antique-dealer-breach.yaml"


def expected_message(path: Path) -> str:
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_the_shipped_exercise_is_valid_and_has_about_thirty_injects() -> None:
    loaded = load_scenario(SHIPPED, ROOT)
    scenario = loaded.scenario
    assert 25 <= len(scenario.injects) <= 35
    assert scenario.duration.total_seconds() == 72 * 3600
    kinds = {inject.type for inject in scenario.injects}
    assert {"alert", "press-inquiry", "regulator-inquiry", "fault"} <= kinds
    assert any(inject.contingency for inject in scenario.injects)
    for players in ("demo-players.yaml", "late-players.yaml"):
        assert load_players(ROOT / "scenarios" / players, loaded)


def test_validate_accepts_scenarios() -> None:
    for path in (SHIPPED, DATA / "small.yaml"):
        result = CliRunner().invoke(app, ["validate", str(path)])
        assert result.exit_code == 0, result.output
        assert "valid scenario" in result.output


def test_the_committed_schemas_are_current_and_accept_the_shipped_files() -> None:
    texts = schema_texts()
    for name, example in (
        ("scenario.schema.json", SHIPPED),
        ("players.schema.json", ROOT / "scenarios" / "demo-players.yaml"),
    ):
        relative = f"scenarios/{name}"
        assert (ROOT / relative).read_text(encoding="utf-8") == texts[relative]
        schema = json.loads(texts[relative])
        document = yaml.safe_load(example.read_text(encoding="utf-8"))
        jsonschema.validate(json.loads(json.dumps(document, default=str)), schema)


def test_every_kind_of_error_has_an_example() -> None:
    assert len(INVALID) >= 20


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_scenario_reports_its_error(path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        if path.name.startswith("players-"):
            load_players(path, load_scenario(DATA / "small.yaml", ROOT))
        else:
            load_scenario(path, ROOT)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert expected_message(path) in message


def test_validate_names_the_problem_in_one_line() -> None:
    path = DATA / "invalid" / "unknown-role.yaml"
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "injects[2].to (line 61): unknown role 'ceo'" in result.output
