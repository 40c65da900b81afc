"""The coordinator page and the cohort report in a real browser (Debian chromium, headless, via chromedriver).

A real uvicorn server on a free loopback port serves the ``/ui`` router over a real ``SqliteStore`` seeded with
the screenings of ``samples/prescreen`` and ``samples/treated`` (the treated patients also get their assessment).
The browser signs in, reads the queue, opens patients and checks every verdict shown against the pre-screen
JSON, then signs out. The report written by ``bridge report`` is opened from disk with networking disabled and
every embedded plot must decode. Screenshots go to ``test-artifacts/`` (gitignored).

Without ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` the tests are skipped — or fail when ``CI`` is set.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from fastapi import FastAPI

from bridge.config import RuleOptions, Settings
from bridge.ingest.readers import read_source
from bridge.normalize.mappings import load_code_map
from bridge.report.coordinator import StoreData, bare_id
from bridge.report.data import gather
from bridge.report.render import write_report
from bridge.service.ui import COOKIE, ui_router
from bridge.state import NotScreenedRecord, ScreeningRecord
from bridge.state.sqlite_state import SqliteState as SqliteStore
from tests.browser.chrome import require_browser

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SITE_MAP = ROOT / "samples" / "site-map.yaml"
PRESCREEN = (ROOT / "samples" / "prescreen" / "bundle.json", date(2026, 6, 15))
TREATED = (ROOT / "samples" / "treated" / "bundle.json", date(2026, 12, 31))
TOKEN = "browser-test-token-5f1c"
EHR = "https://ehr.example.org/fhir"
STARTED = 1_781_500_000.0  # fixed "updated at" stamps: the queue order is known


def _documents(source: tuple[Path, date]) -> dict[str, Any]:
    path, as_of = source
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} not generated")
    return gather(read_source(str(path)), RuleOptions(as_of=as_of), load_code_map(SITE_MAP), path.name)


@pytest.fixture(scope="module")
def cohort() -> dict[str, Any]:
    """The report documents of both samples and the screenings as stored (treated screened last), and the
    patients not screened (RULES.md §2: e.g. the treated sample's patients who died before its as-of date)."""
    pre, treated = _documents(PRESCREEN), _documents(TREATED)
    screenings: dict[str, dict[str, Any]] = {}
    excluded: dict[str, NotScreenedRecord] = {}
    for doc in (pre, treated):
        as_of = doc["prescreen"]["asOf"]
        for r in doc["prescreen"]["results"]:
            screenings[bare_id(r["patient"])] = {**r, "asOf": as_of}
            excluded.pop(bare_id(r["patient"]), None)
        for n in doc["prescreen"].get("notScreened") or []:
            excluded[bare_id(n["patient"])] = NotScreenedRecord(bare_id(n["patient"]), n["reason"], as_of, STARTED)
            screenings.pop(bare_id(n["patient"]), None)
    assessments = {bare_id(p["patient"]): p for p in treated["assessment"]["patients"]}
    return {"screenings": screenings, "assessments": assessments, "treated": treated, "not_screened": excluded}


@pytest.fixture(scope="module")
def store(cohort: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStore]:
    db = SqliteStore(tmp_path_factory.mktemp("ui") / "state.sqlite3")
    for i, (pid, s) in enumerate(cohort["screenings"].items()):
        verdicts = [{"criterion": c, **v} for c, v in s["criteria"].items()]
        db.save_screening(ScreeningRecord(pid, s["status"], verdicts, s["asOf"], STARTED + i))
    for record in cohort["not_screened"].values():
        db.mark_not_screened(record)
    yield db
    db.close()


@pytest.fixture(scope="module")
def server(store: SqliteStore, cohort: dict[str, Any]) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, serving the /ui router."""
    require_browser()
    app = FastAPI()
    app.include_router(ui_router(Settings(api_token=TOKEN, ehr_base_url=EHR),
                                 StoreData(store, cohort["assessments"].get)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def _screenshot(driver: Any, name: str) -> Path:
    """A full-page screenshot in test-artifacts/ (the window grows to the page height first)."""
    ARTIFACTS.mkdir(exist_ok=True)
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    driver.set_window_size(1280, min(max(int(height) + int(chrome) + 8, 600), 12000))
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    driver.set_window_size(1280, 1000)
    return path


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _click_to(driver: Any, element: Any, url: str) -> None:
    """Click a link or submit button and wait until the browser has navigated to ``url`` (a click returns
    before the next page is loaded)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    element.click()
    WebDriverWait(driver, 10).until(expected_conditions.url_to_be(url))


def _sign_in(driver: Any, base: str) -> None:
    driver.get(f"{base}/ui")
    assert driver.current_url == f"{base}/ui/login"
    (token,) = _css(driver, "#token")
    token.send_keys(TOKEN)
    _click_to(driver, _css(driver, "#sign-in")[0], f"{base}/ui")


def test_queue_patient_pages_and_sign_out(browser: Any, server: str, cohort: dict[str, Any]) -> None:
    _sign_in(browser, server)
    cookie = browser.get_cookie(COOKIE)
    assert cookie and cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    assert _css(browser, "script") == []
    screenings = cohort["screenings"]
    groups = [g.get_attribute("id") for g in _css(browser, "section.queue-group")]
    assert groups == ["status-candidate", "status-potential-candidate", "status-ineligible"]
    for status in ("candidate", "potential-candidate", "ineligible"):
        shown = [r.get_attribute("data-patient") for r in _css(browser, f"#status-{status} tr[data-patient]")]
        stored = [pid for pid, s in screenings.items() if s["status"] == status]
        assert shown == stored[::-1]  # newest first: later saved = later stamp
    excluded = cohort["not_screened"]
    assert excluded, "the treated sample has patients who died before its as-of date"
    (note,) = _css(browser, "p.not-screened")
    assert note.get_attribute("data-not-screened") == str(len(excluded))
    assert not set(excluded) & {r.get_attribute("data-patient") for r in _css(browser, "tr[data-patient]")}
    _screenshot(browser, "coordinator-queue.png")
    browser.get(f"{server}/ui/patients/{next(iter(excluded))}")
    assert _css(browser, "h1")[0].text == "Not screened"
    browser.get(f"{server}/ui")

    _click_to(browser, _css(browser, 'tr[data-patient="p01"] a.patient-link')[0], f"{server}/ui/patients/p01")
    _check_verdicts(browser, screenings["p01"])
    _screenshot(browser, "coordinator-patient.png")

    treated = next(p for p in cohort["assessments"] if p in screenings)
    browser.get(f"{server}/ui?status={screenings[treated]['status']}")
    _click_to(browser, _css(browser, f'tr[data-patient="{treated}"] a.patient-link')[0],
              f"{server}/ui/patients/{treated}")
    _check_verdicts(browser, screenings[treated])
    assessment = cohort["assessments"][treated]
    assert _css(browser, "#best-response")[0].text == assessment["bestResponse"]
    rows = _css(browser, "#timeline tbody tr")
    expected = len(assessment["infusions"]) + len(assessment["assessments"]) + len(assessment["adverseEvents"])
    assert len(rows) == expected and rows[0].find_elements("css selector", "td")[1].text == "0"
    _screenshot(browser, "coordinator-treated-patient.png")

    copied = browser.get_cookie(COOKIE)["value"]
    assert _css(browser, 'header form input[name="csrf"]')  # sign-out carries the session's CSRF token
    _click_to(browser, _css(browser, "header form button")[0], f"{server}/ui/login")
    assert browser.get_cookie(COOKIE) is None
    browser.get(f"{server}/ui/patients/p01")
    assert browser.current_url == f"{server}/ui/login"
    replay = requests.get(f"{server}/ui/patients/p01", cookies={COOKIE: copied}, allow_redirects=False, timeout=10)
    assert (replay.status_code, replay.headers["location"]) == (303, "/ui/login")  # ended on the server too


def _check_verdicts(browser: Any, screening: dict[str, Any]) -> None:
    """Every criterion row shows the stored result, reason and evidence links to the EHR."""
    assert _css(browser, "#status")[0].text == screening["status"]
    assert _css(browser, "#as-of")[0].text == screening["asOf"]
    rows = _css(browser, "#criteria tbody tr")
    assert [r.get_attribute("data-criterion") for r in rows] == list(screening["criteria"])
    for row in rows:
        verdict = screening["criteria"][row.get_attribute("data-criterion")]
        cells = row.find_elements("css selector", "td")
        assert (cells[2].text, cells[3].text) == (verdict["result"], verdict["reason"])
        links = [a.get_attribute("href") for a in cells[4].find_elements("css selector", "a")]
        assert links == [f"{EHR}/{ref}" for ref in verdict["evidence"]]


def test_report_opens_offline_with_every_plot(browser: Any, cohort: dict[str, Any],
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    out = write_report(cohort["treated"], tmp_path_factory.mktemp("report") / "report.html")
    browser.get(out.resolve().as_uri())
    sizes = browser.execute_script(
        "return Array.from(document.images).map(i => [i.dataset.plot, i.complete, i.naturalWidth, i.naturalHeight])")
    assert sorted(s[0] for s in sizes) == sorted(["funnel", "criteria", "dose", "swimmer", "response", "cir",
                                                  "kinetics"])
    assert all(done and width >= 600 and height >= 250 for _, done, width, height in sizes), sizes
    sections = {s.get_attribute("id") for s in _css(browser, "section")}
    assert {"prescreen", "criteria", "dose", "swimmer", "safety", "response", "cir", "kinetics"} <= sections
    _screenshot(browser, "report.png")
    plots_dir = ARTIFACTS / "report-plots"
    shutil.rmtree(plots_dir, ignore_errors=True)
    plots_dir.mkdir(parents=True)
    shutil.copy(out, ARTIFACTS / "report.html")
    for img in _css(browser, "img[data-plot]"):
        img.screenshot(str(plots_dir / f"{img.get_attribute('data-plot')}.png"))
    assert len(list(plots_dir.glob("*.png"))) == 7
    (ARTIFACTS / "report-numbers.json").write_text(json.dumps(cohort["treated"]["assessment"]["cohort"], indent=2))
