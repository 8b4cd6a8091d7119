"""The data-source file: one invalid example per kind of error, each with its one-line
message; the committed JSON Schema accepts what the model accepts; `breachbook validate`
takes a data-source file."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.datasource import (
    DEMO_DATASOURCE,
    complete_categories,
    load_datasource,
    resolve_exposure,
)
from breachbook.errors import DataSourceError
from breachbook.models import DataCategory, Incident
from breachbook.schemas import schema_texts
from tests.unit.test_playbook import expected_message

DATA = Path(__file__).parents[1] / "data" / "datasources"
INVALID = sorted((DATA / "invalid").glob("*.yaml"))
CLINIC = DATA / "valid" / "clinic.yaml"


def test_every_kind_of_error_has_an_example() -> None:
    assert len(INVALID) >= 20


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_datasource_reports_its_error_in_one_line(path: Path) -> None:
    with pytest.raises(DataSourceError) as caught:
        load_datasource(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected_message(path) in message
    assert "\n" not in message


def test_the_valid_examples_load() -> None:
    clinic = load_datasource(CLINIC)
    assert clinic.customers.identity()["given_name"] == "first_nm"
    demo = load_datasource(DEMO_DATASOURCE)
    assert demo.customers.category_of("tax_id") is DataCategory.GOVERNMENT_ID
    assert demo.customers.category_of("full_name") is DataCategory.NAME
    assert demo.customers.category_of("country") is None


def test_the_committed_schema_accepts_the_examples_and_refuses_unknown_keys() -> None:
    schema = json.loads(schema_texts()["playbooks/datasource.schema.json"])
    for path in (CLINIC, DEMO_DATASOURCE):
        jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), schema)
    raw = yaml.safe_load(CLINIC.read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError, match="'joins' was unexpected"):
        jsonschema.validate(raw | {"joins": []}, schema)
    raw["customers"]["categories"]["ssn"] = "social_security_number"
    with pytest.raises(jsonschema.ValidationError, match="is not one of"):
        jsonschema.validate(raw, schema)


def test_validate_command_takes_a_datasource_file() -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["validate", str(CLINIC)])
    assert good.exit_code == 0, good.output
    assert "valid data source (5 tables" in good.output
    bad = DATA / "invalid" / "join-to-undeclared-table.yaml"
    refused = runner.invoke(app, ["validate", str(bad)])
    assert refused.exit_code == 2
    assert "no table visit in this data source" in refused.output


def incident(**changes: object) -> Incident:
    data: dict[str, object] = {
        "id": "inc-clinic-1",
        "title": "Clinic records copied",
        "started_at": "2026-11-20T08:00:00+00:00",
        "discovered_at": "2026-11-27T16:30:00+00:00",
        "risk_assessment": {
            "override": {
                "level": "high",
                "by": "legal: test",
                "justification": "Diagnoses and contact details of patients were copied.",
            }
        },
    }
    data.update(changes)
    return Incident.model_validate(data)


def test_exposed_columns_give_the_incident_its_categories() -> None:
    clinic = load_datasource(CLINIC)
    about = incident(
        exposed_tables=[
            {"table": "patients", "columns": ["first_nm", "last_nm", "country_cd"]},
            {"table": "invoices", "columns": ["iban", "issued_at"]},
        ],
        data_categories=["email"],
    )
    completed = complete_categories(clinic, about, str(CLINIC))
    assert completed.data_categories == [
        DataCategory.NAME,
        DataCategory.EMAIL,  # stated by the incident: kept
        DataCategory.FINANCIAL_ACCOUNT,
    ]


def test_an_incident_without_tables_exposes_every_column_of_its_categories() -> None:
    clinic = load_datasource(CLINIC)
    parts = resolve_exposure(clinic, incident(data_categories=["medical"]), "clinic.yaml")
    assert {p.mapped.table: sorted(p.columns) for p in parts} == {
        "diagnoses": ["diagnosis", "icd_code"]
    }


@pytest.mark.parametrize(
    ("exposed", "message"),
    [
        (
            [{"table": "appointments", "columns": ["note"]}],
            "exposed_tables[0]: table appointments is not in the data source clinic.yaml",
        ),
        (
            [{"table": "diagnoses", "columns": ["diagnosis", "notes"]}],
            "exposed_tables[0]: column(s) notes of diagnoses are not in the data source",
        ),
        (
            [
                {
                    "table": "portal_logins",
                    "columns": ["pw_hash"],
                    "rows_from": "2026-11-01T00:00:00Z",
                }
            ],
            "a time window needs a time_column for portal_logins",
        ),
        (
            [
                {"table": "diagnoses", "columns": ["diagnosis"]},
                {"table": "diagnoses", "columns": ["icd_code"]},
            ],
            "exposed_tables[1]: table diagnoses is named twice",
        ),
    ],
)
def test_an_incident_naming_what_the_datasource_does_not_map_is_refused(
    exposed: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(DataSourceError) as caught:
        resolve_exposure(load_datasource(CLINIC), incident(exposed_tables=exposed), "clinic.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("incident inc-clinic-1: ")
