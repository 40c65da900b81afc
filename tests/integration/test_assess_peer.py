"""``bridge assess`` against the real peer: pull equals disk; publishing outcomes twice writes once.

One fresh sekmet-fhir holds the treated cohort. ``bridge assess <peer>`` pulls the patients with a CAR-T
administration and must print exactly what the file gives. Then the subjects are pre-screened and published,
and ``bridge assess <bundle> --publish <peer>`` runs twice: response Observations and AdverseEvents are created
once (one per identifier), the second run changes nothing, and every subject has moved to its lifecycle status.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.client import FhirClient
from bridge.publish.outcomes import OUTCOME_ID_SYSTEM
from bridge.publish.validate import REPO_ROOT, validate_output

from .loading import all_resources, peer_holding
from .peer import PeerServer
from .test_cli_peer import Done, bridge

pytestmark = pytest.mark.peer

BUNDLE = REPO_ROOT / "samples" / "treated" / "bundle.json"
EXPECTED = REPO_ROOT / "samples" / "treated" / "expected.json"
COMMON = ["--site-map", str(REPO_ROOT / "samples" / "site-map.yaml"), "--as-of", "2026-12-31"]


def _published(done: Done) -> tuple[int, int, int]:
    line = next(x for x in done.err.splitlines() if x.startswith("published assessment resources:"))
    return tuple(int(w) for w in line.split(":")[1].replace(",", " ").split() if w.isdigit())  # type: ignore[return-value]


@pytest.fixture(scope="module")
def server(sekmet_executable: Path) -> Iterator[PeerServer]:
    with peer_holding(sekmet_executable, BUNDLE) as srv:
        yield srv


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return json.loads(EXPECTED.read_text())


def test_pull_equals_disk(server: PeerServer, expected: dict[str, Any]) -> None:
    done = bridge("assess", server.base_url, *COMMON, "--format", "json")
    assert done.code == 0, done.err
    assert done.json() == expected


@pytest.fixture(scope="module")
def publish_runs(server: PeerServer, expected: dict[str, Any]) -> list[Done]:
    ids = [p["patient"].removeprefix("Patient/") for p in expected["patients"]]
    patients = [a for pid in ids for a in ("--patient", pid)]
    screened = bridge("prescreen", server.base_url, *patients, *COMMON, "--publish", server.base_url)
    assert screened.code == 0, screened.err
    # t08 died on 2026-06-20: on 2026-12-31 it is not screened (RULES.md §2) and gets no ResearchSubject, so it
    # is pre-screened as it was while alive, before its infusion; its assessment then moves it to off-study
    alive = [a if a != "2026-12-31" else "2026-04-01" for a in COMMON]
    before = bridge("prescreen", server.base_url, "--patient", "t08", *alive, "--publish", server.base_url)
    assert before.code == 0, before.err
    return [bridge("assess", str(BUNDLE), *COMMON, "--format", "json", "--publish", server.base_url)
            for _ in range(2)]


def test_publish_twice_writes_once(publish_runs: list[Done], expected: dict[str, Any]) -> None:
    first, second = publish_runs
    assert (first.code, second.code) == (0, 0), first.err
    n_outcomes = sum(len(p["assessments"]) + 1 + len(p["adverseEvents"]) for p in expected["patients"])
    n_subjects = len(expected["patients"])
    assert _published(first) == (n_outcomes, n_subjects, 0)
    assert _published(second) == (0, 0, n_outcomes + n_subjects)


def test_one_resource_per_outcome_and_valid(server: PeerServer, publish_runs: list[Done],
                                            expected: dict[str, Any]) -> None:
    with FhirClient(server.base_url) as fhir:
        events = all_resources(fhir, "AdverseEvent")
        observations = [o for o in all_resources(fhir, "Observation")
                        if any(i.get("system") == OUTCOME_ID_SYSTEM for i in o.get("identifier") or [])]
        subjects = all_resources(fhir, "ResearchSubject")
    ae_ids = Counter(e["identifier"]["value"] for e in events)
    assert len(ae_ids) == sum(len(p["adverseEvents"]) for p in expected["patients"]) and set(ae_ids.values()) == {1}
    obs_ids = Counter(i["value"] for o in observations for i in o["identifier"])
    assert set(obs_ids.values()) == {1}
    for resource in events + observations:
        validate_output({k: v for k, v in resource.items() if k != "meta"})
    status = {s["individual"]["reference"]: s["status"] for s in subjects}
    deceased = {"Patient/t08"}
    for p in expected["patients"]:
        assert status[p["patient"]] == ("off-study" if p["patient"] in deceased else "follow-up"), p["patient"]
