"""Reconciling letters through a real IMAP Sent folder (a private Dovecot on loopback, see
imap_server.py) beside a real SMTP relay (aiosmtpd): the settings build both adapters in the
real wiring.

The kill test: a LIVE delivery SIGKILLed after the relay accepted letters and they were filed
in the Sent folder, but before the ledger settled them. Re-run with the folder configured, the
run finds them there and sends none of them again; re-run without, it resends them with the
same Message-ID (the copies counted at the relay)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sized
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from breachbook.clock import FixedStepClock, SystemClock
from breachbook.connectors.imap import ImapConfig, ImapSentFolder
from breachbook.connectors.message import message_id
from breachbook.demo import DemoWorld, ensure_demo_world
from breachbook.engine import RunResult, Status
from breachbook.ledger import ItemStatus, Ledger
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import RunRequest
from tests.conftest import ROOT, T0, Fakes
from tests.integration import smtp_process
from tests.integration.imap_server import PASSWORD, USER, ImapServer, dovecot
from tests.integration.smtp_server import Relay, recording_relay
from tests.integration.test_smtp import smtp_settings

INCIDENT = "demo-2026-antiques-leak"
RUN_ID = "run0imapkill1"
KILL_AFTER = 20
WORLD = 120
"""Letters filed before the kill: fewer than the ledger settles in one commit (32), so the
relay took them and the ledger has not heard."""


@pytest.fixture
def imap() -> Iterator[ImapServer]:
    with dovecot() as started:
        yield started


def folder_of(server: ImapServer, at: int, upgrade: bool, **change: Any) -> ImapSentFolder:
    config = ImapConfig(
        server.host, at, USER, SecretStr(PASSWORD), starttls=upgrade, ca_file=server.ca_file
    )
    return ImapSentFolder(dataclasses.replace(config, **change))


def test_the_sent_folder_files_letters_and_finds_them_by_exact_message_id_in_batches(
    imap: ImapServer,
) -> None:
    """Over STARTTLS and over TLS: what is filed is found, a Message-ID that only contains
    or is contained in a filed one is not, across more IDs than one search asks."""
    for port, starttls in ((imap.port, True), (imap.tls_port, False)):
        folder = folder_of(imap, port, starttls)
        assert folder.check_can_read().verdict.value == "VERIFIED"
        filed = [message_id(INCIDENT, "gdpr-a34", f"C{port}-{i}", "p@x.example") for i in range(3)]
        for ident in filed:
            folder.file(f"Message-ID: {ident}\r\nSubject: t\r\n\r\nletter\r\n".encode())
        near = [filed[0].replace("@", "0@"), filed[1][1:-1], "<breachbook.@x.example>"]
        others = [message_id(INCIDENT, "us-ca", f"C{i}", "p@x.example") for i in range(120)]
        assert folder.contains(others[:60] + filed + near + others[60:]) == set(filed)
        assert folder.contains([]) == set()
        folder.close()
    assert len(imap.filed()) == 6


def test_a_folder_that_cannot_be_read_fails_its_check_naming_the_setting(imap: ImapServer) -> None:
    cases: dict[str, dict[str, Any]] = {
        "BREACHBOOK_IMAP_SENT_FOLDER": {"folder": "Sent Items"},
        "BREACHBOOK_IMAP_CA_FILE": {"ca_file": None},
        "BREACHBOOK_IMAP_STARTTLS": {"starttls": False},  # TLS from the start on port 143
        # last: Dovecot makes the next logins from an address that failed one wait
        "BREACHBOOK_IMAP_PASSWORD": {"password": SecretStr("wrong")},
    }
    for setting, change in cases.items():
        check = folder_of(imap, imap.port, True, **change).check_can_read()
        assert check.verdict.value == "FAILED" and setting in check.reason, check.reason
        assert "wrong" not in check.reason and PASSWORD not in check.reason
    assert imap.filed() == []


# -- through the product's path ---------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> DemoWorld:
    """A world of its own, small: a drill renders every letter before it checks anything."""
    return ensure_demo_world(tmp_path / "world", size=WORLD, now=T0)


def settings_for(world: DemoWorld, home: Path, relay: Relay, imap: ImapServer) -> Settings:
    return smtp_settings(world, home, relay).model_copy(
        update={
            "imap_host": imap.host,
            "imap_port": imap.port,
            "imap_starttls": True,
            "imap_username": USER,
            "imap_password": SecretStr(PASSWORD),
            "imap_ca_file": imap.ca_file,
        }
    )


def drill(settings: Settings, world: DemoWorld, tmp_path: Path, out: Path) -> RunResult:
    adapters = dataclasses.replace(Fakes(tmp_path).adapters(), mail=None)
    _, result = execute(
        RunRequest(mode=Mode.DRILL, incident_file=world.incident_file, out_dir=out),
        settings=settings,
        clock=FixedStepClock(T0),
        adapters=adapters,
    )
    return result


def test_a_drill_opens_the_sent_folder_and_files_nothing_and_sends_nothing(
    world: DemoWorld, imap: ImapServer, tmp_path: Path
) -> None:
    """With the relay's log configured too: both records are checked (and both asked when
    a letter is in doubt, see reconcile.py)."""
    log = tmp_path / "maillog"
    log.write_text("")
    with recording_relay(tmp_path) as relay:
        settings = settings_for(world, tmp_path / "home", relay, imap)
        settings = settings.model_copy(update={"smtp_relay_log": log})
        result = drill(settings, world, tmp_path, tmp_path / "drill")
        deliver = [e for e in result.entries() if e.step_id == "deliver-letters"]
        assert deliver and all(e.status is Status.PLANNED for e in deliver)
        assert all(
            "accepted LOGIN, EXAMINE; nothing was filed" in (e.reason or "") for e in deliver
        )
        assert all(f"relay log {log} is readable" in (e.reason or "") for e in deliver)
        assert all("EHLO, STARTTLS, AUTH" in (e.reason or "") for e in deliver)
        assert imap.filed() == [] and imap.sent_files() == []
        assert relay.recorder.count("MAIL") == 0 and relay.recorder.messages == []
        assert len(list((tmp_path / "drill" / "messages").rglob("*.eml"))) > WORLD / 2
        logins = imap.log.read_text(encoding="utf-8")
        assert f"Login: user=<{USER}>" in logins and "TLS" in logins


def _kill_when(process: subprocess.Popen[bytes], progress: Callable[[], Sized]) -> None:
    """SIGKILL once `progress` (letters filed) reaches KILL_AFTER."""
    deadline = time.monotonic() + 120
    while len(progress()) < KILL_AFTER:
        assert process.poll() is None, "the run ended before the kill"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.2)  # what the killed process had fully written, the servers take in


def _unsettled(home: Path) -> set[str]:
    ledger = Ledger(f"sqlite:///{home / 'ledger.sqlite'}", SystemClock(), create=False)
    items = ledger.item_statuses(INCIDENT, "letters.deliver")
    ledger.close()
    return {key for key, status in items.items() if status is not ItemStatus.DONE}


def _resume(home: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The killed run resumed under its id, in this process (no second start-up)."""
    with monkeypatch.context() as patched:
        for name, value in env.items():
            patched.setenv(name, value)
        assert smtp_process.main(home, RUN_ID) in (0, 1)


def test_a_run_killed_between_the_send_and_the_ledger_resends_nothing_the_sent_folder_holds(
    imap: ImapServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One LIVE run, filing in the Sent folder, killed once letters are filed and before the
    ledger's first settle; its home is copied, and the run is resumed twice from that same
    state: with the folder configured, and without (each against a relay of its own)."""
    home, without = tmp_path / "with", tmp_path / "without"
    ensure_demo_world(home / "demo", size=WORLD)
    base = {k: v for k, v in os.environ.items() if not k.startswith("BREACHBOOK_")}
    command = [sys.executable, "-m", "tests.integration.smtp_process"]
    (tmp_path / "second").mkdir()
    with recording_relay(tmp_path) as relay, recording_relay(tmp_path / "second") as again:
        env = {**relay.env(), **imap.env(), "BREACHBOOK_HOME": str(home)}
        killed_run = subprocess.Popen([*command, str(home), RUN_ID], cwd=ROOT, env={**base, **env})
        _kill_when(killed_run, imap.sent_files)
        killed = {key: str(got[0]["Message-ID"]) for key, got in relay.recorder.by_key().items()}
        filed = set(imap.filed())
        unsettled = _unsettled(home)
        shutil.copytree(home, without)
        _resume(home, env, monkeypatch)
        _resume(without, {**again.env(), "BREACHBOOK_HOME": str(without)}, monkeypatch)
        with_folder, resent = relay.recorder.by_key(), again.recorder.by_key()

    in_doubt = set(killed) & unsettled  # the relay took them, the ledger never heard
    in_folder = {key for key in in_doubt if killed[key] in filed}
    assert in_folder, f"the kill left no filed letter unsettled ({len(in_doubt)} in doubt)"
    assert _unsettled(home) == _unsettled(without) == set()
    for copies in (with_folder, resent):
        assert all(len({str(m["Message-ID"]) for m in got}) == 1 for got in copies.values())
    assert all(str(resent[key][0]["Message-ID"]) == killed[key] for key in set(resent) & in_doubt)

    duplicated = {key for key, got in with_folder.items() if len(got) > 1}
    assert not duplicated & in_folder, "a letter the Sent folder held was sent again"
    assert duplicated == in_doubt - in_folder  # accepted, killed before it was filed
    every = {str(got[0]["Message-ID"]) for got in with_folder.values()}
    assert set(imap.filed()) == every, "a letter the relay accepted is not in the Sent folder"
    assert set(with_folder) == set(killed) | set(resent)

    duplicated_without = set(resent) & set(killed)
    assert duplicated_without == in_doubt  # without the folder: every one sent again
    print(  # figures for the report: pytest -s shows them
        f"killed with {len(in_doubt)} letters accepted and not settled, {len(in_folder)} of "
        f"them filed: duplicates at the relay with the Sent folder {len(duplicated)}, "
        f"without {len(duplicated_without)}"
    )
