"""Communicate: the public statement, gated on approval, and the war room."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field

from breachbook.actions.base import NOTHING, Action, ActionArgs, Prepared, register, require
from breachbook.actions.notify import (
    assessment,
    claim_states,
    incident_context,
    statement_context,
)
from breachbook.context import RunContext
from breachbook.errors import BreachbookError
from breachbook.letters import LetterData
from breachbook.models import LanguageTag
from breachbook.ports import Changed, Check, StatementRelease, not_configured
from breachbook.statement import (
    StatementKind,
    StatementVersion,
    all_versions,
    facts_json,
    facts_markdown,
    gather,
    keep_version,
    latest_version,
    render,
    stem,
    text_of,
)

STATEMENT = "statement.md"
PUBLISHER_SETTING = "set BREACHBOOK_PUBLISHER_URL"
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


class StatementArgs(ActionArgs):
    statement: StatementKind = Field(
        default="full",
        description="holding (early: what was found, what was done, what will be done) or "
        "full (who is affected, letters, authorities); templates/statements/KIND/LANGUAGE.md.j2",
    )
    languages: list[LanguageTag] = Field(
        default=["en", "zh-CN"], min_length=1, description="One text per language"
    )


class PublishArgs(ActionArgs):
    statement: StatementKind = Field(default="full", description="Which drafted statement")


def statement_template(statement: str, language: str) -> str:
    return f"statements/{statement}/{language}.md.j2"


@register
class DraftStatement(Action[StatementArgs]):
    name = "statement.draft"
    summary = (
        "Draft the public statement in each language from the ledger's facts only, with the "
        "facts behind each sentence; publishing is a separate, approved step."
    )
    changes = NOTHING
    args_model = StatementArgs

    def required_templates(self, raw_args: dict[str, Any]) -> list[str]:
        statement = raw_args.get("statement", "full")
        languages = raw_args.get("languages", ["en", "zh-CN"])
        if not isinstance(statement, str) or not isinstance(languages, list):
            return []
        return [statement_template(statement, str(lang)) for lang in languages]

    def prepare(self, args: StatementArgs, ctx: RunContext) -> Prepared:
        """Gather the facts, render each language, keep the version (a new one when the text
        changed or publishing was rejected since), and write every version for people."""
        found = assessment(ctx) if args.statement == "full" else None
        facts = gather(ctx.journal, ctx.incident, ctx.rules, found, claim_states(ctx))
        data = LetterData.load(ctx.renderer.templates_dir)
        base = incident_context(ctx)
        texts = {}
        for language in args.languages:
            body, sentences = render(
                ctx.renderer,
                statement_template(args.statement, language),
                language,
                facts,
                base,
                data,
                ctx.incident,
            )
            texts[language] = text_of(language, body, sentences)
        now = ctx.connectors.clock.now()
        kept = keep_version(ctx.journal, ctx.playbook, args.statement, texts, facts, now)
        documents = []
        for version in all_versions(ctx.journal, args.statement):
            for language, text in version.texts.items():
                path = f"{stem(version)}.{language}.md"
                ctx.workspace.write_document(path, text.body)
                documents.append(path)
        ctx.workspace.write_json(f"{stem(kept)}.facts.json", facts_json(kept))
        ctx.workspace.write_document(f"{stem(kept)}.facts.md", facts_markdown(kept))
        documents += [f"{stem(kept)}.facts.json", f"{stem(kept)}.facts.md"]
        if args.statement == "full":
            ctx.workspace.write_document(STATEMENT, texts[args.languages[0]].body)
            documents.append(STATEMENT)
        return Prepared(documents, {f"{args.statement}_statement_version": kept.version})

    def _kept(self, args: StatementArgs, ctx: RunContext) -> StatementVersion:
        kept = latest_version(ctx.journal, args.statement)
        if kept is None:
            raise BreachbookError(f"the {args.statement} statement has not been drafted")
        return kept

    def preflight(self, args: StatementArgs, target: str, ctx: RunContext) -> Check:
        kept = self._kept(args, ctx)
        rejected = (
            f", after a rejection by {kept.after_rejection.by}" if kept.after_rejection else ""
        )
        untranslated = [
            language for language in kept.texts if ctx.incident.texts_in(language) is None
        ]
        quoted = (
            f"; the incident texts have no {', '.join(untranslated)} translation, so that text "
            f"quotes them in '{ctx.incident.language}' (add them under translations: in the "
            "incident file)"
            if untranslated
            else ""
        )
        return Check.verified(
            f"drafted {stem(kept)} ({', '.join(kept.texts)}){rejected}, every sentence with "
            f"the ledger facts it relies on{quoted}",
            "template render from ledger facts",
        )

    def would(self, args: StatementArgs, target: str, ctx: RunContext) -> str:
        return f"keep the {args.statement} statement draft for review"

    def apply(self, args: StatementArgs, target: str, ctx: RunContext) -> Changed:
        kept = self._kept(args, ctx)
        return Changed(
            {
                "version": kept.version,
                "sha256": {k: t.sha256 for k, t in sorted(kept.texts.items())},
            }
        )


@register
class PublishStatement(Action[PublishArgs]):
    name = "statement.publish"
    summary = (
        "Publish the approved statement's latest version, each language once, on the "
        "configured status page or newsroom."
    )
    changes = "publishes the statement on the configured status page or newsroom"
    args_model = PublishArgs

    def _latest(self, args: PublishArgs, ctx: RunContext) -> StatementVersion:
        kept = latest_version(ctx.journal, args.statement)
        if kept is None:
            raise BreachbookError(f"the {args.statement} statement has not been drafted")
        return kept

    def targets(self, args: PublishArgs, ctx: RunContext) -> list[str]:
        """One per language of the latest version (`v2/en`): each is published once, and a
        new version is a new target."""
        kept = self._latest(args, ctx)
        return [f"v{kept.version}/{language}" for language in kept.texts]

    def preflight(self, args: PublishArgs, target: str, ctx: RunContext) -> Check:
        publisher = ctx.connectors.publisher
        if publisher is None:
            return not_configured("publisher", PUBLISHER_SETTING)
        return publisher.check_can_publish()

    def would(self, args: PublishArgs, target: str, ctx: RunContext) -> str:
        kept = self._latest(args, ctx)
        version, _, language = target.partition("/")
        text = kept.texts.get(language)
        digest = f" (sha256 {text.sha256[:16]})" if text else ""
        return f"publish the {args.statement} statement {version} in {language}{digest}"

    def apply(self, args: PublishArgs, target: str, ctx: RunContext) -> Changed:
        publisher = require(ctx.connectors.publisher, "publisher", PUBLISHER_SETTING)
        kept = self._latest(args, ctx)
        version, _, language = target.partition("/")
        if version != f"v{kept.version}":
            raise BreachbookError(
                f"{target}: superseded by v{kept.version} of the {args.statement} statement"
            )
        text = kept.texts[language]
        release = StatementRelease(
            incident_id=ctx.incident.id,
            statement=args.statement,
            version=kept.version,
            language=language,
            title=text.title,
            body=text.body,
            sha256=text.sha256,
        )
        return Changed(
            {
                "published": publisher.publish(release),
                "version": kept.version,
                "sha256": text.sha256,
            }
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
