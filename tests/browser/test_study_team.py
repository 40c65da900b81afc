"""The study team in a real browser (issue #17): ``server.py`` runs as a process with a users file (a
coordinator and an investigator) and screenings in its state; chromium signs in as each person and records
every action through the patient page's forms; the page then shows the decision and the audit trail naming who
did what, in which role, with the note; the shared API token does not open the page.

``team_service`` is reusable: ``tests/browser/team.py`` starts the same service with an EHR (``ehr_base_url``)
for tests that check the write-back on the peer FHIR server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bridge.state import ScreeningRecord
from bridge.trial import load_trial
from tests.browser.chrome import require_browser, wait_replaced
from tests.browser.team import COORDINATOR, INVESTIGATOR, sign_in, start_team_service
from tests.processes import ServiceProcess

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
TRIAL = load_trial()
NOW = 1_781_500_000.0
NOTE = 'Spoke to the patient <b>"&amp;"</b> — keen'


def _verdicts() -> list[dict[str, Any]]:
    def result(cid: str) -> str:
        return "unknown" if cid == "exc-investigator" else "met" if cid.startswith("inc-") else "not-met"

    return [{"criterion": c, "result": result(c), "evidence": [f"Patient/{c}"], "reason": "seeded"}
            for c in TRIAL.criterion_ids]


@pytest.fixture(scope="module")
def team_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service with the study team's users and three potential candidates (no EHR)."""
    require_browser()
    records = [ScreeningRecord(pid, "potential-candidate", _verdicts(), "2026-06-15", NOW + i, TRIAL.id)
               for i, pid in enumerate(("t01", "t02", "t03"))]
    service = start_team_service(tmp_path_factory.mktemp("team"), records)
    yield service
    service.stop()


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _record(driver: Any, kind: str, note: str | None = None, **selects: str) -> None:
    """Fill the action form ``kind`` and send it; wait for the patient page to come back (POST-redirect-GET)."""
    from selenium.webdriver.support.ui import Select

    (form,) = _css(driver, f"form#action-{kind}")
    for name, value in selects.items():
        Select(form.find_element("css selector", f'select[name="{name}"]')).select_by_value(value)
    if note is not None:
        form.find_element("css selector", "textarea[name=note]").send_keys(note)
    button = form.find_element("css selector", "button")
    button.click()
    wait_replaced(driver, button, 10)
    assert _css(driver, "#audit-trail"), driver.page_source[:500]


def _trail(driver: Any) -> list[dict[str, Any]]:
    rows = []
    for row in _css(driver, "#audit-trail tbody tr[data-seq]"):
        cells = [c.text for c in row.find_elements("css selector", "td")]
        rows.append({"kind": row.get_attribute("data-kind"), "who": cells[2], "role": cells[3], "what": cells[4],
                     "note": cells[5], "taken_back": "taken-back" in (row.get_attribute("class") or "")})
    return rows


def _text(driver: Any, selector: str) -> str:
    return str(_css(driver, selector)[0].text)


def test_the_shared_api_token_does_not_open_the_page(team_service: ServiceProcess) -> None:
    token = yaml.safe_load(team_service.config.read_text())["api_token"]
    answer = requests.get(f"{team_service.url}/ui", headers={"Authorization": f"Bearer {token}"},
                          allow_redirects=False, timeout=10)
    assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login")
    assert requests.get(f"{team_service.url}/readyz", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).status_code == 200  # still the machine API's token


def test_coordinator_and_investigator_take_every_action(browser: Any, team_service: ServiceProcess) -> None:
    base, page = team_service.url, f"{team_service.url}/ui/patients/t01"
    sign_in(browser, base, COORDINATOR)
    assert _text(browser, "#signed-in-as") == f"{COORDINATOR.name} (coordinator)"
    browser.get(page)
    forms = {f.get_attribute("id") for f in _css(browser, "form.action")}
    assert forms == {"action-reviewed", "action-contacted", "action-consented", "action-screen-failure"}
    _record(browser, "reviewed", "looked at the labs")
    _record(browser, "contacted", NOTE)
    _record(browser, "screen-failure", "", reason="lost-to-contact")
    assert _text(browser, "#team-status") == "ineligible"
    assert _text(browser, "#failure-reason").startswith("lost-to-contact")
    _record(browser, "undo", "meant another patient")
    assert _text(browser, "#team-status").startswith("none")
    _record(browser, "consented", "signed the ICF")
    assert _text(browser, "#team-status") == "screening"

    sign_in(browser, base, INVESTIGATOR)
    browser.get(page)
    assert {"action-judgement", "action-eligible"} <= {f.get_attribute("id") for f in _css(browser, "form.action")}
    _record(browser, "judgement", "no reason to exclude", value="not-met")
    assert _text(browser, "#judgement").startswith(f"not-met — {INVESTIGATOR.name}: no reason to exclude")
    _record(browser, "eligible", "confirmed")
    assert _text(browser, "#team-status") == "eligible"

    trail = _trail(browser)
    assert [(r["kind"], r["who"], r["role"]) for r in trail] == [
        ("reviewed", COORDINATOR.name, "coordinator"), ("contacted", COORDINATOR.name, "coordinator"),
        ("screen-failure", COORDINATOR.name, "coordinator"), ("undo", COORDINATOR.name, "coordinator"),
        ("consented", COORDINATOR.name, "coordinator"), ("judgement", INVESTIGATOR.name, "investigator"),
        ("eligible", INVESTIGATOR.name, "investigator")]
    assert trail[1]["note"] == NOTE  # shown as text, not markup
    assert [r["taken_back"] for r in trail] == [False, False, True, False, False, False, False]
    assert trail[3]["what"].startswith("undo of #")
    assert _css(browser, "script") == [] and not _css(browser, "#audit-trail b")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "coordinator-study-team.png"))

    browser.get(base + "/ui")
    team = {r.get_attribute("data-patient"): r.find_element("css selector", "td.team-status").text
            for r in _css(browser, "tr[data-patient]")}
    assert team == {"t01": "eligible", "t02": "–", "t03": "–"}


def test_a_coordinator_has_no_investigator_form_and_a_forged_one_is_refused(browser: Any,
                                                                           team_service: ServiceProcess) -> None:
    sign_in(browser, team_service.url, COORDINATOR)
    browser.get(f"{team_service.url}/ui/patients/t02")
    assert not _css(browser, "form#action-judgement") and not _css(browser, "form#action-eligible")
    # the coordinator's own browser posts a judgement by rewriting a form it was given (no script on the page:
    # the test drives the DOM the way a tampering user would)
    browser.execute_script(
        "const f = document.querySelector('form#action-reviewed');"
        "f.querySelector('input[name=kind]').value = 'judgement';"
        "const v = document.createElement('input'); v.type = 'hidden'; v.name = 'value'; v.value = 'met';"
        "f.appendChild(v); f.querySelector('textarea').value = 'forged'; f.submit();")
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(expected_conditions.text_to_be_present_in_element(
        ("css selector", "h1"), "Not recorded"))
    browser.get(f"{team_service.url}/ui/patients/t02")
    assert _trail(browser) == []
