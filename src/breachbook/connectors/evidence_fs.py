"""Where LIVE evidence bundles are transferred on the local filesystem (the embedded default):
sealed items and manifests only, written whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath

from breachbook.connectors import folder_writable
from breachbook.errors import BreachbookError
from breachbook.ports import Check


class FilesystemEvidenceStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def describe(self) -> str:
        return f"evidence folder {self.folder}"

    def check_writable(self) -> Check:
        return folder_writable(self.folder)

    def put(
        self,
        item_id: str,
        chunks: Iterator[bytes],
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> str:
        """Write `item_id` (a relative path) whole through a temporary file, or not at all.
        A folder cannot enforce retention or hold: that is the S3 store's (README: Evidence)."""
        parts = PurePosixPath(item_id).parts
        if not parts or PurePosixPath(item_id).is_absolute() or ".." in parts:
            raise BreachbookError(f"{item_id!r}: not a path inside the evidence folder")
        target = self.folder.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return digest.hexdigest()
