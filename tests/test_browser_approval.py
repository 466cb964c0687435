"""The approval as the approver sees it: the Prefect UI, in Debian's Chromium driven by playwright.

A PostgreSQL-backed `prefect server start` with its UI and API auth, `distill deploy`, the manual
deployment triggered on a tiny config and suspended for approval. The browser logs in with the
auth string, opens the run, presses Resume, finds the gate report above the form, fills it and
submits; a worker resumes the run. Approved: the run completes and the registry's production
alias moves, with the approver typed in the form. Rejected: the run completes, nothing promoted.

Screenshots of each step go to $DISTILL_TEST_ARTIFACTS/browser_approval (default
tests/artifacts/browser_approval). Needs scripts/install_browser.sh; in CI a missing browser or
PostgreSQL fails the test instead of skipping it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect_deploy import BIN, ROOT, prefect_server, run, tiny_config, trigger, unavailable, work_until

CHROMIUM = Path(os.environ.get("DISTILL_CHROMIUM", "/usr/bin/chromium"))
# root needs --no-sandbox; the rest keep Chromium from calling home (refused here, noisily)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MODEL = "banking77-intent"
SHOTS = Path(os.environ.get("DISTILL_TEST_ARTIFACTS", ROOT / "tests" / "artifacts")) / "browser_approval"

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (run scripts/install_browser.sh)")
    if not CHROMIUM.is_file():
        unavailable(f"no Chromium at {CHROMIUM} (run scripts/install_browser.sh)")
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser):
    yield from prefect_server(tmp_path_factory, ui=True)


@pytest.fixture(scope="module")
def deployed(server, tmp_path_factory):
    """The deployments registered from the tiny config (training in the manual run's own process)."""
    tmp = tmp_path_factory.mktemp("browser-approval")
    cfg = tiny_config(tmp, train_deployment=False)
    out = run(server, str(BIN / "distill"), "deploy", "--config", str(cfg))
    assert '"manual"' in out
    return server, cfg, tmp / "data"


def _registry(data: Path):
    from registry.registry import Registry

    reg = Registry(data / "registry")
    try:
        return reg.versions(MODEL), reg.aliases(MODEL)
    except Exception:  # noqa: BLE001 - nothing registered yet
        return [], {}


def _outcome(data: Path, run_id: str) -> dict:
    from core.rundir import RunDir

    (path,) = (data / "runs").glob(f"*-{run_id[:8]}")  # run directories end in the flow run id's first 8
    return json.loads(RunDir(path).outcome.read_text())


def _open_suspended_run(browser, env, run_id: str, shot: str, pages: list):
    """Log in as a person would (the UI asks for the auth string), open the run, press Resume."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
    pages.append(page)
    page.set_default_timeout(60_000)
    page.goto(f"{env['UI_URL']}/login")
    page.locator("input[type=password]").fill(env["PREFECT_API_AUTH_STRING"])
    page.get_by_role("button", name="Login").click()
    page.wait_for_url("**/dashboard")
    page.goto(f"{env['UI_URL']}/runs/flow-run/{run_id}")
    expect(page.get_by_text("Suspended", exact=True).first).to_be_visible()
    expect(page.get_by_text(f"Waiting for approval of flow run {run_id}")).to_be_visible()  # the logs have loaded
    page.screenshot(path=SHOTS / shot)
    page.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog")
    # the gate report (the run summary) is the form's description, above the fields
    expect(dialog.get_by_text("Gate: PASSED")).to_be_visible()
    expect(dialog.get_by_text(re.compile(r"Agreement with teacher: \d"))).to_be_visible()
    return page, dialog


def _fill(dialog, approved: bool, approver: str, comment: str) -> None:
    from playwright.sync_api import expect

    switch = dialog.get_by_role("switch")
    expect(switch).to_have_attribute("aria-checked", "false")  # nothing is approved by default
    if approved:
        switch.click()
        expect(switch).to_have_attribute("aria-checked", "true")
    dialog.locator(".schema-form-property", has_text="Approver").locator("textarea").fill(approver)
    dialog.locator(".schema-form-property", has_text="Comment").locator("textarea").fill(comment)


def _submit_and_finish(page, dialog, env, run_id: str, shots: tuple[str, str, str], outcome_text: re.Pattern) -> None:
    """Submit; once a worker has finished the resumed run, show it Completed and open its summary
    artifact, which must say `outcome_text` (what the approval did)."""
    from playwright.sync_api import expect

    form_shot, run_shot, summary_shot = shots
    dialog.screenshot(path=SHOTS / form_shot)
    dialog.get_by_role("button", name="Submit").click()
    expect(dialog).to_be_hidden()
    work_until(env, run_id, {"COMPLETED"})  # a worker picks the resumed run up
    page.reload()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
    page.get_by_text("Artifacts", exact=True).click()  # the run page's tab (an <li>, no ARIA role)
    card = page.locator(".artifact-card__title", has_text="distill-summary")
    expect(card).to_be_visible()
    page.screenshot(path=SHOTS / run_shot)
    card.click()
    expect(page.get_by_text(outcome_text).first).to_be_visible()
    page.screenshot(path=SHOTS / summary_shot, full_page=True)
    page.context.close()


@contextmanager
def _shot_on_failure(page_holder: list, name: str):
    """A failing browser step leaves a screenshot of what the page showed."""
    try:
        yield
    except Exception:
        if page_holder and not page_holder[0].is_closed():
            page_holder[0].screenshot(path=SHOTS / f"FAILED-{name}.png", full_page=True)
        raise


def test_approve_in_the_prefect_ui_promotes(deployed, browser):
    env, cfg, data = deployed
    versions_before, _ = _registry(data)
    run_id = trigger(env, cfg)
    assert work_until(env, run_id, {"PAUSED"})["state"]["name"] == "Suspended"
    pages: list = []
    with _shot_on_failure(pages, "approve"):
        page, dialog = _open_suspended_run(browser, env, run_id, "1-approve-suspended-run.png", pages)
        _fill(dialog, True, "carol.ui", "confusions look benign; ship it")
        _submit_and_finish(page, dialog, env, run_id, ("2-approve-form.png", "3-approved-run-completed.png",
                                                       "4-approved-run-summary.png"), re.compile(rf"Promoted {MODEL} v\d+ to"))

    versions, aliases = _registry(data)
    assert len(versions) == len(versions_before) + 1 and aliases["production"] == versions[-1]
    listing = run(env, str(BIN / "distill"), "registry", "list", "--data-dir", str(data))
    assert "approver=carol.ui" in listing
    outcome = _outcome(data, run_id)
    assert outcome["approved"] is True and outcome["promoted"]


def test_reject_in_the_prefect_ui_promotes_nothing(deployed, browser):
    env, cfg, data = deployed
    before = _registry(data)
    run_id = trigger(env, cfg)
    work_until(env, run_id, {"PAUSED"})
    pages: list = []
    with _shot_on_failure(pages, "reject"):
        page, dialog = _open_suspended_run(browser, env, run_id, "5-reject-suspended-run.png", pages)
        _fill(dialog, False, "bob.ui", "not yet: too many card_* confusions")
        _submit_and_finish(page, dialog, env, run_id, ("6-reject-form.png", "7-rejected-run-completed.png",
                                                       "8-rejected-run-summary.png"), re.compile("Rejected at approval: nothing promoted"))

    assert _registry(data) == before
    outcome = _outcome(data, run_id)
    assert outcome["approved"] is False and not outcome["promoted"]
