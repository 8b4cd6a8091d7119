"""Customer addresses and names: the fast paths for plain addresses accepts only what email-validator
accepts, unchanged, so a million customers are checked at regex speed with no address
judged differently from email-validator's own verdict."""

from __future__ import annotations

import random
import sys
import unicodedata
from collections.abc import Callable

import email_validator
import pytest
from faker import Faker

from breachbook.models import MAY_BE_FORMAT, _checked_email, _invisible, _plain_address

TRICKY = [
    "plain@example.org",
    "a.b-c+tag@sub.example.co.uk",
    "o'brien@example.ie",
    "x@example.org.",
    "x@Example.org",
    "x@example.ORG",
    ".lead@example.org",
    "trail.@example.org",
    "two..dots@example.org",
    "x@-example.org",
    "x@example-.org",
    "x@exa--mple.org",
    "x@xn--bcher-kva.example",
    "x@bücher.example",
    "jörg@example.org",
    "x@example.test",
    "x@example.invalid",
    "x@localhost",
    "x@host.local",
    "x@example.123",
    "x@example",
    "x@[192.0.2.1]",
    '"quoted"@example.org',
    "a" * 64 + "@example.org",
    "a" * 65 + "@example.org",
    "x@" + "a" * 63 + ".org",
    "x@" + "a" * 64 + ".org",
    "x@" + ".".join(["a" * 60] * 4) + ".org",
    "x@example.o",
    "x@example.c0m",
    "",
    "@example.org",
    "x@",
    "x y@example.org",
    "x@exam_ple.org",
    "{tpl}@example.org",
]


def _validator(value: str) -> str | None:
    try:
        return email_validator.validate_email(value, check_deliverability=False).normalized
    except email_validator.EmailNotValidError:
        return None


def _ours(value: str) -> str | None:
    try:
        return _checked_email(value)
    except ValueError:
        return None


def _generated() -> list[str]:
    faker = Faker(["en_US", "de_DE", "fr_FR", "zh_CN", "ja_JP", "pt_BR", "pl_PL"])
    faker.seed_instance(7)
    rng = random.Random(7)
    found = [faker.email() for _ in range(3000)]
    mutations: list[Callable[[str], str]] = [
        str.upper,
        lambda a: a.replace("@", "@-"),
        lambda a: a + ".",
        lambda a: "." + a,
    ]
    found += [rng.choice(mutations)(a) for a in found[:500]]
    return found


@pytest.mark.parametrize("address", TRICKY)
def test_each_tricky_address_is_judged_as_email_validator_judges_it(address: str) -> None:
    assert _ours(address) == _validator(address)


def test_the_fast_path_accepts_only_what_email_validator_accepts_unchanged() -> None:
    fast = 0
    for address in _generated() + TRICKY:
        if _plain_address(address):
            fast += 1
            assert _validator(address) == address, address
        assert _ours(address) == _validator(address), address
    assert fast > 2000


def test_every_invisible_formatting_character_is_looked_at() -> None:
    every = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    assert len(every) > 150
    assert all(MAY_BE_FORMAT.fullmatch(ch) for ch in every), [
        hex(ord(ch)) for ch in every if not MAY_BE_FORMAT.fullmatch(ch)
    ]
    for ch in every:
        assert _invisible(f"Zoë {ch}Wang"), hex(ord(ch))
