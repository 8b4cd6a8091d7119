"""Drill adapters: every check goes to the real connector, every write is refused here,
where the request would leave the process, whatever the action code above asks for."""

from __future__ import annotations

from collections.abc import Iterator

from breachbook.errors import DrillWriteBlocked
from breachbook.ports import Check, EvidenceStore, Mail, OutgoingLetter


class DrillMail:
    def __init__(self, inner: Mail) -> None:
        self.inner = inner

    def describe(self) -> str:
        return f"{self.inner.describe()} (drill: sending refused)"

    def check_can_send(self) -> Check:
        return self.inner.check_can_send()

    def send(self, letter: OutgoingLetter) -> str:
        raise DrillWriteBlocked(f"drill: refused to send letter {letter.key}")


class DrillEvidenceStore:
    def __init__(self, inner: EvidenceStore) -> None:
        self.inner = inner

    def describe(self) -> str:
        return f"{self.inner.describe()} (drill: storing refused)"

    def check_writable(self) -> Check:
        return self.inner.check_writable()

    def put(self, item_id: str, chunks: Iterator[bytes]) -> str:
        raise DrillWriteBlocked(f"drill: refused to store evidence item {item_id}")


class NoApprovals:
    """No approval channel: nobody can be asked, so nothing that needs approval happens."""

    def check_can_ask(self, role: str) -> Check:
        return Check.unverified(f"no approval channel configured to ask role {role!r}")

    def request(self, step_id: str, role: str, summary: str) -> bool:
        return False
