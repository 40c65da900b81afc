"""Real ``/fhir`` responses pass Medplum's validator (issue #14 item 4).

The service app (FastAPI's TestClient over ``create_app``) serves an index filled with what the builders
produce from the samples — the ResearchStudy, sample ResearchSubjects (two versions of one), response
Observations, AdverseEvents and a Provenance — and every kind of answer is validated as it arrives: the
CapabilityStatement, reads, vreads, searchsets (with paging, ``_count=0``, ``_summary=count``, ``_elements``,
``_summary=true``), type and instance ``_history``, and the OperationOutcome of a 404. Resources inside the
Bundles are also checked on their own against the bridge profile they fall under, except where ``_elements``
or ``_summary`` legitimately left required elements out (the server marks those SUBSETTED).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridge.config import RuleOptions, Settings
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import prescreen
from bridge.publish.study import research_study
from bridge.publish.subject import research_subject
from bridge.publish.validate import REPO_ROOT
from bridge.service.app import create_app
from bridge.state import PublishedRecord
from bridge.state.sqlite_state import SqliteState
from tests.integration.test_validator import assessment_resources, provenances
from tests.validator import FhirValidator, fhir_validator  # noqa: F401

Json = dict[str, Any]
TOKEN = "validator-api-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "https://bridge.example.org/cd7"
T0 = 1_780_000_000.0
OPTIONS = RuleOptions(as_of=date(2026, 6, 15))


def published() -> list[Json]:
    """What the bridge publishes, with server ids: study, eight subjects, assessment outcomes, Provenance."""
    cmap = load_code_map(REPO_ROOT / "samples" / "site-map.yaml")
    run = prescreen(str(REPO_ROOT / "samples" / "prescreen" / "bundle.json"), OPTIONS, cmap)
    out: list[Json] = [research_study()]
    for s in run.screenings[:8]:
        pid = s.patient.removeprefix("Patient/")
        out.append({**research_subject(pid, s.status, list(s.verdicts), OPTIONS.as_of, "organ-function"),
                    "id": f"rs-{pid}"})
    for n, resource in enumerate(assessment_resources()[:12]):
        out.append({**resource, "id": f"{resource['resourceType'].lower()}-{n}"})
    out += [{**p, "id": f"prov-{n}"} for n, p in enumerate(provenances()[:3])]
    return out


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, list[Json]]]:
    store = SqliteState(Path(tmp_path_factory.mktemp("fhir")) / "state.sqlite3")
    resources = published()
    for n, r in enumerate(resources):
        store.put_published(PublishedRecord(f"{r['resourceType']}|x|{r['id']}", r["resourceType"], r["id"], "fp",
                                            "1", r, T0 + n))
    first = next(r for r in resources if r["resourceType"] == "ResearchSubject")
    store.put_published(PublishedRecord(f"ResearchSubject|x|{first['id']}", "ResearchSubject", first["id"], "fp2",
                                        "2", {**first, "status": "screening"}, T0 + 1000))  # a second version
    settings = Settings(api_token=TOKEN, webhook_secret="w" * 32, public_base_url=BASE + "/")
    with TestClient(create_app(settings, store)) as c:
        yield c, resources
    store.close()


def answers(c: TestClient, resources: list[Json]) -> dict[str, Json]:
    """Every kind of /fhir answer, by request."""
    subject = next(r for r in resources if r["resourceType"] == "ResearchSubject")
    rs = f"/fhir/ResearchSubject/{subject['id']}"
    urls = ["/fhir/metadata", rs, f"{rs}/_history/1", f"{rs}/_history", "/fhir/ResearchSubject/_history",
            "/fhir/ResearchSubject?_count=3", "/fhir/ResearchSubject?_count=3&_offset=3",
            "/fhir/ResearchSubject?_count=0", "/fhir/ResearchSubject?_summary=count",
            "/fhir/ResearchSubject?status=candidate,ineligible", "/fhir/ResearchSubject?_elements=status,identifier",
            "/fhir/ResearchStudy", "/fhir/ResearchStudy?_summary=true", "/fhir/Observation", "/fhir/AdverseEvent",
            "/fhir/Provenance", "/fhir/ResearchSubject/absent",
            "/fhir/ResearchSubject?_sort=-_lastUpdated&_total=accurate"]
    out = {}
    for url in urls:
        resp = c.get(url, headers=AUTH)
        assert resp.status_code in (200, 404), (url, resp.status_code, resp.text[:300])
        out[url] = resp.json()
    return out


def entries(bundle: Json) -> list[Json]:
    return [e["resource"] for e in bundle.get("entry") or [] if isinstance(e.get("resource"), dict)]


def subsetted(resource: Json) -> bool:
    return any(t.get("code") == "SUBSETTED" for t in (resource.get("meta") or {}).get("tag") or [])


def test_every_fhir_answer_passes_the_validator(client: tuple[TestClient, list[Json]],
                                                fhir_validator: FhirValidator) -> None:  # noqa: F811
    c, resources = client
    got = answers(c, resources)
    inner = [(url, r) for url, body in got.items() if body.get("resourceType") == "Bundle"
             for r in entries(body) if not subsetted(r)]
    assert len(inner) > 20
    kinds = {body["resourceType"] for body in got.values()} | {r["resourceType"] for _, r in inner}
    assert {"CapabilityStatement", "Bundle", "OperationOutcome", "ResearchSubject", "ResearchStudy",
            "Observation", "AdverseEvent", "Provenance"} <= kinds
    verdicts = fhir_validator.validate([*got.values(), *(r for _, r in inner)])
    labels = [*got, *(f"{url} -> {r['resourceType']}/{r.get('id')}" for url, r in inner)]
    failures = {label: v.text() for label, v in zip(labels, verdicts, strict=True) if v.errors}
    assert not failures, failures


def test_the_capability_statement_alone_is_valid_r4(
        client: tuple[TestClient, list[Json]], fhir_validator: FhirValidator) -> None:  # noqa: F811
    c, _ = client
    statement = c.get("/fhir/metadata").json()
    verdict = fhir_validator.validate_one(statement)
    assert not verdict.errors, verdict.text()
    assert statement["fhirVersion"] == "4.0.1"
