"""The population fast path (``bridge.population``) against the per-patient path.

For every patient it reports, the fast path must give the verdicts of ``prescreen(..., all_patients=True)``;
it must report exactly the patients with an acute-leukaemia Condition; its bytes pre-filter must never drop a
line that matters (adversarial spellings, escapes, odd references, mixed files, later versions); and the lines
it skips must be reported with the same place and reason.
"""

from __future__ import annotations

import json
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import RuleOptions
from bridge.ingest.readers import read_source
from bridge.normalize.facts import normalize
from bridge.normalize.mappings import load_code_map
from bridge.normalize.patients import assemble
from bridge.pipeline import PrescreenRun, evaluate_patient, prescreen, prescreen_items, prescreen_json
from bridge.population import Concepts, default_trial, population_patients, spill
from bridge.population.assembler import PositionedAssembler
from bridge.population.chunks import (
    canonical_lines,
    count_newlines,
    file_type,
    is_canonical_line,
    line_type,
    newline_positions,
    plan_chunks,
    read_chunk,
    read_chunk_reusing,
    release_buffer,
)
from bridge.population.prefilter import PatientFilter, distinguishing_prefixes
from bridge.population.relevance import patient_of, relevant
from bridge.population.spill import digest
from bridge.trial import load_trial
from samplegen.population import write_population

ROOT = Path(__file__).resolve().parents[2]
SITE_MAP = ROOT / "samples" / "site-map.yaml"
SAMPLES = ROOT / "samples" / "prescreen"
OPTIONS = RuleOptions(as_of=date(2026, 6, 15))
CONCEPTS = Concepts.of(default_trial())
LOINC, ICD10CM = "http://loinc.org", "http://hl7.org/fhir/sid/icd-10-cm"


@cache
def cmap() -> Any:
    return load_code_map(SITE_MAP)


def full(directory: Path) -> PrescreenRun:
    """The per-patient path itself (every line read, validated and assembled in one process): the reference."""
    return prescreen_items(read_source(str(directory)), OPTIONS, cmap())


def fast(directory: Path, processes: int = 1, chunk_bytes: int = 1 << 16) -> PrescreenRun:
    patients, report = population_patients(directory, cmap(), processes=processes, chunk_bytes=chunk_bytes)
    run = PrescreenRun(OPTIONS, [], report)
    run.screenings = list(run.take(evaluate_patient(p, OPTIONS, cmap().uln) for p in patients))
    return run


def assert_same_verdicts(got: PrescreenRun, reference: PrescreenRun) -> None:
    want = {s.patient: s for s in reference.screenings}
    assert got.screenings, "nothing reported: the comparison would be vacuous"
    for s in got.screenings:
        assert s == want[s.patient], s.patient
    assert set(got.not_screened) <= set(reference.not_screened)  # who is screened: the same decision


def leukemia_patients(directory: Path) -> set[str]:
    """Subjects of every acute-leukaemia Condition, by parsing every line (no pre-filter)."""
    out = set()
    for path in directory.glob("*.ndjson"):
        for line in path.read_bytes().splitlines():
            try:
                res = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            norm = normalize(res, cmap()) if isinstance(res, dict) and res.get("resourceType") == "Condition" else None
            if norm is not None and any("acute-leukemia" in d.concepts for d in norm.diagnoses):
                out.add(f"Patient/{patient_of(res)}")
    return out


# ------------------------------------------------------------------------------------ a generated population
@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("population")
    write_population(150, directory, seed=8, leukemia_rate=0.25)
    with (directory / "Observation.ndjson").open("ab") as handle:  # a truncated line mid-file, then more lines
        handle.write(b'{"resourceType":"Observation","id":"cut","status":"final","subj\n')
    write_population(10, directory / "more", seed=9, leukemia_rate=0.5)
    for path in (directory / "more").iterdir():  # appended after the truncated line
        with (directory / path.name).open("ab") as handle:
            handle.write(path.read_bytes())
        path.unlink()
    (directory / "more").rmdir()
    return directory


@pytest.fixture(scope="module")
def population_full(population: Path) -> PrescreenRun:
    return full(population)


@pytest.mark.parametrize(("processes", "chunk_bytes"), [(1, 1 << 16), (2, 1 << 15), (2, 8 << 20)])
def test_fast_path_gives_the_per_patient_verdicts(population: Path, population_full: PrescreenRun, processes: int,
                                                  chunk_bytes: int) -> None:
    got = fast(population, processes, chunk_bytes)
    assert_same_verdicts(got, population_full)
    assert got.report.read == population_full.report.read


def test_fast_path_reports_exactly_the_acute_leukemia_patients(population: Path,
                                                               population_full: PrescreenRun) -> None:
    reported = {s.patient for s in fast(population).screenings}
    assert reported == leukemia_patients(population)
    assert 20 < len(reported) < len(population_full.screenings)
    for s in population_full.screenings:
        if s.patient not in reported:
            assert s.verdict("inc-diagnosis").result == "not-met"
            assert s.status == "ineligible"


@pytest.fixture(scope="module", params=[10, 90, 150], ids=lambda k: f"{k}-results")
def lab_dense(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PrescreenRun]:
    """A lab-dense export (issue #16): many relevant results per candidate, a third of the patients candidates."""
    directory = tmp_path_factory.mktemp("lab-dense")
    write_population(90, directory, seed=16, leukemia_rate=0.3, results_per_candidate=request.param)
    return directory, full(directory)


@pytest.mark.parametrize(("processes", "chunk_bytes"), [(1, 1 << 16), (2, 1 << 14)])
def test_lab_dense_exports_give_the_per_patient_verdicts(lab_dense: tuple[Path, PrescreenRun], processes: int,
                                                         chunk_bytes: int) -> None:
    directory, want = lab_dense
    got = fast(directory, processes, chunk_bytes)
    assert_same_verdicts(got, want)
    assert {s.patient for s in got.screenings} | {n.patient for n in got.not_screened} == \
        leukemia_patients(directory)
    expected = {s.patient: s for s in want.screenings}
    run = prescreen(str(directory), OPTIONS, cmap())  # the pipeline: screened in the workers
    assert run.screenings == [expected[s.patient] for s in run.screenings] and len(run.screenings) > 15


def test_skips_are_reported_as_the_per_patient_path_does(population: Path, population_full: PrescreenRun) -> None:
    got = fast(population, 2, 1 << 15).report.skipped
    want = population_full.report.skipped
    assert [s for s in want if s.reason.startswith("not JSON")] == [s for s in got if s.reason.startswith("not JSON")]
    assert any(s.reason.startswith("not JSON") for s in got)
    positions = [want.index(s) for s in got]  # a subset, in the same order
    assert positions == sorted(positions)


def test_warnings_are_those_of_the_reported_patients_in_the_same_order(tmp_path: Path) -> None:
    d = adversarial_dir(tmp_path)
    odd = [obs(f"bili-{i}", [{"system": LOINC, "code": "1975-2"}], q(1.0, u)) for i, u in enumerate(("mmol/mol", "kg"))]
    odd.append(obs("ast-other", [{"system": LOINC, "code": "1920-8"}], q(1.0, "g"), subject=f"Patient/{OTHER}"))
    odd.append(obs("ast-nobody", [{"system": LOINC, "code": "1920-8"}], q(1.0, "g"), subject="Patient/nobody"))
    with (d / "Observation.ndjson").open("ab") as handle:
        handle.write(b"".join(dumps(o) + b"\n" for o in odd))
    reference = full(d)
    got = fast(d, 2, 400)
    reported = {s.patient.removeprefix("Patient/") for s in got.screenings}
    assert len(reference.report.warnings) == 4
    assert got.report.warnings == [w for w in reference.report.warnings if "ast-nobody" not in w]
    assert "nobody" not in reported


@pytest.mark.parametrize("lazy", [False, True])
def test_the_pipeline_screens_in_the_workers_and_keeps_the_order(population: Path, population_full: PrescreenRun,
                                                                 lazy: bool) -> None:
    """``prescreen(DIR)`` assembles and screens the patients in forked workers (``population_map``): the same
    verdicts, in patient-id order, the same report, whether consumed as a list or lazily."""
    run = prescreen(str(population), OPTIONS, cmap(), lazy=lazy)
    screenings = list(run.stream or ()) if lazy else run.screenings
    assert [s.patient for s in screenings] == sorted(s.patient for s in screenings)
    assert_same_verdicts(PrescreenRun(OPTIONS, screenings, run.report), population_full)
    single = fast(population, 1)
    assert screenings == single.screenings
    assert run.report.warnings == single.report.warnings and run.report.skipped == single.report.skipped


def test_without_positioned_io_one_process_gives_the_same(population: Path, population_full: PrescreenRun,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Where os.pread/os.pwrite are missing (Windows, which has no fork either) the spill file is written and
    read through the file object, in one process."""
    usual = fast(population, 2)
    monkeypatch.setattr(spill, "POSITIONED", False)
    for processes in (1, 2):  # without positioned writes the pool does not fork
        got = fast(population, processes)
        assert_same_verdicts(got, population_full)
        assert got.screenings == usual.screenings and got.report.skipped == usual.report.skipped


def test_two_runs_consumed_in_turn_in_one_process(population: Path) -> None:
    """The final phase is lazy: in one process, another run may go between two of its results."""
    alone = [p.patient_id for p in population_patients(population, cmap(), processes=1)[0]]
    samples = [p.patient_id for p in population_patients(SAMPLES / "ndjson", cmap(), processes=1)[0]]
    one = population_patients(population, cmap(), processes=1)[0]
    got: list[str | None] = []
    for pf in one:
        got.append(pf.patient_id)
        if len(got) == 3:
            assert [p.patient_id for p in population_patients(SAMPLES / "ndjson", cmap(), processes=1)[0]] == samples
    assert got == alone and len(alone) > 3


class _Trial:
    """A trial as the population path reads it (``bridge.population.TrialConcepts``)."""

    def __init__(self, facts: frozenset[str], conditions: frozenset[str], gate: frozenset[str]) -> None:
        self.facts, self.conditions, self.gate = facts, conditions, gate

    def fact_concepts(self) -> frozenset[str]:
        return self.facts

    def condition_concepts(self) -> frozenset[str]:
        return self.conditions

    def gate_concepts(self) -> frozenset[str]:
        return self.gate


def test_the_concepts_come_from_the_trial(population: Path) -> None:
    """Who is a candidate and which resources are kept follow the trial's gate, fact and condition concepts."""
    def facts_and_diagnoses(trial: _Trial) -> tuple[set[str], set[str], set[str]]:
        patients = list(population_patients(population, cmap(), processes=2, chunk_bytes=1 << 15, trial=trial)[0])
        return ({p.ref for p in patients}, {f.concept for p in patients for f in p.facts},
                {c for p in patients for d in p.diagnoses for c in d.concepts})

    default, default_facts, _ = facts_and_diagnoses(_Trial(CONCEPTS.facts, CONCEPTS.conditions, CONCEPTS.gate))
    assert default == leukemia_patients(population) and "ecog" in default_facts
    mi = frozenset({"myocardial-infarction"})
    who, facts, diagnoses = facts_and_diagnoses(_Trial(frozenset({"alt"}), mi, mi))
    assert who and who != default
    assert facts == {"alt"}
    assert diagnoses == {"myocardial-infarction"}  # the leukaemia Conditions are not read for this trial


def test_memory_holds_only_candidates(population: Path) -> None:
    lazy, report = population_patients(population, cmap(), processes=1, chunk_bytes=1 << 16)
    patients = list(lazy)
    candidates = {p.removeprefix("Patient/") for p in leukemia_patients(population)}
    assert {p.patient_id for p in patients} == candidates
    sources = {f.source.split("/")[0] for p in patients for f in p.facts}
    assert sources <= {"Observation"}
    assert report.used < report.read / 4


# ------------------------------------------------------------------------------------ the samples
def test_samples_give_the_golden_verdicts_of_their_leukemia_patients() -> None:
    source = SAMPLES / "ndjson"
    got = prescreen(str(source), OPTIONS, cmap())
    expected = json.loads((SAMPLES / "expected.json").read_text(encoding="utf-8"))
    reported = {s.patient for s in got.screenings} | {n.patient for n in got.not_screened}
    assert reported == leukemia_patients(source)  # the not-screened ones (RULES.md §2) are listed, not screened
    # every sample patient has a leukaemia-coded Condition — p08's is entered-in-error (inc-diagnosis not-met) —
    # so the population output is the whole golden document
    assert json.loads(json.dumps(prescreen_json(got.screenings, OPTIONS, got.not_screened))) == expected
    assert got.screenings[[s.patient for s in got.screenings].index("Patient/p08")].status == "ineligible"
    assert_same_verdicts(got, full(source))
    assert not got.report.skipped


def test_all_patients_is_the_per_patient_path() -> None:
    source = SAMPLES / "ndjson"
    patients, _ = assemble(read_source(str(source)), cmap())
    everyone = full(source)
    not_screened = {n.patient for n in everyone.not_screened}
    assert [s.patient for s in everyone.screenings] == [p.ref for p in patients if p.ref not in not_screened]
    assert not_screened <= {p.ref for p in patients}


# ------------------------------------------------------------------------------------ adversarial lines
CAND, OTHER = "cand-1", "other-2"
PATIENT = {"resourceType": "Patient", "id": CAND, "gender": "female", "birthDate": "1990-01-02"}


def obs(oid: str, codings: list[dict[str, str]], value: dict[str, Any], subject: str = f"Patient/{CAND}",
        **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"coding": codings},
            "subject": {"reference": subject}, "effectiveDateTime": "2026-06-10T08:00:00+08:00", **value, **extra}


def q(value: float, unit: str) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def dumps(res: dict[str, Any]) -> bytes:
    return orjson.dumps(res)


def adversarial_dir(tmp_path: Path) -> Path:
    d = tmp_path / "adversarial"
    d.mkdir()
    condition = {"resourceType": "Condition", "id": "dx", "clinicalStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "relapse"}]},
        "code": {"coding": [{"system": ICD10CM, "code": "c92.02"}]},
        "subject": {"reference": f"http://ehr.example.org/fhir/Patient/{CAND}"}}
    other_dx = {**condition, "id": "dx-2", "subject": {"reference": f"Patient/{OTHER}"}}
    (d / "Condition.ndjson").write_bytes(dumps(condition) + b"\n" + dumps(other_dx) + b"\n")
    (d / "Patient.ndjson").write_bytes(
        dumps({"resourceType": "Patient", "id": CAND, "gender": "female", "birthDate": "1990-01-02"}) + b"\n"
        + dumps({"resourceType": "Patient", "id": OTHER, "gender": "male", "birthDate": "1950-01-01"}))  # no \n
    local = {"system": "http://hospital.example.org/lab", "code": "LOCAL-1"}
    lines = [
        dumps(obs("ecog-2nd", [local, {"system": LOINC, "code": "89247-1"}], {"valueInteger": 1})),
        dumps(obs("cd7-comp", [{"system": "http://hospital.example.org/lab", "code": "FLOW"}], {}, component=[
            {"code": {"coding": [{"system": "http://hospital.example.org/lab", "code": "fc-cd7"}]}, **q(80, "%")}])),
        dumps(obs("ast-hist", [{"system": LOINC, "code": "1920-8"}], q(30, "U/L"),
                  subject=f"Patient/{CAND}/_history/3")),
        dumps(obs("alt-esc", [{"system": LOINC, "code": "1742-6"}], q(31, "U/L"))).replace(
            b"Patient/", b"Patient\\/"),
        dumps(obs("bili-u", [{"system": LOINC, "code": "1975-2"}], q(0.8, "mg/dL"))).replace(
            b"Patient/", b"\\u0050atient/"),
        b'{"id":"lvef-order","resourceType":"Observation","status":"final","code":{"coding":[{"system":"'
        + LOINC.encode() + b'","code":"10230-1"}]},"subject":{"reference":"Patient/' + CAND.encode()
        + b'"},"effectiveDateTime":"2026-06-01","valueQuantity":{"value":60,"unit":"%","code":"%"}}',
        b'{"resourceType": "Observation", "id": "hcg-spaces", "status": "final", "code": {"coding": [{"system": "'
        + LOINC.encode() + b'", "code": "2106-3"}]}, "subject": {"reference": "Patient/' + CAND.encode()
        + b'"}, "effectiveDateTime": "2026-06-12", "valueCodeableConcept": {"coding": [{"system": "'
        + LOINC.encode() + b'", "code": "LA6577-6"}]}}\r',
        dumps(obs("temp-double", [{"system": LOINC, "code": "8310-5"}], q(36.9, "Cel"),
                  subject=f"Patient/Patient/{CAND}")),
        dumps(obs("hiv-bad-date", [{"system": LOINC, "code": "56888-1"}], {"valueBoolean": False},
                  effectiveDateTime="2026-13-45")),
        dumps(obs("urn", [{"system": LOINC, "code": "1920-8"}], q(300, "U/L"), subject=f"urn:uuid:{CAND}")),
        dumps(obs("o-other", [{"system": LOINC, "code": "1920-8"}], q(300, "U/L"), subject=f"Patient/{OTHER}")),
        b"",
        b"   ",
        b'{"resourceType":"Observation","id":"trunc","subject":{"reference":"Patient/' + CAND.encode(),
        b"<html>502 Bad Gateway</html>",
        b"[1, 2]",
        b"{}",
        dumps(obs("unmapped", [{"system": LOINC, "code": "2951-2"}], q(140, "mmol/L"))),
    ]
    (d / "Observation.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return d


@pytest.mark.parametrize("processes", [1, 2])
def test_prefilter_never_drops_a_relevant_line(tmp_path: Path, processes: int) -> None:
    d = adversarial_dir(tmp_path)
    reference, got = full(d), fast(d, processes, chunk_bytes=256)
    assert [s.patient for s in got.screenings] == [f"Patient/{CAND}", f"Patient/{OTHER}"]
    assert_same_verdicts(got, reference)
    s = got.screenings[0]
    # each adversarial line is really used (so the equality above is not vacuous)
    assert s.verdict("inc-ecog").evidence == ("Observation/ecog-2nd",)
    assert s.verdict("inc-cd7-expression").evidence == ("Observation/cd7-comp",)
    assert s.verdict("inc-cardiac").evidence == ("Observation/lvef-order",)
    assert set(s.verdict("inc-organ-function").evidence) == {"Observation/ast-hist", "Observation/alt-esc",
                                                             "Observation/bili-u"}
    assert s.verdict("exc-pregnancy").evidence == ("Observation/hcg-spaces",)
    assert s.verdict("inc-diagnosis").result == "met"


def test_malformed_lines_are_reported_as_by_the_per_patient_path(tmp_path: Path) -> None:
    d = adversarial_dir(tmp_path)
    want = full(d).report
    for processes, chunk in ((1, 1 << 16), (2, 300)):
        got = fast(d, processes, chunk).report
        assert [(s.where, s.reason, s.expression) for s in got.skipped] == \
            [(s.where, s.reason, s.expression) for s in want.skipped]
        assert got.read == want.read
    reasons = [s.reason.split(" (")[0] for s in want.skipped]
    assert reasons == ["Observation/hiv-bad-date fails the R4B model", "not JSON", "not JSON",
                       "line has no resourceType", "line has no resourceType"]


def test_a_leukemia_condition_in_a_mixed_file_is_found(tmp_path: Path) -> None:
    d = adversarial_dir(tmp_path)
    third = {"resourceType": "Condition", "id": "dx-3", "code": {"coding": [{"system": ICD10CM, "code": "C91.02"}]},
             "subject": {"reference": "Patient/third"}}
    ecog = obs("ecog-3", [{"system": LOINC, "code": "89247-1"}], {"valueInteger": 0}, subject="Patient/third")
    with (d / "Observation.ndjson").open("ab") as handle:  # the file starts with Observations: pass 1 skips it
        handle.write(dumps(ecog) + b"\n" + dumps(third) + b"\n")
    with (d / "Patient.ndjson").open("ab") as handle:
        handle.write(b"\n" + dumps({"resourceType": "Patient", "id": "third", "birthDate": "1980"}) + b"\n")
    assert file_type(d / "Observation.ndjson") == "Observation"
    got = fast(d, 2, 512)
    assert "Patient/third" in {s.patient for s in got.screenings}
    assert_same_verdicts(got, full(d))


def _versions_dir(tmp_path: Path, later: dict[str, Any], later_file: str = "Observation.ndjson") -> Path:
    d = tmp_path / "versions"
    d.mkdir()
    dx = {"resourceType": "Condition", "id": "dx", "code": {"coding": [{"system": ICD10CM, "code": "C92.02"}]},
          "subject": {"reference": f"Patient/{CAND}"}}
    (d / "Condition.ndjson").write_bytes(dumps(dx) + b"\n")
    (d / "Patient.ndjson").write_bytes(dumps(PATIENT) + b"\n")
    first = obs("ast", [{"system": LOINC, "code": "1920-8"}], q(30, "U/L"), meta={"versionId": "1"})
    (d / "Observation.ndjson").write_bytes(dumps(first) + b"\n")
    with (d / later_file).open("ab") as handle:
        handle.write(dumps({**first, **later, "meta": {"versionId": "2"}}) + b"\n")
    return d


@pytest.mark.parametrize(("later", "later_file"), [
    ({"code": {"coding": [{"system": LOINC, "code": "2951-2"}]}}, "Observation.ndjson"),  # recoded, unmapped
    ({"code": {"coding": [{"system": LOINC, "code": "751-8"}]}}, "Observation.ndjson"),  # recoded, not eligibility
    ({"status": "entered-in-error"}, "Observation.ndjson"),
    ({"valueQuantity": {"value": 200, "unit": "U/L", "code": "U/L"}, "status": "amended"}, "Observation.2.ndjson"),
    ({"code": {"coding": [{"system": LOINC, "code": "2951-2"}]}}, "Observation.0.ndjson"),  # read before v1
])
def test_a_later_version_supersedes_exactly_as_in_the_per_patient_path(tmp_path: Path, later: dict[str, Any],
                                                                       later_file: str) -> None:
    d = _versions_dir(tmp_path, later, later_file)
    reference = full(d)
    assert_same_verdicts(fast(d, 1), reference)
    assert_same_verdicts(fast(d, 2, 64), reference)


def test_no_acute_leukemia_reports_nobody(tmp_path: Path) -> None:
    d = tmp_path / "none"
    d.mkdir()
    (d / "Observation.ndjson").write_bytes(
        dumps(obs("a", [{"system": LOINC, "code": "1920-8"}], q(30, "U/L"))) + b"\n")
    run = prescreen(str(d), OPTIONS, cmap())
    assert run.screenings == [] and run.report.read == 1 and run.report.skipped == []


# ------------------------------------------------------------------------------------ the bytes checks
REFERENCE = st.sampled_from(["Patient/{id}", "http://h.example/fhir/Patient/{id}", "Patient/{id}/_history/2",
                             "Patient/{id}/", "x/Patient/Patient/{id}", "https://a/b/c/Patient/{id}/_history/1/"])
ID = st.from_regex(r"[A-Za-z0-9\-.]{1,20}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(pid=ID, shape=REFERENCE, escape_slash=st.booleans(), spaced=st.booleans(), before=st.booleans(),
       other=ID)
def test_patient_filter_never_misses_the_subject(pid: str, shape: str, escape_slash: bool, spaced: bool,
                                                 before: bool, other: str) -> None:
    res: dict[str, Any] = {"resourceType": "Observation", "id": "o"}
    performer = {"performer": [{"reference": f"Patient/{other}"}]}
    res |= {**(performer if before else {}), "subject": {"reference": shape.format(id=pid)}}
    line = json.dumps(res, separators=(", ", ": ") if spaced else (",", ":")).encode()
    if escape_slash:
        line = line.replace(b"/", b"\\/")
    assert patient_of(orjson.loads(line)) == pid
    pf = PatientFilter({pid})
    assert pf.may_concern(line)
    if is_canonical_line(line):
        assert list(pf.lines(line + b"\n")) == [(0, len(line))]


@settings(max_examples=200, deadline=None)
@given(pid=ID, ids=st.sets(ID, max_size=30))
def test_patient_filter_drops_only_lines_of_other_patients(pid: str, ids: set[str]) -> None:
    line = dumps(obs("o", [{"system": LOINC, "code": "1920-8"}], q(1, "U/L"), subject=f"Patient/{pid}"))
    pf = PatientFilter(ids)
    assert pf.may_concern(line) == (pid in ids)
    assert bool(list(pf.lines(line))) == (pid in ids)


def _named(line: bytes) -> set[bytes]:
    """The segment right after every ``Patient/`` that ends at ``"`` or ``/``: what the filter must find."""
    out, i = set(), line.find(b"Patient/")
    while i >= 0:
        j = k = i + len(b"Patient/")
        while k < len(line) and line[k] not in b'"/\n':
            k += 1
        if k < len(line) and line[k] in b'"/':
            out.add(line[j:k])
        i = line.find(b"Patient/", i + 1)
    return out


NEAR_ID = st.from_regex(r"(?:Patient|P|Pa|a)[ab]{0,4}", fullmatch=True)  # ids that share prefixes a lot


@settings(max_examples=300, deadline=None)
@given(pid=NEAR_ID, other=NEAR_ID, ids=st.sets(NEAR_ID, max_size=25), shape=REFERENCE)
def test_patient_filter_with_ids_that_share_prefixes(pid: str, other: str, ids: set[str], shape: str) -> None:
    """The pattern matches distinguishing prefixes, then checks whole ids: ids that are prefixes of one another,
    a patient whose id extends a candidate's, and overlapping ``Patient/Patient/x`` references."""
    res = {"resourceType": "Observation", "id": "o", "performer": [{"reference": f"Patient/{other}"}],
           "subject": {"reference": shape.format(id=pid)}}
    line = json.dumps(res, separators=(",", ":")).encode()
    pf = PatientFilter(ids)
    found = bool(list(pf.lines(line)))
    assert found == bool(_named(line) & {i.encode() for i in ids})
    if pid in ids or other in ids:
        assert found


def test_distinguishing_prefixes_are_short_for_random_ids_and_whole_for_nested_ones() -> None:
    import random
    import uuid

    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(3000)]
    assert max(len(p) for p in distinguishing_prefixes(ids)) < 12
    assert distinguishing_prefixes([b"12", b"123", b"123456789"]) == {b"12", b"123", b"1234567"}


def test_filter_with_no_ids_matches_nothing() -> None:
    pf = PatientFilter([])
    line = dumps(obs("o", [], {}))
    assert not pf.may_concern(line) and list(pf.lines(line * 3)) == []


@pytest.mark.parametrize(("buf", "lines"), [
    (b'{"resourceType":"Observation","a":1}\n{"resourceType":"Observation","b":2}\n', 2),
    (b'{"resourceType":"Observation","a":1}\n{"resourceType":"Observation","b":2}', 2),
    (b'{"resourceType":"Observation","a":1}\n', 1),
    (b'{"resourceType":"Observation","a":1}\n\n{"resourceType":"Observation","b":2}\n', None),  # blank line
    (b'{"resourceType":"Observation","a":1}\r\n', None),  # CRLF
    (b'{"resourceType":"Observation","a":1}\n{"resourceType":"Patient","b":2}\n', None),  # another type
    (b'{"resourceType":"Observation","a":"x\\"y"}\n', None),  # an escape
    (b'{"resourceType":"Observation","a":1\n', None),  # truncated
    (b'{"resourceType":"Observation","a":1}\n{"resourceType":"Observation","b":2\n', None),
    (b'{"resourceType":"ObservationX","a":1}\n', None),
])
def test_canonical_lines(buf: bytes, lines: int | None) -> None:
    assert canonical_lines(buf, "Observation") == lines


def test_canonical_lines_in_a_range() -> None:
    good = b'{"resourceType":"Condition","a":1}\n'
    buf = b"garbage\n" + good * 3 + b"more garbage"
    lo = len(b"garbage\n")
    assert canonical_lines(buf, "Condition") is None
    assert canonical_lines(buf, "Condition", lo, lo + 3 * len(good)) == 3
    assert canonical_lines(buf, "Condition", lo, lo + 3 * len(good) - 1) == 3  # the last newline cut off


def _canonical_reference(buf: bytes, rtype: str, lo: int, hi: int) -> int | None:
    """canonical_lines, spelled out line by line."""
    part = buf[lo:hi]
    lines = part[:-1].split(b"\n") if part.endswith(b"\n") else part.split(b"\n")
    head = b'{"resourceType":"' + rtype.encode() + b'"'
    ok = all(line.startswith(head) and line.endswith(b"}") and b"\\" not in line for line in lines)
    return len(lines) if ok and part else None


LINE = st.sampled_from([b'{"resourceType":"Observation","a":1}', b'{"resourceType":"Observation"}',
                        b'{"resourceType":"Observation","s":"}"}', b'{"resourceType":"Observation","a":"x\\"}',
                        b'{"resourceType":"Patient","a":1}', b'{"resourceType":"Observation","a":1', b"}", b"",
                        b'{"resourceType":"Observation","a":1}\r', b'{"resourceType":"Obs"}', b"{"])


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(LINE, min_size=1, max_size=12), terminated=st.booleans(), cut=st.integers(0, 3))
def test_canonical_lines_agrees_with_a_line_by_line_check(lines: list[bytes], terminated: bool, cut: int) -> None:
    body = b"\n".join(lines) + (b"\n" if terminated else b"")
    buf = b"x" * cut + body
    assert canonical_lines(buf, "Observation", cut, len(buf)) == _canonical_reference(buf, "Observation", cut,
                                                                                        len(buf))


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 18) - 1, 1 << 18, (1 << 18) + 1, 700_001])
def test_newline_positions_match_a_scan(size: int) -> None:
    buf = bytes((i * 7919) % 11 + 5 for i in range(size))
    want = [i for i, b in enumerate(buf) if b == 10]
    assert newline_positions(buf).tolist() == want
    lo, hi = size // 3, size - size // 5
    assert newline_positions(buf, lo, hi).tolist() == [i for i in want if lo <= i < hi]


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 18) - 1, 1 << 18, (1 << 18) + 1, 700_001])
def test_count_newlines_matches_bytes_count(size: int) -> None:
    buf = bytes((i * 7919) % 11 + 5 for i in range(size))  # bytes 5..15: newline (10) one in eleven
    assert count_newlines(buf) == buf.count(b"\n")
    assert count_newlines(buf, size // 3, size - size // 5) == buf.count(b"\n", size // 3, size - size // 5)


def test_line_type() -> None:
    assert line_type(b'{"resourceType":"Observation","id":"1"}') == "Observation"
    assert line_type(b'{"resourceType": "Observation"}') is None
    assert line_type(b'{"resourceType":"Obs\\u0065rvation"}') is None
    assert line_type(b'{"id":"1","resourceType":"Observation"}') is None


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 300), min_size=0, max_size=40), chunk=st.integers(1, 2000),
       newline_at_end=st.booleans())
def test_chunks_cover_the_file_and_end_at_line_ends(tmp_path_factory: pytest.TempPathFactory, lengths: list[int],
                                                    chunk: int, newline_at_end: bool) -> None:
    path = tmp_path_factory.mktemp("chunks") / "X.ndjson"
    data = b"\n".join(b"x" * n for n in lengths) + (b"\n" if newline_at_end and lengths else b"")
    path.write_bytes(data)
    plan = plan_chunks([path], chunk)
    assert b"".join(read_chunk(c) for c in plan) == data
    assert all(read_chunk(c).endswith(b"\n") for c in plan[:-1])
    assert [c.index for c in plan] == list(range(len(plan)))
    try:  # the reused buffer: growing, shrinking in place, or a small chunk read the plain way
        assert b"".join(bytes(read_chunk_reusing(c)) for c in [*plan, *reversed(plan)]) == data + b"".join(
            read_chunk(c) for c in reversed(plan))
    finally:
        release_buffer()


def test_a_file_that_shrinks_while_read_is_an_error_not_a_short_chunk(tmp_path: Path) -> None:
    from bridge.errors import SourceUnreadable

    path = tmp_path / "Observation.ndjson"
    path.write_bytes(b"x" * 100 + b"\n")
    (chunk,) = plan_chunks([path], 1000)
    path.write_bytes(b"x" * 10 + b"\n")
    try:
        with pytest.raises(SourceUnreadable, match="changed while it was read"):
            read_chunk_reusing(chunk)
    finally:
        release_buffer()


# ------------------------------------------------------------------------------------ pieces
def test_relevance_reads_every_coding_and_component() -> None:
    local = {"system": "http://hospital.example.org/lab", "code": "X"}
    assert relevant(obs("a", [local, {"system": LOINC, "code": "1920-8"}], {}), cmap(), CONCEPTS)
    assert relevant(obs("a", [local], {}, component=[{"code": {"coding": [
        {"system": "http://hospital.example.org/lab", "code": "fc-cd7"}]}}]), cmap(), CONCEPTS)
    anc = obs("a", [{"system": LOINC, "code": "751-8"}], {})
    assert not relevant(anc, cmap(), CONCEPTS)  # ANC: no eligibility rule
    assert not relevant({"resourceType": "Encounter", "id": "e"}, cmap(), CONCEPTS)
    assert relevant({"resourceType": "Condition", "code": {"coding": [{"system": ICD10CM, "code": "I82.40"}]}}, cmap(),
                    CONCEPTS)
    assert not relevant({"resourceType": "Condition", "code": {"coding": [{"system": ICD10CM, "code": "I10"}]}},
                        cmap(), CONCEPTS)


@pytest.mark.parametrize("ref", ["Patient/p", "http://x/Patient/p", "Patient/p/_history/1", "urn:uuid:p",
                                 "Group/p", "Patient?identifier=p", "Patient//p", "xPatient/p"])
def test_patient_of_agrees_with_the_normalizer(ref: str) -> None:
    res = obs("o", [], {}, subject=ref)
    assert patient_of(res) == normalize(res, cmap()).patient_id  # type: ignore[union-attr]


def test_the_default_trials_concepts_cover_every_concept_the_rules_read() -> None:
    """Derived from the trial (its blocks declare what they read), not from the source of the rules."""
    trial = load_trial()
    read = CONCEPTS.facts | CONCEPTS.conditions
    assert trial.fact_concepts() | trial.condition_concepts() <= read, (trial.fact_concepts() |
                                                                       trial.condition_concepts()) - read
    assert read.issubset(cmap().concepts)
    assert CONCEPTS.gate == trial.gate_concepts() == {"acute-leukemia"}


def test_digest_is_stable_and_signed_64_bit() -> None:
    assert digest("Observation/a") == digest("Observation/a") != digest("Observation/b")
    assert -(2**63) <= digest("Observation/a") < 2**63


def test_positioned_assembler_orders_by_position_not_arrival() -> None:
    from bridge.ingest.readers import Entry
    asm = PositionedAssembler(cmap())
    later = obs("a", [{"system": LOINC, "code": "1920-8"}], q(99, "U/L"))
    earlier = obs("a", [{"system": LOINC, "code": "1920-8"}], q(11, "U/L"))
    asm.add_at(Entry(later, "x"), order=200)
    asm.add_at(Entry(earlier, "x"), order=100)  # arrives second, but sits earlier in the directory
    (pf,) = asm.patients()
    assert [f.value.value for f in pf.facts] == [99.0]  # type: ignore[union-attr]


@pytest.mark.parametrize("processes", [1, 2])
def test_every_digest_colliding_changes_nothing(population: Path, population_full: PrescreenRun, processes: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent keeps 64-bit digests, not references: with every reference colliding into a few digests,
    every kept resource goes through the exact comparison of references and versions, and every dropped
    resource looks like a kept one (pass 2 runs again keeping them) — the verdicts must not change."""
    monkeypatch.setattr(spill, "digest", lambda ref: len(ref) % 3)
    got = fast(population, processes, 1 << 15)
    assert_same_verdicts(got, population_full)
    assert {s.patient for s in got.screenings} == {s.patient for s in fast(population).screenings}


@pytest.mark.parametrize("stamps", [
    ("2026-06-01T08:00:00+08:00", "2026-06-02T08:00:00.000000000000+08:00"),  # the newer stamp does not pack
    ("2026-06-02T08:00:00.000000000000+08:00", "2026-06-01T08:00:00+08:00"),  # the older one does not
    ("2026-06-01T08:00:00+08:00", "2026-06-02T08:00:00+08:00"),
])
@pytest.mark.parametrize("later_file", ["Observation.ndjson", "Observation.0.ndjson"])
def test_last_updated_decides_between_versions_as_in_the_per_patient_path(tmp_path: Path, stamps: tuple[str, str],
                                                                          later_file: str) -> None:
    d = tmp_path / "stamps"
    d.mkdir()
    dx = {"resourceType": "Condition", "id": "dx", "code": {"coding": [{"system": ICD10CM, "code": "C92.02"}]},
          "subject": {"reference": f"Patient/{CAND}"}}
    (d / "Condition.ndjson").write_bytes(dumps(dx) + b"\n")
    (d / "Patient.ndjson").write_bytes(dumps(PATIENT) + b"\n")
    one = obs("ast", [{"system": LOINC, "code": "1920-8"}], q(30, "U/L"), meta={"lastUpdated": stamps[0]})
    two = {**one, **q(500, "U/L"), "meta": {"lastUpdated": stamps[1]}}
    (d / "Observation.ndjson").write_bytes(dumps(one) + b"\n")
    with (d / later_file).open("ab") as handle:
        handle.write(dumps(two) + b"\n")
    reference = full(d)
    newest = 500 if stamps[1] > stamps[0] else 30
    assert f"AST {newest} U/L" in reference.screenings[0].verdict("inc-organ-function").reason
    assert_same_verdicts(fast(d, 1), reference)
    assert_same_verdicts(fast(d, 2, 64), reference)


# ------------------------------------------------------------------------------------ versions (RULES.md §2)
def _two_versions(tmp_path: Path, first: dict[str, Any], later: dict[str, Any], later_file: str) -> Path:
    d = tmp_path / "two"
    d.mkdir()
    dx = {"resourceType": "Condition", "id": "dx", "code": {"coding": [{"system": ICD10CM, "code": "C92.02"}]},
          "subject": {"reference": f"Patient/{CAND}"}}
    other_dx = {**dx, "id": "dx-2", "subject": {"reference": f"Patient/{OTHER}"}}
    (d / "Condition.ndjson").write_bytes(dumps(dx) + b"\n" + dumps(other_dx) + b"\n")
    (d / "Patient.ndjson").write_bytes(dumps(PATIENT) + b"\n" + dumps({**PATIENT, "id": OTHER}) + b"\n")
    filler = b"".join(dumps(obs(f"f{i}", [{"system": LOINC, "code": "8310-5"}], q(36.5, "Cel"))) + b"\n"
                      for i in range(6))  # lines between the two versions: several chunks apart with small chunks
    (d / "Observation.ndjson").write_bytes(dumps(first) + b"\n" + filler)
    with (d / later_file).open("ab") as handle:
        handle.write(dumps(later) + b"\n")
    return d


AST = [{"system": LOINC, "code": "1920-8"}]


@pytest.mark.parametrize(("first", "later", "newest"), [
    # same id, no meta: the amended version wins although the preliminary one comes later
    (obs("ast", AST, q(500, "U/L"), status="amended"), obs("ast", AST, q(30, "U/L"), status="preliminary"), 500),
    (obs("ast", AST, q(500, "U/L"), status="preliminary"), obs("ast", AST, q(30, "U/L"), status="corrected"), 30),
    # lastUpdated in different offsets: 18:00+08:00 is 10:00Z, before 11:00Z
    (obs("ast", AST, q(500, "U/L"), meta={"lastUpdated": "2026-06-01T11:00:00Z"}),
     obs("ast", AST, q(30, "U/L"), meta={"lastUpdated": "2026-06-01T18:00:00+08:00"}), 500),
    (obs("ast", AST, q(500, "U/L"), meta={"lastUpdated": "2026-06-01T18:00:00+08:00"}),
     obs("ast", AST, q(30, "U/L"), meta={"lastUpdated": "2026-06-01T11:00:00Z"}), 30),
    # numeric version ids: 10 after 9
    (obs("ast", AST, q(500, "U/L"), meta={"versionId": "10"}), obs("ast", AST, q(30, "U/L"), meta={"versionId": "9"}),
     500),
    # the newest version fails the R4B model: it is skipped and still supersedes (no AST is left)
    (obs("ast", AST, q(500, "U/L"), meta={"versionId": "1"}),
     obs("ast", AST, q(30, "U/L"), meta={"versionId": "2"}, effectiveDateTime="2026-13-45"), None),
    # the versions name two candidates: the newest wins, a warning names the identity
    (obs("ast", AST, q(500, "U/L"), meta={"versionId": "2"}),
     obs("ast", AST, q(30, "U/L"), meta={"versionId": "1"}, subject=f"Patient/{OTHER}"), 500),
])
@pytest.mark.parametrize("later_file", ["Observation.ndjson", "Observation.0.ndjson", "Observation.2.ndjson"])
def test_versions_resolve_as_in_the_per_patient_path(tmp_path: Path, first: dict[str, Any], later: dict[str, Any],
                                                     newest: int | None, later_file: str) -> None:
    d = _two_versions(tmp_path, first, later, later_file)
    reference = full(d)
    reason = reference.screenings[0].verdict("inc-organ-function").reason
    assert (f"AST {newest} U/L" in reason) if newest else ("AST 30" not in reason and "AST 500" not in reason)
    moved = later["subject"] != first["subject"]
    assert reference.report.warnings == (["Observation/ast: its versions name different patients; the newest is used"]
                                         if moved else [])
    for processes, chunk in ((1, 1 << 16), (2, 64), (2, 300)):
        got = fast(d, processes, chunk)
        assert_same_verdicts(got, reference)
        assert got.report.warnings == reference.report.warnings
        assert [(s.where, s.reason) for s in got.report.skipped] == \
            [(s.where, s.reason) for s in reference.report.skipped]


def test_patients_sharing_an_id_warn_as_in_the_per_patient_path(tmp_path: Path) -> None:
    d = _two_versions(tmp_path, obs("ast", AST, q(30, "U/L")), obs("ast-2", AST, q(31, "U/L")), "Observation.ndjson")
    with (d / "Patient.2.ndjson").open("wb") as handle:
        handle.write(dumps({**PATIENT, "deceasedDateTime": "2026-05-01",
                            "meta": {"lastUpdated": "2026-05-02T00:00:00+08:00"}}) + b"\n")
    reference = full(d)
    assert reference.report.warnings == [f"Patient/{CAND}: several Patient resources share this id; the newest is used"]
    assert [n.as_json() for n in reference.not_screened] == [{"patient": f"Patient/{CAND}", "reason": "deceased"}]
    for processes, chunk in ((1, 1 << 16), (2, 64)):
        got = fast(d, processes, chunk)
        assert got.report.warnings == reference.report.warnings
        assert got.not_screened == reference.not_screened
        run = prescreen(str(d), OPTIONS, cmap())
        assert run.not_screened == reference.not_screened and f"Patient/{CAND}" not in {
            s.patient for s in run.screenings}
