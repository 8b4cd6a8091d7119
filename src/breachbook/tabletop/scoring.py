"""Rating each capability target of the evaluation guide P, S, M or U from the exercise log.

The ratings are HSEEP's (docs/tabletop.md): P performed without challenges, S with some
challenges, M with major challenges, U unable to perform. A target's rules give the longest
measured delay for P, S and M; a longer one, or a task never observed, is U.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from breachbook.tabletop.exercise import ExerciseLog
from breachbook.tabletop.players import scenario_time
from breachbook.tabletop.scenario import Expect, Measure, Target


class Rating(StrEnum):
    P = "P"
    S = "S"
    M = "M"
    U = "U"

    @property
    def meaning(self) -> str:
        return RATING_MEANINGS[self]


RATING_MEANINGS = {
    Rating.P: "performed without challenges",
    Rating.S: "performed with some challenges",
    Rating.M: "performed with major challenges",
    Rating.U: "unable to be performed",
}


@dataclass(frozen=True)
class Scored:
    target: Target
    rating: Rating
    measured: timedelta | None
    observations: list[str] = field(default_factory=list)


def measure(log: ExerciseLog, what: Measure) -> timedelta | None:
    """The delay the rules rate: from the start to the step or decision, or how long `first`
    came after `then` (zero when in order or `then` never happened)."""
    if what.step is not None:
        return log.steps_done.get(what.step)
    if what.decision is not None:
        return log.when(Expect(decision=what.decision, option=what.option))
    assert what.first is not None and what.then is not None
    first, then = log.steps_done.get(what.first), log.steps_done.get(what.then)
    if first is None:
        return None
    return max(timedelta(0), first - then) if then is not None else timedelta(0)


def rate(target: Target, measured: timedelta | None) -> Rating:
    if measured is None:
        return Rating.U
    for rating in (Rating.P, Rating.S, Rating.M):
        if measured <= getattr(target.rules, rating.value):
            return rating
    return Rating.U


def _observations(log: ExerciseLog, target: Target, measured: timedelta | None) -> list[str]:
    what = target.measure
    subject = what.step or what.decision or f"{what.first} before {what.then}"
    notes = [
        f"{subject}: "
        + (f"at {scenario_time(measured)}" if what.first is None and measured is not None else "")
        + (f"{measured} late" if what.first is not None and measured else "")
        + ("in order" if what.first is not None and measured == timedelta(0) else "")
        + ("not observed" if measured is None else "")
    ]
    end = log.loaded.scenario.duration
    for inject in log.loaded.scenario.injects:
        if inject.capability != target.capability or inject.contingency:
            continue
        for expect in inject.expect:
            met = log.met(expect, end)
            by = f" by {scenario_time(expect.by)}" if expect.by is not None else ""
            notes.append(f"inject {inject.id}: {expect.label()}{by} {'met' if met else 'missed'}")
    for inject_id, at in sorted(log.contingencies.items()):
        inject = next(i for i in log.loaded.scenario.injects if i.id == inject_id)
        if inject.capability == target.capability:
            notes.append(f"contingency inject {inject_id} had to fire at {scenario_time(at)}")
    return notes


def score(log: ExerciseLog) -> list[Scored]:
    scored = []
    for target in log.loaded.scenario.evaluation:
        measured = measure(log, target.measure)
        scored.append(
            Scored(target, rate(target, measured), measured, _observations(log, target, measured))
        )
    return scored
