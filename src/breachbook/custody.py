"""The chain of custody of an evidence bundle: one signed record per event, chained by hash.

A bundle is a folder: `manifest.jsonl` (the records, one JSON object a line) and `items/`
(the vault's sealed items, absent when contents were left out). The first record opens the
bundle (incident, run, mode, whether contents are kept, the evidence key's id, legal hold);
then one record per item collected (what, from where, by whom, when, size, SHA-256 of the
plaintext) or failed (and why), and one per transfer or access (transferred, exported,
verified). Every record carries the previous record's hash and an Ed25519 signature by the
anchors' signing key, so an edit, a removed or reordered record, or a re-signing with another
key is found by `breachbook evidence verify` with only the public key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from breachbook.anchors import AnchorError, Signer, VerifyKey, default_key_path, generate_key
from breachbook.errors import BreachbookError
from breachbook.ledger import GENESIS
from breachbook.settings import Settings
from breachbook.vault import ItemUnreadable, Stored, Vault, VaultError, VaultKey

FORMAT = "breachbook-custody/1"
MANIFEST = "manifest.jsonl"


class Event(StrEnum):
    OPENED = "opened"
    COLLECTED = "collected"
    FAILED = "failed"
    TRANSFERRED = "transferred"
    EXPORTED = "exported"
    VERIFIED = "verified"
    CLOSED = "closed"
    """The end of a collection: how many items were collected and failed, and a digest of
    them, so records cut from the end are told from a complete bundle."""
    SNAPSHOTTED = "snapshotted"
    """A volume snapshot taken as evidence, recorded by id (its bytes stay in the cloud)."""


class Contents(StrEnum):
    ENCRYPTED = "encrypted"
    OMITTED = "omitted"


class CustodyError(BreachbookError):
    """A bundle cannot be opened, written or deleted as asked."""


class LegalHold(CustodyError):
    """Deleting evidence under legal hold was refused."""


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(record)).hexdigest()


def _signed_part(record: dict[str, Any]) -> bytes:
    return _canonical({k: v for k, v in record.items() if k != "signature"})


@dataclass
class Bundle:
    """An evidence bundle folder, its vault and its manifest, written through one signer."""

    folder: Path
    signer: Signer | None = None
    key: VaultKey | None = None

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST

    @property
    def vault(self) -> Vault:
        return Vault(self.folder, self.key)

    def records(self) -> list[dict[str, Any]]:
        if not self.manifest.is_file():
            raise CustodyError(f"{self.manifest}: no manifest: not an evidence bundle")
        records = []
        for number, line in enumerate(self.manifest.read_text(encoding="utf-8").splitlines(), 1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError
            except ValueError:
                record = {"unreadable_line": number}
            records.append(record)
        return records

    def opening(self) -> dict[str, Any]:
        records = self.records()
        if not records or records[0].get("event") != Event.OPENED:
            raise CustodyError(f"{self.manifest}: does not start with the bundle's opening record")
        return records[0]

    def append(self, event: Event, **fields: Any) -> dict[str, Any]:
        """Sign one record chained to the last and append it as one line, flushed to disk."""
        if self.signer is None:
            raise CustodyError("no signing key to sign the custody record (BREACHBOOK_SIGNING_KEY)")
        previous = GENESIS
        seq = 1
        if self.manifest.is_file():
            lines = self.manifest.read_bytes().splitlines()
            if lines:
                previous = hashlib.sha256(lines[-1]).hexdigest()
                seq = len(lines) + 1
        record: dict[str, Any] = {
            "format": FORMAT,
            "seq": seq,
            "event": event.value,
            **fields,
            "prev_record_sha256": previous,
            "key_id": self.signer.key_id,
        }
        record["signature"] = base64.b64encode(self.signer.key.sign(_canonical(record))).decode()
        self.folder.mkdir(parents=True, exist_ok=True)
        line = _canonical(record) + b"\n"
        fd = os.open(self.manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def collect(
        self, item_id: str, source: str, by: str, at: str, chunks: Iterator[bytes]
    ) -> tuple[dict[str, Any], Stored | None]:
        """Store one item from a single read and record it; on any failure record the item as
        failed with a one-line reason, keep nothing of it, and carry on (None)."""
        try:
            stored = self.vault.put(chunks)
        except (OSError, BreachbookError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            record = self.append(
                Event.FAILED, item=item_id, source=source, collected_by=by, at=at, error=reason
            )
            return record, None
        record = self.append(
            Event.COLLECTED,
            item=item_id,
            source=source,
            collected_by=by,
            at=at,
            size_bytes=stored.size,
            sha256=stored.sha256,
            blob=stored.blob,
        )
        return record, stored

    def close(self, by: str, at: str) -> dict[str, Any]:
        """Seal the collection so far with a closing record (counts and a digest of items)."""
        collected, failed, digest = _tally(self.records())
        return self.append(
            Event.CLOSED, collected=collected, failed=failed, items_sha256=digest, by=by, at=at
        )

    def delete_item(self, sha256: str) -> None:
        """Delete one sealed item, unless the bundle is under legal hold."""
        if self.opening().get("legal_hold"):
            raise LegalHold(
                f"{self.folder}: under legal hold: item {sha256[:12]}... is not deleted"
            )
        self.vault.path(sha256).unlink(missing_ok=True)


def _tally(records: list[dict[str, Any]]) -> tuple[int, int, str]:
    digest = hashlib.sha256()
    collected = failed = 0
    for record in records:
        if record.get("event") == Event.COLLECTED:
            collected += 1
            digest.update(f"{record.get('item')}\t{record.get('sha256')}\n".encode())
        elif record.get("event") == Event.FAILED:
            failed += 1
    return collected, failed, digest.hexdigest()


# -- verify ----------------------------------------------------------------------------------


class Outcome(IntEnum):
    """`breachbook evidence verify` exit codes (README: Evidence)."""

    INTACT = 0
    TAMPERED = 1
    CANNOT_CHECK = 2
    INCOMPLETE = 3
    """Intact, but some items failed to be collected (listed)."""


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    failed_items: list[str] = field(default_factory=list)
    unclosed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    items: int = 0
    records: int = 0

    @property
    def outcome(self) -> Outcome:
        if self.problems:
            return Outcome.TAMPERED
        return Outcome.INCOMPLETE if self.failed_items or self.unclosed else Outcome.INTACT


def _check_chain(
    records: list[dict[str, Any]], raw_lines: list[bytes], trusted: VerifyKey, verdict: Verdict
) -> None:
    previous = GENESIS
    for number, (record, raw) in enumerate(zip(records, raw_lines, strict=True), 1):
        where = f"record {number}"
        if "unreadable_line" in record:
            verdict.problems.append(f"{where}: not a JSON record (edited or corrupted)")
            previous = hashlib.sha256(raw).hexdigest()
            continue
        if record.get("seq") != number:
            verdict.problems.append(
                f"{where}: numbered {record.get('seq')}: records were removed, added or reordered"
            )
        if record.get("prev_record_sha256") != previous:
            verdict.problems.append(
                f"{where}: does not chain to record {number - 1}: records were removed, "
                "inserted or reordered before it"
            )
        if raw != _canonical(record):
            verdict.problems.append(f"{where}: not in canonical form (edited by hand)")
        if record.get("key_id") != trusted.key_id:
            verdict.problems.append(
                f"{where}: signed by key {record.get('key_id')}, not by the trusted key "
                f"{trusted.key_id}: re-signed or forged"
            )
        else:
            try:
                signature = base64.b64decode(str(record.get("signature", "")), validate=True)
                trusted.key.verify(signature, _signed_part(record))
            except (InvalidSignature, binascii.Error, ValueError):
                what = " ".join(str(record[k]) for k in ("event", "item") if k in record)
                verdict.problems.append(
                    f"{where} ({what}): signature does not verify: the record was edited"
                )
        previous = hashlib.sha256(raw).hexdigest()


def verify_bundle(bundle: Bundle, trusted: VerifyKey) -> Verdict:
    """Every record's chain and signature, every item's presence, decryption and hash, and no
    item in the vault that the manifest does not name. Raises CustodyError when the bundle
    cannot be checked at all (no manifest, or a key that is not the bundle's)."""
    verdict = Verdict()
    records = bundle.records()
    raw_lines = bundle.manifest.read_bytes().splitlines()
    verdict.records = len(records)
    _check_chain(records, raw_lines, trusted, verdict)
    opening = records[0] if records else {}
    if opening.get("event") != Event.OPENED:
        verdict.problems.append("record 1: not the bundle's opening record: records were removed")
    contents = opening.get("contents")
    if contents == Contents.ENCRYPTED:
        if bundle.key is None:
            raise CustodyError(
                f"{bundle.folder}: contents are encrypted under key {opening.get('evidence_key_id')}: "
                "set BREACHBOOK_EVIDENCE_KEY or BREACHBOOK_EVIDENCE_KEY_FILE"
            )
        if bundle.key.key_id != opening.get("evidence_key_id"):
            raise CustodyError(
                f"{bundle.key.source}: evidence key {bundle.key.key_id} is not this bundle's "
                f"(key {opening.get('evidence_key_id')}): wrong key"
            )
    _check_closed(records, verdict)
    named: dict[str, str] = {}
    for record in records:
        if record.get("event") == Event.FAILED:
            verdict.failed_items.append(f"{record.get('item')}: {record.get('error')}")
        if record.get("event") != Event.COLLECTED:
            continue
        verdict.items += 1
        sha = str(record.get("sha256"))
        item = str(record.get("item"))
        if contents != Contents.ENCRYPTED:
            continue
        named[sha] = item
        _check_item(bundle, item, sha, int(record.get("size_bytes", -1)), verdict)
    if contents == Contents.ENCRYPTED:
        for extra in sorted(bundle.vault.stored() - set(named)):
            verdict.problems.append(f"items/{extra}: in the vault but in no record: an extra item")
        for partial in bundle.vault.leftovers():
            verdict.notes.append(f"items/{partial}: a write cut short, not evidence (ignored)")
    else:
        verdict.notes.append("contents left out (a drill): hashes and custody checked, no items")
        if bundle.vault.stored():
            verdict.problems.append(
                "items/ holds items although the bundle says contents are left out"
            )
    return verdict


def _check_closed(records: list[dict[str, Any]], verdict: Verdict) -> None:
    closes = [n for n, r in enumerate(records) if r.get("event") == Event.CLOSED]
    if not closes:
        verdict.unclosed.append(
            f"no closing record after record {len(records)}: records were cut from the end, "
            "or the run stopped while collecting"
        )
        return
    last = closes[-1]
    close = records[last]
    collected, failed, digest = _tally(records[:last])
    if (close.get("collected"), close.get("failed"), close.get("items_sha256")) != (
        collected,
        failed,
        digest,
    ):
        verdict.problems.append(
            f"record {last + 1} (closed): says {close.get('collected')} collected and "
            f"{close.get('failed')} failed, the records before it hold {collected} and {failed}"
            f"{'' if close.get('items_sha256') == digest else ', other items'}"
        )
    later = [r for r in records[last + 1 :] if r.get("event") in (Event.COLLECTED, Event.FAILED)]
    if later:
        verdict.unclosed.append(
            f"{len(later)} item record(s) after the last closing record (record {last + 1}): "
            "a collection that did not finish"
        )


def _check_item(bundle: Bundle, item: str, sha: str, size: int, verdict: Verdict) -> None:
    if not bundle.vault.path(sha).is_file():
        verdict.problems.append(f"{item}: items/{sha} is missing")
        return
    seen = 0
    try:
        for chunk in bundle.vault.open(sha):
            seen += len(chunk)
    except ItemUnreadable as exc:
        verdict.problems.append(f"{item}: {exc}")
        return
    except OSError as exc:
        verdict.problems.append(f"{item}: items/{sha} cannot be read ({exc.strerror})")
        return
    if seen != size:
        verdict.problems.append(f"{item}: {seen} bytes, the record says {size}")


def verify_lines(verdict: Verdict) -> tuple[list[str], list[str]]:
    out = [f"note: {note}" for note in verdict.notes]
    err = [f"TAMPERED: {problem}" for problem in verdict.problems]
    err += [f"failed to collect: {item}" for item in verdict.failed_items]
    err += [f"incomplete: {reason}" for reason in verdict.unclosed]
    out.append(
        f"{verdict.records} custody records, {verdict.items} items collected, "
        f"{len(verdict.failed_items)} failed"
    )
    return out, err


# -- export and the custody report -----------------------------------------------------------


def export_bundle(bundle: Bundle, to: Path) -> list[str]:
    """Decrypt every collected item into `to/items/<item>` (checked while written), copy the
    manifest and write `custody-report.md`. Refuses a destination that is not empty."""
    if to.exists() and any(to.iterdir()):
        raise CustodyError(f"{to}: not empty: export into a new folder")
    opening = bundle.opening()
    if opening.get("contents") != Contents.ENCRYPTED:
        raise CustodyError(f"{bundle.folder}: contents were left out (a drill): nothing to export")
    items = to / "items"
    items.mkdir(parents=True)
    written = []
    for record in bundle.records():
        if record.get("event") != Event.COLLECTED:
            continue
        name = safe_name(str(record["item"]))
        target = items / name
        partial = target.with_name(f".{name}.partial")
        try:
            with partial.open("wb") as handle:
                for chunk in bundle.vault.open(str(record["sha256"])):
                    handle.write(chunk)
            partial.replace(target)
        except (ItemUnreadable, VaultError):
            partial.unlink(missing_ok=True)
            raise
        except FileNotFoundError:
            partial.unlink(missing_ok=True)
            raise CustodyError(f"{record['item']}: items/{record['sha256']} is missing") from None
        written.append(f"items/{name}")
    (to / MANIFEST).write_bytes(bundle.manifest.read_bytes())
    return written


def safe_name(item_id: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in item_id).strip("._")
    return f"{cleaned[:100]}-{hashlib.sha256(item_id.encode()).hexdigest()[:8]}"


def custody_report(records: list[dict[str, Any]], trusted_key_id: str) -> str:
    """The manifest for people: the bundle, each item, each transfer and access, in order."""
    opening = records[0] if records else {}
    lines = [
        f"# Evidence custody report: incident {opening.get('incident_id')}",
        "",
        f"- Run: {opening.get('run_id')} ({opening.get('mode')})",
        f"- Opened by {opening.get('opened_by')} at {opening.get('at')}",
        f"- Contents: {opening.get('contents')}; evidence key {opening.get('evidence_key_id')}",
        f"- Legal hold: {'yes' if opening.get('legal_hold') else 'no'}",
        f"- Every record is signed with Ed25519 key {trusted_key_id} and chained by SHA-256.",
        "",
        "## Items",
        "",
        "| # | Item | Source | Collected by | When | Bytes | SHA-256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for record in records:
        if record.get("event") == Event.COLLECTED:
            lines.append(
                f"| {record['seq']} | {record['item']} | {record['source']} | "
                f"{record['collected_by']} | {record['at']} | {record['size_bytes']} | "
                f"`{record['sha256']}` |"
            )
        elif record.get("event") == Event.FAILED:
            lines.append(
                f"| {record['seq']} | {record['item']} | {record['source']} | "
                f"{record['collected_by']} | {record['at']} | FAILED: {record['error']} | |"
            )
    lines += ["", "## Transfers and accesses", ""]
    for record in records:
        if record.get("event") == Event.SNAPSHOTTED:
            lines.append(
                f"- record {record['seq']}: {record['item']} snapshotted as "
                f"{record.get('snapshot_id')} by {record.get('by')} at {record.get('at')}"
            )
        if record.get("event") in (Event.TRANSFERRED, Event.EXPORTED, Event.VERIFIED):
            lines.append(
                f"- record {record['seq']}: {record['event']} by {record.get('by')} at "
                f"{record.get('at')}: {record.get('detail', '')}"
            )
    return "\n".join(lines) + "\n"


# -- a run's policy --------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidencePolicy:
    """How a run keeps evidence, decided by the wiring from the mode and the settings."""

    mode: str
    signer: Signer
    key: VaultKey | None
    """The evidence key; None: contents are left out (a drill's default)."""

    @property
    def contents(self) -> Contents:
        return Contents.OMITTED if self.key is None else Contents.ENCRYPTED


def run_signer(settings: Settings) -> Signer:
    """The anchors' signing key (BREACHBOOK_SIGNING_KEY, else the home's, created once)."""
    path = settings.signing_key or default_key_path(settings)
    if settings.signing_key is None and not path.exists():
        with contextlib.suppress(AnchorError):  # another run made it first: use that one
            generate_key(path)
    return Signer.load(path)
