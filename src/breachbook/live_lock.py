"""One LIVE response per incident at a time, kept by the Prefect server.

Two LIVE runs of one incident (a person starting the live-response deployment while the
alert receiver's run is containing, or a double click) would race each other on the same
production systems. Each LIVE flow run first takes the only slot of a Prefect global
concurrency limit named after the incident (`breachbook-live-INCIDENT`, limit 1, made on
first use); a second run that cannot take it within BREACHBOOK_LIVE_WAIT_SECONDS is refused
with one line saying so, before it does anything. The slot is a lease that the holder renews: a
worker that dies frees it when the lease runs out (five minutes), so no lock is left behind
by a crash, which a claim in the ledger would need its own expiry for. The ledger still
makes each side effect happen once; this keeps two runs from interleaving at all.

Only the flows import this module: the core runs without a Prefect server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

from breachbook.errors import BreachbookError


class LiveResponseRunning(BreachbookError):
    """Another LIVE response of the same incident holds the incident."""


def limit_name(incident_id: str) -> str:
    return f"breachbook-live-{incident_id}"


def ensure_limit(incident_id: str) -> str:
    """The incident's limit (one slot), made if missing; returns its name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    name = limit_name(incident_id)
    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    return name


@contextmanager
def one_live_response(incident_id: str, wait_seconds: float) -> Iterator[None]:
    """Hold the incident's LIVE slot for the body; refuse if another run holds it after
    `wait_seconds` (the setting BREACHBOOK_LIVE_WAIT_SECONDS in the flows)."""
    from prefect.concurrency.sync import concurrency

    name = ensure_limit(incident_id)
    with ExitStack() as held:
        try:
            held.enter_context(concurrency(name, timeout_seconds=wait_seconds, strict=True))
        except TimeoutError:
            raise LiveResponseRunning(
                f"incident {incident_id} already has a LIVE response running; this run is "
                f"refused after waiting {wait_seconds:g} s so that two never act at once "
                f"(Prefect concurrency limit {name}; if none is running, the Prefect server "
                "was slower to grant the slot than BREACHBOOK_LIVE_WAIT_SECONDS)"
            ) from None
        yield
