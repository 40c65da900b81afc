"""The local store as the bridge's own FHIR server (issue #14 item 2): ``--save`` records what a publication would
write, under stable local ids, idempotently, and ``/fhir`` serves every type of it.

In-process over the bundled samples: the pre-screen's ResearchStudy, ResearchSubjects (publication policy
applied) and Provenance; the assessment's response Observations, AdverseEvents and lifecycle status; a second run
adds nothing; a changed verdict is one new version with one Provenance; the served resources pass the official
R4 JSON Schema; the CapabilityStatement lists the new types and accepts every parameter it lists.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from bridge.config import RuleOptions, Settings
from bridge.evaluate.eligibility import Screening
from bridge.localfhir.record import LocalRecorder, local_id, record_key
from bridge.model import Verdict
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import AssessRun, PrescreenRun, assess, prescreen
from bridge.publish.subject import SUBJECT_ID_SYSTEM, verdicts_from_subject
from bridge.publish.validate import REPO_ROOT, validate_r4
from bridge.service.app import create_app
from bridge.state.sqlite_state import SqliteState
from bridge.trial import load_trial

TOKEN = "local-fhir-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CMAP = load_code_map(REPO_ROOT / "samples" / "site-map.yaml")
PRESCREEN = str(REPO_ROOT / "samples" / "prescreen" / "bundle.json")
TREATED = str(REPO_ROOT / "samples" / "treated" / "bundle.json")
AS_OF, CUT_OFF = date(2026, 6, 15), date(2026, 12, 31)
T0 = datetime(2026, 6, 15, 9, 0, tzinfo=UTC)


class Clock:
    """A clock that moves one minute per call (versions get distinct last-updated instants)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture(scope="module")
def screened() -> PrescreenRun:
    return prescreen(PRESCREEN, RuleOptions(as_of=AS_OF), CMAP)


@pytest.fixture(scope="module")
def assessed() -> AssessRun:
    return assess(TREATED, RuleOptions(as_of=CUT_OFF), CMAP)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteState]:
    s = SqliteState(tmp_path / "state.sqlite3")
    yield s
    s.close()


def save_prescreen(store: SqliteState, run: PrescreenRun, clock: Clock | None = None) -> LocalRecorder:
    recorder = LocalRecorder(store, run.trial, clock or Clock())
    recorder.study(run.options.organ_function_reading)
    recorder.screenings(run.screenings, run.options, run.not_screened)
    return recorder


def patients(run: AssessRun) -> list[dict[str, Any]]:
    """The ``patients[]`` of the assess JSON."""
    return cast(list[dict[str, Any]], run.as_json()["patients"])


def save_assessment(store: SqliteState, run: AssessRun, clock: Clock | None = None) -> list[Any]:
    recorder = LocalRecorder(store, run.trial, clock or Clock())
    recorder.ensure_study()
    deceased = {p.ref for p in run.patients if p.deceased}
    out = []
    for doc in patients(run):
        out += recorder.assessment(doc, run.options.as_of, run.options.comparators, run.options.cri_reading,
                                   doc["patient"] in deceased)
    return out


def snapshot(store: SqliteState) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every current record and every kept version, as the file holds them."""
    with closing(sqlite3.connect(store.path)) as conn:
        current = conn.execute("SELECT key, resource_id, version_id, resource FROM published ORDER BY key").fetchall()
        history = conn.execute("SELECT resource_type, resource_id, version_id, resource FROM published_history "
                               "ORDER BY 1, 2, 3").fetchall()
    return current, history


# ------------------------------------------------------------------------------------------ ids and keys


def test_local_ids_are_the_identifier_value_or_its_hash() -> None:
    assert local_id(SUBJECT_ID_SYSTEM, "NCT04762485-p01") == "NCT04762485-p01"
    long = "NCT04762485-" + "x" * 80
    hashed = local_id(SUBJECT_ID_SYSTEM, long)
    assert hashed.startswith("sha256-") and len(hashed) == 55 and hashed == local_id(SUBJECT_ID_SYSTEM, long)
    assert local_id("other-system", long) != hashed
    assert local_id(SUBJECT_ID_SYSTEM, "has space") != "has space"
    assert record_key({"resourceType": "ResearchStudy", "id": "nct04762485",
                       "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT04762485"}]}) == \
        "ResearchStudy|nct04762485"  # the worker's study key
    assert record_key({"resourceType": "AdverseEvent", "identifier": {"system": "s", "value": "v"}}) == \
        "AdverseEvent|s|v"  # R4 AdverseEvent.identifier is one Identifier
    assert record_key({"resourceType": "Provenance", "id": "x"}) == "Provenance|x"
    assert record_key({"resourceType": "Provenance"}) is None


# ------------------------------------------------------------------------------------------ pre-screen


def test_save_records_the_study_and_the_subjects_the_policy_allows(store: SqliteState,
                                                                    screened: PrescreenRun) -> None:
    save_prescreen(store, screened)
    subjects = {r.served_id: r for r in store.find_published("ResearchSubject")}
    expected = {f"NCT04762485-{s.patient.removeprefix('Patient/')}" for s in screened.screenings
                if s.verdict("inc-diagnosis").result != "not-met"}
    assert set(subjects) == expected and expected
    assert not {f"NCT04762485-{n.patient.removeprefix('Patient/')}" for n in screened.not_screened} & set(subjects)
    for s in screened.screenings:
        record = subjects.get(f"NCT04762485-{s.patient.removeprefix('Patient/')}")
        if record is not None:
            assert record.resource["status"] == s.status and record.version is None  # local: no EHR version
            assert record.key == f"ResearchSubject|{SUBJECT_ID_SYSTEM}|NCT04762485-{s.patient[8:]}"
            assert [v.result for v in verdicts_from_subject(record.resource)[2]] == [v.result for v in s.verdicts]
    (study,) = store.find_published("ResearchStudy")
    assert study.served_id == "nct04762485" and study.key == "ResearchStudy|nct04762485"
    provenance = store.find_published("Provenance")
    targets = sorted(t["reference"] for p in provenance for t in p.resource["target"])
    assert targets == sorted([f"ResearchSubject/{i}/_history/1" for i in expected]
                             + ["ResearchStudy/nct04762485/_history/1"])
    activities = {p.resource["activity"]["coding"][0]["code"] for p in provenance}
    assert activities == {"prescreen", "study-publication"}


def test_saving_twice_creates_no_duplicate_and_no_version(store: SqliteState, screened: PrescreenRun,
                                                          assessed: AssessRun) -> None:
    save_prescreen(store, screened)
    save_assessment(store, assessed)
    first = snapshot(store)
    again = save_prescreen(store, screened)
    outcomes = save_assessment(store, assessed)
    assert snapshot(store) == first
    assert again.provenances == 0 and {r.outcome for r in outcomes} == {"unchanged"}
    later = prescreen(PRESCREEN, RuleOptions(as_of=AS_OF + timedelta(days=1)), CMAP)  # re-screened a day later
    save_prescreen(store, replace(later, screenings=[s for s in later.screenings if s.patient == "Patient/p01"]))
    assert snapshot(store) == first  # the as-of date alone is no change (the subject fingerprint)


def test_a_changed_verdict_is_one_new_version_with_its_provenance(store: SqliteState) -> None:
    options = RuleOptions(as_of=AS_OF)
    recorder = LocalRecorder(store, clock=Clock())
    verdicts = [Verdict(v, "met" if v.startswith("inc") else "not-met", "", ()) for v in load_trial().criterion_ids]
    first = recorder.subject(Screening("Patient/q1", "candidate", tuple(verdicts)), options)
    changed = [replace(v, result="unknown") if v.criterion == "inc-ecog" else v for v in verdicts]
    second = recorder.subject(Screening("Patient/q1", "potential-candidate", tuple(changed)), options)
    third = recorder.subject(Screening("Patient/q1", "potential-candidate", tuple(changed)), options)
    assert (first.outcome, second.outcome, third.outcome) == ("created", "updated", "unchanged")
    assert first.reference == second.reference == "ResearchSubject/NCT04762485-q1"
    versions = store.published_history("ResearchSubject", "NCT04762485-q1")
    assert [v.version_id for v in versions] == [2, 1]
    assert [v.resource["status"] for v in versions] == ["potential-candidate", "candidate"]
    targets = sorted(t["reference"] for p in store.find_published("Provenance") for t in p.resource["target"])
    assert targets == ["ResearchSubject/NCT04762485-q1/_history/1", "ResearchSubject/NCT04762485-q1/_history/2"]


def test_an_assessment_moves_the_subject_on_and_a_later_prescreen_keeps_its_status(
        store: SqliteState, screened: PrescreenRun, assessed: AssessRun) -> None:
    save_prescreen(store, screened)
    treated = {d["patient"] for d in patients(assessed)}
    both = sorted(treated & {s.patient for s in screened.screenings})
    assert both, "the samples share at least one patient between the pre-screen and the treated cohort"
    pid = both[0].removeprefix("Patient/")
    before = store.get_published(f"ResearchSubject|{SUBJECT_ID_SYSTEM}|NCT04762485-{pid}")
    assert before is not None and before.resource["status"] in ("candidate", "potential-candidate", "ineligible")
    save_assessment(store, assessed)
    moved = store.get_published(before.key)
    assert moved is not None and moved.resource["status"] in ("on-study-intervention", "follow-up", "off-study")
    assert moved.version_id == 2 and moved.served_id == before.served_id
    save_prescreen(store, screened)
    kept = store.get_published(before.key)
    assert kept is not None and (kept.resource["status"], kept.version_id) == (moved.resource["status"], 2)


def test_the_assessment_records_observations_and_adverse_events(store: SqliteState, assessed: AssessRun) -> None:
    out = save_assessment(store, assessed)
    docs = patients(assessed)
    observations = store.find_published("Observation")
    events = store.find_published("AdverseEvent")
    assert len(observations) == sum(len(d["assessments"]) + bool(d.get("bestResponse")) for d in docs)
    assert len(events) == sum(len(d["adverseEvents"]) for d in docs) and events
    assert all(r.served_id == r.resource["identifier"][0]["value"] for r in observations
               if len(r.resource["identifier"][0]["value"]) <= 64)
    assert {r.outcome for r in out} == {"created"}
    assert len(store.find_published("Provenance")) == len(observations) + len(events) + 1  # + the study


def test_a_copy_an_ehr_returned_is_kept(store: SqliteState, screened: PrescreenRun) -> None:
    from bridge.state import PublishedRecord

    s = next(s for s in screened.screenings if s.verdict("inc-diagnosis").result == "met")
    pid = s.patient.removeprefix("Patient/")
    key = f"ResearchSubject|{SUBJECT_ID_SYSTEM}|NCT04762485-{pid}"
    ehr = {"resourceType": "ResearchSubject", "id": "ehr-7", "meta": {"versionId": "4"}, "status": "screening",
           "identifier": [{"system": SUBJECT_ID_SYSTEM, "value": f"NCT04762485-{pid}"}],
           "study": {"reference": "ResearchStudy/nct04762485"}, "individual": {"reference": s.patient}}
    store.put_published(PublishedRecord(key, "ResearchSubject", "ehr-7", "f", "4", ehr, 0.0))
    recorded = LocalRecorder(store, clock=Clock()).subject(s, screened.options)
    assert (recorded.reference, recorded.outcome) == ("ResearchSubject/ehr-7", "kept")
    held = store.get_published(key)
    assert held is not None and held.resource == ehr and store.published_history("ResearchSubject",
                                                                                  f"NCT04762485-{pid}") == []


# ------------------------------------------------------------------------------------------ /fhir


@pytest.fixture
def served(store: SqliteState, screened: PrescreenRun, assessed: AssessRun) -> Iterator[TestClient]:
    save_prescreen(store, screened)
    save_assessment(store, assessed)
    settings = Settings(api_token=TOKEN, webhook_secret="w" * 32, public_base_url="https://bridge.example.org")
    with TestClient(create_app(settings, store)) as client:
        yield client


def get(client: TestClient, url: str, **params: str) -> Any:
    resp = client.get(url, params=params, headers=AUTH)
    assert resp.status_code == 200, resp.text
    return resp.json()


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


@pytest.mark.parametrize("rtype", ["ResearchStudy", "ResearchSubject", "Observation", "AdverseEvent", "Provenance"])
def test_fhir_serves_every_recorded_type_valid_r4(served: TestClient, rtype: str) -> None:
    bundle = get(served, f"/fhir/{rtype}", _count="1000")
    assert bundle["total"] == len(bundle["entry"]) > 0
    validate_r4(bundle)
    first = bundle["entry"][0]["resource"]
    read = served.get(f"/fhir/{rtype}/{first['id']}", headers=AUTH)
    assert read.status_code == 200 and read.headers["etag"] == f'W/"{first["meta"]["versionId"]}"'
    validate_r4(read.json())
    version = get(served, f"/fhir/{rtype}/{first['id']}/_history/{first['meta']['versionId']}")
    assert version == read.json()
    history = get(served, f"/fhir/{rtype}/{first['id']}/_history")
    validate_r4(history)
    assert history["type"] == "history" and history["total"] >= 1
    assert get(served, f"/fhir/{rtype}/_history", _count="0")["total"] >= bundle["total"]


def test_fhir_searches_the_new_types(served: TestClient, assessed: AssessRun) -> None:
    doc = patients(assessed)[0]
    patient = doc["patient"]
    pid = patient.removeprefix("Patient/")
    observations = get(served, "/fhir/Observation", patient=pid)
    assert len(observations["entry"]) == len(doc["assessments"]) + bool(doc.get("bestResponse"))
    assert ids(get(served, "/fhir/Observation", subject=patient)) == ids(observations)
    best = get(served, "/fhir/Observation", patient=pid, code="best-overall-response")
    assert [e["resource"]["valueCodeableConcept"]["coding"][0]["code"] for e in best["entry"]] == \
        [doc["bestResponse"]]
    system = "https://cd7-bridge.example.org/fhir/CodeSystem/response"
    responders = get(served, "/fhir/Observation", **{"value-concept": f"{system}|CR,{system}|CRi",
                                                     "code": "best-overall-response", "_count": "0"})
    expected = sum(d.get("bestResponse") in ("CR", "CRi") for d in patients(assessed))
    assert responders["total"] == expected
    everything = get(served, "/fhir/Observation", focus="ResearchStudy/nct04762485", _count="0")["total"]
    assert everything == get(served, "/fhir/Observation", _count="0")["total"]
    assert get(served, "/fhir/Observation", category="exam", _count="0")["total"] < everything
    assert get(served, "/fhir/Observation", status="http://hl7.org/fhir/observation-status|final",
               _count="0")["total"] == everything

    events = get(served, "/fhir/AdverseEvent", subject=pid)
    assert len(events.get("entry", [])) == len(doc["adverseEvents"])
    total = get(served, "/fhir/AdverseEvent", _count="0")["total"]
    assert get(served, "/fhir/AdverseEvent", study="nct04762485", _count="0")["total"] == total > 0
    severe = get(served, "/fhir/AdverseEvent", severity="http://terminology.hl7.org/CodeSystem/adverse-event-severity"
                                                        "|severe", _count="0")["total"]
    assert 0 < severe < total and get(served, "/fhir/AdverseEvent", actuality="actual", _count="0")["total"] == total

    subject_id = next(e["resource"]["id"] for e in get(served, "/fhir/ResearchSubject", patient=pid)["entry"])
    prov = get(served, "/fhir/Provenance", target=f"ResearchSubject/{subject_id}")
    assert sorted(t["reference"] for e in prov["entry"] for t in e["resource"]["target"]) == [
        f"ResearchSubject/{subject_id}/_history/1", f"ResearchSubject/{subject_id}/_history/2"]  # pre-screen, assess
    assert get(served, "/fhir/Provenance", target=subject_id, _count="0")["total"] == 2  # a bare id: any type
    assert get(served, "/fhir/Provenance", entity=patient, _count="0")["total"] >= 2
    bad = served.get("/fhir/Provenance", params={"target": "not a type/x"}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["target"]


SAMPLES = {"token": "x", "reference": "x", "date": "2026", "number": "1", "_sort": "-_lastUpdated",
           "_elements": "extension", "_summary": "count", "_total": "accurate", "_totalMethod": "count",
           "_format": "json", "_pretty": "true"}


def test_the_capability_statement_lists_the_new_types_and_accepts_their_parameters(served: TestClient) -> None:
    cap = served.get("/fhir/metadata").json()
    validate_r4(cap)
    resources = {r["type"]: r for r in cap["rest"][0]["resource"]}
    assert {"ResearchStudy", "ResearchSubject", "Observation", "AdverseEvent", "Provenance"} <= set(resources)
    assert {"patient", "subject", "focus", "code", "category", "value-concept"} <= {
        p["name"] for p in resources["Observation"]["searchParam"]}
    assert {"subject", "study", "event", "severity"} <= {p["name"] for p in resources["AdverseEvent"]["searchParam"]}
    assert {"target", "entity"} <= {p["name"] for p in resources["Provenance"]["searchParam"]}
    for rtype in ("Observation", "AdverseEvent", "Provenance"):
        assert [i["code"] for i in resources[rtype]["interaction"]] == [
            "read", "vread", "search-type", "history-instance", "history-type"]
        for param in resources[rtype]["searchParam"]:
            value = SAMPLES.get(param["name"], SAMPLES.get(param["type"]))
            got = served.get(f"/fhir/{rtype}", params={param["name"]: value}, headers=AUTH)
            assert got.status_code == 200, (rtype, param, got.text)
            if "definition" in param:  # a search parameter: results sort by it too
                sort = served.get(f"/fhir/{rtype}", params={"_sort": f"-{param['name']}"}, headers=AUTH)
                assert sort.status_code == 200, (rtype, param["name"], sort.text)
