"""Evidence collectors that read local sources as streams: log files and folders (a glob with
size limits), the ledger's audit entries of the incident and its war-room transcript. Memory
stays at one chunk.

A file that shrinks or disappears while it is read fails with a clear error: the vault then
keeps nothing of it and the manifest marks the item failed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from breachbook.errors import BreachbookError
from breachbook.journal import INCIDENT_SCOPE
from breachbook.ledger import Ledger
from breachbook.warroom import DELIVERY, QUEUE

READ = 1024 * 1024


class SourceError(BreachbookError):
    """A source could not be read whole."""


@dataclass(frozen=True)
class FileItem:
    path: Path
    size: int
    refused: str | None = None
    """Why the file is not collected (over a size limit), or None."""


def find_files(
    root: Path, pattern: str, max_file_bytes: int, max_total_bytes: int
) -> list[FileItem]:
    """The regular files under `root` matching `pattern`, in name order, each under the
    per-file limit and all together under the total (the rest are listed, refused)."""
    if not root.is_dir():
        raise SourceError(f"{root}: no such folder to collect from")
    found: list[FileItem] = []
    total = 0
    for path in sorted(root.glob(pattern)):
        if not path.is_file() or path.is_symlink():
            continue
        size = path.stat().st_size
        if size > max_file_bytes:
            found.append(
                FileItem(path, size, f"{size} bytes, over max_file_bytes {max_file_bytes}")
            )
        elif total + size > max_total_bytes:
            found.append(FileItem(path, size, f"over max_total_bytes {max_total_bytes} for {root}"))
        else:
            total += size
            found.append(FileItem(path, size))
    return found


def read_file(path: Path) -> Iterator[bytes]:
    """The bytes of a file, streamed; SourceError if it vanishes or shrinks mid-read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"{path}: cannot open ({exc.strerror})") from None
    try:
        expected = os.fstat(fd).st_size
        seen = 0
        while True:
            try:
                chunk = os.read(fd, READ)
            except OSError as exc:
                raise SourceError(
                    f"{path}: read failed after {seen} bytes ({exc.strerror})"
                ) from None
            if not chunk:
                break
            seen += len(chunk)
            yield chunk
        if seen < expected or not path.exists():
            raise SourceError(
                f"{path}: vanished or shrank mid-read ({seen} of {expected} bytes): not collected"
            )
    finally:
        os.close(fd)


def ledger_entries(ledger: Ledger, incident_id: str) -> Iterator[bytes]:
    """The incident's audit entries as JSON lines, in chain order."""
    for row in ledger.entries(incident_id):
        data = {column.name: getattr(row, column.name) for column in row.__table__.columns}
        yield json.dumps(data, sort_keys=True, default=str).encode() + b"\n"


def war_room_transcript(ledger: Ledger, incident_id: str) -> Iterator[bytes] | None:
    """Every war-room message of the incident as JSON lines, in the order it was queued,
    with whether it reached the channel (ids and counts only: messages never hold customer
    data); None when the incident has no war room."""
    queue = ledger.records_of(incident_id, INCIDENT_SCOPE, QUEUE)
    if not queue:
        return None
    delivered = ledger.item_statuses(incident_id, DELIVERY)

    def lines() -> Iterator[bytes]:
        for key in sorted(queue):
            status = delivered.get(key)
            line = {"key": key, "delivery": status.value if status else "waiting", **queue[key]}
            yield json.dumps(line, sort_keys=True, ensure_ascii=False).encode() + b"\n"

    return lines()
