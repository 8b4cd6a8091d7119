"""Evidence bundles through the product's path: a drill (and a LIVE run) of a one-step
playbook collects the exposed tables, log files, the incident record and the ledger into a
bundle; `breachbook evidence verify` finds each kind of tampering with the right message;
`evidence export` gives a decrypted copy with a custody report; faults leave failed items
and nothing half-written."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from typer.testing import CliRunner

from breachbook.anchors import Signer, generate_key
from breachbook.cli import app
from breachbook.collectors import SourceError, read_file
from breachbook.custody import Bundle, Event, LegalHold
from breachbook.demo import DemoWorld
from breachbook.engine import Status
from breachbook.errors import BreachbookError
from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.vault import Vault, VaultError, VaultKey, vault_key
from breachbook.wiring import demo_settings
from tests.conftest import Fakes, run_with
from tests.evidence_playbook import snapshot_playbook

PLAYBOOK_WITH = """\
tables: "{{{{ incident.exposed_tables }}}}"
files:
  - root: {logs}
    glob: "*.log"
    max_file_bytes: 3000000
"""

runner = CliRunner()


@dataclass
class Drill:
    out: Path
    home: Path
    logs: Path
    world: DemoWorld
    settings: Settings

    @property
    def bundle(self) -> Path:
        return self.out / "evidence"


def make_logs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "app.log").write_bytes(b"GET /customers 200\n" * 100_000)
    (folder / "auth.log").write_bytes(b"login analytics_etl from 203.0.113.9\n" * 1000)
    (folder / "huge.log").write_bytes(b"x" * 3_000_001)
    (folder / "notes.txt").write_text("not a log")
    return folder


def drill(
    base: Path, world: DemoWorld, contents: str | None, mode: Mode = Mode.DRILL, **extra: Any
) -> Drill:
    """A run of the one-step playbook; `contents` None leaves the drill's default."""
    home = base / "home"
    logs = make_logs(base / "logs")
    playbook = base / "playbook.yaml"
    playbook.write_text(snapshot_playbook("evidence-test", PLAYBOOK_WITH.format(logs=logs)))
    options: dict[str, Any] = {"home": home, **extra}
    if contents is not None:
        options["evidence_drill_contents"] = contents
    settings = demo_settings(
        Settings(**options),
        world.customers_db,
        base / "demo",
    )
    out = base / "out" if mode is Mode.DRILL else None
    result = run_with(mode, settings, Fakes(base), out, world.incident_file, playbook)
    return Drill(
        out or settings.home / "runs" / result.incident_id / result.run_id,
        home,
        logs,
        world,
        settings,
    )


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory, small_world: DemoWorld) -> Drill:
    return drill(tmp_path_factory.mktemp("sealed"), small_world, "encrypted")


def verify(bundle: Path, home: Path, *more: str) -> Any:
    return runner.invoke(
        app, ["evidence", "verify", str(bundle), *more], env={"BREACHBOOK_HOME": str(home)}
    )


@pytest.fixture
def copy(sealed: Drill, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(sealed.bundle, target)
    for item in (target / "items").iterdir():
        item.chmod(0o600)
    return target


def records(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "manifest.jsonl").read_text().splitlines()]


def item_of(bundle: Path, name: str) -> dict[str, Any]:
    return next(r for r in records(bundle) if r.get("item") == name and r["event"] == "collected")


def test_a_drill_seals_every_source_read_once_and_verifies(sealed: Drill) -> None:
    events = records(sealed.bundle)
    opening = events[0]
    assert opening["event"] == "opened" and opening["mode"] == "drill"
    assert opening["contents"] == "encrypted" and opening["legal_hold"] is True
    assert "[DRILL]" in opening["banner"]
    collected = {r["item"]: r for r in events if r["event"] == "collected"}
    logs = sealed.logs.resolve()
    assert set(collected) == {
        "incident-record",
        "table:customers",
        "table:orders",
        "table:favourites",
        "table:payment_cards",
        "table:web_accounts",
        "table:consignor_accounts",
        f"file:{logs / 'app.log'}",
        f"file:{logs / 'auth.log'}",
        "ledger",
    }
    failed = [r for r in events if r["event"] == "failed"]
    assert [r["item"] for r in failed] == [f"file:{logs / 'huge.log'}"]
    assert "over max_file_bytes 3000000" in failed[0]["error"]
    app_log = (logs / "app.log").read_bytes()
    assert collected[f"file:{logs / 'app.log'}"]["sha256"] == hashlib.sha256(app_log).hexdigest()
    # sealed, never in plaintext: not one log line, card number or name in the bundle
    card = (
        sqlite3.connect(sealed.world.customers_db)
        .execute("SELECT card_number FROM payment_cards LIMIT 1")
        .fetchone()[0]
    )
    for blob in (sealed.bundle / "items").iterdir():
        data = blob.read_bytes()
        assert b"GET /customers" not in data and card.encode() not in data
    result = verify(sealed.bundle, sealed.home)
    assert result.exit_code == 3, result.output
    assert "failed to collect: file:" in result.output and "huge.log" in result.output
    assert "result: intact but incomplete" in result.output
    assert records(sealed.bundle)[-1]["event"] == "verified"


def test_export_gives_legal_the_plaintext_and_a_custody_report(
    sealed: Drill, tmp_path: Path
) -> None:
    to = tmp_path / "legal"
    result = runner.invoke(
        app,
        ["evidence", "export", str(sealed.bundle), "--to", str(to)],
        env={"BREACHBOOK_HOME": str(sealed.home)},
    )
    assert result.exit_code == 0, result.output
    exported = {p.read_bytes() for p in (to / "items").iterdir()}
    assert (sealed.logs / "app.log").read_bytes() in exported
    report = (to / "custody-report.md").read_text()
    assert "table:payment_cards" in report and "FAILED" in report and "exported by" in report
    assert records(to)[-1]["event"] == "exported"
    again = runner.invoke(
        app,
        ["evidence", "export", str(sealed.bundle), "--to", str(to)],
        env={"BREACHBOOK_HOME": str(sealed.home)},
    )
    assert again.exit_code == 2 and "not empty" in again.output


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _biggest(bundle: Path) -> Path:
    return max((bundle / "items").iterdir(), key=lambda p: p.stat().st_size)


def _resign(bundle: Path, signer: Signer) -> None:
    from breachbook.custody import _canonical
    from breachbook.ledger import GENESIS

    previous = GENESIS
    lines = []
    for record in records(bundle):
        record.pop("signature")
        record["prev_record_sha256"] = previous
        record["key_id"] = signer.key_id
        record["signature"] = base64.b64encode(signer.key.sign(_canonical(record))).decode()
        line = _canonical(record)
        previous = hashlib.sha256(line).hexdigest()
        lines.append(line)
    (bundle / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def test_one_flipped_byte_in_an_item_is_found(sealed: Drill, copy: Path) -> None:
    blob = _biggest(copy)
    _flip(blob, blob.stat().st_size // 2)
    result = verify(copy, sealed.home)
    assert result.exit_code == 1
    assert f"items/{blob.name}: chunk 0 fails authentication" in result.output


def test_an_item_cut_after_a_chunk_is_found(sealed: Drill, copy: Path) -> None:
    blob = copy / "items" / item_of(copy, f"file:{sealed.logs.resolve() / 'app.log'}")["sha256"]
    # app.log is 1.9 MB: one chunk; seal a bigger item? cut inside the only chunk instead
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) - 100])
    result = verify(copy, sealed.home)
    assert result.exit_code == 1
    assert "chunk 0: cut short (file truncated)" in result.output


def test_one_flipped_byte_in_the_manifest_is_found(sealed: Drill, copy: Path) -> None:
    manifest = copy / "manifest.jsonl"
    text = manifest.read_text()
    record = item_of(copy, "table:payment_cards")
    edited = text.replace(
        f'"size_bytes":{record["size_bytes"]}', f'"size_bytes":{record["size_bytes"] + 1}'
    )
    assert edited != text
    manifest.write_text(edited)
    result = verify(copy, sealed.home)
    assert result.exit_code == 1
    assert (
        f"record {record['seq']} (collected table:payment_cards): signature does not verify"
        in result.output
    )
    assert f"record {record['seq'] + 1}: does not chain to record {record['seq']}" in result.output


def test_a_deleted_item_is_found(sealed: Drill, copy: Path) -> None:
    record = item_of(copy, "table:customers")
    (copy / "items" / record["sha256"]).unlink()
    result = verify(copy, sealed.home)
    assert result.exit_code == 1
    assert f"table:customers: items/{record['sha256']} is missing" in result.output


def test_an_extra_item_is_found(sealed: Drill, copy: Path) -> None:
    shutil.copy(_biggest(copy), copy / "items" / ("0" * 64))
    result = verify(copy, sealed.home)
    assert result.exit_code == 1
    assert f"items/{'0' * 64}: in the vault but in no record: an extra item" in result.output


def test_records_cut_from_the_end_are_never_reported_intact(sealed: Drill, copy: Path) -> None:
    manifest = copy / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines()
    closing = next(n for n, r in enumerate(records(copy)) if r["event"] == "closed")
    last_item = records(copy)[closing - 1]
    assert last_item["event"] == "collected" and last_item["item"] == "ledger"
    (copy / "items" / last_item["sha256"]).unlink()
    manifest.write_bytes(b"\n".join(lines[: closing - 1]) + b"\n")  # the ledger item and after
    result = verify(copy, sealed.home)
    assert result.exit_code == 3, result.output
    assert (
        f"incomplete: no closing record after record {closing - 1}: records were cut from the "
        "end, or the run stopped while collecting"
    ) in result.output
    assert "result: intact but incomplete" in result.output


def test_reordered_records_are_found(sealed: Drill, copy: Path) -> None:
    manifest = copy / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    result = verify(copy, sealed.home)
    assert result.exit_code == 1
    assert "record 3: numbered 4: records were removed, added or reordered" in result.output
    assert "record 3: does not chain to record 2" in result.output


def test_a_manifest_re_signed_with_another_key_is_found(
    sealed: Drill, copy: Path, tmp_path: Path
) -> None:
    generate_key(tmp_path / "keys" / "other")
    other = Signer.load(tmp_path / "keys" / "other")
    _resign(copy, other)
    trusted = Signer.load(sealed.home / "keys" / "signing-key")
    # the forger's own public key passes the chain: only the trusted key tells
    forged = verify(copy, sealed.home, "--key", str(tmp_path / "keys" / "other.pub"))
    assert forged.exit_code == 3 and "TAMPERED" not in forged.output
    result = verify(copy, sealed.home)
    assert result.exit_code == 1
    assert (
        f"record 1: signed by key {other.key_id}, not by the trusted key {trusted.key_id}: "
        "re-signed or forged"
    ) in result.output


def test_the_wrong_evidence_key_is_named_and_nothing_is_decrypted(
    sealed: Drill, copy: Path, tmp_path: Path
) -> None:
    other = VaultKey.generate(tmp_path / "other-key")
    result = runner.invoke(
        app,
        ["evidence", "verify", str(copy)],
        env={
            "BREACHBOOK_HOME": str(sealed.home),
            "BREACHBOOK_EVIDENCE_KEY_FILE": str(tmp_path / "other-key"),
        },
    )
    assert result.exit_code == 2
    assert f"evidence key {other.key_id} is not this bundle's" in result.output
    assert "wrong key" in result.output


def test_legal_hold_refuses_deletion(sealed: Drill, copy: Path) -> None:
    bundle = Bundle(copy)
    record = item_of(copy, "table:customers")
    with pytest.raises(LegalHold, match="under legal hold"):
        bundle.delete_item(record["sha256"])
    assert (copy / "items" / record["sha256"]).is_file()


def test_a_default_drill_keeps_hashes_only_and_writes_nothing_outside_its_folder(
    tmp_path: Path, small_world: DemoWorld
) -> None:
    before = {p: p.stat().st_mtime_ns for p in small_world.folder.rglob("*")}
    run = drill(tmp_path, small_world, None)
    assert not (run.bundle / "items").exists()
    opening = records(run.bundle)[0]
    assert opening["contents"] == "omitted" and opening["evidence_key_id"] is None
    assert {r["event"] for r in records(run.bundle)} == {"opened", "collected", "failed", "closed"}
    # outside the run folder: only the signing key and the anchors (no evidence key, no copy)
    outside = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    outside = [p for p in outside if not p.startswith(("out/", "logs/"))]
    assert [p for p in outside if not p.startswith("home/anchors/")] == [
        "home/keys/signing-key",
        "home/keys/signing-key.pub",
        "playbook.yaml",
    ]
    assert {p: p.stat().st_mtime_ns for p in small_world.folder.rglob("*")} == before
    result = verify(run.bundle, run.home)
    assert result.exit_code == 3, result.output
    assert "contents left out (a drill)" in result.output


def test_live_transfers_sealed_items_only_and_no_plaintext_anywhere(
    tmp_path: Path, small_world: DemoWorld
) -> None:
    store = tmp_path / "vault"  # the filesystem store the fakes hand to the wiring
    run = drill(tmp_path, small_world, "omitted", Mode.LIVE)
    events = records(run.bundle)
    assert events[0]["contents"] == "encrypted"
    transferred = {r["item"] for r in events if r["event"] == "transferred"}
    collected = {r["item"] for r in events if r["event"] == "collected"}
    assert transferred == collected and len(collected) == 10
    copies = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.jsonl" for p in copies) and len(copies) == 11
    app_log = (run.logs / "app.log").read_bytes()[:1000]
    for place in (store, run.out, run.home):
        for path in place.rglob("*"):
            if path.is_file():
                assert app_log not in path.read_bytes(), path
    copied = next(p for p in copies if p.name == "manifest.jsonl").parent
    assert verify(copied, run.home).exit_code == 3  # the stored copy verifies on its own


# -- faults ----------------------------------------------------------------------------------


def _bundle(tmp_path: Path, vault: type[Vault] = Vault) -> Bundle:
    generate_key(tmp_path / "keys" / "signing-key")
    key = VaultKey.generate(tmp_path / "keys" / "evidence-key")

    class Faulty(Bundle):
        @property
        def vault(self) -> Vault:
            return vault(self.folder, self.key)

    bundle = Faulty(tmp_path / "bundle", Signer.load(tmp_path / "keys" / "signing-key"), key)
    bundle.append(Event.OPENED, contents="encrypted", evidence_key_id=key.key_id, legal_hold=False)
    return bundle


def test_a_file_that_shrinks_mid_read_is_failed_and_the_rest_collected(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    log = tmp_path / "growing.log"
    log.write_bytes(b"a" * 3_000_000)

    def shrinking() -> Iterator[bytes]:
        chunks = read_file(log)
        yield next(chunks)
        log.write_bytes(b"a" * 10)  # rotated away under us
        yield from chunks

    record, stored = bundle.collect("file:growing.log", str(log), "t", "now", shrinking())
    assert stored is None and record["event"] == "failed"
    assert "vanished or shrank mid-read (1048576 of 3000000 bytes)" in record["error"]
    assert bundle.vault.stored() == set() and bundle.vault.leftovers() == []
    _, ok = bundle.collect("file:other", "x", "t", "now", iter([b"fine"]))
    assert ok is not None and bundle.vault.stored() == {ok.sha256}


class FullDisk(Vault):
    """A vault whose disk fills after 1 MiB of sealed bytes."""

    written = 0

    def _write(self, handle: BinaryIO, data: bytes) -> None:
        FullDisk.written += len(data)
        if FullDisk.written > 1024 * 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        handle.write(data)


def test_a_full_disk_fails_the_item_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, FullDisk)
    big = [b"z" * 1_000_000] * 10
    record, stored = bundle.collect("big", "x", "t", "now", iter(big))
    assert stored is None and record["error"] == "No space left on device"
    assert bundle.vault.stored() == set() and bundle.vault.leftovers() == []
    assert [r["event"] for r in bundle.records()] == ["opened", "failed"]
    with pytest.raises(SourceError):
        list(read_file(tmp_path / "missing.log"))


def test_the_evidence_key_is_never_kept_beside_the_data(tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    settings = Settings(home=tmp_path, evidence_key_file=evidence / "key")
    with pytest.raises(VaultError, match="inside the evidence folder"):
        vault_key(settings, away_from=[evidence])
    (tmp_path / "bad").write_text("short")
    (tmp_path / "bad").chmod(0o600)
    with pytest.raises(VaultError, match="not an evidence key"):
        vault_key(Settings(home=tmp_path, evidence_key_file=tmp_path / "bad"))


def test_a_drill_with_an_unusable_evidence_key_stops_before_anything_is_written(
    tmp_path: Path, small_world: DemoWorld
) -> None:
    with pytest.raises(BreachbookError, match="not an evidence key"):
        drill(tmp_path, small_world, "encrypted", evidence_key="bm90IGEga2V5")
    assert not (tmp_path / "out").exists()


def test_statuses_of_a_drill(sealed: Drill) -> None:
    plan = json.loads((sealed.out / "plan.json").read_text())
    verdicts = {e["target"]: e["verdict"] for e in plan["entries"]}
    assert verdicts["table:payment_cards"] == "VERIFIED"
    assert [t for t, v in verdicts.items() if v == "FAILED"] == [
        f"file:{sealed.logs.resolve() / 'huge.log'}"
    ]
    assert Status.PLANNED.value == "planned"


def _sealed_chunks(tmp_path: Path) -> tuple[Vault, str, list[bytes]]:
    """A 9 MiB item: three sealed chunks (4 + 4 + 1 MiB); its file split into its frames."""
    vault = Vault(tmp_path / "v", VaultKey.generate(tmp_path / "k"))
    stored = vault.put(iter([bytes([n]) * (3 * 1024 * 1024) for n in range(3)]))
    data = vault.path(stored.sha256).read_bytes()
    frames, at = [data[:24]], 24
    while at < len(data):
        length = int.from_bytes(data[at + 12 : at + 16], "big")
        frames.append(data[at : at + 16 + length])
        at += 16 + length
    assert len(frames) == 4
    return vault, stored.sha256, frames


def _rewrite(vault: Vault, sha: str, frames: list[bytes]) -> str:
    path = vault.path(sha)
    path.chmod(0o600)
    path.write_bytes(b"".join(frames))
    with pytest.raises(BreachbookError) as caught:
        b"".join(vault.open(sha))
    return str(caught.value)


def test_reordered_chunks_are_found(tmp_path: Path) -> None:
    vault, sha, frames = _sealed_chunks(tmp_path)
    assert b"".join(vault.open(sha)) == b"".join(bytes([n]) * (3 * 1024 * 1024) for n in range(3))
    swapped = [frames[0], frames[2], frames[1], frames[3]]
    assert (
        _rewrite(vault, sha, swapped)
        == f"items/{sha}: chunk 0 fails authentication (altered, reordered, or encrypted under another key)"
    )


def test_an_item_cut_after_a_whole_chunk_is_found(tmp_path: Path) -> None:
    vault, sha, frames = _sealed_chunks(tmp_path)
    assert _rewrite(vault, sha, frames[:3]) == (
        f"items/{sha}: cut short after chunk 1 (the chunks that followed are gone)"
    )


def test_a_chunk_from_another_item_is_found(tmp_path: Path) -> None:
    vault, sha, frames = _sealed_chunks(tmp_path)
    other = vault.put(iter([b"\7" * (5 * 1024 * 1024)]))
    theirs = vault.path(other.sha256).read_bytes()
    length = int.from_bytes(theirs[24 + 12 : 24 + 16], "big")
    foreign = theirs[24 : 24 + 16 + length]  # their chunk 0, same key, same index
    assert "chunk 0 fails authentication" in _rewrite(vault, sha, [frames[0], foreign, *frames[2:]])
