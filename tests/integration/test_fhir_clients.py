"""Independent FHIR clients against the running /fhir API (issue #14 item 4, real clients).

The service runs as a real process (``python server.py --config ...``, uvicorn on a free loopback port, no
EHR: the read API serves the local store), with its published index filled directly in the state file, before
start and while it runs. fhirpy 2.3.1 and SMART's fhirclient 4.4.0 (pinned in the test extras) then read,
search, page — following ``next`` to the end, and ending at once with ``_count=0`` — count and vread, parsing
every answer with their own models. No ``public_base_url`` is configured, so every absolute URL the clients
follow is the default one built from ``listen_host`` and ``listen_port``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.researchsubject import ResearchSubject
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient

from bridge.service.fhir_params import SEARCH_PARAMS
from bridge.state import PublishedRecord
from bridge.state.sqlite_state import SqliteState
from tests.processes import ServiceProcess

pytestmark = pytest.mark.slow

TOKEN = "fhir-clients-api-token-0123456789abcdef"  # at least 32 bytes, as the service requires
STATUS_SYSTEM = "http://hl7.org/fhir/research-subject-status"
STATUSES = ["candidate", "ineligible", "potential-candidate", "ineligible", "candidate", "ineligible",
            "potential-candidate"]
PIDS = [f"p{n}" for n in range(1, len(STATUSES) + 1)]
T0 = 1_780_000_000.0
CLIENT_TIMEOUT = 30.0  # a client that pages for ever fails the test instead of hanging it


def subject(pid: str, status: str) -> dict[str, Any]:
    return {"resourceType": "ResearchSubject", "id": f"rs-{pid}", "status": status,
            "identifier": [{"system": "https://cd7-bridge.example.org/fhir/NamingSystem/research-subject",
                            "value": f"NCT04762485-{pid}"}],
            "study": {"reference": "ResearchStudy/nct04762485"}, "individual": {"reference": f"Patient/{pid}"}}


def publish(db: Path, resource: dict[str, Any], at: float) -> None:
    state = SqliteState(db)
    try:
        rtype, rid = resource["resourceType"], resource["id"]
        state.put_published(PublishedRecord(f"{rtype}|x|{rid}", rtype, rid, "fp", "1", resource, at))
    finally:
        state.close()


class Service(ServiceProcess):
    """``server.py`` on a free loopback port over a state file of its own, with the API token."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, {"api_token": TOKEN, "webhook_secret": "w" * 40, "log_level": "WARNING"})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("fhir-clients"))
    for n, (pid, status) in enumerate(zip(PIDS, STATUSES, strict=True)):
        publish(svc.db, subject(pid, status), T0 + 60 * n)
    publish(svc.db, {"resourceType": "ResearchStudy", "id": "nct04762485", "status": "active"}, T0)
    svc.start()
    publish(svc.db, subject("p1", "ineligible"), T0 + 3600)  # a second version of rs-p1, written while it runs
    try:
        yield svc
    finally:
        svc.stop()


def bounded(call: Any) -> Any:
    """Run ``call`` with a deadline: a client following ``next`` for ever fails here."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result(timeout=CLIENT_TIMEOUT)


# ------------------------------------------------------------------------------------------ fhirpy


@pytest.fixture
def fhirpy(service: Service) -> SyncFHIRClient:
    return SyncFHIRClient(service.fhir, authorization=f"Bearer {TOKEN}")


def test_fhirpy_reads(fhirpy: SyncFHIRClient) -> None:
    got = fhirpy.reference("ResearchSubject", "rs-p2").to_resource()
    assert (got["id"], got["status"], got["individual"]["reference"]) == ("rs-p2", "ineligible", "Patient/p2")
    current = fhirpy.resources("ResearchSubject").search(_id="rs-p1").get()
    assert (current["status"], current["meta"]["versionId"]) == ("ineligible", "2")


def test_fhirpy_searches_with_or_and_systems(fhirpy: SyncFHIRClient) -> None:
    subjects = fhirpy.resources("ResearchSubject")
    found = bounded(subjects.search(status="ineligible,potential-candidate").fetch_all)
    assert sorted(r["id"] for r in found) == ["rs-p1", "rs-p2", "rs-p3", "rs-p4", "rs-p6", "rs-p7"]
    by_system = bounded(subjects.search(status=f"{STATUS_SYSTEM}|candidate").fetch_all)
    assert sorted(r["id"] for r in by_system) == ["rs-p5"]
    assert [r["id"] for r in bounded(subjects.search(patient="Patient/p4").fetch_all)] == ["rs-p4"]


def test_fhirpy_pages_to_the_end(fhirpy: SyncFHIRClient) -> None:
    every = bounded(fhirpy.resources("ResearchSubject").limit(2).fetch_all)
    assert [r["id"] for r in every] == [f"rs-{pid}" for pid in PIDS]
    newest = bounded(fhirpy.resources("ResearchSubject").sort("-_lastUpdated").limit(3).fetch_all)
    assert [r["id"] for r in newest][:2] == ["rs-p1", "rs-p7"]


def test_fhirpy_with_count_zero_stops(fhirpy: SyncFHIRClient) -> None:
    assert bounded(fhirpy.resources("ResearchSubject").limit(0).fetch_all) == []


def test_fhirpy_counts(fhirpy: SyncFHIRClient) -> None:
    assert bounded(fhirpy.resources("ResearchSubject").count) == len(PIDS)
    assert bounded(fhirpy.resources("ResearchSubject").search(status="ineligible").count) == 4
    assert bounded(fhirpy.resources("ResearchStudy").count) == 1


def test_fhirpy_gets_a_not_found(fhirpy: SyncFHIRClient) -> None:
    from fhirpy.base.exceptions import ResourceNotFound

    with pytest.raises(ResourceNotFound):
        fhirpy.reference("ResearchSubject", "nope").to_resource()


# ------------------------------------------------------------------------------------------ SMART fhirclient


@pytest.fixture
def smart(service: Service) -> FHIRServer:
    server = FHIRServer(None, base_uri=service.fhir)
    server.session.headers["Authorization"] = f"Bearer {TOKEN}"
    return server


def test_fhirclient_reads_the_capability_statement(smart: FHIRServer, service: Service) -> None:
    smart.get_capability()
    cap = smart.capabilityStatement
    assert isinstance(cap, CapabilityStatement) and cap.fhirVersion == "4.0.1"
    assert cap.implementation.url == service.fhir
    assert [r.type for r in cap.rest[0].resource] == list(SEARCH_PARAMS)


def test_fhirclient_reads_and_vreads(smart: FHIRServer) -> None:
    got = ResearchSubject.read("rs-p3", smart)
    assert (got.id, got.status, got.study.reference) == ("rs-p3", "potential-candidate", "ResearchStudy/nct04762485")
    first = ResearchSubject.read_from("ResearchSubject/rs-p1/_history/1", smart)
    assert (first.status, first.meta.versionId) == ("candidate", "1")


def test_fhirclient_searches_and_pages_to_the_end(smart: FHIRServer) -> None:
    search = ResearchSubject.where({"status": "ineligible", "_count": "1"})
    pages = bounded(lambda: list(search.perform_iter(smart)))
    assert len(pages) == 4 and all(p.total == 4 for p in pages)
    every = bounded(lambda: list(ResearchSubject.where({"_count": "3"}).perform_resources_iter(smart)))
    assert [r.id for r in every] == [f"rs-{pid}" for pid in PIDS]


def test_fhirclient_with_count_zero_stops(smart: FHIRServer) -> None:
    pages = bounded(lambda: list(ResearchSubject.where({"_count": "0"}).perform_iter(smart)))
    assert len(pages) == 1 and pages[0].total == len(PIDS) and pages[0].entry is None


# ------------------------------------------------------------------------------------------ plain HTTP


def test_over_real_http_etag_head_and_host(service: Service) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    read = requests.get(f"{service.fhir}/ResearchSubject/rs-p1", headers=auth, timeout=10)
    assert read.status_code == 200 and read.headers["etag"] == 'W/"2"' and "last-modified" in read.headers
    again = requests.get(f"{service.fhir}/ResearchSubject/rs-p1", headers={**auth, "If-None-Match": 'W/"2"'},
                         timeout=10)
    assert again.status_code == 304 and again.content == b""
    head = requests.head(f"{service.fhir}/metadata", timeout=10)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    spoofed = requests.get(f"{service.fhir}/ResearchSubject?_count=2", headers={**auth, "Host": "evil.example"},
                           timeout=10).json()
    assert all(lk["url"].startswith(f"{service.fhir}/ResearchSubject?") for lk in spoofed["link"])
    xml = requests.get(f"{service.fhir}/metadata", headers={"Accept": "application/fhir+xml"}, timeout=10)
    assert xml.status_code == 406 and xml.json()["resourceType"] == "OperationOutcome"
    started = time.monotonic()
    bad = requests.get(f"{service.fhir}/ResearchSubject?_count=%C2%B2", headers=auth, timeout=10)
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["_count"]
    assert time.monotonic() - started < 10
