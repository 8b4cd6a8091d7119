"""A step's many items split into batches: each batch is named by an id and answers with
counts, so a flow can run the batches of one step in parallel as task runs without
customer data in what it hands around. The core runs them one after another itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from breachbook.journal import Once

BatchWork = Callable[[str], Counter[Once]]
"""One batch, by its id, done: what became of its items, as counts."""

BatchRunner = Callable[[str, list[str], BatchWork], Counter[Once]]
"""Runs a step's batches (named by `label` for progress) and adds up their counts."""


def run_batches_here(label: str, batch_ids: list[str], work: BatchWork) -> Counter[Once]:
    """One batch after another in this process: the core's way, without Prefect."""
    total: Counter[Once] = Counter()
    for batch_id in batch_ids:
        total.update(work(batch_id))
    return total
