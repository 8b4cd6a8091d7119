"""Rendering letters, notices and statements: jinja2 in a sandbox with StrictUndefined.

A template that names a field its context lacks fails with the template and field named,
before anything is sent. Customer data is only ever a value in the context, never template
source, so a hostile name is printed as written and cannot run. Each template file is read
through breachbook.inputs: at most TEMPLATE.max_bytes of UTF-8 text.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    UndefinedError,
    select_autoescape,
)
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment

from breachbook.errors import TemplateFieldError
from breachbook.inputs import TEMPLATE, InputError, read_text
from breachbook.models import base_language


class _BoundedLoader(FileSystemLoader):
    """jinja2's loader from one folder ('..' refused the same way), reading each file within
    the template limit when it is loaded."""

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = Path(self.searchpath[0]).joinpath(*split_template_path(template))
        if not path.is_file():
            raise TemplateNotFound(template)
        try:
            text = read_text(path, TEMPLATE)
        except InputError as exc:
            raise TemplateFieldError(str(exc)) from None

        def uptodate() -> bool:
            """The file still holds this text (an mtime can stay the same across a quick
            rewrite; environments are shared, so a stale template would outlive its run)."""
            try:
                return read_text(path, TEMPLATE) == text
            except (OSError, InputError):
                return False

        return text, str(path), uptodate


@lru_cache(maxsize=16)
def _environments(templates_dir: Path) -> tuple[Environment, Environment]:
    """The plain and the escaping environment of one templates folder, shared by every
    Renderer of it in the process: jinja2 keeps each compiled template and compiles it again
    only when its file's text changes, so a run (or each round of a tabletop exercise)
    does not compile every template anew."""
    plain = ImmutableSandboxedEnvironment(
        loader=_BoundedLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    escaping = ImmutableSandboxedEnvironment(
        loader=plain.loader,
        undefined=StrictUndefined,
        autoescape=True,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return plain, escaping


def _render(template: Template, under: dict[str, Any], context: dict[str, Any]) -> str:
    """`template.render(context)` with the template's globals (`under`) read once per template:
    jinja2's own render copies the context twice, once through the globals' ChainMap, which
    costs a letter a tenth of its render. The sandbox and autoescape are in the compiled
    template and the environment, and apply unchanged."""
    environment = template.environment
    try:
        ctx = template.new_context({**under, **context}, shared=True)
        return environment.concat(template.root_render_func(ctx))
    except Exception:
        environment.handle_exception()


class Renderer:
    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self._env, self._escaping = _environments(templates_dir)
        self._cache: dict[str, Template] = {}
        self._escaped: dict[str, Template] = {}
        self._globals: dict[Template, dict[str, Any]] = {}
        """A cached template -> its globals as a plain dict (see `_render`)."""

    def _globals_of(self, template: Template) -> dict[str, Any]:
        under = self._globals.get(template)
        if under is None:
            under = self._globals[template] = dict(template.globals)
        return under

    def exists(self, name: str) -> bool:
        return (self.templates_dir / name).is_file()

    def template(self, name: str) -> Template:
        cached = self._cache.get(name)
        if cached is None:
            try:
                cached = self._env.get_template(name)
            except TemplateNotFound:
                raise TemplateFieldError(
                    f"{self.templates_dir / name}: template not found"
                ) from None
            except TemplateError as exc:
                raise TemplateFieldError(f"{self.templates_dir / name}: {exc.message}") from None
            self._cache[name] = cached
        return cached

    def render(self, name: str, context: dict[str, Any]) -> str:
        """Render or raise TemplateFieldError naming the template and the missing field."""
        try:
            template = self._cache.get(name) or self.template(name)
            return _render(template, self._globals_of(template), context)
        except UndefinedError as exc:
            raise TemplateFieldError(
                f"{self.templates_dir / name}: field {exc.message} in the letter context"
            ) from None
        except TemplateError as exc:
            raise TemplateFieldError(f"{self.templates_dir / name}: {exc.message}") from None

    def render_escaped(self, name: str, context: dict[str, Any]) -> str:
        """The same template and context with every value HTML-escaped (autoescape on), for
        the HTML part of a letter: a customer's value is shown as text, never read as markup.
        The template's own words are the organisation's and are taken as written."""
        template = self._escaped.get(name)
        try:
            if template is None:
                template = self._escaped[name] = self._escaping.get_template(name)
            return _render(template, self._globals_of(template), context)
        except UndefinedError as exc:
            raise TemplateFieldError(
                f"{self.templates_dir / name}: field {exc.message} in the letter context"
            ) from None
        except TemplateError as exc:
            raise TemplateFieldError(f"{self.templates_dir / name}: {exc.message}") from None

    def pick_locale(self, folder: str, locale: str, default_locale: str) -> str:
        """The template for a locale: exact ('de-DE'), then language ('de'), then the default."""
        for candidate in (locale, base_language(locale), default_locale):
            name = f"{folder}/{candidate}.txt.j2"
            if self.exists(name):
                return name
        raise TemplateFieldError(
            f"{self.templates_dir / folder}: no template for locale {locale!r} "
            f"nor default {default_locale!r}"
        )
