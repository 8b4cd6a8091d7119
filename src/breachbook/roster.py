"""Who may approve what: the roles' named people (BREACHBOOK_APPROVERS) and the one rule that
judges each answer against the step's gate.

Pure: no ledger, no Prefect. Both ways of approving (the Prefect form, the terminal) and the
drill's preflight use it, so a person refused in one is refused in the other."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # annotations only: the settings read this module, and must stay light
    from breachbook.playbook import ApprovalGate
    from breachbook.ports import Answer

NAME_LENGTH = 100
"""A person's name is the ledger's actor for their answers: it must fit there."""


def same_person(a: str, b: str) -> bool:
    """Names are compared as people type them: case and surrounding blanks do not matter."""
    return a.strip().casefold() == b.strip().casefold()


class RoleApprovers(BaseModel):
    """The people of one role, the backup asked when they do not answer in time, and how
    long they have before that."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    people: list[str] = Field(min_length=1)
    backup: list[str] = Field(default_factory=list)
    timeout: timedelta | None = None
    """Wait this long before escalating to the backup; default BREACHBOOK_APPROVAL_TIMEOUT."""

    @field_validator("people", "backup")
    @classmethod
    def _named(cls, names: list[str]) -> list[str]:
        if any(not name.strip() for name in names):
            raise ValueError("a person's name may not be blank")
        if any(len(name.strip()) > NAME_LENGTH for name in names):
            raise ValueError(f"a person's name may have at most {NAME_LENGTH} characters")
        return [name.strip() for name in names]

    def everyone(self) -> list[str]:
        return [*self.people, *(b for b in self.backup if not _listed(b, self.people))]

    def holds(self, name: str) -> bool:
        return _listed(name, self.everyone())


def _listed(name: str, names: list[str]) -> bool:
    return any(same_person(name, other) for other in names)


Roster = dict[str, RoleApprovers]
"""Role name -> its approvers, as BREACHBOOK_APPROVERS gives them."""


class Ruling(StrEnum):
    """What one answer does to a step."""

    REFUSED = "refused"
    """Not counted: the person may not answer this (unknown, twice, the run's starter)."""
    COUNTED = "counted"
    """An approval, but the gate needs more different people."""
    GRANTED = "granted"
    DENIED = "denied"

    @property
    def final(self) -> bool:
        return self in (Ruling.GRANTED, Ruling.DENIED)


class Judgement(BaseModel):
    model_config = ConfigDict(frozen=True)

    ruling: Ruling
    reason: str


def eligible(gate: ApprovalGate, roster: Roster | None, starter: str) -> list[str]:
    """The people who could approve the step: the role's, less the starter where forbidden."""
    role = (roster or {}).get(gate.role)
    people = role.everyone() if role else []
    if gate.not_the_starter:
        people = [p for p in people if not same_person(p, starter)]
    return people


def shortfall(gate: ApprovalGate, roster: Roster | None, starter: str) -> str | None:
    """Why the step could never be approved with this roster, or None if it could."""
    if roster is None:
        return f"no approvers are named for role {gate.role!r}: set BREACHBOOK_APPROVERS"
    if gate.role not in roster:
        return f"no approvers are named for role {gate.role!r} in BREACHBOOK_APPROVERS"
    people = eligible(gate, roster, starter)
    if len(people) < gate.people:
        but = " other than the run's starter" if gate.not_the_starter else ""
        return (
            f"role {gate.role!r} needs {gate.people} different people{but}; "
            f"BREACHBOOK_APPROVERS names {len(people)}"
        )
    return None


def judge(
    gate: ApprovalGate,
    roster: Roster | None,
    starter: str,
    approved_by: list[str],
    answer: Answer,
) -> Judgement:
    """One answer against the gate, given who has approved already. A rejection by anyone
    entitled ends the step; approvals count until `gate.people` different people gave one."""
    who = answer.approver.strip() or "(no name)"
    role = (roster or {}).get(gate.role)
    if role is None or not role.holds(who):
        return Judgement(
            ruling=Ruling.REFUSED,
            reason=f"{who} is not a named approver for role {gate.role!r}",
        )
    if gate.not_the_starter and same_person(who, starter):
        return Judgement(
            ruling=Ruling.REFUSED,
            reason=f"{who} started this run; the step needs someone else of role {gate.role!r}",
        )
    if _listed(who, approved_by):
        return Judgement(
            ruling=Ruling.REFUSED,
            reason=f"{who} has already approved; the step needs {gate.people} different people",
        )
    if not answer.approve:
        return Judgement(ruling=Ruling.DENIED, reason=f"rejected by {who}")
    count = len(approved_by) + 1
    if count < gate.people:
        return Judgement(
            ruling=Ruling.COUNTED, reason=f"approved by {who}: {count} of {gate.people}"
        )
    return Judgement(ruling=Ruling.GRANTED, reason=f"approved by {who}")


def escalation_timeout(gate: ApprovalGate, roster: Roster | None, default: timedelta) -> timedelta:
    """How long the role's people have before the backup is asked: the step's, else the
    role's, else the setting's."""
    role = (roster or {}).get(gate.role)
    return gate.timeout or (role.timeout if role else None) or default
