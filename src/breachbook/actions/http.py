"""Contain through an organisation's own API: one HTTP request (disable a portal account,
revoke a session), its declared health check for drills, and an optional undo request.

Header values `secret:NAME` stay references here and in the ledger; the adapter resolves
them from BREACHBOOK_HTTP_SECRETS when sending. The body is a string of the step's `with`,
so it is rendered from the incident in the playbook's sandbox; statuses are reported, never
a response body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from breachbook.actions.base import Action, ActionArgs, NotReversible, register, require
from breachbook.context import Connectors, RunContext
from breachbook.errors import ContainmentRefused
from breachbook.ports import Changed, Check, HttpCall, HttpClient, not_configured

HTTP_SETTING = "set BREACHBOOK_HTTP_SECRETS (a JSON object of secrets, may be {})"


def _http_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or " " in value:
        raise ValueError(f"URL must start with http:// or https://, not {value[:40]!r}")
    return value


Url = Annotated[str, AfterValidator(_http_url)]
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")]
Status = Annotated[int, Field(ge=100, le=599)]


class Request(ActionArgs):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    url: Url
    headers: dict[HeaderName, str] = {}
    """A value `secret:NAME` is the BREACHBOOK_HTTP_SECRETS entry NAME."""
    body: str | None = None
    expect: list[Status] = Field(default=[200, 201, 202, 204], min_length=1)

    def call(self) -> HttpCall:
        return HttpCall(self.method, self.url, dict(self.headers), self.body)


class SafeRequest(Request):
    """The health check a drill may send: GET or HEAD only."""

    method: Literal["GET", "HEAD"]
    expect: list[Status] = Field(default=[200, 204], min_length=1)


class HttpArgs(Request):
    check: SafeRequest | None = None
    """The declared safe request preflight sends; none: the step is UNVERIFIED in a drill."""
    undo: Request | None = None
    """The request `breachbook restore` sends to reverse this one."""


def _status(call: HttpCall, status: int, expect: list[int]) -> str:
    return f"{call.method} {call.url} answered {status} (expected {', '.join(map(str, expect))})"


def _send(port: HttpClient, request: Request) -> int:
    call = request.call()
    status = port.send(call)
    if status not in request.expect:
        raise ContainmentRefused(_status(call, status, request.expect))
    return status


@register
class HttpRequest(Action[HttpArgs]):
    name = "http.request"
    summary = "Call the organisation's own containment API (e.g. disable a portal account)."
    changes = "one HTTP request to the organisation's API"
    args_model = HttpArgs
    reversible = True

    def targets(self, args: HttpArgs, ctx: RunContext) -> list[str]:
        return [f"{args.method} {args.url}"]

    def preflight(self, args: HttpArgs, target: str, ctx: RunContext) -> Check:
        port = ctx.connectors.http
        if port is None:
            return not_configured("HTTP", HTTP_SETTING)
        if args.check is None:
            return Check.unverified("no health check declared (with.check)")
        call = args.check.call()
        status = port.probe(call)
        reason = _status(call, status, args.check.expect)
        if status in args.check.expect:
            return Check.verified(reason, "HTTP health check")
        return Check.failed(reason, "HTTP health check")

    def would(self, args: HttpArgs, target: str, ctx: RunContext) -> str:
        return f"send {target}"

    def apply(self, args: HttpArgs, target: str, ctx: RunContext) -> Changed:
        port = require(ctx.connectors.http, "HTTP", HTTP_SETTING)
        status = _send(port, args)
        prior = None if args.undo is None else {"undo": args.undo.model_dump()}
        return Changed({"status": status}, prior)

    def undo(self, target: str, prior: Mapping[str, Any], connectors: Connectors) -> Changed:
        if "undo" not in prior:
            raise NotReversible(f"{target} declared no undo request")
        port = require(connectors.http, "HTTP", HTTP_SETTING)
        request = Request.model_validate(prior["undo"])
        return Changed({"status": _send(port, request)})
