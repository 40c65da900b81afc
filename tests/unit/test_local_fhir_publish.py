"""Every ``--publish`` records what the EHR returned in the store's published index (issue #14 item 2).

``FakeEhr`` is a small in-memory FHIR server behind ``responses``: search by identifier, conditional update,
create, update by id with If-Match, read, and transactions; it answers with the resource (``bodies``) or only
with ``Location`` and ``ETag``. The commands run in-process (``typer``'s runner) on the bundled samples.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from typer.testing import CliRunner

from bridge.cli import build_app
from bridge.client import FhirClient
from bridge.config import Settings
from bridge.localfhir.remote import RecordingClient, record_writes, transaction_writes
from bridge.publish.subject import SUBJECT_ID_SYSTEM
from bridge.publish.validate import REPO_ROOT
from bridge.state.sqlite_state import SqliteState

BASE = "https://ehr.example.org/fhir"
FHIR = {"Content-Type": "application/fhir+json"}
SITE_MAP = str(REPO_ROOT / "samples" / "site-map.yaml")
PRESCREEN = str(REPO_ROOT / "samples" / "prescreen" / "bundle.json")
TREATED = str(REPO_ROOT / "samples" / "treated" / "bundle.json")
Json = dict[str, Any]


class FakeEhr:
    """Resources by (type, id), versioned; ``writes`` counts the requests that changed something."""

    def __init__(self, rsps: responses.RequestsMock, bodies: bool = True, fail_on: int | None = None,
                 transactions: bool = False) -> None:
        self.resources: dict[tuple[str, str], Json] = {}
        self.bodies, self.fail_on, self.transactions = bodies, fail_on, transactions
        self.writes = 0
        pattern = re.compile(re.escape(BASE) + r"(/.*)?$")
        rsps.add_callback("GET", pattern, self._get)
        rsps.add_callback("POST", pattern, self._post)
        rsps.add_callback("PUT", pattern, self._put)

    # -------------------------------------------------------------------- helpers

    @staticmethod
    def _parts(url: str) -> tuple[list[str], dict[str, list[str]]]:
        split = urlsplit(url)
        return [p for p in split.path.removeprefix(urlsplit(BASE).path).split("/") if p], parse_qs(split.query)

    def _matches(self, rtype: str, query: dict[str, list[str]]) -> list[Json]:
        wanted = query.get("identifier", [""])[0]
        system, _, value = wanted.partition("|")
        found = []
        for (t, _), res in sorted(self.resources.items()):
            idents = res.get("identifier") or []
            idents = idents if isinstance(idents, list) else [idents]
            if t == rtype and any(i.get("system") == system and i.get("value") == value for i in idents):
                found.append(res)
        return found

    def _store(self, rtype: str, rid: str | None, body: Json) -> tuple[Json, bool]:
        self.writes += 1
        if self.fail_on is not None and self.writes == self.fail_on:
            raise Rejected
        created = rid is None
        rid = rid or f"srv-{len(self.resources) + 1}"
        old = self.resources.get((rtype, rid))
        version = str(int(old["meta"]["versionId"]) + 1) if old else "1"
        stored = {**body, "id": rid, "meta": {"versionId": version, "lastUpdated": "2026-06-15T10:00:00Z"}}
        self.resources[(rtype, rid)] = stored
        return stored, created or old is None

    def _answer(self, stored: Json, created: bool) -> tuple[int, dict[str, str], str]:
        rtype, rid, version = stored["resourceType"], stored["id"], stored["meta"]["versionId"]
        headers = {**FHIR, "ETag": f'W/"{version}"', "Location": f"{BASE}/{rtype}/{rid}/_history/{version}"}
        return (201 if created else 200), headers, json.dumps(stored) if self.bodies else ""

    @staticmethod
    def _rejected() -> tuple[int, dict[str, str], str]:
        outcome = {"resourceType": "OperationOutcome",
                   "issue": [{"severity": "error", "code": "business-rule", "diagnostics": "no"}]}
        return 422, FHIR, json.dumps(outcome)

    # -------------------------------------------------------------------- interactions

    def _get(self, req: Any) -> tuple[int, dict[str, str], str]:
        parts, query = self._parts(req.url)
        if parts == ["metadata"]:
            rest: Json = {"mode": "server"}
            if self.transactions:
                rest["interaction"] = [{"code": "transaction"}]
            return 200, FHIR, json.dumps({"resourceType": "CapabilityStatement", "status": "active",
                                          "date": "2026-01-01", "kind": "instance", "fhirVersion": "4.0.1",
                                          "format": ["json"], "rest": [rest]})
        if len(parts) == 2:
            found = self.resources.get((parts[0], parts[1]))
            if found is None:
                return 404, FHIR, json.dumps({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "not-found"}]})
            return 200, {**FHIR, "ETag": f'W/"{found["meta"]["versionId"]}"'}, json.dumps(found)
        entries = [{"resource": r, "search": {"mode": "match"}} for r in self._matches(parts[0], query)]
        return 200, FHIR, json.dumps({"resourceType": "Bundle", "type": "searchset", "total": len(entries),
                                      "entry": entries})

    def _post(self, req: Any) -> tuple[int, dict[str, str], str]:
        parts, _ = self._parts(req.url)
        body = json.loads(req.body)
        try:
            if not parts:
                return self._transaction(body)
            return self._answer(*self._store(parts[0], None, body))
        except Rejected:
            return self._rejected()

    def _put(self, req: Any) -> tuple[int, dict[str, str], str]:
        parts, query = self._parts(req.url)
        body = json.loads(req.body)
        try:
            if len(parts) == 2:
                current = self.resources[(parts[0], parts[1])]
                if req.headers.get("If-Match") not in (None, f'W/"{current["meta"]["versionId"]}"'):
                    return 412, FHIR, json.dumps({"resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "conflict"}]})
                return self._answer(*self._store(parts[0], parts[1], body))
            match = self._matches(parts[0], query)
            return self._answer(*self._store(parts[0], match[0]["id"] if match else None, body))
        except Rejected:
            return self._rejected()

    def _transaction(self, bundle: Json) -> tuple[int, dict[str, str], str]:
        assigned: dict[str, str] = {}
        replies = []
        for entry in bundle["entry"]:
            text = json.dumps(entry["resource"])
            for full, ref in assigned.items():  # references to earlier entries become what was assigned
                text = text.replace(json.dumps(full), json.dumps(ref))
            resource, request = json.loads(text), entry["request"]
            path, _, query = request["url"].partition("?")
            parts = path.split("/")
            if request["method"] == "PUT" and len(parts) == 2:
                rid: str | None = parts[1]
            elif request["method"] == "PUT":
                match = self._matches(parts[0], parse_qs(query))
                rid = match[0]["id"] if match else None
            else:
                rid = None
            stored, created = self._store(resource["resourceType"], rid, resource)
            ref = f"{stored['resourceType']}/{stored['id']}"
            assigned[entry["fullUrl"]] = ref  # unversioned, as servers commonly rewrite
            version = stored["meta"]["versionId"]
            reply: Json = {"response": {"status": "201 Created" if created else "200 OK",
                                        "location": f"{ref}/_history/{version}", "etag": f'W/"{version}"'}}
            if self.bodies:
                reply["resource"] = stored
            replies.append(reply)
        return 200, FHIR, json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": replies})

    def of_type(self, rtype: str) -> list[Json]:
        return [r for (t, _), r in sorted(self.resources.items()) if t == rtype]


class Rejected(Exception):
    pass


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state.sqlite3"
    monkeypatch.setenv("BRIDGE_DB_PATH", str(path))
    monkeypatch.setenv("BRIDGE_RETRIES", "0")
    return path


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def run(*args: str) -> Any:
    return CliRunner().invoke(build_app(), list(args))


def prescreen(*extra: str) -> Any:
    return run("prescreen", PRESCREEN, "--site-map", SITE_MAP, "--as-of", "2026-06-15", *extra)


def records(db: Path) -> dict[str, tuple[Any, ...]]:
    """key -> (type, id, EHR version, index version, body) of every current record."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT key, resource_type, resource_id, version, version_id, resource FROM published")
        return {r[0]: (r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows.fetchall()}


def history(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT resource_type, resource_id, version_id FROM published_history "
                            "ORDER BY 1, 2, 3").fetchall()


def of_type(recorded: dict[str, tuple[Any, ...]], rtype: str) -> dict[str, tuple[Any, ...]]:
    return {k: v for k, v in recorded.items() if v[0] == rtype}


# ------------------------------------------------------------------------------------------ prescreen --publish


def test_prescreen_publish_records_the_ehrs_ids_and_versions(db: Path, rsps: responses.RequestsMock) -> None:
    ehr = FakeEhr(rsps)
    out = prescreen("--publish", BASE)
    assert out.exit_code == 0, out.output
    recorded = records(db)
    subjects = of_type(recorded, "ResearchSubject")
    on_server = {r["id"]: r for r in ehr.of_type("ResearchSubject")}
    assert subjects and len(subjects) == len(on_server)
    for key, (_, rid, version, index_version, body) in subjects.items():
        assert rid in on_server and body == on_server[rid] and version == on_server[rid]["meta"]["versionId"]
        assert key == f"ResearchSubject|{SUBJECT_ID_SYSTEM}|{body['identifier'][0]['value']}" and index_version == 1
    provenance = {v[1]: v for v in of_type(recorded, "Provenance").values() if v[2] is not None}
    assert set(provenance) == {r["id"] for r in ehr.of_type("Provenance")}
    assert {t["reference"] for v in provenance.values() for t in v[4]["target"]} == {
        f"ResearchSubject/{rid}/_history/1" for rid in on_server}
    study = recorded["ResearchStudy|nct04762485"]
    assert (study[1], study[2]) == ("nct04762485", None)  # the study the subjects reference, recorded locally
    (local,) = [v for v in of_type(recorded, "Provenance").values() if v[2] is None]  # ... with its Provenance
    assert local[4]["target"] == [{"reference": "ResearchStudy/nct04762485/_history/1"}]

    writes, before, versions = ehr.writes, recorded, history(db)
    assert prescreen("--publish", BASE).exit_code == 0
    assert (ehr.writes, records(db), history(db)) == (writes, before, versions)  # nothing new anywhere

    saved = prescreen("--save")  # a local build never replaces what the EHR returned
    assert saved.exit_code == 0, saved.output
    after = records(db)
    assert of_type(after, "ResearchSubject") == subjects and history(db) == versions


@pytest.mark.parametrize("bodies", [True, False])
def test_subjects_published_in_transactions_are_recorded(db: Path, rsps: responses.RequestsMock,
                                                         bodies: bool) -> None:
    ehr = FakeEhr(rsps, bodies=bodies, transactions=True)
    out = prescreen("--publish", BASE)
    assert out.exit_code == 0, out.output
    recorded = records(db)
    subjects = of_type(recorded, "ResearchSubject")
    assert subjects and {v[1] for v in subjects.values()} == {r["id"] for r in ehr.of_type("ResearchSubject")}
    assert all(v[2] == "1" and v[4]["id"] == v[1] for v in subjects.values())
    provenance = {v[1]: v[4] for v in of_type(recorded, "Provenance").values() if v[2] is not None}
    assert set(provenance) == {r["id"] for r in ehr.of_type("Provenance")}
    targets = {t["reference"].split("/_history/")[0] for p in provenance.values() for t in p["target"]}
    assert targets == {f"ResearchSubject/{v[1]}" for v in subjects.values()}  # never a urn:uuid
    writes, versions = ehr.writes, history(db)
    assert prescreen("--publish", BASE).exit_code == 0
    assert (ehr.writes, records(db), history(db)) == (writes, recorded, versions)


def test_answers_without_bodies_are_recorded_from_location_and_etag(db: Path, rsps: responses.RequestsMock) -> None:
    ehr = FakeEhr(rsps, bodies=False)
    assert prescreen("--publish", BASE).exit_code == 0
    subjects = of_type(records(db), "ResearchSubject")
    assert subjects and {v[1] for v in subjects.values()} == {r["id"] for r in ehr.of_type("ResearchSubject")}
    for _, rid, version, _, body in subjects.values():
        assert body["id"] == rid and body["meta"] == {"versionId": "1"} and version == "1"
        assert body["identifier"] == ehr.resources[("ResearchSubject", rid)]["identifier"]


def test_a_fresh_store_reads_back_what_the_ehr_already_holds(tmp_path: Path, db: Path, rsps: responses.RequestsMock,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ehr = FakeEhr(rsps)
    assert prescreen("--publish", BASE).exit_code == 0
    writes = ehr.writes
    other = tmp_path / "other.sqlite3"
    monkeypatch.setenv("BRIDGE_DB_PATH", str(other))
    assert prescreen("--publish", BASE).exit_code == 0
    assert ehr.writes == writes  # everything was unchanged: no write
    subjects = of_type(records(other), "ResearchSubject")
    assert subjects == of_type(records(db), "ResearchSubject")  # read back: the EHR's ids, versions and bodies


def test_what_was_written_before_a_failure_is_recorded(db: Path, rsps: responses.RequestsMock) -> None:
    ehr = FakeEhr(rsps, fail_on=5)  # subject, Provenance, subject, Provenance, then the fifth write is refused
    out = prescreen("--publish", BASE)
    assert out.exit_code == 7, out.output
    recorded = records(db)
    assert len(of_type(recorded, "ResearchSubject")) == 2 and len(of_type(recorded, "Provenance")) == 2
    assert len(ehr.of_type("ResearchSubject")) == 2


# ------------------------------------------------------------------------------------------ assess --publish


def test_assess_publish_records_observations_adverse_events_and_status(db: Path,
                                                                       rsps: responses.RequestsMock) -> None:
    ehr = FakeEhr(rsps)
    assert prescreen("--publish", BASE).exit_code == 0
    out = run("assess", TREATED, "--site-map", SITE_MAP, "--as-of", "2026-12-31", "--publish", BASE)
    assert out.exit_code == 0, out.output
    recorded = records(db)
    for rtype in ("Observation", "AdverseEvent"):
        mine = of_type(recorded, rtype)
        assert mine and {v[1] for v in mine.values()} == {r["id"] for r in ehr.of_type(rtype)}
        assert all(v[2] == "1" and v[1].startswith("srv-") for v in mine.values())
    moved = [v for v in of_type(recorded, "ResearchSubject").values() if v[2] == "2"]
    assert moved and all(v[4]["status"] in ("on-study-intervention", "follow-up", "off-study") for v in moved)
    assert all(v[3] == 2 for v in moved)  # the index's own second version of those subjects


def test_assess_save_records_locally_and_twice_adds_nothing(db: Path) -> None:
    args = ("assess", TREATED, "--site-map", SITE_MAP, "--as-of", "2026-12-31", "--save")
    first = run(*args)
    assert first.exit_code == 0, first.output
    recorded, versions = records(db), history(db)
    assert of_type(recorded, "Observation") and of_type(recorded, "AdverseEvent")
    assert all(v[2] is None for v in recorded.values())  # no EHR: local records
    assert run(*args).exit_code == 0
    assert (records(db), history(db)) == (recorded, versions)


# ------------------------------------------------------------------------------------------ transactions


def subject_and_provenance() -> Json:
    subject = {"resourceType": "ResearchSubject", "status": "candidate",
               "identifier": [{"system": SUBJECT_ID_SYSTEM, "value": "NCT04762485-p1"}],
               "study": {"reference": "ResearchStudy/nct04762485"}, "individual": {"reference": "Patient/p1"}}
    prov = {"resourceType": "Provenance", "target": [{"reference": "urn:uuid:1b2c"}],
            "recorded": "2026-06-15T10:00:00Z", "agent": [{"who": {"display": "cd7-bridge"}}]}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1b2c", "resource": subject,
         "request": {"method": "PUT", "url": f"ResearchSubject?identifier={SUBJECT_ID_SYSTEM}|NCT04762485-p1"}},
        {"fullUrl": "urn:uuid:3d4e", "resource": prov, "request": {"method": "POST", "url": "Provenance"}}]}


def test_transaction_entries_without_bodies_get_the_assigned_references() -> None:
    answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {"status": "201 Created", "location": "ResearchSubject/rs-9/_history/1", "etag": 'W/"1"'}},
        {"response": {"status": "201 Created", "location": f"{BASE}/Provenance/pv-3/_history/1"}}]}
    writes = transaction_writes(subject_and_provenance(), answer)
    assert [(w.result.id, w.result.version_id) for w in writes] == [("rs-9", "1"), ("pv-3", None)]
    assert writes[1].sent["target"] == [{"reference": "ResearchSubject/rs-9/_history/1"}]
    failed = {**answer, "entry": [{"response": {"status": "400 Bad Request"}}, answer["entry"][1]]}
    assert [w.sent["resourceType"] for w in transaction_writes(subject_and_provenance(), failed)] == ["Provenance"]


@pytest.mark.parametrize("bodies", [True, False])
def test_a_transaction_through_the_recording_client_is_recorded(tmp_path: Path, rsps: responses.RequestsMock,
                                                                bodies: bool) -> None:
    ehr = FakeEhr(rsps, bodies=bodies)
    store = SqliteState(tmp_path / "s.sqlite3")
    try:
        with RecordingClient(BASE, Settings(retries=0)) as client:
            client.transaction(subject_and_provenance())
            recorded = record_writes(store, client.writes)
        assert recorded == ["ResearchSubject/srv-1", "Provenance/srv-2"]
        (prov,) = store.find_published("Provenance")
        assert prov.resource["target"] == [{"reference": "ResearchSubject/srv-1" if bodies  # as the EHR rewrote it
                                            else "ResearchSubject/srv-1/_history/1"}]  # what was assigned
        if bodies:
            assert prov.resource == ehr.resources[("Provenance", "srv-2")]
        (subject,) = store.find_published("ResearchSubject", patient="Patient/p1")
        assert (subject.served_id, subject.version) == ("srv-1", "1")
    finally:
        store.close()


def test_the_recording_client_is_a_client_that_keeps_only_successful_writes(rsps: responses.RequestsMock) -> None:
    FakeEhr(rsps, fail_on=2)
    with RecordingClient(BASE, Settings(retries=0)) as client:
        assert isinstance(client, FhirClient)
        client.create({"resourceType": "Provenance", "target": [{"reference": "Patient/p1"}]})
        with pytest.raises(Exception, match="422|rejected|business"):
            client.create({"resourceType": "Provenance", "target": [{"reference": "Patient/p2"}]})
        client.read("Provenance", "srv-1")
        assert [(w.sent["target"][0]["reference"], w.result.id) for w in client.writes] == [("Patient/p1", "srv-1")]
