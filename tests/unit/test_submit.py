"""Which command lines go to a running `breachbook serve`: only what its forms can say, and
only when PREFECT_API_URL names a server; everything else stays in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.submit import Submission, submission

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    (tmp_path / "incidents").mkdir()
    (tmp_path / "incidents" / "leak.yaml").write_text("id: inc-1\n")
    return Settings(home=tmp_path, content_dir=ROOT)


def test_an_incident_of_the_incidents_folder_goes_to_the_served_drill(settings: Settings) -> None:
    incident = settings.home / "incidents" / "leak.yaml"
    assert submission(Mode.DRILL, settings, incident) == Submission(
        "drill", {"drill": {"playbook": "customer-data-breach", "incident": "leak"}}
    )
    live = submission(Mode.LIVE, settings, incident, confirm="inc-1")
    assert live == Submission(
        "live-response",
        {
            "response": {
                "playbook": "customer-data-breach",
                "incident": "leak",
                "confirm_incident_id": "inc-1",
            }
        },
    )
    assert submission(Mode.DRILL, settings, None, demo=True) == Submission("demo-drill", {})


def test_what_a_form_cannot_say_stays_in_process(settings: Settings, tmp_path: Path) -> None:
    incident = settings.home / "incidents" / "leak.yaml"
    elsewhere = tmp_path / "leak.yaml"
    elsewhere.write_text("id: inc-1\n")
    assert submission(Mode.DRILL, settings, elsewhere) is None
    assert submission(Mode.DRILL, settings, incident, out=tmp_path / "out") is None
    assert submission(Mode.LIVE, settings, incident, confirm="inc-1", resume="abc") is None
    assert submission(Mode.DRILL, settings, incident, playbook=elsewhere) is None


def test_without_a_prefect_server_nothing_is_submitted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL")
    assert submission(Mode.DRILL, settings, settings.home / "incidents" / "leak.yaml") is None
