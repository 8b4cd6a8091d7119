"""The run's output folder: every document a run produces, and nothing outside it.

Files are written atomically. A marker says the run is incomplete until the report is
written last, so a crashed run never leaves output that looks complete. A folder belongs to
one run: it is never deleted or taken over by another run; only the same run, resumed,
writes into it again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from breachbook.errors import OutputFolderError

INCOMPLETE = "RUN-INCOMPLETE.txt"
OWNER_MARK = ".breachbook-run"


class Workspace:
    def __init__(self, root: Path, banner: str | None) -> None:
        self.root = root
        self.banner = banner
        self._folders: set[Path] = set()

    @classmethod
    def claim(cls, root: Path, banner: str | None, run_id: str, label: str) -> Workspace:
        """Take an empty or new folder for this run, or reopen the folder of this same run."""
        root = root.resolve()
        check_claimable(root, run_id)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputFolderError(
                f"{root}: cannot create output folder ({exc.strerror})"
            ) from None
        space = cls(root, banner)
        space.write_raw(OWNER_MARK, f"{run_id}\n{label}\n")
        space.write_raw(INCOMPLETE, "This run has not finished; its outputs are partial.\n")
        return space

    def path(self, relative: str) -> Path:
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise OutputFolderError(f"{relative!r}: not a path inside the output folder")
        return self.root.joinpath(*parts)

    def write_raw(self, relative: str, text: str, atomic: bool = True) -> Path:
        """Write a file; atomic writes go through a temporary file and a rename.

        Bulk documents (letters) are written directly: the run's incomplete marker, not
        each file, is what tells a crashed run from a finished one.
        """
        target = self.path(relative)
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        if not atomic:
            target.write_text(text, encoding="utf-8")
            return target
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
        return target

    def write_document(self, relative: str, text: str, atomic: bool = True) -> Path:
        """A human document: carries the run's banner (e.g. DRILL) at the top."""
        return self.write_raw(relative, f"{self.banner}\n\n{text}" if self.banner else text, atomic)

    def write_json(self, relative: str, data: Any) -> Path:
        return self.write_raw(
            relative, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
        )

    def mark_failed(self, message: str) -> None:
        self.write_raw(INCOMPLETE, f"This run stopped before it finished: {message}\n")

    def mark_complete(self) -> None:
        self.path(INCOMPLETE).unlink(missing_ok=True)


def _owner(root: Path) -> str | None:
    """The run id in a folder's owner mark, or None if breachbook did not write the folder."""
    mark = root / OWNER_MARK
    if not mark.is_file():
        return None
    first = mark.read_text(encoding="utf-8").split("\n", 1)[0].strip()
    return first or "(unknown)"


def check_claimable(root: Path, run_id: str | None = None) -> None:
    """Refuse a folder that holds something else, or another run's documents (kept, never
    replaced); `run_id` names the run that may reopen its own folder."""
    root = root.resolve()
    if not root.exists():
        return
    if not root.is_dir():
        raise OutputFolderError(f"{root}: exists and is not a folder")
    if not any(root.iterdir()):
        return
    owner = _owner(root)
    if owner is None:
        raise OutputFolderError(
            f"{root}: folder is not empty and was not written by breachbook; choose another --out"
        )
    if owner != run_id:
        raise OutputFolderError(
            f"{root}: holds the documents of run {owner}, which are kept; choose another --out"
        )
