"""A step's many items split into batches: each batch is named by an id and answers with
counts, so a flow can run the batches of one step in parallel as task runs without
customer data in what it hands around. The core runs them one after another itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from breachbook.journal import Once

if TYPE_CHECKING:
    from breachbook.context import RunContext

BatchWork = Callable[[str], Counter[Once]]
"""One batch, by its id, done: what became of its items, as counts."""


@dataclass(frozen=True)
class BatchStep:
    """One step's batches: done here by `work`, or elsewhere by a worker that reopens the
    run from the ledger and asks the action `action` for the batch (breachbook.batch_workers),
    given only the ids."""

    action: str
    """The registered action whose `run_batch` does one batch."""
    ctx: RunContext
    work: BatchWork

    def __call__(self, batch_id: str) -> Counter[Once]:
        return self.work(batch_id)


BatchRunner = Callable[[str, list[str], BatchStep], Counter[Once]]
"""Runs a step's batches (named by `label` for progress) and adds up their counts."""


def run_batches_here(label: str, batch_ids: list[str], work: BatchWork) -> Counter[Once]:
    """One batch after another in this process: the core's way, without Prefect."""
    total: Counter[Once] = Counter()
    for batch_id in batch_ids:
        total.update(work(batch_id))
    return total
