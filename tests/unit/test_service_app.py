"""The service app: secret check, size limit, OperationOutcomes, durable accept, health, read-only FHIR API.

Most tests use FastAPI's TestClient; ``test_real_server_*`` run the app under uvicorn in a child process on a
loopback port, check the secret over real HTTP, and kill the process with SIGKILL right after a burst was
accepted: after a restart every accepted event is processed and every patient's effect happens exactly once.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import Request
from fastapi.testclient import TestClient

from bridge.config import Settings
from bridge.errors import AuthError, ConfigError, InputError, Issue, ServerRejected, StoreError, ValidationFailed
from bridge.normalize.mappings import load_code_map
from bridge.publish.validate import validate_r4
from bridge.service.app import CachedProbe, create_app, read_body, status_for
from bridge.service.channels import channel_secret
from bridge.service.logs import JsonFormatter, clean, configure_logging
from bridge.service.worker import Worker, WorkerConfig
from bridge.state import PublishedRecord
from bridge.state.sqlite_state import SqliteState as SqliteStore
from tests.processes import free_port, wait_until_healthy

from .test_notifications import backport_bundle, encounter, observation
from .test_worker import Clock, FakeEhr, FakeRescreen

SECRET = "s3cret-webhook-0123456789abcdefghij"  # 32+ bytes, as the service requires at start-up
TOKEN = "api-token-1-0123456789abcdefghijklmn"
UI_TOKEN = "ui-token-123-0123456789abcdefghijkl"
REPO = Path(__file__).resolve().parents[2]
FHIR = "application/fhir+json"


def auth(secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": FHIR}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.sqlite3")
    yield s
    s.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(webhook_secret=SECRET, api_token=TOKEN, max_body_bytes=4000)


@pytest.fixture
def client(settings: Settings, store: SqliteStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store)) as c:
        yield c


def nothing_stored(store: SqliteStore) -> bool:
    return store.inbox_entries() == [] and store.subscriptions() == []


# ------------------------------------------------------------------------------------------ secrets


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET}, {"Authorization": f"Basic {SECRET}"},
    {"Authorization": f"Bearer {SECRET}x"},
])
def test_wrong_or_missing_secret_is_401_and_nothing_is_stored(client: TestClient, store: SqliteStore,
                                                                headers: dict[str, str]) -> None:
    resp = client.put("/notify/Encounter/e1", json=encounter(), headers=headers)
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith(FHIR)
    assert resp.headers["www-authenticate"].startswith("Bearer")
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "security" and body["issue"][0]["expression"] == ["Authorization"]
    assert nothing_stored(store)


def test_named_channels_need_their_derived_secret(client: TestClient, store: SqliteStore) -> None:
    assert client.post("/notify/adm", content=b"", headers=auth()).status_code == 401  # master secret: no
    ok = client.post("/notify/adm", content=b"", headers=auth(channel_secret(SECRET, "adm")))
    assert ok.status_code == 200
    assert client.post("/notify/labs", content=b"", headers=auth(channel_secret(SECRET, "adm"))).status_code == 401
    assert [e.event.channel for e in store.inbox_entries()] == ["adm"]


def test_without_a_configured_secret_every_notification_is_refused(store: SqliteStore) -> None:
    with TestClient(create_app(Settings(webhook_secret=None), store)) as c:
        assert c.post("/notify", content=b"", headers=auth("")).status_code == 401
        assert c.post("/notify", content=b"", headers={"Authorization": "Bearer None"}).status_code == 401
    assert nothing_stored(store)


def test_a_bad_channel_name_is_400(client: TestClient) -> None:
    resp = client.post("/notify/bad%20name", content=b"", headers=auth())
    assert resp.status_code == 400 and resp.json()["issue"][0]["expression"] == ["channel"]


# ------------------------------------------------------------------------------------------ bodies


def test_a_declared_oversized_body_is_413_and_nothing_is_stored(client: TestClient, store: SqliteStore) -> None:
    big = encounter() | {"text": {"status": "generated", "div": "<div>" + "x" * 5000 + "</div>"}}
    resp = client.put("/notify/Encounter/e1", json=big, headers=auth())
    assert resp.status_code == 413 and resp.json()["issue"][0]["code"] == "too-costly"
    assert nothing_stored(store)


def test_a_streamed_oversized_body_is_413_while_reading(client: TestClient, store: SqliteStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"resourceType": "Encounter", "id": "e1", "note": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    resp = client.put("/notify/Encounter/e1", content=chunks(), headers=auth())
    assert resp.status_code == 413
    assert nothing_stored(store)


def test_a_body_at_the_limit_is_accepted(settings: Settings, store: SqliteStore) -> None:
    body = json.dumps(encounter()).encode()
    exact = Settings(webhook_secret=SECRET, max_body_bytes=len(body))
    with TestClient(create_app(exact, store)) as c:
        assert c.put("/notify/Encounter/e1", content=body, headers=auth()).status_code == 200
    with TestClient(create_app(Settings(webhook_secret=SECRET, max_body_bytes=len(body) - 1), store)) as c:
        assert c.put("/notify/Encounter/e1", content=body, headers=auth()).status_code == 413


def test_non_json_is_400_with_an_operation_outcome(client: TestClient, store: SqliteStore) -> None:
    resp = client.post("/notify", content=b"{oops", headers=auth())
    assert resp.status_code == 400
    issue = resp.json()["issue"][0]
    assert (issue["code"], issue["expression"]) == ("structure", ["body"])
    assert nothing_stored(store)


def test_non_fhir_json_is_400_with_the_element_path(client: TestClient, store: SqliteStore) -> None:
    resp = client.post("/notify", json={"hello": "world"}, headers=auth())
    assert resp.status_code == 400 and resp.json()["issue"][0]["expression"] == ["resourceType"]
    bundle = backport_bundle("event-notification", 1, [{"number": 1, "focus": "Encounter/e1"}])
    bundle["entry"][0]["resource"]["parameter"][4] = {"name": "events-since-subscription-start",
                                                      "valueString": "lots"}
    resp = client.post("/notify", json=bundle, headers=auth())
    assert resp.status_code == 400
    assert resp.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.parameter[4].valueString"]
    assert nothing_stored(store)


def test_another_media_type_is_415(client: TestClient, store: SqliteStore) -> None:
    resp = client.post("/notify", content=b"<Bundle/>", headers={**auth(), "Content-Type": "application/xml"})
    assert resp.status_code == 415 and resp.json()["issue"][0]["code"] == "not-supported"
    assert nothing_stored(store)


def test_a_body_without_content_type_is_415(client: TestClient, store: SqliteStore) -> None:
    body, secret_only = json.dumps(encounter()).encode(), {"Authorization": f"Bearer {SECRET}"}
    for send in (lambda: client.put("/notify/Encounter/e1", content=body, headers=secret_only),
                 lambda: client.post("/notify", content=body, headers=secret_only)):
        resp = send()
        assert resp.status_code == 415 and resp.json()["issue"][0]["expression"] == ["Content-Type"]
    assert nothing_stored(store)
    assert client.post("/notify", headers=secret_only).status_code == 200  # a ping: no body, no type


@pytest.mark.parametrize("body", [b" ", b"\n", b" \r\n\t "])
def test_a_whitespace_only_body_is_400_and_never_stored(client: TestClient, store: SqliteStore, body: bytes) -> None:
    for _ in range(2):
        assert client.post("/notify", content=body, headers=auth()).status_code == 400
        assert client.put("/notify/Encounter/e1", content=body, headers=auth()).status_code == 400
    assert nothing_stored(store)


@pytest.mark.parametrize("length", [b"\xb2", b"1\xb2", b"\xb9\xb2", b"\xd9\xa1"])
def test_a_content_length_of_other_digits_is_no_500(length: bytes) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    request = Request({"type": "http", "method": "POST", "path": "/notify", "headers": [(b"content-length", length)]},
                      receive)
    assert asyncio.run(read_body(request, 10)) == b"{}"  # not a number: the size is checked while reading


# ------------------------------------------------------------------------------------------ durable accept


def test_accepted_events_are_committed_before_the_answer(client: TestClient, store: SqliteStore,
                                                         tmp_path: Path) -> None:
    resp = client.put("/notify/Encounter/e1", json=encounter(), headers=auth())
    assert resp.status_code == 200 and "1 new event(s)" in resp.json()["issue"][0]["diagnostics"]
    other = sqlite3.connect(tmp_path / "state.sqlite3")  # an independent reader sees it already
    assert other.execute("SELECT dedupe_key, state FROM inbox").fetchall() == [("res:Encounter/e1/_history/1",
                                                                                "pending")]
    other.close()


def test_duplicate_delivery_changes_nothing(client: TestClient, store: SqliteStore) -> None:
    bundle = backport_bundle("event-notification", 1, [{"number": 1, "focus": "Encounter/e1"}], [encounter()])
    first = client.post("/notify", json=bundle, headers=auth())
    second = client.post("/notify", json=bundle, headers=auth())
    assert "1 new event(s), 0 duplicate(s)" in first.json()["issue"][0]["diagnostics"]
    assert "0 new event(s), 1 duplicate(s)" in second.json()["issue"][0]["diagnostics"]
    assert len(store.inbox_entries()) == 1


def test_handshake_registers_the_subscription(client: TestClient, store: SqliteStore) -> None:
    resp = client.post("/notify", json=backport_bundle("handshake", 0), headers=auth())
    assert resp.status_code == 200
    sub = store.subscription("Subscription/adm1")
    assert sub is not None and (sub.kind, sub.covered_through, sub.channel) == ("topic", 0, "default")
    assert store.inbox_entries() == []


def test_the_classic_put_form_on_a_named_channel(client: TestClient, store: SqliteStore) -> None:
    resp = client.put("/notify/ward-7/Observation/o1", json=observation(),
                      headers=auth(channel_secret(SECRET, "ward-7")))
    assert resp.status_code == 200
    [entry] = store.inbox_entries()
    assert (entry.event.channel, entry.event.subscription, entry.event.resource_id) == ("ward-7", "channel/ward-7",
                                                                                         "o1")


def test_a_store_failure_is_503_so_the_ehr_retries(settings: Settings) -> None:
    class BrokenStore(SqliteStore):
        def __init__(self) -> None:  # no database at all
            pass

        def accept(self, delivery: Any, now: float) -> Any:
            raise StoreError("state store: accept failed: disk I/O error")

    with TestClient(create_app(settings, BrokenStore())) as c:
        resp = c.post("/notify", content=b"", headers=auth())
    assert resp.status_code == 503 and resp.json()["issue"][0]["code"] == "exception"


def test_gap_through_the_app_leads_to_a_catch_up_query(client: TestClient, store: SqliteStore,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    clock, ehr, rescreen = Clock(time.time()), FakeEhr(), FakeRescreen()
    worker = Worker(store, rescreen, ehr, load_code_map(),
                    WorkerConfig(coalesce_seconds=0, gap_grace_seconds=5, catch_up_on_start=False), clock=clock)
    for n in (1, 2, 4):
        bundle = backport_bundle("event-notification", n, [{"number": n, "focus": f"Encounter/e{n}"}],
                                 [encounter(f"e{n}", f"p{n}")])
        assert client.post("/notify", json=bundle, headers=auth()).status_code == 200
    ehr.changed = [encounter("e3", "p3")]
    clock.advance(10)
    with caplog.at_level(logging.WARNING):
        worker.run_until_idle()
    assert "reason=gap" in caplog.text and "first=3 last=3" in caplog.text
    assert len(ehr.queries) == 1 and sorted(rescreen.calls) == ["p1", "p2", "p3", "p4"]


# ------------------------------------------------------------------------------------------ health


def test_healthz_and_readyz(settings: Settings, store: SqliteStore) -> None:
    with TestClient(create_app(settings, store, ehr_probe=lambda: True)) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        c.put("/notify/Encounter/e1", json=encounter(), headers=auth())
        assert c.get("/readyz").json() == {"status": "ready"}  # anonymous: ready or not, nothing else
        assert c.get("/readyz", headers=bearer("wrong")).json() == {"status": "ready"}
        ready = c.get("/readyz", headers=bearer())
        assert ready.status_code == 200
        body = ready.json()
        assert (body["status"], body["store"], body["ehr"], body["worker"], body["depth"]) == (
            "ready", "ok", "reachable", "none", 1)
        assert body["inbox"] == {"pending": 1} and body["lastEventAt"].endswith("Z")


def test_readyz_is_503_when_the_ehr_is_unreachable(settings: Settings, store: SqliteStore) -> None:
    def probe() -> bool:
        raise ConnectionError("refused")

    with TestClient(create_app(settings, store, ehr_probe=probe)) as c:
        anonymous, detailed = c.get("/readyz"), c.get("/readyz", headers=bearer())
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "not-ready"})
    assert detailed.status_code == 503 and detailed.json()["ehr"] == "unreachable"


def test_readyz_reports_a_stopped_worker(settings: Settings, store: SqliteStore) -> None:
    worker = Worker(store, FakeRescreen(), FakeEhr(), load_code_map(), WorkerConfig(catch_up_on_start=False))
    app = create_app(settings, store, worker)
    with TestClient(app) as c:  # the lifespan starts the worker
        assert c.get("/readyz", headers=bearer()).json()["worker"] == "running"
        worker.stop()
        resp = c.get("/readyz", headers=bearer())
    assert resp.status_code == 503 and resp.json()["worker"] == "stopped"


def test_readyz_is_not_ready_while_the_store_cannot_write(settings: Settings, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "locked.sqlite3", busy_timeout=0.2)
    holder = sqlite3.connect(tmp_path / "locked.sqlite3", isolation_level=None)
    try:
        with TestClient(create_app(settings, store)) as c:
            holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: reads work, writes wait
            assert store.stats() is not None
            locked = c.get("/readyz", headers=bearer())
            holder.execute("ROLLBACK")
        assert locked.status_code == 503 and (locked.json()["status"], locked.json()["store"]) == (
            "not-ready", "unavailable")
        assert "depth" not in locked.json()
    finally:
        holder.close()
        store.close()


def test_readyz_commits_a_write_and_is_not_ready_when_it_fails(settings: Settings, store: SqliteStore,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app(settings, store)) as c:
        assert c.get("/readyz", headers=bearer()).json()["store"] == "ok"
    probe = sqlite3.connect(store.path).execute("SELECT at FROM write_probe").fetchall()
    assert len(probe) == 1  # a committed write, not a transaction that changes nothing

    def full(now: float) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "probe_write", full)
    with TestClient(create_app(settings, store)) as c:
        resp = c.get("/readyz", headers=bearer())
    assert resp.status_code == 503 and resp.json()["store"] == "unavailable"


def test_the_probe_is_cached() -> None:
    calls, now = [], [0.0]
    probe = CachedProbe(lambda: calls.append(1) or True, ttl=30, clock=lambda: now[0])
    assert probe.state() == "reachable" and probe.state() == "reachable" and len(calls) == 1
    now[0] = 30
    probe.state()
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------ read-only FHIR API


def _publish(store: SqliteStore, pid: str, status: str) -> None:
    subject = {"resourceType": "ResearchSubject", "id": f"rs-{pid}", "status": status,
               "identifier": [{"system": "https://cd7-bridge.example.org/fhir/NamingSystem/research-subject",
                               "value": f"NCT04762485-{pid}"}],
               "study": {"reference": "ResearchStudy/nct04762485"}, "individual": {"reference": f"Patient/{pid}"}}
    store.put_published(PublishedRecord(f"ResearchSubject|x|{pid}", "ResearchSubject", f"rs-{pid}", "fp", "1",
                                        subject, 0.0))


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_metadata_is_public_and_valid_r4(client: TestClient) -> None:
    resp = client.get("/fhir/metadata")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(FHIR)
    cap = resp.json()
    validate_r4(cap)
    subject = next(r for r in cap["rest"][0]["resource"] if r["type"] == "ResearchSubject")
    assert {"study", "patient", "status"} <= {p["name"] for p in subject["searchParam"]}


@pytest.mark.parametrize("path", ["/fhir/ResearchSubject", "/fhir/ResearchStudy", "/fhir/ResearchSubject/rs-p1"])
def test_the_fhir_api_needs_the_token(client: TestClient, store: SqliteStore, path: str) -> None:
    _publish(store, "p1", "candidate")
    assert client.get(path).status_code == 401
    assert client.get(path, headers=bearer("wrong")).status_code == 401
    assert client.get(path, headers=bearer(SECRET)).status_code == 401  # the webhook secret is not the token


def test_without_a_token_configured_the_api_is_closed(store: SqliteStore) -> None:
    with TestClient(create_app(Settings(webhook_secret=SECRET), store)) as c:
        resp = c.get("/fhir/ResearchSubject", headers=bearer(""))
    assert resp.status_code == 401 and "no api_token" in resp.json()["issue"][0]["diagnostics"]


def test_search_subjects_by_patient_status_and_study(client: TestClient, store: SqliteStore) -> None:
    _publish(store, "p1", "candidate")
    _publish(store, "p2", "ineligible")
    every = client.get("/fhir/ResearchSubject", headers=bearer()).json()
    assert (every["resourceType"], every["type"], every["total"]) == ("Bundle", "searchset", 2)
    validate_r4(every)
    one = client.get("/fhir/ResearchSubject?patient=Patient/p2", headers=bearer()).json()
    assert [e["resource"]["id"] for e in one["entry"]] == ["rs-p2"]
    assert one["entry"][0]["fullUrl"] == "http://127.0.0.1:8080/fhir/ResearchSubject/rs-p2"  # public base, not Host
    by_status = client.get("/fhir/ResearchSubject?status=candidate&study=nct04762485", headers=bearer()).json()
    assert [e["resource"]["id"] for e in by_status["entry"]] == ["rs-p1"]
    assert client.get("/fhir/ResearchSubject?patient=p9", headers=bearer()).json()["total"] == 0


def test_paging_with_count_and_offset(client: TestClient, store: SqliteStore) -> None:
    for i in range(5):
        _publish(store, f"p{i}", "candidate")
    page = client.get("/fhir/ResearchSubject?_count=2", headers=bearer()).json()
    assert page["total"] == 5 and len(page["entry"]) == 2
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    page2 = client.get(nxt, headers=bearer()).json()
    assert [e["resource"]["id"] for e in page2["entry"]] == ["rs-p2", "rs-p3"]


def test_read_by_id_and_not_found(client: TestClient, store: SqliteStore) -> None:
    _publish(store, "p1", "candidate")
    got = client.get("/fhir/ResearchSubject/rs-p1", headers=bearer())
    assert got.status_code == 200 and got.json()["individual"] == {"reference": "Patient/p1"}
    missing = client.get("/fhir/ResearchSubject/nope", headers=bearer())
    assert missing.status_code == 404 and missing.json()["issue"][0]["code"] == "not-found"


@pytest.mark.parametrize("query", ["foo=1", "patient=Group/g1", "_count=x", "_count=%C2%B2", "status="])
def test_bad_searches_are_400(client: TestClient, query: str) -> None:
    resp = client.get(f"/fhir/ResearchSubject?{query}", headers=bearer())
    assert resp.status_code == 400 and resp.json()["resourceType"] == "OperationOutcome"


def test_unknown_routes_and_methods_answer_with_operation_outcomes(client: TestClient) -> None:
    assert client.get("/nowhere").json()["issue"][0]["code"] == "not-found"
    resp = client.delete("/notify")
    assert resp.status_code == 405 and resp.json()["resourceType"] == "OperationOutcome"


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/notify", "/notify/{channel}", "/notify/{resource_type}/{resource_id}",
                 "/notify/{channel}/{resource_type}/{resource_id}", "/healthz", "/readyz", "/fhir/metadata",
                 "/fhir/ResearchSubject", "/fhir/ResearchSubject/{resource_id}", "/ui", "/ui/login", "/ui/logout",
                 "/ui/patients/{patient_id}"):
        assert path in paths


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    """Every $ref of ``node`` must resolve inside the document."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
        for value in node.values():
            _resolve(doc, value)
    elif isinstance(node, list):
        for value in node:
            _resolve(doc, value)


def test_openapi_describes_the_notification_bodies_and_every_parameter(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    _resolve(doc, doc)
    schemas = doc["components"]["schemas"]
    posted = doc["paths"]["/notify"]["post"]["requestBody"]["content"]["application/fhir+json"]["schema"]
    assert {"$ref": "#/components/schemas/NotificationBundle"} in posted["anyOf"]
    bundle = schemas["NotificationBundle"]
    assert bundle["properties"]["type"]["enum"] == ["history", "subscription-notification"]
    counts = schemas["SubscriptionStatus"]["properties"]["eventsSinceSubscriptionStart"]
    assert {"type": "string", "pattern": "^[0-9]{1,18}$"} in counts["anyOf"]
    assert "valueString" in schemas["Parameter"]["properties"]
    put = doc["paths"]["/notify/{channel}/{resource_type}/{resource_id}"]["put"]
    assert {p["name"]: p["schema"].get("pattern") for p in put["parameters"]} == {
        "channel": "^[A-Za-z0-9][A-Za-z0-9\\-_.]{0,63}$", "resource_type": "^[A-Z][A-Za-z]{1,63}$",
        "resource_id": "^[A-Za-z0-9\\-.]{1,64}$"}
    queue = {(p["in"], p["name"]) for p in doc["paths"]["/ui"]["get"]["parameters"]}
    assert queue == {("query", "status"), ("cookie", "bridge_ui")}
    assert ("header", "authorization") in {(p["in"], p["name"]) for p in doc["paths"]["/readyz"]["get"]["parameters"]}


def test_docs_are_off_unless_a_site_hosted_swagger_ui_is_configured(client: TestClient, store: SqliteStore) -> None:
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200
    assets = "https://intranet.example.org/static/swagger-ui"
    with TestClient(create_app(Settings(webhook_secret=SECRET, docs_assets_url=assets + "/"), store)) as c:
        page = c.get("/docs")
    assert page.status_code == 200
    scripts = re.findall(r'(?:src|href)="(https?://[^"]+)"', page.text)
    assert scripts and all(url.startswith(assets + "/") for url in scripts), scripts


# ------------------------------------------------------------------------------------------ errors, logs


@pytest.mark.parametrize(("exc", "status"), [
    (InputError("bad"), 400), (InputError("no", issue_code="security"), 401),
    (InputError("x", issues=[Issue("too-costly", "big")]), 413), (InputError("gone", issue_code="not-found"), 404),
    (StoreError("locked"), 503), (ServerRejected("500"), 502), (AuthError("401"), 502),
    (ValidationFailed("schema"), 500), (ConfigError("cfg"), 500),
])
def test_status_table(exc: Any, status: int) -> None:
    assert status_for(exc) == status


def test_logs_are_json_lines_with_ids_and_no_patient_data(settings: Settings, store: SqliteStore) -> None:
    stream = io.StringIO()
    hooks = sys.excepthook, threading.excepthook
    handler = configure_logging("DEBUG", stream)
    try:
        # a value with more decimals than the logs' timings (rounded to 0.1 ms), so it cannot match one by chance
        obs = observation() | {"identifier": [{"system": "urn:mrn", "value": "MRN-4471"}],
                               "performer": [{"display": "Dr Jane Roe"}],
                               "valueQuantity": {"value": 0.4173, "unit": "10*9/L"}}
        worker = Worker(store, FakeRescreen(), FakeEhr(), load_code_map(),
                        WorkerConfig(coalesce_seconds=0, catch_up_on_start=False))
        with TestClient(create_app(settings, store)) as c:
            c.put("/notify/Encounter/e1", json=encounter() | {"text": {"status": "generated",
                                                                      "div": "<div>Jane Roe</div>"}}, headers=auth())
            c.put("/notify/Observation/o1", json=obs, headers=auth())
            c.get("/fhir/ResearchSubject?patient=Patient/p1", headers=bearer())
        worker.run_until_idle()
    finally:
        logging.getLogger().removeHandler(handler)
        logging.captureWarnings(False)
        sys.excepthook, threading.excepthook = hooks
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    events = {line.get("event") for line in lines}
    assert {"notification.accepted", "http.request", "rescreen.done", "inbox.done"} <= events
    text = stream.getvalue()
    for secret in ("Jane", "Roe", "MRN-4471", "0.4173", SECRET, TOKEN, "?patient"):
        assert secret not in text
    done = next(line for line in lines if line.get("event") == "rescreen.done")
    assert (done["patient_id"], done["status"], done["level"]) == ("p1", "candidate", "info")


def test_log_fields_are_whitelisted_and_values_must_look_like_ids() -> None:
    out = clean({"patient_id": "p1", "status": "Jane Roe", "name": "Jane", "count": 3, "error": "x" * 400})
    assert out == {"patient_id": "p1", "status": "<redacted>", "count": 3, "error": "x" * 300, "dropped_fields": 1}
    record = logging.LogRecord("bridge.client", logging.INFO, __file__, 1, "GET %s -> %d", ("Patient/p1", 200),
                               None)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["event"] == "GET Patient/p1 -> 200" and doc["logger"] == "bridge.client"


# ------------------------------------------------------------------------------------------ a real server


class Harness:
    """``tests.unit.service_harness`` as a child process (uvicorn, 2 worker threads, a recording re-screen)."""

    def __init__(self, tmp: Path, delay: float = 0.05) -> None:
        self.db, self.calls, self.delay = tmp / "state.sqlite3", tmp / "calls.sqlite3", delay
        self.log = tmp / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Harness:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "tests.unit.service_harness", "--db", str(self.db), "--calls", str(self.calls),
               "--port", str(port), "--secret", SECRET, "--delay", str(self.delay)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        wait_until_healthy(self.proc, self.url, self.log, poll=0.05)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.calls, timeout=30)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.stop()


def _put(url: str, resource: dict[str, Any], secret: str = SECRET) -> int:
    resp = requests.put(f"{url}/notify/{resource['resourceType']}/{resource['id']}", json=resource,
                        headers=auth(secret), timeout=30)
    return resp.status_code


@pytest.mark.slow
def test_real_server_secret_and_size_checks_store_nothing(harness: Harness) -> None:
    harness.start()
    assert _put(harness.url, encounter(), secret="wrong") == 401
    resp = requests.post(f"{harness.url}/notify", data=b"", timeout=10)
    assert resp.status_code == 401 and resp.json()["issue"][0]["code"] == "security"

    def stream() -> Iterator[bytes]:  # chunked: no Content-Length to refuse early
        yield b'{"resourceType": "Encounter", "id": "e1", "x": "'
        for _ in range(200):
            yield b"z" * 1000
        yield b'"}'

    try:
        big = requests.put(f"{harness.url}/notify/Encounter/e1", data=stream(), headers=auth(), timeout=10)
        assert big.status_code == 413
    except requests.ConnectionError:
        pass  # the server may close the connection while the client is still sending: refused either way
    store = SqliteStore(harness.db)
    assert store.inbox_entries() == [] and store.subscriptions() == []
    store.close()
    assert _put(harness.url, encounter()) == 200


@pytest.mark.slow
def test_real_server_sigkill_after_a_burst_loses_nothing(harness: Harness) -> None:
    harness.delay = 0.05
    harness.start()
    admissions = [encounter(f"e{n}", f"p{n}") for n in range(60)]
    resend = admissions[:10]  # delivered twice: changes nothing
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda r: _put(harness.url, r), admissions + resend))
    assert codes == [200] * 70
    harness.kill()  # SIGKILL right after the last 200: workers are mid-way

    store = SqliteStore(harness.db)
    assert len(store.inbox_entries()) == 60  # every accepted event is on disk
    before = store.stats()
    store.close()
    assert before.depth > 0, "the kill came too late to test anything"

    harness.start()
    store = SqliteStore(harness.db)
    deadline = time.monotonic() + 60
    while store.stats().depth and time.monotonic() < deadline:
        time.sleep(0.1)
    after = store.stats()
    store.close()
    assert after.inbox == {"done": 60} and after.rescreens == {"done": 60}
    effects = harness.query("SELECT patient, writes FROM effects ORDER BY patient")
    assert sorted(p for p, _ in effects) == sorted(f"p{n}" for n in range(60))
    calls = harness.query("SELECT COUNT(*) FROM calls")[0][0]
    assert 60 <= calls <= 62  # at most one re-screen per worker thread was cut off by the kill and redone


def test_the_coordinator_page_is_mounted_behind_the_api_token(store: SqliteStore) -> None:
    from bridge.state import ScreeningRecord

    store.save_screening(ScreeningRecord("p01", "candidate", [
        {"criterion": "inc-age", "result": "met", "evidence": ["Patient/p01"], "reason": "age 34 on 2026-06-15"}],
        "2026-06-15", 1_780_000_000.0))
    with TestClient(create_app(Settings(webhook_secret=SECRET, api_token=UI_TOKEN), store)) as c:
        assert c.get("/ui", follow_redirects=False).status_code in (302, 303, 401)
        page = c.get("/ui", headers={"Authorization": f"Bearer {UI_TOKEN}"})
        assert page.status_code == 200 and "p01" in page.text and "candidate" in page.text
        assert c.get("/ui/patients/p01", headers={"Authorization": f"Bearer {UI_TOKEN}"}).status_code == 200
        assert UI_TOKEN not in page.text


def test_without_an_ehr_the_service_serves_the_local_store_without_a_worker(tmp_path: Path) -> None:
    from bridge.service.app import build_app

    settings = Settings(db_path=str(tmp_path / "state.sqlite3"), webhook_secret=SECRET, api_token=UI_TOKEN)
    with TestClient(build_app(settings)) as c:
        ready = c.get("/readyz", headers=bearer(UI_TOKEN)).json()
        assert (ready["status"], ready["worker"], ready["ehr"]) == ("ready", "none", "not-configured")
        assert c.get("/ui", headers={"Authorization": f"Bearer {UI_TOKEN}"}).status_code == 200
