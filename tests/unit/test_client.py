"""FhirClient against a faked transport (``responses``): retries, errors, paging, origins and writes."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import requests
import responses
from hypothesis import given
from hypothesis import strategies as st
from responses import matchers

from bridge.auth import BearerAuth, NoAuth
from bridge.client import (
    FhirClient,
    FhirResult,
    _transaction_is_idempotent,
    location_id,
    origin_of,
    outcome_issues,
    parse_etag,
    retry_after_seconds,
    weak_etag,
)
from bridge.config import Settings
from bridge.errors import (
    AuthError,
    ConfigError,
    Conflict,
    ForeignHost,
    InputError,
    Issue,
    NotFHIR,
    RemoteError,
    ServerRejected,
    TransportError,
)

BASE = "https://ehr.example.org/fhir"
TOKEN = "tok-abc-123"
FHIR = {"Content-Type": "application/fhir+json"}
# 2026-03-14T09:26:53+01:00 as epoch seconds: a fixed, non-UTC "now" for HTTP-date Retry-After
NOW_EPOCH = 1773476813.0


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def make_client(fake_time: FakeTime, **settings: Any) -> FhirClient:
    opts: dict[str, Any] = {"ehr_token": TOKEN, "retries": 3, "retry_total_seconds": 60.0, **settings}
    return FhirClient(
        BASE, Settings(**opts), sleep=fake_time.sleep, clock=fake_time.clock, wall_clock=lambda: NOW_EPOCH
    )


@pytest.fixture
def client(fake_time: FakeTime) -> FhirClient:
    return make_client(fake_time)


def patient(pid: str = "p1", version: str = "1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "meta": {"versionId": version}, "active": True}


def outcome(*issues: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


def bundle(resources: list[tuple[str, dict[str, Any]]], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "self", "url": f"{BASE}/Observation"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    entries = [{"resource": r, "search": {"mode": mode}} for mode, r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def body_of(request: requests.PreparedRequest) -> Any:
    return json.loads(request.body or b"")


def obs(oid: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "x"}}


# ---------------------------------------------------------------- reads and results


def test_read_returns_resource_version_and_bearer_header(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/p1", json=patient(version="3"), headers={**FHIR, "ETag": 'W/"3"'})
    result = client.read("Patient", "p1")
    assert result.resource["id"] == "p1"
    assert result.status == 200
    assert result.etag == 'W/"3"'
    assert result.version_id == "3"
    sent = rsps.calls[0].request
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Accept"] == "application/fhir+json"


def test_every_request_carries_connect_and_read_timeouts(fake_time: FakeTime) -> None:
    seen: dict[str, Any] = {}

    class Recording(requests.Session):
        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
            seen.update(kwargs)
            return super().request(method, url, *args, **kwargs)

    settings = Settings(timeout_connect=2.5, timeout_read=17.0)
    fhir = FhirClient(BASE, settings, session=Recording(), sleep=fake_time.sleep, clock=fake_time.clock)
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"}, headers=FHIR)
        assert fhir.capabilities()["resourceType"] == "CapabilityStatement"
    assert seen["timeout"] == (2.5, 17.0)
    assert seen["allow_redirects"] is False


def test_vread_and_delete_paths(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/p1/_history/2", json=patient(version="2"), headers=FHIR)
    rsps.delete(f"{BASE}/Patient/p1", status=204)
    assert client.vread("Patient", "p1", "2").version_id == "2"
    deleted = client.delete("Patient", "p1")
    assert (deleted.status, deleted.resource) == (204, {})


@pytest.mark.parametrize("bad", ["../Patient", "p1?x=1", "p 1", "a" * 65, ""])
def test_ids_that_would_change_the_path_are_refused(client: FhirClient, bad: str) -> None:
    with pytest.raises(InputError):
        client.read("Patient", bad)


def test_resource_type_must_look_like_one(client: FhirClient) -> None:
    with pytest.raises(InputError):
        client.read("patient/../x", "p1")


# ---------------------------------------------------------------- retries


def test_timeout_is_retried_with_backoff_then_transport_error(
    rsps: responses.RequestsMock, client: FhirClient, fake_time: FakeTime
) -> None:
    rsps.get(f"{BASE}/Patient/p1", body=requests.ReadTimeout("read timed out"))
    with pytest.raises(TransportError) as info:
        client.read("Patient", "p1")
    assert len(rsps.calls) == 4  # 1 + Settings.retries
    assert fake_time.sleeps == [0.5, 1.0, 2.0]
    assert "ReadTimeout" in info.value.message
    assert info.value.exit_code == 7


def test_429_honours_retry_after_seconds(rsps: responses.RequestsMock, client: FhirClient, fake_time: FakeTime) -> None:
    rsps.get(f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "7"})
    rsps.get(f"{BASE}/Patient/p1", json=patient(), headers=FHIR)
    assert client.read("Patient", "p1").resource["id"] == "p1"
    assert fake_time.sleeps == [7.0]
    assert len(rsps.calls) == 2


def test_503_honours_retry_after_http_date(
    rsps: responses.RequestsMock, client: FhirClient, fake_time: FakeTime
) -> None:
    # 12 s after NOW_EPOCH (Sat, 14 Mar 2026 08:26:53 GMT)
    rsps.get(f"{BASE}/Patient/p1", status=503, headers={"Retry-After": "Sat, 14 Mar 2026 08:27:05 GMT"})
    rsps.get(f"{BASE}/Patient/p1", json=patient(), headers=FHIR)
    client.read("Patient", "p1")
    assert fake_time.sleeps == [12.0]


def test_503_then_success(rsps: responses.RequestsMock, client: FhirClient, fake_time: FakeTime) -> None:
    rsps.get(f"{BASE}/Patient/p1", status=503)
    rsps.get(f"{BASE}/Patient/p1", status=502)
    rsps.get(f"{BASE}/Patient/p1", json=patient(), headers=FHIR)
    assert client.read("Patient", "p1").status == 200
    assert fake_time.sleeps == [0.5, 1.0]


def test_retries_exhausted_gives_transport_error_with_status(
    rsps: responses.RequestsMock, client: FhirClient, fake_time: FakeTime
) -> None:
    rsps.get(f"{BASE}/Patient/p1", status=504)
    with pytest.raises(TransportError) as info:
        client.read("Patient", "p1")
    assert info.value.status == 504
    assert len(rsps.calls) == 4
    assert "after 4 attempt(s)" in info.value.message


def test_total_retry_time_is_bounded(rsps: responses.RequestsMock, fake_time: FakeTime) -> None:
    fhir = make_client(fake_time, retries=10, retry_total_seconds=20.0)
    rsps.get(f"{BASE}/Patient/p1", status=503, headers={"Retry-After": "8"})
    with pytest.raises(TransportError):
        fhir.read("Patient", "p1")
    assert fake_time.sleeps == [8.0, 8.0]  # a third 8 s wait would pass the 20 s budget
    assert len(rsps.calls) == 3


def test_retry_after_longer_than_budget_gives_up_without_sleeping(
    rsps: responses.RequestsMock, client: FhirClient, fake_time: FakeTime
) -> None:
    rsps.get(f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "3600"})
    with pytest.raises(TransportError) as info:
        client.read("Patient", "p1")
    assert fake_time.sleeps == []
    assert info.value.status == 429


def test_zero_retries_means_one_attempt(rsps: responses.RequestsMock, fake_time: FakeTime) -> None:
    fhir = make_client(fake_time, retries=0)
    rsps.get(f"{BASE}/Patient/p1", status=503)
    with pytest.raises(TransportError):
        fhir.read("Patient", "p1")
    assert len(rsps.calls) == 1


def test_plain_post_is_not_resent_after_a_broken_connection(
    rsps: responses.RequestsMock, client: FhirClient, fake_time: FakeTime
) -> None:
    rsps.post(f"{BASE}/Patient", body=requests.ConnectionError("connection reset"))
    with pytest.raises(TransportError):
        client.create({"resourceType": "Patient"})
    assert len(rsps.calls) == 1
    assert fake_time.sleeps == []


def test_plain_post_is_resent_after_503_and_connect_timeout(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.post(f"{BASE}/Patient", status=503)
    rsps.post(f"{BASE}/Patient", body=requests.ConnectTimeout("no route"))
    rsps.post(f"{BASE}/Patient", json=patient(), status=201, headers=FHIR)
    assert client.create({"resourceType": "Patient"}).created
    assert len(rsps.calls) == 3


def test_plain_post_is_not_resent_after_502(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.post(f"{BASE}/Patient", status=502, body="<html>Bad gateway</html>", content_type="text/html")
    with pytest.raises(NotFHIR) as info:
        client.create({"resourceType": "Patient"})
    assert info.value.status == 502
    assert len(rsps.calls) == 1


def test_conditional_create_is_resent_after_broken_connection(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.post(f"{BASE}/Patient", body=requests.ConnectionError("connection reset"))
    rsps.post(f"{BASE}/Patient", json=patient(), status=200, headers=FHIR)
    assert client.create({"resourceType": "Patient"}, if_none_exist="identifier=sys|val").status == 200
    assert len(rsps.calls) == 2


# ---------------------------------------------------------------- errors


def test_401_with_static_token_is_an_auth_error_without_retry(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/p1", status=401, json=outcome({"severity": "error", "code": "login"}))
    with pytest.raises(AuthError) as info:
        client.read("Patient", "p1")
    assert info.value.status == 401
    assert info.value.issues[0].code == "login"
    assert len(rsps.calls) == 1
    assert TOKEN not in info.value.message


def test_403_html_is_an_auth_error_too(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/p1", status=403, body="<html>denied</html>", content_type="text/html")
    with pytest.raises(AuthError) as info:
        client.read("Patient", "p1")
    assert info.value.status == 403
    assert "<html>" not in str(info.value)


def test_operation_outcome_becomes_server_rejected_with_issues(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    body = outcome(
        {
            "severity": "error",
            "code": "structure",
            "diagnostics": "bad date 1970-13-45",
            "expression": ["Patient.birthDate"],
        },
        {
            "severity": "warning",
            "code": "invalid",
            "details": {"text": "unknown element"},
            "location": ["/f:Patient/f:foo"],
        },
    )
    rsps.post(f"{BASE}/Patient", status=400, json=body, content_type="application/fhir+json; charset=utf-8")
    with pytest.raises(ServerRejected) as info:
        client.create({"resourceType": "Patient", "birthDate": "1970-13-45"})
    err = info.value
    assert err.status == 400
    assert err.issues == [
        Issue("structure", "bad date 1970-13-45", ("Patient.birthDate",), "error"),
        Issue("invalid", "unknown element", ("/f:Patient/f:foo",), "warning"),
    ]
    assert "1970-13-45" not in err.message
    assert err.message == "POST Patient: 400 rejected with 2 issue(s)"
    as_fhir = err.operation_outcome()["issue"]
    assert isinstance(as_fhir, list) and as_fhir[0]["expression"] == ["Patient.birthDate"]


def test_html_error_page_is_not_fhir_and_never_dumped(rsps: responses.RequestsMock, client: FhirClient) -> None:
    page = "<html><body><h1>Internal error</h1><p>patient Jane Doe MRN 12345</p></body></html>"
    rsps.get(f"{BASE}/Patient/p1", status=500, body=page, content_type="text/html; charset=utf-8")
    with pytest.raises(NotFHIR) as info:
        client.read("Patient", "p1")
    text = str(info.value) + repr(info.value.issues)
    assert "<html" not in text and "Jane" not in text and "12345" not in text
    assert info.value.status == 500
    assert "text/html" in info.value.message


def test_html_on_success_status_is_not_fhir(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/p1", status=200, body="<html>login page</html>", content_type="text/html")
    with pytest.raises(NotFHIR):
        client.read("Patient", "p1")


def test_json_that_is_not_fhir_is_not_fhir(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/p1", status=404, json={"detail": "Not Found"})
    with pytest.raises(NotFHIR) as info:
        client.read("Patient", "p1")
    assert info.value.status == 404
    assert "Not Found" not in info.value.message


def test_redirect_is_not_followed(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/p1", status=302, headers={"Location": "https://evil.example.com/steal"})
    with pytest.raises(RemoteError) as info:
        client.read("Patient", "p1")
    assert info.value.status == 302
    assert len(rsps.calls) == 1


def test_404_outcome_is_server_rejected(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/gone", status=404, json=outcome({"severity": "error", "code": "not-found"}))
    with pytest.raises(ServerRejected) as info:
        client.read("Patient", "gone")
    assert (info.value.status, info.value.issues[0].code) == (404, "not-found")


# ---------------------------------------------------------------- search and origins


def test_search_follows_next_links_and_yields_matches_and_includes(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    page2 = f"{BASE}/Observation?_getpages=abc&_offset=2"
    first = bundle([("match", obs("o1")), ("match", obs("o2")), ("include", patient())], page2)
    warn = {
        "resource": outcome({"severity": "warning", "code": "not-supported"}),
        "search": {"mode": "outcome"},
    }
    first["entry"].append(warn)
    rsps.get(
        f"{BASE}/Observation",
        json=first,
        headers=FHIR,
        match=[matchers.query_param_matcher({"_count": "2", "_lastUpdated": "ge2026-01-01"})],
    )
    rsps.get(page2, json=bundle([("match", obs("o3"))]), headers=FHIR)
    params = {"_count": 2, "_lastUpdated": "ge2026-01-01"}
    got = [r["id"] for r in client.search("Observation", params)]
    assert got == ["o1", "o2", "p1", "o3"]
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in rsps.calls)


def test_search_matches_only(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Observation", json=bundle([("match", obs("o1")), ("include", patient())]), headers=FHIR)
    assert [r["id"] for r in client.search("Observation", matches_only=True)] == ["o1"]


def test_entries_without_search_mode_count_as_matches(rsps: responses.RequestsMock, client: FhirClient) -> None:
    page = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": obs("o1")}]}
    rsps.get(f"{BASE}/Observation", json=page, headers=FHIR)
    assert [r["id"] for r in client.search("Observation", matches_only=True)] == ["o1"]


@pytest.mark.parametrize(
    "foreign",
    [
        "https://evil.example.com/fhir/Observation?page=2",
        "http://ehr.example.org/fhir/Observation?page=2",  # scheme downgrade
        "https://ehr.example.org:8443/fhir/Observation?page=2",  # other port
        "https://ehr.example.org.evil.com/fhir/Observation?page=2",
    ],
)
def test_next_link_to_another_origin_raises_foreign_host_before_any_request(
    rsps: responses.RequestsMock, client: FhirClient, foreign: str
) -> None:
    rsps.get(f"{BASE}/Observation", json=bundle([("match", obs("o1"))], foreign), headers=FHIR)
    found = []
    with pytest.raises(ForeignHost) as info:
        for resource in client.search("Observation"):
            found.append(resource["id"])
    assert found == ["o1"]
    assert len(rsps.calls) == 1
    assert [str(c.request.url).split("?")[0] for c in rsps.calls] == [f"{BASE}/Observation"]
    assert "page=2" not in info.value.message


def _two_pages(rsps: responses.RequestsMock, next_link: str) -> None:
    """A search answered in two pages, the first linking to the second with ``next_link``."""
    rsps.get(
        f"{BASE}/Observation",
        json=bundle([("match", obs("o1"))], next_link),
        headers=FHIR,
        match=[matchers.query_param_matcher({})],
    )
    rsps.get(
        f"{BASE}/Observation",
        json=bundle([("match", obs("o2"))]),
        headers=FHIR,
        match=[matchers.query_param_matcher({"_offset": "1"})],
    )


def test_next_link_with_explicit_default_port_is_same_origin(rsps: responses.RequestsMock, client: FhirClient) -> None:
    _two_pages(rsps, "https://EHR.example.org:443/fhir/Observation?_offset=1")
    assert [r["id"] for r in client.search("Observation")] == ["o1", "o2"]


def test_relative_next_link_is_resolved_against_the_base(rsps: responses.RequestsMock, client: FhirClient) -> None:
    _two_pages(rsps, "Observation?_offset=1")
    assert [r["id"] for r in client.search("Observation")] == ["o1", "o2"]


def test_a_next_link_that_repeats_stops_with_an_error(rsps: responses.RequestsMock, client: FhirClient) -> None:
    loop = f"{BASE}/Observation?_offset=1"
    rsps.get(f"{BASE}/Observation", json=bundle([("match", obs("o1"))], loop), headers=FHIR)
    with pytest.raises(RemoteError, match="loops"):
        list(client.search("Observation"))
    assert len(rsps.calls) == 2


def test_search_answer_that_is_not_a_bundle_is_not_fhir(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Observation", json=obs("o1"), headers=FHIR)
    with pytest.raises(NotFHIR):
        list(client.search("Observation"))


def test_logs_name_path_and_status_but_never_query_values_or_bodies(
    rsps: responses.RequestsMock, client: FhirClient, caplog: pytest.LogCaptureFixture
) -> None:
    rsps.get(f"{BASE}/Patient", status=503)
    rsps.get(f"{BASE}/Patient", json=bundle([("match", patient())]), headers=FHIR)
    caplog.set_level(logging.DEBUG, logger="bridge")
    list(client.search("Patient", {"identifier": "urn:mrn|SECRET-MRN-998877"}))
    assert "Patient" in caplog.text and "503" in caplog.text and "200" in caplog.text
    assert "SECRET-MRN-998877" not in caplog.text
    assert TOKEN not in caplog.text
    assert '"active"' not in caplog.text
    records = [r for r in caplog.records if r.name == "bridge.client"]
    assert records and all("?" not in r.getMessage() for r in records)


def test_bearer_token_is_never_attached_to_another_origin(fake_time: FakeTime) -> None:
    fhir = make_client(fake_time)
    with responses.RequestsMock() as mock, pytest.raises(ForeignHost):
        fhir._request("GET", "https://evil.example.com/fhir/Patient")
    assert len(mock.calls) == 0


# ---------------------------------------------------------------- writes


def test_conditional_create_sends_if_none_exist(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.post(f"{BASE}/Patient", json=patient("existing"), status=200, headers={**FHIR, "ETag": 'W/"4"'})
    result = client.create({"resourceType": "Patient"}, if_none_exist="identifier=urn:oid:1.2.3|A-17")
    sent = rsps.calls[0].request
    assert sent.headers["If-None-Exist"] == "identifier=urn:oid:1.2.3|A-17"
    assert sent.headers["Content-Type"].startswith("application/fhir+json")
    assert sent.headers["Prefer"] == "return=representation"
    assert body_of(sent) == {"resourceType": "Patient"}
    assert (result.created, result.id, result.version_id) == (False, "existing", "4")


def test_conditional_create_from_pairs_is_encoded_safely(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.post(f"{BASE}/Patient", json=patient(), status=201, headers=FHIR)
    client.create({"resourceType": "Patient"}, if_none_exist=[("identifier", "urn:x|a&b=ü")])
    assert rsps.calls[0].request.headers["If-None-Exist"] == "identifier=urn:x|a%26b%3D%C3%BC"


def test_create_created_status_and_location(rsps: responses.RequestsMock, client: FhirClient) -> None:
    loc = f"{BASE}/Patient/new1/_history/1"
    rsps.post(f"{BASE}/Patient", status=201, headers={"Location": loc, "ETag": 'W/"1"'})  # return=minimal
    result = client.create({"resourceType": "Patient"})
    assert (result.created, result.id, result.version_id, result.resource) == (True, "new1", "1", {})


def test_update_sends_if_match_weak_etag(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.put(f"{BASE}/Patient/p1", json=patient(version="4"), headers={**FHIR, "ETag": 'W/"4"'})
    result = client.update(patient(version="3"), if_match="3")
    assert rsps.calls[0].request.headers["If-Match"] == 'W/"3"'
    assert result.version_id == "4"


def test_update_without_if_match_sends_none(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.put(f"{BASE}/Patient/p1", json=patient(), headers=FHIR)
    client.update(patient())
    assert "If-Match" not in rsps.calls[0].request.headers


def test_update_needs_an_id(client: FhirClient) -> None:
    with pytest.raises(InputError):
        client.update({"resourceType": "Patient"})


def test_stale_update_is_a_conflict(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.put(f"{BASE}/Patient/p1", status=412, json=outcome({"severity": "error", "code": "conflict"}))
    with pytest.raises(Conflict) as info:
        client.update(patient(), if_match='W/"1"')
    assert info.value.status == 412
    assert len(rsps.calls) == 1


def test_update_with_retry_rereads_and_retries_once_after_412(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/p1", json=patient(version="1"), headers={**FHIR, "ETag": 'W/"1"'})
    rsps.get(
        f"{BASE}/Patient/p1",
        json={**patient(version="2"), "gender": "female"},
        headers={**FHIR, "ETag": 'W/"2"'},
    )
    rsps.put(f"{BASE}/Patient/p1", status=412, json=outcome({"severity": "error", "code": "conflict"}))
    rsps.put(f"{BASE}/Patient/p1", json=patient(version="3"), headers={**FHIR, "ETag": 'W/"3"'})
    seen: list[dict[str, Any]] = []

    def mutate(current: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(current))
        return {**current, "active": False}

    result = client.update_with_retry("Patient", "p1", mutate)
    assert result.version_id == "3"
    puts = [c.request for c in rsps.calls if c.request.method == "PUT"]
    assert [p.headers["If-Match"] for p in puts] == ['W/"1"', 'W/"2"']
    assert body_of(puts[1])["gender"] == "female"  # the change went onto the fresh copy
    assert body_of(puts[1])["active"] is False
    assert [s["meta"]["versionId"] for s in seen] == ["1", "2"]


def test_update_with_retry_gives_up_after_the_second_conflict(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.get(f"{BASE}/Patient/p1", json=patient(), headers={**FHIR, "ETag": 'W/"1"'})
    rsps.put(f"{BASE}/Patient/p1", status=412, json=outcome({"severity": "error", "code": "conflict"}))
    with pytest.raises(Conflict):
        client.update_with_retry("Patient", "p1", lambda r: r)
    assert sum(c.request.method == "PUT" for c in rsps.calls) == 2


def test_update_with_retry_refuses_a_mutation_that_changes_the_id(
    rsps: responses.RequestsMock, client: FhirClient
) -> None:
    rsps.get(f"{BASE}/Patient/p1", json=patient(), headers=FHIR)
    with pytest.raises(InputError):
        client.update_with_retry("Patient", "p1", lambda r: {**r, "id": "other"})


def test_conditional_update_puts_to_type_with_criteria(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.put(
        f"{BASE}/ResearchSubject",
        json={"resourceType": "ResearchSubject", "id": "rs1"},
        status=201,
        headers=FHIR,
        match=[matchers.query_param_matcher({"identifier": "urn:trial|S-001"})],
    )
    result = client.conditional_update({"resourceType": "ResearchSubject"}, "identifier=urn:trial|S-001")
    assert result.created and result.id == "rs1"
    assert "If-Match" not in rsps.calls[0].request.headers


def test_conditional_update_needs_criteria(client: FhirClient) -> None:
    with pytest.raises(InputError):
        client.conditional_update({"resourceType": "Patient"}, "")


def test_transaction_posts_to_the_base(rsps: responses.RequestsMock, client: FhirClient) -> None:
    answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
    rsps.post(BASE, json=answer, headers=FHIR)
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    assert client.transaction(tx).resource["type"] == "transaction-response"
    assert body_of(rsps.calls[0].request) == tx


def test_transaction_needs_a_transaction_bundle(client: FhirClient) -> None:
    with pytest.raises(InputError):
        client.transaction({"resourceType": "Bundle", "type": "searchset"})


def test_transaction_with_plain_create_is_not_resent(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.post(BASE, body=requests.ConnectionError("reset"))
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}],
    }
    with pytest.raises(TransportError):
        client.transaction(tx)
    assert len(rsps.calls) == 1


def test_transaction_idempotence_depends_on_every_entry() -> None:
    def tx(*requests_: dict[str, str]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": r} for r in requests_]}

    assert _transaction_is_idempotent(tx({"method": "PUT", "url": "Patient?identifier=a|b"}))
    assert _transaction_is_idempotent(tx({"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|b"}))
    assert not _transaction_is_idempotent(
        tx({"method": "PUT", "url": "Patient/1"}, {"method": "POST", "url": "Observation"})
    )
    assert not _transaction_is_idempotent(tx({"method": "PATCH", "url": "Patient/1"}))


# ---------------------------------------------------------------- construction


def test_from_settings_needs_a_base_url() -> None:
    with pytest.raises(ConfigError):
        FhirClient.from_settings(Settings())


def test_from_settings_uses_settings_base_and_token(rsps: responses.RequestsMock) -> None:
    fhir = FhirClient.from_settings(Settings(ehr_base_url=BASE + "/", ehr_token=TOKEN))
    assert fhir.base_url == BASE
    assert isinstance(fhir.auth, BearerAuth)
    assert TOKEN not in repr(fhir)


@pytest.mark.parametrize("bad", ["ftp://ehr.example.org/fhir", "ehr.example.org/fhir", f"{BASE}?x=1", "https:///x"])
def test_bad_base_urls_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        FhirClient(bad)


def test_no_credentials_means_no_authorization_header(rsps: responses.RequestsMock) -> None:
    fhir = FhirClient(BASE)
    assert isinstance(fhir.auth, NoAuth)
    rsps.get(f"{BASE}/Patient/p1", json=patient(), headers=FHIR)
    fhir.read("Patient", "p1")
    assert "Authorization" not in rsps.calls[0].request.headers


# ---------------------------------------------------------------- small functions


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        ("0", 0.0),
        ("Sat, 14 Mar 2026 08:27:05 GMT", 12.0),
        ("Sat, 14 Mar 2026 08:00:00 GMT", 0.0),
        ("soon", None),
        ("-3", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value, NOW_EPOCH) == expected


@pytest.mark.parametrize(
    ("etag", "version"), [('W/"3"', "3"), ('"3"', "3"), ("3", "3"), ('W/""', None), (None, None), ("", None)]
)
def test_parse_etag(etag: str | None, version: str | None) -> None:
    assert parse_etag(etag) == version


@given(st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True))
def test_weak_etag_round_trips(version: str) -> None:
    assert parse_etag(weak_etag(version)) == version
    assert weak_etag(weak_etag(version)) == weak_etag(version)


@pytest.mark.parametrize(
    ("location", "rid"),
    [
        (f"{BASE}/Patient/p9/_history/2", "p9"),
        (f"{BASE}/Patient/p9", "p9"),
        ("Patient/p9", "p9"),
        (None, None),
    ],
)
def test_location_id(location: str | None, rid: str | None) -> None:
    assert location_id(location) == rid


def test_origin_of_fills_default_ports_and_lowercases_host() -> None:
    assert origin_of("HTTPS://EHR.Example.org/fhir") == ("https", "ehr.example.org", 443)
    assert origin_of("http://127.0.0.1:8080/fhir") == ("http", "127.0.0.1", 8080)
    assert origin_of("http://h:99999/x")[2] == -1


def test_outcome_issues_only_for_operation_outcomes() -> None:
    assert outcome_issues({"resourceType": "Patient"}) is None
    assert outcome_issues("<html>") is None
    assert outcome_issues(outcome()) == []


def test_fhir_result_version_falls_back_to_meta() -> None:
    assert FhirResult(patient(version="5"), 200).version_id == "5"
    assert FhirResult({}, 204).version_id is None


def test_the_client_alone_decides_the_authorization_header(rsps: responses.RequestsMock) -> None:
    session = requests.Session()
    session.headers["Authorization"] = "Bearer from-some-other-place"
    fhir = FhirClient(BASE, session=session)
    rsps.get(f"{BASE}/Patient/p1", json=patient(), headers=FHIR)
    fhir.read("Patient", "p1")
    assert "Authorization" not in rsps.calls[0].request.headers
