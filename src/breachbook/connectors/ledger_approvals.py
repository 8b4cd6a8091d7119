"""Approvals kept in the ledger: a step that needs one records that it waits, and a person
grants or denies it with `breachbook approve`, from any machine, hours later. Nothing waits
in memory: the run stops, and the same run resumes and reads the decision.

Every answer, wherever it was given (this command, the Prefect form), goes through
`record_answer`: judged against the step's gate and the named approvers, audited with the
person as actor, refused ones included."""

from __future__ import annotations

from datetime import datetime, timedelta

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
    escalated: bool = False
    expiries: int = 0
    """How often the wait ran out with no decision (each time the step stopped waiting)."""

    def the_gate(self) -> ApprovalGate:
        return self.gate or ApprovalGate(role=self.role)


class Given(BaseModel):
    """Who has approved a step so far (a gate may need several different people)."""

    approvers: list[str] = Field(default_factory=list)


def decision_of(journal: RunJournal, step_id: str) -> Decision | None:
    return journal.get(DECISION, step_id, Decision, scope=INCIDENT_SCOPE)


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


def announce(journal: RunJournal, chat: Chat | None, channel: str, step_id: str, text: str) -> None:
    """Post to the war room if a chat is configured; a chat that fails never stops the step,
    and the ledger says it failed."""
    if chat is None:
        return
    try:
        reference = chat.post(channel, text)
    except Exception as exc:
        journal.record(step_id, channel, "approval", "chat-failed", {"error": type(exc).__name__})
        return
    journal.record(step_id, channel, "approval", "posted", {"message": reference})


def how_to_answer(wait: Wait) -> str:
    terminal = (
        f"`breachbook approve {wait.run_id} {wait.step_id} --by NAME` (--deny --comment TEXT)"
    )
    return (
        f"answer in Prefect: {wait.url} or from a terminal: {terminal}"
        if wait.url
        else (f"answer from a terminal: {terminal}")
    )


def ask(
    journal: RunJournal,
    chat: Chat | None,
    request: ApprovalRequest,
    roster: Roster | None,
    clock: Clock,
    site: PauseSite | None = None,
) -> Wait:
    """Record that the step waits (once per step; a later run of the same step points the
    wait at itself) and ask the role's people in the war room."""
    known = wait_of(journal, request.step_id)
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
        {"role": request.gate.role, "asked": people, "flow_run": wait.flow_run_id},
    )
    announce(
        journal,
        chat,
        request.war_room,
        request.step_id,
        f"Approval needed from {request.gate.role} ({', '.join(people) or 'nobody is named'}): "
        f"{request.title} ({request.step_id}). {how_to_answer(wait)}",
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
        wait.step_id,
        f"No decision on {wait.step_id} from {wait.role} after {after}: asking the backup "
        f"({', '.join(backup) or 'none is named'}). The step does not proceed without a "
        f"decision. {how_to_answer(wait)}",
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
        wait.step_id,
        f"Still no decision on {wait.step_id} from {wait.role}: the step is not done and "
        f"waits for one. {how_to_answer(wait)}",
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
    partial answers are audited too; a final one becomes the step's decision."""
    gate = wait.the_gate()
    given = journal.get(GIVEN, wait.step_id, Given, scope=INCIDENT_SCOPE) or Given()
    judgement = judge(gate, roster, wait.starter, given.approvers, answer)
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
        },
    )
    if judgement.ruling is Ruling.COUNTED:
        given = Given(approvers=[*given.approvers, who])
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
        )
        journal.put(DECISION, wait.step_id, decision, scope=INCIDENT_SCOPE)
    return judgement


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
        found = decision_of(self._journal, request.step_id)
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
    """Steps of the incident that wait and have no decision yet, by step id."""
    waits = journal.ledger.records_of(journal.incident_id, INCIDENT_SCOPE, WAIT)
    decided = journal.ledger.records_of(journal.incident_id, INCIDENT_SCOPE, DECISION)
    return {key: Wait.model_validate(data) for key, data in waits.items() if key not in decided}
