"""Versions of what the bridge published: the index keeps them, /fhir serves them (issue #14 item 1).

The store numbers each changed resource's versions (a write the EHR only re-stamped is no new version);
migration 7 makes what an older file holds version 1. Read answers ``ETag: W/"<versionId>"`` and
``Last-Modified`` and honours ``If-None-Match`` / ``If-Modified-Since`` with 304; ``vread`` and instance- and
type-level ``_history`` serve every kept version as valid R4 ``history`` Bundles.
"""

from __future__ import annotations

from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridge.config import Settings
from bridge.publish.validate import validate_r4
from bridge.service.app import create_app
from bridge.state import PublishedRecord
from bridge.state.published import PublishedVersion
from bridge.state.sqlite_state import SqliteState

from .test_fhir_api import AUTH, BASE, T0, TOKEN, publish, subject
from .test_state_migrations import OUTBOX_DDL_74616D1, legacy_file
from .test_state_migrations import T0 as LEGACY_T0

KEY = "ResearchSubject|x|rs-p1"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteState]:
    s = SqliteState(tmp_path / "state.sqlite3")
    yield s
    s.close()


@pytest.fixture
def three_versions(store: SqliteState) -> SqliteState:
    """rs-p1: candidate at T0, ineligible at T0+60, candidate again at T0+120; rs-p2 once at T0+30."""
    publish(store, subject("p1", "candidate"), T0)
    publish(store, subject("p2", "ineligible"), T0 + 30)
    publish(store, subject("p1", "ineligible"), T0 + 60)
    publish(store, subject("p1", "candidate"), T0 + 120)
    return store


@pytest.fixture
def client(store: SqliteState) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(api_token=TOKEN, public_base_url=BASE), store)) as c:
        yield c


# ------------------------------------------------------------------------------------------ the store


def test_a_changed_resource_is_a_new_version_an_unchanged_one_is_not(store: SqliteState) -> None:
    publish(store, subject("p1", "candidate"), T0)
    publish(store, subject("p1", "candidate"), T0 + 10)  # the same body again
    stamped = subject("p1", "candidate", meta={"versionId": "7", "lastUpdated": "2026-06-01T00:00:00Z"})
    publish(store, stamped, T0 + 20)  # only the EHR's stamps differ
    record = store.get_published(KEY)
    assert record is not None and (record.version_id, record.last_updated, record.updated_at) == (1, T0, T0 + 20)
    publish(store, subject("p1", "ineligible"), T0 + 30)
    publish(store, subject("p1", "candidate", meta={"profile": ["http://example.org/p"]}), T0 + 40)
    record = store.get_published(KEY)
    assert record is not None and (record.version_id, record.last_updated) == (3, T0 + 40)
    assert [(v.version_id, v.resource["status"], v.last_updated) for v in
            store.published_history("ResearchSubject", "rs-p1")] == [
        (3, "candidate", T0 + 40), (2, "ineligible", T0 + 30), (1, "candidate", T0)]
    assert store.published_version("ResearchSubject", "rs-p1", 2) == PublishedVersion(
        "ResearchSubject", "rs-p1", 2, subject("p1", "ineligible"), T0 + 30)
    assert store.published_version("ResearchSubject", "rs-p1", 4) is None


def test_history_of_a_type_newest_first_and_since(three_versions: SqliteState) -> None:
    every = three_versions.published_history("ResearchSubject")
    assert [(v.resource_id, v.version_id) for v in every] == [("rs-p1", 3), ("rs-p1", 2), ("rs-p2", 1),
                                                              ("rs-p1", 1)]
    assert [v.version_id for v in three_versions.published_history("ResearchSubject", since=T0 + 60)] == [3, 2]
    assert three_versions.published_history("ResearchStudy") == []


def test_versions_take_no_part_in_record_equality(three_versions: SqliteState) -> None:
    [found] = three_versions.find_published("ResearchSubject", patient="Patient/p1")
    assert found == PublishedRecord(KEY, "ResearchSubject", "rs-p1", "fp", "1", subject("p1", "candidate"), T0 + 120)
    assert (found.version_id, found.last_updated) == (3, T0 + 120)


def test_a_record_without_an_id_has_no_version(store: SqliteState) -> None:
    body = {"resourceType": "Provenance"}
    store.put_published(PublishedRecord("Provenance|x", "Provenance", None, "f", None, body, T0))
    record = store.get_published("Provenance|x")
    assert record is not None and record.version_id is None and store.published_history("Provenance") == []


def test_migration_7_makes_what_a_file_holds_version_1(tmp_path: Path) -> None:
    state = SqliteState(legacy_file(tmp_path / "old.sqlite3", OUTBOX_DDL_74616D1))
    try:
        record = state.get_published("ResearchSubject|s|p1")
        assert record is not None and (record.version_id, record.last_updated) == (1, LEGACY_T0)
        assert [(v.resource_id, v.version_id, v.last_updated) for v in state.published_history("ResearchSubject")] \
            == [("rs1", 1, LEGACY_T0)]
        state.put_published(PublishedRecord("ResearchSubject|s|p1", "ResearchSubject", "rs1", "g", "2",
                                            {"resourceType": "ResearchSubject", "status": "ineligible"},
                                            LEGACY_T0 + 5))
        assert state.published_version("ResearchSubject", "rs1", 2) is not None
    finally:
        state.close()


# ------------------------------------------------------------------------------------------ read and vread


def test_read_has_etag_and_last_modified(client: TestClient, three_versions: SqliteState) -> None:
    resp = client.get("/fhir/ResearchSubject/rs-p1", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["etag"] == 'W/"3"' and resp.headers["last-modified"] == formatdate(T0 + 120, usegmt=True)
    body = resp.json()
    assert body["meta"] == {"versionId": "3", "lastUpdated": "2026-05-28T20:28:40.000Z"}
    assert body["status"] == "candidate"
    validate_r4(body)


@pytest.mark.parametrize(("headers", "status"), [
    ({"If-None-Match": 'W/"3"'}, 304), ({"If-None-Match": '"3"'}, 304), ({"If-None-Match": 'W/"1", W/"3"'}, 304),
    ({"If-None-Match": "*"}, 304), ({"If-None-Match": 'W/"2"'}, 200),
    ({"If-Modified-Since": formatdate(T0 + 120, usegmt=True)}, 304),
    ({"If-Modified-Since": formatdate(T0 + 3600, usegmt=True)}, 304),
    ({"If-Modified-Since": formatdate(T0 + 119, usegmt=True)}, 200), ({"If-Modified-Since": "yesterday"}, 200),
    ({"If-None-Match": 'W/"2"', "If-Modified-Since": formatdate(T0 + 3600, usegmt=True)}, 200),  # ETag decides
])
def test_conditional_read(client: TestClient, three_versions: SqliteState, headers: dict[str, str],
                          status: int) -> None:
    resp = client.get("/fhir/ResearchSubject/rs-p1", headers={**AUTH, **headers})
    assert resp.status_code == status
    assert resp.headers["etag"] == 'W/"3"'
    if status == 304:
        assert resp.content == b""


def test_vread_serves_each_kept_version(client: TestClient, three_versions: SqliteState) -> None:
    for vid, status in ((1, "candidate"), (2, "ineligible"), (3, "candidate")):
        resp = client.get(f"/fhir/ResearchSubject/rs-p1/_history/{vid}", headers=AUTH)
        assert resp.status_code == 200 and resp.headers["etag"] == f'W/"{vid}"'
        assert (resp.json()["meta"]["versionId"], resp.json()["status"]) == (str(vid), status)
    again = client.get("/fhir/ResearchSubject/rs-p1/_history/2", headers={**AUTH, "If-None-Match": 'W/"2"'})
    assert again.status_code == 304


@pytest.mark.parametrize("url", [
    "/fhir/ResearchSubject/rs-p1/_history/4", "/fhir/ResearchSubject/rs-p1/_history/0",
    "/fhir/ResearchSubject/rs-p1/_history/x", "/fhir/ResearchSubject/rs-p1/_history/%C2%B2",
    "/fhir/ResearchSubject/nope", "/fhir/ResearchSubject/nope/_history", "/fhir/ResearchStudy/rs-p1",
    "/fhir/ResearchSubject/rs-p9/_history/1"])
def test_unknown_resources_and_versions_are_404(client: TestClient, three_versions: SqliteState, url: str) -> None:
    resp = client.get(url, headers=AUTH)
    assert resp.status_code == 404 and resp.json()["issue"][0]["code"] == "not-found"


def test_search_serves_the_current_versions(client: TestClient, three_versions: SqliteState) -> None:
    bundle = client.get("/fhir/ResearchSubject", headers=AUTH).json()
    assert [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in bundle["entry"]] == [
        ("rs-p1", "3"), ("rs-p2", "1")]


# ------------------------------------------------------------------------------------------ _history


def entries(bundle: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(e["resource"]["id"], e["resource"]["meta"]["versionId"], e["request"]["method"], e["response"]["status"])
            for e in bundle.get("entry", [])]


def test_instance_history(client: TestClient, three_versions: SqliteState) -> None:
    bundle = client.get("/fhir/ResearchSubject/rs-p1/_history", headers=AUTH).json()
    validate_r4(bundle)
    assert (bundle["type"], bundle["total"]) == ("history", 3)
    assert entries(bundle) == [("rs-p1", "3", "PUT", "200 OK"), ("rs-p1", "2", "PUT", "200 OK"),
                               ("rs-p1", "1", "POST", "201 Created")]
    first, last = bundle["entry"][0], bundle["entry"][-1]
    assert first["fullUrl"] == f"{BASE}/fhir/ResearchSubject/rs-p1"  # never version-specific (bdl-8)
    assert first["request"]["url"] == "ResearchSubject/rs-p1" and last["request"]["url"] == "ResearchSubject"
    assert first["response"]["etag"] == 'W/"3"' and first["response"]["lastModified"] == "2026-05-28T20:28:40.000Z"


def test_type_history_pages_and_since(client: TestClient, three_versions: SqliteState) -> None:
    page = client.get("/fhir/ResearchSubject/_history?_count=3", headers=AUTH).json()
    validate_r4(page)
    assert page["total"] == 4 and [e[:2] for e in entries(page)] == [("rs-p1", "3"), ("rs-p1", "2"), ("rs-p2", "1")]
    nxt = next(lk["url"] for lk in page["link"] if lk["relation"] == "next")
    assert nxt == f"{BASE}/fhir/ResearchSubject/_history?_count=3&_offset=3"
    rest = client.get(nxt.removeprefix(BASE), headers=AUTH).json()
    assert [e[:2] for e in entries(rest)] == [("rs-p1", "1")]
    assert not any(lk["relation"] == "next" for lk in rest["link"])
    since = client.get("/fhir/ResearchSubject/_history?_since=2026-05-28T20:27:40Z", headers=AUTH).json()
    assert [e[:2] for e in entries(since)] == [("rs-p1", "3"), ("rs-p1", "2")]
    counted = client.get("/fhir/ResearchSubject/rs-p1/_history?_count=0", headers=AUTH).json()
    assert counted["total"] == 3 and "entry" not in counted
    empty = client.get("/fhir/ResearchStudy/_history", headers=AUTH).json()
    assert empty["total"] == 0 and "entry" not in empty
    validate_r4(empty)
