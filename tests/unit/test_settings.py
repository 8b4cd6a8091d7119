"""Settings: the content folders resolve in their documented order."""

from __future__ import annotations

from pathlib import Path

import pytest

from breachbook.errors import BreachbookError
from breachbook.settings import Settings, builtin_content, project_root

CHECKOUT = Path(__file__).resolve().parents[2]


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
