"""Customers validated a page at a time (`validate_customers`, how the customer database is
read) get exactly the verdict, values and messages of `validate_customer`, one by one:
plain and unusual addresses, hostile and invisible characters, records with nowhere to
write to, bad ids, countries and languages, and pages that mix good and bad records."""

from __future__ import annotations

import random
from typing import Any

from faker import Faker

from breachbook.models import (
    CUSTOMER_CHECKS,
    Customer,
    DataCategory,
    RejectedRecord,
    _plain_or_empty,
    customer_batches,
    validate_customer,
    validate_customers,
)
from tests.unit.test_models_email import TRICKY, _generated

FIELDS = tuple(Customer.model_fields)


def _good(number: int, faker: Faker) -> dict[str, Any]:
    return {
        "id": f"C{number:07d}",
        "full_name": faker.name(),
        "email": f"c{number}.{faker.user_name()}@example.org",
        "phone": faker.phone_number(),
        "street": faker.street_address(),
        "city": faker.city(),
        "postal_code": faker.postcode(),
        "region": "",
        "country": "DE",
        "locale": "de-DE",
        "honorific": "",
        "categories": frozenset({DataCategory.NAME, DataCategory.EMAIL}),
    }


BREAKS: list[dict[str, Any]] = [
    {"full_name": "Eve\nBcc: all@example.org"},
    {"full_name": "Mallory\x00"},
    {"street": "Bob\u202eevil 5"},
    {"city": "Zero\u200bWidth"},
    {"honorific": "Dr\x85"},
    {"full_name": ""},
    {"full_name": "x" * 201},
    {"phone": "1" * 65},
    {"id": "C 1"},
    {"id": ""},
    {"country": "de"},
    {"locale": "EN_us"},
    {"region": "r" * 65},
    {"email": None},
    {"email": "   "},
    {"email": 7},
    {"email": "", "street": " ", "city": "Berlin"},
    {"email": "", "street": "Hauptstr. 5", "city": ""},
    {"email": ""},
    {"full_name": "{{ self.__init__.__globals__ }} <script>alert(1)</script>"},
    {"full_name": "张伟", "city": "北京", "locale": "zh-CN", "country": "CN"},
    {"categories": frozenset({"name", "payment_card"})},
    {"categories": frozenset({"not-a-category"})},
]


def _records() -> list[dict[str, Any]]:
    faker = Faker(["en_US", "de_DE", "fr_FR", "zh_CN"])
    faker.seed_instance(11)
    good = [_good(n, faker) for n in range(1, 401)]
    with_addresses = [
        _good(1000 + n, faker) | {"email": address}
        for n, address in enumerate(_generated()[::7] + TRICKY)
    ]
    broken = [_good(5000 + n, faker) | change for n, change in enumerate(BREAKS)]
    return good + with_addresses + broken


def _columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [record[name] for record in records] for name in FIELDS}


def _same(page: Customer | RejectedRecord, alone: Customer | RejectedRecord) -> bool:
    if isinstance(alone, RejectedRecord):
        return page == alone
    return (
        isinstance(page, Customer)
        and page == alone
        and page.__pydantic_fields_set__ == alone.__pydantic_fields_set__
        and page.model_dump() == alone.model_dump()
    )


def test_a_page_of_customers_is_judged_as_each_record_alone() -> None:
    records = _records()
    random.Random(3).shuffle(records)
    expected = [validate_customer(record) for record in records]
    assert sum(isinstance(e, RejectedRecord) for e in expected) > 40
    for size in (1, 37, len(records)):
        found: list[Customer | RejectedRecord] = []
        for start in range(0, len(records), size):
            found += validate_customers(_columns(records[start : start + size]))
        mismatched = [
            (record["id"], page, alone)
            for record, page, alone in zip(records, found, expected, strict=True)
            if not _same(page, alone)
        ]
        assert not mismatched, mismatched[:3]
    batches = list(customer_batches(_columns(records), 7))
    assert {len(batch) for batch in batches[:-1]} == {7}
    built = [customer for batch in batches for customer in batch]
    assert len(built) == len(expected) and all(map(_same, built, expected))


def test_a_page_of_good_records_takes_the_page_path_and_builds_real_customers() -> None:
    faker = Faker("de_DE")
    faker.seed_instance(5)
    records = [_good(n, faker) for n in range(1, 201)]
    assert _plain_or_empty([record["email"] for record in records] + [""])
    found = validate_customers(_columns(records))
    for record, customer in zip(records, found, strict=True):
        assert isinstance(customer, Customer)
        assert _same(customer, Customer.model_validate(record))
        assert customer.jurisdiction == "DE" and hash(customer) == hash(Customer(**record))


def test_every_check_across_fields_of_a_customer_is_also_run_over_pages() -> None:
    decorators = Customer.__pydantic_decorators__
    assert set(decorators.model_validators) == set(CUSTOMER_CHECKS)
    assert not decorators.field_validators and not decorators.validators
