"""The HTTP publisher against a recording status-page stand-in on loopback: the request shape,
the bearer token and Idempotency-Key, errors that name the status (never a body), and through
the real wiring (BREACHBOOK_PUBLISHER_URL): a drill only sends the readiness GET, LIVE posts
each language of the approved version once."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
from pydantic import SecretStr

from breachbook.clock import FixedStepClock
from breachbook.connectors.publisher_http import HttpPublisher, PublisherBusy, PublishRefused
from breachbook.demo import DemoWorld
from breachbook.engine import RunResult, Status
from breachbook.modes import Mode
from breachbook.ports import StatementRelease, Verdict
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, demo_settings
from tests.conftest import T0, Fakes
from tests.integration.publisher_stand_in import publisher_stand_in

INCIDENT = "demo-2026-antiques-leak"


def release(version: int = 1, language: str = "en") -> StatementRelease:
    body = "# Example Ltd: statement\n\n2 customers are affected.\n"
    return StatementRelease(
        incident_id="inc-1",
        statement="full",
        version=version,
        language=language,
        title="Example Ltd: statement",
        body=body,
        sha256=hashlib.sha256(body.encode()).hexdigest(),
    )


def test_publish_posts_the_documented_json_with_token_and_idempotency_key() -> None:
    with publisher_stand_in() as stand_in:
        publisher = HttpPublisher(stand_in.url, SecretStr(stand_in.token))
        where = publisher.publish(release())
        again = publisher.publish(release())  # a retry of the same version and language
        other = publisher.publish(release(language="zh-CN"))
    assert where == again == f"{stand_in.url}/1" and other == f"{stand_in.url}/2"
    posts = [r for r in stand_in.requests if r.method == "POST"]
    assert posts[0].headers["Authorization"] == f"Bearer {stand_in.token}"
    assert posts[0].headers["Idempotency-Key"] == "inc-1:full-v1:en"
    assert posts[0].body == {
        "incident_id": "inc-1",
        "statement": "full",
        "version": 1,
        "language": "en",
        "title": "Example Ltd: statement",
        "body": release().body,
        "sha256": release().sha256,
    }
    assert len(stand_in.published) == 2


def test_readiness_and_refusals_name_the_status_never_the_token() -> None:
    with publisher_stand_in() as stand_in:
        good = HttpPublisher(stand_in.url, SecretStr(stand_in.token)).check_can_publish()
        wrong = HttpPublisher(stand_in.url, SecretStr("wrong")).check_can_publish()
        stand_in.fail_next = [422, 503]
        publisher = HttpPublisher(stand_in.url, SecretStr(stand_in.token))
        with pytest.raises(PublishRefused) as refused:
            publisher.publish(release())
        with pytest.raises(PublisherBusy) as busy:
            publisher.publish(release())
    assert good.verdict is Verdict.VERIFIED
    assert wrong.verdict is Verdict.FAILED and "HTTP 401" in wrong.reason
    assert "BREACHBOOK_PUBLISHER_TOKEN" in wrong.reason and "wrong" not in wrong.reason
    assert str(refused.value) == f"{stand_in.url} answered HTTP 422 to full v1 (en)"
    assert str(busy.value) == f"{stand_in.url} answered HTTP 503"
    gone = HttpPublisher("http://127.0.0.1:9/x", None).check_can_publish()
    assert gone.verdict is Verdict.FAILED and "did not answer: ConnectError" in gone.reason


def run(mode: Mode, settings: Settings, fakes: Fakes, out: Path, incident: Path) -> RunResult:
    """`run_with`'s path with every fake but the publisher, which the settings build."""
    confirm = INCIDENT if mode is Mode.LIVE else None
    _, result = execute(
        RunRequest(mode=mode, incident_file=incident, out_dir=out, confirm_incident_id=confirm),
        settings=settings,
        clock=FixedStepClock(T0),
        adapters=dataclasses.replace(fakes.adapters(), publisher=None),
    )
    return result


@pytest.fixture
def world(small_world: DemoWorld, tmp_path: Path) -> DemoWorld:
    folder = tmp_path / "world"
    shutil.copytree(small_world.folder, folder)
    return DemoWorld(folder, folder / small_world.customers_db.name, folder / "incident.yaml")


def test_through_the_wiring_a_drill_only_checks_and_live_publishes_each_language_once(
    world: DemoWorld, tmp_path: Path
) -> None:
    with publisher_stand_in() as stand_in:
        settings = demo_settings(
            Settings(
                home=tmp_path / "home",
                publisher_url=stand_in.url,
                publisher_token=SecretStr(stand_in.token),
            ),
            world.customers_db,
            world.folder,
        )
        fakes = Fakes(tmp_path)
        drill = run(Mode.DRILL, settings, fakes, tmp_path / "drill", world.incident_file)
        planned = [e for e in drill.entries() if e.step_id == "publish-statement"]
        assert {(e.status, e.verdict) for e in planned} == {(Status.PLANNED, "VERIFIED")}
        assert {r.method for r in stand_in.requests} == {"GET"}
        assert stand_in.published == {}

        stand_in.fail_next = [503]  # the first POST fails and is retried with the same key
        live = run(Mode.LIVE, settings, fakes, tmp_path / "live", world.incident_file)
        again = run(Mode.LIVE, settings, fakes, tmp_path / "again", world.incident_file)

    published = [e for e in live.entries() if e.step_id == "publish-statement"]
    assert {e.status for e in published} == {Status.COMPLETED}
    assert sorted(stand_in.published) == [f"{INCIDENT}:full-v1:en", f"{INCIDENT}:full-v1:zh-CN"]
    assert {e.status for e in again.entries() if e.step_id == "publish-statement"} == {
        Status.ALREADY_DONE
    }
    posts = [r for r in stand_in.requests if r.method == "POST"]
    assert len(posts) == 3  # one refused with 503, then one per language
    body = (tmp_path / "live" / "statements" / "full-v1.en.md").read_text()
    assert any(p.body and p.body["body"] == body for p in posts)
