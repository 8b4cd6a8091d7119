"""A second customer schema that looks nothing like the demo's: a clinic's patients with split
names and integer keys, diagnoses (several rows per patient, dated), visits, invoices joined
to the patient through visits, and portal logins. Mapped by tests/data/datasources/valid/
clinic.yaml; built the same way on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    insert,
)

from breachbook.models import DataCategory

MAPPING = Path(__file__).parent / "data" / "datasources" / "valid" / "clinic.yaml"

metadata = MetaData()
patients = Table(
    "patients",
    metadata,
    Column("patient_no", Integer, primary_key=True),
    Column("first_nm", String(80)),
    Column("last_nm", String(80)),
    Column("contact_email", String(200)),
    Column("mobile", String(40)),
    Column("addr_line", String(200)),
    Column("town", String(100)),
    Column("zip", String(20)),
    Column("state_cd", String(2)),
    Column("country_cd", String(2)),
    Column("pref_lang", String(10)),
    Column("salutation", String(20)),
    Column("ssn", String(11)),
    Column("registered_on", Date),
)
diagnoses = Table(
    "diagnoses",
    metadata,
    Column("diag_id", Integer, primary_key=True),
    Column("patient_ref", Integer, ForeignKey("patients.patient_no")),
    Column("recorded_at", DateTime(timezone=True)),
    Column("diagnosis", String(200)),
    Column("icd_code", String(10)),
)
visits = Table(
    "visits",
    metadata,
    Column("visit_id", Integer, primary_key=True),
    Column("patient_ref", Integer, ForeignKey("patients.patient_no")),
    Column("visit_day", Date),
)
invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", Integer, primary_key=True),
    Column("visit_ref", Integer, ForeignKey("visits.visit_id")),
    Column("issued_at", DateTime),
    Column("iban", String(40)),
    Column("insurer_member_no", String(40)),
)
portal_logins = Table(
    "portal_logins",
    metadata,
    Column("login_id", Integer, primary_key=True),
    Column("patient_ref", Integer, ForeignKey("patients.patient_no")),
    Column("pw_hash", String(100)),
)

IN_WINDOW = datetime(2026, 11, 5, 9, 30, tzinfo=UTC)
BEFORE = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)
WINDOW = {"rows_from": "2026-11-01T00:00:00Z", "rows_until": "2026-11-15T00:00:00Z"}


def _patient(
    number: int, first: str, last: str, country: str, region: str, **more: Any
) -> dict[str, Any]:
    return {
        "patient_no": number,
        "first_nm": first,
        "last_nm": last,
        "contact_email": f"patient{number}@clinic.example",
        "mobile": "+1 555 0100",
        "addr_line": f"{number} Harbour Road",
        "town": "Seaside",
        "zip": "98101",
        "state_cd": region,
        "country_cd": country,
        "pref_lang": None,
        "salutation": "Dr" if number == 1 else None,
        "ssn": None,
        "registered_on": date(2020, 1, number),
    } | more


PATIENTS = [
    _patient(1, "Ada", "Quill", "US", "WA", ssn="000-11-1111", pref_lang="en-US"),
    _patient(2, "Ben", "Ortiz", "US", "IL"),
    _patient(3, "Cleo", "Brandt", "DE", "", ssn="  ", pref_lang="de-DE"),
    _patient(4, "Dev", "Rao", "US", "CA"),
    _patient(5, "Eve", "Stone", "GB", ""),
    _patient(6, "Finn", "Moss", "US", "WA", contact_email="not an address"),
    _patient(7, "Gus", "Lind", "US", "IL"),
]
DIAGNOSES: list[dict[str, Any]] = [
    {
        "diag_id": 1,
        "patient_ref": 1,
        "recorded_at": IN_WINDOW,
        "diagnosis": "J45 asthma",
        "icd_code": "J45",
    },
    {"diag_id": 2, "patient_ref": 1, "recorded_at": BEFORE, "diagnosis": "old", "icd_code": "Z00"},
    # Ben's rows in the window hold nothing: NULL and empty values are not exposed data.
    {"diag_id": 3, "patient_ref": 2, "recorded_at": IN_WINDOW, "diagnosis": None, "icd_code": ""},
    {"diag_id": 4, "patient_ref": 2, "recorded_at": IN_WINDOW, "diagnosis": "", "icd_code": None},
    # Eve's only diagnosis is older than the window.
    {"diag_id": 5, "patient_ref": 5, "recorded_at": BEFORE, "diagnosis": "E11", "icd_code": "E11"},
    {
        "diag_id": 6,
        "patient_ref": 7,
        "recorded_at": IN_WINDOW,
        "diagnosis": "M54",
        "icd_code": "M54",
    },
    {
        "diag_id": 7,
        "patient_ref": 7,
        "recorded_at": IN_WINDOW,
        "diagnosis": "R51",
        "icd_code": "R51",
    },
    {
        "diag_id": 8,
        "patient_ref": 6,
        "recorded_at": IN_WINDOW,
        "diagnosis": "K21",
        "icd_code": "K21",
    },
]
VISITS: list[dict[str, Any]] = [
    {"visit_id": 10, "patient_ref": 2, "visit_day": date(2026, 11, 3)},
    {"visit_id": 11, "patient_ref": 4, "visit_day": date(2026, 11, 4)},
    {"visit_id": 12, "patient_ref": 7, "visit_day": date(2026, 11, 4)},
]
INVOICES: list[dict[str, Any]] = [
    {
        "invoice_id": 100,
        "visit_ref": 10,
        "issued_at": datetime(2026, 11, 3),
        "iban": "DE00DEMO1",
        "insurer_member_no": None,
    },
    {
        "invoice_id": 101,
        "visit_ref": 11,
        "issued_at": datetime(2026, 11, 4),
        "iban": None,
        "insurer_member_no": "HI-7",
    },
    {
        "invoice_id": 102,
        "visit_ref": 12,
        "issued_at": datetime(2026, 11, 4),
        "iban": "GB00DEMO2",
        "insurer_member_no": "",
    },
]
LOGINS: list[dict[str, Any]] = [
    {"login_id": 1, "patient_ref": 4, "pw_hash": "$2b$12$DEMOfakehash"},
    {"login_id": 2, "patient_ref": 7, "pw_hash": "$2b$12$DEMOfakehash2"},
    {"login_id": 3, "patient_ref": 5, "pw_hash": None},
]


def build_clinic(engine: Engine) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(patients), PATIENTS)
        conn.execute(insert(diagnoses), DIAGNOSES)
        conn.execute(insert(visits), VISITS)
        conn.execute(insert(invoices), INVOICES)
        conn.execute(insert(portal_logins), LOGINS)


def breach(**changes: Any) -> dict[str, Any]:
    """An incident on the clinic: diagnoses of the window, invoices and logins exposed."""
    data: dict[str, Any] = {
        "id": "inc-clinic-1",
        "title": "Clinic records copied",
        "description": "Records were copied from the patient database.",
        "cause": "A leaked database password.",
        "started_at": "2026-11-01T00:00:00+00:00",
        "discovered_at": "2026-11-27T16:30:00+00:00",
        "exposed_tables": [
            {"table": "diagnoses", "columns": ["patient_ref", "diagnosis", "icd_code"], **WINDOW},
            {"table": "invoices", "columns": ["iban", "insurer_member_no"]},
            {"table": "portal_logins", "columns": ["pw_hash"]},
        ],
        "risk_assessment": {
            "override": {
                "level": "high",
                "by": "legal: test",
                "justification": "Diagnoses and contact details of patients were copied.",
            }
        },
        "measures_taken": ["We changed the database password."],
        "likely_consequences": "Someone may learn about your health or misuse your account.",
        "individual_steps": ["Change your portal password."],
    }
    data.update(changes)
    return data


M, F, H, C, N, G = (
    DataCategory.MEDICAL,
    DataCategory.FINANCIAL_ACCOUNT,
    DataCategory.HEALTH_INSURANCE,
    DataCategory.ACCOUNT_CREDENTIALS,
    DataCategory.NAME,
    DataCategory.GOVERNMENT_ID,
)
EXPECTED = {
    "1": {M},  # the diagnosis before the window does not count
    "2": {F},  # empty diagnoses do not count; the invoice reaches him through his visit
    "4": {C, H},  # a login, and an invoice whose IBAN is NULL but insurer number is not
    "7": {M, C, F},  # three tables, several rows: one recipient with the union
}
"""Customer id -> exposed categories for `breach()`; 3 and 5 are not affected; 6 is affected
(a diagnosis in the window) but his record is unusable (no valid email)."""
