"""The exercise loop: discrete-event time over the scenario's events, the response run
resumed through the product's own entry point (`breachbook.run.execute`, mode TABLETOP)
whenever something the playbook waits for has changed.

Events are injects, contingency checks, faults beginning and ending, decisions asked and
answered, and the end. The clock jumps from one to the next; nothing sleeps, so 72 hours
of scenario time pass in seconds. Every event is an entry of the run's hash-chained ledger,
dated in scenario time by the simulated clock.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from breachbook.anchors import Anchoring
from breachbook.clock import Clock
from breachbook.connectors.customers_sql import SqlCustomerDirectory
from breachbook.connectors.evidence_fs import FilesystemEvidenceStore
from breachbook.connectors.ledger_approvals import DECISION, wait_of
from breachbook.datasource import load_datasource
from breachbook.demo import DEFAULT_SIZE, ensure_demo_world
from breachbook.engine import RunResult, Status
from breachbook.errors import OutputFolderError
from breachbook.journal import INCIDENT_SCOPE, RunJournal
from breachbook.ledger import Ledger
from breachbook.modes import Mode
from breachbook.ports import Decision, DecisionStatus
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.tabletop.players import Players
from breachbook.tabletop.scenario import Answer, DecisionPoint, Expect, Inject, LoadedScenario
from breachbook.tabletop.world import (
    SimulatedApprovals,
    SimulatedChat,
    SimulatedClock,
    SimulatedCloud,
    SimulatedCloudEvidence,
    SimulatedCustomers,
    SimulatedDatabaseAdmin,
    SimulatedEvidenceSource,
    SimulatedEvidenceStore,
    SimulatedHttp,
    SimulatedMail,
    SimulatedPrintShop,
    SimulatedPublisher,
    SimulatedWorld,
)
from breachbook.wiring import Adapters, RunRequest, folder_ledger_url, mode_profile
from breachbook.workspace import Workspace

CONTROL = "exercise-control"
"""The actor of the entries the exercise itself writes (injects, faults, answers)."""
LEDGER_STEP = "tabletop"
DONE = frozenset({Status.COMPLETED, Status.ALREADY_DONE})


@dataclass(frozen=True)
class Logged:
    """One line of the exercise log, in scenario time."""

    at: timedelta
    kind: str
    subject: str
    detail: str = ""


@dataclass(frozen=True)
class Taken:
    """A decision as the players took it."""

    at: timedelta
    option: str
    role: str
    authorised: bool


@dataclass
class ExerciseLog:
    """What happened, from which the score and the after-action report are made."""

    loaded: LoadedScenario
    run_id: str
    lines: list[Logged] = field(default_factory=list)
    steps_done: dict[str, timedelta] = field(default_factory=dict)
    decisions: dict[str, Taken] = field(default_factory=dict)
    asked: dict[str, timedelta] = field(default_factory=dict)
    fired: dict[str, timedelta] = field(default_factory=dict)
    contingencies: dict[str, timedelta] = field(default_factory=dict)
    rounds: int = 0
    letters_sent: int = 0
    fault_hits: dict[str, int] = field(default_factory=dict)
    last_result: RunResult | None = None

    def when(self, expect: Expect) -> timedelta | None:
        """When an expected response happened (a decision: by someone with authority, with
        the expected option), or None."""
        if expect.step is not None:
            return self.steps_done.get(expect.step)
        assert expect.decision is not None
        taken = self.decisions.get(expect.decision)
        if taken is None or not taken.authorised:
            return None
        if expect.option is not None and taken.option != expect.option:
            return None
        return taken.at

    def met(self, expect: Expect, by: timedelta) -> bool:
        done = self.when(expect)
        return done is not None and done <= (expect.by if expect.by is not None else by)


class Event(StrEnum):
    """What can happen next in an exercise."""

    INJECT = "inject"
    CONTINGENCY = "contingency"
    FAULT_BEGINS = "fault-begins"
    FAULT_ENDS = "fault-ends"
    ASK = "ask"
    DECISION_DEADLINE = "decision-deadline"
    ANSWER = "answer"
    ROUND = "round"
    END = "end"


@dataclass(order=True)
class _Event:
    at: timedelta
    order: int
    kind: Event = field(compare=False)
    subject: str = field(compare=False)
    answer: Answer | None = field(compare=False, default=None)


def exercise_run_id(loaded: LoadedScenario, answers_text: str) -> str:
    """The same scenario and the same answers give the same run id, so the same documents."""
    digest = hashlib.sha256(loaded.path.read_bytes() + b"\0" + answers_text.encode())
    return f"tt-{digest.hexdigest()[:12]}"


class Exercise:
    def __init__(
        self,
        loaded: LoadedScenario,
        players: Players,
        out: Path,
        settings: Settings,
        run_id: str,
    ) -> None:
        self.loaded = loaded
        self.scenario = loaded.scenario
        self.players = players
        self.out = out.resolve()
        self.clock = SimulatedClock(loaded.incident.awareness)
        self.world = SimulatedWorld(self.scenario.world, self.clock)
        self.log = ExerciseLog(loaded, run_id)
        self._settings = settings
        self._queue: list[_Event] = []
        self._order = 0
        self._at = timedelta(0)
        self._incident_yaml = yaml.safe_dump(
            loaded.incident.model_dump(mode="json", exclude_none=True),
            sort_keys=False,
            allow_unicode=True,
        )

    # -- setting up -----------------------------------------------------------------------

    def _claim(self) -> tuple[Workspace, RunJournal]:
        if self.out.exists() and any(self.out.iterdir()):
            raise OutputFolderError(f"{self.out}: an exercise needs a new or empty folder")
        profile = mode_profile(Mode.TABLETOP)
        workspace = Workspace.claim(
            self.out, profile.banner, self.log.run_id, f"breachbook tabletop {self.log.run_id}"
        )
        ledger = Ledger(
            folder_ledger_url(workspace),
            self.clock,
            synced_each_commit=profile.ledger_synced_each_commit,
        )
        journal = RunJournal(
            ledger, self.loaded.incident.id, self.log.run_id, CONTROL, profile.label, self.clock
        )
        return workspace, journal

    def _adapters(self, workspace: Workspace, journal: RunJournal) -> tuple[Adapters, Settings]:
        """The simulated world in the run's own folder: its customers, its evidence store."""
        customers_spec = self.scenario.world.customers
        size = DEFAULT_SIZE if customers_spec.demo else customers_spec.generated or DEFAULT_SIZE
        folder = workspace.path("world")
        world = ensure_demo_world(folder, size=size, now=self.clock.start)
        mapping = folder / "datasource.yaml"
        settings = self._settings.model_copy(
            update={"datasource": mapping, "customers_url": None, "outbox": None}
        )
        directory = SqlCustomerDirectory(
            world.customers_url, True, load_datasource(mapping), mapping
        )
        customers = SimulatedCustomers(directory)
        adapters = Adapters(
            customers=customers,
            approvals=SimulatedApprovals(self.world, journal),
            database=SimulatedDatabaseAdmin(self.world),
            cloud=SimulatedCloud(self.world),
            mail=SimulatedMail(self.world),
            chat=SimulatedChat(self.world),
            evidence=SimulatedEvidenceStore(
                self.world, FilesystemEvidenceStore(folder / "evidence")
            ),
            publisher=SimulatedPublisher(self.world),
            printer=SimulatedPrintShop(self.world),
            evidence_source=SimulatedEvidenceSource(customers),
            cloud_evidence=SimulatedCloudEvidence(self.world),
            http=SimulatedHttp(self.world),
        )
        return adapters, settings

    def _push(self, at: timedelta, kind: Event, subject: str, answer: Answer | None = None) -> None:
        self._order += 1
        heapq.heappush(self._queue, _Event(at, self._order, kind, subject, answer))

    def _schedule(self) -> None:
        for inject in self.scenario.injects:
            kind = Event.CONTINGENCY if inject.contingency else Event.INJECT
            self._push(inject.at, kind, inject.id)
        for fault in self.scenario.world.faults:
            self._push(fault.start, Event.FAULT_BEGINS, fault.id)
            if fault.until is not None:
                self._push(fault.until, Event.FAULT_ENDS, fault.id)
        asked_by_inject = {i.asks for i in self.scenario.injects if i.asks}
        for decision in self.scenario.decisions:
            if decision.step is None and decision.id not in asked_by_inject:
                self._push(timedelta(0), Event.ASK, decision.id)
            self._push(decision.deadline, Event.DECISION_DEADLINE, decision.id)
        self._push(timedelta(0), Event.ROUND, "start")
        self._push(self.scenario.duration, Event.END, "end")

    # -- running --------------------------------------------------------------------------

    def run(self) -> ExerciseLog:
        workspace, journal = self._claim()
        try:
            adapters, settings = self._adapters(workspace, journal)
            self._schedule()
            while self._queue:
                due = self._queue[0].at
                self.clock.jump_to(self.clock.start + due)
                resume = False
                while self._queue and self._queue[0].at == due:
                    event = heapq.heappop(self._queue)
                    self._at = event.at
                    if event.kind is Event.END:
                        self._note(journal, "end", "end", "the exercise ends")
                        self._queue.clear()
                        break
                    resume = self._handle(event, journal) or resume
                if resume and not self._finished():
                    self._round(adapters, settings, journal)
            # The exercise's own last entries (injects, answers, the end) are signed too.
            Anchoring.from_settings(self._settings, self.out).checkpoint(
                journal, "end of exercise", again=True
            )
        finally:
            journal.ledger.close()
        self.log.letters_sent = self.world.letters_sent
        for _, fault_id in self.world.fault_hits:
            self.log.fault_hits[fault_id] = self.log.fault_hits.get(fault_id, 0) + 1
        return self.log

    def _now(self) -> timedelta:
        """The scenario time of what is being handled: an event's own time (even when the
        response ran past it), or the clock's when the response run asks for a decision."""
        return self._at

    def _finished(self) -> bool:
        """Whether the response run has nothing left to do: every step done or skipped."""
        result = self.log.last_result
        return result is not None and all(
            e.status in DONE or e.status is Status.SKIPPED for e in result.entries()
        )

    def _note(
        self, journal: RunJournal, kind: str, subject: str, detail: str, outcome: str = "logged"
    ) -> None:
        self.log.lines.append(Logged(self._now(), kind, subject, detail))
        seconds = int(self._now().total_seconds())
        journal.record(LEDGER_STEP, subject, kind, outcome, {"scenario_seconds": seconds})

    def _handle(self, event: _Event, journal: RunJournal) -> bool:
        """Apply one event; True when the response run must go on (something it waits for
        may have changed)."""
        if event.kind is Event.ROUND:
            return True
        if event.kind is Event.INJECT:
            self._send(self._inject(event.subject), journal)
            return False
        if event.kind is Event.CONTINGENCY:
            inject = self._inject(event.subject)
            missing = [e for e in inject.unless if not self.log.met(e, self._now())]
            if missing:
                self.log.contingencies[inject.id] = self._now()
                self._send(
                    inject, journal, f"because {', '.join(e.label() for e in missing)} not done"
                )
            return False
        if event.kind is Event.FAULT_BEGINS:
            self._note(journal, "fault", event.subject, "begins")
            return False
        if event.kind is Event.FAULT_ENDS:
            self._note(journal, "fault", event.subject, "ends")
            return True
        if event.kind is Event.ASK:
            self._ask(self.loaded.decision(event.subject), journal)
            return False
        if event.kind is Event.DECISION_DEADLINE:
            if event.subject not in self.log.decisions:
                self._note(journal, "late", event.subject, "no decision by its deadline")
            return False
        if event.kind is Event.ANSWER:
            assert event.answer is not None
            return self._take(event.answer, journal)
        raise AssertionError(event.kind)

    def _inject(self, inject_id: str) -> Inject:
        return next(i for i in self.scenario.injects if i.id == inject_id)

    def _send(self, inject: Inject, journal: RunJournal, why: str = "") -> None:
        self.log.fired[inject.id] = self._now()
        kind = "contingency" if inject.contingency else "inject"
        self._note(journal, kind, inject.id, why or f"{inject.type} to {inject.to}", "sent")
        self.players.show(inject, self._now())
        if inject.asks is not None:
            self._ask(self.loaded.decision(inject.asks), journal)

    def _ask(self, decision: DecisionPoint, journal: RunJournal) -> None:
        if decision.id in self.log.asked:
            return
        self.log.asked[decision.id] = self._now()
        self._note(journal, "asked", decision.id, f"asked of {decision.role}")
        answer = self.players.answer(decision, self._now())
        if answer is not None:
            self._push(self._now() + answer.after, Event.ANSWER, decision.id, answer)

    def _take(self, answer: Answer, journal: RunJournal) -> bool:
        decision = self.loaded.decision(answer.decision)
        authorised = answer.role == decision.role
        self.log.decisions.setdefault(
            decision.id, Taken(self._now(), answer.option, answer.role, authorised)
        )
        if not authorised:
            self._note(
                journal,
                "authority",
                decision.id,
                f"{answer.option} by {answer.role}, who has no authority ({decision.role} has)",
                "refused",
            )
            return False
        self._note(
            journal, "decision", decision.id, f"{answer.option} by {answer.role}", answer.option
        )
        if decision.step is None:
            return False
        record_decision(journal, decision.step, answer.option == "approve", answer.by, self.clock)
        # A silent approver's decision is not delivered until the fault ends, which resumes
        # the run itself: resuming now would change nothing.
        return self.world.in_force("approvals", "decide", decision.role) is None

    def _round(self, adapters: Adapters, settings: Settings, journal: RunJournal) -> None:
        """Resume the response run where it stopped, through the product's entry point."""
        self.log.rounds += 1
        request = RunRequest(
            mode=Mode.TABLETOP,
            incident_yaml=self._incident_yaml,
            out_dir=self.out,
            playbook_file=self.loaded.playbook_file,
            run_id=self.log.run_id,
        )
        _, result = execute(request, settings=settings, clock=self.clock, adapters=adapters)
        self.log.last_result = result
        for step in result.steps:
            statuses = {entry.status for entry in step.entries}
            if step.step_id not in self.log.steps_done and statuses and statuses <= DONE:
                self.log.steps_done[step.step_id] = step.finished_at - self.clock.start
                self.log.lines.append(
                    Logged(self.log.steps_done[step.step_id], "step", step.step_id, "done")
                )
        self._at = self.clock.elapsed
        for step_id in result.waiting_for:
            for decision in self.scenario.decisions:
                if decision.step == step_id:
                    self._ask(decision, journal)


def run_exercise(
    loaded: LoadedScenario,
    players: Players,
    out: Path,
    settings: Settings,
    answers_text: str = "",
) -> ExerciseLog:
    """Run the exercise to its end; the score and report are made from the returned log."""
    return Exercise(loaded, players, out, settings, exercise_run_id(loaded, answers_text)).run()


def as_data(log: ExerciseLog) -> dict[str, Any]:
    """The log as plain data (ids, times in seconds, counts: no personal data)."""
    return {
        "run_id": log.run_id,
        "rounds": log.rounds,
        "steps_done": {k: v.total_seconds() for k, v in sorted(log.steps_done.items())},
        "contingencies": {k: v.total_seconds() for k, v in sorted(log.contingencies.items())},
        "letters_sent": log.letters_sent,
        "fault_hits": dict(sorted(log.fault_hits.items())),
    }


def record_decision(
    journal: RunJournal, step_id: str, granted: bool, by: str, clock: Clock
) -> None:
    """A player's decision on a gated step, written as an approval is (the exercise has judged
    the player's authority already), with the player as actor, for the version it waits on."""
    wait = wait_of(journal, step_id)
    role = wait.role if wait is not None else "-"
    decision = Decision(
        step_id=step_id,
        role=role,
        status=DecisionStatus.GRANTED if granted else DecisionStatus.DENIED,
        by=by,
        at=clock.now(),
        version=wait.version if wait is not None else None,
    )
    journal.put(DECISION, step_id, decision, scope=INCIDENT_SCOPE)
    journal.acting_as(by).record(
        step_id,
        "-",
        "approval",
        decision.status.value,
        {"role": role, "by": by, "via": "tabletop", "version": decision.version},
    )
