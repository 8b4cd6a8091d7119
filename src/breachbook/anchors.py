"""Signed anchors: each incident's ledger head, signed with Ed25519 and published outside the
ledger, so the audit trail proves itself to someone who holds only the public key.

A hash chain alone proves nothing against whoever can write the file it lives in: they can
append a well-chained forged entry, cut the tail, or recompute the whole chain (and rewrite
plan.json's head beside it). An anchor is {incident, seq, entry hash, the chain's first
entry hash, run, reason, when, key id} signed with a private key kept outside every run
folder, appended as one JSON line to `<anchors dir>/<incident>.jsonl`. A run signs its
incident's head after each step and at its end (success or failure). `audit verify` then
checks every anchor it finds against the chain: a signature that fails, or an anchored
entry missing or different, is tampering; entries after the last anchor, or no anchor at
all, are unproven, never intact.

Anchors are deliberately not kept in the ledger: one kept in the file it vouches for can be
deleted together with the tail it covers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from enum import IntEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from breachbook.clock import Clock, SystemClock
from breachbook.errors import BreachbookError
from breachbook.journal import RunJournal
from breachbook.ledger import GENESIS, Anchor, ChainProblem, ChainSummary, Ledger
from breachbook.settings import Settings
from breachbook.workspace import OWNER_MARK

FORMAT = "breachbook-anchor/1"
DEFAULT_KEY = Path("keys", "signing-key")
SIGNED_FIELDS = (
    "format",
    "incident_id",
    "seq",
    "entry_hash",
    "first_entry_hash",
    "run_id",
    "reason",
    "signed_at",
    "key_id",
)
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class AnchorError(BreachbookError):
    """A key or the anchors folder cannot be used as configured."""


# -- keys ------------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    """Short id of a public key: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def public_key_path(private: Path) -> Path:
    """Where the public half of a key pair is written: beside it, with `.pub` added."""
    return private.with_name(private.name + ".pub")


def run_folder_around(path: Path, run_folder: Path | None = None) -> Path | None:
    """The run folder that holds `path` (the given one, or any folder carrying a run's owner
    mark), or None."""
    resolved = path.expanduser().resolve()
    if run_folder is not None:
        folder = run_folder.expanduser().resolve()
        if resolved == folder or folder in resolved.parents:
            return folder
    for parent in (resolved, *resolved.parents):
        if (parent / OWNER_MARK).is_file():
            return parent
    return None


def refuse_inside_run_folder(path: Path, what: str, run_folder: Path | None = None) -> None:
    folder = run_folder_around(path, run_folder)
    if folder is not None:
        raise AnchorError(
            f"{path}: {what} is inside the run folder {folder}; whoever can rewrite a run "
            "folder could then rewrite or re-sign its audit trail: keep it outside every run folder"
        )


def _write_whole(path: Path, data: bytes, mode: int, replace: bool = False) -> None:
    """Write `path` whole with `mode` through a temporary file in its folder, so nobody ever
    reads half a key. Without `replace`, an existing file stays and FileExistsError is raised
    (the temporary file is linked into place, which fails if the name is taken)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-key-")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def generate_key(path: Path) -> Ed25519PublicKey:
    """Write a new Ed25519 key pair: the private key at `path` (mode 0600, PEM), the public key
    at `path.pub`. Never replaces a file, and refuses a place inside a run folder."""
    refuse_inside_run_folder(path, "the signing key")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        _write_whole(path, private, 0o600)
    except FileExistsError:
        raise AnchorError(
            f"{path}: exists; a key is never replaced (the anchors it signed could no longer "
            "be checked): choose another path"
        ) from None
    except OSError as exc:
        raise AnchorError(f"{path}: cannot write the key ({exc.strerror})") from None
    public = key.public_key()
    pub_path = public_key_path(path)
    try:  # the private key is new and ours: a public file left from an older key is stale
        _write_whole(pub_path, public_pem(public).encode("ascii"), 0o644, replace=True)
    except OSError as exc:
        raise AnchorError(f"{pub_path}: cannot write the public key ({exc.strerror})") from None
    return public


def _read_private(path: Path) -> Ed25519PrivateKey:
    try:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            mode = path.stat().st_mode & 0o777
            raise AnchorError(
                f"{path}: the signing key may be read by others (mode {mode:04o}): chmod 600 it"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnchorError(f"{path}: no signing key there (BREACHBOOK_SIGNING_KEY)") from None
    except OSError as exc:
        raise AnchorError(f"{path}: cannot read the signing key ({exc.strerror})") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError(f"{path}: not an unencrypted Ed25519 private key in PEM")
    return key


def _read_public(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnchorError(f"{path}: no public key there") from None
    except OSError as exc:
        raise AnchorError(f"{path}: cannot read the public key ({exc.strerror})") from None
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError(f"{path}: not an Ed25519 public key in PEM")
    return key


def default_key_path(settings: Settings) -> Path:
    return settings.home / DEFAULT_KEY


def anchors_dir(settings: Settings) -> Path:
    return settings.anchors_dir or settings.home / "anchors"


@dataclass(frozen=True)
class VerifyKey:
    """The public key `audit verify` trusts, and where it came from (for the report)."""

    key: Ed25519PublicKey
    key_id: str
    source: str


def verify_key(
    settings: Settings, given: Path | None = None, run_folder: Path | None = None
) -> VerifyKey | None:
    """The public key to check anchors with: `given` (--key), else BREACHBOOK_VERIFY_KEY, else
    the signing key's own (BREACHBOOK_SIGNING_KEY, else the home's default key if it exists).
    None when there is none; never creates one. A key inside the run folder being verified is
    refused: whoever rewrote the folder could have replaced it."""
    for path, source in ((given, "--key"), (settings.verify_key, "BREACHBOOK_VERIFY_KEY")):
        if path is not None:
            refuse_inside_run_folder(path, "the public key", run_folder)
            public = _read_public(path)
            return VerifyKey(public, key_id(public), f"{source} {path}")
    if settings.signing_key is not None:
        refuse_inside_run_folder(settings.signing_key, "the signing key", run_folder)
        public = _read_private(settings.signing_key).public_key()
        return VerifyKey(public, key_id(public), f"BREACHBOOK_SIGNING_KEY {settings.signing_key}")
    default = default_key_path(settings)
    if not default.is_file():
        return None
    public = _read_private(default).public_key()
    return VerifyKey(public, key_id(public), f"the default key {default}")


# -- anchors ---------------------------------------------------------------------------------


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class SignedAnchor:
    """One incident's chain head, as signed: entry `seq` had `entry_hash` at `signed_at`."""

    incident_id: str
    seq: int
    entry_hash: str
    first_entry_hash: str
    run_id: str
    reason: str
    signed_at: str
    key_id: str
    signature: str
    format: str = FORMAT

    def payload(self) -> bytes:
        """The bytes signed: every field but the signature, as canonical JSON."""
        return _canonical({name: getattr(self, name) for name in SIGNED_FIELDS})

    def as_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in SIGNED_FIELDS},
            "signature": self.signature,
        }

    def line(self) -> bytes:
        return _canonical(self.as_dict()) + b"\n"

    def signed_by(self, public: VerifyKey) -> bool:
        """Whether the signature is valid for this content under `public`."""
        try:
            signature = base64.b64decode(self.signature, validate=True)
            public.key.verify(signature, self.payload())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    @classmethod
    def from_line(cls, text: str) -> SignedAnchor:
        """Parse one line of an anchors file; ValueError if it is not exactly an anchor."""
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {*SIGNED_FIELDS, "signature"}:
            raise ValueError("not an anchor")
        if data["format"] != FORMAT or not isinstance(data["seq"], int) or data["seq"] < 1:
            raise ValueError("not an anchor")
        if not all(isinstance(data[k], str) for k in data if k != "seq"):
            raise ValueError("not an anchor")
        return cls(**data)


@dataclass(frozen=True)
class Signer:
    """The private key that signs anchors, and its public key's id."""

    key: Ed25519PrivateKey
    key_id: str
    path: Path

    @classmethod
    def load(cls, path: Path) -> Signer:
        key = _read_private(path)
        return cls(key, key_id(key.public_key()), path)

    def sign(
        self,
        incident_id: str,
        seq: int,
        entry_hash: str,
        first_entry_hash: str,
        run_id: str,
        reason: str,
        signed_at: str,
    ) -> SignedAnchor:
        unsigned = SignedAnchor(
            incident_id=incident_id,
            seq=seq,
            entry_hash=entry_hash,
            first_entry_hash=first_entry_hash,
            run_id=run_id,
            reason=reason,
            signed_at=signed_at,
            key_id=self.key_id,
            signature="",
        )
        signature = base64.b64encode(self.key.sign(unsigned.payload())).decode("ascii")
        return SignedAnchor(**{**unsigned.as_dict(), "signature": signature})


@dataclass
class AnchorFile:
    """One incident's anchors file as read: the anchors with their line numbers, the lines that
    are not anchors, and whether it ends in a partial line."""

    path: Path
    anchors: list[tuple[int, SignedAnchor]] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)
    cut_short: int | None = None


class AnchorLog:
    """The folder of anchors files, one append-only JSON-lines file per incident."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, incident_id: str) -> Path:
        if not FILE_NAME.match(incident_id) or ".." in incident_id:
            raise AnchorError(
                f"{incident_id!r}: not an incident id an anchors file can be named by"
            )
        return self.folder / f"{incident_id}.jsonl"

    def publish(self, anchor: SignedAnchor) -> Path:
        """Append one anchor as one line, in one write, flushed to disk before returning."""
        path = self.path(anchor.incident_id)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, anchor.line())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AnchorError(f"{path}: cannot publish the anchor ({exc.strerror})") from None
        return path

    def read(self, incident_id: str) -> AnchorFile:
        path = self.path(incident_id)
        found = AnchorFile(path)
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return found
        lines = text.split("\n")
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            last = number == len(lines)  # no newline after it: a write cut short
            try:
                found.anchors.append((number, SignedAnchor.from_line(line)))
            except (ValueError, TypeError):
                if last:
                    found.cut_short = number
                else:
                    found.unreadable.append(number)
        return found

    def incidents_of_run(self, run_id: str) -> set[str]:
        """The incidents whose anchors file holds an anchor of `run_id` (a run folder whose
        plan.json is gone still finds its incident this way)."""
        needle = f'"run_id":{json.dumps(run_id)}'
        if not self.folder.is_dir():
            return set()
        return {
            path.stem
            for path in self.folder.glob("*.jsonl")
            if needle in path.read_text(encoding="utf-8", errors="replace")
        }


# -- signing during a run -------------------------------------------------------------------


class Anchoring:
    """What a run signs with and publishes to. A key problem stops the run before anything is
    written; the home's default key is created on the first anchor, not before."""

    def __init__(
        self,
        log: AnchorLog,
        signer: Signer | None,
        create_at: Path | None,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self.log = log
        self._signer = signer
        self._create_at = create_at
        self._signed: dict[str, int] = {}
        self.last: SignedAnchor | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, run_folder: Path | None = None, clock: Clock | None = None
    ) -> Anchoring:
        """The configured key (BREACHBOOK_SIGNING_KEY), else the home's default key, which is
        created once when first needed. Refuses a key or anchors folder in a run folder.

        `signed_at` is read from `clock`, by default the wall clock, not the run's (a
        simulated clock must not date a signature, nor be advanced by one)."""
        folder = anchors_dir(settings)
        refuse_inside_run_folder(folder, "the anchors folder (BREACHBOOK_ANCHORS_DIR)", run_folder)
        path = settings.signing_key or default_key_path(settings)
        refuse_inside_run_folder(path, "the signing key (BREACHBOOK_SIGNING_KEY)", run_folder)
        if settings.signing_key is None and not path.exists():
            return cls(AnchorLog(folder), None, path, clock)
        return cls(AnchorLog(folder), Signer.load(path), None, clock)

    def refuse_inside(self, run_folder: Path) -> None:
        """Check again against the folder the run actually claimed."""
        refuse_inside_run_folder(self.log.folder, "the anchors folder", run_folder)
        path = self._signer.path if self._signer else self._create_at
        assert path is not None
        refuse_inside_run_folder(path, "the signing key", run_folder)

    def _key(self) -> Signer:
        if self._signer is None:
            assert self._create_at is not None
            with contextlib.suppress(AnchorError):  # another run made it first: use that one
                generate_key(self._create_at)
            self._signer = Signer.load(self._create_at)
        return self._signer

    def checkpoint(
        self, journal: RunJournal, reason: str, again: bool = False
    ) -> SignedAnchor | None:
        """Sign the incident's head now and publish it. Call it after a step ends and at the
        end of a run. None when the chain is empty, or when this run signed the same head
        already, unless `again` (the end of a run is always marked)."""
        return self.sign_head(journal.ledger, journal.incident_id, journal.run_id, reason, again)

    def sign_head(
        self, ledger: Ledger, incident_id: str, run_id: str, reason: str, again: bool = False
    ) -> SignedAnchor | None:
        seq, head = ledger.head(incident_id)
        if seq == 0 or (self._signed.get(incident_id) == seq and not again):
            return None
        first = ledger.entry_hash(incident_id, 1) or GENESIS
        signed_at = self._clock.now().astimezone(UTC).isoformat(timespec="microseconds")
        anchor = self._key().sign(incident_id, seq, head, first, run_id, reason, signed_at)
        self.log.publish(anchor)
        self._signed[incident_id] = seq
        self.last = anchor
        return anchor


def anchor_artifact(anchor: SignedAnchor, published_to: Path | None = None) -> dict[str, Any]:
    """The anchor as a small dict for a Prefect artifact: ids and hashes, no personal data."""
    shown: dict[str, Any] = {
        "incident_id": anchor.incident_id,
        "seq": anchor.seq,
        "entry_hash": anchor.entry_hash,
        "signed_at": anchor.signed_at,
        "key_id": anchor.key_id,
        "signature": anchor.signature,
        "run_id": anchor.run_id,
        "reason": anchor.reason,
    }
    if published_to is not None:
        shown["anchors_file"] = str(published_to)
    return shown


def last_anchor_of_run(settings: Settings, incident_id: str, run_id: str) -> SignedAnchor | None:
    """The latest anchor a run published (for the flow's `breachbook-anchor` artifact)."""
    found = AnchorLog(anchors_dir(settings)).read(incident_id)
    mine = [anchor for _, anchor in found.anchors if anchor.run_id == run_id]
    return mine[-1] if mine else None


# -- verifying -------------------------------------------------------------------------------


class Proof(IntEnum):
    """What `audit verify` found, as its exit code (2 stays the CLI's bad input)."""

    INTACT = 0
    """Every chain recomputes and every entry is covered by a valid signed anchor."""
    TAMPERED = 1
    """A chain breaks, or an anchor's signature fails, or an anchored entry is gone or changed."""
    UNPROVEN = 3
    """Nothing contradicts the chain, but some entries are not covered by a valid anchor."""


@dataclass
class IncidentProof:
    incident_id: str
    entries: int
    head_hash: str
    tampered: list[str] = field(default_factory=list)
    unproven: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    anchored: SignedAnchor | None = None
    """The anchor of the latest entry that checked out."""

    @property
    def proof(self) -> Proof:
        if self.tampered:
            return Proof.TAMPERED
        return Proof.UNPROVEN if self.unproven else Proof.INTACT


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _anchors_of_this_chain(
    chain: ChainSummary,
    found: AnchorFile,
    expected_runs: frozenset[str],
    verdict: IncidentProof,
) -> list[tuple[int, SignedAnchor]]:
    """The anchors that speak for this chain: of its first entry, or of a run that wrote it
    (or that the run folder names). Others are of other ledgers of the same incident (each
    drill has its own)."""
    relevant: list[tuple[int, SignedAnchor]] = []
    others = 0
    for number, anchor in found.anchors:
        if anchor.incident_id != chain.incident_id:
            verdict.tampered.append(
                f"{found.path} line {number}: an anchor of incident {anchor.incident_id}, "
                f"not of {chain.incident_id}"
            )
        elif anchor.first_entry_hash == chain.first_hash or anchor.run_id in (
            chain.run_ids | expected_runs
        ):
            relevant.append((number, anchor))
        else:
            others += 1
    if others:
        verdict.notes.append(
            f"{found.path} holds {others} anchor(s) of other ledgers of this incident "
            "(other drills of it), not checked against this one"
        )
    return relevant


def _contradiction(
    chain: ChainSummary, anchor: SignedAnchor, key: VerifyKey, where: str
) -> str | None:
    """What is wrong between a trusted key's anchor and the chain, or None if it checks out."""
    if not anchor.signed_by(key):
        return (
            f"the anchor of entry {anchor.seq} ({where}): signature does not verify under "
            f"key {key.key_id}: edited or forged"
        )
    if anchor.first_entry_hash != chain.first_hash:
        return (
            f"entry 1 differs from the anchor signed at {anchor.signed_at} ({where}): "
            "the chain was rewritten from its start"
        )
    at = chain.hashes.get(anchor.seq)
    if at is None:
        return (
            f"entry {anchor.seq}, anchored at {anchor.signed_at} ({where}), is missing: "
            "entries were cut"
        )
    if at != anchor.entry_hash:
        return (
            f"entry {anchor.seq} differs from its anchor signed at {anchor.signed_at} "
            f"({where}): the chain was rewritten"
        )
    return None


def check_incident(
    chain: ChainSummary,
    problems: Iterable[ChainProblem],
    found: AnchorFile,
    key: VerifyKey | None,
    expected_runs: frozenset[str] = frozenset(),
    plan_head: Anchor | None = None,
) -> IncidentProof:
    """One incident's chain against its anchors file, under the trusted public key."""
    verdict = IncidentProof(chain.incident_id, chain.last_seq, chain.last_hash)
    verdict.tampered += [f"entry {p.seq}: {p.problem}" for p in problems]
    if plan_head is not None and chain.hashes.get(plan_head.seq) != plan_head.entry_hash:
        verdict.tampered.append(
            f"plan.json's head, entry {plan_head.seq}, is missing or differs from the chain"
        )
    verdict.tampered += [
        f"{found.path} line {n}: not an anchor (edited or corrupted)" for n in found.unreadable
    ]
    if found.cut_short is not None:
        verdict.unproven.append(
            f"{found.path} line {found.cut_short}: a partial line (a write cut short, or the file truncated)"
        )
    relevant = _anchors_of_this_chain(chain, found, expected_runs, verdict)
    if key is not None:
        # Another ledger's anchors prove nothing here, but a forged one is still a forgery.
        mine = {number for number, _ in relevant}
        verdict.tampered += [
            f"the anchor of entry {anchor.seq} ({found.path} line {number}), of another "
            f"ledger of this incident: signature does not verify under key {key.key_id}: "
            "edited or forged"
            for number, anchor in found.anchors
            if number not in mine
            and anchor.incident_id == chain.incident_id
            and anchor.key_id == key.key_id
            and not anchor.signed_by(key)
        ]
    if key is None:
        if relevant:
            verdict.unproven.append(
                f"no public key to check {len(relevant)} anchor(s) with (set "
                "BREACHBOOK_VERIFY_KEY or pass --key): integrity unproven"
            )
        else:
            verdict.unproven.append("no anchor: integrity unproven")
        return verdict
    foreign: dict[str, int] = {}
    proven = 0
    for number, anchor in relevant:
        if anchor.key_id != key.key_id:
            foreign[anchor.key_id] = foreign.get(anchor.key_id, 0) + 1
            continue
        contradiction = _contradiction(chain, anchor, key, f"{found.path} line {number}")
        if contradiction is not None:
            verdict.tampered.append(contradiction)
        elif anchor.seq >= proven:
            proven = anchor.seq
            verdict.anchored = anchor
    signed_by_others = ", ".join(f"{n} by key {k}" for k, n in sorted(foreign.items()))
    if verdict.anchored is None:
        if foreign:
            verdict.unproven.append(
                f"anchors signed {signed_by_others}, not by the verifying key {key.key_id}: "
                "integrity unproven"
            )
        elif not relevant:
            verdict.unproven.append("no anchor: integrity unproven")
        elif not verdict.tampered:
            verdict.unproven.append("no anchor checked out: integrity unproven")
        return verdict
    if foreign:
        verdict.notes.append(f"anchors signed {signed_by_others} were not checked")
    if proven < chain.last_seq:
        verdict.unproven.append(
            f"{_entries(chain.last_seq - proven)} after the last anchor (unanchored): "
            f"entries {proven + 1}..{chain.last_seq}"
        )
    return verdict


def verify_ledger(
    ledger: Ledger,
    log: AnchorLog,
    key: VerifyKey | None,
    only: set[str] | None = None,
    include: frozenset[str] = frozenset(),
    expected_runs: frozenset[str] = frozenset(),
    plan_head: Anchor | None = None,
) -> list[IncidentProof]:
    """Recompute the chains (every incident's, or `only` those) in one pass and check each
    against its published anchors. Incidents in `include` are checked even without entries:
    their anchors prove entries that are gone."""
    files: dict[str, AnchorFile] = {}
    bad_names: set[str] = set()

    def anchors_of(incident_id: str) -> AnchorFile:
        if incident_id not in files:
            try:
                files[incident_id] = log.read(incident_id)
            except AnchorError:
                bad_names.add(incident_id)
                files[incident_id] = AnchorFile(log.folder / "(none)")
        return files[incident_id]

    def watch(incident_id: str) -> set[int]:
        seqs = {anchor.seq for _, anchor in anchors_of(incident_id).anchors}
        if plan_head is not None and plan_head.incident_id == incident_id:
            seqs.add(plan_head.seq)
        return seqs

    one = next(iter(only)) if only is not None and len(only) == 1 else None
    problems, chains = ledger.walk(one, watch)
    names = set(chains) | {p.incident_id for p in problems}
    if only is not None:
        names &= only
    names |= include
    verdicts = []
    for name in sorted(names):
        chain = chains.get(name) or ChainSummary(name)
        verdict = check_incident(
            chain,
            [p for p in problems if p.incident_id == name],
            anchors_of(name),
            key,
            expected_runs,
            plan_head if plan_head is not None and plan_head.incident_id == name else None,
        )
        if name in bad_names:
            verdict.tampered.append(f"{name!r} is not an incident id: no anchors file is named so")
        verdicts.append(verdict)
    return verdicts


@dataclass(frozen=True)
class RunFolderTarget:
    """What `audit verify --run DIR` checks: the ledger, the incidents, the runs expected in
    it, plan.json's head if there is one, and notes on how it found them."""

    ledger_url: str
    only: set[str] | None
    """The incidents to check in a shared (LIVE) ledger; None: every one in the ledger."""
    include: frozenset[str]
    """Incidents checked even if the ledger has no entry of them (plan.json's, the run's)."""
    expected_runs: frozenset[str]
    plan_head: Anchor | None
    notes: list[str]
    anchored: frozenset[str] = frozenset()
    """Incidents the folder's run published anchors of: its ledger existed."""


def _read_plan(path: Path, notes: list[str]) -> tuple[Anchor | None, str | None, str, bool]:
    """plan.json's head, ledger URL and run id, and whether it is a drill's, if it is there
    and readable."""
    if not path.is_file():
        notes.append(f"{path}: missing (the run did not finish, or it was deleted)")
        return None, None, "", False
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        ledger = plan["ledger"]
        head = Anchor(str(plan["incident_id"]), int(ledger["head_seq"]), str(ledger["head_sha256"]))
        return head, str(ledger["url"]), str(plan["run_id"]), plan.get("mode") == "drill"
    except (KeyError, TypeError, ValueError, AttributeError):
        notes.append(f"{path}: not a plan breachbook wrote; ignored")
        return None, None, "", False


def run_folder_target(run: Path, settings: Settings, ledger_url: str | None) -> RunFolderTarget:
    """Read a run folder, DRILL or LIVE: its own audit.sqlite if it has one, else the ledger
    plan.json names (the LIVE ledger), else the configured LIVE ledger. plan.json and the
    owner mark are only hints: whoever edits the folder edits them; the anchors decide."""
    from sqlalchemy.engine import make_url

    if not run.is_dir():
        raise AnchorError(f"{run}: no such run folder")
    notes: list[str] = []
    runs: set[str] = set()
    mark = run / OWNER_MARK
    if mark.is_file():
        runs.add(mark.read_text(encoding="utf-8").split("\n", 1)[0].strip())
    plan_path = run / "plan.json"
    named: set[str] = set()
    head, plan_url, plan_run, drill = _read_plan(plan_path, notes)
    if head is not None:
        named.add(head.incident_id)
        runs.add(plan_run)
    runs.discard("")
    if mark.is_file() and " drill run " in mark.read_text(encoding="utf-8"):
        drill = True
    log = AnchorLog(anchors_dir(settings))
    anchored = frozenset(set().union(*(log.incidents_of_run(r) for r in runs)))
    named |= anchored
    own = run / "audit.sqlite"
    if ledger_url is None and (own.is_file() or drill):
        # A DRILL folder's own ledger, never another its plan.json names: every incident in
        # it is this run's.
        url = f"sqlite:///{own.resolve()}"
        return RunFolderTarget(url, None, frozenset(named), frozenset(runs), head, notes, anchored)
    if ledger_url is None and plan_url is not None:
        ledger_url = plan_url
        if "***" in plan_url:
            configured = settings.ledger_url.get_secret_value() if settings.ledger_url else None
            shown = (
                make_url(configured).render_as_string(hide_password=True) if configured else None
            )
            if configured is None or shown != plan_url:
                raise AnchorError(
                    f"{plan_path}: names the ledger {plan_url} without its password: set "
                    "BREACHBOOK_LEDGER_URL to it, or pass --ledger"
                )
            ledger_url = configured
    if ledger_url is None:
        if settings.ledger_url is not None:
            ledger_url = settings.ledger_url.get_secret_value()
        else:
            ledger_url = f"sqlite:///{(settings.home / 'ledger.sqlite').resolve()}"
        notes.append("no ledger named in the folder: checking the configured LIVE ledger")
    # A shared (LIVE) ledger: only this run's incident, if the folder tells which.
    return RunFolderTarget(
        ledger_url, named or None, frozenset(named), frozenset(runs), head, notes, anchored
    )


def worst(verdicts: list[IncidentProof]) -> Proof:
    """The result of a whole verify: tampered if any incident is, else unproven if any is (or
    if there was nothing to check), else intact."""
    proofs = {verdict.proof for verdict in verdicts} or {Proof.UNPROVEN}
    for proof in (Proof.TAMPERED, Proof.UNPROVEN):
        if proof in proofs:
            return proof
    return Proof.INTACT


def verdict_lines(verdict: IncidentProof) -> tuple[list[str], list[str]]:
    """What `audit verify` prints for one incident: (lines for stdout, lines for stderr)."""
    name = verdict.incident_id
    out = [f"note: incident {name}: {note}" for note in verdict.notes]
    err = [f"incident {name}, {problem}" for problem in verdict.tampered]
    err += [f"incident {name}: {reason}" for reason in verdict.unproven]
    size = f"{verdict.entries} entries, head {verdict.head_hash}"
    if verdict.proof is Proof.INTACT:
        assert verdict.anchored is not None
        out.append(
            f"ledger intact: incident {name}, {size}; anchored at entry {verdict.anchored.seq} "
            f"by key {verdict.anchored.key_id}, signed {verdict.anchored.signed_at}"
        )
    elif verdict.proof is Proof.UNPROVEN:
        out.append(f"chain unbroken but integrity unproven: incident {name}, {size}")
    return out, err


RESULT_LABELS = {
    Proof.INTACT: "intact and anchored",
    Proof.TAMPERED: "TAMPERED",
    Proof.UNPROVEN: "unproven",
}
