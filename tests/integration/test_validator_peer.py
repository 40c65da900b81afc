"""Against the real peer (sekmet-fhir): conformance resources and transactions, and what the peer then holds
passes Medplum's validator (issue #14 items 3, 4, 5).

- ``publish_study`` writes the bridge's StructureDefinitions, CodeSystems and ValueSets once: a second run
  leaves every one alone, and the peer holds each canonical url exactly once. The peer has no ``url`` search
  parameter (it answers such a search with everything), so they are found client-side and written by id.
- The peer's CapabilityStatement offers transactions, so each ResearchSubject travels with its Provenance in
  one transaction Bundle: no separate Provenance request is made. The peer rejects the conditional update on
  ``identifier`` inside a transaction (``not-supported``, it has no such parameter for ResearchSubject), so the
  publisher sends the same transaction by id (If-Match) or as a create; both are exercised here. The
  Provenance the peer stores targets the subject it created (``urn:uuid`` resolved by the server).
- Everything read back from the peer passes the validator, the subjects against the bridge profile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bridge.client import FhirClient
from bridge.config import RuleOptions
from bridge.evaluate.eligibility import Screening
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import prescreen
from bridge.publish.conformance import load_resources
from bridge.publish.policy import concerns_the_study
from bridge.publish.publisher import Written, offers_transaction, publish_screenings, publish_study
from bridge.publish.validate import REPO_ROOT
from tests.validator import FhirValidator, fhir_validator  # noqa: F401

from .loading import all_resources
from .peer import PeerServer

Json = dict[str, Any]
OPTIONS = RuleOptions(as_of=date(2026, 6, 15))
RECORDED = datetime(2026, 6, 15, 9, 30, tzinfo=timezone(timedelta(hours=8)))
CANONICAL = ("StructureDefinition", "CodeSystem", "ValueSet")


def clock() -> datetime:
    return RECORDED


@dataclass
class Runs:
    study: list[Written]
    first: list[Written]
    second: list[Written]
    changed: list[Written]
    requests: list[tuple[str, str]]


def screenings() -> list[Screening]:
    run = prescreen(str(REPO_ROOT / "samples" / "prescreen" / "bundle.json"), OPTIONS,
                    load_code_map(REPO_ROOT / "samples" / "site-map.yaml"))
    return [s for s in run.screenings if concerns_the_study(s)][:6]


@pytest.fixture(scope="module")
def client(sekmet_executable: Path) -> Iterator[FhirClient]:
    with PeerServer(sekmet_executable) as srv, FhirClient(srv.base_url) as fhir:
        yield fhir


@pytest.fixture(scope="module")
def runs(client: FhirClient) -> Runs:
    requests: list[tuple[str, str]] = []

    def record(resp: Any, *_args: Any, **_kwargs: Any) -> None:
        requests.append((resp.request.method, urlsplit(resp.request.url).path.split("/fhir", 1)[-1] or "/"))

    study = [publish_study(client, clock=clock) for _ in range(2)]
    chosen = screenings()
    client.http.hooks["response"].append(record)
    try:
        first = publish_screenings(client, chosen, OPTIONS, clock)
        second = publish_screenings(client, chosen, OPTIONS, clock)
        flipped = [Screening(s.patient, "ineligible" if s.status != "ineligible" else "candidate", s.verdicts)
                   for s in chosen[:2]]
        changed = publish_screenings(client, flipped, OPTIONS, clock)
    finally:
        client.http.hooks["response"].remove(record)
    return Runs(study, first, second, changed, requests)


def test_the_peer_offers_transactions(client: FhirClient) -> None:
    assert offers_transaction(client)


def test_the_conformance_resources_are_written_once(client: FhirClient, runs: Runs) -> None:
    held = [r for rtype in CANONICAL for r in all_resources(client, rtype)]
    counts = Counter(r["url"] for r in held)
    expected = load_resources()
    assert set(counts) == {r["url"] for r in expected}
    assert max(counts.values()) == 1  # never a duplicate
    by_url = {r["url"]: r for r in held}
    for resource in expected:
        stored = {k: v for k, v in by_url[resource["url"]].items() if k not in ("meta", "text")}
        assert stored == resource, resource["url"]  # the bridge's own id kept
    assert [w.outcome for w in runs.study] == ["created", "unchanged"]


def test_each_subject_travels_with_its_provenance_in_one_transaction(client: FhirClient, runs: Runs) -> None:
    assert [w.outcome for w in runs.first] == ["created"] * len(runs.first)
    assert [w.outcome for w in runs.second] == ["unchanged"] * len(runs.second)
    assert [w.outcome for w in runs.changed] == ["updated", "updated"]
    writes = [(m, p) for m, p in runs.requests if m != "GET"]
    # per write: the conditional transaction the peer refuses, then the same by id / as a create
    assert writes == [("POST", "/")] * 2 * (len(runs.first) + len(runs.changed))
    provenance = all_resources(client, "Provenance")
    targets = Counter(t["reference"] for p in provenance for t in p["target"])
    for w in [*runs.first, *runs.changed]:
        assert targets[w.reference] >= 1, w.reference
    assert sum(targets[w.reference] for w in runs.first) == len(runs.first) + len(runs.changed)


def test_what_the_peer_holds_passes_the_validator(client: FhirClient, runs: Runs,
                                                  fhir_validator: FhirValidator) -> None:  # noqa: F811
    held = [r for rtype in (*CANONICAL, "ResearchStudy", "ResearchSubject", "Provenance")
            for r in all_resources(client, rtype)]
    assert {r["resourceType"] for r in held} >= {*CANONICAL, "ResearchStudy", "ResearchSubject", "Provenance"}
    verdicts = fhir_validator.validate(held)
    failures = {f"{r['resourceType']}/{r['id']}": v.text() for r, v in zip(held, verdicts, strict=True) if v.errors}
    assert not failures, failures
