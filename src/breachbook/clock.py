"""Time is read through a port so that a tabletop can run on a simulated clock."""

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait (a retry's back-off); a simulated clock just moves on."""
        ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FixedStepClock:
    """A clock that starts at a given instant and advances a fixed step per reading.

    Deterministic time for tests and for the simulated world of a tabletop.
    """

    def __init__(self, start: datetime, step: timedelta = timedelta(seconds=1)) -> None:
        if start.tzinfo is None:
            raise ValueError("FixedStepClock needs a timezone-aware start")
        self._next = start
        self._step = step

    def now(self) -> datetime:
        current = self._next
        self._next = current + self._step
        return current

    def sleep(self, seconds: float) -> None:
        self._next += timedelta(seconds=seconds)
