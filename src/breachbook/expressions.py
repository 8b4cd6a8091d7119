"""Conditions and argument values in a playbook may refer to the incident.

They are jinja2 expressions evaluated in an immutable sandbox with StrictUndefined, so a
typo in a field name is an error, not an empty string, and a playbook cannot call code.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from breachbook.errors import BreachbookError

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_WHOLE = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


class ExpressionError(BreachbookError):
    """A condition or argument expression is malformed or refers to an unknown field."""


def check_expression(expression: str) -> None:
    try:
        _ENV.compile_expression(expression)
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {expression!r}: {exc.message}") from None


def check_value_template(value: Any) -> None:
    """Syntax-check every templated string inside an argument value."""
    if isinstance(value, str) and "{{" in value:
        whole = _WHOLE.match(value)
        if whole and "{{" not in whole.group(1):
            check_expression(whole.group(1))
        else:
            try:
                _ENV.parse(value)
            except TemplateError as exc:
                raise ExpressionError(f"invalid template {value!r}: {exc.message}") from None
    elif isinstance(value, list):
        for item in value:
            check_value_template(item)
    elif isinstance(value, dict):
        for item in value.values():
            check_value_template(item)


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    try:
        return _ENV.compile_expression(expression, undefined_to_none=False)(**context)
    except TemplateError as exc:
        raise ExpressionError(f"cannot evaluate {expression!r}: {exc.message}") from None


def resolve(value: Any, context: dict[str, Any]) -> Any:
    """Resolve templated argument values; a string that is one expression keeps its type."""
    if isinstance(value, str) and "{{" in value:
        whole = _WHOLE.match(value)
        if whole and "{{" not in whole.group(1):
            return evaluate(whole.group(1), context)
        try:
            return _ENV.from_string(value).render(**context)
        except TemplateError as exc:
            raise ExpressionError(f"cannot render {value!r}: {exc.message}") from None
    if isinstance(value, list):
        return [resolve(item, context) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item, context) for key, item in value.items()}
    return value
