"""Publishing to the real peer through the Python API: idempotent, one ResearchSubject per patient, Provenance.

On a fresh sekmet-fhir: the study and the sample subjects (45) are published twice (the second run writes
nothing), read back and compared field by field with what the builders produce; every patient has exactly
one ResearchSubject (the peer answers a ResearchSubject search with all of them, so they can be counted per
identifier); every write has its Provenance. Then two records change (p07 gains a refractory finding, p14 a
newer ECOG) while p07 has meanwhile moved on to ``screening``: only those two subjects are rewritten, and
p07 keeps its lifecycle status. Finally a later as-of date rewrites exactly the subjects whose content
changed. The peer rejects a conditional update on ResearchSubject (``not-supported``), so these runs take the
publisher's fallback path (update by id with If-Match, or create); ``tests/unit/test_publisher.py`` covers
the conditional path. ``test_cli_peer.py`` does the same through ``python -m bridge``.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge import __version__
from bridge.client import FhirClient
from bridge.config import RuleOptions
from bridge.evaluate.eligibility import Screening
from bridge.ingest.readers import Entry
from bridge.normalize.mappings import CodeMap, load_code_map
from bridge.pipeline import PrescreenRun, prescreen, prescreen_items
from bridge.publish.policy import concerns_the_study
from bridge.publish.publisher import Written, publish_screenings, publish_study
from bridge.publish.study import research_study, study_logical_id
from bridge.publish.subject import (
    SUBJECT_ID_SYSTEM,
    research_subject,
    subject_fingerprint,
    verdicts_from_subject,
)
from bridge.publish.validate import REPO_ROOT
from bridge.trial import load_trial

from .loading import all_resources, provenance_targets, sample_resources
from .peer import PeerServer

pytestmark = pytest.mark.peer

BUNDLE = REPO_ROOT / "samples" / "prescreen" / "bundle.json"
SITE_MAP = REPO_ROOT / "samples" / "site-map.yaml"
OPTIONS = RuleOptions(as_of=date(2026, 6, 15))
# the publication policy (bridge.publish.policy): only patients the study concerns (inc-diagnosis not not-met)
N = sum(1 for s in prescreen(str(BUNDLE), OPTIONS, load_code_map(SITE_MAP)).screenings if concerns_the_study(s))
LATER = RuleOptions(as_of=date(2026, 6, 16))
RECORDED = datetime(2026, 6, 15, 9, 30, tzinfo=timezone(timedelta(hours=8)))
STUDY_REF = f"ResearchStudy/{study_logical_id()}"
Json = dict[str, Any]


def clock() -> datetime:
    return RECORDED


@dataclass
class Runs:
    study: list[Written]
    first: list[Written]
    second: list[Written]


@pytest.fixture(scope="module")
def cmap() -> CodeMap:
    return load_code_map(SITE_MAP)


@pytest.fixture(scope="module")
def client(sekmet_executable: Path) -> Iterator[FhirClient]:
    """A client of a peer with an empty database, for this module."""
    with PeerServer(sekmet_executable) as srv, FhirClient(srv.base_url) as fhir:
        yield fhir


@pytest.fixture(scope="module")
def from_disk(cmap: CodeMap) -> PrescreenRun:
    return prescreen(str(BUNDLE), OPTIONS, cmap)


@pytest.fixture(scope="module")
def runs(client: FhirClient, from_disk: PrescreenRun) -> Runs:
    """Study twice, then every sample subject twice."""
    study = [publish_study(client, clock=clock) for _ in range(2)]
    first = publish_screenings(client, from_disk.screenings, OPTIONS, clock)
    second = publish_screenings(client, from_disk.screenings, OPTIONS, clock)
    return Runs(study, first, second)


def identifier(subject: Json) -> str:
    (ident,) = [i for i in subject["identifier"] if i["system"] == SUBJECT_ID_SYSTEM]
    return str(ident["value"])


def on_server(client: FhirClient) -> dict[str, Json]:
    """The server's ResearchSubjects by patient id (asserting there is one per identifier)."""
    subjects = all_resources(client, "ResearchSubject")
    counts = Counter(identifier(s) for s in subjects)
    assert max(counts.values()) == 1, f"duplicates: {[k for k, n in counts.items() if n > 1]}"
    return {s["individual"]["reference"].removeprefix("Patient/"): s for s in subjects}


def content(resource: Json) -> Json:
    return {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}


def built(s: Screening, options: RuleOptions, status: str | None = None) -> Json:
    return research_subject(s.patient.removeprefix("Patient/"), status or s.status, list(s.verdicts),
                            options.as_of, options.organ_function_reading)


def outcomes(written: list[Written]) -> Counter[str]:
    return Counter(w.outcome for w in written)


# ---------------------------------------------------------------------------------------------- twice


def test_the_study_is_created_once_then_left_alone(client: FhirClient, runs: Runs) -> None:
    assert [(w.reference, w.outcome, w.version) for w in runs.study] == [
        (STUDY_REF, "created", "1"), (STUDY_REF, "unchanged", "1")]
    held = client.read("ResearchStudy", study_logical_id()).resource
    assert content(held) == content(research_study())
    assert len(all_resources(client, "ResearchStudy")) == 1


def test_the_subjects_are_created_once_then_left_alone(runs: Runs) -> None:
    assert outcomes(runs.first) == {"created": N}
    assert outcomes(runs.second) == {"unchanged": N}
    assert [w.reference for w in runs.second] == [w.reference for w in runs.first]
    assert {w.version for w in runs.second} == {"1"}


def test_one_research_subject_per_patient(client: FhirClient, runs: Runs, from_disk: PrescreenRun) -> None:
    held = on_server(client)
    assert sorted(held) == sorted(s.patient.removeprefix("Patient/") for s in from_disk.screenings
                                  if concerns_the_study(s))
    assert len(all_resources(client, "ResearchSubject")) == N


def test_every_subject_reads_back_as_the_builder_made_it(client: FhirClient, runs: Runs,
                                                         from_disk: PrescreenRun) -> None:
    held = on_server(client)
    for s in filter(concerns_the_study, from_disk.screenings):
        subject = held[s.patient.removeprefix("Patient/")]
        assert content(subject) == built(s, OPTIONS), s.patient
        assert verdicts_from_subject(subject) == (OPTIONS.as_of, "organ-function", list(s.verdicts))
        assert subject["status"] == s.status
        assert subject["study"] == {"reference": STUDY_REF}


def test_every_write_has_its_provenance(client: FhirClient, runs: Runs) -> None:
    targets = provenance_targets(client)
    assert targets == Counter({w.reference: 1 for w in [runs.study[0], *runs.first]})
    for prov in all_resources(client, "Provenance"):
        assert prov["policy"] == [f"https://cd7-bridge.example.org/fhir/ruleset/{load_trial().ruleset_version}"]
        assert prov["agent"][0]["who"]["display"] == f"cd7-bridge {__version__}"
        target = prov["target"][0]["reference"]
        # a Provenance sent in one transaction with its subject (issue #14 item 5) cannot name the version the
        # server has not assigned yet: it targets the subject itself; one written after its target names version 1
        assert target.endswith("/_history/1") or target.startswith("ResearchSubject/") and "/_history/" not in target
        assert prov["recorded"].startswith("2026-06-15T09:30:00")


# ---------------------------------------------------------------------------------------------- changes


def changed_records() -> list[Entry]:
    """The samples plus a refractory finding for p07 and an ECOG 1 for p14 newer than its ECOG 3."""
    resources = sample_resources(BUNDLE)
    by_id = {r["id"]: r for r in resources}
    refractory = {**copy.deepcopy(by_id["p06-refractory"]), "id": "p07-refractory",
                  "subject": {"reference": "Patient/p07"}, "encounter": {"reference": "Encounter/p07-enc"}}
    ecog = {**copy.deepcopy(by_id["p01-ecog"]), "id": "p14-ecog-2", "subject": {"reference": "Patient/p14"},
            "encounter": {"reference": "Encounter/p14-enc"}, "effectiveDateTime": "2026-06-14T08:00:00+08:00",
            "valueInteger": 1}
    return [Entry(r, f"entry {i}") for i, r in enumerate([*resources, refractory, ecog])]


@pytest.fixture(scope="module")
def changed(client: FhirClient, runs: Runs, cmap: CodeMap) -> tuple[list[Written], Screening, Screening]:
    """p07 moves on to 'screening' (written by someone else), then the changed records are published."""
    p07 = on_server(client)["p07"]
    client.update_with_retry("ResearchSubject", p07["id"], lambda r: {**r, "status": "screening"})
    run = prescreen_items(changed_records(), OPTIONS, cmap)
    by_patient = {s.patient: s for s in run.screenings}
    return (publish_screenings(client, run.screenings, OPTIONS, clock), by_patient["Patient/p07"],
            by_patient["Patient/p14"])


def test_changed_records_rewrite_only_their_subjects(client: FhirClient, runs: Runs, changed: Any) -> None:
    written, _, _ = changed
    held = on_server(client)
    updated = {w.reference for w in written if w.outcome == "updated"}
    assert updated == {f"ResearchSubject/{held[p]['id']}" for p in ("p07", "p14")}
    assert outcomes(written) == {"unchanged": N - 2, "updated": 2}
    versions = {p: s["meta"]["versionId"] for p, s in held.items()}
    assert versions.pop("p07") == "3"  # created, moved to screening, verdicts refreshed
    assert versions.pop("p14") == "2"
    assert set(versions.values()) == {"1"}


def test_a_subject_past_pre_screening_keeps_its_status(client: FhirClient, changed: Any) -> None:
    _, p07, p14 = changed
    assert p07.status == "candidate" and p07.verdict("inc-diagnosis").result == "met"
    held = on_server(client)
    assert held["p07"]["status"] == "screening"
    assert content(held["p07"]) == built(p07, OPTIONS, status="screening")
    assert held["p14"]["status"] == p14.status == "candidate"
    assert content(held["p14"]) == built(p14, OPTIONS)


def test_the_rewrites_have_their_provenance(client: FhirClient, changed: Any) -> None:
    held = on_server(client)
    targets = provenance_targets(client)
    assert targets[f"ResearchSubject/{held['p14']['id']}"] == 2
    assert targets[f"ResearchSubject/{held['p07']['id']}"] == 2  # the lifecycle move was not the bridge's
    assert sum(targets.values()) == 1 + N + 2


# ---------------------------------------------------------------------------------------------- later date


def test_a_later_as_of_rewrites_exactly_the_subjects_whose_content_changed(client: FhirClient, changed: Any,
                                                                           cmap: CodeMap) -> None:
    before = on_server(client)
    later = prescreen(str(BUNDLE), LATER, cmap)
    expected = {p for p, s in ((s.patient.removeprefix("Patient/"), s) for s in later.screenings)
                if p in before
                and subject_fingerprint(before[p]) != subject_fingerprint(built(s, LATER, kept(before[p], s)))}
    provenance_before = sum(provenance_targets(client).values())

    written = publish_screenings(client, later.screenings, LATER, clock)
    again = publish_screenings(client, later.screenings, LATER, clock)

    held = on_server(client)
    updated = {w.reference for w in written if w.outcome == "updated"}
    assert updated == {f"ResearchSubject/{before[p]['id']}" for p in expected}
    assert {"p07", "p11", "p14"} <= expected  # p11 turns 12 on 2026-06-16; p07, p14 lose their new records
    assert held["p11"]["status"] == "candidate"
    assert held["p07"]["status"] == "screening"
    assert outcomes(again) == {"unchanged": N}
    assert sum(provenance_targets(client).values()) == provenance_before + len(expected)


def kept(current: Json, s: Screening) -> str:
    pre_screen = {"candidate", "potential-candidate", "ineligible", "eligible", "not-registered"}
    return s.status if current["status"] in pre_screen else str(current["status"])
