"""The demo drill as a Prefect flow with Slack configured (the stand-in on loopback): the war
room is rehearsed in the drill channel only, every message marked DRILL, no channel made."""

from __future__ import annotations

from pathlib import Path

import pytest

from breachbook.connectors.slack import room_name
from breachbook.demo import DEMO_INCIDENT_ID
from tests.conftest import SMALL_WORLD, customers_named_in
from tests.integration.slack_standin import serve_standin

pytestmark = pytest.mark.prefect


def test_a_prefect_drill_rehearses_the_war_room_in_the_drill_channel_only(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.response import response

    from breachbook.demo import ensure_demo_world

    with serve_standin() as slack:
        drill = slack.add_channel("inc-drill")
        live_room = slack.add_channel(room_name(DEMO_INCIDENT_ID))
        monkeypatch.setenv("BREACHBOOK_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("BREACHBOOK_SLACK_TOKEN", "xoxb-test")
        monkeypatch.setenv("BREACHBOOK_SLACK_API_URL", slack.url)
        monkeypatch.setenv("BREACHBOOK_SLACK_DRILL_CHANNEL", drill.id)
        monkeypatch.setenv("BREACHBOOK_SLACK_MEMBERS", '{"security-oncall": ["U0SEC1"]}')
        world = ensure_demo_world(tmp_path / "home" / "demo", size=SMALL_WORLD)
        state = response(demo=True, out_dir=str(tmp_path / "out"), return_state=True)
        assert state.is_completed(), state.message

    assert set(slack.methods()) == {"auth.test", "chat.postMessage"}
    posts = slack.posts()
    assert len(posts) > 8, "a message as each phase starts and ends, and the timeline"
    assert {c.params["channel"] for c in posts} == {drill.id}
    assert all(str(c.params["text"]).startswith("[DRILL]") for c in posts)
    assert len(slack.channels) == 2 and not live_room.messages and not live_room.members
    said = "\n".join(repr(c.params) for c in slack.calls)
    assert customers_named_in(said, world.customers_db) == []
    plan = (tmp_path / "out" / "plan.md").read_text(encoding="utf-8")
    assert "Slack auth.test scopes" in plan
