"""One run's view of the ledger: what steps record, claim and read back.

Every entry it writes carries the run's incident, run id, actor and mode, so actions write
audit records without ever seeing the mode. Records are scoped to the run (what its later
steps need) or to the incident (what every run of it shares: approvals, facts).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel

from breachbook.clock import Clock
from breachbook.errors import BreachbookError
from breachbook.ledger import Claim, Entry, Item, ItemStatus, Ledger
from breachbook.ports import Changed

INCIDENT_SCOPE = "incident"

ModelT = TypeVar("ModelT", bound=BaseModel)


class OutcomeUnknown(BreachbookError):
    """An adapter cannot tell whether its change happened (a connection dropped mid-send).

    The item is left `unknown` for reconciliation instead of being retried or called done."""


STEP_OUTCOME = "step-outcome"


class StepOutcome(BaseModel):
    """What became of each target of one step in this run (engine Status values), kept as a
    run record so a later step can tell done from planned, skipped or held back: letters
    claim only what the ledger shows done."""

    statuses: dict[str, str]


class Once(StrEnum):
    """What `RunJournal.once` did with one item."""

    DONE = "done"
    ALREADY_DONE = "already-done"
    FAILED = "failed"
    UNKNOWN = "unknown"
    BUSY = "busy"


SETTLE_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)
"""Seconds between looks at an item another run holds (about 13 s in all): a concurrent run
settles a claim in that time, even a table's snapshot on a loaded machine; a claim left by a
killed run never settles and is reported, at that cost per item, on the run that meets it."""

RETRY_DELAYS = (1.0, 4.0, 16.0)
"""Seconds to wait before each retry of a change that failed for a passing reason (a dropped
connection, a refused one): three retries over about 21 s, then the item is failed."""


class RunJournal:
    def __init__(
        self,
        ledger: Ledger,
        incident_id: str,
        run_id: str,
        actor: str,
        mode: str,
        clock: Clock,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        reclaim_after: timedelta | None = None,
    ) -> None:
        self.ledger = ledger
        self.incident_id = incident_id
        self.run_id = run_id
        self.actor = actor
        self._mode = mode
        self._clock = clock
        self._retry_delays = retry_delays
        self.reclaim_after = reclaim_after

    @property
    def mode(self) -> str:
        """The run's mode, as its entries name it (`live`, `drill`, `tabletop`)."""
        return self._mode

    def acting_as(self, actor: str) -> RunJournal:
        """The same journal writing as another actor (a person's decision within a run)."""
        return RunJournal(
            self.ledger,
            self.incident_id,
            self.run_id,
            actor,
            self._mode,
            self._clock,
            self._retry_delays,
        )

    def _entry(
        self, step_id: str, target: str, phase: str, outcome: str, details: Mapping[str, Any]
    ) -> Entry:
        return Entry(
            incident_id=self.incident_id,
            run_id=self.run_id,
            step_id=step_id,
            target=target,
            phase=phase,
            actor=self.actor,
            mode=self._mode,
            outcome=outcome,
            details=details,
        )

    def record(
        self, step_id: str, target: str, phase: str, outcome: str, details: Mapping[str, Any]
    ) -> None:
        """Append one audit entry (ids and counts in details, never personal data)."""
        self.ledger.append(self._entry(step_id, target, phase, outcome, details))

    def head(self) -> tuple[int, str]:
        return self.ledger.head(self.incident_id)

    # -- items ---------------------------------------------------------------------------

    def statuses(self, step_id: str, keys: Sequence[str] | None = None) -> dict[str, ItemStatus]:
        """The step's items' latest outcomes: all of them, or those named by `keys`."""
        return self.ledger.item_statuses(self.incident_id, step_id, keys)

    def statuses_in(self, step_id: str, statuses: Collection[ItemStatus]) -> dict[str, ItemStatus]:
        """The step's items whose latest outcome is one of `statuses`."""
        return {
            item.key: item.status
            for item in self.ledger.items(self.incident_id, step_id, tuple(statuses))
        }

    def steps_statuses(self, step_ids: Sequence[str]) -> dict[str, dict[str, ItemStatus]]:
        """`statuses` of several steps, read at once."""
        return self.ledger.steps_item_statuses(self.incident_id, step_ids)

    def items(self, step_id: str | None = None) -> list[Item]:
        return self.ledger.items(self.incident_id, step_id)

    def items_in(self, statuses: tuple[ItemStatus, ...]) -> list[Item]:
        """The incident's items whose latest outcome is one of `statuses`."""
        return self.ledger.items(self.incident_id, statuses=statuses)

    def claim(self, step_id: str, key: str, details: Mapping[str, Any]) -> Claim | None:
        return self.ledger.claim(self._entry(step_id, key, "claim", "claimed", details), key)

    def claim_many(
        self, step_id: str, keys: list[tuple[str, Mapping[str, Any]]]
    ) -> list[Claim | None]:
        """Claim many items in one transaction; None for each that is not free."""
        return self.ledger.claim_many(
            [(self._entry(step_id, key, "claim", "claimed", details), key) for key, details in keys]
        )

    def settle_many(self, outcomes: list[tuple[Claim, ItemStatus, Mapping[str, Any]]]) -> None:
        """Record many claimed items' outcomes in one transaction, each audited."""
        self.ledger.settle_many(
            [
                (
                    claim,
                    status,
                    self._entry(claim.step_id, claim.key, "outcome", status.value, details),
                )
                for claim, status, details in outcomes
            ]
        )

    def take_over(self, step_id: str, key: str, details: Mapping[str, Any]) -> Claim | None:
        """Claim an item whose outcome was never heard, to reconcile it: unknown, or claimed
        by an earlier process of this run (killed mid-change: a run is resumed by one process
        at a time), or, with `reclaim_after`, claimed that long ago by another run that never
        settled it. None if it is not such an item."""
        stale = ""
        if self.reclaim_after is not None:
            moment = (self._clock.now() - self.reclaim_after).astimezone(UTC)
            stale = moment.isoformat(timespec="microseconds")
        entry = self._entry(step_id, key, "claim", "taken-over", details)
        return self.ledger.take_over(entry, key, stale)

    def settle(
        self,
        claim: Claim,
        status: ItemStatus,
        details: Mapping[str, Any],
        prior: Mapping[str, Any] | None = None,
    ) -> None:
        audit = self._entry(claim.step_id, claim.key, "outcome", status.value, details)
        self.ledger.settle(claim, status, audit, prior)

    def once(
        self,
        step_id: str,
        key: str,
        act: Callable[[], Changed],
        known: Mapping[str, ItemStatus] | None = None,
        wait_for_holder: bool = False,
        in_doubt: Callable[[], Changed | None] | None = None,
    ) -> tuple[Once, dict[str, Any]]:
        """Claim one item, act, record the outcome: the item is changed at most once.

        `known` is the step's statuses read in one query beforehand, so a re-run skips done
        items without a query each. An adapter's passing error (a dropped or refused
        connection: anything but breachbook's own errors) is retried with back-off; if it
        persists, or the error is definite, the item is failed (a later run retries it).
        `OutcomeUnknown` leaves it unknown for a person to reconcile. With `wait_for_holder`,
        an item another run holds is looked at again for a few seconds before it is busy.
        With `in_doubt`, an item whose outcome was never heard (left claimed by a killed
        process of this run, or unknown) is taken over and reconciled: `in_doubt` answers the
        change as found made, settled done without acting, or None, and the act is done again.
        """
        status = (known or {}).get(key)
        if status is ItemStatus.DONE:
            return Once.ALREADY_DONE, {}
        claim = self.claim(step_id, key, {})
        if claim is None and in_doubt is not None:
            claim = self.take_over(step_id, key, {"reconcile": "look, then act again"})
            found = in_doubt() if claim is not None else None
            if claim is not None and found is not None:
                details = {**found.details, "reconciled": "found made"}
                self.settle(claim, ItemStatus.DONE, details, found.prior)
                return Once.DONE, details
        if claim is None:
            latest = self.ledger.item_status(self.incident_id, step_id, key)
            for pause in SETTLE_WAITS if wait_for_holder else ():
                if latest is not ItemStatus.CLAIMED:
                    break
                self._clock.sleep(pause)
                latest = self.ledger.item_status(self.incident_id, step_id, key)
            if latest is ItemStatus.DONE:
                return Once.ALREADY_DONE, {}
            return (Once.UNKNOWN if latest is ItemStatus.UNKNOWN else Once.BUSY), {}
        attempts = 0
        while True:
            attempts += 1
            try:
                acted = act()
                break
            except OutcomeUnknown as exc:
                details = {"error": str(exc), "attempts": attempts}
                self.settle(claim, ItemStatus.UNKNOWN, details)
                return Once.UNKNOWN, details
            except Exception as exc:
                passing = not isinstance(exc, BreachbookError)
                if passing and attempts <= len(self._retry_delays):
                    self._clock.sleep(self._retry_delays[attempts - 1])
                    continue
                details = {"error": describe_error(exc), "attempts": attempts}
                self.settle(claim, ItemStatus.FAILED, details)
                return Once.FAILED, details
        done = dict(acted.details) | ({"attempts": attempts} if attempts > 1 else {})
        self.settle(claim, ItemStatus.DONE, done, acted.prior)
        return Once.DONE, done

    def mark_restored(self, item: Item) -> None:
        """The item's change was undone: its latest outcome is `restored`, so it may act again."""
        claim = Claim(self.incident_id, item.step_id, item.key, item.generation)
        self.ledger.mark_restored(
            claim, self._entry(item.step_id, item.key, "outcome", ItemStatus.RESTORED.value, {})
        )

    # -- records -------------------------------------------------------------------------

    def put(self, kind: str, key: str, data: BaseModel, scope: str | None = None) -> int:
        """Store a typed record for later steps (or, with INCIDENT_SCOPE, for every run)."""
        return self.ledger.put_record(
            self.incident_id,
            scope or self.run_id,
            kind,
            key,
            data.model_dump(mode="json"),
            self.actor,
        )

    def get(
        self, kind: str, key: str, model: type[ModelT], scope: str | None = None
    ) -> ModelT | None:
        """The latest version of a typed record, or None if no step has stored it yet."""
        raw = self.ledger.get_record(self.incident_id, scope or self.run_id, kind, key)
        return None if raw is None else model.model_validate(raw)


def describe_error(exc: BaseException) -> str:
    """One line for the ledger: our own messages carry no personal data; others only a type."""
    if isinstance(exc, BreachbookError):
        return str(exc)
    return f"{type(exc).__name__} (message withheld: it may quote customer data)"
