"""One letter as an email message, the same bytes whichever way it leaves: to an outbox
folder, to an SMTP relay, or to a drill's own folder.

The Message-ID is derived from (incident, customer, obligation), so the letter resent after
a crash carries the Message-ID of the copy that may already have arrived: receiving systems
that keep the Message-IDs they delivered (Gmail does, per mailbox) drop the copy, and every
reader can tell the two are one letter.
"""

from __future__ import annotations

import functools
import hashlib
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default
from email.utils import formatdate

from breachbook.ports import OutgoingLetter


def message_id(incident_id: str, obligation: str, customer_id: str, sender: str) -> str:
    """`<breachbook.HASH@domain-of-sender>`: stable for one letter, saying nothing of whom
    it is to (a hash of the three ids)."""
    digest = hashlib.sha256(f"{incident_id}\0{obligation}\0{customer_id}".encode()).hexdigest()
    domain = sender.rpartition("@")[2] or "breachbook.invalid"
    return f"<breachbook.{digest[:40]}@{domain}>"


class HeaderClasses(HeaderRegistry):
    """The standard header registry, each header's class made once: the stock registry
    builds a new class for every header it sets or writes (a quarter of a message's
    building time); the headers and bytes are the same."""

    @functools.cache  # noqa: B019 - one registry per process, kept for its life
    def __getitem__(self, name: str) -> type[BaseHeader]:
        made: type[BaseHeader] = super().__getitem__(name)
        return made


HEADERS_WHOLE = default.clone(max_line_length=998, header_factory=HeaderClasses())
"""RFC 5322's own line limit: a Message-ID is never folded, so it reads back as written."""


def build_message(letter: OutgoingLetter, sender: str) -> EmailMessage:
    """Text, or text and HTML as multipart/alternative, with the letter's Message-ID."""
    message = EmailMessage(policy=HEADERS_WHOLE)
    message["From"] = sender
    message["To"] = letter.recipient
    message["Subject"] = letter.subject
    message["Date"] = formatdate(usegmt=True)
    if letter.message_id:
        message["Message-ID"] = letter.message_id
    message["X-Breachbook-Key"] = letter.key
    message.set_content(letter.body)
    if letter.html:
        message.add_alternative(letter.html, subtype="html")
    if letter.language:  # after the parts: making them moves Content-* headers down into one
        message["Content-Language"] = letter.language
    return message
