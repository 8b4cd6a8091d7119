"""`breachbook obligations`: who must be told what, by when, read from the customer database."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.demo import DemoWorld
from tests.conftest import customers_named_in


def test_obligations_lists_who_is_owed_what_and_the_places_without_a_rule(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    before = small_world.customers_db.read_bytes()
    result = CliRunner().invoke(
        app,
        ["obligations", "--incident", str(small_world.incident_file)],
        env={
            "BREACHBOOK_HOME": str(tmp_path / "home"),
            "BREACHBOOK_CUSTOMERS_URL": f"sqlite:///{small_world.customers_db}",
            "COLUMNS": "200",
        },
    )
    assert result.exit_code == 0, result.output
    for rule_id in ("gdpr-a33", "gdpr-a34", "cn-pipl-57", "us-ca", "us-tx", "us-ny"):
        assert rule_id in result.output
    for rule_id in ("us-wa", "us-il"):  # the demo's last places without a rule
        assert rule_id in result.output
    # 400 customers: not more than 500 Californians, so the AG is not owed, and the output says why
    assert result.output.count("us-ca-ag") == 1 and "not owed: us-ca-ag: " in result.output
    assert "below its threshold" in result.output.split("not owed: us-ca-ag: ")[1].split("\n")[0]
    assert "no rule for" not in result.output
    assert customers_named_in(result.output, small_world.customers_db) == []
    assert small_world.customers_db.read_bytes() == before
    assert not (tmp_path / "home").exists()


def test_obligations_needs_an_incident() -> None:
    result = CliRunner().invoke(app, ["obligations"])
    assert result.exit_code == 2
    assert "give --incident FILE, or --demo" in result.output
