"""The email a letter becomes, and the ledger's take-over of a letter whose outcome was never
heard: the pieces of exactly-once delivery that need no server."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest

from breachbook.clock import FixedStepClock
from breachbook.connectors.message import build_message, message_id
from breachbook.ledger import Entry, ItemStatus, Ledger, LedgerError
from breachbook.ports import OutgoingLetter
from tests.conftest import T0
from tests.fakes import customer
from tests.unit.test_letters import CONTACT, rule, writer

HOSTILE = '<script>alert("x")</script> & <b>Bobby</b>'


def test_a_hostile_name_stays_text_in_the_html_part() -> None:
    reader = customer("C1", "IE", name=HOSTILE)
    letter = writer().render_letter(reader, rule("gdpr-a34"), CONTACT)
    assert HOSTILE in letter.text
    assert "<script>" not in letter.html and "<b>Bobby" not in letter.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;Bobby" in letter.html
    assert letter.html.startswith('<!DOCTYPE html>\n<html lang="en">')


def test_the_message_id_is_one_per_incident_customer_and_obligation_and_never_folded() -> None:
    sender = "privacy-office@a-rather-long-subdomain.of-an-organisation.example"
    first = message_id("INC-1", "gdpr-a34", "C1", sender)
    assert first == message_id("INC-1", "gdpr-a34", "C1", sender)
    others = {
        message_id("INC-2", "gdpr-a34", "C1", sender),
        message_id("INC-1", "us-ca", "C1", sender),
        message_id("INC-1", "gdpr-a34", "C2", sender),
    }
    assert first not in others and len(others) == 3
    assert "C1" not in first and first.endswith(f"@{sender.split('@')[1]}>")
    letter = OutgoingLetter("gdpr-a34/C1", "c1@example.org", "S", "text", "<p>t</p>", first, "de")
    raw = bytes(build_message(letter, sender))
    assert f"Message-ID: {first}\n".encode() in raw
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Message-ID"] == first and parsed["Content-Language"] == "de"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


def _entry(run: str, key: str) -> Entry:
    return Entry(
        incident_id="INC-1",
        run_id=run,
        step_id="letters.deliver",
        target=key,
        phase="claim",
        actor="test",
        mode="LIVE",
        outcome="claimed",
        details={},
    )


def test_a_letter_left_in_flight_is_taken_over_by_its_own_run_and_the_old_claim_cannot_settle() -> (
    None
):
    ledger = Ledger("sqlite://", FixedStepClock(T0))
    key = "gdpr-a34/C1"
    killed = ledger.claim(_entry("run-a", key), key)
    assert killed is not None
    assert ledger.claim(_entry("run-a", key), key) is None
    assert ledger.take_over(_entry("run-b", key), key, "") is None  # another run: not yet
    taken = ledger.take_over(_entry("run-a", key), key, "")  # the run itself, resumed
    assert taken is not None and taken.generation == killed.generation + 1
    with pytest.raises(LedgerError, match="claimed again before its outcome was recorded"):
        ledger.settle(killed, ItemStatus.DONE, _entry("run-a", key))
    ledger.settle(taken, ItemStatus.UNKNOWN, _entry("run-a", key))
    assert ledger.take_over(_entry("run-b", key), key, "") is not None  # unknown: anyone
    stale = ledger.claim(_entry("run-c", "us-ca/C2"), "us-ca/C2")
    assert stale is not None
    assert ledger.take_over(_entry("run-d", "us-ca/C2"), "us-ca/C2", "2000-01-01") is None
    assert ledger.take_over(_entry("run-d", "us-ca/C2"), "us-ca/C2", "9999-12-31") is not None
    assert ledger.verify() == []
