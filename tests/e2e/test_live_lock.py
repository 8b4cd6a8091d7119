"""One LIVE response per incident, on Prefect's own concurrency limits (under Prefect's test
harness): while a run holds an incident, a second is refused with one line; another incident
is not held up; the slot is given back when the first ends, also when it fails."""

from __future__ import annotations

import pytest

from breachbook.live_lock import LiveResponseRunning, one_live_response

pytestmark = pytest.mark.prefect

SETTLE = 30.0
"""How long a run that must get the slot may wait for it (a loaded machine's Prefect server
can take seconds to see a slot given back); a run that must be refused waits 0.5 s."""


def test_a_second_live_response_of_an_incident_is_refused_until_the_first_ends(
    prefect_harness: None,
) -> None:
    with one_live_response("inc-lock-a", wait_seconds=SETTLE):
        with (
            pytest.raises(
                LiveResponseRunning,
                match=r"^incident inc-lock-a already has a LIVE .* BREACHBOOK_LIVE_WAIT_SECONDS\)$",
            ),
            one_live_response("inc-lock-a", wait_seconds=0.5),
        ):
            pytest.fail("a second LIVE response ran beside the first")
        with one_live_response("inc-lock-b", wait_seconds=SETTLE):
            pass  # another incident is not held up
    with pytest.raises(RuntimeError), one_live_response("inc-lock-a", wait_seconds=SETTLE):
        raise RuntimeError("the run failed")
    with one_live_response("inc-lock-a", wait_seconds=SETTLE):
        pass  # given back after a failure too
