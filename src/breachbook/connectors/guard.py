"""The drill guard: one wrapper for every port, letting through only methods marked `@reads`.

It is generic on purpose: a port or method added later is refused in a drill by default,
at the point where the request would leave the process, whatever the action code asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from breachbook.errors import DrillWriteBlocked
from breachbook.ports import is_read

PortT = TypeVar("PortT")


class ReadOnlyPort:
    """Forwards the port's read methods to the adapter; every other call raises."""

    def __init__(self, inner: object, port: type) -> None:
        self._inner = inner
        self._port = port

    def __getattr__(self, name: str) -> Any:
        declared = getattr(self._port, name, None)
        if declared is None or name.startswith("_"):
            raise AttributeError(f"{self._port.__name__} has no method {name!r}")
        if name == "describe":
            inner_describe = cast(Callable[[], str], self._inner.describe)  # type: ignore[attr-defined]
            return lambda: f"{inner_describe()} (drill: writes refused)"
        if is_read(declared):
            return getattr(self._inner, name)
        port_name = self._port.__name__

        def refused(*args: object, **kwargs: object) -> Any:
            raise DrillWriteBlocked(f"drill: refused {port_name}.{name}")

        return refused


def read_only(adapter: PortT, port: type) -> PortT:
    """The adapter seen through the drill guard, typed as the port it implements."""
    return cast(PortT, ReadOnlyPort(adapter, port))
