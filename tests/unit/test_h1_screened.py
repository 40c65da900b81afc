"""Issue #12 items 5 (producer side), 6 and 9: who is screened, non-clinical entries, nothing stops a run.

- ``PrescreenRun.not_screened`` (sorted by patient) holds the deceased, the non-human and those without a valid
  Patient resource; they are never in ``screenings``; the JSON document lists them in ``notScreened`` after
  ``results`` (streamed or not), the table counts them, ``--save`` and ``--publish`` leave them out.
- A Bundle entry with only ``request``/``response``, a ResearchStudy or Subscription are not skipped resources;
  a source without patient data says so in one line and exits 0 (even with ``--strict``).
- An exception while evaluating one patient leaves every other patient evaluated and printed, names that
  patient (reference and exception type, never data) and ends with exit 1 — per patient and in population mode.
"""

from __future__ import annotations

import io
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import bridge.pipeline as pipeline
from bridge.cli import app as cli_app
from bridge.config import RuleOptions
from bridge.evaluate.eligibility import Screening
from bridge.ingest.readers import read_source
from bridge.model import NotScreened, PatientFacts
from bridge.normalize.mappings import load_code_map
from bridge.normalize.patients import assemble
from bridge.pipeline import prescreen, prescreen_items, prescreen_json, write_prescreen_json
from bridge.population import Failed
from bridge.state.sqlite_state import SqliteState as SqliteStore
from tests.shared import EXAMPLES

REPO = Path(__file__).resolve().parents[2]
SITE_MAP = REPO / "samples" / "site-map.yaml"
CMAP = load_code_map(SITE_MAP)
AS_OF = date(2026, 6, 15)
OPTIONS = RuleOptions(as_of=AS_OF)
ANIMAL = "http://hl7.org/fhir/StructureDefinition/patient-animal"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SECRET = "Zeta-Surname"


def patient(pid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1990-01-02",
            "name": [{"family": SECRET}], **extra}


def leukemia(pid: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": f"dx-{pid}", "code": {"coding": [{"system": ICD10CM, "code": "C92.02"}]},
            "subject": {"reference": f"Patient/{pid}"}}


def records() -> list[dict[str, Any]]:
    """alive (screened), future-death (dies after the as-of date: screened), dead, dead-partial (2026: taken at
    its earliest day), dead-bool, dog, ghost (subject references only), invalid (its Patient fails the model)."""
    out = [patient("alive"), patient("future-death", deceasedDateTime="2026-07-01"),
           patient("dead", deceasedDateTime="2026-06-15T08:00:00+08:00"),
           patient("dead-partial", deceasedDateTime="2026"),
           patient("dead-bool", deceasedBoolean=True),
           patient("dog", extension=[{"url": ANIMAL, "extension": [{"url": "species", "valueCodeableConcept": {
               "coding": [{"system": "http://hl7.org/fhir/animal-species", "code": "canislf"}]}}]}]),
           patient("invalid", gender=12)]
    pids = ["alive", "future-death", "dead", "dead-partial", "dead-bool", "dog", "ghost", "invalid"]
    return out + [leukemia(pid) for pid in pids]


EXPECTED = [NotScreened("Patient/dead", "deceased"), NotScreened("Patient/dead-bool", "deceased"),
            NotScreened("Patient/dead-partial", "deceased"), NotScreened("Patient/dog", "non-human"),
            NotScreened("Patient/ghost", "no-patient-resource"), NotScreened("Patient/invalid", "no-patient-resource")]


def write_bundle(path: Path, resources: list[dict[str, Any]], btype: str = "collection",
                 extra_entries: list[dict[str, Any]] | None = None) -> Path:
    entries = [{"resource": r} for r in resources] + (extra_entries or [])
    path.write_text(json.dumps({"resourceType": "Bundle", "type": btype, "entry": entries}))
    return path


def write_ndjson(directory: Path, resources: list[dict[str, Any]]) -> Path:
    directory.mkdir()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, items in by_type.items():
        (directory / f"{rtype}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in items))
    return directory


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli_app, [*args, "--as-of", AS_OF.isoformat(), "--site-map", str(SITE_MAP)])


# ---------------------------------------------------------------------------------------------- who is screened
def test_per_patient_run_lists_who_is_not_screened(tmp_path: Path) -> None:
    run = prescreen(str(write_bundle(tmp_path / "b.json", records())), OPTIONS, CMAP)
    assert run.not_screened == EXPECTED
    assert [s.patient for s in run.screenings] == ["Patient/alive", "Patient/future-death"]
    assert [s.where for s in run.report.skipped] == [f"{tmp_path / 'b.json'} entry 6"]  # the invalid Patient


@pytest.mark.parametrize("lazy", [False, True])
def test_population_mode_lists_the_same(tmp_path: Path, lazy: bool) -> None:
    directory = write_ndjson(tmp_path / "export", [*records(), patient("no-leukemia")])
    run = prescreen(str(directory), OPTIONS, CMAP, lazy=lazy)
    screened = list(run.stream) if lazy and run.stream is not None else run.screenings
    assert run.population and run.not_screened == EXPECTED
    assert [s.patient for s in screened] == ["Patient/alive", "Patient/future-death"]
    everyone = prescreen(str(directory), OPTIONS, CMAP, all_patients=True)
    assert everyone.not_screened == EXPECTED
    assert [s.patient for s in everyone.screenings] == ["Patient/alive", "Patient/future-death", "Patient/no-leukemia"]
    assert {s.patient: s for s in everyone.screenings if s.patient != "Patient/no-leukemia"} == \
        {s.patient: s for s in screened}


def test_json_document_has_not_screened_after_results(tmp_path: Path) -> None:
    run = prescreen(str(write_bundle(tmp_path / "b.json", records())), OPTIONS, CMAP)
    doc = run.as_json()
    assert list(doc) == ["study", "rulesetVersion", "asOf", "organFunctionReading", "results", "notScreened"]
    assert doc["notScreened"][:2] == [{"patient": "Patient/dead", "reason": "deceased"},  # type: ignore[index]
                                      {"patient": "Patient/dead-bool", "reason": "deceased"}]
    out = io.StringIO()
    write_prescreen_json(out, run.screenings, OPTIONS, run.not_screened)
    assert json.loads(out.getvalue()) == doc
    assert out.getvalue() == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"  # the very bytes of json.dumps


@pytest.mark.parametrize("count", [0, 2])
def test_streamed_document_without_anyone_not_screened(count: int) -> None:
    from bridge.evaluate.eligibility import screen
    from bridge.model import PartialDate

    screenings = [screen(PatientFacts(f"p{i}", has_patient=True, birth_date=PartialDate(1990)), OPTIONS)
                  for i in range(count)]
    out = io.StringIO()
    write_prescreen_json(out, screenings, OPTIONS)
    assert json.loads(out.getvalue()) == {**prescreen_json(screenings, OPTIONS), "notScreened": []}
    assert out.getvalue().endswith('],\n  "notScreened": []\n}\n')


def test_cli_json_table_and_save_leave_them_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_bundle(tmp_path / "b.json", records())
    result = invoke("prescreen", str(source), "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["patient"] for r in doc["results"]] == ["Patient/alive", "Patient/future-death"]
    assert [NotScreened(**n) for n in doc["notScreened"]] == EXPECTED
    table = invoke("prescreen", str(source))
    assert "2 patients: " in table.stdout
    assert "; 6 not screened (deceased 3, non-human 1, no-patient-resource 2)" in table.stdout
    assert "Patient/dog" not in table.stdout and SECRET not in table.output
    db = tmp_path / "state.sqlite3"
    monkeypatch.setenv("BRIDGE_DB_PATH", str(db))
    saved = invoke("prescreen", str(source), "--save")
    assert saved.exit_code == 0, saved.output
    store = SqliteStore(db)
    try:
        assert [r.patient_id for r in store.screenings()] == ["alive", "future-death"]
        assert [(r.patient_id, r.reason) for r in store.not_screened()] == [
            (n.patient.removeprefix("Patient/"), n.reason) for n in EXPECTED]
    finally:
        store.close()


def test_publish_gets_no_one_who_is_not_screened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.publish.publisher as publisher

    seen: dict[str, Any] = {}

    def fake(client: Any, screenings: list[Screening], options: RuleOptions, clock: Any = None,
             not_screened: Any = (), trial: Any = None) -> list[Any]:
        seen["screenings"], seen["not_screened"] = [s.patient for s in screenings], list(not_screened)
        return []

    monkeypatch.setattr(publisher, "publish_screenings", fake)
    for name in ("BRIDGE_CONFIG", "BRIDGE_EHR_TOKEN", "BRIDGE_EHR_TOKEN_FILE", "BRIDGE_SMART_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    result = invoke("prescreen", str(write_bundle(tmp_path / "b.json", records())), "--publish",
                    "http://ehr.invalid/fhir")
    assert result.exit_code == 0, result.output
    assert seen["screenings"] == ["Patient/alive", "Patient/future-death"] and seen["not_screened"] == EXPECTED


# ---------------------------------------------------------------------------------------------- non-clinical
@pytest.mark.parametrize("name", ["bundle-request-simplesummary.json", "bundle-request-medsallergies.json",
                                  "researchstudy-example.json", "subscription-example.json"])
def test_a_source_without_patient_data_says_so_and_exits_0(name: str, tmp_path: Path) -> None:
    example = EXAMPLES / name
    if not example.exists():
        pytest.skip(f"shared corpus missing: {example}")
    source = shutil.copy(example, tmp_path / name)
    for fmt in ("json", "table"):
        result = invoke("prescreen", str(source), "--format", fmt, "--strict")
        assert result.exit_code == 0, result.output
        lines = [line for line in result.stderr.splitlines() if "no patient data" in line]
        assert lines == [f"{source}: no patient data (0 Patient, Observation, Condition, Encounter, "
                         "MedicationAdministration resources)"]
        assert "skipped" not in result.stderr
    doc = json.loads(invoke("prescreen", str(source), "--format", "json").stdout)
    assert doc["results"] == [] and doc["notScreened"] == []


def test_official_transaction_passes_strict() -> None:
    example = EXAMPLES / "bundle-transaction.json"
    if not example.exists():
        pytest.skip(f"shared corpus missing: {example}")
    result = invoke("prescreen", str(example), "--strict", "--format", "json")
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.stderr and "no patient data" not in result.stderr


def test_request_and_response_entries_are_read_not_skipped_but_an_empty_entry_is_skipped(tmp_path: Path) -> None:
    extra = [{"request": {"method": "DELETE", "url": "Observation/x"}},
             {"response": {"status": "201 Created", "location": "Patient/alive/_history/1"}},
             {"fullUrl": "urn:uuid:0b6b1f3e-0000-4000-8000-000000000003"}]
    items = list(read_source(str(write_bundle(tmp_path / "b.json", [patient("alive")], "batch", extra))))
    assert [type(i).__name__ for i in items] == ["Entry", "NonClinical", "NonClinical", "Skipped"]
    assert items[3].where.endswith("entry 3")
    found, report = assemble(iter(items), CMAP)
    assert [p.patient_id for p in found] == ["alive"]
    assert (report.read, report.non_clinical, len(report.skipped)) == (4, 2, 1) and not report.no_patient_data
    _, only_requests = assemble(iter(items[1:3]), CMAP)
    assert only_requests.read == 2 and only_requests.no_patient_data


def test_a_source_with_data_says_nothing_of_the_sort(tmp_path: Path) -> None:
    result = invoke("prescreen", str(write_bundle(tmp_path / "b.json", [patient("alive")])))
    assert result.exit_code == 0 and "no patient data" not in result.stderr


# ---------------------------------------------------------------------------------------------- nothing stops a run
def _explode_for(monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    real = pipeline.screen

    def screen(pf: PatientFacts, options: RuleOptions, site_uln: Any = None, trial: Any = None) -> Screening:
        if pf.patient_id == victim:
            raise ZeroDivisionError(f"value 0.0 of {SECRET}")
        return real(pf, options, site_uln, trial)

    monkeypatch.setattr(pipeline, "screen", screen)


def test_one_failing_patient_per_patient_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _explode_for(monkeypatch, "alive")
    run = prescreen_items(read_source(str(write_bundle(tmp_path / "b.json", records()))), OPTIONS, CMAP)
    assert [s.patient for s in run.screenings] == ["Patient/future-death"]
    (failed,) = run.failed
    assert failed.patient == "Patient/alive" and failed.error.startswith("ZeroDivisionError at test_h1_screened.py:")
    assert SECRET not in failed.line() and "0.0" not in failed.line()
    assert run.not_screened == EXPECTED


@pytest.mark.parametrize("lazy", [False, True])
def test_one_failing_patient_population_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lazy: bool) -> None:
    _explode_for(monkeypatch, "alive")  # patched before the workers fork: they inherit it
    directory = write_ndjson(tmp_path / "export", records())
    run = prescreen(str(directory), OPTIONS, CMAP, lazy=lazy)
    screened = list(run.stream) if lazy and run.stream is not None else run.screenings
    assert [s.patient for s in screened] == ["Patient/future-death"]
    assert [f.patient for f in run.failed] == ["Patient/alive"] and isinstance(run.failed[0], Failed)
    assert run.not_screened == EXPECTED


@pytest.mark.parametrize("fmt", ["json", "table"])
@pytest.mark.parametrize("kind", ["bundle", "ndjson"])
def test_cli_prints_the_others_names_the_failure_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              fmt: str, kind: str) -> None:
    _explode_for(monkeypatch, "alive")
    source = write_bundle(tmp_path / "b.json", records()) if kind == "bundle" else \
        write_ndjson(tmp_path / "export", records())
    result = invoke("prescreen", str(source), "--format", fmt)
    assert result.exit_code == 1, result.output
    assert "Patient/future-death" in result.stdout and "Patient/alive" not in result.stdout
    assert "Patient/alive: evaluation failed (ZeroDivisionError at test_h1_screened.py:" in result.stderr
    assert SECRET not in result.output and "Traceback" not in result.output
    if fmt == "json":
        assert [r["patient"] for r in json.loads(result.stdout)["results"]] == ["Patient/future-death"]


@pytest.mark.parametrize("all_patients", [False, True])
def test_rendered_stream_writes_the_same_document(tmp_path: Path, all_patients: bool) -> None:
    """``rendered``: each screening's JSON made in the worker — the document is the very bytes of the other way."""
    directory = write_ndjson(tmp_path / "export", [*records(), patient("no-leukemia")])
    plain = prescreen(str(directory), OPTIONS, CMAP, all_patients=all_patients)
    expected = io.StringIO()
    write_prescreen_json(expected, plain.screenings, OPTIONS, plain.not_screened)
    run = prescreen(str(directory), OPTIONS, CMAP, all_patients=all_patients, lazy=True, rendered=True)
    assert run.stream is not None
    out = io.StringIO()
    written = write_prescreen_json(out, run.stream, OPTIONS, run.not_screened)
    assert written == len(plain.screenings) > 0
    assert out.getvalue() == expected.getvalue()
    assert json.loads(out.getvalue()) == plain.as_json()
    assert all(isinstance(s, pipeline.RenderedScreening)
               for s in prescreen(str(directory), OPTIONS, CMAP, all_patients=all_patients, lazy=True,
                                  rendered=True).stream or ())
