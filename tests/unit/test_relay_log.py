"""The relay's log as a record of what it accepted (connectors/relay_log.py), on real files:
our Message-IDs found exactly and nowhere else, Postfix's refusals undoing an acceptance,
a log of hundreds of megabytes read in flat memory, and a log that cannot be read naming
its setting (while a delivery falls back to sending again with the same Message-ID)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from breachbook.connectors import relay_log
from breachbook.connectors.message import message_id
from breachbook.connectors.relay_log import RelayLog
from breachbook.errors import BreachbookError, MailUnavailable
from breachbook.ports import Verdict
from breachbook.reconcile import RELAY_LOG, Reconciled, SentLookup
from breachbook.settings import Settings

INCIDENT, SENDER = "demo-2026-antiques-leak", "privacy@example.org"


def ident(customer_id: str) -> str:
    return message_id(INCIDENT, "gdpr-a34", customer_id, SENDER)


def cleanup(queue_id: str, message: str) -> str:
    """A Postfix cleanup line naming a message it took."""
    return f"Nov 30 10:00:01 relay postfix/cleanup[812]: {queue_id}: message-id={message}\n"


TAKEN, BARE, OTHER = ident("C1"), ident("C2"), ident("C3")
LONGER = OTHER[:-1] + "anisation>"
"""An id that only starts as OTHER does: OTHER is not in the log."""


def the_log() -> str:
    hidden, retried, quoted = ident("C10"), ident("C11"), ident("C12")
    return "".join(
        [
            "Nov 30 10:00:00 relay postfix/smtpd[811]: connect from localhost[127.0.0.1]\n",
            cleanup("4F1A2B01", TAKEN),
            f"2026-11-30 10:00:02 1r2abc-000 <= privacy@example.org id={BARE}\n",
            cleanup("4F1A2B02", LONGER),
            cleanup("4F1A2B03", f"<{TAKEN[1:-1]}0>"),
            cleanup("4F1A2B04", hidden),
            "Nov 30 10:00:03 relay postfix/cleanup[812]: 4F1A2B04: milter-reject: "
            "END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 refused\n",
            cleanup("4F1A2B05", retried),
            "Nov 30 10:00:04 relay postfix/cleanup[812]: 4F1A2B05: milter-reject: "
            "END-OF-MESSAGE from localhost[127.0.0.1]: 4.7.1 try later\n",
            cleanup("4F1A2B06", retried),
            f"Nov 30 10:00:05 relay postfix/cleanup[812]: 4F1A2B07: reject: header "
            f"Message-ID: {quoted} from localhost[127.0.0.1]; 5.7.1 refused\n",
            "Nov 30 10:00:06 relay postfix/smtpd[811]: NOQUEUE: reject: RCPT from "
            "unknown[192.0.2.9]: 554 5.7.1 Relay access denied\n",
        ]
    )


ASKED = [TAKEN, BARE, OTHER, ident("C10"), ident("C11"), ident("C12"), ident("C99")]
EXPECTED = {TAKEN, BARE, ident("C11")}


@pytest.mark.parametrize("block", [29, 4 << 20])
def test_the_log_shows_our_message_ids_exactly_and_a_refused_message_as_not_taken(
    block: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found: a Postfix cleanup line, a line of another relay naming the id, a message
    refused once and taken on its retry. Not found: an id that a logged one only starts
    with or contains, a message Postfix refused after logging it (or refused quoting its
    header). Alike whether lines fall whole in a block or across blocks of 29 bytes."""
    monkeypatch.setattr(relay_log, "BLOCK", block)
    log = tmp_path / "maillog"
    log.write_text(the_log(), encoding="utf-8")
    assert RelayLog(log).contains(ASKED) == EXPECTED
    assert RelayLog(log).contains([]) == set()


def test_an_id_in_a_stretch_without_line_breaks_is_found_across_the_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log cut short by a crash (NULs, no line break): searched in place, memory bounded."""
    monkeypatch.setattr(relay_log, "BLOCK", 1000)
    monkeypatch.setattr(relay_log, "LONGEST_LINE", 1500)
    log = tmp_path / "maillog"
    log.write_bytes(b"\0" * 1950 + f"message-id={TAKEN}".encode() + b"\0" * 5000)
    assert RelayLog(log).contains([TAKEN, OTHER]) == {TAKEN}


def test_a_log_of_200_megabytes_is_read_in_flat_memory(tmp_path: Path) -> None:
    """Other messages' lines (other incidents' ids among them), our two ids in the middle and
    at the very end: found in one pass, Python's memory peak a few blocks, not the file."""
    others = "".join(
        cleanup(f"5B{i:08X}", message_id("other-incident", "us-ca", f"C{i}", SENDER))
        + f"Nov 30 10:00:02 relay postfix/smtp[813]: 5B{i:08X}: to=<c{i}@example.net>, "
        "relay=mx.example.net[192.0.2.1]:25, delay=0.2, dsn=2.0.0, status=sent (250 ok)\n"
        for i in range(4000)
    ).encode()
    log = tmp_path / "maillog"
    with log.open("wb") as out:
        for at in range(200 * 2**20 // len(others)):
            out.write(others)
            if at == 100:
                out.write(cleanup("4F1A2B01", TAKEN).encode())
        out.write(cleanup("4F1A2B02", BARE).encode().rstrip(b"\n"))
    assert log.stat().st_size > 200 * 10**6
    tracemalloc.start()
    try:
        found = RelayLog(log).contains([TAKEN, BARE, OTHER])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == {TAKEN, BARE}
    assert peak < 3 * relay_log.BLOCK, f"peak {peak} bytes"  # a block, the next, their ids
    print(f"200 MB log: peak {peak} bytes")


def test_a_log_that_cannot_be_read_fails_its_check_naming_the_setting(tmp_path: Path) -> None:
    for unreadable in (tmp_path / "missing.log", tmp_path):
        log = RelayLog(unreadable)
        check = log.check_can_read()
        assert check.verdict is Verdict.FAILED
        assert f"relay log {unreadable}: cannot read it" in check.reason
        assert "check BREACHBOOK_SMTP_RELAY_LOG" in check.reason
        with pytest.raises(MailUnavailable, match="BREACHBOOK_SMTP_RELAY_LOG"):
            log.contains([TAKEN])


def test_a_readable_log_passes_its_check_and_nothing_ever_writes_to_it(tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    log.write_text(the_log(), encoding="utf-8")
    before = (log.read_bytes(), log.stat().st_mtime_ns)
    record = RelayLog(log)
    check = record.check_can_read()
    assert check.verdict is Verdict.VERIFIED and "nothing was written" in check.reason
    record.file(f"Message-ID: {OTHER}\r\n\r\nletter\r\n".encode())
    assert record.contains(ASKED) == EXPECTED
    assert (log.read_bytes(), log.stat().st_mtime_ns) == before


def test_a_log_gone_during_a_delivery_leaves_its_letters_to_be_sent_again_and_says_why(
    tmp_path: Path,
) -> None:
    log = tmp_path / "maillog"
    log.write_text(cleanup("4F1A2B01", TAKEN), encoding="utf-8")
    lookup = SentLookup(
        {RELAY_LOG: RelayLog(log)}, lambda: {"gdpr-a34/C1": TAKEN, "gdpr-a34/C3": OTHER}
    )
    assert lookup.reconcile(TAKEN) == Reconciled(f"found in relay log {log}", RELAY_LOG)
    rotated = SentLookup({RELAY_LOG: RelayLog(log)}, lambda: {"gdpr-a34/C1": TAKEN})
    log.unlink()
    assert rotated.reconcile(TAKEN) == Reconciled(
        None,
        f"resent: relay log {log}: cannot read it (FileNotFoundError); "
        "check BREACHBOOK_SMTP_RELAY_LOG",
    )


def test_the_relay_log_is_the_log_of_the_relay_the_settings_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BREACHBOOK_SMTP_RELAY_LOG", str(tmp_path / "maillog"))
    with pytest.raises(BreachbookError, match="set that too") as refused:
        Settings()
    assert "BREACHBOOK_SMTP_RELAY_LOG" in str(refused.value)
    assert "BREACHBOOK_SMTP_HOST" in str(refused.value)
    monkeypatch.setenv("BREACHBOOK_SMTP_HOST", "relay.example.org")
    assert Settings().smtp_relay_log == tmp_path / "maillog"
