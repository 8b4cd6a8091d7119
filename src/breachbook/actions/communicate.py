"""Communicate: the public statement, gated on approval, and the war room."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field

from breachbook.actions.base import NOTHING, Action, ActionArgs, Prepared, register, require
from breachbook.actions.notify import incident_context, statement_context
from breachbook.context import RunContext
from breachbook.errors import BreachbookError
from breachbook.ports import Changed, Check, not_configured

STATEMENT = "statement.md"
PUBLISHER_SETTING = "none is built in this version yet"
CHAT_SETTING = "set BREACHBOOK_SLACK_TOKEN (and BREACHBOOK_SLACK_DRILL_CHANNEL for drills)"


class TemplateArgs(ActionArgs):
    template: str = Field(pattern=r"^[A-Za-z0-9_./-]+\.j2$")


class ChatArgs(TemplateArgs):
    include_counts: bool = Field(
        default=False,
        description="Offer affected-customer counts to the template (reads the customer database)",
    )


class NoArgs(ActionArgs):
    pass


TEXT = "text"


class Text(BaseModel):
    """A drafted text kept as a run record (no customer data): what later steps publish or
    post is what was drafted, read from the ledger, never from the output folder."""

    path: str
    body: str
    sha256: str

    @classmethod
    def of(cls, path: str, body: str) -> Text:
        return cls(path=path, body=body, sha256=hashlib.sha256(body.encode()).hexdigest())


def drafted(ctx: RunContext, path: str) -> Text:
    found = ctx.journal.get(TEXT, path, Text)
    if found is None:
        raise BreachbookError(f"{path} has not been drafted in this run")
    return found


def draft(ctx: RunContext, path: str, body: str) -> int:
    """Keep the text as a run record (a new version) and write it for people."""
    ctx.workspace.write_document(path, body)
    return ctx.journal.put(TEXT, path, Text.of(path, body))


@register
class DraftStatement(Action[TemplateArgs]):
    name = "statement.draft"
    summary = (
        "Draft the public statement from its template; publishing is a separate, approved step."
    )
    changes = NOTHING
    args_model = TemplateArgs

    def required_templates(self, raw_args: dict[str, Any]) -> list[str]:
        template = raw_args.get("template")
        return [template] if isinstance(template, str) else []

    def prepare(self, args: TemplateArgs, ctx: RunContext) -> Prepared:
        draft(ctx, STATEMENT, ctx.renderer.render(args.template, statement_context(ctx)))
        return Prepared([STATEMENT], {})

    def preflight(self, args: TemplateArgs, target: str, ctx: RunContext) -> Check:
        return Check.verified(f"drafted {STATEMENT} from {args.template}", "template render")

    def would(self, args: TemplateArgs, target: str, ctx: RunContext) -> str:
        return f"keep the draft {STATEMENT} for review"

    def apply(self, args: TemplateArgs, target: str, ctx: RunContext) -> Changed:
        return Changed({"draft": STATEMENT, "sha256": drafted(ctx, STATEMENT).sha256})


@register
class PublishStatement(Action[NoArgs]):
    name = "statement.publish"
    summary = "Publish the approved public statement."
    changes = "publishes the statement on the configured status page or newsroom"
    args_model = NoArgs

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        publisher = ctx.connectors.publisher
        return (
            not_configured("publisher", PUBLISHER_SETTING)
            if publisher is None
            else publisher.check_can_publish()
        )

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        return f"publish {STATEMENT}"

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> Changed:
        publisher = require(ctx.connectors.publisher, "publisher", PUBLISHER_SETTING)
        text = drafted(ctx, STATEMENT)
        return Changed(
            {"published": publisher.publish(ctx.incident.title, text.body), "sha256": text.sha256}
        )


@register
class PostToWarRoom(Action[ChatArgs]):
    name = "chat.post"
    summary = "Post an update to the incident war room from a template (counts and ids, no customer data)."
    changes = "posts a message to the war-room channel"
    args_model = ChatArgs

    def required_templates(self, raw_args: dict[str, Any]) -> list[str]:
        template = raw_args.get("template")
        return [template] if isinstance(template, str) else []

    def targets(self, args: ChatArgs, ctx: RunContext) -> list[str]:
        room = ctx.connectors.war_room
        return [ctx.playbook.war_room.channel if room is None else room.label]

    def _path(self, args: ChatArgs) -> str:
        return "chat/" + args.template.rsplit("/", 1)[-1].removesuffix(".j2")

    def prepare(self, args: ChatArgs, ctx: RunContext) -> Prepared:
        path = self._path(args)
        context = statement_context(ctx) if args.include_counts else incident_context(ctx)
        draft(ctx, path, ctx.renderer.render(args.template, context))
        return Prepared([path], {})

    def preflight(self, args: ChatArgs, target: str, ctx: RunContext) -> Check:
        chat = ctx.connectors.chat
        return not_configured("chat", CHAT_SETTING) if chat is None else chat.check_can_post(target)

    def would(self, args: ChatArgs, target: str, ctx: RunContext) -> str:
        return f"post {self._path(args)} to {target}"

    def apply(self, args: ChatArgs, target: str, ctx: RunContext) -> Changed:
        """Into the war room's queue in the ledger (delivered in order, even after an outage),
        or, with a chat but no war room, straight to the channel."""
        text = drafted(ctx, self._path(args))
        room = ctx.connectors.war_room
        if room is not None:
            return Changed({"queued": room.say(text.body), "sha256": text.sha256})
        chat = require(ctx.connectors.chat, "chat", CHAT_SETTING)
        return Changed({"message": chat.post(target, text.body), "sha256": text.sha256})
