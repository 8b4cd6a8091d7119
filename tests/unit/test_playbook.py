from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.demo import demo_incident_yaml
from breachbook.errors import PlaybookError
from breachbook.playbook import load_playbook
from breachbook.schemas import schema_texts
from tests.conftest import ROOT, T0

DATA = Path(__file__).parents[1] / "data" / "playbooks"
INVALID = sorted((DATA / "invalid").glob("*.yaml"))
TEMPLATES = ROOT / "templates"


def expected_message(path: Path) -> str:
    # Bytes: an example of a file that is not UTF-8 still says its message in its first line.
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_reference_playbook_has_the_four_phases_in_order() -> None:
    playbook = load_playbook(ROOT / "playbooks" / "customer-data-breach.yaml", TEMPLATES)
    assert [phase.id for phase in playbook.phases] == [
        "contain",
        "preserve",
        "notify",
        "communicate",
    ]
    ordered = [step.id for _, step in playbook.ordered_steps()]
    assert ordered.index("snapshot-evidence") < ordered.index("quarantine-hosts")
    assert ordered.index("render-letters") < ordered.index("deliver-letters")


def test_reference_playbook_refers_only_to_fields_the_incident_has() -> None:
    # Its conditions and arguments name incident fields; validation follows each one.
    playbook = load_playbook(ROOT / "playbooks" / "customer-data-breach.yaml", TEMPLATES)
    assert any(step.when == "incident.database_role" for _, step in playbook.steps())


def test_every_kind_of_error_has_an_example() -> None:
    assert len(INVALID) >= 25


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_playbook_reports_its_error(path: Path) -> None:
    with pytest.raises(PlaybookError) as caught:
        load_playbook(path, TEMPLATES)
    expected = expected_message(path)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_validate_command_prints_every_problem_with_path_and_exits_nonzero() -> None:
    result = CliRunner().invoke(app, ["validate", str(DATA / "invalid" / "unknown-argument.yaml")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 2
    assert all("unknown-argument.yaml: phases[0].steps[0].with" in line for line in lines)


def test_validate_command_refuses_a_misspelt_incident_field_in_a_condition() -> None:
    # A condition on a field the incident lacks must never silently skip its step.
    path = DATA / "invalid" / "misspelt-incident-field-in-when.yaml"
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"{path}: {expected_message(path)}"]


def test_validate_command_refuses_a_literal_argument_the_run_would_refuse() -> None:
    path = DATA / "invalid" / "literal-bad-role.yaml"
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: {expected_message(path)}")


def test_only_arguments_without_expressions_are_checked_before_the_run(tmp_path: Path) -> None:
    # A value holding an expression is known only at run time (its literal items too); a value
    # without one is checked now, as the run would check it.
    text = (DATA / "valid" / "minimal.yaml").read_text(encoding="utf-8")
    playbook = tmp_path / "playbook.yaml"
    playbook.write_text(
        text.replace("action: database.lock_role", "action: network.block_addresses").replace(
            'role: "{{ incident.database_role }}"',
            'addresses: ["{{ incident.source_addresses[0] }}", "bad"]',
        ),
        encoding="utf-8",
    )
    assert load_playbook(playbook, TEMPLATES).phases[0].steps[0].args["addresses"][1] == "bad"
    playbook.write_text(text.replace('"{{ incident.database_role }}"', "[app]"), encoding="utf-8")
    with pytest.raises(PlaybookError) as caught:
        load_playbook(playbook, TEMPLATES)
    assert caught.value.problems == [
        "phases[0].steps[0].with.role (line 18): Input should be a valid string"
    ]


def test_validate_command_accepts_a_valid_playbook() -> None:
    result = CliRunner().invoke(app, ["validate", str(DATA / "valid" / "minimal.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid (1 phases, 2 steps)" in result.output


@pytest.mark.parametrize("relative", sorted(schema_texts()))
def test_committed_json_schemas_are_current(relative: str) -> None:
    committed = (ROOT / relative).read_text(encoding="utf-8")
    assert committed == schema_texts()[relative], f"run `breachbook schema` and commit {relative}"


def test_schema_check_names_a_stale_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for relative, text in schema_texts().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")
    stale = tmp_path / "playbooks" / "incident.schema.json"
    stale.write_text("{}\n", encoding="utf-8")
    monkeypatch.setenv("BREACHBOOK_CONTENT_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["schema", "--check"])
    assert result.exit_code == 1
    assert f"{stale} stale: run `breachbook schema`" in result.output


def test_the_incident_schema_accepts_the_demo_incident_and_refuses_unknown_keys() -> None:
    schema = json.loads(schema_texts()["playbooks/incident.schema.json"])
    assert schema["title"] == "breachbook incident"
    incident = yaml.safe_load(demo_incident_yaml(T0))
    jsonschema.validate(incident, schema)
    with pytest.raises(jsonschema.ValidationError, match="'severity' was unexpected"):
        jsonschema.validate(incident | {"severity": "high"}, schema)


def test_schema_lists_registered_actions() -> None:
    schema = json.loads(schema_texts()["playbooks/playbook.schema.json"])
    actions = schema["$defs"]["Step"]["properties"]["action"]["enum"]
    assert "database.lock_role" in actions and "letters.render" in actions
    assert schema["$defs"]["Step"]["additionalProperties"] is False


def test_a_playbook_changed_while_a_process_keeps_reading_it_is_read_again(tmp_path: Path) -> None:
    """The alert receiver reads the same playbook for every incident and keeps what it parsed
    while the file is unchanged: an edit (even one that keeps its size, within the same
    clock tick), a breakage, or a template removed is seen at the next read."""
    path = tmp_path / "playbook.yaml"
    text = (ROOT / "playbooks" / "customer-data-breach.yaml").read_text()
    path.write_text(text)
    assert "block-addresses" in [s.id for _, s in load_playbook(path, TEMPLATES).steps()]

    path.write_text(text.replace("id: block-addresses", "id: block-addressez"))
    assert "block-addressez" in [s.id for _, s in load_playbook(path, TEMPLATES).steps()]

    path.write_text(text.replace("phases:", "phasez:"))
    for _ in range(2):
        with pytest.raises(PlaybookError, match="phases"):
            load_playbook(path, TEMPLATES)

    path.write_text(text)
    load_playbook(path, TEMPLATES)
    templates = tmp_path / "templates-without-letters"
    templates.mkdir()
    with pytest.raises(PlaybookError, match=r"not found in .*templates-without-letters"):
        load_playbook(path, templates)
