"""The war room: what people in the incident's Slack channel are told, and when.

Each message is written to the ledger first (a queue of incident records) and delivered
afterwards, oldest first, each claimed once (`RunJournal.once`), so a Slack outage never
stops the response: what could not be delivered waits for the next delivery, by this run's
next message, the next run of the incident or `breachbook warroom flush`. Messages carry ids,
counts and deadlines only, never a customer's personal data.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from breachbook.clock import Clock
from breachbook.errors import BreachbookError
from breachbook.journal import INCIDENT_SCOPE, Once, RunJournal
from breachbook.ledger import ItemStatus
from breachbook.ports import Changed, Chat, ChatMessage, Check, RoomSpec, WarRoomChat

if TYPE_CHECKING:
    from breachbook.context import RunContext
    from breachbook.engine import StepResult
    from breachbook.playbook import Phase

QUEUE = "war-room-queue"
"""Record kind of queued messages (incident scope, keyed in the order they were written)."""
ROOM = "war-room"
"""Record kind of the incident's room (its channel id and the timeline thread)."""
DELIVERY = "war-room-delivery"
"""Step id of the ledger items that claim each message's delivery."""

SOON = timedelta(hours=24)
"""Deadlines this close are listed in every phase message."""

MAX_LISTED = 10
"""FAILED actions and deadlines listed per message; the rest are counted."""


class MessageKind(StrEnum):
    ROOM = "room"
    """Open the room (create or join the channel, topic, members) and start the timeline."""
    CHANNEL = "channel"
    TIMELINE = "timeline"
    """A line in the timeline thread."""


class QueuedMessage(BaseModel):
    kind: MessageKind
    text: str
    blocks: list[dict[str, Any]] = Field(default_factory=list)
    room_name: str = ""
    members: list[str] = Field(default_factory=list)
    channel: str = ""
    """Posted to this channel rather than the room (approval requests go to the playbook's
    war_room.channel), still in the queue's order."""


class Room(BaseModel):
    channel: str
    timeline: str


@dataclass(frozen=True)
class Delivery:
    """What one delivery did: messages delivered now, and how many still wait."""

    delivered: int
    waiting: int
    error: str | None = None


class WarRoom:
    """Queues war-room messages in the ledger and delivers them through a WarRoomChat."""

    def __init__(
        self,
        chat: WarRoomChat,
        journal: RunJournal,
        clock: Clock,
        room_name: str,
        members: Mapping[str, Sequence[str]],
    ) -> None:
        self._chat = chat
        self._journal = journal
        self._clock = clock
        self._room_name = room_name
        self._members = members
        self._written = 0
        self._next: int | None = None
        """Messages queued for the incident before this run's next one (counted once)."""

    @property
    def label(self) -> str:
        return f"#{self._room_name}"

    # -- queue ---------------------------------------------------------------------------

    def enqueue(self, message: QueuedMessage) -> str:
        """Write the message to the ledger; its key orders it after every message already
        queued for the incident (by any run), whatever the clocks say."""
        if self._next is None:
            self._next = len(self._queue())
        self._next += 1
        self._written += 1
        key = f"{self._next:09d}-{self._journal.run_id}-{self._written:06d}"
        self._journal.put(QUEUE, key, message, scope=INCIDENT_SCOPE)
        return key

    def pending(self) -> list[str]:
        known = self._journal.statuses(DELIVERY)
        return [key for key in self._queue() if known.get(key) is not ItemStatus.DONE]

    def _queue(self) -> dict[str, QueuedMessage]:
        raw = self._journal.ledger.records_of(self._journal.incident_id, INCIDENT_SCOPE, QUEUE)
        return {key: QueuedMessage.model_validate(raw[key]) for key in sorted(raw)}

    def deliver(self) -> Delivery:
        """Deliver what waits, oldest first; stop at the first that fails (order is kept)."""
        queue = self._queue()
        known = self._journal.statuses(DELIVERY)
        waiting = [key for key in queue if known.get(key) is not ItemStatus.DONE]
        delivered = 0
        for key in waiting:
            outcome, details = self._journal.once(
                DELIVERY, key, functools.partial(self._send, queue[key]), known
            )
            if outcome not in (Once.DONE, Once.ALREADY_DONE):
                return Delivery(
                    delivered, len(waiting) - delivered, str(details.get("error", outcome))
                )
            delivered += outcome is Once.DONE
        return Delivery(delivered, 0)

    def _room(self) -> Room:
        room = self._journal.get(ROOM, "-", Room, scope=INCIDENT_SCOPE)
        if room is None:
            raise BreachbookError("the war room is not open yet")
        return room

    def _send(self, message: QueuedMessage) -> Changed:
        if message.kind is MessageKind.ROOM:
            spec = RoomSpec(message.room_name, message.text, tuple(message.members))
            channel = self._chat.open_room(spec)
            timeline = self._chat.send(
                channel, ChatMessage(f"Timeline of {message.room_name}", tuple(message.blocks))
            )
            self._journal.put(ROOM, "-", Room(channel=channel, timeline=timeline), INCIDENT_SCOPE)
            return Changed({"channel": channel, "ts": timeline, "members": len(message.members)})
        if message.channel:
            ts = self._chat.send(message.channel, ChatMessage(message.text, tuple(message.blocks)))
            return Changed({"channel": message.channel, "ts": ts, "kind": message.kind.value})
        room = self._room()
        thread = room.timeline if message.kind is MessageKind.TIMELINE else None
        ts = self._chat.send(room.channel, ChatMessage(message.text, tuple(message.blocks), thread))
        return Changed({"channel": room.channel, "ts": ts, "kind": message.kind.value})

    # -- what the run says ---------------------------------------------------------------

    def say(self, text: str) -> str:
        """Queue a plain message to the room and try to deliver; returns its queue key."""
        self._open_once()
        key = self.enqueue(QueuedMessage(kind=MessageKind.CHANNEL, text=text))
        self.deliver()
        return key

    def _open_once(self, roles: Sequence[str] = ()) -> None:
        if self._journal.get(ROOM, "-", Room, scope=INCIDENT_SCOPE) is not None:
            return
        if any(m.kind is MessageKind.ROOM for m in self._queue().values()):
            return
        wanted = roles or list(self._members)
        members = sorted({user for role in wanted for user in self._members.get(role, ())})
        topic = f"breachbook war room of incident {self._journal.incident_id}"
        self.enqueue(
            QueuedMessage(
                kind=MessageKind.ROOM, text=topic, room_name=self._room_name, members=members
            )
        )

    def phase_started(self, ctx: RunContext, phase: Phase) -> None:
        self._open_once(ctx.playbook.roles)
        title = f"Phase {phase.id} started: {phase.title}"
        self._phase_message(ctx, title, [], [step.id for step in phase.steps])

    def phase_ended(self, ctx: RunContext, phase: Phase, results: Sequence[StepResult]) -> None:
        self._phase_message(ctx, f"Phase {phase.id} ended: {phase.title}", results, [])

    def _phase_message(
        self, ctx: RunContext, title: str, results: Sequence[StepResult], steps: list[str]
    ) -> None:
        now = self._clock.now()
        blocks = phase_blocks(title, ctx.incident.id, results, steps, soon_deadlines(ctx, now))
        tally = status_tally(results)
        self.enqueue(QueuedMessage(kind=MessageKind.CHANNEL, text=title, blocks=blocks))
        self.deliver()  # the channel hears of the phase before its line joins the timeline
        line = f"{now.astimezone(UTC):%H:%M:%S} {title}" + (f" ({tally})" if tally else "")
        self.enqueue(QueuedMessage(kind=MessageKind.TIMELINE, text=line))
        self.deliver()


class QueuedChat:
    """The Chat port over the war room's queue, for approval requests: each is written to
    the ledger first and delivered in order with the room's messages, so one asked during a
    Slack outage arrives when Slack answers again (the next delivery or `breachbook warroom
    flush`) instead of being lost."""

    def __init__(self, room: WarRoom, chat: Chat) -> None:
        self._room = room
        self._chat = chat

    def check_can_post(self, channel: str) -> Check:
        return self._chat.check_can_post(channel)

    def post(self, channel: str, text: str, blocks: Sequence[Mapping[str, Any]] = ()) -> str:
        """Queue and deliver; the reference is the queue key, marked when it still waits."""
        key = self._room.enqueue(
            QueuedMessage(
                kind=MessageKind.CHANNEL, channel=channel, text=text, blocks=[*map(dict, blocks)]
            )
        )
        delivery = self._room.deliver()
        return f"{key} (waiting: {delivery.error})" if delivery.waiting else key


def status_tally(results: Sequence[StepResult]) -> str:
    counts = Counter(entry.status.value for step in results for entry in step.entries)
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))


def failed_actions(results: Sequence[StepResult]) -> list[str]:
    """Step, action and target of each action that FAILED or was refused (ids only)."""
    from breachbook.engine import FAILED_STATUSES

    return [
        f"`{e.step_id}` {e.action} on `{e.target}`: {e.status.value}"
        + (f" ({e.verdict})" if e.verdict else "")
        for step in results
        for e in step.entries
        if e.status in FAILED_STATUSES or e.verdict == "FAILED"
    ]


def soon_deadlines(ctx: RunContext, now: datetime) -> list[str]:
    """Obligations not met yet (from the ledger, as in deadlines.py) due in the next 24 h,
    overdue ones and those due as soon as possible included, soonest first."""
    from breachbook.actions.notify import ASSESSMENT
    from breachbook.deadlines import deliveries, fulfilled_times
    from breachbook.notify import Assessment
    from breachbook.register import filings

    found = ctx.journal.get(ASSESSMENT, "-", Assessment)
    if found is None:
        return []
    sent = deliveries(ctx.journal)
    fulfilled = fulfilled_times(found, sent)
    filed = filings(ctx.journal)
    due: list[tuple[datetime, str]] = []
    for audience, tallies in (("regulator", found.regulator), ("letters", found.individual)):
        for rule_id, tally in tallies.items():
            rule = ctx.rules.rule(rule_id)
            done = (
                any(f.status == "filed" for f in filed.get(rule_id, []))
                if audience == "regulator"
                else rule_id in fulfilled
            )
            if done or rule.clock_start(ctx.incident, fulfilled) is None:
                continue  # met, or its clock waits for another obligation
            at = rule.due_at(ctx.incident, fulfilled)
            if at is not None and at - now > SOON:
                continue
            delivered = sent[rule_id].delivered if rule_id in sent else 0
            what = (
                f"{rule_id} notice to the regulator"
                if audience == "regulator"
                else f"{rule_id} letters: {delivered:,} of {tally.count:,} delivered"
            )
            when = "ASAP" if at is None else f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
            due.append((at or now, f"{when} {what}"))
    return [line for _, line in sorted(due)]


def _listed(lines: list[str]) -> str:
    shown = lines[:MAX_LISTED]
    more = len(lines) - len(shown)
    return "\n".join(f"• {line}" for line in shown) + (f"\n• and {more} more" if more else "")


def phase_blocks(
    title: str,
    incident_id: str,
    results: Sequence[StepResult],
    steps: list[str],
    deadlines: list[str],
) -> list[dict[str, Any]]:
    """Block Kit for a phase message: header, counts, FAILED actions, deadlines within 24 h."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"incident `{incident_id}`"}],
        },
    ]
    if steps:
        blocks.append(_section(f"*Steps:* {', '.join(f'`{s}`' for s in steps)}"))
    if results:
        counts = {k: v for step in results for k, v in step.counts.items()}
        tally = status_tally(results) or "nothing ran"
        text = f"*Actions:* {tally}"
        if counts:
            text += "\n*Counts:* " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
        blocks.append(_section(text))
        failed = failed_actions(results)
        blocks.append(_section("*FAILED:*\n" + _listed(failed) if failed else "*FAILED:* none"))
    if deadlines:
        blocks.append(_section("*Due within 24 h:*\n" + _listed(deadlines)))
    return blocks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}
