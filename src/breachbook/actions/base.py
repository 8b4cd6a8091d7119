"""What an action is: metadata beside a read-only preflight, a document-producing prepare,
and the apply that changes the world. The engine decides which of these a run may call."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from breachbook.errors import BreachbookError
from breachbook.ports import Check

if TYPE_CHECKING:
    from breachbook.context import RunContext


class ActionArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ArgsT = TypeVar("ArgsT", bound=ActionArgs)


@dataclass
class Prepared:
    """What prepare produced in the run's output folder: paths and counts, never personal data."""

    documents: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class Action(ABC, Generic[ArgsT]):
    """One kind of step. Subclasses set the class attributes and register themselves."""

    name: ClassVar[str]
    summary: ClassVar[str]
    changes: ClassVar[str]
    args_model: ClassVar[type[ActionArgs]]

    def parse_args(self, raw: dict[str, Any]) -> ArgsT:
        return self.args_model.model_validate(raw)  # type: ignore[return-value]

    def required_templates(self, raw_args: dict[str, Any]) -> list[str]:
        """Template paths (relative to templates/) this step needs; checked at validation."""
        return []

    def targets(self, args: ArgsT, ctx: RunContext) -> list[str]:
        """What the action acts on; each target gets its own ledger key and plan entry."""
        return ["incident"]

    @abstractmethod
    def preflight(self, args: ArgsT, target: str, ctx: RunContext) -> Check:
        """Read-only: would apply succeed on this target? Must change nothing anywhere."""

    def prepare(self, args: ArgsT, ctx: RunContext) -> Prepared:
        """Produce documents in the run's output folder from reads only. Runs in every mode."""
        return Prepared()

    @abstractmethod
    def would(self, args: ArgsT, target: str, ctx: RunContext) -> str:
        """One line saying what apply would change on the target."""

    @abstractmethod
    def apply(self, args: ArgsT, target: str, ctx: RunContext) -> dict[str, Any]:
        """Make the change. Returns ledger details: ids and counts, never personal data."""


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


def require(port: P | None, what: str, setting: str) -> P:
    if port is None:
        raise NotConfigured(f"no {what} connector configured (set {setting})")
    return port


def registry() -> dict[str, Action[Any]]:
    """All registered actions, by name. Importing breachbook.actions registers the built-ins."""
    return dict(_REGISTRY)
