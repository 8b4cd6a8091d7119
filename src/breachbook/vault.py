"""The evidence vault: items content-addressed by the SHA-256 of their plaintext, each
encrypted at rest with AES-256-GCM in streamed chunks, under a key kept away from the data.

An item's file is `BBVAULT1` + a random 16-byte item nonce, then chunks, each
`nonce (12) | length (4, big-endian) | ciphertext+tag`. Every chunk is authenticated with
the item nonce, its index and a final flag as associated data, so a chunk edited, moved to
another place or another item, or a file cut after any chunk fails to decrypt. Memory stays
at a chunk or two whatever the size of the item.

The key is 32 random bytes: BREACHBOOK_EVIDENCE_KEY (base64), else the file
BREACHBOOK_EVIDENCE_KEY_FILE, else the home's `keys/evidence-key`, created once. It is
never accepted inside a run folder or the evidence folder it protects.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import queue
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from breachbook.anchors import refuse_inside_run_folder
from breachbook.errors import BreachbookError
from breachbook.settings import Settings

MAGIC = b"BBVAULT1"
ITEM_NONCE = 16
CHUNK = 4 * 1024 * 1024
"""Plaintext bytes per encrypted chunk."""
DEFAULT_KEY = Path("keys", "evidence-key")
ITEMS = "items"


class VaultError(BreachbookError):
    """The evidence key or an item in the vault cannot be used."""


class ItemUnreadable(VaultError):
    """An item's ciphertext does not decrypt: altered, cut, reordered, or another key."""


# -- the key ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VaultKey:
    """The AES-256 key and a short id of it (never the key: a keyed hash) for the manifest."""

    secret: bytes
    source: str

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"breachbook-evidence-key-id\0" + self.secret).hexdigest()[:16]

    @classmethod
    def from_text(cls, text: str, source: str) -> VaultKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise VaultError(f"{source}: not an evidence key (base64 of 32 random bytes)")
        return cls(raw, source)

    @classmethod
    def generate(cls, path: Path) -> VaultKey:
        """Write a new key at `path` (mode 0600) unless one is there; load what is there."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = base64.b64encode(secrets.token_bytes(32)) + b"\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-key-")
        try:
            os.chmod(tmp, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another run made it first
                os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> VaultKey:
        source = f"{path} (BREACHBOOK_EVIDENCE_KEY_FILE)"
        try:
            if os.name == "posix" and path.stat().st_mode & 0o077:
                mode = path.stat().st_mode & 0o777
                raise VaultError(
                    f"{path}: the evidence key may be read by others (mode {mode:04o}): chmod 600 it"
                )
            text = path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            raise VaultError(f"{source}: no evidence key there") from None
        except OSError as exc:
            raise VaultError(f"{source}: cannot read the evidence key ({exc.strerror})") from None
        return cls.from_text(text, source)


def vault_key(
    settings: Settings, create: bool = True, away_from: Iterable[Path] = ()
) -> VaultKey | None:
    """The evidence key: BREACHBOOK_EVIDENCE_KEY, else BREACHBOOK_EVIDENCE_KEY_FILE, else the
    home's default key (created when `create`, else None if absent). A key file inside a run
    folder, or inside any of `away_from` (the evidence it protects), is refused."""
    if settings.evidence_key is not None:
        return VaultKey.from_text(
            settings.evidence_key.get_secret_value(), "BREACHBOOK_EVIDENCE_KEY"
        )
    path = settings.evidence_key_file or settings.home / DEFAULT_KEY
    refuse_inside_run_folder(path, "the evidence key (BREACHBOOK_EVIDENCE_KEY_FILE)")
    resolved = path.expanduser().resolve()
    for folder in away_from:
        place = folder.expanduser().resolve()
        if resolved == place or place in resolved.parents:
            raise VaultError(
                f"{path}: the evidence key (BREACHBOOK_EVIDENCE_KEY_FILE) is inside the evidence "
                f"folder {place}: keep it apart from the data it protects"
            )
    if settings.evidence_key_file is None and not path.exists():
        return VaultKey.generate(path) if create else None
    return VaultKey.load(path)


# -- chunked AES-256-GCM ---------------------------------------------------------------------


def _aad(item_nonce: bytes, index: int, final: bool) -> bytes:
    return MAGIC + item_nonce + index.to_bytes(8, "big") + (b"\1" if final else b"\0")


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The same bytes in pieces of exactly `size` (the last may be shorter, or empty)."""
    buffer = bytearray()
    for chunk in chunks:
        if not buffer and len(chunk) == size:
            yield chunk
            continue
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    yield bytes(buffer)


def seal(key: VaultKey, chunks: Iterable[bytes], write: Callable[[bytes], object]) -> None:
    """Encrypt the stream of `chunks` into `write`, one authenticated chunk at a time."""
    aes = AESGCM(key.secret)
    item_nonce = secrets.token_bytes(ITEM_NONCE)
    write(MAGIC + item_nonce)
    pieces = _rechunk(chunks, CHUNK)
    current = next(pieces)
    index = 0
    for following in pieces:
        if not following and current:  # the stream ended on a chunk boundary
            break
        _seal_one(aes, item_nonce, index, current, False, write)
        current = following
        index += 1
    _seal_one(aes, item_nonce, index, current, True, write)


def _seal_one(
    aes: AESGCM,
    item_nonce: bytes,
    index: int,
    plain: bytes,
    final: bool,
    write: Callable[[bytes], object],
) -> None:
    nonce = secrets.token_bytes(12)
    sealed = aes.encrypt(nonce, plain, _aad(item_nonce, index, final))
    write(nonce + len(sealed).to_bytes(4, "big") + sealed)


def _read_exact(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    return data if data is not None else b""


def unseal(key: VaultKey, handle: BinaryIO, name: str) -> Iterator[bytes]:
    """The plaintext of one sealed item, chunk by chunk; ItemUnreadable at the first chunk
    that does not authenticate, naming it and what that means."""
    aes = AESGCM(key.secret)
    head = _read_exact(handle, len(MAGIC) + ITEM_NONCE)
    if len(head) != len(MAGIC) + ITEM_NONCE or not head.startswith(MAGIC):
        raise ItemUnreadable(f"{name}: not a breachbook vault item (header altered or missing)")
    item_nonce = head[len(MAGIC) :]
    index = 0
    frame = _read_exact(handle, 16)
    if len(frame) < 16:
        raise ItemUnreadable(f"{name}: cut short: no chunk after the header")
    while True:
        nonce, length = frame[:12], int.from_bytes(frame[12:16], "big")
        if length > CHUNK + 16:
            raise ItemUnreadable(f"{name}: chunk {index}: bad length (altered)")
        sealed = _read_exact(handle, length)
        if len(sealed) != length:
            raise ItemUnreadable(f"{name}: chunk {index}: cut short (file truncated)")
        frame = _read_exact(handle, 16)
        final = not frame
        try:
            yield aes.decrypt(nonce, sealed, _aad(item_nonce, index, final))
        except InvalidTag:
            raise ItemUnreadable(_why(aes, nonce, sealed, item_nonce, index, final, name)) from None
        if final:
            return
        if len(frame) < 16:
            raise ItemUnreadable(f"{name}: chunk {index + 1}: cut short (file truncated)")
        index += 1


def _why(
    aes: AESGCM, nonce: bytes, sealed: bytes, item_nonce: bytes, index: int, final: bool, name: str
) -> str:
    """Say why a chunk failed: found in another place (reordered), or the last chunk of a cut
    file, or simply altered / another key."""
    with contextlib.suppress(InvalidTag):
        aes.decrypt(nonce, sealed, _aad(item_nonce, index, not final))
        if final:
            return f"{name}: cut short after chunk {index} (the chunks that followed are gone)"
        return f"{name}: chunk {index} is marked final but more follows (data appended)"
    return (
        f"{name}: chunk {index} fails authentication (altered, reordered, or encrypted under "
        "another key)"
    )


class _Writer:
    """Writes sealed chunks to disk in a thread, flushing to the device every SYNC_EVERY
    bytes, so hashing and encrypting the next chunks overlap with the disk. At most QUEUED
    chunks wait: memory stays flat. The first write error is raised to the sealing side."""

    QUEUED = 3
    SYNC_EVERY = 32 * 1024 * 1024

    def __init__(self, handle: BinaryIO, write: Callable[[BinaryIO, bytes], None]) -> None:
        self._handle = handle
        self._write = write
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self.QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vault-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = 0
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain, so the sealing side never blocks on a dead writer
            try:
                self._write(self._handle, data)
                pending += len(data)
                if pending >= self.SYNC_EVERY:
                    self._handle.flush()
                    os.fdatasync(self._handle.fileno())
                    pending = 0
            except BaseException as exc:  # handed to the sealing side
                self._error = exc

    def put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def close(self) -> None:
        """Wait for every queued write; raise the first write error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


# -- the store -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    sha256: str
    size: int
    blob: str | None
    """Path of the sealed item relative to the vault, or None when contents are left out."""


class Vault:
    """A folder of sealed items named by their plaintext's SHA-256 (`items/<sha256>`).

    With no key, contents are left out: items are hashed and counted, nothing is kept."""

    def __init__(self, folder: Path, key: VaultKey | None) -> None:
        self.folder = folder
        self.key = key

    def path(self, sha256: str) -> Path:
        return self.folder / ITEMS / sha256

    def _write(self, handle: BinaryIO, data: bytes) -> None:
        """One write to disk (a test's store overrides it to simulate a full disk)."""
        handle.write(data)

    def put(self, chunks: Iterable[bytes]) -> Stored:
        """Hash and (with a key) seal one stream. A failure mid-stream leaves nothing behind."""
        digest = hashlib.sha256()
        size = 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        if self.key is None:
            for _ in counted():
                pass
            return Stored(digest.hexdigest(), size, None)
        items = self.folder / ITEMS
        items.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=items, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                writer = _Writer(handle, self._write)
                try:
                    seal(self.key, counted(), writer.put)
                finally:
                    writer.close()
                handle.flush()
                os.fsync(handle.fileno())
            sha = digest.hexdigest()
            os.chmod(tmp, 0o400)
            os.replace(tmp, items / sha)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return Stored(sha, size, f"{ITEMS}/{sha}")

    def open(self, sha256: str) -> Iterator[bytes]:
        """The plaintext of an item, checked chunk by chunk (and its hash at the end)."""
        if self.key is None:
            raise VaultError(
                "no evidence key: set BREACHBOOK_EVIDENCE_KEY or BREACHBOOK_EVIDENCE_KEY_FILE"
            )
        name = f"{ITEMS}/{sha256}"
        digest = hashlib.sha256()
        with self.path(sha256).open("rb") as handle:
            for chunk in unseal(self.key, handle, name):
                digest.update(chunk)
                yield chunk
        if digest.hexdigest() != sha256:
            raise ItemUnreadable(
                f"{name}: decrypts, but to other content (sha256 {digest.hexdigest()[:12]}...)"
            )

    def stored(self) -> set[str]:
        """The names of the sealed items present."""
        items = self.folder / ITEMS
        if not items.is_dir():
            return set()
        return {p.name for p in items.iterdir() if not p.name.startswith(".incoming-")}

    def leftovers(self) -> list[str]:
        items = self.folder / ITEMS
        if not items.is_dir():
            return []
        return sorted(p.name for p in items.iterdir() if p.name.startswith(".incoming-"))
