"""Mail to an outbox folder: one .eml file per letter, the embedded default for delivery.

A letter's file is named by its key and replaced whole, so a letter resent after a crash
leaves one file, not two."""

from __future__ import annotations

import os
from pathlib import Path

from breachbook.connectors import folder_writable
from breachbook.connectors.message import message_bytes
from breachbook.ports import Check, OutgoingLetter


class OutboxMail:
    def __init__(self, folder: Path, sender: str) -> None:
        self.folder = folder
        self.sender = sender

    def describe(self) -> str:
        return f"outbox folder {self.folder}"

    def check_can_send(self) -> Check:
        return folder_writable(self.folder)

    def parallel_sends(self) -> int:
        return 1

    def send(self, letter: OutgoingLetter) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{letter.key.replace('/', '_')}.eml"
        tmp = target.with_suffix(".tmp")
        try:
            tmp.write_bytes(message_bytes(letter, self.sender))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target.name
