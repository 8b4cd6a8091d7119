"""A synthetic world to drill against: 10,000 Faker customers and a described breach.

The customer database and a sample incident file are created once and then only read. Each
drill with --demo dates the incident afresh (discovered two hours ago), so the deadlines it
shows are live rather than long past, and keeps it as incident.yaml in its own output folder.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from faker import Faker
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    insert,
    inspect,
    select,
)

from breachbook.connectors.customers_sql import sqlite_url
from breachbook.datasource import DEMO_DATASOURCE
from breachbook.settings import Settings, project_root
from breachbook.wiring import demo_settings

# The demo world's schema: an antique dealer's own tables, mapped for breachbook by
# demo-datasource.yaml (any other schema is mapped by a data-source file of its own).
metadata = MetaData()

customers = Table(
    "customers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("full_name", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("phone", String(64), nullable=False),
    Column("street", String(300), nullable=False),
    Column("city", String(200), nullable=False),
    Column("postal_code", String(32), nullable=False),
    Column("region", String(64), nullable=False, default=""),
    Column("country", String(2), nullable=False),
    Column("locale", String(16), nullable=False),
    Column("tax_id", String(16), nullable=True),
    # A US buyer's taxpayer number, kept for high-value purchases (NULL for everyone else).
)
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.id"), index=True, nullable=False),
    Column("ordered_at", String(32), nullable=False),
    Column("item", String(200), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
)
favourites = Table(
    "favourites",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.id"), index=True, nullable=False),
    Column("antique", String(200), nullable=False),
)
payment_cards = Table(
    "payment_cards",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.id"), index=True, nullable=False),
    Column("card_number", String(32), nullable=False),
    Column("expiry", String(7), nullable=False),
)
web_accounts = Table(
    "web_accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.id"), index=True, nullable=False),
    Column("password_hash", String(100), nullable=False),
    Column("created_at", String(32), nullable=False),
)
consignor_accounts = Table(
    "consignor_accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", String(64), ForeignKey("customers.id"), index=True, nullable=False),
    Column("bank_account", String(64), nullable=False),
    Column("agreed_at", String(32), nullable=False),
)
HIGH_VALUE_CENTS = 1_000_000
"""US buyers whose orders total more than $10,000 have a taxpayer number on file."""
DATASOURCE_FILE = "datasource.yaml"

DEFAULT_SIZE = 10_000
SEED = 20261128

# (country, region, Faker locale, letter locale, share of customers)
POPULATION: list[tuple[str, str, str, str, float]] = [
    ("US", "CA", "en_US", "en-US", 0.12),
    ("US", "NY", "en_US", "en-US", 0.08),
    ("US", "TX", "en_US", "en-US", 0.07),
    ("US", "MA", "en_US", "en-US", 0.04),
    ("US", "FL", "en_US", "en-US", 0.04),
    ("US", "WA", "en_US", "en-US", 0.03),
    ("US", "IL", "en_US", "en-US", 0.02),
    ("DE", "", "de_DE", "de-DE", 0.10),
    ("FR", "", "fr_FR", "fr-FR", 0.09),
    ("IT", "", "it_IT", "it-IT", 0.05),
    ("ES", "", "es_ES", "es-ES", 0.05),
    ("NL", "", "nl_NL", "nl-NL", 0.04),
    ("IE", "", "en_IE", "en-IE", 0.02),
    ("GB", "", "en_GB", "en-GB", 0.10),
    ("CN", "", "zh_CN", "zh-CN", 0.15),
]

ANTIQUES = [
    "Georgian silver teapot",
    "Ming dynasty vase",
    "Art Nouveau lamp",
    "Victorian writing desk",
    "Meissen porcelain figure",
    "Edwardian pocket watch",
    "Qing jade carving",
    "Louis XV commode",
    "Delft blue tile",
    "Tiffany glass panel",
    "Biedermeier chair",
    "Persian Tabriz rug",
    "Shaker rocking chair",
    "Fabergé-style egg",
    "Regency mantel clock",
    "Art Deco cigarette case",
]

DEMO_INCIDENT_ID = "demo-2026-antiques-leak"
TRANSLATIONS_FILE = Path(__file__).with_name("demo-translations.yaml")


@dataclass(frozen=True)
class DemoWorld:
    folder: Path
    customers_db: Path
    incident_file: Path

    @property
    def customers_url(self) -> str:
        return sqlite_url(self.customers_db, read_only=False)


def default_home() -> Path:
    return Path(os.environ.get("BREACHBOOK_HOME", Path.home() / ".breachbook"))


def ensure_demo_world(
    folder: Path | None = None, size: int = DEFAULT_SIZE, now: datetime | None = None
) -> DemoWorld:
    """Create the demo world if absent: the customer database and a sample incident file to
    copy and edit. Once it exists, nothing here writes to it again (a drill changes nothing
    outside its output folder); drills with --demo use `demo_incident_yaml`, dated now."""
    folder = (folder or default_home() / "demo").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    world = DemoWorld(folder, folder / "customers.sqlite", folder / "incident.yaml")
    mapping = folder / DATASOURCE_FILE
    if not _complete(world.customers_db, size):
        _create_customers(world.customers_db, size)
        mapping.unlink(missing_ok=True)
    if not mapping.is_file():
        schema = project_root() / "playbooks" / "datasource.schema.json"
        lines = DEMO_DATASOURCE.read_text(encoding="utf-8").splitlines(keepends=True)
        _write_atomically(
            mapping, f"# yaml-language-server: $schema={schema.as_uri()}\n" + "".join(lines[1:])
        )
    if not world.incident_file.is_file():
        schema = project_root() / "playbooks" / "incident.schema.json"
        _write_atomically(
            world.incident_file,
            f"# yaml-language-server: $schema={schema.as_uri()}\n"
            + demo_incident_yaml(now or datetime.now(UTC)),
        )
    return world


def _complete(path: Path, size: int) -> bool:
    if not path.is_file():
        return False
    engine = create_engine(sqlite_url(path, read_only=True))
    try:
        with engine.connect() as conn:
            schema = inspect(conn)
            for table in metadata.sorted_tables:
                present = {column["name"] for column in schema.get_columns(table.name)}
                if present != set(table.c.keys()):
                    return False  # a world made by an earlier version: made again
            return conn.execute(select(func.count()).select_from(customers)).scalar_one() == size
    except Exception:
        return False
    finally:
        engine.dispose()


def _stable(fake: Faker) -> Faker:
    """The same world whatever the process's hash seed: some Faker locales (it_IT) build their
    list of cities from a set, so a seeded draw picked another city in each process."""
    for provider in fake.get_providers():
        cities = getattr(provider, "cities", None)
        if isinstance(cities, list):
            provider.cities = sorted(cities)
    return fake


def _create_customers(path: Path, size: int) -> None:
    """Build into a temporary file and rename it, so a crash never leaves half a world."""
    tmp = path.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    engine = create_engine(sqlite_url(tmp, read_only=False))
    metadata.create_all(engine)
    rng = random.Random(SEED)
    more = random.Random(SEED + 1)
    """Draws for the columns added later (tax ids, web accounts, consignors), so that the
    customers, orders and cards stay what they were."""
    fakers: dict[str, Faker] = {}
    rows_c: list[dict[str, Any]] = []
    rows_o: list[dict[str, Any]] = []
    rows_f: list[dict[str, Any]] = []
    rows_p: list[dict[str, Any]] = []
    rows_w: list[dict[str, Any]] = []
    rows_b: list[dict[str, Any]] = []
    shares = [entry[4] for entry in POPULATION]
    us_fake = Faker("en_US")
    us_fake.seed_instance(SEED)
    for number in range(1, size + 1):
        country, region, faker_locale, letter_locale, _ = rng.choices(POPULATION, weights=shares)[0]
        fake = fakers.get(faker_locale)
        if fake is None:
            fake = _stable(Faker(faker_locale))
            fake.seed_instance(SEED + len(fakers))
            fakers[faker_locale] = fake
        customer_id = f"C{number:07d}"
        rows_c.append(
            {
                "id": customer_id,
                "full_name": fake.name(),
                "email": f"{customer_id.lower()}.{fake.user_name()}@{fake.free_email_domain()}",
                "phone": fake.phone_number(),
                "street": fake.street_address().replace("\n", ", "),
                "city": fake.city(),
                "postal_code": us_fake.zipcode_in_state(region)
                if country == "US"
                else fake.postcode(),
                "region": region,
                "country": country,
                "locale": letter_locale,
            }
        )
        spent = 0
        for _ in range(rng.randint(0, 4)):
            rows_o.append(
                {
                    "customer_id": customer_id,
                    "ordered_at": (datetime(2024, 1, 1) + timedelta(days=rng.randint(0, 1000)))
                    .date()
                    .isoformat(),
                    "item": rng.choice(ANTIQUES),
                    "amount_cents": rng.randint(2_000, 900_000),
                    "currency": "USD" if country == "US" else "EUR",
                }
            )
            spent += rows_o[-1]["amount_cents"]
        for antique in rng.sample(ANTIQUES, rng.randint(1, 3)):
            rows_f.append({"customer_id": customer_id, "antique": antique})
        if rng.random() < 0.55:
            rows_p.append(
                {
                    "customer_id": customer_id,
                    "card_number": us_fake.credit_card_number(),
                    "expiry": f"{rng.randint(1, 12):02d}/{rng.randint(27, 31)}",
                }
            )
        # Obviously fake: area number 000 is never issued.
        rows_c[-1]["tax_id"] = (
            f"000-{more.randint(10, 99)}-{more.randint(1000, 9999)}"
            if country == "US" and spent > HIGH_VALUE_CENTS
            else None
        )
        if more.random() < 0.4:
            rows_w.append(
                {
                    "customer_id": customer_id,
                    "password_hash": "$2b$12$DEMOfake"
                    + "".join(more.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=45)),
                    "created_at": (datetime(2022, 1, 1) + timedelta(days=more.randint(0, 1500)))
                    .date()
                    .isoformat(),
                }
            )
        if more.random() < 0.06:
            # Consignors are paid by bank transfer; check digits 00 make no valid IBAN.
            rows_b.append(
                {
                    "customer_id": customer_id,
                    "bank_account": f"{country}00DEMO{more.randint(10**13, 10**14 - 1)}",
                    "agreed_at": (datetime(2023, 1, 1) + timedelta(days=more.randint(0, 1200)))
                    .date()
                    .isoformat(),
                }
            )
    with engine.begin() as conn:
        conn.execute(insert(customers), rows_c)
        conn.execute(insert(orders), rows_o)
        conn.execute(insert(favourites), rows_f)
        conn.execute(insert(payment_cards), rows_p)
        conn.execute(insert(web_accounts), rows_w)
        conn.execute(insert(consignor_accounts), rows_b)
    engine.dispose()
    os.replace(tmp, path)


def demo_translations() -> dict[str, Any]:
    """The demo incident's texts in its customers' languages, kept as data beside this file."""
    loaded: dict[str, Any] = yaml.safe_load(TRANSLATIONS_FILE.read_text(encoding="utf-8"))
    return loaded


def demo_incident(now: datetime) -> dict[str, Any]:
    discovered = (now - timedelta(hours=2)).replace(microsecond=0)
    return {
        "id": DEMO_INCIDENT_ID,
        "title": "Customer database exported by a compromised ETL credential",
        "description": (
            "An attacker used a leaked cloud access key from a build server to reach our "
            "analytics ETL host and, with its database role, exported customer records, order "
            "history and stored payment card numbers."
        ),
        "cause": "A cloud access key committed to a build log was used to reach the ETL host.",
        "started_at": (discovered - timedelta(days=3, hours=5)).isoformat(),
        "discovered_at": discovered.isoformat(),
        "exposed_tables": [
            {
                "table": "customers",
                "columns": [
                    "full_name",
                    "email",
                    "phone",
                    "street",
                    "city",
                    "postal_code",
                    "region",
                    "country",
                    "tax_id",
                ],
            },
            {
                "table": "orders",
                "columns": ["customer_id", "ordered_at", "item", "amount_cents", "currency"],
            },
            {"table": "favourites", "columns": ["customer_id", "antique"]},
            {"table": "payment_cards", "columns": ["customer_id", "card_number", "expiry"]},
            {"table": "web_accounts", "columns": ["customer_id", "password_hash"]},
            {"table": "consignor_accounts", "columns": ["customer_id", "bank_account"]},
        ],
        "data_categories": [
            "name",
            "email",
            "phone",
            "postal_address",
            "purchase_history",
            "preferences",
            "payment_card",
            "financial_account",
            "account_credentials",
            "government_id",
        ],
        "risk_assessment": {
            "identifiable": "directly",
            "mitigation": "partial",
            "mitigation_notes": "The leaked key and the database account were disabled within "
            "hours; the copied data itself cannot be recalled.",
        },
        "data_encrypted": False,
        "database_role": "analytics_etl",
        "access_key_ids": ["AKIAZ3MDEMOLEAKED01"],
        "hosts": ["i-0a1b2c3d4e5f60718"],
        "source_addresses": ["203.0.113.0/24", "198.51.100.23/32"],
        # Only what the playbook does not do itself: its steps (lock, keys, hosts, addresses)
        # are stated in letters from the ledger, as done only once they are.
        "measures_taken": [
            "We engaged an independent forensic firm and informed the police.",
        ],
        "likely_consequences": (
            "Criminals may use your contact details for phishing, and your stored card number "
            "for fraudulent purchases."
        ),
        "individual_steps": [
            "Watch your card statements and report any payment you do not recognise to your bank.",
            "Be wary of emails or calls that mention your orders; we will never ask for your password.",
        ],
        "language": "en",
        "translations": demo_translations(),
    }


def demo_inputs(settings: Settings, incident_given: bool) -> tuple[Settings, str | None]:
    """For a run with --demo: settings pointing at the demo world (created once) and, unless
    the caller brings an incident of its own, the demo incident dated now."""
    world = ensure_demo_world(settings.home / "demo")
    dated = None if incident_given else demo_incident_yaml(datetime.now(UTC))
    return demo_settings(settings, world.customers_db, world.folder), dated


def demo_incident_yaml(now: datetime) -> str:
    """The demo breach as an incident document, discovered two hours before `now`."""
    return yaml.safe_dump(demo_incident(now), sort_keys=False, allow_unicode=True)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
