"""Slack as the war room, through slack-sdk's `WebClient`.

Rate limits (429 with Retry-After) and dropped connections are retried by slack-sdk's own
retry handlers; anything still failing becomes a `ChatUnavailable` (one line, Slack's error
code only), so the caller keeps the message queued in the ledger and the response goes on.

A drill's adapter is locked to the drill channel at the transport: every call but the reads
and a `chat.postMessage` to that channel marked DRILL is refused before it is sent, so no
channel is created, joined, renamed or invited to, whatever the code above asks for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from breachbook.errors import BreachbookError, DrillWriteBlocked
from breachbook.ports import ChatMessage, Check, RoomSpec

DRILL_MARK = "[DRILL]"

REQUIRED_SCOPES: Mapping[str, str] = {
    "chat:write": "chat.postMessage",
    "channels:manage": "conversations.create, conversations.setTopic, conversations.invite",
    "channels:join": "conversations.join",
    "channels:read": "conversations.list",
}
"""The bot token scopes a LIVE war room needs, each with the methods that need it: a drill
checks them all, so the rehearsal finds a missing scope before the incident does."""

READ_METHODS = frozenset({"auth.test", "conversations.list", "conversations.info"})

RATE_LIMIT_RETRIES = 5
"""429s retried per call (each after the Retry-After Slack gives); then the message waits."""

TIMEOUT_SECONDS = 10


class ChatUnavailable(BreachbookError):
    """Slack refused or could not be reached; the message stays queued for a later delivery.

    `passing` when Slack was down, unreachable or still rate limiting (it may work later),
    not when it refused the request itself (a bad token, a missing scope)."""

    def __init__(self, message: str, passing: bool) -> None:
        super().__init__(message)
        self.passing = passing


PASSING_ERRORS = frozenset(
    {"ratelimited", "service_unavailable", "fatal_error", "internal_error", "request_timeout"}
)


def room_name(incident_id: str) -> str:
    """The incident's channel name: `inc-` and the id in Slack's alphabet (lower case letters,
    digits, `-` and `_`, at most 80 characters)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", incident_id.lower()).strip("-")
    return f"inc-{slug}"[:80]


def _bare(channel: str) -> str:
    return channel.removeprefix("#")


class SlackChat:
    """The Chat and WarRoomChat ports on the Slack Web API.

    `drill_channel` locks the adapter for a drill: messages go only there, marked DRILL;
    `locked` without a channel refuses every write."""

    def __init__(
        self,
        token: str,
        base_url: str,
        locked: bool = False,
        drill_channel: str | None = None,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
    ) -> None:
        self._client = WebClient(
            token=token,
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            timeout=TIMEOUT_SECONDS,
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=2),
                RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
            ],
        )
        self._locked = locked
        self._drill_channel = drill_channel
        self._channel_ids: dict[str, str] = {}

    # -- transport -----------------------------------------------------------------------

    def _refuse_in_drill(self, method: str, params: Mapping[str, Any]) -> None:
        """The drill lock: only reads, and posts to the drill channel marked DRILL."""
        if not self._locked or method in READ_METHODS:
            return
        if (
            method == "chat.postMessage"
            and self._drill_channel is not None
            and _bare(str(params.get("channel", ""))) == _bare(self._drill_channel)
            and str(params.get("text", "")).startswith(DRILL_MARK)
        ):
            return
        raise DrillWriteBlocked(
            f"drill: refused Slack {method} (only DRILL posts to the drill channel)"
        )

    def _call(self, method: str, **params: Any) -> Any:
        self._refuse_in_drill(method, params)
        try:
            return self._client.api_call(method, json=params)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            passing = error in PASSING_ERRORS or exc.response.status_code >= 429
            raise ChatUnavailable(f"Slack {method}: {error}", passing) from None
        except (SlackClientError, OSError) as exc:
            raise ChatUnavailable(
                f"Slack {method}: unreachable ({type(exc).__name__})", passing=True
            ) from None

    # -- Chat ----------------------------------------------------------------------------

    def check_can_post(self, channel: str) -> Check:
        """auth.test: the token works, and carries every scope the war room needs."""
        try:
            answer = self._call("auth.test")
        except ChatUnavailable as exc:
            if exc.passing:
                return Check.unverified(f"{exc}; war-room messages wait in the ledger meanwhile")
            return Check.failed(str(exc), "Slack auth.test")
        headers = {k.lower(): v for k, v in answer.headers.items()}
        raw = headers.get("x-oauth-scopes", "")
        granted = {s.strip() for s in (raw[0] if isinstance(raw, list) else raw).split(",")}
        missing = [scope for scope in REQUIRED_SCOPES if scope not in granted]
        if missing:
            needs = "; ".join(f"{s} (for {REQUIRED_SCOPES[s]})" for s in missing)
            return Check.failed(f"Slack token lacks scope {needs}", "Slack auth.test scopes")
        who = f"{answer.get('user', '?')} in {answer.get('team', '?')}"
        if self._locked:
            if self._drill_channel is None:
                return Check.failed(
                    "a drill posts only to its drill channel: set BREACHBOOK_SLACK_DRILL_CHANNEL",
                    "Slack auth.test scopes",
                )
            where = f"drill posts go to {self._drill_channel} only, marked DRILL"
        else:
            where = f"can post to {channel}"
        return Check.verified(
            f"Slack token of {who} has {', '.join(REQUIRED_SCOPES)}; {where}",
            "Slack auth.test scopes",
        )

    def post(self, channel: str, text: str, blocks: Sequence[Mapping[str, Any]] = ()) -> str:
        """Post text (and Block Kit blocks); returns the message's timestamp."""
        return self.send(channel, ChatMessage(text, tuple(blocks)))

    # -- WarRoomChat ---------------------------------------------------------------------

    def open_room(self, room: RoomSpec) -> str:
        """Create or join the channel, set its topic, invite its members. A drill opens no
        room: its messages go to the drill channel."""
        if self._locked:
            if self._drill_channel is None:
                raise DrillWriteBlocked("drill: no BREACHBOOK_SLACK_DRILL_CHANNEL to post to")
            return self._drill_channel
        try:
            channel = self._call("conversations.create", name=room.name)["channel"]["id"]
        except ChatUnavailable as exc:
            if not str(exc).endswith("name_taken"):
                raise
            channel = self._find(room.name)
            self._call("conversations.join", channel=channel)
        self._call("conversations.setTopic", channel=channel, topic=room.topic)
        if room.members:
            try:
                self._call("conversations.invite", channel=channel, users=",".join(room.members))
            except ChatUnavailable as exc:
                if not str(exc).endswith("already_in_channel"):
                    raise
        return str(channel)

    def _find(self, name: str) -> str:
        cursor = ""
        while True:
            page = self._call(
                "conversations.list", types="public_channel", limit=200, cursor=cursor
            )
            for channel in page.get("channels", []):
                if channel.get("name") == name:
                    return str(channel["id"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor", "")
            if not cursor:
                raise ChatUnavailable(f"Slack conversations.list: no channel named {name}", False)

    def send(self, channel: str, message: ChatMessage) -> str:
        text, blocks = message.text, list(message.blocks)
        if self._locked:
            channel = self._drill_channel or channel
            text = text if text.startswith(DRILL_MARK) else f"{DRILL_MARK} {text}"
            blocks = [_drill_context(), *blocks] if blocks else []
        params: dict[str, Any] = {"channel": channel, "text": text}
        if blocks:
            params["blocks"] = blocks
        if message.thread is not None:
            params["thread_ts"] = message.thread
        return str(self._call("chat.postMessage", **params)["ts"])


def _drill_context() -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": f"*{DRILL_MARK}* rehearsal: nothing was changed"}],
    }
