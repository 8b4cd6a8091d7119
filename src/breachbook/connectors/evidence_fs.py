"""Evidence on the local filesystem, content-addressed by SHA-256 (the embedded default)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from breachbook.connectors import folder_writable
from breachbook.ports import Check


class FilesystemEvidenceStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def describe(self) -> str:
        return f"evidence folder {self.folder}"

    def check_writable(self) -> Check:
        return folder_writable(self.folder)

    def put(self, item_id: str, chunks: Iterator[bytes]) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".incoming-")
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        sha = digest.hexdigest()
        os.replace(tmp, self.folder / sha)
        return sha
