"""Approvals kept in the ledger: a step that needs one records that it waits, and a person
grants or denies it with `breachbook approve`, from any machine, hours later. Nothing waits
in memory: the run stops, and the same run resumes and reads the decision.

Every answer, wherever it was given (this command, the Prefect form), goes through
`record_answer`: judged against the step's gate and the named approvers, audited with the
person as actor, refused ones included."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from breachbook.clock import Clock
from breachbook.journal import INCIDENT_SCOPE, RunJournal
from breachbook.playbook import ApprovalGate
from breachbook.ports import (
    Answer,
    ApprovalRequest,
    Chat,
    Check,
    Decision,
    DecisionStatus,
    PauseSite,
    Verdict,
)
from breachbook.roster import (
    NAME_LENGTH,
    Judgement,
    Roster,
    Ruling,
    eligible,
    escalation_timeout,
    judge,
    shortfall,
)

DECISION = "decision"
WAIT = "wait"
GIVEN = "approvals-given"


class Wait(BaseModel):
    """A step waiting for a role's decision: what is asked, since when, by which run, under
    which gate, and where it can be answered (a paused Prefect flow run, if any)."""

    step_id: str
    role: str
    summary: str
    since: datetime
    run_id: str
    gate: ApprovalGate | None = None
    starter: str = ""
    flow_run_id: str | None = None
    url: str | None = None
    version: str | None = None
    """The version asked about (`full-v2`); answers count for it only."""
    digest: str | None = None
    escalated: bool = False
    expiries: int = 0
    """How often the wait ran out with no decision (each time the step stopped waiting)."""

    def the_gate(self) -> ApprovalGate:
        return self.gate or ApprovalGate(role=self.role)


class Given(BaseModel):
    """Who has approved a step's version so far (a gate may need several different people)."""

    approvers: list[str] = Field(default_factory=list)
    version: str | None = None


def decision_of(journal: RunJournal, step_id: str, version: str | None) -> Decision | None:
    """The step's decision, if it was about `version`: one about another version (v1 when
    v2 is asked about) decides nothing here."""
    found = journal.get(DECISION, step_id, Decision, scope=INCIDENT_SCOPE)
    if found is None or found.version != version:
        return None
    return found


def wait_of(journal: RunJournal, step_id: str) -> Wait | None:
    return journal.get(WAIT, step_id, Wait, scope=INCIDENT_SCOPE)


def put_wait(journal: RunJournal, wait: Wait) -> None:
    journal.put(WAIT, wait.step_id, wait, scope=INCIDENT_SCOPE)


def roster_check(request: ApprovalRequest, roster: Roster | None, chat: Chat | None) -> Check:
    """The drill's preflight of a gate: enough named people, and the war room reachable when
    a chat is configured; says who would be asked."""
    gate = request.gate
    missing = shortfall(gate, roster, request.starter)
    if missing is not None:
        return Check.failed(missing, "BREACHBOOK_APPROVERS")
    asked = ", ".join(eligible(gate, roster, request.starter))
    reason = f"would ask {gate.role} ({asked})"
    if gate.people > 1:
        reason += f"; {gate.people} different people must approve"
    if chat is not None:
        reach = chat.check_can_post(request.war_room)
        if reach.verdict is not Verdict.VERIFIED:
            return Check(
                verdict=reach.verdict,
                reason=f"{reason}; war room {request.war_room}: {reach.reason}",
                method="BREACHBOOK_APPROVERS, chat",
            )
        reason += f"; in war room {request.war_room}"
    return Check.verified(reason, "BREACHBOOK_APPROVERS")


def announce(
    journal: RunJournal, chat: Chat | None, channel: str, wait: Wait, headline: str
) -> None:
    """Post to the war room if a chat is configured, as Block Kit with the way to answer; a
    chat that fails never stops the step, and the ledger says it failed."""
    if chat is None:
        return
    text = f"{headline} {how_to_answer(wait)}"
    try:
        reference = chat.post(channel, text, approval_blocks(wait, headline))
    except Exception as exc:
        journal.record(
            wait.step_id, channel, "approval", "chat-failed", {"error": type(exc).__name__}
        )
        return
    journal.record(wait.step_id, channel, "approval", "posted", {"message": reference})


def approve_command(wait: Wait) -> str:
    """The exact command that answers this wait; it names the version asked about, so a
    command copied from an older request is refused once a newer version waits."""
    pinned = f" --version {wait.version}" if wait.version else ""
    return f"breachbook approve {wait.run_id} {wait.step_id} --by NAME{pinned}"


def form_url(wait: Wait) -> str | None:
    """The paused flow run's page in the Prefect UI (where its form is), if there is one."""
    url = wait.url or ""
    return url if wait.flow_run_id and url.startswith(("https://", "http://")) else None


def how_to_answer(wait: Wait) -> str:
    terminal = f"`{approve_command(wait)}` (--deny --comment TEXT)"
    url = form_url(wait)
    return (
        f"answer in Prefect: {url} or from a terminal: {terminal}"
        if url
        else f"answer from a terminal: {terminal}"
    )


OPEN_FORM_ACTION = "open-prefect-form"


def approval_blocks(wait: Wait, headline: str) -> list[dict[str, Any]]:
    """Block Kit for an approval message: what is asked (ids, names of the role's people,
    the version and its digest; never customer data), then a button opening the paused flow
    run's form in the Prefect UI, or, when the run waits in the ledger, the command."""
    about = f"step `{wait.step_id}` of run `{wait.run_id}`, role *{wait.role}*"
    if wait.version:
        digest = f" (sha256 `{wait.digest[:16]}`)" if wait.digest else ""
        about += f"\nversion *{wait.version}*{digest}: an answer counts for this version only"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline[:3000]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": about[:3000]}]},
    ]
    url = form_url(wait)
    command = f"```{approve_command(wait)}```"
    if url is not None:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": OPEN_FORM_ACTION,
                        "text": {"type": "plain_text", "text": "Open the approval form"},
                        "url": url,
                        "style": "primary",
                    }
                ],
            }
        )
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"or from a terminal: {command}"}],
            }
        )
    else:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"Answer from a terminal (add `--deny --comment TEXT` to reject):"
                    f"\n{command}",
                },
            }
        )
    return blocks


def ask(
    journal: RunJournal,
    chat: Chat | None,
    request: ApprovalRequest,
    roster: Roster | None,
    clock: Clock,
    site: PauseSite | None = None,
) -> Wait:
    """Record that the step waits (once per step and version; a later run of the same step
    points the wait at itself, a new version starts a new wait) and ask the role's people in
    the war room."""
    known = wait_of(journal, request.step_id)
    if known is not None and known.version != request.version:
        known = None
    wait = Wait(
        step_id=request.step_id,
        role=request.gate.role,
        summary="; ".join(request.would),
        since=known.since if known else clock.now(),
        run_id=journal.run_id,
        gate=request.gate,
        starter=request.starter,
        flow_run_id=site.flow_run_id if site else None,
        url=site.url if site else None,
        version=request.version,
        digest=request.digest,
        escalated=known.escalated if known else False,
        expiries=known.expiries if known else 0,
    )
    if known == wait:
        return wait
    put_wait(journal, wait)
    people = eligible(request.gate, roster, request.starter)
    journal.record(
        request.step_id,
        "-",
        "approval",
        "asked",
        {
            "role": request.gate.role,
            "asked": people,
            "flow_run": wait.flow_run_id,
            "url": form_url(wait),
            "version": wait.version,
            "sha256": wait.digest,
        },
    )
    of = f" {wait.version}" if wait.version else ""
    announce(
        journal,
        chat,
        request.war_room,
        wait,
        f"Approval needed from {request.gate.role} ({', '.join(people) or 'nobody is named'}): "
        f"{request.title} ({request.step_id}){of}.",
    )
    return wait


def escalate(
    journal: RunJournal,
    chat: Chat | None,
    wait: Wait,
    roster: Roster | None,
    war_room: str,
    after: timedelta,
) -> Wait:
    """No decision in time: tell the war room and ask the role's backup, once per wait."""
    role = (roster or {}).get(wait.role)
    backup = role.backup if role else []
    journal.record(
        wait.step_id,
        "-",
        "approval",
        "escalated",
        {"role": wait.role, "asked": backup, "after_seconds": int(after.total_seconds())},
    )
    announce(
        journal,
        chat,
        war_room,
        wait,
        f"No decision on {wait.step_id} from {wait.role} after {after}: asking the backup "
        f"({', '.join(backup) or 'none is named'}). The step does not proceed without a "
        "decision.",
    )
    escalated = wait.model_copy(update={"escalated": True})
    put_wait(journal, escalated)
    return escalated


def expire(journal: RunJournal, chat: Chat | None, wait: Wait, war_room: str) -> Wait:
    """Nobody answered, backup included: the step stops waiting here, undecided."""
    journal.record(wait.step_id, "-", "approval", "expired", {"role": wait.role})
    announce(
        journal,
        chat,
        war_room,
        wait,
        f"Still no decision on {wait.step_id} from {wait.role}: the step is not done and "
        "waits for one.",
    )
    expired = wait.model_copy(update={"expiries": wait.expiries + 1})
    put_wait(journal, expired)
    return expired


def record_answer(
    journal: RunJournal,
    wait: Wait,
    roster: Roster | None,
    answer: Answer,
    via: str,
    clock: Clock,
) -> Judgement:
    """Judge one answer and write it to the ledger with the person as actor: refused and
    partial answers are audited too; a final one becomes the decision on the version waiting.
    An answer about another version than the one waiting is refused as stale."""
    gate = wait.the_gate()
    given = journal.get(GIVEN, wait.step_id, Given, scope=INCIDENT_SCOPE)
    if given is None or given.version != wait.version:
        given = Given(version=wait.version)
    judgement = stale(answer, wait) or judge(gate, roster, wait.starter, given.approvers, answer)
    who = answer.approver.strip()[:NAME_LENGTH] or "(no name)"
    journal.acting_as(who).record(
        wait.step_id,
        "-",
        "approval",
        judgement.ruling.value,
        {
            "role": gate.role,
            "by": who,
            "via": via,
            "comment": answer.comment,
            "reason": judgement.reason,
            "version": wait.version,
            "answered_version": answer.version,
            "sha256": wait.digest,
        },
    )
    if judgement.ruling is Ruling.COUNTED:
        given = Given(approvers=[*given.approvers, who], version=wait.version)
        journal.put(GIVEN, wait.step_id, given, scope=INCIDENT_SCOPE)
    if judgement.ruling.final:
        decision = Decision(
            step_id=wait.step_id,
            role=gate.role,
            status=DecisionStatus.GRANTED
            if judgement.ruling is Ruling.GRANTED
            else DecisionStatus.DENIED,
            by=", ".join([*given.approvers, who]) if answer.approve else who,
            at=clock.now(),
            comment=answer.comment or None,
            version=wait.version,
        )
        journal.put(DECISION, wait.step_id, decision, scope=INCIDENT_SCOPE)
    return judgement


def stale(answer: Answer, wait: Wait) -> Judgement | None:
    """A refusal when the answer names a version other than the one waiting (someone read
    v1, v2 is asked about now): it must never decide the version nobody answered about."""
    if answer.version is None or answer.version == wait.version:
        return None
    now = wait.version or "no version"
    return Judgement(
        ruling=Ruling.REFUSED,
        reason=f"stale: answered about {answer.version}, but {now} of {wait.step_id} waits; "
        "read it and answer again",
    )


class LedgerApprovals:
    """The step stops and waits in the ledger; `breachbook approve` answers, a resumed run
    reads the decision. A run resumed after the role's time is up escalates, once."""

    def __init__(
        self,
        journal: RunJournal,
        clock: Clock,
        roster: Roster | None = None,
        chat: Chat | None = None,
        default_timeout: timedelta = timedelta(hours=1),
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._roster = roster
        self._chat = chat
        self._default_timeout = default_timeout

    def check_can_ask(self, request: ApprovalRequest) -> Check:
        found = roster_check(request, self._roster, self._chat)
        if found.verdict is Verdict.FAILED:
            return found
        return found.model_copy(
            update={
                "reason": f"{found.reason}; the run waits in the ledger for "
                f"`breachbook approve RUN {request.step_id}`"
            }
        )

    def decide(self, request: ApprovalRequest) -> Decision:
        found = decision_of(self._journal, request.step_id, request.version)
        if found is not None:
            return found
        wait = ask(self._journal, self._chat, request, self._roster, self._clock)
        limit = escalation_timeout(request.gate, self._roster, self._default_timeout)
        if not wait.escalated and self._clock.now() - wait.since >= limit:
            escalate(self._journal, self._chat, wait, self._roster, request.war_room, limit)
        return Decision(
            step_id=request.step_id, role=request.gate.role, status=DecisionStatus.PENDING
        )


def waiting_steps(journal: RunJournal) -> dict[str, Wait]:
    """Steps of the incident that wait and have no decision on the version waiting, by step
    id (a decision on v1 leaves v2 waiting)."""
    waits = journal.ledger.records_of(journal.incident_id, INCIDENT_SCOPE, WAIT)
    decided = journal.ledger.records_of(journal.incident_id, INCIDENT_SCOPE, DECISION)
    found = {key: Wait.model_validate(data) for key, data in waits.items()}
    return {
        key: wait
        for key, wait in found.items()
        if key not in decided or decided[key].get("version") != wait.version
    }
