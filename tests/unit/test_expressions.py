from __future__ import annotations

from pathlib import Path

import pytest

from breachbook.expressions import evaluate, expression_problems, value_problems
from breachbook.models import Incident
from breachbook.playbook import EXPRESSION_SCOPE

INCIDENT_FILE = Path(__file__).parents[1] / "data" / "engine" / "incident.yaml"

INCIDENT_FIELD = "unknown incident field"


@pytest.mark.parametrize(
    "expression",
    [
        "incident.database_role",
        "incident['database_role'] is defined",
        "incident.hosts | length > 0",
        "incident.exposed_tables[0].table",
        "incident.exposed_tables[1:][0].columns | first",
        "incident.exposed_tables | map(attribute='table') | list",
        "incident.translations.de.cause",
        "incident.title.upper()",
        "'}}' in incident.title",
        "incident",
    ],
)
def test_known_fields_filters_and_tests_are_accepted(expression: str) -> None:
    assert expression_problems(expression, EXPRESSION_SCOPE) == []


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        (
            "incident.databse_role",
            "unknown incident field 'incident.databse_role' (did you mean 'incident.database_role'?)",
        ),
        (
            "incident.databse_role is defined",
            "unknown incident field 'incident.databse_role' (did you mean 'incident.database_role'?)",
        ),
        (
            "incident.exposed_tables[0].tabel",
            "unknown incident field 'incident.exposed_tables[0].tabel' (did you mean 'incident.exposed_tables[0].table'?)",
        ),
        (
            "incident.exposed_tables.table",
            "unknown incident field 'incident.exposed_tables.table' (did you mean 'incident.exposed_tables[0].table'?)",
        ),
        (
            "incident['databse_role']",
            "unknown incident field 'incident.databse_role' (did you mean 'incident.database_role'?)",
        ),
        (
            "incident.exposed_tables[incident.hsts | length].table",
            "unknown incident field 'incident.hsts' (did you mean 'incident.hosts'?)",
        ),
        ("incidnet.hosts", "unknown name 'incidnet' (did you mean 'incident'?)"),
        ("customer.email", "unknown name 'customer'; an expression sees only 'incident'"),
    ],
)
def test_unknown_names_and_fields_are_refused(expression: str, problem: str) -> None:
    assert expression_problems(expression, EXPRESSION_SCOPE) == [problem]


def test_a_field_far_from_any_is_refused_with_the_fields_there_are() -> None:
    (problem,) = expression_problems("incident.severity", EXPRESSION_SCOPE)
    assert problem.startswith("unknown incident field 'incident.severity'; fields of incident: ")
    assert "database_role, description" in problem


def test_a_property_is_refused_because_expressions_see_the_dumped_fields() -> None:
    # Context.incident_view dumps the model: `awareness` is a property, not in the dump.
    (problem,) = expression_problems("incident.awareness", EXPRESSION_SCOPE)
    assert problem.startswith(f"{INCIDENT_FIELD} 'incident.awareness'")


def test_every_problem_of_an_expression_is_reported_once() -> None:
    problems = expression_problems(
        "incident.hsts and incident.hsts or incident.kyes", EXPRESSION_SCOPE
    )
    assert [p.split("'")[1] for p in problems] == ["incident.hsts", "incident.kyes"]


def test_syntax_errors_are_reported_before_references() -> None:
    assert expression_problems("incident.(", EXPRESSION_SCOPE) == [
        "invalid expression 'incident.(': expected name or number"
    ]


def test_argument_values_are_checked_inside_text_lists_and_mappings() -> None:
    value = {"a": ["lock {{ incident.databse_role }} now"], "b": "{{ incident.hosts }}"}
    assert value_problems(value, EXPRESSION_SCOPE) == [
        "unknown incident field 'incident.databse_role' (did you mean 'incident.database_role'?)"
    ]


def test_names_a_template_binds_itself_are_not_refused() -> None:
    loop = "{% for t in incident.exposed_tables %}{{ loop.index }} {{ t.table }}{% endfor %}"
    assert value_problems(loop, EXPRESSION_SCOPE) == []
    assert value_problems(loop + "{{ x }}", EXPRESSION_SCOPE) == [
        "unknown name 'x'; an expression sees only 'incident'"
    ]


def test_an_accepted_reference_evaluates_on_the_incident_view() -> None:
    incident = Incident.from_file(INCIDENT_FILE)
    view = {"incident": incident.model_dump(mode="json")}
    expression = "incident.exposed_tables[0].table"
    assert expression_problems(expression, EXPRESSION_SCOPE) == []
    assert evaluate(expression, view) == incident.exposed_tables[0].table
