"""`breachbook serve` as people use it. The Prefect UI in a real browser, as a new user meets it: `breachbook serve` (started by the
`serving` fixture), headless Chromium (Debian's, driven by Playwright), the drill deployment
found from the deployments list, its form filled and submitted, the run followed to the end,
and its plan, obligations and report shown on the run's page, with no customer data on it.
Screenshots of the form, the finished run and the plan go to tests/output/ui/ for review.
`breachbook drill` started beside it runs on it. And one LIVE response per incident: a LIVE run of an incident that another holds is refused
before it acts."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright
from prefect.settings import PREFECT_API_URL, temporary_settings

from breachbook.demo import DemoWorld
from breachbook.live_lock import limit_name, one_live_response
from tests.conftest import ROOT, customers_named_in
from tests.e2e.test_live_lock import SETTLE
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
    # The form is headed by its title, and an empty date is an empty date picker.
    headers = page.locator(".schema-form-property__label")
    expect(headers.filter(has_text=re.compile(r"^Drill$"))).to_have_count(1)
    expect(headers.filter(has_text=re.compile(r"^Started at \(Optional\)$"))).to_have_count(1)
    expect(headers.filter(has_text=re.compile(r"^drill"))).to_have_count(0)
    expect(page.get_by_text('Property is type "None"')).to_have_count(0)
    _pick(page, "(fill in the incident below)", "antiques-leak")
    expect(page.locator(".p-select", has_text="antiques-leak")).to_have_count(1)
    page.screenshot(path=SCREENSHOTS / "drill-form.png")

    before = {run["id"] for run in serving.deployment_runs("drill")}
    page.get_by_role("button", name="Submit", exact=True).click()
    # The UI's "View run" toast can be gone before a loaded machine draws the next page: the
    # run is found from the API and its page opened by address.
    deadline = time.monotonic() + 60
    while not (new := [r for r in serving.deployment_runs("drill") if r["id"] not in before]):
        assert time.monotonic() < deadline, "submitting the form created no run"
        time.sleep(0.5)
    (created,) = new
    flow_run_id = created["id"]
    page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
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


def _settled(serving: Serving, flow_run_id: str, seconds: float = 180) -> dict[str, Any]:
    """The run once it ended or was suspended waiting for a decision."""
    deadline = time.monotonic() + seconds
    while True:
        run: dict[str, Any] = httpx.get(f"{serving.api}/flow_runs/{flow_run_id}").json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "PAUSED"):
            return run
        assert time.monotonic() < deadline, (run["state"], serving.log.read_text()[-3000:])
        time.sleep(0.5)


def _start_live(serving: Serving, incident_id: str) -> str:
    deployment = httpx.get(f"{serving.api}/deployments/name/breachbook-response/live-response")
    form = {"incident": "antiques-leak", "confirm_incident_id": incident_id}
    created = httpx.post(
        f"{serving.api}/deployments/{deployment.json()['id']}/create_flow_run",
        json={"parameters": {"response": form}},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_a_second_live_response_of_an_incident_is_refused_while_the_first_holds_it(
    serving: Serving, small_world: DemoWorld
) -> None:
    incident_id = yaml.safe_load(small_world.incident_file.read_text())["id"]
    with temporary_settings(updates={PREFECT_API_URL: serving.api}):
        # a LIVE response of the incident is running
        with one_live_response(incident_id, wait_seconds=SETTLE):
            refused = _settled(serving, _start_live(serving, incident_id))
        slot = httpx.get(f"{serving.api}/v2/concurrency_limits/{limit_name(incident_id)}")
    assert refused["state"]["type"] == "FAILED"
    assert "already has a LIVE response running" in refused["state"]["message"]
    assert not (serving.home / "runs" / incident_id / refused["id"].replace("-", "")[:12]).exists()
    assert slot.json()["active_slots"] == 0  # given back when the first ended

    allowed = _settled(serving, _start_live(serving, incident_id))
    assert "already has a LIVE response" not in (allowed["state"]["message"] or "")
    assert (serving.home / "runs" / incident_id / allowed["id"].replace("-", "")[:12]).exists()
    slot = httpx.get(f"{serving.api}/v2/concurrency_limits/{limit_name(incident_id)}")
    # a run that ended or was suspended gives the slot back; one paused in place for a
    # person's decision is still the incident's response and keeps it
    held = 1 if allowed["state"]["type"] == "PAUSED" else 0
    assert slot.json()["active_slots"] == held, allowed["state"]


def test_breachbook_drill_runs_on_the_running_serve_when_prefect_api_url_names_it(
    serving: Serving,
) -> None:
    before = {run["id"] for run in serving.deployment_runs("drill")}
    env = serving.env | {"PREFECT_API_URL": serving.api}
    incident = serving.home / "incidents" / "antiques-leak.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "breachbook.cli", "drill", "--incident", str(incident)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "on breachbook serve" in done.stdout, done.stdout + done.stderr
    # this serve names no approvers (BREACHBOOK_APPROVERS), which the drill reports as FAILED
    # for each gated step; beside those, only the places no rule covers are FAILED
    failed = [line for line in done.stdout.splitlines() if "FAILED" in line and "│" not in line]
    expected = ("no approvers are named for role", "no-rule:")
    assert all(any(why in line for why in expected) for line in failed), failed
    assert done.returncode in (0, 1), done.stdout + done.stderr
    (new,) = [run for run in serving.deployment_runs("drill") if run["id"] not in before]
    assert new["parameters"]["drill"]["incident"] == "antiques-leak"
    folder = serving.home / "runs"
    (report,) = folder.glob(f"*/{new['id'].replace('-', '')[:12]}/report.md")
    assert str(report) in done.stdout.replace("\n", "")
