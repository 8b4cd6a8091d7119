"""The bytes a letter is sent as, written directly, read back as the same message the
standard library's email package builds: every shipped template and locale, a hostile name,
and the letters only the package can write (an address outside ASCII, an over-long line)."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest

from breachbook.connectors.message import (
    HEADERS_WHOLE,
    build_message,
    message_bytes,
    message_id,
)
from breachbook.ports import OutgoingLetter
from tests.unit.test_letters import EVERYTHING, person, shipped, writer

SENDER = "privacy@antiquarius.example"
HOSTILE = 'Bobby <script>alert("x")</script> & Tables\u202e'


def _letter(
    subject: str, text: str, html: str = "", recipient: str = "c1@example.org", language: str = "de"
) -> OutgoingLetter:
    ident = message_id("INC-1", "gdpr-a34", "C1", SENDER)
    return OutgoingLetter("gdpr-a34/C1", recipient, subject, text, html, ident, language)


def _read(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _reference(letter: OutgoingLetter, linesep: str = "\n") -> bytes:
    return build_message(letter, SENDER).as_bytes(policy=HEADERS_WHOLE.clone(linesep=linesep))


def _same_message(direct: bytes, reference: bytes) -> None:
    """Every header but Date and every part, decoded, as the email package reads them."""
    ours, theirs = _read(direct), _read(reference)
    assert list(ours) and set(ours.keys()) == set(theirs.keys())
    for name in theirs:
        if name not in ("Date", "Content-Type"):
            assert str(ours[name]) == str(theirs[name]), name
    assert ours.get_content_type() == theirs.get_content_type()
    ours_parts = list(ours.walk())
    theirs_parts = list(theirs.walk())
    assert len(ours_parts) == len(theirs_parts)
    for mine, reference_part in zip(ours_parts, theirs_parts, strict=True):
        assert mine.get_content_type() == reference_part.get_content_type()
        assert mine.get_content_charset() == reference_part.get_content_charset()
        assert mine["Content-Transfer-Encoding"] == reference_part["Content-Transfer-Encoding"]
        if not mine.is_multipart():
            assert mine.get_content() == reference_part.get_content()
    assert ours.defects == [] and all(part.defects == [] for part in ours_parts)


@pytest.mark.parametrize(("letter_rule", "locale"), shipped(), ids=lambda v: getattr(v, "id", v))
def test_every_shipped_letter_written_directly_reads_back_as_the_email_package_builds_it(
    letter_rule: object, locale: str
) -> None:
    reader = person(locale).model_copy(update={"full_name": HOSTILE})
    rendered = writer().render_letter(reader, letter_rule, EVERYTHING)  # type: ignore[arg-type]
    letter = _letter(rendered.subject, rendered.text, rendered.html, language=rendered.language)
    for linesep in ("\n", "\r\n"):
        direct = message_bytes(letter, SENDER, linesep)
        _same_message(direct, _reference(letter, linesep))
        assert b"=_bb" in direct, "written directly, not by the email package"
        lines = direct.split(linesep.encode())
        assert all(b"\r" not in line and b"\n" not in line for line in lines)
        assert max(len(line) for line in lines) <= 998


@pytest.mark.parametrize(
    "subject",
    [
        "Plain subject",
        "数据泄露通知：您的个人信息可能已被泄露，请阅读本信并采取以下措施以保护您的账户安全",  # noqa: RUF001
        "Wichtig: Verletzung des Schutzes Ihrer Daten – äöüß " * 4,  # noqa: RUF001
        "=?utf-8?b?aGVsbG8=?= looks encoded but is text",
    ],
)
def test_subjects_in_any_script_read_back_whole(subject: str) -> None:
    letter = _letter(subject, "Text\n", "<p>Text</p>\n")
    direct = message_bytes(letter, SENDER, "\r\n")
    _same_message(direct, _reference(letter, "\r\n"))
    subject_lines = direct.split(b"\r\nDate:")[0].split(b"Subject:")[1].split(b"\r\n")
    assert all(len(line) <= 78 - len("Subject:") for line in subject_lines)


def test_a_text_only_letter_and_one_without_language_or_message_id() -> None:
    letter = OutgoingLetter("us-ca/C2", "c2@example.org", "Notice", "Dear reader,\n.\n..\n")
    direct = message_bytes(letter, SENDER)
    _same_message(direct, _reference(letter))
    assert b"Message-ID" not in direct and b"Content-Language" not in direct
    assert _read(direct).get_content() == "Dear reader,\n.\n..\n"


def test_a_boundary_that_appears_in_a_part_is_not_used() -> None:
    first = message_bytes(_letter("S", "a\n", "<p>a</p>\n"), SENDER)
    boundary = first.split(b'boundary="')[1].split(b'"')[0]
    tricky = _letter("S", f"--{boundary.decode()}\n", "<p>a</p>\n")
    direct = message_bytes(tricky, SENDER)
    assert b'boundary="' + boundary + b'"' not in direct
    _same_message(direct, _reference(tricky))


@pytest.mark.parametrize(
    "letter",
    [
        _letter("S", "x" * 1200 + "\n", "<p>y</p>\n"),
        _letter("S", "text\n", "<p>" + "ü" * 600 + "</p>\n"),
        _letter("S", "text\n", recipient="müller@example.org"),
        _letter("Tab\tin subject", "text\n"),
    ],
    ids=["long-text-line", "long-html-line", "address-outside-ascii", "tab-in-subject"],
)
def test_what_cannot_be_written_directly_is_built_by_the_email_package(
    letter: OutgoingLetter,
) -> None:
    raw = message_bytes(letter, SENDER)
    assert b"=_bb" not in raw
    _same_message(raw, _reference(letter))


@pytest.mark.parametrize("field", ["subject", "recipient", "key", "language"])
def test_a_line_break_in_a_header_value_is_refused_as_the_email_package_refuses_it(
    field: str,
) -> None:
    letter = _letter("Subject", "text\n")
    broken = OutgoingLetter(
        **{**letter.__dict__, field: getattr(letter, field) + "\r\nBcc: everyone@example.org"}
    )
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        message_bytes(broken, SENDER)
