"""Letters through a real SMTP server (aiosmtpd on loopback, STARTTLS and AUTH required),
through the product's path: the settings build the SMTP adapter in the real wiring, the
engine runs the reference playbook, the server records what arrives."""

from __future__ import annotations

import dataclasses
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from breachbook.actions.notify import FAILURE_STREAK, LETTERS_PER_COMMIT
from breachbook.cli import app
from breachbook.clock import FixedStepClock
from breachbook.connectors.message import message_id
from breachbook.connectors.smtp import SmtpConfig, SmtpMail
from breachbook.context import RunContext
from breachbook.demo import DemoWorld
from breachbook.engine import RunResult, Status
from breachbook.errors import TemplateFieldError
from breachbook.ledger import ItemStatus
from breachbook.models import Incident
from breachbook.modes import Mode
from breachbook.ports import OutgoingLetter
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, demo_settings
from tests.conftest import ROOT, T0, Fakes, live_ledger
from tests.integration.smtp_server import PASSWORD, USER, Relay, recording_relay

INCIDENT = "demo-2026-antiques-leak"
ORG_EMAIL = "privacy@antiques.example"


@pytest.fixture
def world(small_world: DemoWorld, tmp_path: Path) -> DemoWorld:
    folder = tmp_path / "world"
    shutil.copytree(small_world.folder, folder)
    return DemoWorld(folder, folder / small_world.customers_db.name, folder / "incident.yaml")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    with recording_relay(tmp_path) as started:
        yield started


def smtp_settings(world: DemoWorld, home: Path, relay: Relay) -> Settings:
    base = demo_settings(Settings(home=home), world.customers_db, world.folder)
    return base.model_copy(
        update={
            "outbox": None,
            "smtp_host": relay.host,
            "smtp_port": relay.port,
            "smtp_username": USER,
            "smtp_password": SecretStr(PASSWORD),
            "smtp_ca_file": relay.ca_file,
        }
    )


def run_smtp(
    mode: Mode, settings: Settings, world: DemoWorld, folder: Path, out: Path | None = None
) -> tuple[RunContext, RunResult]:
    """A run whose mail port the wiring builds from the settings (the SMTP adapter): every
    other port is a recording fake. A simulated clock: back-offs take no time."""
    adapters = dataclasses.replace(Fakes(folder).adapters(), mail=None)
    incident = Incident.from_file(world.incident_file)
    return execute(
        RunRequest(
            mode=mode,
            incident_file=world.incident_file,
            out_dir=out,
            confirm_incident_id=incident.id if mode is Mode.LIVE else None,
        ),
        settings=settings,
        clock=FixedStepClock(T0),
        adapters=adapters,
    )


def sender_of(ctx: RunContext) -> str:
    return ctx.playbook.organisation.contact.email


def locales(world: DemoWorld) -> dict[str, str]:
    db = sqlite3.connect(world.customers_db)
    found = dict(db.execute("SELECT id, locale FROM customers").fetchall())
    db.close()
    return found


def emails(world: DemoWorld) -> dict[str, str]:
    db = sqlite3.connect(world.customers_db)
    found = dict(db.execute("SELECT email, id FROM customers").fetchall())
    db.close()
    return found


def deliver_statuses(result: RunResult) -> set[Status]:
    return {e.status for e in result.entries() if e.step_id == "deliver-letters"}


def test_every_owed_letter_arrives_once_multipart_with_its_message_id_and_language(
    world: DemoWorld, relay: Relay, tmp_path: Path
) -> None:
    settings = smtp_settings(world, tmp_path / "home", relay)
    ctx, result = run_smtp(Mode.LIVE, settings, world, tmp_path)
    assert deliver_statuses(result) == {Status.COMPLETED}
    ledger = live_ledger(settings)
    items = ledger.item_statuses(INCIDENT, "letters.deliver")
    ledger.close()
    owed = {
        f"{path.stem}/{cid}"
        for path in (ctx.workspace.root / "recipients").glob("*.txt")
        for cid in path.read_text().split()
    }
    received = relay.recorder.by_key()
    assert set(received) == owed == set(items) and len(owed) > 100
    assert set(items.values()) == {ItemStatus.DONE}
    assert all(len(copies) == 1 for copies in received.values())

    locale_of = locales(world)
    languages = set()
    for key, (message,) in received.items():
        rule_id, customer_id = key.split("/")
        assert message["Message-ID"] == message_id(INCIDENT, rule_id, customer_id, sender_of(ctx))
        assert isinstance(message, EmailMessage)
        assert message.get_content_type() == "multipart/alternative"
        parts = [part.get_content_type() for part in message.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        language = str(message["Content-Language"])
        html = message.get_body(("html",))
        assert html is not None and f'<html lang="{language}">' in html.get_content()
        languages.add(language)
        if rule_id == "gdpr-a34" and locale_of[customer_id].startswith("de"):
            assert language == "de"
            assert str(message["Subject"]).startswith("Wichtig:")
        if rule_id == "cn-pipl-57":
            assert language == "zh-CN"
    assert {"de", "en"} <= languages
    assert relay.recorder.count("STARTTLS") >= 1 and relay.recorder.logins

    before = len(relay.recorder.messages)
    _, again = run_smtp(Mode.LIVE, settings, world, tmp_path / "again")
    assert len(relay.recorder.messages) == before
    assert deliver_statuses(again) == {Status.ALREADY_DONE} | {Status.COMPLETED} or (
        deliver_statuses(again) <= {Status.ALREADY_DONE, Status.COMPLETED}
    )


def test_drill_renders_every_message_checks_the_relay_and_sends_nothing(
    world: DemoWorld, relay: Relay, tmp_path: Path
) -> None:
    settings = smtp_settings(world, tmp_path / "home", relay)
    out = tmp_path / "drill"
    ctx, result = run_smtp(Mode.DRILL, settings, world, tmp_path, out)
    recorder = relay.recorder
    assert recorder.count("EHLO") >= 1 and recorder.count("STARTTLS") >= 1
    assert recorder.count("AUTH") >= 1
    assert recorder.count("MAIL") == recorder.count("RCPT") == recorder.count("DATA") == 0
    assert recorder.messages == []
    deliver = [e for e in result.entries() if e.step_id == "deliver-letters"]
    assert deliver and all(e.status is Status.PLANNED for e in deliver)
    assert all("EHLO, STARTTLS, AUTH" in (e.reason or "") for e in deliver)
    rendered = sorted((out / "messages").rglob("*.eml"))
    letters = sorted((out / "letters").rglob("*.txt"))
    assert len(rendered) == len(letters) > 100
    from email import message_from_bytes
    from email.policy import default

    sample = message_from_bytes(rendered[0].read_bytes(), policy=default)
    rule_id, customer_id = rendered[0].parent.name, rendered[0].stem
    assert sample["Message-ID"] == message_id(INCIDENT, rule_id, customer_id, sender_of(ctx))
    assert sample.get_content_type() == "multipart/alternative"
    assert not (tmp_path / "home" / "ledger.sqlite").exists()
    status = CliRunner().invoke(app, ["letters", "status", "--run", str(out)], env=_env(tmp_path))
    assert status.exit_code == 1, status.output
    assert f"sent 0, failed 0, unknown 0, unsent {len(rendered)}," in status.output


def test_4xx_is_retried_and_5xx_is_recorded_per_customer_with_its_code_not_its_address(
    world: DemoWorld, relay: Relay, tmp_path: Path
) -> None:
    addresses = sorted(emails(world))
    later, refused = set(addresses[:3]), set(addresses[3:5])
    tries: dict[str, int] = {}
    lock = threading.Lock()

    def reply(address: str) -> str | None:
        with lock:
            tries[address] = tries.get(address, 0) + 1
            if address in refused:
                return "550 5.1.1 mailbox unavailable"
            if address in later and tries[address] <= 2:
                return "451 4.3.0 try again later"
        return None

    relay.recorder.reply = reply
    settings = smtp_settings(world, tmp_path / "home", relay)
    ctx, result = run_smtp(Mode.LIVE, settings, world, tmp_path)
    id_of = emails(world)
    received = relay.recorder.by_key()
    for address in later:
        keys = [k for k in received if k.endswith(f"/{id_of[address]}")]
        assert keys, "a letter answered 4xx twice never arrived"
        assert all(len(received[k]) == 1 for k in keys)
        assert tries[address] == 3 * len(keys)
    ledger = live_ledger(settings)
    failed = {i.key: i for i in ledger.items(INCIDENT, "letters.deliver", (ItemStatus.FAILED,))}
    ledger.close()
    refused_ids = {id_of[a] for a in refused}
    assert {key.split("/")[1] for key in failed} == refused_ids
    for key, item in failed.items():
        assert item.details["reply"] == 550
        assert key in item.details["error"] and "(reply 550)" in item.details["error"]
        assert not any(a in str(item.details) for a in addresses)
        assert tries[next(a for a in refused if id_of[a] == key.split("/")[1])] >= 1
        assert key not in received
    assert Status.INCOMPLETE in deliver_statuses(result)

    status = CliRunner().invoke(
        app, ["letters", "status", "--run", str(ctx.workspace.root)], env=_env(tmp_path)
    )
    assert status.exit_code == 1, status.output
    assert f"failed {len(failed)}, unknown 0, unsent 0" in status.output
    assert all(f"failed: {key} (reply 550)" in status.output for key in failed)
    assert "@" not in status.output


def _env(tmp_path: Path) -> dict[str, str]:
    return {"BREACHBOOK_HOME": str(tmp_path / "home")}


def test_a_relay_that_refuses_everything_stops_the_delivery_after_a_bounded_number(
    world: DemoWorld, relay: Relay, tmp_path: Path
) -> None:
    relay.recorder.reply = lambda address: "554 5.7.1 relay access denied"
    settings = smtp_settings(world, tmp_path / "home", relay)
    _, result = run_smtp(Mode.LIVE, settings, world, tmp_path)
    delivered = [e for e in result.entries() if e.step_id == "deliver-letters"]
    # an obligation with fewer letters than the stop ends incomplete, each letter failed
    assert {e.status for e in delivered} <= {Status.FAILED, Status.INCOMPLETE}, delivered
    stopped = [e for e in delivered if e.status is Status.FAILED]
    assert stopped
    assert all(
        re.search(r"letters in a row did not go out via SMTP relay", e.details["error"])
        for e in stopped
    )
    ledger = live_ledger(settings)
    items = ledger.item_statuses(INCIDENT, "letters.deliver")
    ledger.close()
    assert relay.recorder.messages == []
    assert set(items.values()) == {ItemStatus.FAILED}
    # each obligation's letters stop after a bounded number; the rest of the playbook goes on
    assert (
        FAILURE_STREAK <= len(items) <= len(delivered) * (FAILURE_STREAK + 2 * LETTERS_PER_COMMIT)
    )
    assert relay.recorder.count("RCPT") == len(items)
    assert {e.status for e in result.entries() if e.step_id == "draft-statement"} == {
        Status.COMPLETED
    }


def test_a_letter_missing_a_required_field_stops_the_send_before_the_first_message(
    world: DemoWorld, relay: Relay, tmp_path: Path
) -> None:
    content = tmp_path / "content"
    for part in ("playbooks", "rules", "templates"):
        shutil.copytree(ROOT / part, content / part)
    rules = content / "rules" / "obligations.yaml"
    rules.write_text(
        rules.read_text().replace(
            "required_fields: [org_legal_name, dpo_contact,",
            "required_fields: [recipient_street, org_legal_name, dpo_contact,",
            1,
        )
    )
    db = sqlite3.connect(world.customers_db)
    (victim,) = db.execute(
        "SELECT id FROM customers WHERE country = 'DE' ORDER BY id LIMIT 1"
    ).fetchone()
    db.execute("UPDATE customers SET street = '' WHERE id = ?", (victim,))
    db.commit()
    db.close()
    settings = smtp_settings(world, tmp_path / "home", relay).model_copy(
        update={"content_dir": content}
    )
    with pytest.raises(
        TemplateFieldError, match=rf"customer {victim}: .*required field recipient_street is empty"
    ):
        run_smtp(Mode.LIVE, settings, world, tmp_path)
    assert relay.recorder.count("MAIL") == 0 and relay.recorder.messages == []


class ManualClock:
    """Simulated time that moves only when a sender waits."""

    def __init__(self) -> None:
        self.time = T0
        self.lock = threading.Lock()

    def now(self) -> datetime:
        with self.lock:
            return self.time

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.time += timedelta(seconds=seconds)


def test_the_rate_limit_holds_in_every_minute(relay: Relay) -> None:
    clock = ManualClock()
    arrived: list[datetime] = []

    def stamp(address: str) -> None:
        arrived.append(clock.now())  # the simulated moment the relay took the letter

    relay.recorder.reply = stamp
    config = SmtpConfig(
        relay.host,
        relay.port,
        ORG_EMAIL,
        USER,
        SecretStr(PASSWORD),
        ca_file=relay.ca_file,
        connections=1,
        rate_per_minute=20,
    )
    mail = SmtpMail(config, clock)
    for n in range(50):
        mail.send(OutgoingLetter(f"r/C{n}", f"c{n}@example.org", "s", "b", "", f"<{n}@x>", "en"))
    mail.close()
    assert len(relay.recorder.messages) == len(arrived) == 50
    for start in arrived:
        in_minute = [t for t in arrived if start <= t < start + timedelta(minutes=1)]
        assert len(in_minute) <= 20
    assert arrived[-1] - arrived[0] >= timedelta(seconds=49 * 3)
