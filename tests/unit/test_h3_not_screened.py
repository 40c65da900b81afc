"""Issue #12 items 5 (consumers) and 8: one publication policy, and patients who are not screened.

- ``bridge.publish.policy`` is the one rule: a screened patient whose ``inc-diagnosis`` is not ``not-met``, or
  who already has a ResearchSubject; a patient who is not screened (RULES.md §2) never.
- Both paths apply it: ``publish_screenings`` (what ``bridge prescreen --publish`` calls, driven here through the
  real CLI against an in-memory FHIR server) and the service's re-screen.
- The store keeps a not-screened patient out of the screenings (``save_prescreen`` / ``mark_not_screened``), so
  the coordinator page never lists it and its page says "Not screened".
- The cohort report lists no not-screened patient in the pre-screen, counts them in the funnel, and still assesses
  a deceased infused patient (but never a patient without a valid Patient resource, nor a non-human one).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import responses
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bridge.cli import app as cli_app
from bridge.client import FhirClient
from bridge.config import RuleOptions, Settings
from bridge.ingest.readers import Entry, read_source
from bridge.model import NotScreened
from bridge.normalize.mappings import load_code_map
from bridge.publish.policy import DIAGNOSIS_NOT_MET, publishable, select
from bridge.publish.publisher import publish_prescreen, publish_screenings
from bridge.report import coordinator, plots
from bridge.report.data import gather
from bridge.report.render import render_report
from bridge.service import rescreen as rescreen_module
from bridge.service.rescreen import NOT_PUBLISHED, NOT_SCREENED, PublishingRescreen
from bridge.service.triggers import patient_of
from bridge.service.ui import ui_router
from bridge.state import NotScreenedRecord, ScreeningRecord, save_prescreen
from bridge.state.sqlite_state import SqliteState as SqliteStore
from tests.unit.test_publisher import BASE, OPTIONS, FakeServer, clock, screening, stored_subject
from tests.unit.test_report import data_values, images, tags, treated_bundle
from tests.unit.test_rescreen import FakeClient

REPO = Path(__file__).resolve().parents[2]
SITE_MAP = REPO / "samples" / "site-map.yaml"
BUNDLE = REPO / "samples" / "prescreen" / "bundle.json"
AS_OF = date(2026, 6, 15)
T0 = 1_780_000_000.0
ANIMAL = "http://hl7.org/fhir/StructureDefinition/patient-animal"
TOKEN = "h3-test-token"


# ---------------------------------------------------------------------------------------------- sample records
def sample(pid: str) -> list[dict[str, Any]]:
    doc = json.loads(BUNDLE.read_text(encoding="utf-8"))
    return [e["resource"] for e in doc["entry"]
            if (e["resource"]["resourceType"] == "Patient" and e["resource"]["id"] == pid)
            or patient_of(e["resource"].get("subject")) == pid]


def renamed(pid: str, new: str, **patient: Any) -> list[dict[str, Any]]:
    """Sample patient ``pid``'s resources as patient ``new`` (ids and references rewritten), the Patient
    resource updated with ``patient``."""
    out = []
    for r in copy.deepcopy(sample(pid)):
        r["id"] = r["id"].replace(pid, new, 1)
        if "subject" in r:
            r["subject"] = {"reference": f"Patient/{new}"}
        if "encounter" in r:
            r["encounter"] = {"reference": str(r["encounter"]["reference"]).replace(pid, new, 1)}
        if r["resourceType"] == "Patient":
            r.update(patient)
        out.append(r)
    return out


def mixed_records() -> list[dict[str, Any]]:
    """p01 (candidate), p08 (no acute leukaemia), and p01's record as a patient who died before the as-of date,
    a dog, and a patient whose Patient resource is rejected (a gender that is not a FHIR code)."""
    return [*sample("p01"), *sample("p08"),
            *renamed("p01", "d01", deceasedDateTime="2026-05-01"),
            *renamed("p01", "a01", extension=[{"url": ANIMAL, "extension": [
                {"url": "species", "valueCodeableConcept": {"text": "dog"}}]}]),
            *renamed("p01", "x01", gender=["not", "a", "code"])]


def write_bundle(path: Path, resources: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": r} for r in resources]}), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- the policy
def test_the_policy_publishes_the_study_s_patients_and_known_subjects_only() -> None:
    assert publishable(screening())  # diagnosis met
    assert publishable(screening("potential-candidate", inc_diagnosis="unknown"))
    no_dx = screening("ineligible", inc_diagnosis="not-met")
    assert not publishable(no_dx)
    asked: list[str] = []
    assert publishable(no_dx, lambda pid: asked.append(pid) or True) and asked == ["p1"]  # kept up to date
    assert not publishable(no_dx, lambda pid: False)
    asked.clear()
    publishable(screening(), lambda pid: asked.append(pid) or False)
    assert asked == []  # the EHR is asked only when the diagnosis is not met


def test_select_counts_what_it_withholds_and_never_publishes_a_not_screened_patient() -> None:
    batch = [screening(), screening("ineligible", "Patient/p2", inc_diagnosis="not-met"),
             screening(patient="Patient/p3"), screening(patient="Patient/p4")]
    dead = [NotScreened("Patient/p3", "deceased"), NotScreened("Patient/p9", "no-patient-resource")]
    chosen = select(batch, not_screened=dead)
    assert [s.patient for s in chosen.publish] == ["Patient/p1", "Patient/p4"]
    assert chosen.withheld == {DIAGNOSIS_NOT_MET: 1, "deceased": 1, "no-patient-resource": 1}
    assert chosen.withheld_total == 3
    assert chosen.withheld_text() == "1 deceased, 1 diagnosis-not-met, 1 no-patient-resource"
    assert select(batch, has_subject=lambda pid: True, not_screened=dead).withheld == {
        "deceased": 1, "no-patient-resource": 1}


# ---------------------------------------------------------------------------------------------- CLI path
@pytest.fixture
def server(rsps: responses.RequestsMock) -> FakeServer:
    return FakeServer(rsps)


def test_publish_screenings_applies_the_policy(server: FakeServer) -> None:
    batch = [screening(), screening("ineligible", "Patient/p2", inc_diagnosis="not-met")]
    with FhirClient(BASE, Settings(retries=0), sleep=lambda _s: None) as client:
        done = publish_prescreen(client, batch, OPTIONS, [NotScreened("Patient/p3", "non-human")], clock)
    assert [w.outcome for w in done.written] == ["created"]
    assert done.withheld == {DIAGNOSIS_NOT_MET: 1, "non-human": 1}
    assert [s["individual"]["reference"] for s in server.subjects.values()] == ["Patient/p1"]


def test_an_existing_subject_of_a_patient_without_the_diagnosis_is_updated(server: FakeServer) -> None:
    server.subjects["rs-1"] = stored_subject(rid="rs-1", patient="p2", status="potential-candidate",
                                             inc_diagnosis="unknown")
    batch = [screening("ineligible", "Patient/p2", inc_diagnosis="not-met")]
    with FhirClient(BASE, Settings(retries=0), sleep=lambda _s: None) as client:
        written = publish_screenings(client, batch, OPTIONS, clock)
    assert [w.outcome for w in written] == ["updated"]
    assert server.subjects["rs-1"]["status"] == "ineligible"


def test_cli_publish_writes_nothing_for_patients_outside_the_policy(server: FakeServer, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BRIDGE_CONFIG", "BRIDGE_EHR_TOKEN", "BRIDGE_EHR_TOKEN_FILE", "BRIDGE_SMART_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    source = write_bundle(tmp_path / "mixed.json", mixed_records())
    result = CliRunner().invoke(cli_app, ["prescreen", str(source), "--as-of", AS_OF.isoformat(), "--site-map",
                                          str(SITE_MAP), "--publish", BASE])
    assert result.exit_code == 0, result.output
    published = sorted(s["individual"]["reference"] for s in server.subjects.values())
    assert published == ["Patient/p01"]  # not p08 (no leukaemia), not d01 / a01 / x01 (not screened)
    assert len(server.provenance) == 1


# ---------------------------------------------------------------------------------------------- the store
@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    db = SqliteStore(tmp_path / "state.sqlite3")
    yield db
    db.close()


def test_a_not_screened_patient_replaces_its_saved_screening_and_back(store: SqliteStore) -> None:
    store.save_screening(ScreeningRecord("p1", "candidate", [], "2026-06-14", T0))
    assert store.mark_not_screened(NotScreenedRecord("p1", "deceased", "2026-06-15", T0 + 1)) is True
    assert store.screening("p1") is None and store.screenings() == []
    assert store.not_screened() == [NotScreenedRecord("p1", "deceased", "2026-06-15", T0 + 1)]
    assert store.mark_not_screened(NotScreenedRecord("p1", "deceased", "2026-06-16", T0 + 2)) is False
    store.save_screening(ScreeningRecord("p1", "candidate", [], "2026-06-17", T0 + 3))  # e.g. a corrected record
    assert store.not_screened() == [] and [r.patient_id for r in store.screenings()] == ["p1"]


def test_save_prescreen_is_what_the_cli_and_the_service_record(store: SqliteStore) -> None:
    store.save_screening(ScreeningRecord("p3", "candidate", [], "2026-06-01", T0))
    counts = save_prescreen(store, [screening(), screening("ineligible", "Patient/p2")],
                            [NotScreened("Patient/p3", "non-human")], AS_OF, T0 + 5)
    assert counts == (2, 1)
    assert [(r.patient_id, r.status, r.as_of) for r in store.screenings()] == [
        ("p1", "candidate", "2026-06-15"), ("p2", "ineligible", "2026-06-15")]
    saved = store.screening("p1")
    assert saved is not None and saved.verdicts[0]["criterion"] == "inc-diagnosis"
    assert [(n.patient_id, n.reason) for n in store.not_screened()] == [("p3", "non-human")]


# ---------------------------------------------------------------------------------------------- the service
@pytest.fixture
def service(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    records = mixed_records()
    calls: dict[str, list[Any]] = {"published": [], "found": []}
    monkeypatch.setattr(rescreen_module, "fetch_patient", lambda client, pid, cmap, as_of: iter(
        [Entry(r, f"{r['resourceType']}/{r['id']}") for r in records
         if (r["resourceType"] == "Patient" and r["id"] == pid) or patient_of(r.get("subject")) == pid]))
    monkeypatch.setattr(rescreen_module, "publish_study", lambda client, reading, **_: rescreen_module.Written(
        "ResearchStudy/nct04762485", "created", "1"))
    monkeypatch.setattr(rescreen_module, "publish_subject", lambda client, s, options, **_: calls["published"].append(
        s.patient) or rescreen_module.Written("ResearchSubject/rs1", "created", "1"))
    monkeypatch.setattr(rescreen_module, "find_subject", lambda client, pid, *_: calls["found"].append(pid))
    run = PublishingRescreen(FakeClient(), load_code_map(SITE_MAP), store, today=lambda: AS_OF,  # type: ignore[arg-type]
                             clock=lambda: T0)
    return {"run": run, "calls": calls}


@pytest.mark.parametrize(("pid", "reason"), [("d01", "deceased"), ("a01", "non-human"),
                                             ("x01", "no-patient-resource")])
def test_the_service_publishes_and_saves_nothing_for_a_not_screened_patient(service: dict[str, Any],
                                                                             store: SqliteStore, pid: str,
                                                                             reason: str) -> None:
    store.save_screening(ScreeningRecord(pid, "candidate", [], "2026-06-01", T0 - 86400))  # an earlier screening
    assert service["run"](pid) == NOT_SCREENED
    assert service["calls"] == {"published": [], "found": []}
    assert store.screening(pid) is None and store.screenings() == []
    assert [(n.patient_id, n.reason, n.as_of) for n in store.not_screened()] == [(pid, reason, "2026-06-15")]


def test_the_service_uses_the_same_policy(service: dict[str, Any], store: SqliteStore) -> None:
    assert service["run"]("p08") == NOT_PUBLISHED and service["calls"]["found"] == ["p08"]
    assert service["run"]("p01") == "candidate" and service["calls"]["published"] == ["Patient/p01"]
    assert [r.patient_id for r in store.screenings()] == ["p01"]


# ---------------------------------------------------------------------------------------------- coordinator page
def _signed_in(data: Any) -> TestClient:
    app = FastAPI()
    app.include_router(ui_router(Settings(api_token=TOKEN), data, clock=lambda: T0))
    return TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})


def test_the_coordinator_page_never_lists_a_not_screened_patient(store: SqliteStore) -> None:
    save_prescreen(store, [screening(patient="Patient/p01")], [], AS_OF, T0)
    save_prescreen(store, [screening(patient="Patient/d01"), screening(patient="Patient/x01")], [], "2026-06-01",
                   T0 - 10)
    save_prescreen(store, [], [NotScreened("Patient/d01", "deceased"), NotScreened("Patient/x01",
                                                                                   "no-patient-resource")], AS_OF, T0)
    page = _signed_in(store)
    queue = page.get("/ui").text
    assert [a["data-patient"] for _, a in tags(queue) if a.get("data-patient")] == ["p01"]
    counted = {a["data-reason"]: True for _, a in tags(queue) if a.get("data-reason")}
    assert counted == {"deceased": True, "no-patient-resource": True} and "2 patient(s) not screened" in queue
    for pid in ("d01", "x01"):
        answer = page.get(f"/ui/patients/{pid}")
        assert answer.status_code == 404 and "Not screened" in answer.text
    assert page.get("/ui/patients/p01").status_code == 200


def test_memory_data_honours_the_document_s_not_screened_array() -> None:
    doc = {"asOf": "2026-06-15", "results": [
        {"patient": "Patient/p01", "status": "candidate", "criteria": {}},
        {"patient": "Patient/d01", "status": "candidate", "criteria": {}}],  # a stale result: it must not show
        "notScreened": [{"patient": "Patient/d01", "reason": "deceased"}]}
    data = coordinator.MemoryData.from_documents(doc)
    assert [s["patient"] for s in data.list_screenings()] == ["p01"]
    assert data.get_screening("d01") is None
    assert coordinator.not_screened_summary(data.list_not_screened()) == [
        {"reason": "deceased", "label": "deceased", "count": 1}]
    page = _signed_in(data)
    assert page.get("/ui/patients/d01").status_code == 404


# ---------------------------------------------------------------------------------------------- cohort report
def test_the_report_counts_not_screened_patients_and_lists_none(tmp_path: Path) -> None:
    source = write_bundle(tmp_path / "mixed.json", mixed_records())
    doc = gather(read_source(str(source)), RuleOptions(as_of=AS_OF), load_code_map(SITE_MAP), "mixed.json")
    pre = doc["prescreen"]
    assert isinstance(pre, dict)
    assert [r["patient"] for r in pre["results"]] == ["Patient/p01", "Patient/p08"]
    assert sorted((n["patient"], n["reason"]) for n in pre["notScreened"]) == [
        ("Patient/a01", "non-human"), ("Patient/d01", "deceased"), ("Patient/x01", "no-patient-resource")]
    html = render_report(doc)
    shown = data_values(html)
    assert (shown["prescreen.screened"], shown["prescreen.notScreened"]) == (2, 3)
    assert {k: v for k, v in shown.items() if k.startswith("prescreen.notScreened.")} == {
        "prescreen.notScreened.deceased": 1, "prescreen.notScreened.non-human": 1,
        "prescreen.notScreened.no-patient-resource": 1}
    for pid in ("d01", "a01", "x01"):
        assert pid not in html  # never listed as a patient
    assert "funnel" in images(html)
    assert plots.status_counts(pre)["not-screened"] == 3


def test_a_deceased_infused_patient_is_still_assessed_but_not_pre_screened() -> None:
    bundle = treated_bundle()  # t03 and t04 died before the as-of date (2026-12-31)
    dog = copy.deepcopy([e["resource"] for e in bundle["entry"] if patient_of(e["resource"].get("subject")) == "t01"
                         or e["resource"].get("id") == "t01"])
    for r in dog:
        r["id"] = r["id"].replace("t01", "t09", 1)
        if "subject" in r:
            r["subject"] = {"reference": "Patient/t09"}
        if r["resourceType"] == "Patient":
            r["extension"] = [{"url": ANIMAL}]
    items = [Entry(e["resource"], f"entry {i}") for i, e in enumerate(bundle["entry"])]
    items += [Entry(r, f"dog {i}") for i, r in enumerate(dog)]
    doc = gather(items, RuleOptions(as_of=date(2026, 12, 31)), load_code_map(SITE_MAP), "treated")
    pre, assessment = doc["prescreen"], doc["assessment"]
    assert isinstance(pre, dict) and isinstance(assessment, dict)
    assert sorted(n["patient"] for n in pre["notScreened"]) == ["Patient/t03", "Patient/t04", "Patient/t09"]
    assert "Patient/t03" not in [r["patient"] for r in pre["results"]]
    assessed = [p["patient"] for p in assessment["patients"]]
    assert {"Patient/t03", "Patient/t04"} <= set(assessed) and "Patient/t09" not in assessed
    follow = doc["followUp"]
    assert isinstance(follow, dict) and follow["Patient/t03"]["deathDay"] is not None  # death ends follow-up



def test_cli_save_removes_the_old_screening_of_a_patient_now_not_screened(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    db_path = tmp_path / "state.sqlite3"
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("BRIDGE_DB_PATH", str(db_path))
    old = SqliteStore(db_path)
    old.save_screening(ScreeningRecord("d01", "candidate", [], "2026-04-01", T0))  # screened while alive
    old.close()
    source = write_bundle(tmp_path / "mixed.json", mixed_records())
    result = CliRunner().invoke(cli_app, ["prescreen", str(source), "--as-of", AS_OF.isoformat(), "--site-map",
                                          str(SITE_MAP), "--save"])
    assert result.exit_code == 0, result.output
    db = SqliteStore(db_path)
    try:
        assert [r.patient_id for r in db.screenings()] == ["p01", "p08"]
        assert [(n.patient_id, n.reason) for n in db.not_screened()] == [
            ("a01", "non-human"), ("d01", "deceased"), ("x01", "no-patient-resource")]
    finally:
        db.close()
