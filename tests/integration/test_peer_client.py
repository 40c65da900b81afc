"""FhirClient against the real peer FHIR server (sekmet-fhir 0.1.1 on loopback).

The session server is shared, so every test works under its own identifier system (a fresh URN) and
never counts resources it did not make. Dates are fixed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.client import FhirClient
from bridge.config import Settings
from bridge.errors import AuthError, Conflict, ServerRejected

from .peer import PeerServer

pytestmark = pytest.mark.peer


class CountingSession(requests.Session):
    """A session that remembers (method, path) of every response — never bodies or queries."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []
        self.hooks["response"].append(self._remember)

    def _remember(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.seen.append((str(resp.request.method), urlsplit(str(resp.request.url)).path))

    def count(self, method: str, path_suffix: str = "") -> int:
        return sum(m == method and p.endswith(path_suffix) for m, p in self.seen)


@pytest.fixture
def session() -> CountingSession:
    return CountingSession()


@pytest.fixture
def client(peer: PeerServer, session: CountingSession) -> Iterator[FhirClient]:
    with FhirClient(peer.base_url, Settings(retries=1), session=session) as fhir:
        yield fhir


@pytest.fixture
def system() -> str:
    """An identifier system no other test uses."""
    return f"urn:uuid:{uuid.uuid4()}"


def patient(system: str, value: str = "MRN-1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}], **extra}


def observation(system: str, value: str, subject: str | None = None) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": system, "value": value}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "effectiveDateTime": "2026-02-03T10:00:00+01:00",
        "valueQuantity": {"value": 11.2, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"},
    }
    if subject:
        obs["subject"] = {"reference": subject}
    return obs


def test_capabilities_is_an_r4_capability_statement(client: FhirClient) -> None:
    cap = client.capabilities()
    assert cap["resourceType"] == "CapabilityStatement"
    assert cap["fhirVersion"] == "4.0.1"


def test_create_read_vread_update(client: FhirClient, system: str) -> None:
    created = client.create(patient(system, birthDate="1980-04-05"))
    pid = created.id
    assert created.created and pid
    assert (created.version_id, created.etag) == ("1", 'W/"1"')
    assert created.location and f"/Patient/{pid}/_history/1" in created.location

    read = client.read("Patient", pid)
    assert read.resource["birthDate"] == "1980-04-05"
    assert read.version_id == "1"

    updated = client.update({**read.resource, "birthDate": "1980-04-06"}, if_match=read.version_id)
    assert (updated.status, updated.version_id) == (200, "2")
    assert client.vread("Patient", pid, "1").resource["birthDate"] == "1980-04-05"
    assert client.read("Patient", pid).resource["birthDate"] == "1980-04-06"


def test_update_with_a_stale_version_is_a_conflict(client: FhirClient, system: str) -> None:
    first = client.create(patient(system)).resource
    client.update({**first, "active": True}, if_match="1")
    with pytest.raises(Conflict) as info:
        client.update({**first, "active": False}, if_match="1")
    assert info.value.status == 412
    assert info.value.issues[0].code == "conflict"


def test_update_with_retry_reapplies_the_change_after_a_concurrent_write(
    client: FhirClient, session: CountingSession, system: str
) -> None:
    pid = client.create(patient(system)).resource["id"]
    calls: list[str] = []

    def mutate(current: dict[str, Any]) -> dict[str, Any]:
        calls.append(current["meta"]["versionId"])
        if len(calls) == 1:  # another writer slips in between our read and our write
            client.update({**current, "gender": "female"})
        return {**current, "active": True}

    result = client.update_with_retry("Patient", pid, mutate)
    assert calls == ["1", "2"]
    assert result.version_id == "3"
    final = client.read("Patient", pid).resource
    assert (final["gender"], final["active"]) == ("female", True)  # neither change was lost


def test_update_with_retry_gives_up_after_one_retry(client: FhirClient, session: CountingSession, system: str) -> None:
    pid = client.create(patient(system)).resource["id"]

    def always_overtaken(current: dict[str, Any]) -> dict[str, Any]:
        client.update({**current, "active": not current.get("active", False)})
        return {**current, "gender": "other"}

    before = session.count("PUT", f"/Patient/{pid}")
    with pytest.raises(Conflict):
        client.update_with_retry("Patient", pid, always_overtaken)
    # per attempt: the concurrent PUT and our refused PUT; exactly two attempts
    assert session.count("PUT", f"/Patient/{pid}") - before == 4
    assert "gender" not in client.read("Patient", pid).resource


def test_conditional_create_twice_makes_one_resource(client: FhirClient, system: str) -> None:
    criteria = f"identifier={system}|MRN-7"
    first = client.create(patient(system, "MRN-7"), if_none_exist=criteria)
    second = client.create(patient(system, "MRN-7", active=True), if_none_exist=criteria)
    assert (first.status, second.status) == (201, 200)
    assert first.id == second.id
    assert "active" not in second.resource  # the peer answers with the existing resource, unchanged
    found = list(client.search("Patient", {"identifier": f"{system}|MRN-7"}))
    assert [r["id"] for r in found] == [first.id]


def test_conditional_update_twice_makes_one_resource(client: FhirClient, system: str) -> None:
    criteria = {"identifier": f"{system}|MRN-9"}
    first = client.conditional_update(patient(system, "MRN-9"), criteria)
    second = client.conditional_update(patient(system, "MRN-9", active=True), criteria)
    assert (first.status, second.status) == (201, 200)
    assert first.id == second.id
    assert (first.version_id, second.version_id) == ("1", "2")
    found = list(client.search("Patient", criteria))
    assert len(found) == 1 and found[0]["active"] is True


def test_search_paging_collects_every_page(client: FhirClient, session: CountingSession, system: str) -> None:
    made = {str(client.create(observation(system, f"obs-{i}")).id) for i in range(5)}
    before = session.count("GET", "/Observation")
    params = {"identifier": f"{system}|", "_count": 2, "_lastUpdated": "ge2020-01-01"}
    found = [r["id"] for r in client.search("Observation", params)]
    assert sorted(found) == sorted(made)
    assert len(found) == 5
    assert session.count("GET", "/Observation") - before == 3  # pages of 2 + 2 + 1


def test_search_include_and_matches_only(client: FhirClient, system: str) -> None:
    pid = client.create(patient(system)).id
    client.create(observation(system, "inc-1", f"Patient/{pid}"))
    params = {"identifier": f"{system}|inc-1", "_include": "Observation:subject"}
    both = [(r["resourceType"], r["id"]) for r in client.search("Observation", params)]
    assert ("Patient", pid) in both and len(both) == 2
    only = [r["resourceType"] for r in client.search("Observation", params, matches_only=True)]
    assert only == ["Observation"]


def test_transaction_resolves_urn_uuid_references(client: FhirClient, system: str) -> None:
    p_urn, o_urn = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": p_urn,
                "resource": patient(system, "TX-1"),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={system}|TX-1"},
            },
            {
                "fullUrl": o_urn,
                "resource": observation(system, "TX-OBS", p_urn),
                "request": {"method": "PUT", "url": f"Observation?identifier={system}|TX-OBS"},
            },
        ],
    }
    result = client.transaction(bundle)
    assert result.resource["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result.resource["entry"]]
    assert all(s.startswith("201") for s in statuses)
    pid = result.resource["entry"][0]["resource"]["id"]
    oid = result.resource["entry"][1]["resource"]["id"]
    assert client.read("Observation", oid).resource["subject"]["reference"] == f"Patient/{pid}"


def test_invalid_resource_is_server_rejected_with_issues(client: FhirClient, system: str) -> None:
    bad = patient(system, birthDate="1980-13-45", favouriteColour="blue")
    with pytest.raises(ServerRejected) as info:
        client.create(bad)
    err = info.value
    assert err.status == 400
    paths = {p for issue in err.issues for p in issue.expression}
    assert {"Patient.birthDate", "Patient.favouriteColour"} <= paths
    assert "1980-13-45" not in err.message and "blue" not in err.message


def test_missing_required_element_is_server_rejected(client: FhirClient, system: str) -> None:
    obs = observation(system, "no-code")
    del obs["code"]
    with pytest.raises(ServerRejected) as info:
        client.create(obs)
    assert [i.expression for i in info.value.issues] == [("Observation.code",)]


def test_delete_then_read_is_gone(client: FhirClient, system: str) -> None:
    pid = str(client.create(patient(system)).id)
    assert client.delete("Patient", pid).status == 200
    with pytest.raises(ServerRejected) as info:
        client.read("Patient", pid)
    assert (info.value.status, info.value.issues[0].code) == (410, "deleted")


def test_unknown_read_is_not_found(client: FhirClient) -> None:
    with pytest.raises(ServerRejected) as info:
        client.read("Patient", "no-such-patient")
    assert (info.value.status, info.value.issues[0].code) == (404, "not-found")


def test_peer_quirk_no_identifier_search_on_research_subject(client: FhirClient, system: str) -> None:
    """sekmet-fhir 0.1.1 has no ResearchSubject search parameters: conditional writes say 400 not-supported."""
    subject = {
        "resourceType": "ResearchSubject",
        "status": "candidate",
        "identifier": [{"system": system, "value": "S-1"}],
        "study": {"reference": "ResearchStudy/cd7"},
        "individual": {"reference": "Patient/x"},
    }
    with pytest.raises(ServerRejected) as info:
        client.conditional_update(subject, {"identifier": f"{system}|S-1"})
    assert (info.value.status, info.value.issues[0].code) == (400, "not-supported")
    created = client.create(subject)  # plain create and read by id work
    assert client.read("ResearchSubject", str(created.id)).resource["identifier"][0]["value"] == "S-1"


# ---------------------------------------------------------------- SMART Backend Services against the peer


@pytest.fixture
def smart_key(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "client.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = tmp_path / "client.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private


@pytest.fixture
def peer_settings(smart_key: Path) -> dict[str, Any]:
    client = {
        "client_id": "cd7-bridge",
        "public_key_path": str(smart_key.with_suffix(".pub.pem")),
        "scopes": "system/*.read system/*.write",
    }
    return {"server_auth": {"types": ["smart"], "smart_clients": [client]}}


def test_smart_backend_services_against_the_peer(
    fresh_peer: PeerServer, smart_key: Path, session: CountingSession, system: str
) -> None:
    anonymous = FhirClient(fresh_peer.base_url, Settings(retries=0))
    with pytest.raises(AuthError) as info:
        anonymous.read("Patient", "x")
    assert info.value.status == 401

    settings = Settings(
        smart_client_id="cd7-bridge",
        smart_key_file=str(smart_key),
        smart_alg="RS384",
        smart_scope="system/Patient.read system/Patient.write",
        retries=1,
    )
    fhir = FhirClient(fresh_peer.base_url, settings, session=session)
    pid = fhir.create(patient(system)).id
    assert fhir.read("Patient", str(pid)).resource["id"] == pid
    counts = Counter(session.seen)
    assert counts[("GET", "/fhir/.well-known/smart-configuration")] == 1
    assert counts[("POST", "/auth/token")] == 1  # one token for both calls
    with pytest.raises(AuthError) as denied:  # the granted scopes do not cover Observation
        fhir.create(observation(system, "o"))
    assert denied.value.status == 403
