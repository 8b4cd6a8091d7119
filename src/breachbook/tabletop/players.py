"""The players' side of an exercise, one interface for scripted answers (CI, automated runs)
and a facilitator at a terminal typing the team's answers as injects arrive."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.prompt import IntPrompt, Prompt

from breachbook.tabletop.scenario import Answer, DecisionPoint, Inject


def scenario_time(elapsed: timedelta) -> str:
    """T+HH:MM, the way an exercise names its moments."""
    minutes = int(elapsed.total_seconds() // 60)
    return f"T+{minutes // 60:02d}:{minutes % 60:02d}"


class Players(Protocol):
    def show(self, inject: Inject, at: timedelta) -> None:
        """An inject reaches the players (never its evaluator notes)."""
        ...

    def answer(self, decision: DecisionPoint, asked_at: timedelta) -> Answer | None:
        """The team's answer to a decision, or None when nobody answers."""
        ...


class ScriptedPlayers:
    """Answers from a players file: who answers what, how long after being asked."""

    def __init__(self, answers: list[Answer]) -> None:
        self._answers = {answer.decision: answer for answer in answers}

    def show(self, inject: Inject, at: timedelta) -> None:
        return None

    def answer(self, decision: DecisionPoint, asked_at: timedelta) -> Answer | None:
        return self._answers.get(decision.id)


class TerminalPlayers:
    """A facilitator at a terminal: each inject is shown as it arrives; each decision asks
    for the option the team chose, who answered, and how long the team took."""

    def __init__(self, console: Console, roles: list[str]) -> None:
        self._console = console
        self._roles = roles

    def show(self, inject: Inject, at: timedelta) -> None:
        title = f"{scenario_time(at)}  {inject.type} to {inject.to}  [{inject.id}]"
        self._console.print(Panel(escape(inject.text), title=escape(title), expand=False))

    def answer(self, decision: DecisionPoint, asked_at: timedelta) -> Answer | None:
        self._console.print(
            f"[bold]{scenario_time(asked_at)} decision for {escape(decision.role)}:[/] "
            f"{escape(decision.question)}"
        )
        option = Prompt.ask(
            "option (none: nobody answers)",
            choices=[*decision.options, "none"],
            console=self._console,
        )
        if option == "none":
            return None
        by = Prompt.ask("answered by", default=decision.role, console=self._console).strip()
        role = Prompt.ask(
            "in the role of", choices=self._roles, default=decision.role, console=self._console
        )
        minutes = IntPrompt.ask("minutes of scenario time taken", default=10, console=self._console)
        return Answer(
            decision=decision.id,
            by=by or decision.role,
            role=role,
            option=option,
            after=timedelta(minutes=max(0, minutes)),
        )
