"""The Prefect UI in a real browser, as a new user meets it: `breachbook serve` (started by the
`serving` fixture), headless Chromium (Debian's, driven by Playwright), the drill deployment
found from the deployments list, its form filled and submitted, the run followed to the end,
and its plan, obligations and report shown on the run's page, with no customer data on it.
Screenshots of the form, the finished run and the plan go to tests/output/ui/ for review."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from breachbook.demo import DemoWorld
from tests.conftest import ROOT, customers_named_in
from tests.e2e.test_serve import Serving, serving

__all__ = ["serving"]  # the fixture: `breachbook serve` with its own Prefect server

pytestmark = [pytest.mark.prefect_server, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "tests" / "output" / "ui"
LAPTOP = ViewportSize(width=1440, height=900)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.is_file(), "install Debian's chromium (.ci/run does)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


def _pick(page: Page, current: str, choice: str) -> None:
    """Choose in one of the form's lists; it opens from the keyboard, as for a person."""
    page.locator(".p-select", has_text=current).last.locator("button").focus()
    page.keyboard.press("ArrowDown")
    page.get_by_role("option", name=choice, exact=True).click()


def test_a_drill_started_from_the_ui_form_shows_its_plan_obligations_and_report(
    serving: Serving, browser: Browser, small_world: DemoWorld
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ui = serving.api.removesuffix("/api")
    page = browser.new_page(viewport=LAPTOP)
    page.set_default_timeout(60_000)

    page.goto(f"{ui}/deployments")
    page.get_by_role("link", name="drill", exact=True).first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    expect(page.get_by_text("Incident (Optional)", exact=True)).to_be_visible()
    _pick(page, "(fill in the incident below)", "antiques-leak")
    expect(page.locator(".p-select", has_text="antiques-leak")).to_have_count(1)
    page.screenshot(path=SCREENSHOTS / "drill-form.png")

    page.get_by_role("button", name="Submit", exact=True).click()
    page.get_by_role("button", name="View run").last.click()
    page.wait_for_url(re.compile(r".*/runs/flow-run/[0-9a-f-]{36}"))
    flow_run_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    run = serving.wait_done(flow_run_id, seconds=180)
    assert run["state"]["type"] == "COMPLETED", serving.log.read_text()[-3000:]
    assert run["parameters"]["drill"]["incident"] == "antiques-leak"  # the form's choice

    page.reload()
    expect(page.locator(".state-badge", has_text="Completed").first).to_be_visible()
    page.get_by_text("Artifacts", exact=True).click()
    short = flow_run_id.replace("-", "")[:12]
    for kind in ("plan", "obligations", "report"):
        expect(page.get_by_text(f"breachbook-{kind}-{short}", exact=True)).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "drill-run.png")
    shown = page.locator("body").inner_text()

    page.get_by_text(f"breachbook-plan-{short}", exact=True).click()
    verdict = page.get_by_role("columnheader", name="verdict", exact=True)
    expect(verdict).to_be_visible()
    box = verdict.bounding_box()
    assert box is not None and box["x"] + box["width"] <= LAPTOP["width"]  # not cut off
    expect(page.get_by_text("VERIFIED", exact=True).first).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "drill-plan.png")
    shown += page.locator("body").inner_text()
    assert customers_named_in(shown, small_world.customers_db) == []
