"""Adapters behind the ports: live, drill and simulated."""

from __future__ import annotations

import os
from pathlib import Path

from breachbook.ports import Check


def folder_writable(folder: Path) -> Check:
    """Read-only check that a folder (or its nearest existing parent) accepts new files."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        return Check.verified(f"{folder} is writable", "os.access(W_OK)")
    return Check.failed(f"{folder} is not writable", "os.access(W_OK)")
