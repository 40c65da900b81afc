"""The pre-screening service end to end: a real EHR (the sekmet peer) notifies the bridge, unasked.

The bridge runs as a real process (``python server.py --config ...``) on a loopback port; ``bridge subscribe``
creates the subscriptions on the peer; one sample patient's data is loaded, then the admission Encounter.
The ResearchSubject must appear on the peer within ``DEADLINE`` seconds — once through classic rest-hook
subscriptions (the peer PUTs the resource), once through the R4 backport admission topic (``id-only``: the
bridge reads the Encounter back with its own credentials). Its verdicts must be those ``bridge prescreen``
gives for the same resources read from a file, as of the date the service used (invariant: same data, same
verdicts, whatever the source).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bridge.client import FhirClient
from bridge.config import RuleOptions
from bridge.ingest.readers import Entry
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import prescreen_items
from bridge.publish.subject import subject_identifier, verdicts_from_subject
from bridge.service.triggers import patient_of
from bridge.state.sqlite_state import SqliteState as SqliteStore
from tests.processes import ServiceProcess

from .loading import load_bundle, sample_resources
from .peer import PeerServer

pytestmark = pytest.mark.peer

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "samples" / "prescreen" / "bundle.json"
SITE_MAP = REPO / "samples" / "site-map.yaml"
PATIENT = "p01"
DEADLINE = 30.0
SECRET = "e2e-webhook-secret-0123456789abcdef"  # the service refuses secrets under 32 bytes
API_TOKEN = "e2e-api-token-0123456789abcdefghij"


def patient_resources(pid: str) -> list[dict[str, Any]]:
    """The sample's resources of one patient: the Patient and everything whose subject is that Patient."""
    return [r for r in sample_resources(BUNDLE)
            if (r["resourceType"] == "Patient" and r["id"] == pid)
            or patient_of(r.get("subject")) == pid or patient_of(r.get("patient")) == pid]


class Service(ServiceProcess):
    """The bridge service as a child process (``server.py``) over the peer EHR."""

    def __init__(self, workdir: Path, ehr_base_url: str) -> None:
        super().__init__(workdir, {"ehr_base_url": ehr_base_url, "webhook_secret": SECRET, "api_token": API_TOKEN,
                                   "site_map": str(SITE_MAP), "log_level": "INFO"})

    def subscribe(self, peer: PeerServer, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "bridge", "subscribe", peer.base_url, "--endpoint", f"{self.url}/notify",
               "--config", str(self.config), "--json", *args]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def service(fresh_peer: PeerServer, tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, fresh_peer.base_url).start()
    yield svc
    svc.stop()


def wait_for_subject(client: FhirClient, pid: str) -> dict[str, Any]:
    system, value = subject_identifier(pid)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for res in client.search("ResearchSubject", {"_count": "100"}, matches_only=True):
            if any(i.get("system") == system and i.get("value") == value for i in res.get("identifier") or []):
                return res
        time.sleep(0.25)
    raise AssertionError(f"no ResearchSubject for Patient/{pid} within {DEADLINE:.0f} s")


def admit(client: FhirClient, pid: str) -> float:
    """Load the patient's data, then (the trigger) the admission Encounter; returns when it was sent."""
    resources = patient_resources(pid)
    encounters = [r for r in resources if r["resourceType"] == "Encounter"]
    assert encounters and encounters[0]["status"] == "in-progress" and encounters[0]["class"]["code"] == "IMP"
    load_bundle(client, {"entry": [{"resource": r} for r in resources if r["resourceType"] != "Encounter"]})
    started = time.monotonic()
    load_bundle(client, {"entry": [{"resource": r} for r in encounters]})
    return started


def assert_same_verdicts_as_from_a_file(subject: dict[str, Any], pid: str) -> None:
    as_of, reading, verdicts = verdicts_from_subject(subject)
    options = RuleOptions(as_of=as_of, organ_function_reading=reading)  # type: ignore[arg-type]
    items = [Entry(r, f"sample {r['resourceType']}/{r['id']}") for r in patient_resources(pid)]
    [expected] = prescreen_items(items, options, load_code_map(SITE_MAP)).screenings
    assert subject["status"] == expected.status
    assert {v.criterion: v.result for v in verdicts} == {v.criterion: v.result for v in expected.verdicts}


def test_classic_rest_hook_admission_publishes_the_research_subject(fresh_peer: PeerServer,
                                                                    service: Service) -> None:
    done = service.subscribe(fresh_peer, "--mode", "classic")
    assert done.returncode == 0, done.stderr
    assert {s["status"] for s in yaml.safe_load(done.stdout)} == {"active"}
    with FhirClient(fresh_peer.base_url) as client:
        admit(client, PATIENT)
        subject = wait_for_subject(client, PATIENT)
    assert subject["individual"] == {"reference": f"Patient/{PATIENT}"}
    assert_same_verdicts_as_from_a_file(subject, PATIENT)
    assert served_subject_ids(service) == [subject["id"]]


def served_subject_ids(service: Service, within: float = 15.0) -> list[str]:
    """The subjects the service's read API serves for PATIENT; the service records what it published just
    after the write the test saw on the peer, so give it a bounded moment."""
    deadline = time.monotonic() + within
    while True:
        served = requests.get(f"{service.url}/fhir/ResearchSubject?patient={PATIENT}",
                              headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10).json()
        ids = [e["resource"]["id"] for e in served.get("entry") or []]
        if ids or time.monotonic() > deadline:
            return ids
        time.sleep(0.2)


def test_backport_admission_topic_publishes_the_research_subject(fresh_peer: PeerServer,
                                                                 service: Service) -> None:
    done = service.subscribe(fresh_peer, "--mode", "topic", "--heartbeat", "30")
    assert done.returncode == 0, done.stderr
    [topic] = yaml.safe_load(done.stdout)
    assert (topic["kind"], topic["status"]) == ("topic", "active")
    assert topic["criteria"].endswith("encounter-start")
    with FhirClient(fresh_peer.base_url) as client:
        admit(client, PATIENT)
        subject = wait_for_subject(client, PATIENT)
    assert_same_verdicts_as_from_a_file(subject, PATIENT)
    store = SqliteStore(service.db)
    try:
        sub = store.subscription(f"Subscription/{topic['id']}")
        assert sub is not None and (sub.kind, sub.heartbeat_seconds, sub.channel) == ("topic", 30.0,
                                                                                       "topic-encounter-start")
        numbered = [e.event for e in store.inbox_entries() if e.event.subscription == sub.id]
        assert [(e.event_number, e.resource_id, e.payload) for e in numbered] == [(1, f"{PATIENT}-enc", None)]
    finally:
        store.close()


def test_subscribe_is_idempotent_and_lists_and_deletes(fresh_peer: PeerServer, service: Service) -> None:
    first = yaml.safe_load(service.subscribe(fresh_peer).stdout)
    again = yaml.safe_load(service.subscribe(fresh_peer).stdout)
    assert {s["action"] for s in first} == {"created"} and {s["action"] for s in again} == {"exists"}
    assert sorted(s["id"] for s in first) == sorted(s["id"] for s in again)
    classic = next(s for s in first if s["channel"] == "classic-encounter")
    with FhirClient(fresh_peer.base_url) as client:  # as the EHR does after failed deliveries
        client.update_with_retry("Subscription", classic["id"], lambda sub: {**sub, "status": "error"})
    repaired = {s["channel"]: s for s in yaml.safe_load(service.subscribe(fresh_peer).stdout)}
    assert (repaired["classic-encounter"]["action"], repaired["classic-encounter"]["status"]) == ("reactivated",
                                                                                                "active")
    assert repaired["classic-condition"]["action"] == "exists"
    listed = yaml.safe_load(service.subscribe(fresh_peer, "--list").stdout)
    assert sorted(s["id"] for s in listed) == sorted(s["id"] for s in first)
    assert {s["kind"] for s in listed} == {"classic", "topic"}
    gone = yaml.safe_load(service.subscribe(fresh_peer, "--delete", "all").stdout)["deleted"]
    assert sorted(gone) == sorted(s["id"] for s in first)
    assert yaml.safe_load(service.subscribe(fresh_peer, "--list").stdout) == []


def test_polling_covers_an_ehr_without_subscriptions(fresh_peer: PeerServer, tmp_path: Path) -> None:
    svc = Service(tmp_path, fresh_peer.base_url)  # only its settings: no server, no subscription
    with FhirClient(fresh_peer.base_url) as client:
        admit(client, PATIENT)
        cmd = [sys.executable, "-m", "bridge", "watch", "--poll", "5", "--once", "--since-hours", "1",
               "--timeout", "60", "--config", str(svc.config)]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        subject = wait_for_subject(client, PATIENT)
    assert_same_verdicts_as_from_a_file(subject, PATIENT)
    store = SqliteStore(svc.db)
    try:
        poll = store.subscription("poll/default")
        assert poll is not None and poll.kind == "poll" and poll.last_query_at is not None
        assert store.stats().inbox == {"done": 1} and store.stats().rescreens == {"done": 1}
    finally:
        store.close()
