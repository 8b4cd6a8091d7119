"""Conditions and argument values in a playbook may refer to the incident.

They are jinja2 expressions evaluated in an immutable sandbox with StrictUndefined, so a
typo in a field name is an error, not an empty string, and a playbook cannot call code.
Validation finds that typo before a run: it walks jinja2's own syntax tree and follows
every `incident.a[0].b` chain through the pydantic models, so an unknown field never
crashes a run nor, in a condition, silently skips a step.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

from breachbook.errors import BreachbookError

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_WHOLE = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)

Scope = Mapping[str, type[BaseModel]]
"""The variables an expression sees, each by the model whose dump it is: {'incident': Incident}."""


class ExpressionError(BreachbookError):
    """A condition or argument expression is malformed or refers to an unknown field."""


def expression_problems(expression: str, scope: Scope) -> list[str]:
    """Why a condition cannot run: its syntax, or each name or field `scope` does not have."""
    try:
        _ENV.compile_expression(expression)
    except TemplateError as exc:
        return [f"invalid expression {expression!r}: {exc.message}"]
    parser = Parser(_ENV, expression, state="variable")
    template = nodes.Template([nodes.Output([parser.parse_expression()])])
    template.set_environment(_ENV)
    return _reference_problems(template, scope)


def value_problems(value: Any, scope: Scope) -> list[str]:
    """The problems of every templated string inside an argument value."""
    if isinstance(value, str) and "{{" in value:
        whole = _WHOLE.match(value)
        if whole and "{{" not in whole.group(1):
            return expression_problems(whole.group(1), scope)
        try:
            template = _ENV.parse(value)
        except TemplateError as exc:
            return [f"invalid template {value!r}: {exc.message}"]
        return _reference_problems(template, scope)
    if isinstance(value, list):
        return [problem for item in value for problem in value_problems(item, scope)]
    if isinstance(value, dict):
        return [problem for item in value.values() for problem in value_problems(item, scope)]
    return []


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """The expression's value; a field the incident lacks is an error, never a false value.

    jinja2 hands back an undefined value (rather than raising) when the whole expression is
    one missing field, so that case is turned into the error StrictUndefined would raise."""
    try:
        value = _ENV.compile_expression(expression, undefined_to_none=False)(**context)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        return value
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


@dataclass(frozen=True)
class _ListOf:
    item: type[BaseModel]


_Shape = type[BaseModel] | _ListOf
_Lookup = nodes.Getattr | nodes.Getitem


def _reference_problems(template: nodes.Template, scope: Scope) -> list[str]:
    """Unknown variables (not bound in the template itself), then unknown fields, in order."""
    free = meta.find_undeclared_variables(template)
    problems = [_unknown_name(name, scope) for name in sorted(free) if name not in scope]
    for name, chain in _chains(template):
        if name in scope and name in free:
            problem = _unknown_field(name, scope[name], chain)
            if problem is not None:
                problems.append(problem)
    return list(dict.fromkeys(problems))


def _unknown_name(name: str, scope: Scope) -> str:
    close = get_close_matches(name, list(scope), n=1)
    if close:
        return f"unknown name {name!r} (did you mean {close[0]!r}?)"
    return f"unknown name {name!r}; an expression sees only {', '.join(map(repr, scope))}"


def _chains(node: nodes.Node) -> Iterator[tuple[str, list[_Lookup]]]:
    """Every longest chain of lookups on a variable, `incident.a[0].b`, as (name, lookups)."""
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        chain: list[_Lookup] = []
        base: nodes.Node = node
        while isinstance(base, nodes.Getattr | nodes.Getitem):
            chain.append(base)
            base = base.node
        chain.reverse()
        if isinstance(base, nodes.Name):
            yield base.name, chain
        else:
            yield from _chains(base)
        for lookup in chain:
            if isinstance(lookup, nodes.Getitem):
                yield from _chains(lookup.arg)
    else:
        for child in node.iter_child_nodes():
            yield from _chains(child)


def _unknown_field(root: str, model: type[BaseModel], chain: Sequence[_Lookup]) -> str | None:
    """Follows the chain through models and lists of models; stops where the type is neither
    (a str, a dict, a list of str), or where a key or index is computed at run time."""
    shape: _Shape | None = model
    path = root
    for lookup in chain:
        if shape is None:
            return None
        key = _key(lookup)
        if key is None:
            if not isinstance(shape, _ListOf) or not isinstance(lookup, nodes.Getitem):
                return None
            if isinstance(lookup.arg, nodes.Slice):
                path += "[:]"
                continue
            index = lookup.arg.value if isinstance(lookup.arg, nodes.Const) else "..."
            path, shape = f"{path}[{index}]", shape.item
        elif isinstance(shape, _ListOf):
            if hasattr(list, key):
                return None
            fields = _fields(shape.item)
            guess = [key] if key in fields else get_close_matches(key, list(fields), n=1)
            return _unknown(root, f"{path}.{key}", f"{path}[0]", fields, guess)
        else:
            fields = _fields(shape)
            if key not in fields:
                guess = get_close_matches(key, list(fields), n=1)
                return _unknown(root, f"{path}.{key}", path, fields, guess)
            path, shape = f"{path}.{key}", fields[key]
    return None


def _unknown(
    root: str, path: str, parent: str, fields: Mapping[str, object], guess: list[str]
) -> str:
    if guess:
        return f"unknown {root} field {path!r} (did you mean {parent + '.' + guess[0]!r}?)"
    return f"unknown {root} field {path!r}; fields of {parent}: {', '.join(sorted(fields))}"


def _key(lookup: _Lookup) -> str | None:
    """The field name a lookup asks for: `.name` or `['name']`; None for an index."""
    if isinstance(lookup, nodes.Getattr):
        return lookup.attr
    if isinstance(lookup.arg, nodes.Const) and isinstance(lookup.arg.value, str):
        return lookup.arg.value
    return None


@cache
def _fields(model: type[BaseModel]) -> dict[str, _Shape | None]:
    """What `model.model_dump()` holds, by name, with the shape of each value."""
    fields = {name: _shape(info.annotation) for name, info in model.model_fields.items()}
    computed = model.model_computed_fields.items()
    return fields | {name: _shape(info.return_type) for name, info in computed}


def _shape(annotation: Any) -> _Shape | None:
    """A model, a list of a model, or None for any other type (not followed)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _shape(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _shape(options[0]) if len(options) == 1 else None
    if origin in (list, Sequence):
        args = get_args(annotation)
        item = _shape(args[0]) if args else None
        return _ListOf(item) if isinstance(item, type) else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
