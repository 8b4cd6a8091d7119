"""Notify: find the affected customers, decide obligations, render and deliver letters,
draft the regulator notices. Only ids and counts leave this module."""

from __future__ import annotations

from collections import Counter
from typing import Any

from breachbook.actions.base import Action, ActionArgs, Prepared, register, require
from breachbook.context import RunContext
from breachbook.models import Customer
from breachbook.notify import (
    Assessment,
    LetterWriter,
    Obligations,
    assess,
    iter_valid_customers,
    obligation_record,
)
from breachbook.ports import Check, OutgoingLetter, not_configured

MAIL_SETTING = "BREACHBOOK_OUTBOX"
NOTHING = "nothing outside the run's output folder"


class NoArgs(ActionArgs):
    pass


def assessment(ctx: RunContext) -> Assessment:
    """Computed once per run from the customer directory, then shared by the notify steps."""
    found = ctx.state.get("assessment")
    if found is None:
        found = assess(ctx.connectors.customers, ctx.rules, ctx.incident)
        ctx.state["assessment"] = found
    return found


def _readable(ctx: RunContext) -> Check:
    return ctx.connectors.customers.check_readable()


@register
class FindAffectedCustomers(Action[NoArgs]):
    name = "customers.find_affected"
    summary = "Query the customer database for everyone whose exposed data the breach reached."
    changes = NOTHING
    args_model = NoArgs

    def prepare(self, args: NoArgs, ctx: RunContext) -> Prepared:
        found = assessment(ctx)
        ctx.workspace.write_json(
            "audience.json",
            {
                "incident_id": ctx.incident.id,
                "exposed_categories": sorted(c.value for c in ctx.incident.data_categories),
                "affected_customers": found.affected,
                "by_jurisdiction": dict(sorted(found.by_jurisdiction.items())),
                "unusable_records": len(found.rejected),
            },
        )
        return Prepared(["audience.json"], {"affected_customers": found.affected})

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        return _readable(ctx)

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        return "record the audience (counts only)"

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        return {"affected_customers": assessment(ctx).affected}


@register
class AssessObligations(Action[NoArgs]):
    name = "obligations.assess"
    summary = "Decide who must be told what by when, per customer and per regulator, from rules/."
    changes = NOTHING
    args_model = NoArgs

    def prepare(self, args: NoArgs, ctx: RunContext) -> Prepared:
        found = assessment(ctx)
        now = ctx.connectors.clock.now()
        documents = ["obligations.json"]
        for rule_id, tally in found.individual.items():
            path = f"recipients/{rule_id}.txt"
            ctx.workspace.write_raw(path, "".join(f"{cid}\n" for cid in tally.customer_ids))
            documents.append(path)
        ctx.workspace.write_json(
            "obligations.json",
            {
                "incident_id": ctx.incident.id,
                "assessed_at": now.isoformat(),
                "affected_customers": found.affected,
                "obligations": [
                    obligation_record(t, ctx.incident, now)
                    for t in [*found.regulator.values(), *found.individual.values()]
                ],
                "no_rule_for_jurisdiction": dict(sorted(found.not_covered.items())),
                "covered_but_not_triggered": dict(sorted(found.below_threshold.items())),
                "unusable_records": [r.customer_id for r in found.rejected],
            },
        )
        return Prepared(
            documents,
            {
                "obligations": len(found.individual) + len(found.regulator),
                "customers_owed_notice": len(
                    {c for t in found.individual.values() for c in t.customer_ids}
                ),
            },
        )

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        return _readable(ctx)

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        return "record the obligations and their deadlines"

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        found = assessment(ctx)
        return {rule_id: t.count for rule_id, t in {**found.individual, **found.regulator}.items()}


def letter_path(rule_id: str, customer_id: str) -> str:
    return f"letters/{rule_id}/{customer_id}.txt"


@register
class RenderLetters(Action[NoArgs]):
    name = "letters.render"
    summary = "Render every affected customer's letter for each obligation; all are checked before any is sent."
    changes = NOTHING
    args_model = NoArgs

    def targets(self, args: NoArgs, ctx: RunContext) -> list[str]:
        found = assessment(ctx)
        return sorted(found.individual) + (["unusable-records"] if found.rejected else [])

    def prepare(self, args: NoArgs, ctx: RunContext) -> Prepared:
        found = assessment(ctx)
        writer = LetterWriter(
            ctx.renderer, ctx.playbook.organisation, ctx.incident, ctx.connectors.clock.now()
        )
        obligations = Obligations(ctx.rules, ctx.incident)
        rendered: Counter[str] = Counter()
        for customer in iter_valid_customers(ctx.connectors.customers, obligations.exposed, []):
            for rule in obligations.for_customer(customer):
                subject, body = writer.render(customer, rule, obligations.exposed_for(customer))
                ctx.workspace.write_document(
                    letter_path(rule.id, customer.id), f"Subject: {subject}\n\n{body}", atomic=False
                )
                rendered[rule.id] += 1
        documents = [f"letters/{rule_id}/" for rule_id in sorted(rendered)]
        if found.rejected:
            ctx.workspace.write_json(
                "rejected.json",
                [{"customer_id": r.customer_id, "problem": r.problem} for r in found.rejected],
            )
            documents.append("rejected.json")
        ctx.state["letters"] = rendered
        ctx.state["letter_fallbacks"] = writer.fallbacks
        ctx.state["letter_untranslated"] = writer.untranslated
        return Prepared(
            documents,
            {
                "letters": sum(rendered.values()),
                "letters_in_fallback_language": sum(writer.fallbacks.values()),
                "letters_with_untranslated_incident_texts": sum(writer.untranslated.values()),
                "unusable_records": len(found.rejected),
            },
        )

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        if target == "unusable-records":
            count = len(assessment(ctx).rejected)
            return Check.failed(
                f"{count} customer record(s) could not be used; see rejected.json and notify them by hand",
                "record validation",
            )
        fallbacks = {
            loc: n
            for (rule_id, loc), n in ctx.state["letter_fallbacks"].items()
            if rule_id == target
        }
        languages = (
            "; no template in the customer's language for "
            + ", ".join(f"{loc} ({n})" for loc, n in sorted(fallbacks.items()))
            + ", written in the rule's default language"
            if fallbacks
            else ""
        )
        untranslated = {
            language: n
            for (rule_id, language), n in ctx.state["letter_untranslated"].items()
            if rule_id == target
        }
        texts = (
            f"; the incident texts have no {', '.join(sorted(untranslated))} translation, so "
            f"{sum(untranslated.values())} letters quote them in '{ctx.incident.language}' "
            "(add them under translations: in the incident file)"
            if untranslated
            else ""
        )
        return Check.verified(
            f"rendered {ctx.state['letters'][target]} letters, every field present{languages}{texts}",
            "StrictUndefined render",
        )

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        if target == "unusable-records":
            return "nothing: these customers need a manual notice"
        return f"keep {ctx.state['letters'][target]} rendered letters for {target}"

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        return {"letters": ctx.state["letters"].get(target, 0)}


@register
class DeliverLetters(Action[NoArgs]):
    name = "letters.deliver"
    summary = "Deliver the rendered letters, exactly once per customer and obligation."
    changes = "sends each letter through the mail connector"
    args_model = NoArgs

    def targets(self, args: NoArgs, ctx: RunContext) -> list[str]:
        return sorted(assessment(ctx).individual)

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        mail = ctx.connectors.mail
        return not_configured("mail", MAIL_SETTING) if mail is None else mail.check_can_send()

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        mail = ctx.connectors.mail
        via = mail.describe() if mail else "(no mail connector)"
        return f"send {assessment(ctx).individual[target].count} letters for {target} via {via}"

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        mail = require(ctx.connectors.mail, "mail", MAIL_SETTING)
        obligations = Obligations(ctx.rules, ctx.incident)
        sent = skipped = uncertain = 0
        step_id = f"{self.name}:{target}"
        for customer in iter_valid_customers(ctx.connectors.customers, obligations.exposed, []):
            if target not in {rule.id for rule in obligations.for_customer(customer)}:
                continue
            key = f"{target}/{customer.id}"
            if ctx.ledger.completed(ctx.incident.id, step_id, key):
                skipped += 1
                continue
            if ctx.ledger.attempted(ctx.incident.id, step_id, key):
                uncertain += 1  # sent or not before a crash: never risk a second letter
                continue
            ctx.record(step_id, key, "attempt", "started", {})
            reference = mail.send(self._letter(ctx, key, target, customer))
            ctx.record(step_id, key, "outcome", "completed", {"reference": reference})
            sent += 1
        if uncertain:
            ctx.record(step_id, "-", "outcome", "needs-review", {"uncertain_letters": uncertain})
        return {"sent": sent, "already_sent": skipped, "uncertain": uncertain}

    @staticmethod
    def _letter(ctx: RunContext, key: str, rule_id: str, customer: Customer) -> OutgoingLetter:
        text = ctx.workspace.path(letter_path(rule_id, customer.id)).read_text(encoding="utf-8")
        head, _, body = text.partition("\n\n")
        return OutgoingLetter(key, customer.email, head.removeprefix("Subject: "), body)


@register
class DraftRegulatorNotices(Action[NoArgs]):
    name = "regulators.draft_notices"
    summary = "Draft each regulator notice the incident triggers, against its deadline, for legal to file."
    changes = NOTHING
    args_model = NoArgs

    def targets(self, args: NoArgs, ctx: RunContext) -> list[str]:
        return sorted(assessment(ctx).regulator)

    def prepare(self, args: NoArgs, ctx: RunContext) -> Prepared:
        found = assessment(ctx)
        now = ctx.connectors.clock.now()
        documents = []
        for rule_id, tally in sorted(found.regulator.items()):
            assert tally.rule.notice_template is not None
            text = ctx.renderer.render(
                tally.rule.notice_template,
                {
                    **statement_context(ctx),
                    "obligation": obligation_record(tally, ctx.incident, now),
                },
            )
            path = f"regulators/{rule_id}.md"
            ctx.workspace.write_document(path, text)
            documents.append(path)
        return Prepared(documents, {"regulator_notices": len(documents)})

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        return Check.verified(f"drafted regulators/{target}.md", "template render")

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        return f"keep the draft notice for {target} for legal to review and file"

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        return {"draft": f"regulators/{target}.md"}


def statement_context(ctx: RunContext) -> dict[str, Any]:
    """What statements and notices may mention: the incident and counts, no customer's data."""
    found = assessment(ctx)
    countries: Counter[str] = Counter()
    for place, count in found.by_jurisdiction.items():
        countries[place.split("-")[0]] += count
    return {
        **incident_context(ctx),
        "affected_customers": found.affected,
        "affected_by_country": dict(sorted(countries.items())),
    }


def incident_context(ctx: RunContext) -> dict[str, Any]:
    """The incident and organisation only: needs no read of the customer database."""
    incident = ctx.incident
    return {
        "org": ctx.playbook.organisation.model_dump(),
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "description": incident.description,
            "cause": incident.cause,
            "started_at": incident.started_at.isoformat(),
            "discovered_at": incident.discovered_at.isoformat(),
            "data_categories": [c.value for c in incident.data_categories],
            "measures_taken": incident.measures_taken,
            "individual_steps": incident.individual_steps,
            "likely_consequences": incident.likely_consequences,
        },
        "today": ctx.connectors.clock.now().date().isoformat(),
    }
