"""A real SMTP server for tests: aiosmtpd on a free loopback port, with STARTTLS (a
self-signed certificate made for the test) and AUTH, recording every command and message.

It records what a relay sees: each MAIL FROM, each message with its Message-ID, as raw
bytes. It does not drop a copy by Message-ID: tests count copies and distinct Message-IDs
themselves, so a resend shows. `reply` scripts an answer to a recipient (a 4xx now and then,
a 5xx for good) before the message is taken.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port

USER, PASSWORD = "breachbook", "s3cret-relay-password"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "relay.pem", folder / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


Reply = Callable[[str], str | None]
"""Given a recipient, an SMTP reply ('451 4.3.0 try later') or None to accept."""


@dataclass
class Recorder:
    """Everything the server saw; read under `lock`."""

    messages: list[Message] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    reply: Reply | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for m in self.messages]

    def by_key(self) -> dict[str, list[Message]]:
        """Copies received per letter key (X-Breachbook-Key)."""
        with self.lock:
            found: dict[str, list[Message]] = {}
            for message in self.messages:
                found.setdefault(str(message["X-Breachbook-Key"]), []).append(message)
            return found

    def count(self, command: str) -> int:
        with self.lock:
            return sum(1 for c in self.commands if c == command)


class RelayLogWriter:
    """The relay's own log, as Postfix's cleanup writes it (`QID: message-id=<...>`), one
    line per accepted message, flushed before the relay answers 250 as a real relay logs
    before it replies: a client killed after the reply finds its message logged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._queued = 0x4F1A2B0000

    def accepted(self, message: Message) -> None:
        self._queued += 1
        now = datetime.datetime.now(datetime.UTC).strftime("%b %d %H:%M:%S")
        self._file.write(
            f"{now} relay postfix/cleanup[4242]: {self._queued:X}: "
            f"message-id={message['Message-ID']}\n"
        )
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RecordingHandler:
    """aiosmtpd's hooks, named handle_VERB by aiosmtpd."""

    def __init__(self, recorder: Recorder, log: RelayLogWriter | None = None) -> None:
        self.recorder = recorder
        self.log = log

    def _note(self, command: str) -> None:
        with self.recorder.lock:
            self.recorder.commands.append(command)

    async def handle_EHLO(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        self._note("EHLO")
        session.host_name = hostname
        return responses

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:  # noqa: N802
        """aiosmtpd calls this one without awaiting it."""
        self._note("STARTTLS")
        return True

    async def handle_NOOP(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        self._note("NOOP")
        return "250 OK"

    async def handle_MAIL(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self._note("MAIL")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self._note("RCPT")
        script = self.recorder.reply
        answer = script(address) if script else None
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self._note("DATA")
        raw = envelope.original_content or b""
        message = message_from_bytes(raw, policy=default)
        with self.recorder.lock:
            if self.log is not None:
                self.log.accepted(message)
            self.recorder.messages.append(message)
        return "250 Message accepted for delivery"


class Authenticator:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode()
        )
        with self.recorder.lock:
            self.recorder.commands.append("AUTH")
            if ok:
                self.recorder.logins.append(USER)
        return AuthResult(success=ok, handled=False)


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    ca_file: Path
    recorder: Recorder
    log: Path | None = None

    def env(self) -> dict[str, str]:
        """The BREACHBOOK_SMTP_* settings that point a run at this relay (and at its log,
        when it writes one)."""
        named = {"BREACHBOOK_SMTP_RELAY_LOG": str(self.log)} if self.log else {}
        return {
            "BREACHBOOK_SMTP_HOST": self.host,
            "BREACHBOOK_SMTP_PORT": str(self.port),
            "BREACHBOOK_SMTP_USERNAME": USER,
            "BREACHBOOK_SMTP_PASSWORD": PASSWORD,
            "BREACHBOOK_SMTP_STARTTLS": "true",
            "BREACHBOOK_SMTP_CA_FILE": str(self.ca_file),
            **named,
        }


@contextmanager
def recording_relay(
    folder: Path, reply: Reply | None = None, log: Path | None = None
) -> Iterator[Relay]:
    """A started server requiring STARTTLS before AUTH and AUTH before MAIL; with `log`, it
    appends a Postfix-style line there for each message it accepts, before its 250."""
    cert, key = self_signed(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    recorder = Recorder(reply=reply)
    writer = RelayLogWriter(log) if log is not None else None
    port = free_port()
    controller = Controller(
        RecordingHandler(recorder, writer),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=Authenticator(recorder),
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield Relay("127.0.0.1", port, cert, recorder, log)
    finally:
        controller.stop()
        if writer is not None:
            writer.close()
