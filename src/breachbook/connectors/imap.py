"""The Sent folder on an IMAP server: every letter the relay accepted is filed there, and a
letter whose outcome is unknown is looked up by its deterministic Message-ID.

imaplib from the standard library, over TLS from the start (IMAP4_SSL, port 993) or upgraded
with STARTTLS (port 143): a few commands per letter (APPEND) and per take-over (UID SEARCH,
UID FETCH of one header) need no dependency. One connection per thread, kept in a pool, as
the SMTP adapter does: imaplib is not thread-safe, and the relay's senders file in parallel.

The folder is a record only because breachbook files in it: most relays (Postfix, Amazon
SES, SendGrid) keep no Sent folder, so each accepted letter is APPENDed right after the
relay's reply. Mail systems whose relay files what it sends (Gmail, Exchange Online) set
BREACHBOOK_IMAP_APPEND=false: breachbook then only looks.
"""

from __future__ import annotations

import imaplib
import queue
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

from pydantic import SecretStr

from breachbook.errors import BreachbookError, DrillWriteBlocked, MailUnavailable
from breachbook.ports import Check
from breachbook.settings import Settings

SEARCH_BATCH = 50
"""Message-IDs asked in one UID SEARCH (a chain of ORs): one round trip for many letters,
and a command line far below the 8 KB servers accept."""

METHOD = "IMAP LOGIN and EXAMINE of the Sent folder (nothing filed)"


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int = 993
    username: str | None = None
    password: SecretStr | None = None
    folder: str = "Sent"
    starttls: bool = False
    ca_file: Path | None = None
    append: bool = True
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ImapConfig:
        assert settings.imap_host is not None
        return cls(
            host=settings.imap_host,
            port=settings.imap_port,
            username=settings.imap_username,
            password=settings.imap_password,
            folder=settings.imap_sent_folder,
            starttls=settings.imap_starttls,
            ca_file=settings.imap_ca_file,
            append=settings.imap_append,
        )


class _Refused(Exception):
    """Opening the folder failed; `reason` names the setting to look at."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def quoted(text: str) -> str:
    """An IMAP quoted string (RFC 3501): no line breaks, quote and backslash escaped."""
    if "\r" in text or "\n" in text:
        raise BreachbookError(f"{text!r}: a line break cannot be sent in an IMAP string")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def search_criteria(message_ids: Sequence[str]) -> list[str]:
    """UID SEARCH criteria matching any of `message_ids` by its Message-ID header: a chain of
    n-1 ORs before the n HEADER keys (IMAP's OR takes two keys)."""
    keys = [f"HEADER Message-ID {quoted(ident)}" for ident in message_ids]
    return ["OR"] * (len(keys) - 1) + keys


def _ok(answer: tuple[str, Sequence[object]], what: str) -> Sequence[object]:
    status, data = answer
    if status != "OK":
        raise imaplib.IMAP4.error(f"{what} answered {status}")
    return data


class ImapSentFolder:
    """The SentFolder port on an IMAP server. `read_only` (a drill) refuses every APPEND
    before a connection is asked for, beside the drill guard that refuses it earlier still."""

    def __init__(self, config: ImapConfig, read_only: bool = False, connections: int = 4) -> None:
        self.config = config
        self._read_only = read_only
        self._idle: queue.LifoQueue[imaplib.IMAP4] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(connections)
        self._headers = BytesHeaderParser()

    def describe(self) -> str:
        return f"IMAP folder {self.config.folder!r} on {self.config.host}:{self.config.port}"

    def _open(self) -> imaplib.IMAP4:
        """A connection over TLS, logged in, with the folder open read-only (EXAMINE)."""
        config = self.config
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        where = "check BREACHBOOK_IMAP_HOST and BREACHBOOK_IMAP_PORT"
        try:
            if config.starttls:
                connection = imaplib.IMAP4(config.host, config.port, timeout=config.timeout)
            else:
                connection = imaplib.IMAP4_SSL(
                    config.host, config.port, ssl_context=context, timeout=config.timeout
                )
        except ssl.SSLCertVerificationError as exc:
            raise _Refused(f"TLS failed ({exc.reason}); check BREACHBOOK_IMAP_CA_FILE") from None
        except ssl.SSLError as exc:
            raise _Refused(
                f"TLS failed ({exc.reason}); check BREACHBOOK_IMAP_PORT and BREACHBOOK_IMAP_STARTTLS"
            ) from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise _Refused(f"cannot connect ({type(exc).__name__}); {where}") from None
        try:
            if config.starttls:
                try:
                    connection.starttls(ssl_context=context)
                except ssl.SSLError as exc:
                    raise _Refused(
                        f"STARTTLS failed ({exc.reason}); check BREACHBOOK_IMAP_CA_FILE"
                    ) from None
                except imaplib.IMAP4.error:
                    raise _Refused(
                        "the server does not offer STARTTLS; check BREACHBOOK_IMAP_STARTTLS"
                    ) from None
            if config.username is not None:
                password = config.password.get_secret_value() if config.password else ""
                try:
                    connection.login(config.username, password)
                except imaplib.IMAP4.error:
                    raise _Refused(
                        "login refused; check BREACHBOOK_IMAP_USERNAME and BREACHBOOK_IMAP_PASSWORD"
                    ) from None
            status, _ = connection.select(quoted(config.folder), readonly=True)
            if status != "OK":
                raise _Refused(
                    f"no folder {config.folder!r}; check BREACHBOOK_IMAP_SENT_FOLDER"
                ) from None
        except _Refused:
            _close(connection)
            raise
        except (OSError, imaplib.IMAP4.error) as exc:
            _close(connection)
            raise _Refused(f"session failed ({type(exc).__name__}); {where}") from None
        return connection

    @contextmanager
    def _connection(self) -> Iterator[imaplib.IMAP4]:
        """A pooled connection; one that failed is closed, not kept."""
        with self._slots:
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                try:
                    connection = self._open()
                except _Refused as exc:
                    raise MailUnavailable(f"{self.describe()}: {exc.reason}") from None
            try:
                yield connection
            except BaseException:
                _close(connection)
                raise
            self._idle.put(connection)

    def close(self) -> None:
        """LOGOUT every idle connection."""
        while True:
            try:
                _close(self._idle.get_nowait())
            except queue.Empty:
                return

    def check_can_read(self) -> Check:
        try:
            connection = self._open()
        except _Refused as exc:
            return Check.failed(f"{self.describe()}: {exc.reason}", METHOD)
        _close(connection)
        login = "LOGIN, " if self.config.username is not None else ""
        return Check.verified(
            f"{self.describe()} accepted {login}EXAMINE; nothing was filed", METHOD
        )

    def contains(self, message_ids: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(message_ids))
        found: set[str] = set()
        if not wanted:
            return found
        try:
            with self._connection() as connection:
                _ok(connection.noop(), "NOOP")  # see what other sessions filed since
                for start in range(0, len(wanted), SEARCH_BATCH):
                    batch = wanted[start : start + SEARCH_BATCH]
                    found |= self._search(connection, batch)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailUnavailable(
                f"{self.describe()}: the search failed ({type(exc).__name__})"
            ) from None
        return found

    def _search(self, connection: imaplib.IMAP4, batch: list[str]) -> set[str]:
        """The ones of `batch` in the folder: UID SEARCH finds candidates (HEADER matches a
        substring), and their Message-ID headers, fetched, are compared exactly."""
        data = _ok(connection.uid("SEARCH", *search_criteria(batch)), "UID SEARCH")
        uids = b" ".join(d for d in data if isinstance(d, bytes)).split()
        if not uids:
            return set()
        fetched = _ok(
            connection.uid(
                "FETCH", b",".join(uids).decode(), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
            ),
            "UID FETCH",
        )
        headers = (part[1] for part in fetched if isinstance(part, tuple))
        filed = {str(self._headers.parsebytes(h).get("Message-ID", "")).strip() for h in headers}
        return filed & set(batch)

    def file(self, message: bytes) -> None:
        if self._read_only:
            raise DrillWriteBlocked("drill: refused IMAP APPEND")
        if not self.config.append:
            return
        try:
            with self._connection() as connection:
                _ok(
                    connection.append(quoted(self.config.folder), r"(\Seen)", None, message),
                    "APPEND",
                )
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailUnavailable(
                f"{self.describe()}: APPEND failed ({type(exc).__name__})"
            ) from None


def _close(connection: imaplib.IMAP4) -> None:
    try:
        connection.logout()
    except (OSError, imaplib.IMAP4.error):
        with suppress(OSError):
            connection.shutdown()
