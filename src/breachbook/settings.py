"""Settings, from BREACHBOOK_* environment variables, and where the editable content lives."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from breachbook.ledger import AUTOMATION


def project_root() -> Path:
    """Where playbooks/, templates/, rules/ and flows/ live: BREACHBOOK_ROOT, the source
    checkout this package was installed from, or the current directory."""
    configured = os.environ.get("BREACHBOOK_ROOT")
    if configured:
        return Path(configured).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "playbooks").is_dir() and (checkout / "templates").is_dir():
        return checkout
    return Path.cwd()


class Settings(BaseSettings):
    """Connector settings, from BREACHBOOK_* environment variables. Secrets stay SecretStr."""

    model_config = SettingsConfigDict(env_prefix="BREACHBOOK_", extra="ignore")

    home: Path = Path.home() / ".breachbook"
    ledger_url: SecretStr | None = None
    customers_url: SecretStr | None = None
    outbox: Path | None = None
    evidence_dir: Path | None = None
    mail_from: str = "privacy-office@example.invalid"
    actor: str = AUTOMATION
