"""A second trial publishes as itself (issue #13 items 2-4): its ResearchStudy, ResearchSubjects, assessment
resources and every Provenance name its id and ruleset version, never the shipped NCT04762485.

The second trial is ``tests/data/trials/second.yaml`` (TEST-0002, ruleset ``TEST-0002-rules/1``, logical id
``test-0002``). The builders are checked directly, then the publisher against a small in-memory EHR (``Ehr``),
then ``bridge publish-study --trial FILE`` with and without ``--save``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from typer.testing import CliRunner

from bridge.cli import build_app
from bridge.client import FhirClient
from bridge.config import RuleOptions, Settings
from bridge.errors import InvalidResource
from bridge.evaluate.eligibility import Screening, screen
from bridge.evaluate.screened import not_screened
from bridge.ingest.readers import read_source
from bridge.normalize.mappings import load_code_map
from bridge.normalize.patients import assemble
from bridge.publish import outcomes
from bridge.publish.provenance import provenance, ruleset_policy
from bridge.publish.publisher import publish_assessment, publish_prescreen, publish_study
from bridge.publish.study import criteria_system, research_study
from bridge.publish.subject import research_subject, subject_fingerprint, verdicts_from_subject
from bridge.publish.validate import validate_output
from bridge.trial import Trial, load_trial

ROOT = Path(__file__).resolve().parents[2]
SECOND = ROOT / "tests" / "data" / "trials" / "second.yaml"
BUNDLE = ROOT / "samples" / "prescreen" / "bundle.json"
SITE_MAP = ROOT / "samples" / "site-map.yaml"
AS_OF = date(2026, 6, 15)
RECORDED = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
BASE = "https://ehr.example.org/fhir"
FHIR = {"Content-Type": "application/fhir+json"}
POLICY = "https://cd7-bridge.example.org/fhir/ruleset/TEST-0002-rules/1"
Json = dict[str, Any]


@cache
def second() -> Trial:
    return load_trial(SECOND)


@cache
def screenings() -> tuple[Screening, ...]:
    """The screened sample patients under the second trial."""
    cmap = load_code_map(SITE_MAP)
    patients, _ = assemble(read_source(str(BUNDLE)), cmap)
    options = RuleOptions.for_trial(second(), AS_OF)
    return tuple(screen(pf, options, cmap.uln, second()) for pf in patients if not_screened(pf, AS_OF) is None)


def screening_of(pid: str) -> Screening:
    return next(s for s in screenings() if s.patient == f"Patient/{pid}")


def names_only_the_second_trial(resource: Json) -> None:
    text = json.dumps(resource)
    assert "nct04762485" not in text.lower(), resource.get("resourceType")


def clock() -> datetime:
    return RECORDED


# ---------------------------------------------------------------------------------------------- the builders
def test_the_study_the_subject_and_the_provenance_name_the_second_trial() -> None:
    t = second()
    study = research_study(trial=t)
    s = screening_of("p01")
    subject = research_subject("p01", s.status, list(s.verdicts), AS_OF, "organ-function", trial=t)
    prov = provenance(["ResearchSubject/x/_history/1"], "prescreen", RECORDED, ["Patient/p01"], trial=t)
    for resource in (study, subject, prov):
        validate_output(resource)
        names_only_the_second_trial(resource)

    assert (study["id"], study["identifier"][0]["value"]) == ("test-0002", "TEST-0002")
    assert subject["identifier"][0]["value"] == "TEST-0002-p01"
    assert subject["study"] == {"reference": "ResearchStudy/test-0002"}
    ext = subject["extension"][0]["extension"]
    assert {"url": "ruleset", "valueString": "TEST-0002-rules/1"} in ext
    codings = [p["valueCoding"] for c in ext if c["url"] == "criterion" for p in c["extension"] if p["url"] == "id"]
    assert [c["code"] for c in codings] == list(t.criterion_ids) and {c["system"] for c in codings} == {
        criteria_system(t)}
    assert prov["policy"] == [POLICY] == [ruleset_policy(t)]


def test_a_subject_reads_back_under_its_own_trial_only() -> None:
    t = second()
    s = screening_of("p02")
    subject = research_subject("p02", s.status, list(s.verdicts), AS_OF, "organ-function", trial=t)
    assert verdicts_from_subject(subject, t) == (AS_OF, "organ-function", list(s.verdicts))
    with pytest.raises(InvalidResource):  # the shipped trial's reading does not take another trial's criteria
        verdicts_from_subject(subject)
    assert len(subject_fingerprint(subject)) == 64  # any trial's subject has a fingerprint


def test_the_assessment_resources_name_the_second_trial() -> None:
    t = second()
    item = {"date": "2026-07-10", "day": 28, "response": "CR", "evidence": ["Observation/m1"]}
    observation = outcomes.response_observation("t01", item, "strict", trial=t)
    best = outcomes.best_response_observation("t01", {"bestResponse": "CR"}, AS_OF, trial=t)
    ae = outcomes.adverse_event("t01", {"term": "Cytokine release syndrome", "grade": 2, "onset": "2026-06-20"},
                                "MedicationAdministration/i1", trial=t)
    assert best is not None
    for resource in (observation, best, ae):
        validate_output(resource)
        names_only_the_second_trial(resource)
    assert observation["identifier"][0]["value"] == "TEST-0002-t01-response-2026-07-10"
    assert observation["focus"] == [{"reference": "ResearchStudy/test-0002"}] == best["focus"] == ae["study"]
    assert observation["code"]["coding"][0]["display"] == "Leukemia response assessment (TEST-0002 protocol)"


def test_a_trial_whose_version_does_not_begin_with_its_id_is_still_named_by_the_policy() -> None:
    """The loader refuses such a version; a Trial built otherwise still gets a policy naming both."""
    from dataclasses import replace

    odd = replace(second(), ruleset_version="rules/7")
    assert ruleset_policy(odd) == "https://cd7-bridge.example.org/fhir/ruleset/TEST-0002/rules/7"
    assert ruleset_policy(load_trial()) == "https://cd7-bridge.example.org/fhir/ruleset/NCT04762485-rules/2026-11"


# ---------------------------------------------------------------------------------------------- the publisher
class Ehr:
    """An in-memory FHIR server behind ``responses``: read, search by identifier, create, update by id
    (update-as-create), conditional update on the identifier, transactions (when ``transactions``)."""

    def __init__(self, rsps: responses.RequestsMock, transactions: bool = False) -> None:
        self.held: dict[tuple[str, str], Json] = {}
        self.transactions = transactions
        self.counter = 0
        pattern = re.compile(re.escape(BASE) + r"(/.*)?$")
        for method, handler in (("GET", self._get), ("POST", self._post), ("PUT", self._put)):
            rsps.add_callback(method, pattern, handler)

    def _parts(self, url: str) -> tuple[list[str], dict[str, list[str]]]:
        split = urlsplit(url)
        return [p for p in split.path.removeprefix("/fhir").split("/") if p], parse_qs(split.query)

    def _found(self, rtype: str, query: dict[str, list[str]]) -> list[Json]:
        system, _, value = query.get("identifier", ["|"])[0].partition("|")
        return [r for (t, _), r in sorted(self.held.items()) if t == rtype
                and any(i.get("system") == system and i.get("value") == value
                        for i in (r.get("identifier") if isinstance(r.get("identifier"), list)
                                  else [r.get("identifier") or {}]))]

    def _store(self, rtype: str, rid: str | None, body: Json) -> tuple[Json, bool]:
        if rid is None:
            self.counter += 1
            rid = f"srv-{self.counter}"
        old = self.held.get((rtype, rid))
        version = str(int(old["meta"]["versionId"]) + 1) if old else "1"
        self.held[(rtype, rid)] = {**body, "id": rid, "meta": {"versionId": version}}
        return self.held[(rtype, rid)], old is None

    @staticmethod
    def _answer(stored: Json, created: bool) -> tuple[int, dict[str, str], str]:
        version = stored["meta"]["versionId"]
        return (201 if created else 200), {**FHIR, "ETag": f'W/"{version}"'}, json.dumps(stored)

    def _get(self, req: Any) -> tuple[int, dict[str, str], str]:
        parts, query = self._parts(req.url)
        if parts == ["metadata"]:
            rest: Json = {"mode": "server", "interaction": [{"code": "transaction"}] if self.transactions else []}
            return 200, FHIR, json.dumps({"resourceType": "CapabilityStatement", "status": "active",
                                          "kind": "instance", "fhirVersion": "4.0.1", "rest": [rest]})
        if len(parts) == 2:
            found = self.held.get((parts[0], parts[1]))
            if found is None:
                return 404, FHIR, json.dumps({"resourceType": "OperationOutcome",
                                              "issue": [{"severity": "error", "code": "not-found"}]})
            return 200, FHIR, json.dumps(found)
        entries = [{"resource": r, "search": {"mode": "match"}} for r in self._found(parts[0], query)]
        return 200, FHIR, json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": entries})

    def _post(self, req: Any) -> tuple[int, dict[str, str], str]:
        parts, _ = self._parts(req.url)
        body = json.loads(req.body)
        if parts:
            return self._answer(*self._store(parts[0], None, body))
        replies, assigned = [], {}
        for entry in body["entry"]:
            text = json.dumps(entry["resource"])
            for full, ref in assigned.items():
                text = text.replace(json.dumps(full), json.dumps(ref))
            resource, request = json.loads(text), entry["request"]
            path, _, query = request["url"].partition("?")
            found = self._found(path, parse_qs(query)) if request["method"] == "PUT" and query else []
            rid = path.split("/")[1] if "/" in path else (found[0]["id"] if found else None)
            stored, created = self._store(resource["resourceType"], rid, resource)
            assigned[entry["fullUrl"]] = f"{stored['resourceType']}/{stored['id']}"
            replies.append({"response": {"status": "201 Created" if created else "200 OK",
                                         "location": f"{assigned[entry['fullUrl']]}/_history/1",
                                         "etag": f'W/"{stored["meta"]["versionId"]}"'}, "resource": stored})
        return 200, FHIR, json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": replies})

    def _put(self, req: Any) -> tuple[int, dict[str, str], str]:
        parts, query = self._parts(req.url)
        body = json.loads(req.body)
        if len(parts) == 2:
            return self._answer(*self._store(parts[0], parts[1], body))
        found = self._found(parts[0], query)
        return self._answer(*self._store(parts[0], found[0]["id"] if found else None, body))

    def of_type(self, rtype: str) -> list[Json]:
        return [r for (t, _), r in sorted(self.held.items()) if t == rtype]


@pytest.fixture
def client() -> Iterator[FhirClient]:
    with FhirClient(BASE, Settings(retries=0), sleep=lambda _s: None) as fhir:
        yield fhir


@pytest.mark.parametrize("transactions", [False, True], ids=["two-requests", "transaction"])
def test_the_publisher_writes_the_second_trial(rsps: responses.RequestsMock, client: FhirClient,
                                               transactions: bool) -> None:
    t = second()
    ehr = Ehr(rsps, transactions)
    options = RuleOptions.for_trial(t, AS_OF)
    study = publish_study(client, clock=clock, conformance=False, trial=t)
    publication = publish_prescreen(client, screenings(), options, clock=clock, trial=t)
    doc = {"patient": "Patient/p01", "dayZero": "2026-06-01", "bestResponse": "CR",
           "assessments": [{"date": "2026-06-29", "day": 28, "response": "CR", "evidence": []}]}
    assessed = publish_assessment(client, doc, date(2026, 7, 20), "strict", "operational", clock=clock, trial=t)

    assert study.reference == "ResearchStudy/test-0002" and publication.written and len(assessed) == 3
    subjects = ehr.of_type("ResearchSubject")
    assert len(subjects) == len(publication.written)
    assert all(s["identifier"][0]["value"] == "TEST-0002-" + s["individual"]["reference"].removeprefix("Patient/")
               for s in subjects)
    assert next(s for s in subjects if s["individual"]["reference"] == "Patient/p01")["status"] == \
        "follow-up"  # the assessment moved it along (day 49), found by the second trial's identifier
    provenances = ehr.of_type("Provenance")
    assert len(provenances) == 1 + len(subjects) + len(assessed)  # the study, each subject, each assessment write
    assert all(p["policy"] == [POLICY] for p in provenances)
    for resource in ehr.held.values():
        names_only_the_second_trial(resource)


# ---------------------------------------------------------------------------------------------- publish-study
@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state.sqlite3"
    monkeypatch.setenv("BRIDGE_DB_PATH", str(path))
    monkeypatch.setenv("BRIDGE_RETRIES", "0")
    monkeypatch.delenv("BRIDGE_TRIAL", raising=False)
    return path


def published(db: Path) -> dict[str, tuple[str, str, str | None]]:
    """key -> (type, id, EHR version) of every recorded resource."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT key, resource_type, resource_id, version FROM published").fetchall()
    return {key: (rtype, rid, version) for key, rtype, rid, version in rows}


def publish_study_cli(*args: str) -> Any:
    return CliRunner().invoke(build_app(), ["publish-study", BASE, "--json", *args])


def test_publish_study_with_trial_and_save_records_what_the_ehr_holds(rsps: responses.RequestsMock,
                                                                        db: Path) -> None:
    ehr = Ehr(rsps)
    done = publish_study_cli("--trial", str(SECOND), "--save")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"reference": "ResearchStudy/test-0002", "outcome": "created", "version": "1"}
    held = ehr.held[("ResearchStudy", "test-0002")]
    assert held["identifier"][0]["value"] == "TEST-0002"
    names_only_the_second_trial(held)
    assert ehr.held[("CodeSystem", "test-0002-criteria")]  # the trial's own criteria CodeSystem
    rows = published(db)
    assert rows["ResearchStudy|test-0002"] == ("ResearchStudy", "test-0002", "1")
    assert {r[0] for r in rows.values()} == {"ResearchStudy", "Provenance"}  # not the conformance resources
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT trial_id, ruleset_version FROM trial_versions").fetchall() == [
            ("TEST-0002", "TEST-0002-rules/1")]

    again = publish_study_cli("--trial", str(SECOND))  # the store exists: kept in step without --save
    assert again.exit_code == 0 and json.loads(again.stdout)["outcome"] == "unchanged"
    assert published(db) == rows


def test_publish_study_without_save_and_without_a_store_creates_none(rsps: responses.RequestsMock,
                                                                      db: Path) -> None:
    ehr = Ehr(rsps)
    done = publish_study_cli()
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["reference"] == "ResearchStudy/nct04762485"  # the shipped trial by default
    assert ("ResearchStudy", "nct04762485") in ehr.held and not db.exists()


def test_publish_study_takes_the_trial_setting(rsps: responses.RequestsMock, db: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    Ehr(rsps)
    monkeypatch.setenv("BRIDGE_TRIAL", str(SECOND))
    done = publish_study_cli()
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["reference"] == "ResearchStudy/test-0002"


def test_a_changed_trial_file_under_a_recorded_version_is_refused_before_anything_is_sent(
        rsps: responses.RequestsMock, db: Path, tmp_path: Path) -> None:
    ehr = Ehr(rsps)
    assert publish_study_cli("--trial", str(SECOND), "--save").exit_code == 0
    edited = tmp_path / "edited.yaml"
    edited.write_text(SECOND.read_text(encoding="utf-8").replace("target_enrollment: 30", "target_enrollment: 31"),
                      encoding="utf-8")
    before = {k: v["meta"]["versionId"] for k, v in ehr.held.items()}
    done = publish_study_cli("--trial", str(edited))
    assert done.exit_code == 8 and "already recorded with different content" in done.output
    assert {k: v["meta"]["versionId"] for k, v in ehr.held.items()} == before
