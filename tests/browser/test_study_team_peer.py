"""The study team's actions from a real browser to the real peer EHR (issue #17 item 6).

The peer FHIR server (sekmet-fhir) holds the study and the sample bundle's ResearchSubjects, published as the
service would; ``server.py`` runs as a process with the study team's users file, the same screenings in its
state and ``ehr_base_url`` pointing at the peer. Chromium signs in as the coordinator, who records consent on the
patient page, then as the investigator, who records the exc-investigator judgement and confirms eligibility.
Afterwards the peer holds the patient's ResearchSubject with status ``eligible`` and the study-team-decision
extension, and one Provenance per action naming the person (``agent.who.identifier`` = the user name) with the
action as its activity, targeting a version of that ResearchSubject; the page's audit trail says each action
was written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.client import FhirClient
from bridge.config import RuleOptions
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import PrescreenRun, prescreen
from bridge.publish.decision import USER_SYSTEM
from bridge.publish.publisher import publish_screenings, publish_study
from bridge.publish.subject import SUBJECT_ID_SYSTEM, decision_from_subject, verdicts_from_subject
from bridge.publish.validate import REPO_ROOT
from bridge.state import screening_record
from bridge.trial import load_trial
from tests.browser.chrome import require_browser, wait_replaced
from tests.browser.team import COORDINATOR, INVESTIGATOR, sign_in, start_team_service
from tests.integration.loading import all_resources
from tests.integration.peer import PeerServer, PeerUnavailable, find_sekmet
from tests.processes import ServiceProcess

pytestmark = [pytest.mark.browser, pytest.mark.peer]

BUNDLE = REPO_ROOT / "samples" / "prescreen" / "bundle.json"
OPTIONS = RuleOptions(as_of=date(2026, 6, 15))
TRIAL = load_trial()
AT = datetime(2026, 6, 15, 9, 30, tzinfo=UTC).timestamp()
Json = dict[str, Any]


def clock() -> datetime:
    return datetime(2026, 6, 15, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def peer() -> Iterator[PeerServer]:
    require_browser()
    try:
        server = PeerServer(find_sekmet()).start()
    except PeerUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"peer FHIR server unavailable in CI: {exc}", pytrace=False)
        pytest.skip(f"peer FHIR server unavailable: {exc}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def run() -> PrescreenRun:
    return prescreen(str(BUNDLE), OPTIONS, load_code_map(REPO_ROOT / "samples" / "site-map.yaml"))


@pytest.fixture(scope="module")
def service(peer: PeerServer, run: PrescreenRun, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[ServiceProcess, FhirClient]]:
    client = FhirClient(peer.base_url)
    publish_study(client, clock=clock)
    publish_screenings(client, run.screenings, OPTIONS, clock)
    records = [screening_record(s, OPTIONS.as_of, AT, TRIAL.id, TRIAL.ruleset_version) for s in run.screenings]
    started = start_team_service(Path(tmp_path_factory.mktemp("team-peer")), records, ehr_base_url=peer.base_url)
    try:
        yield started, client
    finally:
        started.stop()
        client.close()


def _subject(client: FhirClient, pid: str) -> Json:
    value = f"{TRIAL.id}-{pid}"
    (found,) = [s for s in all_resources(client, "ResearchSubject")
                if any(i.get("system") == SUBJECT_ID_SYSTEM and i.get("value") == value for i in s["identifier"])]
    return found


def _record(driver: Any, kind: str, note: str, **selects: str) -> None:
    from selenium.webdriver.support.ui import Select

    (form,) = driver.find_elements("css selector", f"form#action-{kind}")
    for name, value in selects.items():
        Select(form.find_element("css selector", f'select[name="{name}"]')).select_by_value(value)
    form.find_element("css selector", "textarea[name=note]").send_keys(note)
    button = form.find_element("css selector", "button")
    button.click()
    wait_replaced(driver, button, 15)


def test_actions_in_the_browser_reach_the_peer_ehr_with_provenance_naming_the_person(
        browser: Any, service: tuple[ServiceProcess, FhirClient], run: PrescreenRun) -> None:
    team_service, client = service
    pid = next(s.patient for s in run.screenings if s.status == "candidate").removeprefix("Patient/")
    before = _subject(client, pid)
    assert before["status"] == "candidate" and decision_from_subject(before) is None
    page = f"{team_service.url}/ui/patients/{pid}"

    sign_in(browser, team_service.url, COORDINATOR)
    browser.get(page)
    _record(browser, "consented", "ICF v3 signed in clinic")
    assert _subject(client, pid)["status"] == "screening"  # written back before the page came back

    sign_in(browser, team_service.url, INVESTIGATOR)
    browser.get(page)
    _record(browser, "judgement", "fit for apheresis", value="not-met")
    _record(browser, "eligible", "all criteria reviewed")

    subject = _subject(client, pid)
    team = decision_from_subject(subject)
    assert subject["status"] == "eligible"
    assert team is not None and (team.action, team.by, team.status, team.judgement) == (
        "eligible", INVESTIGATOR.name, "eligible", "not-met")
    _, _, verdicts = verdicts_from_subject(subject)
    assert next(v for v in verdicts if v.criterion == "exc-investigator").result == "not-met"

    mine = [p for p in all_resources(client, "Provenance")
            if any(t.get("reference", "").startswith(f"ResearchSubject/{subject['id']}/") for t in p["target"])
            and any(a["who"].get("identifier", {}).get("system") == USER_SYSTEM for a in p["agent"])]
    people = sorted((p["agent"][0]["who"]["identifier"]["value"], p["activity"]["coding"][0]["code"]) for p in mine)
    assert people == sorted([(COORDINATOR.name, "team-consented"), (INVESTIGATOR.name, "team-judgement"),
                             (INVESTIGATOR.name, "team-eligible")])

    written = [row.get_attribute("data-kind") for row in browser.find_elements(
        "css selector", "#audit-trail tbody tr[data-seq]")]
    assert written == ["consented", "judgement", "eligible"]
    assert "pending" not in browser.find_element("css selector", "#audit-trail").text.lower()
