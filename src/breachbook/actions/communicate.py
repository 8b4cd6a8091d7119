"""Communicate: the public statement, gated on approval, and the war room."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from breachbook.actions.base import Action, ActionArgs, Prepared, register, require
from breachbook.actions.notify import NOTHING, incident_context, statement_context
from breachbook.context import RunContext
from breachbook.ports import Check, not_configured

STATEMENT = "statement.md"
PUBLISHER_SETTING = "nothing: no publisher adapter is built in this version"
CHAT_SETTING = "nothing: no chat adapter is built in this version"


class TemplateArgs(ActionArgs):
    template: str = Field(pattern=r"^[A-Za-z0-9_./-]+\.j2$")


class ChatArgs(TemplateArgs):
    include_counts: bool = Field(
        default=False,
        description="Offer affected-customer counts to the template (reads the customer database)",
    )


class NoArgs(ActionArgs):
    pass


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
        ctx.workspace.write_document(
            STATEMENT, ctx.renderer.render(args.template, statement_context(ctx))
        )
        return Prepared([STATEMENT], {})

    def preflight(self, args: TemplateArgs, target: str, ctx: RunContext) -> Check:
        return Check.verified(f"drafted {STATEMENT} from {args.template}", "template render")

    def would(self, args: TemplateArgs, target: str, ctx: RunContext) -> str:
        return f"keep the draft {STATEMENT} for review"

    def apply(self, args: TemplateArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        return {"draft": STATEMENT}


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

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        publisher = require(ctx.connectors.publisher, "publisher", PUBLISHER_SETTING)
        body = ctx.workspace.path(STATEMENT).read_text(encoding="utf-8")
        return {"published": publisher.publish(ctx.incident.title, body)}


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
        return [ctx.playbook.war_room.channel]

    def _path(self, args: ChatArgs) -> str:
        return "chat/" + args.template.rsplit("/", 1)[-1].removesuffix(".j2")

    def prepare(self, args: ChatArgs, ctx: RunContext) -> Prepared:
        path = self._path(args)
        context = statement_context(ctx) if args.include_counts else incident_context(ctx)
        ctx.workspace.write_document(path, ctx.renderer.render(args.template, context))
        return Prepared([path], {})

    def preflight(self, args: ChatArgs, target: str, ctx: RunContext) -> Check:
        chat = ctx.connectors.chat
        return not_configured("chat", CHAT_SETTING) if chat is None else chat.check_can_post(target)

    def would(self, args: ChatArgs, target: str, ctx: RunContext) -> str:
        return f"post {self._path(args)} to {target}"

    def apply(self, args: ChatArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        chat = require(ctx.connectors.chat, "chat", CHAT_SETTING)
        text = ctx.workspace.path(self._path(args)).read_text(encoding="utf-8")
        return {"message": chat.post(target, text)}
