"""Notify: find the affected customers, decide obligations, render and deliver letters,
draft the regulator notices. Only ids and counts leave this module."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, Field

from breachbook.actions.base import NOTHING, Action, ActionArgs, Prepared, register, require
from breachbook.batches import BatchStep
from breachbook.connectors.message import message_bytes, message_id
from breachbook.context import RunContext
from breachbook.deadlines import deliveries, fulfilled_times
from breachbook.errors import BreachbookError, MailRefused
from breachbook.journal import (
    SETTLE_WAITS,
    STEP_OUTCOME,
    Once,
    OutcomeUnknown,
    StepOutcome,
    describe_error,
)
from breachbook.ledger import Claim, ItemStatus
from breachbook.letter_status import FOR_POST
from breachbook.letters import ClaimState, LetterData, StepClaim
from breachbook.models import Customer
from breachbook.notices import NoticeDraft, NoticeWriter
from breachbook.notify import BATCH_SIZE as PAGE_SIZE
from breachbook.notify import (
    Assessment,
    LetterWriter,
    Obligations,
    assess,
    iter_valid_customers,
    obligation_record,
)
from breachbook.ports import (
    Changed,
    Check,
    Mail,
    OutgoingLetter,
    SentFolder,
    Verdict,
    not_configured,
)
from breachbook.reconcile import (
    RELAY_LOG,
    SENT_FOLDER,
    UNSETTLED,
    SentLookup,
    unsettled_letters,
)
from breachbook.register import decisions, filings, no_rule_line, record_decisions, record_draft
from breachbook.rules import Rule
from breachbook.workspace import Workspace

MAIL_SETTING = "set BREACHBOOK_OUTBOX"


class NoArgs(ActionArgs):
    pass


ASSESSMENT = "assessment"
LETTERS = "letters"
NOTICE = "notice"


def assessment(ctx: RunContext) -> Assessment:
    """Computed once per run from the customer directory and kept as a run record, so every
    later step, on any worker or after a restart, reads the same one."""
    found = ctx.journal.get(ASSESSMENT, "-", Assessment)
    if found is None:
        with RecipientFiles(ctx.workspace) as recipients:
            found = assess(ctx.connectors.customers, ctx.rules, ctx.incident, recipients.add)
        ctx.journal.put(ASSESSMENT, "-", found)
    return found


def recipients_path(rule_id: str) -> str:
    return f"recipients/{rule_id}.txt"


def recipients_sample(ctx: RunContext, rule_id: str, count: int) -> list[str]:
    """The first `count` customer ids owed the rule's letter, from this run's recipients file
    (empty when this run's folder has none)."""
    path = ctx.workspace.path(recipients_path(rule_id))
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return [line.strip() for line in itertools.islice(handle, count)]


class RecipientFiles:
    """`recipients/<rule>.txt` in the run folder, one customer id a line, written as the
    assessment finds them (ids only), each file put in place whole when the assessment ends."""

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace
        self._open: dict[str, tuple[Path, TextIO]] = {}

    def add(self, rule_id: str, customer_id: str) -> None:
        found = self._open.get(rule_id)
        if found is None:
            target = self._workspace.path(recipients_path(rule_id))
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".partial-{target.name}")
            found = self._open[rule_id] = (target, partial.open("w", encoding="utf-8"))
        found[1].write(f"{customer_id}\n")

    def __enter__(self) -> RecipientFiles:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        for target, handle in self._open.values():
            handle.close()
            partial = target.with_name(f".partial-{target.name}")
            if kind is None:
                os.replace(partial, target)
            else:
                partial.unlink(missing_ok=True)


def claim_states(ctx: RunContext, settle: bool = False) -> list[StepClaim]:
    """The playbook's steps a letter may claim (their action has texts in claims.yaml), as
    the ledger shows them now: DONE when the item of every target this run had for the step
    is done in the ledger (by this run or another: a concurrent run may hold one); WOULD when
    a drill planned every target (nothing is done); else NOT_DONE (failed, refused, waiting,
    not run yet). With `settle` (before sending), a target another run holds is looked at
    again for a few seconds, as the engine does. A step skipped by its condition is not
    claimed at all."""
    claimable = LetterData.load(ctx.renderer.templates_dir).claims
    journal = ctx.journal
    # every step's latest outcome in one query: a run asks this for each letter step's
    # preflight and description, and a tabletop exercise at every round
    outcomes = journal.ledger.records_of(journal.incident_id, journal.run_id, STEP_OUTCOME)
    steps = [step for _, step in ctx.playbook.ordered_steps() if step.action in claimable]
    # and every claimable step's items in one more
    now = journal.steps_statuses([step.id for step in steps])
    claims = []
    for step in steps:
        raw = outcomes.get(step.id)
        outcome = None if raw is None else StepOutcome.model_validate(raw)
        statuses = set(outcome.statuses.values()) if outcome else set()
        if outcome is not None and statuses <= {"skipped"}:
            continue
        targets = list(outcome.statuses) if outcome else []
        items = now[step.id]
        for pause in SETTLE_WAITS if settle else ():  # another run holds one: it settles
            if not any(items.get(t) is ItemStatus.CLAIMED for t in targets):
                break
            ctx.connectors.clock.sleep(pause)
            items = ctx.journal.statuses(step.id)
        if targets and all(items.get(t) is ItemStatus.DONE for t in targets):
            state = ClaimState.DONE
        elif statuses == {"planned"}:
            state = ClaimState.WOULD
        else:
            state = ClaimState.NOT_DONE
        claims.append(StepClaim(step.id, step.action, state))
    return claims


def letter_writer(ctx: RunContext, settle: bool = False) -> LetterWriter:
    """The run's letter writer, with the claims the ledger allows as of now."""
    return LetterWriter(
        ctx.renderer,
        ctx.playbook.organisation,
        ctx.incident,
        ctx.connectors.clock.now(),
        claim_states(ctx, settle),
    )


PREPARED_LETTERS = "letters-prepared"


class PreparedLetters(BaseModel):
    """What a letters step's prepare wrote into the run's folder, and from what: digests of
    everything its letters say besides the customer, and of the customers written for."""

    inputs: str
    customers: str
    documents: list[str]
    counts: dict[str, int]


def letters_inputs(ctx: RunContext, writer: LetterWriter, step: str) -> str:
    """A digest of what the letters a step writes depend on, besides the customers: the run's
    folder, the incident as of now, the organisation, the rules, every file of the templates
    folder, the notice date and what the ledger lets a letter claim."""
    digest = hashlib.sha256()
    for part in (
        step,
        str(ctx.workspace.root),
        ctx.incident.model_dump_json(),
        ctx.playbook.organisation.model_dump_json(),
        ctx.rules.model_dump_json(),
        writer.notice_day.isoformat(),
        repr(writer.claims),
    ):
        digest.update(part.encode() + b"\0")
    templates = ctx.renderer.templates_dir
    for path in sorted(p for p in templates.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(templates)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


class CustomersDigest:
    """A digest of the customers letters are written for, in the order they are read."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, customer: Customer) -> Customer:
        self._digest.update(customer.model_dump_json().encode() + b"\n")
        return customer

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def already_prepared(ctx: RunContext, step: str, inputs: str) -> Prepared | None:
    """What an earlier prepare of this run wrote, when it was written from the same inputs
    and the same customers: a resumed run (each round of a tabletop exercise) would write the
    same letters again. None when anything differs, or nothing was prepared yet."""
    kept = ctx.journal.get(PREPARED_LETTERS, step, PreparedLetters)
    if kept is None or kept.inputs != inputs:
        return None
    customers = CustomersDigest()
    for customer in iter_valid_customers(ctx.connectors.customers, ctx.incident, []):
        customers.add(customer)
    if customers.hexdigest() != kept.customers:
        return None
    return Prepared(list(kept.documents), dict(kept.counts))


def record_prepared(
    ctx: RunContext, step: str, inputs: str, customers: CustomersDigest, prepared: Prepared
) -> Prepared:
    ctx.journal.put(
        PREPARED_LETTERS,
        step,
        PreparedLetters(
            inputs=inputs,
            customers=customers.hexdigest(),
            documents=prepared.documents,
            counts=prepared.counts,
        ),
    )
    return prepared


class ClaimNotDone(BreachbookError):
    """A letter would state a step done that the ledger does not show done: not sent."""


class RenderedLetters(BaseModel):
    """What rendering found for one obligation: counts and a digest of every letter, in
    customer-id order, so a reviewer can tell the letters sent are the letters checked."""

    rule_id: str
    letters: int = 0
    digest: str = ""
    fallbacks: dict[str, int] = Field(default_factory=dict)
    untranslated: dict[str, int] = Field(default_factory=dict)


def _letter_hash(subject: str, body: str) -> str:
    return hashlib.sha256(f"Subject: {subject}\n\n{body}".encode()).hexdigest()


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
                "by_jurisdiction": found.by_jurisdiction,
                "unusable_records": len(found.rejected),
            },
        )
        return Prepared(["audience.json"], {"affected_customers": found.affected})

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        return _readable(ctx)

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        return "record the audience (counts only)"

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> Changed:
        return Changed({"affected_customers": assessment(ctx).affected})


@register
class AssessObligations(Action[NoArgs]):
    name = "obligations.assess"
    summary = "Decide who must be told what by when, per customer and per regulator, from rules/."
    changes = NOTHING
    args_model = NoArgs

    def targets(self, args: NoArgs, ctx: RunContext) -> list[str]:
        """The incident, and each place where people are affected but no rule says what is
        owed: a FAILED entry of its own, so the gap is never only a number in a file."""
        return ["incident"] + [f"{NO_RULE}{place}" for place in assessment(ctx).not_covered]

    def prepare(self, args: NoArgs, ctx: RunContext) -> Prepared:
        found = assessment(ctx)
        now = ctx.connectors.clock.now()
        record_decisions(ctx.journal, decisions(found, ctx.rules, ctx.incident, ctx.actor, now))
        documents = ["obligations.json"] + [recipients_path(r) for r in found.individual]
        ctx.workspace.write_json(
            "obligations.json",
            {
                "incident_id": ctx.incident.id,
                "assessed_at": now.isoformat(),
                "affected_customers": found.affected,
                "obligations": [
                    obligation_record(t, ctx.rules.rule(t.rule_id), ctx.incident, now)
                    for t in [*found.regulator.values(), *found.individual.values()]
                ],
                "no_rule_for_jurisdiction": found.not_covered,
                "no_rule_categories": found.not_covered_categories,
                "not_owed": found.not_owed,
                "covered_but_not_triggered": found.below_threshold,
                "unusable_records": [r.customer_id for r in found.rejected],
            },
        )
        return Prepared(
            documents,
            {
                "obligations": len(found.individual) + len(found.regulator),
                "customers_owed_notice": found.owed_customers,
            },
        )

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        if target.startswith(NO_RULE):
            place = target.removeprefix(NO_RULE)
            found = assessment(ctx)
            line = no_rule_line(
                place, found.not_covered[place], found.not_covered_categories.get(place, {})
            )
            return Check.set_aside(
                f"{line}: no rule says what they are owed; a person decides (add a rule to "
                "rules/obligations.yaml or record the decision in the breach register)",
                "rule coverage",
            )
        return _readable(ctx)

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        if target.startswith(NO_RULE):
            return "nothing: a person decides what these residents are owed"
        return "record the obligations and their deadlines"

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> Changed:
        found = assessment(ctx)
        return Changed(
            {rule_id: t.count for rule_id, t in {**found.individual, **found.regulator}.items()}
        )


def letter_path(rule_id: str, customer_id: str) -> str:
    return f"letters/{rule_id}/{customer_id}.txt"


class RenderArgs(ActionArgs):
    max_unusable_percent: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="Above this share of unusable customer records no letter goes out until "
        "a person decides; below it they are set aside for a manual notice and the rest go out",
    )


RECORD = "record:"
NO_RULE = "no-rule:"


@register
class RenderLetters(Action[RenderArgs]):
    name = "letters.render"
    summary = "Render every affected customer's letter for each obligation; all are checked before any is sent."
    changes = NOTHING
    args_model = RenderArgs

    def targets(self, args: RenderArgs, ctx: RunContext) -> list[str]:
        found = assessment(ctx)
        return sorted(found.individual) + [f"{RECORD}{r.customer_id}" for r in found.rejected]

    def prepare(self, args: RenderArgs, ctx: RunContext) -> Prepared:
        found = assessment(ctx)
        writer = letter_writer(ctx)
        inputs = letters_inputs(ctx, writer, self.name)
        kept = already_prepared(ctx, self.name, inputs)
        if kept is not None:
            return kept
        customers = CustomersDigest()
        obligations = Obligations(ctx.rules, ctx.incident)
        digests = {rule_id: hashlib.sha256() for rule_id in found.individual}
        rendered: Counter[str] = Counter()
        for customer in iter_valid_customers(ctx.connectors.customers, ctx.incident, []):
            customers.add(customer)
            for rule in obligations.for_customer(customer):
                subject, body = writer.render(customer, rule, obligations.exposed_for(customer))
                ctx.workspace.write_document(
                    letter_path(rule.id, customer.id), f"Subject: {subject}\n\n{body}", atomic=False
                )
                digest = digests.setdefault(rule.id, hashlib.sha256())
                digest.update(f"{customer.id} {_letter_hash(subject, body)}\n".encode())
                rendered[rule.id] += 1
        for rule_id, rule_digest in digests.items():
            ctx.journal.put(
                LETTERS,
                rule_id,
                RenderedLetters(
                    rule_id=rule_id,
                    letters=rendered[rule_id],
                    digest=rule_digest.hexdigest(),
                    fallbacks={loc: n for (r, loc), n in writer.fallbacks.items() if r == rule_id},
                    untranslated={
                        lang: n for (r, lang), n in writer.untranslated.items() if r == rule_id
                    },
                ),
            )
        documents = [f"letters/{rule_id}/" for rule_id in sorted(rendered)]
        if found.rejected:
            ctx.workspace.write_json(
                "rejected.json",
                [{"customer_id": r.customer_id, "problem": r.problem} for r in found.rejected],
            )
            documents.append("rejected.json")
        return record_prepared(
            ctx,
            self.name,
            inputs,
            customers,
            Prepared(
                documents,
                {
                    "letters": sum(rendered.values()),
                    "letters_in_fallback_language": sum(writer.fallbacks.values()),
                    "letters_with_untranslated_incident_texts": sum(writer.untranslated.values()),
                    "unusable_records": len(found.rejected),
                },
            ),
        )

    @staticmethod
    def _rendered(ctx: RunContext, rule_id: str) -> RenderedLetters:
        found = ctx.journal.get(LETTERS, rule_id, RenderedLetters)
        return found or RenderedLetters(rule_id=rule_id)

    def preflight(self, args: RenderArgs, target: str, ctx: RunContext) -> Check:
        found = assessment(ctx)
        if target.startswith(RECORD):
            customer_id = target.removeprefix(RECORD)
            problem = next(r.problem for r in found.rejected if r.customer_id == customer_id)
            return Check.set_aside(
                f"customer record {customer_id} cannot be used ({problem}); it is listed in "
                "rejected.json for a manual notice",
                "record validation",
            )
        unusable = len(found.rejected)
        share = 100 * unusable / (found.affected + unusable) if unusable else 0.0
        if share > args.max_unusable_percent:
            return Check.failed(
                f"{unusable} of {found.affected + unusable} affected customer records "
                f"({share:.1f}%) cannot be used, more than the {args.max_unusable_percent:g}% "
                "this step allows: a person decides before any letter goes out (rejected.json)",
                "record validation",
            )
        rendered = self._rendered(ctx, target)
        languages = (
            "; no template in the customer's language for "
            + ", ".join(f"{loc} ({n})" for loc, n in sorted(rendered.fallbacks.items()))
            + ", written in the rule's default language"
            if rendered.fallbacks
            else ""
        )
        untranslated = rendered.untranslated
        texts = (
            f"; the incident texts have no {', '.join(sorted(untranslated))} translation, so "
            f"{sum(untranslated.values())} letters quote them in '{ctx.incident.language}' "
            "(add them under translations: in the incident file)"
            if untranslated
            else ""
        )
        writer = letter_writer(ctx)
        rule = ctx.rules.rule(target)
        would, waits = writer.would_claim(rule), writer.waits_for(rule)
        claims = (
            f"; DRILL: they state {', '.join(would)} done, as LIVE would word them once done "
            "(nothing was done)"
            if would
            else ""
        ) + (
            f"; they say {', '.join(waits)} is planned, not done (the ledger does not show it done)"
            if waits
            else ""
        )
        return Check.verified(
            f"rendered {rendered.letters} letters, every field present{languages}{texts}{claims}",
            "StrictUndefined render",
        )

    def would(self, args: RenderArgs, target: str, ctx: RunContext) -> str:
        if target.startswith(RECORD):
            return "nothing: this customer needs a manual notice"
        return f"keep {self._rendered(ctx, target).letters} rendered letters for {target}"

    def apply(self, args: RenderArgs, target: str, ctx: RunContext) -> Changed:
        rendered = self._rendered(ctx, target)
        return Changed({"letters": rendered.letters, "digest": rendered.digest})


FAILURE_STREAK = 25
"""Letters in a row that did not go out (refused, failed, in doubt), none sent between, after
which a delivery stops: a relay that refuses everything is named once, not for every letter."""


class LettersForPost(BaseModel):
    """Customers owed a letter under one obligation with no email address: printed post
    serves them (by id, never an address)."""

    rule_id: str
    customer_ids: list[str]


class DeliveryStopped(BreachbookError):
    """Too many letters in a row did not go out: the relay refuses everything or is down."""


def message_path(rule_id: str, customer_id: str) -> str:
    return f"messages/{rule_id}/{customer_id}.eml"


def outgoing(
    ctx: RunContext,
    writer: LetterWriter,
    obligations: Obligations,
    rule: Rule,
    customer: Customer,
) -> tuple[OutgoingLetter, str]:
    """One customer's letter as it leaves (text and HTML, its Message-ID), and its hash."""
    letter = writer.render_letter(customer, rule, obligations.exposed_for(customer))
    sender = ctx.playbook.organisation.contact.email
    return OutgoingLetter(
        key=f"{rule.id}/{customer.id}",
        recipient=customer.email,
        subject=letter.subject,
        body=letter.text,
        html=letter.html,
        message_id=message_id(ctx.incident.id, rule.id, customer.id, sender),
        language=letter.language,
    ), _letter_hash(letter.subject, letter.text)


def owed_customers(
    ctx: RunContext, rule_id: str, after: str | None = None, through: str | None = None
) -> Iterator[Customer]:
    """The customers owed a letter under one obligation, from the customer database as it is
    now (a customer found since an earlier delivery is owed one too): all of them, or those
    after the customer `after` up to the customer `through`, in the directory's order."""
    obligations = Obligations(ctx.rules, ctx.incident)
    for page in ctx.connectors.customers.iter_affected(ctx.incident, PAGE_SIZE, after):
        for customer in page:
            if not isinstance(customer, Customer):
                continue
            if any(owed.id == rule_id for owed in obligations.for_customer(customer)):
                yield customer
            if customer.id == through:
                return


LETTER_BATCHES = "letter-batches"


class LetterBatches(BaseModel):
    """How one obligation's letters are split for delivery, kept once per run in the ledger
    so that every worker of the run splits them alike: the id of the last customer of each
    batch but the last, in the directory's order (ids only). The last batch runs to the end,
    so a customer found since the split is in the batch whose range holds it."""

    rule_id: str
    ends: list[str]

    def batch_ids(self) -> list[str]:
        return [f"{self.rule_id}{BATCH_MARK}{n}" for n in range(len(self.ends) + 1)]

    def customers(self, ctx: RunContext, number: int) -> Iterator[Customer]:
        """The owed customers of batch `number`, as the customer database holds them now."""
        after = self.ends[number - 1] if number else None
        through = self.ends[number] if number < len(self.ends) else None
        return owed_customers(ctx, self.rule_id, after, through)


BATCH_MARK = "#"
"""Between the obligation and the batch's number in a batch id: `us-ca-1798.82#3`."""


def letter_batches(ctx: RunContext, rule_id: str) -> LetterBatches:
    """The run's split of one obligation's letters: made at its first delivery, then read."""
    found = ctx.journal.get(LETTER_BATCHES, rule_id, LetterBatches)
    if found is None:
        found = LetterBatches(rule_id=rule_id, ends=batch_ends(ctx, rule_id))
        ctx.journal.put(LETTER_BATCHES, rule_id, found)
    return found


def batch_ends(ctx: RunContext, rule_id: str) -> list[str]:
    """Every `batch_size`th owed customer's id, but none at the very end (no empty batch)."""
    ends, count = [], 0
    for customer in owed_customers(ctx, rule_id):
        count += 1
        if count % ctx.batch_size == 0:
            ends.append(customer.id)
    if ends and count % ctx.batch_size == 0:
        ends.pop()
    return ends


@register
class DeliverLetters(Action[NoArgs]):
    name = "letters.deliver"
    summary = "Deliver the rendered letters by email, exactly once per customer and obligation."
    changes = "sends each letter through the mail connector"
    args_model = NoArgs
    itemized = True

    def targets(self, args: NoArgs, ctx: RunContext) -> list[str]:
        return sorted(assessment(ctx).individual)

    def prepare(self, args: NoArgs, ctx: RunContext) -> Prepared:
        """Every letter as the message that would leave (text and HTML parts, Message-ID),
        written under messages/ (unless the mode keeps no `message_copies`) and checked
        before the first is sent: a letter that fails its required-field check stops the step
        here, naming the customer and the field. Customers without an email address are left
        for printed post, by id. A resumed run whose letters would be the same as its last
        prepare's keeps those (`already_prepared`)."""
        writer = letter_writer(ctx)
        inputs = letters_inputs(ctx, writer, self.name)
        kept = already_prepared(ctx, self.name, inputs)
        if kept is not None:
            return kept
        customers = CustomersDigest()
        obligations = Obligations(ctx.rules, ctx.incident)
        sender = ctx.playbook.organisation.contact.email
        messages: Counter[str] = Counter()
        for_post: dict[str, list[str]] = {rule_id: [] for rule_id in assessment(ctx).individual}
        for customer in iter_valid_customers(ctx.connectors.customers, ctx.incident, []):
            customers.add(customer)
            for rule in obligations.for_customer(customer):
                if not customer.email:
                    for_post.setdefault(rule.id, []).append(customer.id)
                    continue
                letter, _ = outgoing(ctx, writer, obligations, rule, customer)
                if ctx.message_copies:
                    eml = message_bytes(letter, sender).decode("utf-8", "surrogateescape")
                    ctx.workspace.write_raw(message_path(rule.id, customer.id), eml, atomic=False)
                messages[rule.id] += 1
        for rule_id, ids in for_post.items():
            ctx.journal.put(FOR_POST, rule_id, LettersForPost(rule_id=rule_id, customer_ids=ids))
        return record_prepared(
            ctx,
            self.name,
            inputs,
            customers,
            Prepared(
                [f"messages/{rule_id}/" for rule_id in sorted(messages) if ctx.message_copies],
                {
                    "messages": sum(messages.values()),
                    "left_for_post": sum(len(ids) for ids in for_post.values()),
                },
            ),
        )

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        mail = ctx.connectors.mail
        check = not_configured("mail", MAIL_SETTING) if mail is None else mail.check_can_send()
        if check.verdict is Verdict.FAILED:
            return check
        for record in (ctx.connectors.sent_folder, ctx.connectors.relay_log):
            check = with_sent_folder(check, record)
            if check.verdict is Verdict.FAILED:
                return check
        waits = letter_writer(ctx, settle=True).waits_for(ctx.rules.rule(target))
        if waits:
            return check.waiting_for(
                waits,
                f"waits for {', '.join(waits)}: these letters state what was done, and the "
                "ledger does not show it done yet; a later run sends them once it is",
            )
        return check

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        mail = ctx.connectors.mail
        via = mail.describe() if mail else "(no mail connector)"
        would = letter_writer(ctx).would_claim(ctx.rules.rule(target))
        verb = "is" if len(would) == 1 else "are"
        claims = f", once {', '.join(would)} {verb} done (the letters state it)" if would else ""
        post = ctx.journal.get(FOR_POST, target, LettersForPost)
        left = (
            f" ({len(post.customer_ids)} without an email address left for post)"
            if post and post.customer_ids
            else ""
        )
        return f"send {assessment(ctx).individual[target].count} letters for {target} via {via}{claims}{left}"

    def apply_items(self, args: NoArgs, target: str, ctx: RunContext) -> Counter[Once]:
        """The obligation's letters in batches of `batch_size`, run by the run's batch
        runner (here one after another; in a flow, task runs in parallel)."""
        return ctx.batches(
            f"{self.name} {target}",
            self.batches(target, ctx),
            BatchStep(self.name, ctx, lambda batch_id: self.run_batch(batch_id, ctx)),
        )

    def batches(self, target: str, ctx: RunContext) -> list[str]:
        """The ids of the obligation's batches: ids and numbers only, no customer data."""
        return letter_batches(ctx, target).batch_ids()

    def run_batch(self, batch_id: str, ctx: RunContext) -> Counter[Once]:
        """Each letter of the batch is one item: claimed in the ledger, rendered from the
        customer database as it is now, handed to the mail connector (as many at once as it
        has connections), and settled. A letter whose outcome was never heard (its run was
        killed after the relay took it, or it ended in doubt) is taken over: settled as sent
        when the Sent folder or the relay's log holds its Message-ID, else sent again with
        the same Message-ID, so the receiving side can drop the copy."""
        rule_id, _, number = batch_id.rpartition(BATCH_MARK)
        mail = require(ctx.connectors.mail, "mail", MAIL_SETTING)
        rule = ctx.rules.rule(rule_id)
        sending = Sending(ctx, mail, self.name, letter_writer(ctx), rule)
        try:
            for customer in letter_batches(ctx, rule_id).customers(ctx, int(number)):
                if customer.email:
                    sending.offer(customer)
        except BaseException:
            sending.finish(send_waiting=False)
            raise
        sending.finish()
        return sending.tally


def with_sent_folder(check: Check, folder: SentFolder | None) -> Check:
    """The mail check, and a record's when one is configured (the Sent folder: log in and
    open it, nothing filed; the relay's log: open and read it): a record that cannot be read
    fails the step, naming the setting."""
    if folder is None:
        return check
    filed = folder.check_can_read()
    if filed.verdict is Verdict.FAILED:
        return filed
    return check.model_copy(update={"reason": f"{check.reason}; {filed.reason}"})


def refuse_unclaimed(writer: LetterWriter, rule: Rule, key: str) -> None:
    """Never send a letter that states a step done the ledger does not show done, whatever
    the preflight said (the second line of defence)."""
    held = writer.waits_for(rule) + writer.would_claim(rule)
    if held:
        raise ClaimNotDone(
            f"letter {key} would state {', '.join(held)} done; the ledger does not show it"
        )


LETTERS_PER_COMMIT = 32
"""Letters claimed together in one ledger transaction, and settled together in another: a
commit per letter would bound delivery by the ledger's disk. A kill leaves at most about
three times this many letters claimed and unsettled, which the resumed run looks up in the
Sent folder or the relay's log when one is configured, and sends again with the same
Message-ID when not found (those already handed over are copies a receiving side drops)."""


class Sending:
    """One step's letters in flight: claimed before and settled after in the ledger, by this
    thread and `LETTERS_PER_COMMIT` at a time, handed to the mail connector by a pool of
    `parallel_sends` threads (no ledger write in them)."""

    def __init__(
        self, ctx: RunContext, mail: Mail, step_id: str, writer: LetterWriter, rule: Rule
    ) -> None:
        self.ctx = ctx
        self.mail = mail
        self.step_id = step_id
        self.writer = writer
        self.rule = rule
        self.obligations = Obligations(ctx.rules, ctx.incident)
        self.sender = ctx.playbook.organisation.contact.email
        self.sent = SentLookup(
            {SENT_FOLDER: ctx.connectors.sent_folder, RELAY_LOG: ctx.connectors.relay_log},
            lambda: unsettled_letters(
                ctx.journal.statuses_in(step_id, UNSETTLED), rule.id, ctx.incident.id, self.sender
            ),
        )
        self.tally: Counter[Once] = Counter()
        self.window = max(1, mail.parallel_sends())
        self._pool = ThreadPoolExecutor(self.window, thread_name_prefix="breachbook-mail")
        self._waiting: list[tuple[Customer, str, str]] = []
        self._pending: dict[Future[str], tuple[Claim, str, str, str | None]] = {}
        self._outcomes: list[tuple[Claim, ItemStatus, Mapping[str, Any]]] = []
        self._streak = 0
        self._last_failure = ""

    def offer(self, customer: Customer) -> None:
        key = f"{self.rule.id}/{customer.id}"
        ident = message_id(self.ctx.incident.id, self.rule.id, customer.id, self.sender)
        self._waiting.append((customer, key, ident))
        if len(self._waiting) >= LETTERS_PER_COMMIT:
            self._send_waiting()

    def _send_waiting(self) -> None:
        """Skip the waiting letters the ledger shows sent (a re-run's), claim the others in
        one transaction, hand each claimed one over, and settle what has come back; stop
        when too many in a row did not go out."""
        journal = self.ctx.journal
        done = journal.statuses(self.step_id, [key for _, key, _ in self._waiting])
        waiting = [w for w in self._waiting if done.get(w[1]) is not ItemStatus.DONE]
        self.tally[Once.ALREADY_DONE] += len(self._waiting) - len(waiting)
        self._waiting = []
        if not waiting:
            return
        claims = journal.claim_many(
            self.step_id, [(key, {"message_id": ident}) for _, key, ident in waiting]
        )
        for (customer, key, ident), free in zip(waiting, claims, strict=True):
            resent = None
            if free is None:
                taken = self._take_over(key, ident)
                if taken is None:
                    continue
                claim, resent = taken
            else:
                claim = free
            try:
                refuse_unclaimed(self.writer, self.rule, key)
                letter, digest = outgoing(
                    self.ctx, self.writer, self.obligations, self.rule, customer
                )
            except BreachbookError as exc:
                self._settle(claim, ItemStatus.FAILED, {"error": describe_error(exc)})
                continue
            future = self._pool.submit(self.mail.send, letter)
            self._pending[future] = (claim, digest, ident, resent)
        while len(self._pending) > LETTERS_PER_COMMIT:
            self._collect(FIRST_COMPLETED)
        if len(self._outcomes) >= LETTERS_PER_COMMIT:
            self._flush()
        self._stop_if_refused()

    def _stop_if_refused(self) -> None:
        if self._streak >= FAILURE_STREAK:
            raise DeliveryStopped(
                f"{self.step_id}: {self._streak} letters in a row did not go out via "
                f"{self.mail.describe()} (last: {self._last_failure}); stopped before sending "
                "more, none of them recorded as sent"
            )

    def _take_over(self, key: str, ident: str) -> tuple[Claim, str] | None:
        """A letter not free: done already, or in flight elsewhere, or left in flight by a
        killed process of this run (or in doubt): then taken over and reconciled, settled as
        sent when the Sent folder or the relay's log holds its Message-ID, else to be sent
        again (with why, for its ledger entry)."""
        journal = self.ctx.journal
        latest = journal.ledger.item_status(journal.incident_id, self.step_id, key)
        if latest is ItemStatus.DONE:
            self.tally[Once.ALREADY_DONE] += 1
            return None
        taken = journal.take_over(
            self.step_id, key, {"message_id": ident, "reconcile": self.sent.how}
        )
        if taken is None:
            self.tally[Once.UNKNOWN if latest is ItemStatus.UNKNOWN else Once.BUSY] += 1
            return None
        found = self.sent.reconcile(ident)
        if found.found_in is not None:  # the relay took it: settled as sent, not sent again
            details = {"reference": found.found_in, "message_id": ident, "reconciled": found.how}
            self._settle(taken, ItemStatus.DONE, details)
            return None
        return taken, found.how

    def _collect(self, until: str) -> None:
        done, _ = wait(list(self._pending), return_when=until)
        # settled in the order sent, not the set's: the same run writes the same ledger
        for future in [sent for sent in self._pending if sent in done]:
            claim, digest, ident, resent = self._pending.pop(future)
            taken_over = {} if resent is None else {"reconciled": resent}
            try:
                reference = future.result()
            except MailRefused as exc:
                details = {"error": str(exc), "reply": exc.code, **taken_over}
                self._settle(claim, ItemStatus.FAILED, details)
            except OutcomeUnknown as exc:
                details = {"error": str(exc), "message_id": ident, **taken_over}
                self._settle(claim, ItemStatus.UNKNOWN, details)
            except Exception as exc:
                details = {"error": describe_error(exc), **taken_over}
                self._settle(claim, ItemStatus.FAILED, details)
            else:
                details = {"reference": reference, "sha256": digest, "message_id": ident}
                self._settle(claim, ItemStatus.DONE, details | taken_over)

    def _settle(self, claim: Claim, status: ItemStatus, details: Mapping[str, Any]) -> None:
        """Note an outcome, to be written with the next batch of them."""
        self._outcomes.append((claim, status, details))
        outcome = {ItemStatus.DONE: Once.DONE, ItemStatus.UNKNOWN: Once.UNKNOWN}
        self.tally[outcome.get(status, Once.FAILED)] += 1
        if status is ItemStatus.DONE:
            self._streak = 0
        else:
            self._streak += 1
            self._last_failure = str(details.get("error", status.value))

    def _flush(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        self.ctx.journal.settle_many(outcomes)

    def finish(self, send_waiting: bool = True) -> None:
        """Send the letters still waiting (not when stopping on an error: they are not
        claimed yet, a later run sends them), then settle every letter in flight."""
        try:
            if send_waiting and self._waiting:
                self._send_waiting()
        finally:
            try:
                while self._pending:
                    self._collect(ALL_COMPLETED)
            finally:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._flush()
        self._stop_if_refused()


@register
class DraftRegulatorNotices(Action[NoArgs]):
    name = "regulators.draft_notices"
    summary = "Draft each regulator notice the incident triggers, against its deadline, for legal to file."
    changes = NOTHING
    args_model = NoArgs

    def targets(self, args: NoArgs, ctx: RunContext) -> list[str]:
        return sorted(assessment(ctx).regulator)

    def prepare(self, args: NoArgs, ctx: RunContext) -> Prepared:
        """Each notice with everything its regulator asks for; the phase it is drafted for
        and what it still lacks are ledger records (a draft is not a filing)."""
        found = assessment(ctx)
        now = ctx.connectors.clock.now()
        sent = deliveries(ctx.journal)
        fulfilled = fulfilled_times(found, sent)
        filed = filings(ctx.journal)
        base = statement_context(ctx)
        writer = NoticeWriter(ctx.renderer, ctx.playbook.organisation, ctx.rules, ctx.incident)
        documents = []
        for rule_id in sorted(found.regulator):
            rule = ctx.rules.rule(rule_id)
            assert rule.notice_template is not None
            context, problems = writer.context(
                found, rule, now, fulfilled, sent, filed.get(rule_id, []), base
            )
            path = f"regulators/{rule_id}.md"
            ctx.workspace.write_document(path, ctx.renderer.render(rule.notice_template, context))
            record_draft(ctx.journal, rule_id, context["phase"], path, now)
            ctx.journal.put(
                NOTICE,
                rule_id,
                NoticeDraft(
                    rule_id=rule_id, phase=context["phase"], document=path, problems=problems
                ),
            )
            documents.append(path)
        return Prepared(documents, {"regulator_notices": len(documents)})

    def preflight(self, args: NoArgs, target: str, ctx: RunContext) -> Check:
        draft = ctx.journal.get(NOTICE, target, NoticeDraft)
        if draft is None:
            return Check.failed(f"no draft of regulators/{target}.md was made", "template render")
        if draft.problems:
            return Check(
                verdict=Verdict.FAILED,
                reason=f"regulators/{target}.md ({draft.phase}) cannot be filed as drafted: "
                + "; ".join(draft.problems),
                method="notice completeness",
                holds_back_dependents=False,
            )
        return Check.verified(
            f"drafted regulators/{target}.md ({draft.phase} notification), every element "
            "present; not filed until a person files it",
            "template render and notice completeness",
        )

    def would(self, args: NoArgs, target: str, ctx: RunContext) -> str:
        return f"keep the draft notice for {target} for legal to review and file"

    def apply(self, args: NoArgs, target: str, ctx: RunContext) -> Changed:
        return Changed({"draft": f"regulators/{target}.md"})


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
        **claimed_measures(ctx),
    }


def claimed_measures(ctx: RunContext, language: str = "en") -> dict[str, list[str]]:
    """The playbook's steps in claims.yaml's words: `measures_done` as the ledger shows them
    done (in a drill, as LIVE would word them once done), `measures_planned` while not."""
    data = LetterData.load(ctx.renderer.templates_dir)
    done, planned = [], []
    for claim in claim_states(ctx):
        text = data.claim_text(claim.action, language)
        if text is None:
            continue
        if claim.state is ClaimState.NOT_DONE:
            planned.append(text.planned)
        else:
            done.append(text.done)
    return {"measures_done": done, "measures_planned": planned}


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
