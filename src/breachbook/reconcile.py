"""Reconcile a letter whose outcome is unknown instead of guessing: its Message-ID is
derived from (incident, obligation, customer), so the Sent folder can be asked whether the
relay took it. Found: it is settled as sent, not sent again. Not found, or no folder to ask:
it is sent again with the same Message-ID, so the receiving side can drop a copy."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from breachbook.connectors.message import message_id
from breachbook.errors import MailUnavailable
from breachbook.ledger import ItemStatus
from breachbook.ports import SentFolder

UNSETTLED = frozenset({ItemStatus.CLAIMED, ItemStatus.UNKNOWN})


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


class SentLookup:
    """Which taken-over letters the Sent folder shows sent. The letters unsettled at the first
    take-over (`unsettled`, read then: a batch with nothing to take over never reads them)
    are asked about in one go (in batches); a letter taken over later alone. A folder that
    cannot be read is not asked again in this delivery: its letters are sent again, as
    without a folder."""

    def __init__(
        self, folder: SentFolder | None, unsettled: Callable[[], Mapping[str, str]]
    ) -> None:
        self.folder = folder
        self._read_unsettled = unsettled
        self._unsettled: set[str] = set()
        self._filed: set[str] | None = None
        self.unreadable = ""

    @property
    def how(self) -> str:
        """How a taken-over letter is reconciled, for its ledger entry."""
        return "resend" if self.folder is None else "sent-folder"

    def filed(self, ident: str) -> str | None:
        """Where the letter with Message-ID `ident` was found filed, or None: send it again."""
        if self.folder is None or self.unreadable:
            return None
        try:
            if self._filed is None:
                self._unsettled = set(self._read_unsettled().values())
                self._filed = self.folder.contains(sorted(self._unsettled | {ident}))
            if ident not in self._filed and ident not in self._unsettled:
                self._filed |= self.folder.contains([ident])
        except MailUnavailable as exc:
            self.unreadable = str(exc)
            return None
        return f"found in {self.folder.describe()}" if ident in self._filed else None
