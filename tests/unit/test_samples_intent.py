"""The synthetic pre-screen dataset (``samples/prescreen/``) screens as its author intended (RULES.md §2).

``intent.json`` is hand-written truth (per case in ``samplegen/prescreen.py``), not engine output. Both the
Bundle and the NDJSON directory are read with the real pipeline (reader -> assembler -> who is screened ->
eligibility) and every patient's verdict per criterion and overall status must equal the intent; the patients
the rules do not apply to (RULES.md §2 "Who is screened") must be exactly ``intent.json``'s ``notScreened``, with
their reasons. ``transaction.json`` (a transaction Bundle with a request-only entry) is read the same way against
``intent.json``'s ``transaction`` section. The dataset must also exercise every automated criterion as met,
not-met and unknown (except outcomes RULES.md does not define), and regenerating it must give byte-identical
files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from bridge.config import RuleOptions
from bridge.evaluate.eligibility import Screening, screen
from bridge.evaluate.screened import not_screened
from bridge.ingest.readers import read_source
from bridge.normalize.mappings import load_code_map
from bridge.normalize.patients import ReadReport, assemble
from bridge.trial import load_trial
from samplegen import kit, prescreen

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "prescreen"
SITE_MAP = ROOT / "samples" / "site-map.yaml"
AS_OF = date(2026, 6, 15)
SOURCES = {"bundle": SAMPLES / "bundle.json", "ndjson": SAMPLES / "ndjson", "transaction": SAMPLES / "transaction.json"}
LAYOUTS = ("bundle", "ndjson")  # the same patients; transaction.json holds its own
OUTCOMES = ("met", "not-met", "unknown")

# Cases where the engine disagrees with RULES.md (reported to the lead): (source, patient) -> reason.
ENGINE_DISAGREES: dict[tuple[str, str], str] = {}


@cache
def intent() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SAMPLES / "intent.json").read_text(encoding="utf-8"))
    return doc


@cache
def read(source: str) -> tuple[dict[str, Screening], dict[str, str], ReadReport]:
    """(screenings of the screened patients, reason per not-screened patient, the read report)."""
    cmap = load_code_map(SITE_MAP)
    patients, report = assemble(read_source(str(SOURCES[source])), cmap)
    assert not report.skipped, f"{source}: resources skipped: {report.lines()}"
    options = RuleOptions(as_of=AS_OF)
    skipped = {pf.patient_id: ns.reason for pf in patients if (ns := not_screened(pf, AS_OF)) is not None}
    screened = {pf.patient_id: screen(pf, options, cmap.uln) for pf in patients if pf.patient_id not in skipped}
    return screened, skipped, report


def screenings(source: str) -> dict[str, Screening]:
    return read(source)[0]


def intended(source: str) -> dict[str, Any]:
    patients: dict[str, Any] = intent()["transaction" if source == "transaction" else "patients"]
    return patients if source != "transaction" else patients["patients"]


def _params() -> list[Any]:
    out = []
    for source in SOURCES:
        for pid in sorted(intended(source)):
            marks = []
            if (source, pid) in ENGINE_DISAGREES:
                marks.append(pytest.mark.xfail(strict=True, reason=ENGINE_DISAGREES[(source, pid)]))
            out.append(pytest.param(source, pid, marks=marks, id=f"{source}-{pid}"))
    return out


def _differences(pid: str, got: Screening, want: dict[str, Any]) -> list[str]:
    lines = []
    for cid in load_trial().criterion_ids:
        v = got.verdict(cid)
        if v.result != want["criteria"][cid]:
            lines.append(f"  {cid}: intended {want['criteria'][cid]}, engine {v.result} ({v.reason})")
    if got.status != want["status"]:
        lines.append(f"  status: intended {want['status']}, engine {got.status}")
    return lines


@pytest.mark.parametrize(("source", "pid"), _params())
def test_patient_screens_as_intended(source: str, pid: str) -> None:
    want = intended(source)[pid]
    got = screenings(source).get(pid)
    assert got is not None, f"{source}: patient {pid} not found by the engine"
    assert set(want["criteria"]) == set(load_trial().criterion_ids), f"{pid}: intent must name every criterion"
    diff = _differences(pid, got, want)
    assert not diff, f"{source} {pid} ({want['exercises']}):\n" + "\n".join(diff)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_engine_finds_exactly_the_intended_patients(source: str) -> None:
    assert sorted(screenings(source)) == sorted(intended(source))


@pytest.mark.parametrize("source", LAYOUTS)
def test_not_screened_patients_are_exactly_the_intended_ones(source: str) -> None:
    """RULES.md §2 "Who is screened": deceased on or before the as-of date, non-human, or no Patient resource."""
    _, skipped, report = read(source)
    assert skipped == {pid: p["reason"] for pid, p in intent()["notScreened"].items()}
    assert set(skipped.values()) == {"deceased", "non-human", "no-patient-resource"}
    assert not set(skipped) & set(screenings(source))


def test_transaction_request_only_entries_are_not_skipped_resources() -> None:
    _, skipped, report = read("transaction")
    assert not report.skipped and not skipped
    assert report.non_clinical == intent()["transaction"]["nonClinicalEntries"] >= 1
    doc = json.loads(SOURCES["transaction"].read_text(encoding="utf-8"))
    assert doc["type"] == "transaction" and any(set(e) == {"request"} for e in doc["entry"])


@pytest.mark.parametrize("source", LAYOUTS)
def test_identity_conflicts_are_warned_by_identity(source: str) -> None:
    """Two Patient resources share the id p55: the newest wins, and a warning names the identity only."""
    warnings = read(source)[2].warnings
    assert [w for w in warnings if "share this id" in w] == \
        ["Patient/p55: several Patient resources share this id; the newest is used"]


def test_bundle_and_ndjson_agree_verdict_for_verdict() -> None:
    bundle, ndjson = screenings("bundle"), screenings("ndjson")
    for pid in bundle:
        assert bundle[pid].verdicts == ndjson[pid].verdicts, pid
    assert read("bundle")[1] == read("ndjson")[1]


def test_every_automated_criterion_has_every_outcome() -> None:
    doc = intent()
    trial = load_trial()
    automated = [c for c in trial.criterion_ids if c not in trial.advisory]
    assert len(automated) == 14
    for cid in automated:
        seen = {p["criteria"][cid] for p in doc["patients"].values()}
        excused = set(doc["impossible"].get(cid, {}))
        assert seen | excused == set(OUTCOMES), f"{cid}: outcomes never intended: {set(OUTCOMES) - seen - excused}"
        assert not seen & excused, f"{cid}: an outcome declared impossible is intended for some patient"
    assert set(doc["impossible"]) <= set(automated)


def test_statuses_and_the_published_case() -> None:
    patients = intent()["patients"]
    statuses = [p["status"] for p in patients.values()]
    assert statuses.count("candidate") >= 4
    assert {"potential-candidate", "ineligible"} <= set(statuses)
    assert len(patients) >= 31 and patients["cao2022"]["status"] == "candidate"
    assert all(p["criteria"]["exc-investigator"] == "unknown" for p in patients.values())


def test_the_published_case_is_marked() -> None:
    """cao2022: published values say so; every other Observation of hers carries 'synthetic value'."""
    bundle = json.loads(SOURCES["bundle"].read_text(encoding="utf-8"))
    obs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
           and e["resource"]["subject"]["reference"] == "Patient/cao2022"]
    notes = {o["id"]: o["note"][0]["text"] for o in obs}
    published = {k for k, v in notes.items() if v.startswith("published value")}
    assert published == {"cao2022-marrow-blasts", "cao2022-cd7"}
    assert all(v == "synthetic value" for k, v in notes.items() if k not in published)
    values = {o["id"]: o["valueQuantity"]["value"] for o in obs if o["id"] in published}
    assert values == {"cao2022-marrow-blasts": 20.0, "cao2022-cd7": 95.6}
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "cao2022")
    born = date.fromisoformat(patient["birthDate"])
    age = AS_OF.year - born.year - ((AS_OF.month, AS_OF.day) < (born.month, born.day))
    assert (age, patient["gender"]) == (17, "female")


def test_amended_result_is_in_both_layouts_twice() -> None:
    bundle = json.loads(SOURCES["bundle"].read_text(encoding="utf-8"))
    in_bundle = [e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "p04-cd7"]
    lines = (SOURCES["ndjson"] / "Observation.ndjson").read_text(encoding="utf-8").splitlines()
    in_ndjson = [r for r in map(json.loads, lines) if r["id"] == "p04-cd7"]
    for found in (in_bundle, in_ndjson):
        assert [(r["meta"]["versionId"], r["status"]) for r in found] == [("1", "preliminary"), ("2", "amended")]


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "samplegen.prescreen", "--out", str(tmp_path)],  # noqa: S603
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    golden = {"expected.json", "expected-transaction.json"}  # written by `bridge prescreen --format json`
    committed = sorted(p.relative_to(SAMPLES) for p in SAMPLES.rglob("*") if p.is_file() and p.name not in golden)
    assert fresh == committed
    for rel in fresh:
        assert (tmp_path / rel).read_bytes() == (SAMPLES / rel).read_bytes(), f"{rel} differs after regeneration"


def test_generator_fails_loudly_on_an_invalid_resource() -> None:
    schema = kit.schema_file(None)
    bad_code = {"resourceType": "Observation", "id": "x", "status": "done", "code": {"text": "ECOG"}}
    bad_date = {"resourceType": "Patient", "id": "x", "birthDate": "2014-13-01"}
    for resource in (bad_code, bad_date):
        with pytest.raises(kit.GenerationError, match=f"{resource['resourceType']}/x fails"):
            kit.validate(resource, schema)
    kit.validate({"resourceType": "Patient", "id": "x", "birthDate": "2014"}, schema)


def test_generator_rejects_a_status_that_contradicts_its_verdicts() -> None:
    wrong = prescreen.Case("px", "test", "candidate", lambda c: None, {"inc-age": "unknown"})
    with pytest.raises(kit.GenerationError, match="contradicts"):
        prescreen.intent_of(wrong)


def test_readme_table_matches_the_intent() -> None:
    readme = (ROOT / "samples" / "README.md").read_text(encoding="utf-8")
    rows, others = {}, {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[3]
        if len(cells) == 3 and cells[0].startswith("`"):  # not screened (reason), transaction.json (status)
            others[cells[0].strip("`")] = cells[2].strip("`")
    assert rows == {pid: p["status"] for pid, p in intent()["patients"].items()}
    assert others == {**{pid: p["reason"] for pid, p in intent()["notScreened"].items()},
                      **{pid: p["status"] for pid, p in intent()["transaction"]["patients"].items()}}


def test_transaction_golden_is_the_cli_output_and_the_intent() -> None:
    """expected-transaction.json is `bridge prescreen prescreen/transaction.json --format json --strict` (exit 0: the
    request-only entry is no skipped resource), and agrees with the intent."""
    golden = json.loads((SAMPLES / "expected-transaction.json").read_text(encoding="utf-8"))
    want = intent()["transaction"]["patients"]
    assert {r["patient"].removeprefix("Patient/"): (r["status"], {k: v["result"] for k, v in r["criteria"].items()})
            for r in golden["results"]} == {pid: (p["status"], p["criteria"]) for pid, p in want.items()}
    assert golden["notScreened"] == []
    out = subprocess.run([sys.executable, "-m", "bridge", "prescreen", str(SOURCES["transaction"]), "--site-map",  # noqa: S603
                          str(SITE_MAP), "--as-of", AS_OF.isoformat(), "--format", "json", "--strict"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == golden
