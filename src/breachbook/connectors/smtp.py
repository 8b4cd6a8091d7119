"""Letters through an SMTP relay: a pool of connections, a rate limit, retries.

smtplib from the standard library, one connection per thread: the core is synchronous (the
ledger, the clock port, the engine), a send waits on the network with the GIL released, so
a few threads holding a connection each keep the relay busy without an event loop to bridge
(aiosmtplib would add a dependency and an asyncio loop for the same overlap).

A reply of the 4xx family and a dropped connection are passing: the letter is sent again
after a back-off taken through the clock port, with the same Message-ID. A 5xx reply or a
refused recipient is definite: `MailRefused` with the reply code, never the address. A
connection that dropped after the letter was handed over may have delivered it: if every
retry fails too, the outcome is unknown (`OutcomeUnknown`), for a later run to reconcile.
"""

from __future__ import annotations

import queue
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from breachbook.clock import Clock
from breachbook.connectors.message import build_message, message_bytes, needs_smtputf8
from breachbook.errors import DrillWriteBlocked, MailRefused, MailUnavailable
from breachbook.journal import OutcomeUnknown
from breachbook.ports import Check, OutgoingLetter, SentFolder
from breachbook.settings import Settings

RETRY_DELAYS = (1.0, 4.0, 16.0, 64.0)
"""Seconds before each new attempt at one letter (exponential, about 85 s in all)."""

METHOD = "SMTP EHLO, STARTTLS and AUTH (no MAIL FROM)"


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = True
    ca_file: Path | None = None
    connections: int = 4
    rate_per_minute: int = 6000
    timeout: float = 30.0
    retry_delays: tuple[float, ...] = RETRY_DELAYS

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        assert settings.smtp_host is not None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            ca_file=settings.smtp_ca_file,
            connections=settings.smtp_connections,
            rate_per_minute=settings.smtp_rate_per_minute,
            timeout=settings.smtp_timeout_seconds,
        )


class RateLimit:
    """Letters spaced evenly, at most `per_minute` in any minute, across every thread; the
    wait is taken through the clock port (a simulated clock just moves on)."""

    def __init__(self, per_minute: int, clock: Clock) -> None:
        self._spacing = timedelta(seconds=60.0 / per_minute)
        self._clock = clock
        self._next: datetime | None = None
        self._lock = threading.Lock()

    def wait_turn(self) -> None:
        with self._lock:
            now = self._clock.now()
            slot = now if self._next is None or self._next <= now else self._next
            self._next = slot + self._spacing
        pause = (slot - now).total_seconds()
        if pause > 0:
            self._clock.sleep(pause)


class _NotConnected(Exception):
    """Opening a connection failed: nothing was handed over."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


class SmtpMail:
    """The Mail port on an SMTP relay. `read_only` (a drill) refuses every send before a
    connection is asked for, beside the drill guard that refuses it earlier still."""

    def __init__(
        self,
        config: SmtpConfig,
        clock: Clock,
        read_only: bool = False,
        sent_folder: SentFolder | None = None,
    ) -> None:
        self.config = config
        self._sent_folder = sent_folder
        self._clock = clock
        self._read_only = read_only
        self._rate = RateLimit(config.rate_per_minute, clock)
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(config.connections)

    @property
    def where(self) -> str:
        return f"SMTP relay {self.config.host}:{self.config.port}"

    def describe(self) -> str:
        return self.where

    def parallel_sends(self) -> int:
        return self.config.connections

    def _open(self) -> smtplib.SMTP:
        """A connection that said EHLO, upgraded with STARTTLS and logged in, as configured."""
        config = self.config
        try:
            connection = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise _NotConnected(f"cannot connect ({type(exc).__name__})") from None
        try:
            # each command waits for its reply: without NODELAY, Nagle's algorithm and the
            # relay's delayed ACK hold many a small write back ~40 ms
            if connection.sock is not None:
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.ehlo()
            if config.starttls:
                if not connection.has_extn("starttls"):
                    raise _NotConnected("the relay does not offer STARTTLS")
                cafile = str(config.ca_file) if config.ca_file else None
                connection.starttls(context=ssl.create_default_context(cafile=cafile))
                connection.ehlo()
            if config.username is not None:
                password = config.password.get_secret_value() if config.password else ""
                connection.login(config.username, password)
        except smtplib.SMTPAuthenticationError as exc:
            connection.close()
            raise _NotConnected("AUTH refused", exc.smtp_code) from None
        except smtplib.SMTPResponseException as exc:
            connection.close()
            raise _NotConnected("the relay refused the session", exc.smtp_code) from None
        except _NotConnected:
            connection.close()
            raise
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            connection.close()
            raise _NotConnected(f"session failed ({type(exc).__name__})") from None
        return connection

    @contextmanager
    def _connection(self) -> Iterator[smtplib.SMTP]:
        """A pooled connection; one that failed other than by a reply is closed, not kept."""
        with self._slots:
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                connection = self._open()
            try:
                yield connection
            except smtplib.SMTPResponseException:
                self._idle.put(connection)  # a reply: the session is still good (smtplib RSETs)
                raise
            except BaseException:
                connection.close()
                raise
            self._idle.put(connection)

    def close(self) -> None:
        """QUIT every idle connection."""
        while True:
            try:
                _quit(self._idle.get_nowait())
            except queue.Empty:
                return

    def check_can_send(self) -> Check:
        try:
            connection = self._open()
        except _NotConnected as exc:
            code = f" (reply {exc.code})" if exc.code else ""
            return Check.failed(f"{self.where}: {exc.reason}{code}", METHOD)
        try:
            connection.noop()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            _quit(connection)
        steps = ["EHLO"] + (["STARTTLS"] if self.config.starttls else [])
        steps += ["AUTH"] if self.config.username is not None else []
        return Check.verified(f"{self.where} accepted {', '.join(steps)}; nothing was sent", METHOD)

    def _filed(self, letter: OutgoingLetter, message: bytes) -> str:
        """The delivery reference of an accepted letter, filed in the Sent folder when one is
        configured, before the ledger hears of it: a run killed before it settles the letter
        finds it there. Not filed (the folder down) is not a failure: the letter went out,
        and a take-over then sends it again with the same Message-ID."""
        accepted = f"{letter.message_id or letter.key} accepted by {self.where}"
        if self._sent_folder is None:
            return accepted
        try:
            self._sent_folder.file(message)
        except MailUnavailable as exc:
            return f"{accepted}; not filed: {exc}"
        return f"{accepted}, filed"

    def send(self, letter: OutgoingLetter) -> str:
        if self._read_only:
            raise DrillWriteBlocked("drill: refused SMTP MAIL FROM")
        sender = self.config.sender
        international = needs_smtputf8(letter, sender)
        message = build_message(letter, sender) if international else None
        data = bytes(message) if message is not None else message_bytes(letter, sender, "\r\n")
        delays = self.config.retry_delays
        in_doubt = False
        last = ""
        for attempt in range(len(delays) + 1):
            if attempt:
                self._clock.sleep(delays[attempt - 1])
            self._rate.wait_turn()
            try:
                with self._connection() as connection:
                    if message is None:
                        connection.sendmail(sender, [letter.recipient], data)
                    else:  # smtplib asks the relay for SMTPUTF8
                        connection.send_message(
                            message, from_addr=sender, to_addrs=[letter.recipient]
                        )
                return self._filed(letter, data)
            except smtplib.SMTPRecipientsRefused as exc:
                code, what = next(iter(exc.recipients.values()))[0], "recipient"
            except smtplib.SMTPResponseException as exc:
                code, what = exc.smtp_code, "letter"
            except _NotConnected as exc:
                if exc.code is not None and exc.code >= 500 and not in_doubt:
                    raise MailUnavailable(
                        f"letter {letter.key}: {self.where}: {exc.reason} (reply {exc.code})"
                    ) from None
                last = exc.reason
                continue
            except (smtplib.SMTPException, OSError) as exc:
                in_doubt = True  # dropped while the letter was being handed over
                last = f"connection dropped ({type(exc).__name__})"
                continue
            if code >= 500:
                if in_doubt:
                    break
                raise MailRefused(letter.key, code, what)
            last = f"reply {code}"
        attempts = len(delays) + 1
        if in_doubt:
            raise OutcomeUnknown(
                f"letter {letter.key}: {self.where}: a connection dropped while it was handed "
                f"over and {attempts} attempts did not settle it ({last}); a later run resends "
                "it with the same Message-ID"
            )
        raise MailUnavailable(
            f"letter {letter.key}: {self.where}: {last} after {attempts} attempts"
        )
