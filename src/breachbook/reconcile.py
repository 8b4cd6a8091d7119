"""Reconcile a letter whose outcome is unknown instead of guessing: its Message-ID is
derived from (incident, obligation, customer), so a record of what the relay accepted can be
asked whether the relay took it: the IMAP Sent folder (BREACHBOOK_IMAP_HOST), the relay's
own log (BREACHBOOK_SMTP_RELAY_LOG), or both. Found in either: it is settled as sent, not
sent again (each is written only once the relay took the letter). Not found, or nothing to
ask: it is sent again with the same Message-ID, so the receiving side can drop a copy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from breachbook.connectors.message import message_id
from breachbook.errors import MailUnavailable
from breachbook.ledger import ItemStatus
from breachbook.ports import SentFolder

UNSETTLED = frozenset({ItemStatus.CLAIMED, ItemStatus.UNKNOWN})

SENT_FOLDER, RELAY_LOG = "sent-folder", "relay-log"
"""The names of the records in the ledger's entries, in the order they are asked."""


def unsettled_letters(
    known: Mapping[str, ItemStatus], rule_id: str, incident_id: str, sender: str
) -> dict[str, str]:
    """Message-ID by letter key of the rule's letters the ledger shows claimed or unknown:
    the ones a run may take over, asked about together at the first take-over."""
    prefix = f"{rule_id}/"
    return {
        key: message_id(incident_id, rule_id, key.removeprefix(prefix), sender)
        for key, status in known.items()
        if status in UNSETTLED and key.startswith(prefix)
    }


@dataclass(frozen=True)
class Reconciled:
    """What the records said of one taken-over letter, for its ledger entry."""

    found_in: str | None
    """The record that holds it (settled as sent), or None: send it again."""
    how: str
    """`sent-folder` or `relay-log` (found there), or `resent: ...` saying why not."""


class _Record:
    """One record's answers for one delivery: the letters unsettled at the first take-over
    are asked about in one go (in batches); a letter taken over later alone. A record that
    cannot be read is not asked again in this delivery."""

    def __init__(self, source: SentFolder, unsettled: Callable[[], set[str]]) -> None:
        self.source = source
        self._read_unsettled = unsettled
        self._unsettled: set[str] = set()
        self._filed: set[str] | None = None
        self.unreadable = ""

    def holds(self, ident: str) -> bool:
        if self.unreadable:
            return False
        try:
            if self._filed is None:
                self._unsettled = self._read_unsettled()
                self._filed = self.source.contains(sorted(self._unsettled | {ident}))
            if ident not in self._filed and ident not in self._unsettled:
                self._filed |= self.source.contains([ident])
        except MailUnavailable as exc:
            self.unreadable = str(exc)
            return False
        return ident in self._filed


class SentLookup:
    """Which taken-over letters a record of the relay's acceptances shows sent, asking each
    configured record (`records`: name to port) until one holds it. A record that cannot be
    read is asked no more in this delivery: its letters are sent again, as without one."""

    def __init__(
        self,
        records: Mapping[str, SentFolder | None],
        unsettled: Callable[[], Mapping[str, str]],
    ) -> None:
        self._read_unsettled = unsettled
        self._unsettled: set[str] | None = None
        self._records = {
            name: _Record(source, self._idents)
            for name, source in records.items()
            if source is not None
        }

    def _idents(self) -> set[str]:
        """The Message-IDs of the letters unsettled at the first take-over, read once then
        (a batch with nothing to take over never reads them)."""
        if self._unsettled is None:
            self._unsettled = set(self._read_unsettled().values())
        return self._unsettled

    @property
    def how(self) -> str:
        """How a taken-over letter is reconciled, for its take-over entry: the records asked
        (`sent-folder`, `relay-log`, both joined by `+`), or `resend` with none."""
        return "+".join(self._records) or "resend"

    @property
    def unreadable(self) -> str:
        """Why a record could not be read in this delivery (empty: each could)."""
        return "; ".join(r.unreadable for r in self._records.values() if r.unreadable)

    def reconcile(self, ident: str) -> Reconciled:
        """Ask each record about the letter with Message-ID `ident`."""
        for name, record in self._records.items():
            if record.holds(ident):
                return Reconciled(f"found in {record.source.describe()}", name)
        if not self._records:
            return Reconciled(None, "resent: no record of the relay's acceptances configured")
        why = [
            record.unreadable or f"not in {record.source.describe()}"
            for record in self._records.values()
        ]
        return Reconciled(None, f"resent: {'; '.join(why)}")
