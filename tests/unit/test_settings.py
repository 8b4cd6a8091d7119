"""Settings: a BREACHBOOK_* variable that names no setting stops everything, and every
setting the project mentions exists; the content folders resolve in their documented order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.errors import BreachbookError, UnknownSetting
from breachbook.settings import PREFIX, Settings, builtin_content, project_root

CHECKOUT = Path(__file__).resolve().parents[2]
SETTING_NAME = re.compile(r"BREACHBOOK_[A-Z_]+")
KNOWN = {PREFIX + name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize("name", ["BREACHBOOK_FOO", "BREACHBOOK_CUSTOMER_URL", "breachbook_outbx"])
def test_an_unknown_variable_is_refused_by_name(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "postgresql://user:hunter2@db/customers")
    with pytest.raises(UnknownSetting) as caught:
        Settings()
    message = str(caught.value)
    assert f"unknown setting {name} " in message
    assert all(known in message for known in KNOWN)
    assert "hunter2" not in message and "\n" not in message


def test_an_unknown_variable_stops_the_command_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BREACHBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BREACHBOOK_FOO", "hunter2")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["drill", "--demo", "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown setting BREACHBOOK_FOO ")
    assert "hunter2" not in result.output
    assert not out.exists() and not (tmp_path / "home").exists()


def _mentions() -> dict[str, str]:
    """Each BREACHBOOK_* name in the code, the flow, the deployments, the scripts and the README,
    with a file that mentions it."""
    files = [
        *(p for p in (CHECKOUT / "src" / "breachbook").rglob("*") if p.suffix in (".py", ".yaml")),
        *(CHECKOUT / "flows").rglob("*.py"),
        CHECKOUT / "prefect.yaml",
        CHECKOUT / "README.md",
        CHECKOUT / "scripts" / "check",
        CHECKOUT / ".ci" / "run",
    ]
    return {
        name: str(path.relative_to(CHECKOUT))
        for path in files
        for name in SETTING_NAME.findall(path.read_text(encoding="utf-8"))
    }


def test_every_setting_the_project_names_is_a_settings_field() -> None:
    mentions = _mentions()
    assert "BREACHBOOK_CUSTOMERS_URL" in mentions
    assert {name: where for name, where in mentions.items() if name not in KNOWN} == {}


def test_content_comes_from_the_content_dir_setting_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert project_root(Settings(content_dir=tmp_path)) == tmp_path.resolve()
    monkeypatch.setenv("BREACHBOOK_CONTENT_DIR", str(tmp_path))
    assert project_root() == tmp_path.resolve()
    monkeypatch.setenv("BREACHBOOK_CONTENT_DIR", str(tmp_path / "missing"))
    with pytest.raises(BreachbookError, match="BREACHBOOK_CONTENT_DIR is not a folder"):
        project_root()


def test_content_comes_from_the_checkout_when_running_from_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BREACHBOOK_CONTENT_DIR", raising=False)
    assert builtin_content() == CHECKOUT
    assert project_root() == CHECKOUT


def test_evidence_goes_to_one_store_not_two(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BREACHBOOK_EVIDENCE_DIR", str(tmp_path))
    monkeypatch.setenv("BREACHBOOK_EVIDENCE_BUCKET", "org-evidence")
    with pytest.raises(
        BreachbookError, match="BREACHBOOK_EVIDENCE_DIR or BREACHBOOK_EVIDENCE_BUCKET, not both"
    ):
        Settings()
