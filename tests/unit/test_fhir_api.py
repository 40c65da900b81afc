"""The /fhir search API through the real app (FastAPI's TestClient): issue #14 item 1.

Paging that ends (``_count=0`` has no ``next``), the result parameters (``_summary``, ``_total``, ``_elements``,
``_sort``, ``_pretty``, ``_format``), tokens and references with OR and systems, ``_lastUpdated``, 406 for
formats it cannot write, 400 naming the parameter for every bad value (never 500, never silently accepted),
absolute URLs from ``public_base_url`` and never from ``Host``, no empty arrays or objects, HEAD wherever GET
is, and a CapabilityStatement whose every listed parameter is accepted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridge.config import Settings
from bridge.publish.validate import validate_r4
from bridge.service.app import create_app
from bridge.service.fhir_api import public_base
from bridge.service.fhir_params import SEARCH_PARAMS
from bridge.state import PublishedRecord
from bridge.state.sqlite_state import SqliteState

TOKEN = "fhir-api-token"
BASE = "https://bridge.example.org/cd7"
FHIR = "application/fhir+json"
IDENTIFIER_SYSTEM = "https://cd7-bridge.example.org/fhir/NamingSystem/research-subject"
STATUS_SYSTEM = "http://hl7.org/fhir/research-subject-status"
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STATUSES = {"p1": "candidate", "p2": "ineligible", "p3": "potential-candidate", "p4": "ineligible",
            "p5": "candidate"}


def subject(pid: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ResearchSubject", "id": f"rs-{pid}", "status": status,
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": f"NCT04762485-{pid}"}],
            "study": {"reference": "ResearchStudy/nct04762485"}, "individual": {"reference": f"Patient/{pid}"},
            **extra}


def publish(store: SqliteState, resource: dict[str, Any], at: float) -> None:
    rtype, rid = resource["resourceType"], resource["id"]
    store.put_published(PublishedRecord(f"{rtype}|x|{rid}", rtype, rid, "fp", "1", resource, at))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteState]:
    s = SqliteState(tmp_path / "state.sqlite3")
    yield s
    s.close()


@pytest.fixture
def populated(store: SqliteState) -> SqliteState:
    """Five subjects last updated one hour apart (p1 first), and the study."""
    for n, (pid, status) in enumerate(STATUSES.items()):
        publish(store, subject(pid, status), T0 + 3600 * n)
    publish(store, {"resourceType": "ResearchStudy", "id": "nct04762485", "status": "active",
                    "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT04762485"}]}, T0)
    return store


@pytest.fixture
def client(store: SqliteState) -> Iterator[TestClient]:
    settings = Settings(api_token=TOKEN, webhook_secret="w" * 32, public_base_url=BASE + "/")
    with TestClient(create_app(settings, store)) as c:
        yield c


def get(client: TestClient, url: str, **headers: str) -> Any:
    resp = client.get(url, headers={**AUTH, **headers})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith(FHIR)
    return resp.json()


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((lk["url"] for lk in bundle["link"] if lk["relation"] == relation), None)


def empties(value: Any, path: str = "$") -> list[str]:
    """Paths of every empty array, object or string in a JSON document."""
    if value in ([], {}, "", None):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in empties(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in empties(v, f"{path}[{i}]")]
    return []


# ------------------------------------------------------------------------------------------ paging and counts


def test_count_zero_gives_the_total_and_neither_entries_nor_next(client: TestClient, populated: SqliteState) -> None:
    bundle = get(client, "/fhir/ResearchSubject?_count=0")
    assert bundle["total"] == 5 and "entry" not in bundle
    assert [lk["relation"] for lk in bundle["link"]] == ["self"]
    validate_r4(bundle)


def test_following_next_visits_every_match_once_and_ends(client: TestClient, populated: SqliteState) -> None:
    url: str | None = "/fhir/ResearchSubject?_count=2"
    seen, pages = [], 0
    while url is not None:
        bundle = get(client, url.removeprefix(BASE))
        assert bundle["total"] == 5
        seen += ids(bundle)
        url, pages = link(bundle, "next"), pages + 1
        assert pages <= 3
    assert seen == [f"rs-p{i}" for i in range(1, 6)] and pages == 3
    last = get(client, "/fhir/ResearchSubject?_count=2&_offset=4")
    assert link(last, "previous") == f"{BASE}/fhir/ResearchSubject?_count=2&_offset=2"
    assert link(last, "first") == f"{BASE}/fhir/ResearchSubject?_count=2&_offset=0"
    beyond = get(client, "/fhir/ResearchSubject?_offset=50")
    assert beyond["total"] == 5 and "entry" not in beyond and link(beyond, "next") is None


@pytest.mark.parametrize("query", ["_summary=count", "_summary=count&_count=3", "_count=0&_totalMethod=count",
                                   "_total=accurate&_count=0", "_total=estimate&_summary=count"])
def test_summary_count_and_total(client: TestClient, populated: SqliteState, query: str) -> None:
    bundle = get(client, f"/fhir/ResearchSubject?status=ineligible&{query}")
    assert bundle["total"] == 2 and "entry" not in bundle and link(bundle, "next") is None


def test_total_none_leaves_the_total_out(client: TestClient, populated: SqliteState) -> None:
    bundle = get(client, "/fhir/ResearchSubject?_total=none")
    assert "total" not in bundle and len(bundle["entry"]) == 5
    assert "total" not in get(client, "/fhir/ResearchSubject?_totalMethod=none&_count=0")


def test_a_huge_count_is_capped_not_refused(client: TestClient, populated: SqliteState) -> None:
    bundle = get(client, "/fhir/ResearchSubject?_count=" + "9" * 40)
    assert len(bundle["entry"]) == 5


# ------------------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize(("query", "expected"), [
    ("status=ineligible,potential-candidate", ["rs-p2", "rs-p3", "rs-p4"]),
    (f"status={STATUS_SYSTEM}|ineligible", ["rs-p2", "rs-p4"]),
    (f"status={STATUS_SYSTEM}|ineligible,{STATUS_SYSTEM}|candidate", ["rs-p1", "rs-p2", "rs-p4", "rs-p5"]),
    (f"status={STATUS_SYSTEM}|", ["rs-p1", "rs-p2", "rs-p3", "rs-p4", "rs-p5"]),
    ("status=http://other.example|ineligible", []),
    ("status=|ineligible", []),  # a code element has its implicit system: "no system" matches nothing
    ("status=candidate&status=ineligible", []),  # a repeated parameter is AND
    (f"identifier={IDENTIFIER_SYSTEM}|NCT04762485-p3", ["rs-p3"]),
    ("identifier=NCT04762485-p3,NCT04762485-p4", ["rs-p3", "rs-p4"]),
    (f"identifier={IDENTIFIER_SYSTEM}|", ["rs-p1", "rs-p2", "rs-p3", "rs-p4", "rs-p5"]),
    ("identifier=|NCT04762485-p3", []),
    ("_id=rs-p2,rs-p5", ["rs-p2", "rs-p5"]),
    ("_id=|rs-p2", ["rs-p2"]),
    ("patient=Patient/p1,p2", ["rs-p1", "rs-p2"]),
    ("individual=http://ehr.example/fhir/Patient/p3", ["rs-p3"]),
    ("study=nct04762485&patient=p4", ["rs-p4"]),
    ("study=ResearchStudy/other", []),
    ("_lastUpdated=ge2026-05-28T21:26:40Z&_lastUpdated=lt2026-05-28T23:26:40Z", ["rs-p2", "rs-p3"]),
    ("_lastUpdated=gt2026-05-28T22:26:40Z", ["rs-p4", "rs-p5"]),  # gt: after the whole second
    ("_lastUpdated=2026-05-28T23:26:40%2B01:00", ["rs-p3"]),
    ("_lastUpdated=2026-05-28T22:26", ["rs-p3"]),  # a minute's precision covers the minute
    ("_lastUpdated=eb2026-05-28T21:26:40Z,sa2026-05-29T00:00:00Z", ["rs-p1", "rs-p5"]),
    ("_lastUpdated=ne2026-05-28", ["rs-p5"]),  # p5 is on the 29th
    ("_lastUpdated=le2026-05", ["rs-p1", "rs-p2", "rs-p3", "rs-p4", "rs-p5"]),
    ("_lastUpdated=lt2026", []),
])
def test_search_parameters(client: TestClient, populated: SqliteState, query: str, expected: list[str]) -> None:
    bundle = get(client, f"/fhir/ResearchSubject?{query}")
    assert sorted(ids(bundle)) == expected and bundle["total"] == len(expected)


def test_research_study_search(client: TestClient, populated: SqliteState) -> None:
    assert ids(get(client, "/fhir/ResearchStudy?status=http://hl7.org/fhir/research-study-status|active")) == [
        "nct04762485"]
    assert ids(get(client, "/fhir/ResearchStudy?identifier=https://clinicaltrials.gov|NCT04762485")) == [
        "nct04762485"]


@pytest.mark.parametrize(("query", "expected"), [
    ("_sort=_lastUpdated", ["rs-p1", "rs-p2", "rs-p3", "rs-p4", "rs-p5"]),
    ("_sort=-_lastUpdated", ["rs-p5", "rs-p4", "rs-p3", "rs-p2", "rs-p1"]),
    ("_sort=status,-_id", ["rs-p5", "rs-p1", "rs-p4", "rs-p2", "rs-p3"]),
    ("_sort=-patient&_count=2", ["rs-p5", "rs-p4"]),
])
def test_sort(client: TestClient, populated: SqliteState, query: str, expected: list[str]) -> None:
    assert ids(get(client, f"/fhir/ResearchSubject?{query}")) == expected


def test_sort_follows_updates(client: TestClient, populated: SqliteState) -> None:
    publish(populated, subject("p1", "ineligible"), T0 + 10 * 3600)
    assert ids(get(client, "/fhir/ResearchSubject?_sort=-_lastUpdated&_count=1")) == ["rs-p1"]


def test_elements_and_summary_shape_each_resource(client: TestClient, store: SqliteState) -> None:
    publish(store, subject("p1", "candidate", assignedArm="a", text={"status": "generated", "div": "<div>x</div>"},
                           period={"start": "2026-01-01"}), T0)
    subsetted = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
                 "display": "subsetted"}
    mandatory = {"resourceType", "id", "meta", "status", "study", "individual"}
    cases = {"_elements=period": mandatory | {"period"},
             "_elements=ResearchSubject.assignedArm,identifier": mandatory | {"assignedArm", "identifier"},
             "_summary=true": mandatory | {"identifier", "period"}, "_summary=text": mandatory | {"text"},
             "_summary=data": mandatory | {"identifier", "period", "assignedArm"}}
    for query, keys in cases.items():
        for url in (f"/fhir/ResearchSubject?{query}", f"/fhir/ResearchSubject/rs-p1?{query}"):
            body = get(client, url)
            resource = body["entry"][0]["resource"] if body["resourceType"] == "Bundle" else body
            assert set(resource) == keys, (url, set(resource))
            assert resource["meta"]["tag"] == [subsetted]
            validate_r4(body)
    whole = get(client, "/fhir/ResearchSubject?_summary=false")["entry"][0]["resource"]
    assert "assignedArm" in whole and "tag" not in whole["meta"]


def test_pretty(client: TestClient, populated: SqliteState) -> None:
    pretty = client.get("/fhir/ResearchSubject/rs-p1?_pretty=true", headers=AUTH).text
    compact = client.get("/fhir/ResearchSubject/rs-p1?_pretty=false", headers=AUTH).text
    assert pretty.startswith('{\n  "resourceType"') and "\n" not in compact
    assert json.loads(pretty) == json.loads(compact)


@pytest.mark.parametrize(("query", "parameter"), [
    ("_count=%C2%B2", "_count"), ("_count=%D9%A3", "_count"), ("_count=-1", "_count"), ("_count=1.5", "_count"),
    ("_count=%2B1", "_count"), ("_count=%201", "_count"), ("_count=", "_count"), ("_count=1&_count=2", "_count"),
    ("_offset=%C2%B9%C2%B2", "_offset"), ("_offset=-5", "_offset"), ("_offset=%EF%BC%91", "_offset"),
    ("_lastUpdated=2026-13-01", "_lastUpdated"), ("_lastUpdated=ap2026", "_lastUpdated"),
    ("_lastUpdated=xx2026", "_lastUpdated"), ("_lastUpdated=%D9%A2%D9%A0%D9%A2%D9%A6", "_lastUpdated"),
    ("status=%7C", "status"), ("status=a%7Cb%7Cc", "status"), ("status=", "status"), ("status=a,,b", "status"),
    ("status:not=candidate", "status:not"), ("foo=1", "foo"), ("patient=Group/g1", "patient"),
    ("patient.name=x", "patient.name"), ("_sort=name", "_sort"), ("_summary=maybe", "_summary"),
    ("_elements=nope", "_elements"), ("_elements=st%C3%A1tus", "_elements"),
    ("_summary=true&_elements=status", "_elements"), ("_total=maybe", "_total"), ("_totalMethod=all", "_totalMethod"),
    ("_pretty=yes", "_pretty"), ("_since=2026", "_since"), ("_format=json&_format=json", "_format"),
])
def test_bad_parameters_are_400_naming_the_parameter(client: TestClient, populated: SqliteState, query: str,
                                                     parameter: str) -> None:
    resp = client.get(f"/fhir/ResearchSubject?{query}", headers=AUTH)
    assert resp.status_code == 400, resp.text
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"] == [parameter]


@pytest.mark.parametrize("url", ["/fhir/ResearchSubject/rs-p1?_count=1", "/fhir/ResearchSubject/rs-p1?_summary=count",
                                 "/fhir/ResearchSubject/_history?_count=%C2%B2", "/fhir/ResearchSubject/_history?_at=x",
                                 "/fhir/ResearchSubject/rs-p1/_history?_offset=-1", "/fhir/metadata?mode=terminology",
                                 "/fhir/metadata?foo=1", "/fhir/ResearchSubject/_history?_since=yesterday"])
def test_bad_parameters_elsewhere_are_400(client: TestClient, populated: SqliteState, url: str) -> None:
    resp = client.get(url, headers=AUTH)
    assert resp.status_code == 400 and resp.json()["resourceType"] == "OperationOutcome"


# ------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize(("query", "accept", "media"), [
    ("", None, FHIR), ("_format=json", None, FHIR), ("_format=application/fhir%2Bjson", None, FHIR),
    ("_format=application/json", None, "application/json"), ("_format=application/json%2Bfhir", None, FHIR),
    ("", "*/*", FHIR), ("", "application/json", "application/json"), ("", "application/*", FHIR),
    ("", "application/fhir+xml, application/fhir+json;q=0.5", FHIR),
    ("", "application/fhir+json; fhirVersion=4.0", FHIR),
    ("_format=json", "application/fhir+xml", FHIR),  # _format wins over Accept
    ("", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", FHIR),  # a browser
])
def test_json_is_served(client: TestClient, populated: SqliteState, query: str, accept: str | None,
                        media: str) -> None:
    headers = {**AUTH, **({"Accept": accept} if accept else {})}
    resp = client.get(f"/fhir/ResearchSubject/rs-p1?{query}", headers=headers)
    assert resp.status_code == 200 and resp.headers["content-type"] == media and resp.json()["id"] == "rs-p1"


@pytest.mark.parametrize("url", ["/fhir/ResearchSubject", "/fhir/ResearchSubject/rs-p1", "/fhir/metadata",
                                 "/fhir/ResearchSubject/rs-p1/_history/1", "/fhir/ResearchSubject/_history"])
@pytest.mark.parametrize(("query", "accept", "where"), [
    ("_format=xml", None, "_format"), ("_format=application/fhir%2Bxml", None, "_format"),
    ("_format=ttl", None, "_format"), ("_format=text/html", None, "_format"),
    ("_format=application/fhir%2Bjson;fhirVersion=3.0", None, "_format"),
    ("", "application/fhir+xml", "Accept"), ("", "application/xml, text/xml", "Accept"),
    ("", "application/fhir+json;q=0", "Accept"), ("", "application/fhir+json; fhirVersion=5.0", "Accept"),
])
def test_other_formats_are_406(client: TestClient, populated: SqliteState, url: str, query: str,
                               accept: str | None, where: str) -> None:
    headers = {**AUTH, **({"Accept": accept} if accept else {})}
    resp = client.get(f"{url}?{query}", headers=headers)
    assert resp.status_code == 406, resp.text
    outcome = resp.json()
    assert outcome["issue"][0]["code"] == "not-supported" and outcome["issue"][0]["expression"] == [where]


# ------------------------------------------------------------------------------------------ URLs, JSON, HEAD


def test_absolute_urls_come_from_the_configured_base_never_from_host(client: TestClient,
                                                                      populated: SqliteState) -> None:
    evil = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"}
    bundle = get(client, "/fhir/ResearchSubject?_count=2", **evil)
    urls = [e["fullUrl"] for e in bundle["entry"]] + [lk["url"] for lk in bundle["link"]]
    assert urls and all(u.startswith(f"{BASE}/fhir/ResearchSubject") for u in urls)
    assert bundle["entry"][0]["fullUrl"] == f"{BASE}/fhir/ResearchSubject/rs-p1"
    cap = client.get("/fhir/metadata", headers=evil).json()
    assert cap["implementation"]["url"] == f"{BASE}/fhir"
    history = get(client, "/fhir/ResearchSubject/_history", **evil)
    assert "evil" not in json.dumps(bundle) + json.dumps(cap) + json.dumps(history)


def test_a_trailing_slash_is_not_redirected_to_the_host_header(client: TestClient, populated: SqliteState) -> None:
    resp = client.get("/fhir/ResearchSubject/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert resp.status_code == 404 and "evil" not in resp.headers.get("location", "")


def test_the_default_base_is_the_listen_address() -> None:
    assert public_base(Settings()) == "http://127.0.0.1:8080"
    assert public_base(Settings(listen_host="::1", listen_port=9000)) == "http://[::1]:9000"
    assert public_base(Settings(public_base_url="https://x.example/a/")) == "https://x.example/a"


def test_no_empty_arrays_or_objects_anywhere(client: TestClient, store: SqliteState) -> None:
    publish(store, subject("p1", "candidate", extension=[], period={}, identifier=[{"system": "", "value": "v"}],
                           meta={"tag": []}), T0)
    empty = get(client, "/fhir/ResearchSubject?status=ineligible")
    assert empty["total"] == 0 and "entry" not in empty
    for url in ("/fhir/ResearchSubject", "/fhir/ResearchSubject?status=ineligible", "/fhir/ResearchSubject/rs-p1",
                "/fhir/ResearchSubject/_history", "/fhir/ResearchSubject/rs-p1/_history", "/fhir/ResearchStudy",
                "/fhir/metadata", "/fhir/ResearchSubject?_count=0", "/fhir/ResearchSubject?_elements=status"):
        body = get(client, url)
        assert empties(body) == [], url
        validate_r4(body)
    assert get(client, "/fhir/ResearchSubject/rs-p1")["identifier"] == [{"value": "v"}]


GET_URLS = ["/fhir/metadata", "/fhir/ResearchSubject", "/fhir/ResearchSubject?status=candidate",
            "/fhir/ResearchSubject/rs-p1", "/fhir/ResearchSubject/rs-p1/_history",
            "/fhir/ResearchSubject/rs-p1/_history/1",
            "/fhir/ResearchSubject/_history", "/fhir/ResearchStudy", "/fhir/ResearchStudy/nct04762485"]


@pytest.mark.parametrize("url", GET_URLS)
def test_head_wherever_get(client: TestClient, populated: SqliteState, url: str) -> None:
    got = client.get(url, headers=AUTH)
    head = client.head(url, headers=AUTH)
    assert (head.status_code, got.status_code) == (200, 200)
    assert head.content == b"" and head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers.get("etag") == got.headers.get("etag")


@pytest.mark.parametrize("url", GET_URLS[1:])
def test_every_route_but_metadata_needs_the_token(client: TestClient, populated: SqliteState, url: str) -> None:
    assert client.get(url).status_code == 401
    assert client.head(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_other_methods_are_405(client: TestClient, populated: SqliteState) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        resp = client.request(method, "/fhir/ResearchSubject/rs-p1", headers=AUTH)
        assert resp.status_code == 405 and resp.json()["resourceType"] == "OperationOutcome"


# ------------------------------------------------------------------------------------------ CapabilityStatement


SAMPLES = {"token": "x", "reference": "x", "date": "2026", "number": "1", "uri": "http://x.example", "string": "x",
           "_sort": "-_lastUpdated",
           "_elements": "extension", "_summary": "count", "_total": "accurate", "_totalMethod": "count",
           "_format": "json", "_pretty": "true"}


def test_the_capability_statement_says_exactly_what_is_served(client: TestClient, populated: SqliteState) -> None:
    resp = client.get("/fhir/metadata")
    assert resp.status_code == 200
    cap = resp.json()
    validate_r4(cap)
    rest = cap["rest"][0]
    assert "service" not in rest["security"] and "OAuth" not in json.dumps(rest["security"]).replace("not OAuth", "")
    assert "static bearer token" in rest["security"]["description"] and rest["security"]["cors"] is False
    assert cap["format"] == ["application/fhir+json", "json"] and cap["fhirVersion"] == "4.0.1"
    assert [r["type"] for r in rest["resource"]] == list(SEARCH_PARAMS)
    for resource in rest["resource"]:
        assert [i["code"] for i in resource["interaction"]] == ["read", "vread", "search-type", "history-instance",
                                                                 "history-type"]
        assert (resource["versioning"], resource["readHistory"], resource["conditionalRead"]) == (
            "versioned", True, "full-support")
        names = [p["name"] for p in resource["searchParam"]]
        assert {"_id", "_lastUpdated", "_count", "_offset", "_sort", "_summary", "_elements", "_total"} <= set(names)
        for param in resource["searchParam"]:  # every listed parameter is accepted
            value = SAMPLES.get(param["name"], SAMPLES.get(param["type"]))
            got = client.get(f"/fhir/{resource['type']}", params={param["name"]: value}, headers=AUTH)
            assert got.status_code == 200, (param, got.text)
    subject = next(r for r in rest["resource"] if r["type"] == "ResearchSubject")
    assert {"study", "patient", "individual", "status", "identifier"} <= {p["name"] for p in subject["searchParam"]}
    assert "interaction" not in rest  # no system-level interactions


def test_the_openapi_declares_head_and_the_query_parameters(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    search = paths["/fhir/ResearchSubject"]
    assert {"get", "head"} <= set(search)
    assert {"_count", "_offset", "status", "_lastUpdated"} <= {p["name"] for p in search["get"]["parameters"]}
    for path in ("/fhir/metadata", "/fhir/ResearchSubject/{resource_id}/_history/{version_id}",
                 "/fhir/ResearchSubject/_history", "/fhir/ResearchSubject/{resource_id}/_history"):
        assert {"get", "head"} <= set(paths[path])


# ------------------------------------------------------------------------------------------ conformance resources


def test_the_bridges_conformance_resources_are_served(client: TestClient) -> None:
    """Issue #14 item 3: the profiles, CodeSystems and ValueSets the bridge defines, found by url and read by id."""
    from bridge.publish.conformance import load_resources
    from bridge.service.fhir_capability import BRIDGE_PROFILES

    packaged = load_resources()
    for rtype in ("StructureDefinition", "CodeSystem", "ValueSet"):
        listed = get(client, f"/fhir/{rtype}?_count=1000")
        assert {e["resource"]["url"] for e in listed["entry"]} == {r["url"] for r in packaged
                                                                    if r["resourceType"] == rtype}
    for resource in packaged:
        found = get(client, f"/fhir/{resource['resourceType']}?url={resource['url']}")
        assert found["total"] == 1
        read = client.get(f"/fhir/{resource['resourceType']}/{resource['id']}", headers=AUTH)
        assert read.status_code == 200 and read.headers["etag"] == 'W/"1"'
        assert {k: v for k, v in read.json().items() if k != "meta"} == {k: v for k, v in resource.items()
                                                                         if k != "meta"}
    assert get(client, "/fhir/CodeSystem?url=http://nowhere.example")["total"] == 0
    assert client.get("/fhir/CodeSystem/activity/_history/2", headers=AUTH).status_code == 404
    urls = {r["url"] for r in packaged}
    cap = client.get("/fhir/metadata").json()
    supported = {p for r in cap["rest"][0]["resource"] for p in r.get("supportedProfile", [])}
    assert supported == {url for url, _ in BRIDGE_PROFILES} and supported <= urls
