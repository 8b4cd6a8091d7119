"""The Slack war room against a Slack Web API stand-in on loopback, driven by the real
slack-sdk client: what reached Slack in LIVE and in a drill, scopes, errors, rate limits,
and messages that wait in the ledger through an outage."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.clock import FixedStepClock
from breachbook.connectors.ledger_approvals import Wait, approval_blocks, how_to_answer
from breachbook.connectors.slack import ChatUnavailable, SlackChat, room_name
from breachbook.demo import DemoWorld
from breachbook.engine import RunResult, Status
from breachbook.journal import INCIDENT_SCOPE
from breachbook.ledger import ItemStatus
from breachbook.models import Incident
from breachbook.modes import Mode
from breachbook.ports import Answer, ChatMessage, RoomSpec, Verdict
from breachbook.roster import RoleApprovers
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.warroom import DELIVERY, QUEUE
from breachbook.wiring import RunRequest
from tests.conftest import (
    ENGINE_INCIDENT,
    ENGINE_PLAYBOOK,
    T0,
    Fakes,
    customers_named_in,
    live_ledger,
    run_with,
)
from tests.fakes import InMemoryCustomers, ScriptedPauses
from tests.integration.slack_standin import SlackStandIn, serve_standin

TOKEN = "xoxb-test"
MEMBERS = {"security-oncall": ["U0SEC1", "U0SEC2"], "legal": ["U0LAW"], "not-a-role": ["U0NO"]}


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with serve_standin() as standin:
        yield standin


def with_slack(settings: Settings, standin: SlackStandIn, **more: Any) -> Settings:
    return settings.model_copy(
        update={
            "slack_token": SecretStr(TOKEN),
            "slack_api_url": standin.url,
            "slack_members": MEMBERS,
            **more,
        }
    )


def without_chat_fake(fakes: Fakes) -> Fakes:
    """The recording fakes for every port but chat, which is Slack (the stand-in) here."""
    adapters = dataclasses.replace(fakes.adapters(), chat=None)
    fakes.adapters = lambda: adapters  # type: ignore[method-assign]
    return fakes


def incident_of(world: DemoWorld) -> Incident:
    return Incident.from_file(world.incident_file)


def texts(standin: SlackStandIn) -> list[str]:
    return [str(call.params.get("text", "")) for call in standin.posts()]


def everything_posted(standin: SlackStandIn) -> str:
    return "\n".join(repr(call.params) for call in standin.calls)


# -- the adapter -------------------------------------------------------------------------


def test_preflight_checks_the_token_and_names_a_missing_scope(slack: SlackStandIn) -> None:
    ok = SlackChat(TOKEN, slack.url).check_can_post("#inc-x")
    assert ok.verdict is Verdict.VERIFIED, ok.reason

    slack.tokens["xoxb-narrow"] = ("chat:write", "channels:read")
    narrow = SlackChat("xoxb-narrow", slack.url).check_can_post("#inc-x")
    assert narrow.verdict is Verdict.FAILED
    assert "channels:manage" in narrow.reason and "channels:join" in narrow.reason
    assert "chat:write" not in narrow.reason

    wrong = SlackChat("xoxb-wrong", slack.url).check_can_post("#inc-x")
    assert wrong.verdict is Verdict.FAILED
    assert wrong.reason == "Slack auth.test: invalid_auth"
    assert slack.methods() == ["auth.test"] * 3
    assert [c.token for c in slack.calls] == [TOKEN, "xoxb-narrow", "xoxb-wrong"]


def test_slack_errors_become_one_line_naming_the_method_and_error(slack: SlackStandIn) -> None:
    chat = SlackChat(TOKEN, slack.url)
    with pytest.raises(ChatUnavailable, match=r"^Slack chat.postMessage: channel_not_found$"):
        chat.post("#nowhere", "hello")
    slack.tokens["xoxb-post-only"] = ("chat:write",)
    with pytest.raises(ChatUnavailable, match=r"^Slack conversations.create: missing_scope$"):
        SlackChat("xoxb-post-only", slack.url).open_room(RoomSpec("inc-a", "topic"))
    assert slack.by_name("inc-a") is None


def test_a_room_is_created_once_and_joined_when_it_exists(slack: SlackStandIn) -> None:
    chat = SlackChat(TOKEN, slack.url)
    first = chat.open_room(RoomSpec("inc-a", "war room of a", ("U1", "U2")))
    again = chat.open_room(RoomSpec("inc-a", "war room of a", ("U1", "U2")))
    assert first == again
    channel = slack.channels[first]
    assert channel.topic == "war room of a" and {"U1", "U2"} <= channel.members
    assert slack.methods() == [
        "conversations.create",
        "conversations.setTopic",
        "conversations.invite",
        "conversations.create",
        "conversations.list",
        "conversations.join",
        "conversations.setTopic",
        "conversations.invite",
    ]
    assert [c.error for c in slack.calls if c.error] == ["name_taken", "already_in_channel"]


def test_429_is_retried_after_the_retry_after_slack_gives(slack: SlackStandIn) -> None:
    slack.add_channel("inc-a")
    slack.rate_limited, slack.retry_after = 2, 1
    ts = SlackChat(TOKEN, slack.url).send("#inc-a", ChatMessage("hello"))
    posts = [c for c in slack.calls if c.method == "chat.postMessage"]
    assert [c.status for c in posts] == [429, 429, 200]
    assert all(b.at - a.at >= 1.0 for a, b in itertools.pairwise(posts))
    assert slack.by_name("inc-a").messages[0]["ts"] == ts  # type: ignore[union-attr]


def test_a_drill_adapter_refuses_every_write_but_drill_posts_to_its_channel(
    slack: SlackStandIn,
) -> None:
    slack.add_channel("inc-drill")
    slack.add_channel("inc-live")
    chat = SlackChat(TOKEN, slack.url, locked=True, drill_channel="#inc-drill")
    assert chat.open_room(RoomSpec("inc-a", "topic", ("U1",))) == "#inc-drill"
    chat.post("#inc-live", "status")
    assert slack.methods() == ["chat.postMessage"]
    assert slack.posts()[0].params["channel"] == "#inc-drill"
    assert texts(slack) == ["[DRILL] status"]
    assert not slack.by_name("inc-live").messages  # type: ignore[union-attr]
    unset = SlackChat(TOKEN, slack.url, locked=True).check_can_post("#inc-a")
    assert unset.verdict is Verdict.FAILED and "BREACHBOOK_SLACK_DRILL_CHANNEL" in unset.reason


# -- LIVE, through the product's path ------------------------------------------------------


def live_run(settings: Settings, fakes: Fakes, world: DemoWorld) -> RunResult:
    return run_with(Mode.LIVE, settings, without_chat_fake(fakes), None, world.incident_file)


def test_live_opens_the_incident_room_and_posts_each_phase_in_blocks_and_a_timeline(
    slack: SlackStandIn, demo_run_settings: Settings, fakes: Fakes, small_world: DemoWorld
) -> None:
    settings = with_slack(demo_run_settings, slack)
    result = live_run(settings, fakes, small_world)
    incident = incident_of(small_world)
    name = room_name(incident.id)

    creates = [c for c in slack.calls if c.method == "conversations.create"]
    assert [c.params["name"] for c in creates] == [name]
    channel = slack.by_name(name)
    assert channel is not None and incident.id in channel.topic
    invited = next(c for c in slack.calls if c.method == "conversations.invite")
    # every role of the playbook that has people, and nobody for a role it does not name
    assert sorted(invited.params["users"].split(",")) == ["U0LAW", "U0SEC1", "U0SEC2"]

    posts = slack.posts()
    assert {c.params["channel"] for c in posts} == {channel.id}
    root = posts[0]
    assert root.params["text"] == f"Timeline of {name}" and "thread_ts" not in root.params
    root_ts = channel.messages[0]["ts"]
    phases = [p.id for p in _phases(settings)]
    headers = [c.params["blocks"][0]["text"]["text"] for c in posts if c.params.get("blocks")]
    said = [h.split(":")[0] for h in headers]
    expected = [f"Phase {p} {edge}" for p in phases for edge in ("started", "ended")]
    assert sorted(said) == sorted(expected), "one message as each phase starts, one as it ends"
    for phase in phases:
        assert said.index(f"Phase {phase} started") < said.index(f"Phase {phase} ended")
    timeline = [c for c in posts if c.params.get("thread_ts") == root_ts]
    assert [t.params["text"].split(" ", 1)[1].split(":")[0] for t in timeline] == said
    ended_contain = next(
        c for c in posts if c.params.get("blocks") and "contain ended" in c.params["text"]
    )
    body = repr(ended_contain.params["blocks"])
    assert "*Actions:*" in body and "*FAILED:*" in body
    ended_notify = next(
        c for c in posts if c.params.get("blocks") and "notify ended" in c.params["text"]
    )
    due = repr(ended_notify.params["blocks"])
    assert "*Due within 24 h:*" in due and "ASAP" in due, "letters owed as soon as possible"

    opened = [t for t in texts(slack) if "opened" in t and t.startswith(":rotating_light:")]
    assert len(opened) == 1, "the chat.post step's message reached the room once"
    statuses = {e.step_id: e.status for e in result.entries() if e.action == "chat.post"}
    assert statuses["open-war-room"] is Status.COMPLETED

    assert customers_named_in(everything_posted(slack), small_world.customers_db) == []
    ledger = live_ledger(settings)
    queued = ledger.records_of(incident.id, INCIDENT_SCOPE, QUEUE)
    items = ledger.item_statuses(incident.id, DELIVERY)
    assert set(items) == set(queued) and set(items.values()) == {ItemStatus.DONE}
    assert len(queued) == len(posts)
    _assert_transcript_kept(settings, result, queued)


def _assert_transcript_kept(settings: Settings, result: RunResult, queued: dict[str, Any]) -> None:
    """The preserve phase kept the war room's transcript so far as an evidence item."""
    run_folder = settings.home / "runs" / result.incident_id / result.run_id
    to = run_folder.parent / "legal"
    env = {"BREACHBOOK_HOME": str(settings.home)}
    exported = CliRunner().invoke(
        app, ["evidence", "export", str(run_folder / "evidence"), "--to", str(to)], env=env
    )
    assert exported.exit_code == 0, exported.output
    transcript = next((to / "items").glob("war-room-transcript-*"))
    lines = [json.loads(x) for x in transcript.read_text().splitlines()]
    keys = [line["key"] for line in lines]
    assert keys == sorted(queued)[: len(keys)] and len(keys) >= 2, keys
    assert [line["text"] for line in lines] == [queued[k]["text"] for k in keys]
    assert any("Phase contain started" in line["text"] for line in lines)
    assert {line["delivery"] for line in lines} <= {"done", "claimed"}


def _phases(settings: Settings) -> list[Any]:
    from breachbook.playbook import load_playbook
    from breachbook.settings import project_root

    root = project_root(settings)
    return load_playbook(
        root / "playbooks" / "customer-data-breach.yaml", root / "templates"
    ).phases


def test_an_outage_never_stops_the_response_and_messages_arrive_later_in_order_once(
    slack: SlackStandIn,
    demo_run_settings: Settings,
    fakes: Fakes,
    small_world: DemoWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = with_slack(demo_run_settings, slack)
    incident = incident_of(small_world)
    slack.down = True
    result = live_run(settings, fakes, small_world)
    assert not slack.posts()
    assert fakes.mail.sent, "the letters went out while Slack was down"
    chat_steps = [e for e in result.entries() if e.action == "chat.post"]
    assert {e.status for e in chat_steps} == {Status.COMPLETED}, "queued, to be delivered later"
    assert {e.verdict for e in chat_steps} == {"UNVERIFIED"}
    ledger = live_ledger(settings)
    queued = sorted(ledger.records_of(incident.id, INCIDENT_SCOPE, QUEUE))
    assert len(queued) > 10
    assert ItemStatus.DONE not in ledger.item_statuses(incident.id, DELIVERY).values()

    slack.down = False
    for name, value in {
        "BREACHBOOK_HOME": str(settings.home),
        "BREACHBOOK_SLACK_TOKEN": TOKEN,
        "BREACHBOOK_SLACK_API_URL": slack.url,
    }.items():
        monkeypatch.setenv(name, value)
    flushed = CliRunner().invoke(app, ["warroom", "flush", "--incident", incident.id])
    assert flushed.exit_code == 0, flushed.output
    assert f"{len(queued)} delivered, 0 waiting" in flushed.output

    raw = ledger.records_of(incident.id, INCIDENT_SCOPE, QUEUE)
    wanted = [raw[key]["text"] for key in queued]
    wanted[0] = f"Timeline of {room_name(incident.id)}"  # the room message starts the timeline
    assert texts(slack) == wanted, "every message once, in the order it was queued"
    again = CliRunner().invoke(app, ["warroom", "flush", "--incident", incident.id])
    assert again.exit_code == 0 and "0 delivered, 0 waiting" in again.output
    assert len(slack.posts()) == len(queued)


def test_a_rate_limit_regime_slows_delivery_but_loses_nothing(
    slack: SlackStandIn, demo_run_settings: Settings, fakes: Fakes, small_world: DemoWorld
) -> None:
    settings = with_slack(demo_run_settings, slack)
    slack.rate_limit_every, slack.retry_after = 3, 0
    live_run(settings, fakes, small_world)
    incident = incident_of(small_world)
    queued = live_ledger(settings).records_of(incident.id, INCIDENT_SCOPE, QUEUE)
    assert any(c.status == 429 for c in slack.calls)
    assert len(slack.posts()) == len(queued)
    assert len({c.params["text"] for c in slack.posts()}) == len(queued)


# -- DRILL -----------------------------------------------------------------------------


def test_a_drill_posts_only_to_the_drill_channel_marked_drill_and_creates_nothing(
    slack: SlackStandIn, demo_run_settings: Settings, small_world: DemoWorld, tmp_path: Path
) -> None:
    drill = slack.add_channel("inc-drill")
    slack.add_channel(room_name(incident_of(small_world).id))
    slack.add_channel("inc-war-room")
    settings = with_slack(demo_run_settings, slack, slack_drill_channel="#inc-drill")
    _, result = execute(
        RunRequest(
            mode=Mode.DRILL, incident_file=small_world.incident_file, out_dir=tmp_path / "out"
        ),
        settings=settings,
        clock=FixedStepClock(T0),
    )
    chat_checks = [e for e in result.entries() if e.action == "chat.post"]
    assert chat_checks and {e.verdict for e in chat_checks} == {"VERIFIED"}
    assert {e.status for e in chat_checks} == {Status.PLANNED}

    assert "auth.test" in slack.methods()
    assert set(slack.methods()) == {"auth.test", "chat.postMessage"}, slack.methods()
    posts = slack.posts()
    assert posts and {c.params["channel"] for c in posts} == {"#inc-drill"}
    assert all(str(c.params["text"]).startswith("[DRILL]") for c in posts)
    for call in posts:
        if call.params.get("blocks"):
            assert "[DRILL]" in call.params["blocks"][0]["elements"][0]["text"]
    assert len(drill.messages) == len(posts)
    others = [c for c in slack.channels.values() if c is not drill]
    assert len(slack.channels) == 3 and all(not c.messages and not c.topic for c in others)
    assert customers_named_in(everything_posted(slack), small_world.customers_db) == []


def test_a_drill_with_a_token_missing_a_scope_fails_the_chat_steps_naming_it(
    slack: SlackStandIn, demo_run_settings: Settings, small_world: DemoWorld, tmp_path: Path
) -> None:
    slack.add_channel("inc-drill")
    slack.tokens[TOKEN] = ("chat:write", "channels:read", "channels:join")
    settings = with_slack(demo_run_settings, slack, slack_drill_channel="#inc-drill")
    _, result = execute(
        RunRequest(
            mode=Mode.DRILL, incident_file=small_world.incident_file, out_dir=tmp_path / "out"
        ),
        settings=settings,
        clock=FixedStepClock(T0),
    )
    chat_checks = [e for e in result.entries() if e.action == "chat.post"]
    assert chat_checks and {e.verdict for e in chat_checks} == {"FAILED"}
    assert all("channels:manage" in e.reason for e in chat_checks)
    plan = (tmp_path / "out" / "plan.md").read_text(encoding="utf-8")
    assert "channels:manage" in plan


# -- approval requests -------------------------------------------------------------------


def approval_posts(standin: SlackStandIn, channel: str) -> list[dict[str, Any]]:
    """What reached `channel` (the playbook's war_room.channel) about approvals."""
    return [
        c.params
        for c in standin.posts()
        if c.params["channel"] == channel and "approve" in str(c.params["text"])
    ]


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def test_an_approval_paused_in_prefect_posts_a_button_opening_the_flow_runs_form(
    slack: SlackStandIn, tmp_path: Path
) -> None:
    slack.add_channel("inc")  # the engine playbook's war_room.channel
    leads = {"incident-lead": RoleApprovers(people=["lin", "ada"], backup=["ben"])}
    settings = with_slack(Settings(home=tmp_path / "home", approvers=leads, actor="lin"), slack)
    paused = ScriptedPauses([Answer(approve=True, approver="ada")])
    fakes = without_chat_fake(
        Fakes(tmp_path, approvals=None, pauses=paused, customers=InMemoryCustomers([]))
    )
    result = run_with(Mode.LIVE, settings, fakes, None, ENGINE_INCIDENT, ENGINE_PLAYBOOK)

    [asked] = approval_posts(slack, "#inc")
    [button] = buttons(asked["blocks"])
    assert button["type"] == "button" and button["url"] == paused.site().url
    assert button["url"].endswith(f"/runs/flow-run/{paused.site().flow_run_id}")
    command = f"breachbook approve {result.run_id} deactivate-keys --by NAME"
    assert command in repr(asked["blocks"]) and command in asked["text"]
    assert asked["text"].startswith("Approval needed from incident-lead (lin, ada, ben)")


def test_an_approval_asked_during_an_outage_waits_in_the_ledger_and_arrives_later(
    slack: SlackStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack.add_channel("inc")  # the engine playbook's war_room.channel
    leads = {"incident-lead": RoleApprovers(people=["lin", "ada"])}
    home = tmp_path / "home"
    settings = with_slack(Settings(home=home, approvers=leads, actor="lin"), slack)
    fakes = without_chat_fake(Fakes(tmp_path, approvals=None, customers=InMemoryCustomers([])))
    slack.down = True
    result = run_with(Mode.LIVE, settings, fakes, None, ENGINE_INCIDENT, ENGINE_PLAYBOOK)
    assert "deactivate-keys" in result.waiting_for
    assert approval_posts(slack, "#inc") == []

    slack.down = False
    for name, value in {
        "BREACHBOOK_HOME": str(home),
        "BREACHBOOK_SLACK_TOKEN": TOKEN,
        "BREACHBOOK_SLACK_API_URL": slack.url,
    }.items():
        monkeypatch.setenv(name, value)
    incident = Incident.from_file(ENGINE_INCIDENT).id
    flushed = CliRunner().invoke(app, ["warroom", "flush", "--incident", incident])
    assert flushed.exit_code == 0, flushed.output
    [asked] = approval_posts(slack, "#inc")
    assert asked["text"].startswith("Approval needed from incident-lead (lin, ada)")
    assert f"breachbook approve {result.run_id} deactivate-keys --by NAME" in asked["text"]
    again = CliRunner().invoke(app, ["warroom", "flush", "--incident", incident])
    assert again.exit_code == 0 and len(approval_posts(slack, "#inc")) == 1


def test_an_approval_waiting_in_the_ledger_posts_the_exact_command_and_no_customer_data(
    slack: SlackStandIn, demo_run_settings: Settings, small_world: DemoWorld, tmp_path: Path
) -> None:
    slack.add_channel("inc-war-room")  # the demo playbook's war_room.channel
    settings = with_slack(demo_run_settings, slack)
    fakes = without_chat_fake(Fakes(tmp_path, approvals=None))  # no pause: the ledger waits
    result = run_with(Mode.LIVE, settings, fakes, None, small_world.incident_file)
    assert {"deliver-letters", "publish-statement"} <= set(result.waiting_for)

    posts = approval_posts(slack, "#inc-war-room")
    by_step = {
        step: next(p for p in posts if f" {step} --by NAME" in p["text"])
        for step in ("deliver-letters", "publish-statement")
    }
    for step, post in by_step.items():
        assert buttons(post["blocks"]) == [], "nothing to open: the run is not paused"
        pinned = " --version full-v1" if step == "publish-statement" else ""
        command = f"```breachbook approve {result.run_id} {step} --by NAME{pinned}```"
        assert command in post["blocks"][-1]["text"]["text"]
    assert "version *full-v1*" in repr(by_step["publish-statement"]["blocks"])
    assert customers_named_in(everything_posted(slack), small_world.customers_db) == []


def test_a_drill_approval_message_goes_only_to_the_drill_channel_marked_drill(
    slack: SlackStandIn,
) -> None:
    slack.add_channel("inc-drill")
    live_room = slack.add_channel("inc-war-room")
    chat = SlackChat(TOKEN, slack.url, locked=True, drill_channel="#inc-drill")
    wait = Wait(
        step_id="publish-statement",
        role="comms",
        summary="publish",
        since=T0,
        run_id="r1",
        flow_run_id="0f0e0d0c-0000-4000-8000-000000000001",
        url="http://prefect.test/runs/flow-run/0f0e0d0c-0000-4000-8000-000000000001",
        version="full-v2",
    )
    headline = "Approval needed from comms (grace): Publish the statement (publish-statement)."
    chat.post("#inc-war-room", f"{headline} {how_to_answer(wait)}", approval_blocks(wait, headline))
    [post] = slack.posts()
    assert post.params["channel"] == "#inc-drill" and not live_room.messages
    assert str(post.params["text"]).startswith("[DRILL] Approval needed")
    blocks = post.params["blocks"]
    assert "[DRILL]" in blocks[0]["elements"][0]["text"]
    assert [b["url"] for b in buttons(blocks)] == [wait.url]
