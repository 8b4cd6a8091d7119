"""Reconciling a letter in doubt through the Sent folder port, against a fake folder: what
is asked, in how many questions, and what a folder that cannot be read changes."""

from __future__ import annotations

import pytest

from breachbook.actions.notify import with_sent_folder
from breachbook.connectors.imap import ImapConfig, ImapSentFolder, search_criteria
from breachbook.connectors.message import message_id
from breachbook.errors import BreachbookError, DrillWriteBlocked
from breachbook.ledger import ItemStatus
from breachbook.ports import Check, Verdict
from breachbook.reconcile import RELAY_LOG, SENT_FOLDER, Reconciled, SentLookup, unsettled_letters
from tests.fakes import RecordingSentFolder

INCIDENT, SENDER = "inc-1", "privacy@example.org"


def ident(rule_id: str, customer_id: str) -> str:
    return message_id(INCIDENT, rule_id, customer_id, SENDER)


def test_only_the_rules_claimed_or_unknown_letters_are_asked_about() -> None:
    known = {
        "gdpr-a34/C1": ItemStatus.CLAIMED,
        "gdpr-a34/C2": ItemStatus.UNKNOWN,
        "gdpr-a34/C3": ItemStatus.DONE,
        "gdpr-a34/C4": ItemStatus.FAILED,
        "us-ca/C5": ItemStatus.CLAIMED,
    }
    assert unsettled_letters(known, "gdpr-a34", INCIDENT, SENDER) == {
        "gdpr-a34/C1": ident("gdpr-a34", "C1"),
        "gdpr-a34/C2": ident("gdpr-a34", "C2"),
    }


def test_the_letters_in_doubt_are_asked_about_in_one_question_and_found_ones_are_not_resent() -> (
    None
):
    unsettled = {f"gdpr-a34/C{i}": ident("gdpr-a34", f"C{i}") for i in range(100)}
    folder = RecordingSentFolder(filed={ident("gdpr-a34", "C1"), ident("gdpr-a34", "C7")})
    lookup = SentLookup({SENT_FOLDER: folder}, lambda: unsettled)
    assert lookup.how == "sent-folder"
    found = Reconciled("found in fake Sent folder", "sent-folder")
    assert lookup.reconcile(ident("gdpr-a34", "C1")) == found
    not_filed = lookup.reconcile(ident("gdpr-a34", "C2"))  # not filed: sent again
    assert not_filed == Reconciled(None, "resent: not in fake Sent folder")
    assert lookup.reconcile(ident("gdpr-a34", "C7")) == found
    assert len(folder.asked) == 1 and len(folder.asked[0]) == 100
    late = ident("gdpr-a34", "C500")  # taken over though not in doubt when delivery began
    folder.filed.add(late)
    assert lookup.reconcile(late) == found
    assert folder.asked[1:] == [[late]]


def test_a_folder_that_cannot_be_read_is_asked_once_and_its_letters_are_sent_again() -> None:
    folder = RecordingSentFolder(filed={ident("us-ca", "C1")}, unreadable=True)
    lookup = SentLookup({SENT_FOLDER: folder}, lambda: {"us-ca/C1": ident("us-ca", "C1")})
    unreadable = Reconciled(None, "resent: fake Sent folder: connection refused")
    assert lookup.reconcile(ident("us-ca", "C1")) == unreadable
    assert lookup.reconcile(ident("us-ca", "C2")) == unreadable
    assert len(folder.asked) == 1 and "connection refused" in lookup.unreadable


def test_without_a_folder_a_letter_in_doubt_is_sent_again_with_its_message_id() -> None:
    lookup = SentLookup(
        {SENT_FOLDER: None, RELAY_LOG: None}, lambda: {"us-ca/C1": ident("us-ca", "C1")}
    )
    assert lookup.how == "resend"
    assert lookup.reconcile(ident("us-ca", "C1")) == Reconciled(
        None, "resent: no record of the relay's acceptances configured"
    )


def test_with_both_records_a_letter_found_in_either_is_not_resent_and_one_unreadable_is_said() -> (
    None
):
    """Both are written only once the relay took the letter, so either one is enough; a
    record that cannot be read leaves the other to answer, and the resend says why."""
    c1, c2, c3 = (ident("us-ca", f"C{i}") for i in (1, 2, 3))
    folder = RecordingSentFolder(filed={c1})
    log = RecordingSentFolder(filed={c2}, name="fake relay log")
    lookup = SentLookup(
        {SENT_FOLDER: folder, RELAY_LOG: log}, lambda: {"us-ca/C1": c1, "us-ca/C2": c2}
    )
    assert lookup.how == "sent-folder+relay-log"
    assert lookup.reconcile(c1) == Reconciled("found in fake Sent folder", "sent-folder")
    assert lookup.reconcile(c2) == Reconciled("found in fake relay log", "relay-log")
    assert lookup.reconcile(c3) == Reconciled(
        None, "resent: not in fake Sent folder; not in fake relay log"
    )
    folder.unreadable = True
    down = SentLookup(
        {SENT_FOLDER: folder, RELAY_LOG: log}, lambda: {"us-ca/C1": c1, "us-ca/C2": c2}
    )
    assert down.reconcile(c2) == Reconciled("found in fake relay log", "relay-log")
    assert down.reconcile(c1) == Reconciled(
        None, "resent: fake Sent folder: connection refused; not in fake relay log"
    )


def test_the_delivery_check_fails_with_the_folders_reason_and_names_it_when_it_passes() -> None:
    relay = Check.verified("relay accepted EHLO, STARTTLS, AUTH; nothing was sent", "smtp")
    assert with_sent_folder(relay, None) == relay
    refused = Check.failed("IMAP: login refused; check BREACHBOOK_IMAP_PASSWORD", "imap")
    failed = with_sent_folder(relay, RecordingSentFolder(check_answer=refused))
    assert failed.verdict is Verdict.FAILED and "BREACHBOOK_IMAP_PASSWORD" in failed.reason
    both = with_sent_folder(relay, RecordingSentFolder())
    assert both.verdict is Verdict.VERIFIED
    assert both.reason == f"{relay.reason}; fake folder opened; nothing was filed"


def test_the_search_asks_for_any_of_the_message_ids_and_refuses_a_line_break() -> None:
    assert search_criteria(["<a@x>", '<b"@x>', "<c@x>"]) == [
        "OR",
        "OR",
        'HEADER Message-ID "<a@x>"',
        'HEADER Message-ID "<b\\"@x>"',
        'HEADER Message-ID "<c@x>"',
    ]
    with pytest.raises(BreachbookError, match="line break"):
        search_criteria(["<a@x>\r\nA2 DELETE INBOX"])


def test_a_drills_sent_folder_refuses_to_file_before_it_connects() -> None:
    folder = ImapSentFolder(ImapConfig("192.0.2.1", timeout=0.01), read_only=True)
    with pytest.raises(DrillWriteBlocked, match="IMAP APPEND"):
        folder.file(b"Message-ID: <a@x>\r\n\r\nletter\r\n")
