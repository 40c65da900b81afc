"""The real command line (``python -m bridge`` as a subprocess) against the real peer.

One fresh sekmet-fhir holds the samples (the hospital's records) and receives what the bridge publishes:
``bridge publish-study`` twice (created, then unchanged), ``bridge prescreen <bundle> --publish`` twice
(every patient created, then 0 created / 0 updated), the subjects read back and compared with the builders' output and
with the printed JSON; then ``bridge prescreen <peer base>`` pulls the same patients (each named with
``--patient``, and the admitted ones without it) and must print exactly what the file gave.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bridge.client import FhirClient
from bridge.config import RuleOptions
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import prescreen
from bridge.publish.study import research_study, study_logical_id
from bridge.publish.subject import SUBJECT_ID_SYSTEM, research_subject, verdicts_from_subject
from bridge.publish.validate import REPO_ROOT

from .loading import all_resources, peer_holding, provenance_targets, sample_resources
from .peer import PeerServer

pytestmark = pytest.mark.peer

BUNDLE = REPO_ROOT / "samples" / "prescreen" / "bundle.json"
SITE_MAP = REPO_ROOT / "samples" / "site-map.yaml"
AS_OF = "2026-06-15"
COMMON = ["--site-map", str(SITE_MAP), "--as-of", AS_OF, "--format", "json"]
PUBLISHED = re.compile(r"published ResearchSubjects: (\d+) created, (\d+) updated, (\d+) unchanged")


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def published(self) -> tuple[int, int, int]:
        found = PUBLISHED.search(self.err)
        assert found, self.err
        created, updated, unchanged = (int(g) for g in found.groups())
        return created, updated, unchanged


def bridge(*args: str) -> Done:
    """``python -m bridge ARGS`` in the repository, without any BRIDGE_* setting of the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") or k == "BRIDGE_FHIR_SCHEMA"}
    done = subprocess.run([sys.executable, "-m", "bridge", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    return Done(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def server(sekmet_executable: Path) -> Iterator[PeerServer]:
    """One fresh peer for this module, holding the sample records."""
    with peer_holding(sekmet_executable, BUNDLE) as srv:
        yield srv


@pytest.fixture
def client(server: PeerServer) -> Iterator[FhirClient]:
    with FhirClient(server.base_url) as fhir:
        yield fhir


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    """The results JSON of the samples read from disk (Python API)."""
    run = prescreen(str(BUNDLE), RuleOptions(as_of=date.fromisoformat(AS_OF)), load_code_map(SITE_MAP))
    return run.as_json()


@pytest.fixture(scope="module")
def study_runs(server: PeerServer) -> list[Done]:
    return [bridge("publish-study", server.base_url, "--json") for _ in range(2)]


@pytest.fixture(scope="module")
def prescreen_runs(server: PeerServer, study_runs: list[Done]) -> list[Done]:
    return [bridge("prescreen", str(BUNDLE), *COMMON, "--publish", server.base_url) for _ in range(2)]


def test_publish_study_twice(client: FhirClient, study_runs: list[Done]) -> None:
    assert [r.code for r in study_runs] == [0, 0], study_runs[0].err
    assert [r.json() for r in study_runs] == [
        {"reference": f"ResearchStudy/{study_logical_id()}", "outcome": "created", "version": "1"},
        {"reference": f"ResearchStudy/{study_logical_id()}", "outcome": "unchanged", "version": "1"},
    ]
    held = client.read("ResearchStudy", study_logical_id()).resource
    assert {k: v for k, v in held.items() if k not in ("meta", "text")} == research_study()  # id included


def concerned(expected: dict[str, Any]) -> list[dict[str, Any]]:
    """The results the publication policy publishes: inc-diagnosis not not-met (bridge.publish.policy)."""
    return [r for r in expected["results"] if r["criteria"]["inc-diagnosis"]["result"] != "not-met"]


def test_prescreen_publish_twice(prescreen_runs: list[Done], expected: dict[str, Any]) -> None:
    first, second = prescreen_runs
    n = len(concerned(expected))  # the publication policy: only patients the study concerns get a subject
    assert (first.code, second.code) == (0, 0), first.err
    assert first.json() == expected and second.json() == expected
    assert first.published() == (n, 0, 0)
    assert second.published() == (0, 0, n)


def test_one_research_subject_per_patient_as_printed(client: FhirClient, prescreen_runs: list[Done],
                                                     expected: dict[str, Any]) -> None:
    subjects = all_resources(client, "ResearchSubject")
    per_identifier = Counter(i["value"] for s in subjects for i in s["identifier"] if i["system"] == SUBJECT_ID_SYSTEM)
    assert per_identifier == Counter({f"NCT04762485-{r['patient'].removeprefix('Patient/')}": 1
                                      for r in concerned(expected)})
    by_patient = {s["individual"]["reference"]: s for s in subjects}
    for result in concerned(expected):
        subject = by_patient[result["patient"]]
        as_of, reading, verdicts = verdicts_from_subject(subject)
        assert (as_of.isoformat(), reading, subject["status"]) == (AS_OF, "organ-function", result["status"])
        assert {v.criterion: v.as_json() for v in verdicts} == result["criteria"]
        rebuilt = research_subject(result["patient"].removeprefix("Patient/"), result["status"], verdicts,
                                   as_of, reading)
        assert {k: v for k, v in subject.items() if k not in ("id", "meta", "text")} == rebuilt


def test_each_write_has_one_provenance(client: FhirClient, prescreen_runs: list[Done]) -> None:
    targets = provenance_targets(client)
    subjects = {f"ResearchSubject/{s['id']}" for s in all_resources(client, "ResearchSubject")}
    assert targets == Counter({f"ResearchStudy/{study_logical_id()}": 1, **{ref: 1 for ref in subjects}})


def test_pulling_each_patient_prints_the_file_results(server: PeerServer, expected: dict[str, Any]) -> None:
    ids = [r["patient"].removeprefix("Patient/") for r in expected["results"] + expected["notScreened"]]
    named = [arg for pid in ids for arg in ("--patient", pid)]

    done = bridge("prescreen", server.base_url, *named, *COMMON)

    assert done.code == 0, done.err
    assert done.json() == expected


def test_pulling_the_admitted_patients_prints_their_file_results(server: PeerServer,
                                                                  expected: dict[str, Any]) -> None:
    inpatients = {e["subject"]["reference"] for e in sample_resources(BUNDLE)
                  if e["resourceType"] == "Encounter" and e["class"]["code"] == "IMP" and e["status"] == "in-progress"}

    done = bridge("prescreen", server.base_url, *COMMON)

    assert done.code == 0, done.err
    printed = done.json()
    assert {r["patient"] for r in printed["results"] + printed["notScreened"]} == inpatients
    by_patient = {r["patient"]: r for r in printed["results"]}
    assert [by_patient[r["patient"]] for r in expected["results"] if r["patient"] in inpatients] == [
        r for r in expected["results"] if r["patient"] in inpatients]
    assert printed["notScreened"] == [n for n in expected["notScreened"] if n["patient"] in inpatients]
    assert {k: v for k, v in printed.items() if k not in ("results", "notScreened")} == {
        k: v for k, v in expected.items() if k not in ("results", "notScreened")}
