"""Approvals inside a running flow: the step pauses with a form that says what is to be
approved, each answer is judged and recorded in the ledger, and a role that does not answer
in time is escalated to its backup, then the step stops waiting, undecided: it never
proceeds silently.

Core code: the pause itself is a port (`Pauses`), Prefect's in the flow run
(`breachbook.connectors.prefect_pauses`), a scripted one in tests."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

from breachbook.actions.base import Action
from breachbook.clock import Clock
from breachbook.connectors.ledger_approvals import (
    Wait,
    approve_command,
    ask,
    decision_of,
    escalate,
    expire,
    record_answer,
    roster_check,
)
from breachbook.context import RunContext
from breachbook.journal import RunJournal
from breachbook.playbook import ApprovalGate, Step
from breachbook.ports import ApprovalRequest, Chat, Check, Decision, DecisionStatus, Pauses
from breachbook.roster import Roster, eligible, escalation_timeout

LETTER_SAMPLE = 5
"""Customer ids shown per obligation for spot checks (ids only, never names or addresses)."""


def approval_request(
    ctx: RunContext,
    step: Step,
    gate: ApprovalGate,
    action: Action[Any],
    args: Any,
    targets: list[str],
) -> ApprovalRequest:
    """What the people of the role are asked to approve, from the ledger's records: the
    statement as drafted (and which version, so a decision counts for that version only),
    the letters per obligation, the targets and what would be done."""
    from breachbook.actions.communicate import STATEMENT, TEXT, Text
    from breachbook.actions.notify import ASSESSMENT, recipients_sample
    from breachbook.notify import Assessment
    from breachbook.statement import latest_version, version_digest, version_label

    statement = letters = kept = None
    if step.action == "statement.publish":
        statement = ctx.journal.get(TEXT, STATEMENT, Text)
        kept = latest_version(ctx.journal, args.statement)
    if step.action == "letters.deliver":
        letters = ctx.journal.get(ASSESSMENT, "-", Assessment)
    owed = {rule: letters.individual[rule] for rule in targets} if letters else {}
    return ApprovalRequest(
        step_id=step.id,
        title=step.title,
        gate=gate,
        starter=ctx.actor,
        war_room=ctx.playbook.war_room.channel,
        targets=targets,
        would=[action.would(args, target, ctx) for target in targets],
        statement=statement.body if statement else None,
        letters={rule: tally.count for rule, tally in owed.items()},
        letter_sample={rule: recipients_sample(ctx, rule, LETTER_SAMPLE) for rule in owed},
        version=version_label(kept) if kept else None,
        digest=version_digest(kept) if kept else None,
    )


def request_markdown(request: ApprovalRequest, roster: Roster | None, wait: Wait) -> str:
    """The form's description in the Prefect UI: what is asked, of whom, and what it does."""
    gate = request.gate
    people = ", ".join(eligible(gate, roster, request.starter)) or "nobody is named"
    rules = [f"{gate.people} different people of the role must approve"] if gate.people > 1 else []
    if gate.not_the_starter:
        rules.append(f"not {request.starter}, who started this run")
    lines = [
        f"## Approve: {request.title} (`{request.step_id}`)",
        "",
        *(
            [
                f"Version **{request.version}** (sha256 `{request.digest}`): this answer counts "
                "for this version only.",
                "",
            ]
            if request.version
            else []
        ),
        f"Role **{gate.role}**: {people}." + (f" Rule: {'; '.join(rules)}." if rules else ""),
        "Give your name as listed for the role; tick *approve* or leave it to reject, and say",
        "why in the comment (a rejection's comment goes back with the draft).",
        "",
        "### What it will do",
        *(
            f"- `{target}`: {would}"
            for target, would in zip(request.targets, request.would, strict=True)
        ),
    ]
    if request.letters:
        lines += ["", "### Letters per obligation", "", "| obligation | letters | sample ids |"]
        lines += ["|---|---:|---|"]
        lines += [
            f"| {rule} | {count} | {', '.join(request.letter_sample.get(rule, []))} |"
            for rule, count in request.letters.items()
        ]
    if request.statement is not None:
        quoted = "\n".join(f"> {line}" if line else ">" for line in request.statement.splitlines())
        lines += ["", "### The statement as drafted", "", quoted]
    lines += ["", f"Or {how_to(wait)}."]
    return "\n".join(lines)


def how_to(wait: Wait) -> str:
    return f"from a terminal: `{approve_command(wait)}`"


class PausingApprovals:
    """A step waits inside its running flow: paused with a form until enough entitled people
    approved, someone entitled rejected, or the time ran out twice (role, then backup)."""

    def __init__(
        self,
        journal: RunJournal,
        clock: Clock,
        pauses: Pauses,
        roster: Roster | None = None,
        chat: Chat | None = None,
        default_timeout: timedelta = timedelta(hours=1),
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._pauses = pauses
        self._roster = roster
        self._chat = chat
        self._default_timeout = default_timeout
        self._expired: set[str] = set()
        """Steps whose wait ran out in this run: their other targets do not wait again."""

    def check_can_ask(self, request: ApprovalRequest) -> Check:
        return roster_check(request, self._roster, self._chat)

    def decide(self, request: ApprovalRequest) -> Decision:
        found = decision_of(self._journal, request.step_id, request.version)
        if found is not None:
            return found
        pending = Decision(
            step_id=request.step_id, role=request.gate.role, status=DecisionStatus.PENDING
        )
        if request.step_id in self._expired:
            return pending
        wait = ask(
            self._journal, self._chat, request, self._roster, self._clock, self._pauses.site()
        )
        limit = escalation_timeout(request.gate, self._roster, self._default_timeout)
        for stage in ("role", "backup"):
            decided = self._wait_for_answers(request, wait, limit)
            if decided is not None:
                return decided
            recorded = decision_of(self._journal, request.step_id, request.version)
            if recorded is not None:  # answered in the ledger meanwhile (no Prefect at hand)
                return recorded
            if stage == "role":
                wait = escalate(
                    self._journal, self._chat, wait, self._roster, request.war_room, limit
                )
        expire(self._journal, self._chat, wait, request.war_room)
        self._expired.add(request.step_id)
        return pending

    def _wait_for_answers(
        self, request: ApprovalRequest, wait: Wait, limit: timedelta
    ) -> Decision | None:
        """Pause for answers until a decision or the time is up; refused and partial answers
        are recorded and the step pauses again for the time left."""
        description = request_markdown(request, self._roster, wait)
        deadline = time.monotonic() + limit.total_seconds()
        while (left := deadline - time.monotonic()) > 0:
            key = f"{request.step_id}-{uuid.uuid4().hex[:8]}"
            answer = self._pauses.wait(description, key, left)
            if answer is None:
                return None
            judgement = record_answer(
                self._journal, wait, self._roster, answer, "prefect", self._clock
            )
            if judgement.ruling.final:
                return decision_of(self._journal, request.step_id, request.version)
            description = f"**Last answer: {judgement.reason}.**\n\n" + request_markdown(
                request, self._roster, wait
            )
        return None
