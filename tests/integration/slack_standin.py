"""A Slack Web API stand-in on loopback, for the real slack-sdk client (base_url pointed here).

It answers the methods the war room uses as Slack does: bearer tokens, each token's scopes in
the `x-oauth-scopes` header of every answer and `missing_scope` when a method needs one it
lacks, Slack's error shape (`{"ok": false, "error": "..."}`), 429 with Retry-After on demand,
and an outage (503) on demand. Every call is recorded, so tests assert on what reached Slack.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ALL_SCOPES = ("chat:write", "channels:manage", "channels:join", "channels:read")

NEEDS = {
    "auth.test": None,
    "chat.postMessage": "chat:write",
    "conversations.create": "channels:manage",
    "conversations.setTopic": "channels:manage",
    "conversations.invite": "channels:manage",
    "conversations.join": "channels:join",
    "conversations.list": "channels:read",
}


@dataclass
class Call:
    """One request that reached the stand-in, and what it answered."""

    method: str
    token: str | None
    params: dict[str, Any]
    status: int
    error: str | None
    at: float


@dataclass
class Channel:
    id: str
    name: str
    topic: str = ""
    members: set[str] = field(default_factory=set)
    messages: list[dict[str, Any]] = field(default_factory=list)


class SlackStandIn:
    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, ...]] = {"xoxb-test": ALL_SCOPES}
        self.calls: list[Call] = []
        self.channels: dict[str, Channel] = {}
        self.rate_limited = 0
        """The next this many calls answer 429."""
        self.rate_limit_every = 0
        """When > 0, every this-many-th call answers 429 (a sustained rate-limit regime)."""
        self.retry_after = 0
        self.down = False
        self.url = ""
        self._ids = itertools.count(1)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def add_channel(self, name: str) -> Channel:
        channel = Channel(id=f"C{next(self._ids):08d}", name=name)
        self.channels[channel.id] = channel
        return channel

    def by_name(self, name: str) -> Channel | None:
        return next((c for c in self.channels.values() if c.name == name.lstrip("#")), None)

    def posts(self) -> list[Call]:
        return [c for c in self.calls if c.method == "chat.postMessage" and c.error is None]

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    # -- the API -------------------------------------------------------------------------

    async def handle(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            params: dict[str, Any] = json.loads(body or b"{}")
        else:
            params = dict(parse_qsl(body.decode()))
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        with self._lock:
            status, answer, headers = self._answer(method, token, params)
            self.calls.append(
                Call(method, token, params, status, answer.get("error"), time.monotonic())
            )
        return JSONResponse(answer, status_code=status, headers=headers)

    def _answer(
        self, method: str, token: str | None, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        n = next(self._counter)
        if self.down:
            return 503, {"ok": False, "error": "service_unavailable"}, {}
        limited = self.rate_limited > 0 or (
            self.rate_limit_every > 0 and n % self.rate_limit_every == 0
        )
        if limited:
            self.rate_limited = max(0, self.rate_limited - 1)
            return (
                429,
                {"ok": False, "error": "ratelimited"},
                {"Retry-After": str(self.retry_after)},
            )
        if method not in NEEDS:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        if token is None:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token not in self.tokens:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        scopes = self.tokens[token]
        headers = {"x-oauth-scopes": ",".join(scopes)}
        needed = NEEDS[method]
        if needed is not None and needed not in scopes:
            answer = {
                "ok": False,
                "error": "missing_scope",
                "needed": needed,
                "provided": ",".join(scopes),
            }
            return 200, answer, headers
        return 200, getattr(self, "_" + method.replace(".", "_"))(params), headers

    def _find(self, ref: Any) -> Channel | None:
        ref = str(ref or "")
        return self.channels.get(ref) or self.by_name(ref)

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://example.slack.com/",
            "team": "Example",
            "user": "breachbook",
            "team_id": "T0001",
            "user_id": "U0BOT",
        }

    def _conversations_create(self, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("name", ""))
        if self.by_name(name) is not None:
            return {"ok": False, "error": "name_taken"}
        channel = self.add_channel(name)
        channel.members.add("U0BOT")
        return {"ok": True, "channel": {"id": channel.id, "name": channel.name}}

    def _conversations_list(self, params: dict[str, Any]) -> dict[str, Any]:
        listed = [{"id": c.id, "name": c.name} for c in self.channels.values()]
        return {"ok": True, "channels": listed, "response_metadata": {"next_cursor": ""}}

    def _conversations_join(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._find(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        channel.members.add("U0BOT")
        return {"ok": True, "channel": {"id": channel.id}}

    def _conversations_setTopic(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        channel = self._find(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        channel.topic = str(params.get("topic", ""))
        return {"ok": True, "channel": {"id": channel.id, "topic": {"value": channel.topic}}}

    def _conversations_invite(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._find(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        users = set(str(params.get("users", "")).split(","))
        if users <= channel.members:
            return {"ok": False, "error": "already_in_channel"}
        channel.members |= users
        return {"ok": True, "channel": {"id": channel.id}}

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        channel = self._find(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = f"{time.time():.6f}"
        channel.messages.append({**params, "ts": ts})
        return {"ok": True, "channel": channel.id, "ts": ts}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_standin() -> Iterator[SlackStandIn]:
    """The stand-in served by uvicorn on a free loopback port, in a thread."""
    standin = SlackStandIn()
    app = Starlette(routes=[Route("/api/{method}", standin.handle, methods=["POST", "GET"])])
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the Slack stand-in did not start")
        time.sleep(0.01)
    standin.url = f"http://127.0.0.1:{port}/api/"
    try:
        yield standin
    finally:
        server.should_exit = True
        thread.join(timeout=10)
