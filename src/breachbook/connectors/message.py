"""One letter as an email message, the same bytes whichever way it leaves: to an outbox
folder, to an SMTP relay, or to a drill's own folder.

Nearly every letter is written as bytes directly (`message_bytes`): plain ASCII headers, an
encoded subject, text and HTML parts whose lines fit. The standard library's email package
builds the rest (an address outside ASCII, a line too long to send as it is) and is the
reference the direct bytes are checked against: building a message through it costs about a
millisecond, several times what the relay takes to accept one.

The Message-ID is derived from (incident, customer, obligation), so the letter resent after
a crash carries the Message-ID of the copy that may already have arrived: receiving systems
that keep the Message-IDs they delivered (Gmail does, per mailbox) drop the copy, and every
reader can tell the two are one letter.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from datetime import UTC, datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, formatdate

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


ENCODED_WORD_BYTES = 42
"""UTF-8 bytes of subject per RFC 2047 encoded word: base64 makes 56 characters of them, 68
with `=?utf-8?b?` and `?=`: each line of a subject within the 78 RFC 5322 asks."""
LONGEST_LINE = 998
"""RFC 5322's limit on a line, in bytes; a body line longer than that needs an encoding."""


def message_bytes(letter: OutgoingLetter, sender: str, linesep: str = "\n") -> bytes:
    """The letter as a message, `linesep` ending each line (CRLF for SMTP): written directly
    where it can be, else by `build_message`. Both read back as the same message."""
    direct = _written_directly(letter, sender, linesep.encode("ascii"))
    if direct is not None:
        return direct
    return build_message(letter, sender).as_bytes(policy=HEADERS_WHOLE.clone(linesep=linesep))


def needs_smtputf8(letter: OutgoingLetter, sender: str) -> bool:
    """An address outside ASCII: only a relay offering SMTPUTF8 takes the letter."""
    return not (letter.recipient.isascii() and sender.isascii())


def _plain(value: str) -> bool:
    """Printable ASCII only: nothing that could end a header or start another."""
    return value.isascii() and value.isprintable()


def _subject(subject: str, linesep: bytes) -> bytes | None:
    """The subject as it is when plain ASCII, else as RFC 2047 base64 encoded words, one per
    folded line, each split on a character boundary."""
    if _plain(subject):
        return subject.encode("ascii") if len(subject) <= LONGEST_LINE - 9 else None
    if not subject.isprintable():
        return None
    words: list[bytes] = []
    chunk = b""
    for character in subject:
        encoded = character.encode("utf-8")
        if len(chunk) + len(encoded) > ENCODED_WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return (linesep + b" ").join(
        b"=?utf-8?b?" + base64.b64encode(word) + b"?=" for word in words if word
    )


def _body(text: str, linesep: bytes) -> tuple[bytes, bytes] | None:
    """The text's lines ended by `linesep`, and 7bit or 8bit as the standard library would
    choose; None when a line is longer than a line may be (the library encodes it)."""
    lines = text.encode("utf-8").splitlines()
    if any(len(line) > LONGEST_LINE for line in lines):
        return None
    return linesep.join(lines) + linesep, b"7bit" if text.isascii() else b"8bit"


def _part(kind: bytes, body: tuple[bytes, bytes]) -> list[bytes]:
    return [
        b"Content-Type: text/" + kind + b'; charset="utf-8"',
        b"Content-Transfer-Encoding: " + body[1],
    ]


def _written_directly(letter: OutgoingLetter, sender: str, linesep: bytes) -> bytes | None:
    """The message's bytes without the email package, or None where it must build them."""
    plain = (sender, letter.recipient, letter.message_id, letter.key, letter.language)
    if not all(_plain(value) for value in plain):
        return None
    subject = _subject(letter.subject, linesep)
    text = _body(letter.body, linesep)
    html = _body(letter.html, linesep) if letter.html else None
    if subject is None or text is None or (letter.html and html is None):
        return None
    head = [
        b"From: " + sender.encode(),
        b"To: " + letter.recipient.encode(),
        b"Subject: " + subject,
        b"Date: " + format_datetime(datetime.now(UTC)).encode(),
    ]
    if letter.message_id:
        head.append(b"Message-ID: " + letter.message_id.encode())
    head.append(b"X-Breachbook-Key: " + letter.key.encode())
    language = [b"Content-Language: " + letter.language.encode()] if letter.language else []
    if html is None:
        head += [*_part(b"plain", text), b"MIME-Version: 1.0", *language]
        return linesep.join(head) + linesep + linesep + text[0]
    boundary = _boundary(letter, (text[0], html[0]))
    head += [
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/alternative; boundary="' + boundary + b'"',
        *language,
    ]
    delimiter = b"--" + boundary
    out = [linesep.join(head), b"", delimiter]
    out += [*_part(b"plain", text), b"", text[0]]
    out += [delimiter, *_part(b"html", html), b"", html[0]]
    out += [delimiter + b"--", b""]
    return linesep.join(out)


def _boundary(letter: OutgoingLetter, bodies: tuple[bytes, ...]) -> bytes:
    """The same for a letter each time it is made (a resend's bytes differ only in Date),
    and in none of its parts."""
    seed = hashlib.sha256(f"{letter.key}\0{letter.message_id}".encode()).hexdigest()
    for attempt in range(100):
        boundary = f"=_bb{seed[:32]}{attempt or ''}".encode()
        if not any(boundary in body for body in bodies):
            return boundary
    raise ValueError(f"letter {letter.key}: no boundary outside its parts")
