"""Hostile input is refused before any work starts, in one line, in well under a second and
without holding more than a little memory: alias bombs, deep nesting, binary and non-UTF-8
files, files far over their limit, texts no letter should quote, impossible dates and
playbook arguments the run would refuse."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from breachbook.demo import demo_incident_yaml
from breachbook.errors import IncidentFileError, PlaybookError, TemplateFieldError
from breachbook.inputs import (
    INCIDENT,
    LABELS,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    PLAYBOOK,
    TEMPLATE,
    InputError,
    load_yaml,
    read_yaml,
)
from breachbook.models import Incident
from breachbook.playbook import load_playbook
from breachbook.rules import RuleBook, RulesError
from breachbook.templates import Renderer
from tests.conftest import ROOT, T0

DATA = Path(__file__).parents[1] / "data"
MINIMAL_INCIDENT = DATA / "incidents" / "valid" / "minimal.yaml"
MINIMAL_PLAYBOOK = DATA / "playbooks" / "valid" / "minimal.yaml"
HUGE = 50 * 1024 * 1024
MAX_SECONDS = 10.0
"""A guard against unbounded work, not a speed target (an alias bomb took 132 s before the
bounds; refusals take milliseconds, and -s prints each one's time): loose enough that a
loaded CI machine never fails it, tight enough that unbounded parsing always does."""
MAX_GROWTH_MB = 30
"""What refusing one hostile file may add to the process's memory: the largest file is 50 MB,
so reading any of them whole fails this, while the modules imported beforehand (which grow as
the product does) are not counted."""


# --- each refusal measured in a process of its own making: its time and peak memory -------

CHILD = """
import json, resource, sys, time
from pathlib import Path
import breachbook.actions  # imported before timing: the refusal is measured, not the imports
from breachbook.errors import BreachbookError
from breachbook.models import Incident
from breachbook.playbook import load_playbook
from breachbook.rules import RuleBook
from breachbook.templates import Renderer

STATUS, CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_mb():
    # VmHWM: this process's peak since exec (or since the last reset below). ru_maxrss, the
    # fallback, also counts the pytest process this one was forked from: an upper bound.
    if STATUS.exists():
        line = next(l for l in STATUS.read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak():
    # Linux: "5" resets VmHWM to the current size, so each case gets its own peak; where it
    # cannot, the peaks only grow and each is an upper bound of the case's own.
    try:
        CLEAR.write_text("5")
    except OSError:
        pass


templates = Path(sys.argv[1])
results = []
for kind, name in json.loads(sys.stdin.read()):
    path = Path(name)
    load = {
        "playbook": lambda: load_playbook(path, templates),
        "incident": lambda: Incident.from_file(path),
        "rules": lambda: RuleBook.load(path),
        "template": lambda: Renderer(path.parent).template(path.name),
    }[kind]
    reset_peak()
    before = peak_mb()
    start = time.perf_counter()
    try:
        load()
        error = None
    except BreachbookError as exc:
        error = str(exc)
    except Exception as exc:  # a raw crash is what the protections exist to prevent
        error = f"crashed: {type(exc).__name__}"
    seconds = time.perf_counter() - start
    results.append({"error": error, "seconds": seconds, "peak_mb": peak_mb(), "before_mb": before})
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Hostile:
    name: str
    kind: str
    expected: str


COMMITTED = [
    Hostile("playbooks/invalid/alias-bomb.yaml", "playbook", "anchors and aliases"),
    Hostile("playbooks/invalid/deep-nesting.yaml", "playbook", "nested more than 50 deep"),
    Hostile("playbooks/invalid/binary.yaml", "playbook", "not a text file"),
    Hostile("playbooks/invalid/not-utf8.yaml", "playbook", "not UTF-8 text"),
    Hostile("playbooks/invalid/literal-bad-role.yaml", "playbook", "with.role"),
    Hostile("playbooks/invalid/literal-bad-address.yaml", "playbook", "with.addresses"),
    Hostile("incidents/invalid/alias-bomb.yaml", "incident", "anchors and aliases"),
    Hostile("incidents/invalid/deep-nesting.yaml", "incident", "nested more than 50 deep"),
    Hostile("incidents/invalid/binary.yaml", "incident", "not a text file"),
    Hostile("incidents/invalid/oversize-description.yaml", "incident", "at most 10000"),
    Hostile("incidents/invalid/letter-texts-too-long.yaml", "incident", "one letter may quote"),
    Hostile("incidents/invalid/year-9999.yaml", "incident", "before 2100-01-01"),
    Hostile("incidents/invalid/year-1.yaml", "incident", "from 1990-01-01"),
]
GENERATED = [
    Hostile("playbook-50MB-sparse.yaml", "playbook", "52,428,800 bytes, more than the 1,048,576"),
    Hostile("playbook-50MB.yaml", "playbook", "52,428,800 bytes, more than the 1,048,576"),
    Hostile("incident-50MB-description.yaml", "incident", "52,428,800 bytes, more than"),
    Hostile("incident-not-utf8.yaml", "incident", "not UTF-8 text (byte 0xe9 on line 3)"),
    Hostile("incident-1MB-of-nodes.yaml", "incident", f"more than {MAX_YAML_NODES:,} YAML nodes"),
    Hostile("rules-50MB.yaml", "rules", "allowed for a rules file"),
    Hostile("rules-alias-bomb.yaml", "rules", "anchors and aliases"),
    Hostile("template-50MB.txt.j2", "template", "allowed for a template"),
]

CASES = COMMITTED + GENERATED


def write_generated(folder: Path) -> None:
    """The files too large (or too awkward) to commit, written afresh for each run."""
    (folder / "playbook-50MB-sparse.yaml").open("wb").truncate(HUGE)  # a size, no bytes
    playbook = MINIMAL_PLAYBOOK.read_bytes()
    (folder / "playbook-50MB.yaml").write_bytes(playbook + b"#" * (HUGE - len(playbook)))
    (folder / "incident-50MB-description.yaml").write_bytes(
        _padded_description(MINIMAL_INCIDENT.read_bytes())
    )
    (folder / "incident-not-utf8.yaml").write_bytes(
        MINIMAL_INCIDENT.read_bytes().replace(b"copied\n", b"copi\xe9\n", 1)
    )
    # Within the size limit, but 500,000 nodes would take PyYAML 10 s and 300 MB to compose.
    incident = MINIMAL_INCIDENT.read_text()
    hosts = (INCIDENT.max_bytes - len(incident) - len("hosts: []\n")) // 2
    (folder / "incident-1MB-of-nodes.yaml").write_text(
        incident + f"hosts: [{','.join(['h'] * hosts)}]\n"
    )
    rules = (ROOT / "rules" / "obligations.yaml").read_bytes()
    (folder / "rules-50MB.yaml").write_bytes(rules + b"#" * (HUGE - len(rules)))
    (folder / "rules-alias-bomb.yaml").write_text(
        'a: &a ["lol", "lol", "lol"]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n'
    )
    (folder / "template-50MB.txt.j2").write_bytes(b"Subject: x\n" + b"y" * (HUGE - 11))


def _padded_description(incident: bytes) -> bytes:
    """The minimal incident whose description is padded so the file is exactly HUGE bytes."""
    head, _, tail = incident.partition(b"description: ")
    _, _, rest = tail.partition(b"\n")
    filler = HUGE - len(head) - len(b"description: ") - len(b"\n") - len(rest)
    return head + b"description: " + b"x" * filler + b"\n" + rest


def refuse_in_a_process(files: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    """Load each file in one fresh interpreter; what it said, how long it took, and the
    process's peak memory while it did."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT / "templates")],
        input=json.dumps([(kind, str(path)) for kind, path in files]),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=60,  # a protection that breaks fails here rather than hanging the suite
    )
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("hostile")
    write_generated(folder)
    files = [(c.kind, DATA / c.name if c in COMMITTED else folder / c.name) for c in CASES]
    results = refuse_in_a_process(files)
    shutil.rmtree(folder)  # 200 MB that pytest would otherwise keep for three runs
    return {case.name: result for case, result in zip(CASES, results, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_hostile_file_is_refused_at_once_in_bounded_memory(
    case: Hostile, refusals: dict[str, dict[str, Any]]
) -> None:
    result = refusals[case.name]
    print(
        f"{case.name}: {result['seconds']:.4f} s, peak {result['peak_mb']:.1f} MB "
        f"(before {result['before_mb']:.1f} MB): {result['error']}"
    )
    assert isinstance(result["error"], str) and case.expected in result["error"], result
    assert "\n" not in result["error"]
    assert result["seconds"] < MAX_SECONDS, result
    assert result["peak_mb"] - result["before_mb"] < MAX_GROWTH_MB, result


# --- the limits themselves ----------------------------------------------------------------


def test_size_is_checked_before_reading_and_names_file_size_and_limit(tmp_path: Path) -> None:
    playbook = tmp_path / "playbook.yaml"
    with playbook.open("wb") as sparse:
        sparse.truncate(HUGE)
    with pytest.raises(PlaybookError) as caught:
        load_playbook(playbook, ROOT / "templates")
    assert str(caught.value) == (
        f"{playbook}: 52,428,800 bytes, more than the 1,048,576 allowed for a playbook"
    )


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_file_without_a_size_is_read_no_further_than_its_limit() -> None:
    # /dev/zero says it has 0 bytes and never ends: only limit + 1 bytes are ever read.
    with pytest.raises(IncidentFileError) as caught:
        Incident.from_file(Path("/dev/zero"))
    assert str(caught.value) == (
        "/dev/zero: more than the 1,048,576 bytes allowed for an incident file"
    )


def test_a_file_of_exactly_the_limit_is_read_and_one_byte_more_is_not(tmp_path: Path) -> None:
    text = MINIMAL_INCIDENT.read_text(encoding="utf-8")
    incident = tmp_path / "incident.yaml"
    padding = INCIDENT.max_bytes - len(text.encode()) - 2
    incident.write_text(text + "#" + "x" * padding + "\n", encoding="utf-8")
    assert incident.stat().st_size == INCIDENT.max_bytes
    assert Incident.from_file(incident).id == "inc-2026-001"
    incident.write_text(text + "#" + "x" * (padding + 1) + "\n", encoding="utf-8")
    with pytest.raises(IncidentFileError, match=r"1,048,577 bytes, more than the 1,048,576"):
        Incident.from_file(incident)


def test_an_incident_given_as_text_has_the_same_limits() -> None:
    assert Incident.from_text(demo_incident_yaml(T0), "demo").id
    with pytest.raises(IncidentFileError, match=r"^demo: more than the 1,048,576 bytes allowed"):
        Incident.from_text("#" * (HUGE), "demo")
    with pytest.raises(IncidentFileError, match=r"^demo: 1,048,577 bytes, more than the"):
        Incident.from_text("#" + "é" * (INCIDENT.max_bytes // 2), "demo")
    with pytest.raises(IncidentFileError, match=r"^demo: not a text file \(a NUL byte on line 2"):
        Incident.from_text("id: x\n\0", "demo")


def test_a_non_utf8_incident_names_the_byte_and_line(tmp_path: Path) -> None:
    incident = tmp_path / "incident.yaml"
    incident.write_bytes(MINIMAL_INCIDENT.read_bytes().replace(b"copied\n", b"copi\xe9\n", 1))
    with pytest.raises(IncidentFileError) as caught:
        Incident.from_file(incident)
    assert str(caught.value) == f"{incident}: not UTF-8 text (byte 0xe9 on line 3)"


def test_nesting_up_to_the_limit_is_read_and_one_more_level_is_not() -> None:
    deepest = "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH
    assert load_yaml(deepest, "f") is not None
    with pytest.raises(InputError, match=r"^f: YAML nested more than 50 deep \(line 1\)$"):
        load_yaml("[" + deepest + "]", "f")
    block = "".join(f"{' ' * level}k{level}:\n" for level in range(MAX_YAML_DEPTH + 1)) + "x"
    with pytest.raises(InputError, match=r"nested more than 50 deep \(line 51\)"):
        load_yaml(block, "f")


def test_no_anchors_even_unused_ones_and_no_merge_through_aliases() -> None:
    with pytest.raises(InputError, match=r"anchors and aliases are not allowed \(line 1\)"):
        load_yaml("a: &unused 1\n", "f")
    with pytest.raises(InputError, match=r"anchors and aliases are not allowed \(line 2\)"):
        load_yaml("a: 1\nb: {<<: *a}\n", "f")


def test_nodes_up_to_the_limit_are_read_and_one_more_is_not() -> None:
    items = MAX_YAML_NODES - 1  # the list itself is a node
    assert len(load_yaml(f"[{', '.join(['a'] * items)}]", "f")) == items
    with pytest.raises(InputError, match=r"more than 20,000 YAML nodes"):
        load_yaml(f"[{', '.join(['a'] * (items + 1))}]", "f")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a: 0000-01-01",
            "not valid YAML (line 1): cannot read this value (year 0 is out of range)",
        ),
        ("a: 2026-02-30", "not valid YAML (line 1): cannot read this value (day is out of range"),
        ("a: " + "1" * 5000, "not valid YAML (line 1): cannot read this value (Exceeds the limit"),
        ("a: !!python/object:os.system 1", "could not determine a constructor"),
        ("a: 1\n---\nb: 2\n", "not valid YAML (line 2): but found another document"),
    ],
)
def test_a_value_yaml_cannot_build_is_one_line_not_a_crash(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        load_yaml(text, "f")
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("when", "accepted"),
    [
        ("1989-12-31T23:59:59+00:00", False),
        ("1990-01-01T00:00:00+00:00", True),
        ("1990-01-01T00:30:00+01:00", False),  # 1989-12-31 23:30 UTC
        ("2099-12-31T23:59:59+00:00", True),
        ("2100-01-01T00:00:00+00:00", False),
        ("9999-12-31T23:59:59-05:00", False),
        ("0001-01-01T00:00:00+05:00", False),
    ],
)
def test_incident_times_lie_from_1990_to_before_2100(when: str, accepted: bool) -> None:
    text = MINIMAL_INCIDENT.read_text(encoding="utf-8")
    text = text.replace('"2026-11-20T08:00:00+00:00"', f'"{when}"')
    text = text.replace('"2026-11-27T16:30:00+00:00"', f'"{when}"')
    if accepted:
        assert Incident.from_text(text, "f").started_at.isoformat() == when
    else:
        with pytest.raises(IncidentFileError, match="must be from 1990-01-01 and before 2100"):
            Incident.from_text(text, "f")


def test_rules_are_read_within_their_limits(tmp_path: Path) -> None:
    rules = tmp_path / "obligations.yaml"
    rules.write_bytes((ROOT / "rules" / "obligations.yaml").read_bytes() + b"\0")
    with pytest.raises(RulesError, match=r"obligations.yaml: not a text file"):
        RuleBook.load(rules)
    rules.write_text("groups: &g {}\nrules: []\n")
    with pytest.raises(RulesError, match=r"anchors and aliases are not allowed \(line 1\)"):
        RuleBook.load(rules)


def test_a_template_over_its_limit_is_refused_when_loaded(tmp_path: Path) -> None:
    letter = tmp_path / "letters" / "big" / "en.txt.j2"
    letter.parent.mkdir(parents=True)
    letter.write_text("Subject: x\n" + "y" * TEMPLATE.max_bytes)
    renderer = Renderer(tmp_path)
    with pytest.raises(TemplateFieldError) as caught:
        renderer.template("letters/big/en.txt.j2")
    assert str(caught.value) == (
        f"{letter}: 262,155 bytes, more than the 262,144 allowed for a template"
    )
    (tmp_path / "nul.txt.j2").write_bytes(b"Subject: x\n\0")
    with pytest.raises(TemplateFieldError, match=r"nul.txt.j2: not a text file"):
        renderer.render("nul.txt.j2", {})
    with pytest.raises(TemplateFieldError, match="template not found"):
        renderer.template("../outside.txt.j2")


def test_every_shipped_template_is_within_the_limit() -> None:
    renderer = Renderer(ROOT / "templates")
    for path in (ROOT / "templates").rglob("*.j2"):
        assert renderer.template(str(path.relative_to(ROOT / "templates"))) is not None


def test_category_labels_can_be_read_within_their_limit(tmp_path: Path) -> None:
    # notify.py reads templates/letters/category-labels.yaml; read_yaml(path, LABELS) is its way.
    labels = read_yaml(ROOT / "templates" / "letters" / "category-labels.yaml", LABELS)
    assert "en" in labels
    hostile = tmp_path / "category-labels.yaml"
    hostile.write_text("en: &en {name: Name}\nde: *en\n")
    with pytest.raises(InputError, match=r"category-labels.yaml: YAML anchors and aliases"):
        read_yaml(hostile, LABELS)


def test_the_shipped_playbook_fits_its_limit_many_times_over() -> None:
    playbook = ROOT / "playbooks" / "customer-data-breach.yaml"
    assert playbook.stat().st_size * 50 < PLAYBOOK.max_bytes
    assert load_playbook(playbook, ROOT / "templates").name
