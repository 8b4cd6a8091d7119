"""Every file breachbook reads as input (playbook, incident, rules, templates, labels) is read
here, bounded and checked before any work starts.

A file's size is checked before it is read (and no more than its limit is ever read), its
bytes must be UTF-8 text without NUL bytes, and its YAML may hold no anchors or aliases (no
input needs them, and they are how a 1.5 KB file expands to gigabytes), no more than
MAX_YAML_DEPTH levels of nesting and no more than MAX_YAML_NODES nodes. Nesting is counted on
the event stream as it is parsed, so a file nested thousands deep stops at the first level
too many instead of exhausting Python's recursion. Each refusal is one line naming the file,
the limit and, where there is one, the line.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    NodeEvent,
)
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from breachbook.errors import BreachbookError

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Kind:
    """A kind of input file and the most bytes one may have."""

    name: str
    max_bytes: int

    @property
    def a(self) -> str:
        return f"{'an' if self.name[0] in 'aeiou' else 'a'} {self.name}"


PLAYBOOK = Kind("playbook", 1 * MIB)
"""The reference playbook is 5 KB; 1 MB is two hundred times that. Parsing a file of this
size takes PyYAML (pure Python) up to about a second."""
INCIDENT = Kind("incident file", 1 * MIB)
"""The demo incident with six translations is 8 KB; its texts are bounded field by field too."""
RULES = Kind("rules file", 1 * MIB)
"""rules/obligations.yaml is 5 KB for nine laws."""
DATASOURCE = Kind("data-source file", 1 * MIB)
"""The demo world's mapping is 2 KB; a schema of a thousand mapped columns is about 40 KB."""
TEMPLATE = Kind("template", 256 * KIB)
"""The longest template is about 1 KB; a letter is read by a person."""
LABELS = Kind("category labels file", 256 * KIB)
"""templates/letters/category-labels.yaml is 3 KB for seven languages."""
LETTER_DATA = Kind("letter data file", 256 * KIB)
"""templates/letters/{advice,greetings,claims,credit-bureaus}.yaml; advice.yaml is 30 KB."""

MAX_YAML_DEPTH = 50
"""Nesting of mappings and sequences; the shipped playbook and rules nest 6 deep, and a step
listing tables with their columns under `with:` 9."""
MAX_YAML_NODES = 20_000
"""Scalars, mappings and sequences in one document; the reference playbook has 285, the
rules 308. Bounds the time and memory of parsing: each node with its marks is about half a
kilobyte in PyYAML, and a 1 MB flat list of 500,000 would take 300 MB and 10 s."""


class InputError(BreachbookError):
    """An input file is unreadable, too large, not UTF-8 text, or YAML breachbook refuses."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


def read_text(path: Path, kind: Kind) -> str:
    """The file's text: its size checked before reading and never more than the limit read."""
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > kind.max_bytes:
                raise _too_large(str(path), size, kind)
            data = stream.read(kind.max_bytes + 1)
    except OSError as exc:
        raise InputError(str(path), f"cannot read {kind.a} ({exc.strerror})") from None
    if len(data) > kind.max_bytes:  # grew since, or a pipe or device that has no size
        raise _too_large(str(path), None, kind)
    return decode(data, str(path))


def decode(data: bytes, source: str) -> str:
    """UTF-8 text, or one line saying where it is not: binary (a NUL byte) or another encoding."""
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputError(source, f"not a text file (a NUL byte on line {line})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        raise InputError(source, f"not UTF-8 text (byte 0x{byte:02x} on line {line})") from None


def check_text(text: str, source: str, kind: Kind) -> str:
    """The same limits for a document given as text (the demo incident, a flow parameter)."""
    if len(text) > kind.max_bytes:  # every character is at least one byte
        raise _too_large(source, None, kind)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(source, "not UTF-8 text (an unpaired surrogate)") from None
    if len(data) > kind.max_bytes:
        raise _too_large(source, len(data), kind)
    return decode(data, source)


PARSED_KEPT = 16
"""Documents whose parse is kept (the latest used): a run reads its playbook, rules,
incident and label files again at every resume, and a tabletop exercise resumes its run at
every round (PyYAML in pure Python takes about 0.1 s for the rules)."""
PARSED_MAX_BYTES = 64 * KIB
"""Only documents up to this size are kept (the shipped ones are at most 30 KB), so what is
kept stays a few megabytes whatever the inputs."""
_PARSED: OrderedDict[tuple[str, str], tuple[Any, yaml.Node | None]] = OrderedDict()
_PARSED_LOCK = threading.Lock()


def parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The document's value and its node tree (for the line of a path); an empty document is
    (None, None). The same text from the same source is parsed once: each caller gets its
    own copy of the value (the node tree is only read)."""
    if len(text) > PARSED_MAX_BYTES:
        return _parse_yaml(text, source)
    key = (source, text)
    with _PARSED_LOCK:
        kept = _PARSED.get(key)
        if kept is not None:
            _PARSED.move_to_end(key)
    if kept is None:
        kept = _parse_yaml(text, source)
        with _PARSED_LOCK:
            _PARSED[key] = kept
            while len(_PARSED) > PARSED_KEPT:
                _PARSED.popitem(last=False)
    return copy.deepcopy(kept[0]), kept[1]


def _parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        value = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise InputError(source, _yaml_problem(exc)) from None
    finally:
        loader.dispose()
    return value, node


T = TypeVar("T")
REMEMBERED_FILES = 64
"""Files one reader remembers (playbooks, rule books, data-source files): far more than a
deployment has."""


def while_unchanged(kind: Kind, read: Callable[[Path], T]) -> Callable[[Path], T]:
    """`read`, remembered per file until the file's bytes change; what it returns must not
    be changed by callers (frozen models).

    For the alert receiver, a long-lived process that reads the same playbook, rule book and
    data-source file for every incident it contains: parsing them (YAML in pure Python,
    within the limits above) was most of the time from an alert to its first containment
    action (bench/alert_latency.py). The file is hashed on every call (its modification time
    can stay the same across two quick edits), before and after `read`, and the result kept
    only when both agree. A file that cannot be read, is larger than its kind allows, or that
    `read` refuses, is not remembered, so its error is raised on every call."""
    remembered: dict[tuple[Path, bytes], T] = {}
    lock = threading.Lock()

    def digest(path: Path) -> bytes | None:
        try:
            with path.open("rb") as stream:
                data = stream.read(kind.max_bytes + 1)
        except OSError:
            return None
        return hashlib.sha256(data).digest() if len(data) <= kind.max_bytes else None

    @functools.wraps(read)
    def reading(path: Path) -> T:
        before = digest(path)
        with lock:
            if before is not None and (path, before) in remembered:
                return remembered[(path, before)]
        value = read(path)
        if before is not None and digest(path) == before:
            with lock:
                remembered[(path, before)] = value
                while len(remembered) > REMEMBERED_FILES:
                    del remembered[next(iter(remembered))]
        return value

    return reading


def load_yaml(text: str, source: str) -> Any:
    """The document's value, parsed within the limits above."""
    return parse_yaml(text, source)[0]


def read_yaml(path: Path, kind: Kind) -> Any:
    """A YAML file read and parsed within its limits, e.g. `read_yaml(path, LABELS)`; raises
    InputError, one line naming the file."""
    return load_yaml(read_text(path, kind), str(path))


def _too_large(source: str, size: int | None, kind: Kind) -> InputError:
    """Names the size where it is known without reading further."""
    if size is None:
        return InputError(source, f"more than the {kind.max_bytes:,} bytes allowed for {kind.a}")
    return InputError(
        source, f"{size:,} bytes, more than the {kind.max_bytes:,} allowed for {kind.a}"
    )


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, event: Event) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = event.start_mark


class _BoundedConstructor(SafeConstructor):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # a date like 0000-01-01, a 5,000-digit int
            raise ConstructorError(
                None, None, f"cannot read this value ({exc})", node.start_mark
            ) from None


class _BoundedLoader(Reader, Scanner, Parser, Composer, _BoundedConstructor, Resolver):
    """SafeLoader that refuses anchors and aliases and counts depth and nodes per event, so
    nothing is composed past a limit."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _BoundedConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._nodes = 0

    def get_event(self) -> Event:
        event: Event = super().get_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        if isinstance(event, AliasEvent) or (
            isinstance(event, NodeEvent) and event.anchor is not None
        ):
            raise _Refused("YAML anchors and aliases are not allowed", event)
        if isinstance(event, NodeEvent):
            self._nodes += 1
            if self._nodes > MAX_YAML_NODES:
                raise _Refused(f"more than {MAX_YAML_NODES:,} YAML nodes", event)
        if isinstance(event, CollectionStartEvent):
            self._depth += 1
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(f"YAML nested more than {MAX_YAML_DEPTH} deep", event)
        elif isinstance(event, CollectionEndEvent):
            self._depth -= 1
        return event


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    if isinstance(exc, _Refused):
        return f"{exc.problem}{where}"
    problem = getattr(exc, "problem", None) or "syntax error"
    return f"not valid YAML{where}: {problem}"
