"""``--all-patients`` over a directory (``bridge.population.partition``) against the per-patient path.

The partitioned run must give the per-patient path's JSON document — every patient's verdicts, in the same
order, and the same ``notScreened`` — whatever the number of partitions and processes: on the samples, on
generated populations (lab-dense ones too), and on adversarial directories built so that a resource's versions
lie in different partitions, a patient is known only from lines that cannot change a verdict, or a later
version that cannot change a verdict supersedes one that can. Its skip reports are the per-patient path's for
the lines it validates (a subset, in the same order; every line that is not JSON), and nothing is left on disk.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Generator, Sequence
from datetime import date
from functools import cache, partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.config import RuleOptions
from bridge.ingest.readers import read_source
from bridge.model import Failed, PatientFacts
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import PrescreenRun, evaluate_patient, prescreen, prescreen_items, write_prescreen_json
from bridge.population import all_patients_map, partition
from bridge.population.partition import partition_count, partition_of
from samplegen.population import write_population
from tests.unit.test_bulk import CAND, LOINC, OTHER, adversarial_dir, obs, q

ROOT = Path(__file__).resolve().parents[2]
SITE_MAP = ROOT / "samples" / "site-map.yaml"
SAMPLES = ROOT / "samples" / "prescreen" / "ndjson"
OPTIONS = RuleOptions(as_of=date(2026, 6, 15))


@cache
def cmap() -> Any:
    return load_code_map(SITE_MAP)


def reference(directory: Path) -> PrescreenRun:
    """The per-patient path: every line read, validated and assembled in one process."""
    return prescreen_items(read_source(str(directory)), OPTIONS, cmap())


def partitioned(directory: Path, processes: int = 2, chunk_bytes: int = 1 << 15,
                partitions: int | None = None) -> PrescreenRun:
    evaluate = partial(evaluate_patient, options=OPTIONS, site_uln=cmap().uln)
    outcomes, report = all_patients_map(directory, cmap(), evaluate, processes=processes, chunk_bytes=chunk_bytes,
                                        partitions=partitions)
    run = PrescreenRun(OPTIONS, [], report)
    run.screenings = list(run.take(outcomes))
    return run


def assert_same_document(got: PrescreenRun, want: PrescreenRun) -> None:
    assert want.screenings or want.not_screened, "an empty reference would make the comparison vacuous"
    assert got.as_json() == want.as_json()
    assert got.failed == want.failed
    assert got.report.read == want.report.read
    assert got.report.ignored_types == want.report.ignored_types


def assert_skips_are_a_subset_in_order(got: PrescreenRun, want: PrescreenRun) -> None:
    skipped, expected = got.report.skipped, want.report.skipped
    positions = [expected.index(s) for s in skipped]
    assert positions == sorted(positions)
    def not_json(items: list[Any]) -> list[Any]:
        return [s for s in items if s.reason.startswith("not JSON") or s.reason == "line has no resourceType"]
    assert not_json(skipped) == not_json(expected)


def write(directory: Path, name: str, resources: Sequence[dict[str, Any] | bytes]) -> None:
    """Appends lines to a file (after a newline if its last line has none)."""
    path = directory / name
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        resources = [b"", *resources]
    with path.open("ab") as handle:
        handle.write(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in resources))


# ------------------------------------------------------------------------------------------- the samples
def test_samples_give_the_per_patient_document() -> None:
    want = reference(SAMPLES)
    for processes, partitions in ((1, None), (2, 3), (2, 1)):
        got = partitioned(SAMPLES, processes, partitions=partitions)
        assert_same_document(got, want)
        assert got.report.skipped == want.report.skipped and got.report.warnings == want.report.warnings


def test_the_pipeline_and_the_json_writer_give_the_per_patient_bytes() -> None:
    want = reference(SAMPLES)
    expected, got = io.StringIO(), io.StringIO()
    write_prescreen_json(expected, want.screenings, OPTIONS, want.not_screened)
    run = prescreen(str(SAMPLES), OPTIONS, cmap(), all_patients=True, lazy=True)
    assert run.stream is not None and not run.population
    write_prescreen_json(got, run.stream, OPTIONS, run.not_screened)
    assert got.getvalue() == expected.getvalue()


# ------------------------------------------------------------------------------------------- generated
@pytest.fixture(scope="module", params=[None, 90], ids=["default", "lab-dense"])
def population(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PrescreenRun]:
    directory = tmp_path_factory.mktemp("population")
    write_population(120, directory, seed=16, leukemia_rate=0.3, results_per_candidate=request.param)
    write(directory, "Observation.ndjson", [b'{"resourceType":"Observation","id":"cut","subj', b"<html>"])
    write_population(15, directory / "more", seed=17, leukemia_rate=0.5)
    for path in sorted((directory / "more").iterdir()):  # after the bad lines, in the same files
        write(directory, path.name, [path.read_bytes().rstrip(b"\n")])
        path.unlink()
    (directory / "more").rmdir()
    return directory, reference(directory)


@pytest.mark.parametrize(("processes", "chunk_bytes", "partitions"),
                         [(1, 1 << 16, None), (2, 1 << 15, 7), (2, 8 << 20, 1), (2, 1 << 14, 64)])
def test_generated_populations_give_the_per_patient_document(population: tuple[Path, PrescreenRun], processes: int,
                                                             chunk_bytes: int, partitions: int | None) -> None:
    directory, want = population
    got = partitioned(directory, processes, chunk_bytes, partitions)
    assert_same_document(got, want)
    assert_skips_are_a_subset_in_order(got, want)
    assert len(got.screenings) > 100


def test_a_patients_bug_fails_that_patient_only(population: tuple[Path, PrescreenRun]) -> None:
    directory, want = population
    victim = want.screenings[len(want.screenings) // 2].patient
    outcomes, _ = all_patients_map(directory, cmap(), partial(_fails_for, victim), processes=2, partitions=5)
    got = list(outcomes)
    failed = [o for o in got if isinstance(o, Failed)]
    assert [f.patient for f in failed] == [victim]
    assert "secret" not in failed[0].error  # the exception's type and place, never its message
    assert [o.patient for o in got] == sorted(o.patient for o in got)


def _fails_for(victim: str, pf: PatientFacts) -> Any:
    if pf.ref == victim:
        raise ValueError("secret value")
    return evaluate_patient(pf, OPTIONS, cmap().uln)


# ------------------------------------------------------------------------------------------- adversarial
def _apart(count: int, *avoid: str) -> tuple[str, str]:
    """Two patient ids in different partitions (of ``count``; any two for one), outside those of ``avoid`` when
    there are partitions enough."""
    taken = {partition_of(a, count) for a in avoid} if count > len(avoid) + 1 else set()
    ids = [f"pt-{i}" for i in range(200)]
    first = next(i for i in ids if partition_of(i, count) not in taken)
    if count == 1:
        return first, "pt-other"
    second = next(i for i in ids if partition_of(i, count) not in taken | {partition_of(first, count)})
    return first, second


def spanning_dir(tmp_path: Path, count: int) -> Path:
    """Versions of one resource in different partitions, orphans, supersession by lines that matter to nobody."""
    d = adversarial_dir(tmp_path)
    a, b = _apart(count, CAND, OTHER)
    alt = [{"system": LOINC, "code": "1742-6"}]
    patients: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": p, "gender": "male", "birthDate": "1970-05-05"} for p in (a, b)]
    patients += [{"resourceType": "Patient", "id": "bad-born", "birthDate": "1990-13-45"},  # fails the model
                 {"resourceType": "Patient", "id": a, "gender": "female", "birthDate": "1971-05-05",
                  "meta": {"versionId": "1"}}]  # shares an id with a's other Patient: a conflict
    write(d, "Patient.ndjson", patients)
    write(d, "Observation.ndjson", [
        obs("moved", alt, q(400, "U/L"), subject=f"Patient/{a}", meta={"versionId": "1"}),
        obs("moved", alt, q(20, "U/L"), subject=f"Patient/{b}", meta={"versionId": "2"}),  # another partition
        obs("moved-back", alt, q(20, "U/L"), subject=f"Patient/{b}", meta={"versionId": "1"}),
        obs("moved-back", alt, q(500, "U/L"), subject=f"Patient/{a}", meta={"versionId": "2"}),
        obs("dropped-subject", alt, q(900, "U/L"), subject=f"Patient/{CAND}", meta={"versionId": "1"}),
        {**obs("dropped-subject", alt, q(900, "U/L"), meta={"versionId": "2"}), "subject": {"display": "x"}},
        obs("recoded", alt, q(700, "U/L"), subject=f"Patient/{b}", meta={"versionId": "1"}),
        obs("recoded", [{"system": LOINC, "code": "2951-2"}], q(140, "mmol/L"), subject=f"Patient/{b}",
            meta={"versionId": "2"}),  # unmapped now: a line that matters to nobody supersedes one that does
        {**obs("no-id", alt, q(1, "U/L"), subject=f"Patient/{a}"), "id": 7},
    ])
    encounter = {"resourceType": "Encounter", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    write(d, "Encounter.ndjson", [
        {**encounter, "id": "only-enc", "subject": {"reference": "Patient/enc-only"}},
        {**encounter, "id": "bad-enc", "status": 12, "subject": {"reference": "Patient/invalid-only"}},
        {**encounter, "id": "born-enc", "subject": {"reference": "Patient/bad-born"}},
        {**encounter, "id": "handed", "subject": {"reference": "Patient/handed-from"}, "meta": {"versionId": "1"}},
        {**encounter, "id": "handed", "subject": {"reference": f"Patient/{b}"}, "meta": {"versionId": "2"}},
    ])
    write(d, "Procedure.ndjson", [{"resourceType": "Procedure", "id": "pr", "status": "completed",
                                   "subject": {"reference": f"Patient/{a}"}}])
    return d


@pytest.mark.parametrize(("processes", "partitions"), [(1, 1), (2, 2), (2, 5), (1, 16)])
def test_identities_spanning_partitions_orphans_and_supersession(tmp_path: Path, processes: int,
                                                                  partitions: int) -> None:
    d = spanning_dir(tmp_path, partitions)
    want = reference(d)
    got = partitioned(d, processes, 300, partitions)
    assert_same_document(got, want)
    assert_skips_are_a_subset_in_order(got, want)
    assert got.report.warnings == want.report.warnings
    listed = {n.patient: n.reason for n in got.not_screened}
    assert listed["Patient/enc-only"] == listed["Patient/bad-born"] == "no-patient-resource"
    assert "Patient/invalid-only" not in listed and "Patient/handed-from" not in listed
    assert any("several Patient resources" in w for w in got.report.warnings)
    assert any("versions name different patients" in w for w in got.report.warnings)


def test_nothing_is_left_on_disk_or_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = spanning_dir(tmp_path, 3)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = len(os.listdir("/proc/self/fd"))
    outcomes, _ = all_patients_map(d, cmap(), None, processes=2, partitions=3)
    assert isinstance(outcomes, Generator)
    first = next(outcomes)
    assert isinstance(first, PatientFacts)
    assert not list(scratch.iterdir())  # unlinked as soon as opened: nothing even while it runs
    outcomes.close()  # abandoned half-way
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(list(all_patients_map(d, cmap(), None, processes=1, partitions=3)[0])) > 3
    assert len(os.listdir("/proc/self/fd")) == before and not list(scratch.iterdir())


def test_without_posix_io_it_is_the_per_patient_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where fork, pread and fcntl are missing (Windows) the per-patient path runs instead: the same document."""
    monkeypatch.setattr(partition, "POSIX", False)
    want = reference(SAMPLES)
    got = partitioned(SAMPLES)
    assert_same_document(got, want)
    assert got.report.skipped == want.report.skipped and got.report.warnings == want.report.warnings


def test_partitions_follow_the_size_of_the_export() -> None:
    small, large = partition_count(10 << 20, 2), partition_count(8 << 30, 2)
    assert small == 4  # two per worker at least
    assert small < large <= 256
    assert partition_count(8 << 30, 2) == partition_count(80 << 30, 2)  # capped: beyond, a partition grows
