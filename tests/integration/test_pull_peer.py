"""Pull mode against the real peer: the samples loaded into a FHIR server give exactly the file's results.

The sample Bundle is loaded into a fresh sekmet-fhir (``loading.load_bundle``: ``PUT Type/id`` transactions),
then every patient is pulled through search (``bridge.ingest.pull``) and pre-screened: the results JSON must
be identical — statuses, every verdict, reason and evidence — to the same Bundle read from disk. Without
patient ids the admitted patients are those of the samples with an inpatient Encounter in progress.
Two records the samples lack show why the pull is shaped as it is: an HBsAg positive older than the
look-back (fetched at any age, as a file would show it) and a local code recorded in lower case (the peer
matches tokens case-sensitively). The Python API is used here; ``test_cli_peer.py`` runs the same through
``python -m bridge``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bridge.client import FhirClient
from bridge.config import RuleOptions
from bridge.ingest.pull import admitted_patients, pull
from bridge.ingest.readers import Entry
from bridge.normalize.mappings import CodeMap, load_code_map
from bridge.pipeline import PrescreenRun, prescreen, prescreen_items
from bridge.publish.validate import REPO_ROOT

from .loading import all_resources, peer_holding, sample_resources
from .peer import PeerServer

pytestmark = pytest.mark.peer

BUNDLE = REPO_ROOT / "samples" / "prescreen" / "bundle.json"
SITE_MAP = REPO_ROOT / "samples" / "site-map.yaml"
OPTIONS = RuleOptions(as_of=date(2026, 6, 15))


@pytest.fixture(scope="module")
def cmap() -> CodeMap:
    return load_code_map(SITE_MAP)


@pytest.fixture(scope="module")
def server(sekmet_executable: Path) -> Iterator[PeerServer]:
    """One peer with an empty database for this module, loaded with the samples."""
    with peer_holding(sekmet_executable, BUNDLE) as srv:
        yield srv


@pytest.fixture
def client(server: PeerServer) -> Iterator[FhirClient]:
    with FhirClient(server.base_url) as fhir:
        yield fhir


@pytest.fixture(scope="module")
def from_disk(cmap: CodeMap) -> PrescreenRun:
    return prescreen(str(BUNDLE), OPTIONS, cmap)


def patient_ids(run: PrescreenRun) -> list[str]:
    """Every patient of the run: the screened ones and those not screened (RULES.md §2)."""
    return [p.removeprefix("Patient/") for p in [s.patient for s in run.screenings] +
            [n.patient for n in run.not_screened]]


def inpatients_in_progress() -> list[str]:
    """The samples' own answer: patients with an inpatient (IMP/ACUTE/NONAC) Encounter in progress/arrived."""
    return sorted({enc["subject"]["reference"].removeprefix("Patient/") for enc in sample_resources(BUNDLE)
                   if enc["resourceType"] == "Encounter" and enc["class"]["code"] in ("IMP", "ACUTE", "NONAC")
                   and enc["status"] in ("in-progress", "arrived")})


def test_the_server_holds_every_sample_resource_once(client: FhirClient) -> None:
    resources = sample_resources(BUNDLE)
    for rtype in ("Patient", "Encounter", "Condition", "Observation"):
        ids = {r["id"] for r in resources if r["resourceType"] == rtype}
        assert {r["id"] for r in all_resources(client, rtype)} == ids, rtype


def test_an_amended_result_is_held_as_its_last_version(client: FhirClient) -> None:
    copies = [r for r in sample_resources(BUNDLE) if r["id"] == "p04-cd7"]
    assert [c["status"] for c in copies] == ["preliminary", "amended"]
    held = client.read("Observation", "p04-cd7")
    assert held.resource["status"] == "amended" and held.version_id == "2"
    assert client.vread("Observation", "p04-cd7", "1").resource["status"] == "preliminary"


def test_pulling_every_patient_gives_the_file_results(client: FhirClient, cmap: CodeMap,
                                                      from_disk: PrescreenRun) -> None:
    pulled = prescreen_items(pull(client, cmap, OPTIONS.as_of, patient_ids(from_disk)), OPTIONS, cmap)

    assert pulled.as_json() == from_disk.as_json()
    assert len(pulled.screenings) + len(pulled.not_screened) == len(
        {r["subject"]["reference"] for r in sample_resources(BUNDLE) if "subject" in r})
    # the same unusable values, nothing else; the server holds one version per identity, so the file's identity
    # conflicts (two Patients p55) have no counterpart there
    conflicts = {w for w in from_disk.report.lines() if "share this id" in w or "name different patients" in w}
    assert pulled.report.lines() == [w for w in from_disk.report.lines() if w not in conflicts]


def test_the_admitted_patients_are_the_inpatients_in_progress(client: FhirClient) -> None:
    admitted = admitted_patients(client, OPTIONS.as_of)
    assert admitted == inpatients_in_progress()
    assert {"p03", "p12", "p36"}.isdisjoint(admitted)  # the outpatients


def test_pulling_the_admitted_patients_gives_their_file_results(client: FhirClient, cmap: CodeMap,
                                                                from_disk: PrescreenRun) -> None:
    pulled = prescreen_items(pull(client, cmap, OPTIONS.as_of), OPTIONS, cmap).as_json()

    wanted = {f"Patient/{p}" for p in inpatients_in_progress()}
    expected = from_disk.as_json()
    expected["results"] = [r for r in expected["results"] if r["patient"] in wanted]  # type: ignore[attr-defined]
    listed = [r["patient"] for r in pulled["results"]] + [n["patient"] for n in pulled["notScreened"]]  # type: ignore[attr-defined]
    assert sorted(listed) == sorted(wanted)
    by_patient = {r["patient"]: r for r in pulled["results"]}  # type: ignore[attr-defined]
    assert [by_patient[r["patient"]] for r in expected["results"]] == expected["results"]  # type: ignore[attr-defined]


def _own_entries(pid: str) -> list[Entry]:
    return [Entry(r, f"sample {r['id']}") for r in sample_resources(BUNDLE)
            if r.get("subject", {}).get("reference") == f"Patient/{pid}" or r["id"] == pid]


@contextmanager
def stored(client: FhirClient, resource: dict[str, Any]) -> Iterator[None]:
    """``resource`` on the server for the duration (the module's peer stays as loaded)."""
    client.update(resource)
    try:
        yield
    finally:
        client.delete(resource["resourceType"], resource["id"])


def _both(client: FhirClient, cmap: CodeMap, pid: str, resource: dict[str, Any]) -> tuple[Any, Any]:
    """(file results, pull results) of one patient with one more resource."""
    file_run = prescreen_items([*_own_entries(pid), Entry(resource, "extra")], OPTIONS, cmap)
    pull_run = prescreen_items(pull(client, cmap, OPTIONS.as_of, [pid]), OPTIONS, cmap)
    return file_run.as_json()["results"], pull_run.as_json()["results"]


def _observation(rid: str, pid: str, coding: dict[str, str], when: str, **value: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", "code": {"coding": [coding]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when, **value}


def test_an_hbsag_positive_older_than_the_look_back_is_pulled_like_a_file_shows_it(client: FhirClient,
                                                                                     cmap: CodeMap) -> None:
    positive = {"coding": [{"system": "http://snomed.info/sct", "code": "10828004", "display": "Positive"}]}
    old = _observation("p41-old-hbsag", "p41", {"system": "http://loinc.org", "code": "5196-1"},
                       "2023-01-10T08:00:00+08:00", valueCodeableConcept=positive)

    with stored(client, old):
        from_file, pulled = _both(client, cmap, "p41", old)

    assert pulled == from_file
    assert pulled[0]["criteria"]["exc-hepatitis"]["result"] == "met"  # p41 has no other hepatitis test
    assert pulled[0]["status"] == "ineligible"


def test_a_local_code_recorded_in_lower_case_is_pulled_like_a_file_reads_it(client: FhirClient,
                                                                             cmap: CodeMap) -> None:
    cd7 = _observation("p41-cd7-lc", "p41", {"system": "http://hospital.example.org/lab", "code": "fc-cd7"},
                       "2026-06-12T08:00:00+08:00",
                       valueQuantity={"value": 64, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"})
    with stored(client, cd7):
        assert not with_code(client, "p41", "http://hospital.example.org/lab|FC-CD7")  # the peer: case-sensitive
        assert with_code(client, "p41", "http://hospital.example.org/lab|fc-cd7")
        from_file, pulled = _both(client, cmap, "p41", cd7)

    assert pulled == from_file
    assert pulled[0]["criteria"]["inc-cd7-expression"]["result"] == "met"


def with_code(client: FhirClient, pid: str, token: str) -> list[dict[str, Any]]:
    return list(client.search("Observation", {"patient": pid, "code": token}, matches_only=True))
