"""Prefect's pause as the way a running flow waits for a person: `pause_flow_run` with a
typed form (ApprovalForm) whose description says what is to be approved.

The form holds a name, approve or reject, and a comment; the same fields come from
`breachbook approve RUN STEP` through Prefect's `resume_flow_run(run_input=...)`. A pause
whose time runs out leaves the flow run Paused, and Prefect would fail the run at its end
("completed and never resumed"): the step has recorded the timeout and escalates, so the
run is taken back to Running first (a forced state change, the documented client call)."""

from __future__ import annotations

import math
from uuid import UUID

from prefect import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_UI_URL
from prefect.states import Running
from pydantic import Field

from breachbook.ports import Answer, PauseSite


class ApprovalForm(RunInput):
    """The approval form in the Prefect UI (no customer data: ids, counts, public text)."""

    approver: str = Field(
        min_length=1,
        max_length=100,
        title="Your name",
        description="As listed for the role in BREACHBOOK_APPROVERS",
    )
    approve: bool = Field(
        default=False, title="Approve", description="Tick to approve; leave unticked to reject"
    )
    comment: str = Field(
        default="",
        max_length=2000,
        title="Comment",
        description="Why; a rejection's comment is kept for the next draft",
    )

    def answer(self) -> Answer:
        return Answer(approve=self.approve, approver=self.approver, comment=self.comment)


def flow_run_page(flow_run_id: str) -> str | None:
    """The flow run's page in the Prefect UI, where its pause form is: Prefect's own
    PREFECT_UI_URL (set it for a UI behind a proxy; by default Prefect derives it from
    PREFECT_API_URL), or None when no UI is known (an ephemeral server)."""
    base = PREFECT_UI_URL.value()
    return f"{str(base).rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def current_flow_run(deployed_only: bool) -> str | None:
    """The flow run this code runs in, if any (and, if asked, only a deployment's run)."""
    if flow_run.id is None or (deployed_only and deployment.id is None):
        return None
    return str(flow_run.id)


class PrefectPauses:
    """Pauses the current flow run (from inside its step's task run) for an ApprovalForm."""

    def __init__(self, flow_run_id: str, poll_seconds: int) -> None:
        self._flow_run_id = flow_run_id
        self._poll_seconds = poll_seconds

    def site(self) -> PauseSite:
        return PauseSite(flow_run_id=self._flow_run_id, url=flow_run_page(self._flow_run_id))

    def wait(self, description: str, key: str, timeout_seconds: float) -> Answer | None:
        form = ApprovalForm.with_initial_data(description=description)
        try:
            given = pause_flow_run(
                wait_for_input=form,
                timeout=max(1, math.ceil(timeout_seconds)),
                poll_interval=self._poll_seconds,
                key=key,
            )
        except FlowPauseTimeout:
            self._take_back()
            return None
        return given.answer()

    def _take_back(self) -> None:
        """The expired pause leaves the run Paused: put it back to Running so the step can
        escalate, pause again, or end undecided without Prefect failing the run for it."""
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(self._flow_run_id), Running(), force=True)


def submit_answer(flow_run_id: str, answer: Answer) -> bool:
    """Answer a paused flow run's form through Prefect's API, as the UI does. False if the run
    is not paused (nothing was sent); Prefect's refusal of the input is raised."""
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    with get_client(sync_client=True) as client:
        try:
            found = client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return False
    if found.state is None or not found.state.is_paused():
        return False
    # the form has no version: the run pauses for one version, and the terminal refuses a
    # stale one before sending
    resume_flow_run(UUID(flow_run_id), run_input=answer.model_dump(exclude={"version"}))
    return True
