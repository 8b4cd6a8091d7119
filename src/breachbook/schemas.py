"""The JSON Schemas committed beside the files people edit, generated from the models so an
editor's completion and checks can never drift from what breachbook accepts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from breachbook.datasource import json_schema as datasource_schema
from breachbook.models import Incident
from breachbook.playbook import json_schema as playbook_schema
from breachbook.tabletop.scenario import players_schema, scenario_schema


def incident_schema() -> dict[str, Any]:
    schema = Incident.model_json_schema()
    schema["title"] = "breachbook incident"
    return schema


COMMITTED: dict[str, Callable[[], dict[str, Any]]] = {
    "playbooks/playbook.schema.json": playbook_schema,
    "playbooks/incident.schema.json": incident_schema,
    "playbooks/datasource.schema.json": datasource_schema,
    "scenarios/scenario.schema.json": scenario_schema,
    "scenarios/players.schema.json": players_schema,
}
"""Path in the checkout -> the function that makes the schema committed there."""


def schema_texts() -> dict[str, str]:
    return {
        path: json.dumps(make(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for path, make in COMMITTED.items()
    }
