"""What an action is: metadata beside a read-only preflight, a document-producing prepare,
the apply that changes the world and, where it can be reversed, the undo that puts it back.
The engine decides which of these a run may call, and claims each item before apply."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from breachbook.errors import BreachbookError
from breachbook.journal import Once
from breachbook.ports import Changed, Check

if TYPE_CHECKING:
    from breachbook.context import Connectors, RunContext


NOTHING = "nothing outside the run's output folder"
"""What an action `changes` when it only reads and records: it is never claimed."""


class ActionArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ArgsT = TypeVar("ArgsT", bound=ActionArgs)


@dataclass
class Prepared:
    """What prepare produced in the run's output folder: paths and counts, never personal data."""

    documents: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class NotReversible(BreachbookError):
    """restore was asked to undo an action that declares no undo."""


class Action(ABC, Generic[ArgsT]):
    """One kind of step. Subclasses set the class attributes and register themselves.

    An ordinary action changes one thing per target: the engine claims the target as one
    item, calls `apply`, and records the outcome and the prior state. An `itemized` action
    (letters) has many items per target and claims each one itself in `apply_items`, so a
    re-run does exactly the items that are missing, including ones found since.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    changes: ClassVar[str]
    args_model: ClassVar[type[ActionArgs]]
    itemized: ClassVar[bool] = False
    reversible: ClassVar[bool] = False

    @property
    def changes_nothing(self) -> bool:
        """Reads and records only (finding customers, drafting): every run does it for its
        own records, so it is not claimed once per incident like a change is. A claim would
        let a concurrent run of the incident find it in flight and hold back its steps."""
        return self.changes == NOTHING

    def parse_args(self, raw: dict[str, Any]) -> ArgsT:
        return self.args_model.model_validate(raw)  # type: ignore[return-value]

    def required_templates(self, raw_args: dict[str, Any]) -> list[str]:
        """Template paths (relative to templates/) this step needs; checked at validation."""
        return []

    def targets(self, args: ArgsT, ctx: RunContext) -> list[str]:
        """What the action acts on; each target gets its own plan entry."""
        return ["incident"]

    @abstractmethod
    def preflight(self, args: ArgsT, target: str, ctx: RunContext) -> Check:
        """Read-only: would apply succeed on this target? Must change nothing anywhere."""

    def prepare(self, args: ArgsT, ctx: RunContext) -> Prepared:
        """Produce documents and run records from reads only. Runs in every mode."""
        return Prepared()

    @abstractmethod
    def would(self, args: ArgsT, target: str, ctx: RunContext) -> str:
        """One line saying what apply would change on the target."""

    def apply(self, args: ArgsT, target: str, ctx: RunContext) -> Changed:
        """Make the change on one target; details are ids and counts, never personal data."""
        raise NotImplementedError(f"{self.name} has no apply")

    def apply_items(self, args: ArgsT, target: str, ctx: RunContext) -> Counter[Once]:
        """An itemized action's change: claim, act on and settle each item of the target."""
        raise NotImplementedError(f"{self.name} is not itemized")

    def undo(self, target: str, prior: Mapping[str, Any], connectors: Connectors) -> Changed:
        """Put back what apply changed on the target, from the prior state it recorded."""
        raise NotReversible(f"{self.name} cannot be undone")


_REGISTRY: dict[str, Action[Any]] = {}

A = TypeVar("A", bound=type[Action[Any]])


def register(cls: A) -> A:
    """Class decorator: make an action available to playbooks under its `name`."""
    if cls.name in _REGISTRY:
        raise ValueError(f"action {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


class NotConfigured(BreachbookError):
    """An action needs a connector this run does not have."""


P = TypeVar("P")


def require(port: P | None, what: str, remedy: str) -> P:
    if port is None:
        raise NotConfigured(f"no {what} connector configured: {remedy}")
    return port


def registry() -> dict[str, Action[Any]]:
    """All registered actions, by name. Importing breachbook.actions registers the built-ins."""
    return dict(_REGISTRY)
