"""The relay's own log as the record of what it accepted: a letter whose outcome is unknown
is looked up there by its deterministic Message-ID, as in an IMAP Sent folder, when the
relay writes one (Postfix's maillog: `postfix/cleanup[123]: 4F1A2B: message-id=<...>`).

Read only, never written: the relay logs by itself, before it answers 250, so a run killed
between the relay's answer and the ledger's record finds the letter there. A maillog can be
gigabytes: it is read once per delivery for the letters then in doubt, in blocks of
`BLOCK` bytes, so memory stays flat whatever its size (a letter claimed by another run after
the delivery began and taken over in it, which is rare, costs a pass of its own).

A line naming one of our Message-IDs is taken as the relay's acceptance, except where the
relay says it refused that message: a Postfix line `QID: reject:` or `QID: milter-reject:`
(a content filter's refusal after the message-id line) undoes the acceptance logged under
that queue id. A letter not found (rotated out of the file, or refused) is sent again with
the same Message-ID: the safe side, a copy the receiving system can drop, never a loss.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from breachbook.errors import MailUnavailable
from breachbook.ports import Check

BLOCK = 4 << 20
"""Bytes read at a time: the lines up to the block's last line break are searched at once
(regular expressions over a block are several times faster than a loop over its lines)."""

LONGEST_LINE = 1 << 20
"""A stretch without a line break longer than this (a file cut short by a crash, filled
with NULs) is searched as it is, and only its last `TAIL` bytes kept for the next block."""

TAIL = 512
"""Bytes kept of such a stretch: more than the longest id (`OUR_ID`), so an id the block's
end cuts through starts in them."""

OUR_ID = re.compile(rb"<breachbook\.[0-9a-f]{40}@[^<>\s]{1,255}>")
"""A Message-ID breachbook makes (connectors/message.py `message_id`), whole: from its `<`
to its `>`, so only an identical id matches, never one that starts or ends alike."""

ACCEPTED_AS = re.compile(rb"([0-9A-Za-z]+): message-id=$")
"""What precedes an id on Postfix's cleanup line: the queue id the message was taken as."""

REFUSED = re.compile(rb"([0-9A-Za-z]+): (?:milter-)?$")
"""What precedes `reject:` on a Postfix line refusing the message with this queue id after
all (looked for only where `reject:` is: most lines have none)."""

SETTING = "BREACHBOOK_SMTP_RELAY_LOG"
METHOD = "open and read the relay's log (nothing written)"


class RelayLog:
    """The SentFolder port on a log file the relay writes: `contains` looks, `file` does
    nothing (the relay has logged the message already), so a drill and a live run read
    alike and neither ever writes to it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return f"relay log {self.path}"

    def _unreadable(self, exc: OSError) -> str:
        return f"{self.describe()}: cannot read it ({type(exc).__name__}); check {SETTING}"

    def check_can_read(self) -> Check:
        try:
            with self.path.open("rb") as log:
                log.read(1)
        except OSError as exc:
            return Check.failed(self._unreadable(exc), METHOD)
        return Check.verified(f"{self.describe()} is readable; nothing was written", METHOD)

    def contains(self, message_ids: Sequence[str]) -> set[str]:
        """The ones of `message_ids` the log shows the relay took and did not refuse, in
        one pass over the file."""
        wanted = {ident.encode(): ident for ident in message_ids}
        if not wanted:
            return set()
        scan = _Scan(set(wanted))
        try:
            with self.path.open("rb", buffering=0) as log:  # no buffer beside the block
                carry = b""
                while block := log.read(BLOCK):
                    carry = scan.lines_of(carry + block)
                scan.block(carry, len(carry))
        except OSError as exc:
            raise MailUnavailable(self._unreadable(exc)) from None
        return {wanted[ident] for ident in scan.accepted()}

    def file(self, message: bytes) -> None:
        """Nothing: the relay logged the message itself before it answered."""


class _Scan:
    """What the log said so far of the ids asked about: the queue ids each was taken as
    (b"" for a line that names it without one), less those the relay then refused."""

    def __init__(self, wanted: set[bytes]) -> None:
        self.wanted = wanted
        self.taken: dict[bytes, set[bytes]] = {}
        self.owner: dict[bytes, bytes] = {}

    def lines_of(self, lines: bytes) -> bytes:
        """Search the lines `lines` ends; what follows its last line break is kept for the
        next block (returned). Here, so that a block is freed before the next is read."""
        cut = lines.rfind(b"\n") + 1
        if cut == 0 and len(lines) > LONGEST_LINE:
            self.block(lines, len(lines))
            return lines[-TAIL:]  # an id the end cuts through is whole in the next
        self.block(lines, cut)
        return lines[cut:]

    def block(self, lines: bytes, end: int) -> None:
        """The lines in `lines[:end]` (searched in place: a block is not copied)."""
        for ident in self.wanted.intersection(OUR_ID.findall(lines, 0, end)):
            at = lines.find(ident, 0, end)
            while at != -1:
                self._line(ident, lines, at)
                at = lines.find(ident, at + len(ident), end)
        at = lines.find(b"reject:", 0, end) if self.owner else -1
        while at != -1:
            refused = REFUSED.search(lines, max(0, at - 64), at)
            if refused is not None and refused[1] in self.owner:
                self.taken[self.owner[refused[1]]].discard(refused[1])
            at = lines.find(b"reject:", at + 7, end)

    def _line(self, ident: bytes, lines: bytes, at: int) -> None:
        start = lines.rfind(b"\n", 0, at) + 1
        before = lines[start:at]
        said = before.find(b"reject:")
        refused = REFUSED.search(before, 0, said) if said != -1 else None
        if refused is not None:  # the refusal itself quotes the header
            self.taken.setdefault(ident, set()).discard(refused[1])
            return
        queued = ACCEPTED_AS.search(before)
        queue_id = queued[1] if queued else b""
        self.taken.setdefault(ident, set()).add(queue_id)
        if queue_id:
            self.owner[queue_id] = ident

    def accepted(self) -> set[bytes]:
        return {ident for ident, queue_ids in self.taken.items() if queue_ids}
