"""Mail to an outbox folder: one .eml file per letter, the embedded default for delivery."""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path

from breachbook.connectors import folder_writable
from breachbook.ports import Check, OutgoingLetter


class OutboxMail:
    def __init__(self, folder: Path, sender: str) -> None:
        self.folder = folder
        self.sender = sender

    def describe(self) -> str:
        return f"outbox folder {self.folder}"

    def check_can_send(self) -> Check:
        return folder_writable(self.folder)

    def send(self, letter: OutgoingLetter) -> str:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = letter.recipient
        message["Subject"] = letter.subject
        message["X-Breachbook-Key"] = letter.key
        message.set_content(letter.body)
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{letter.key.replace('/', '_')}.eml"
        tmp = target.with_suffix(".tmp")
        try:
            tmp.write_bytes(bytes(message))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target.name
