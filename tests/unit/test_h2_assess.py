"""Issue #12 for ``bridge assess``: not-usable values through the normalize path, one failing patient never loses
the others, deceased patients are still assessed, the CIR censors where the relapse becomes undecidable."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.evaluate import assessment
from bridge.evaluate.assessment import assess_patient, assess_patients, cir_subject
from bridge.evaluate.grading import CRS_TERM
from bridge.evaluate.stats import CirSubject
from bridge.model import Failed, PatientFacts
from tests.unit.test_response import OPTS, day, infusion, obs, patient

SITE_MAP = Path(__file__).resolve().parents[2] / "samples" / "site-map.yaml"
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
LAB, ICU, PHARMACY = "http://hospital.example.org/lab", "http://hospital.example.org/icu", \
    "http://hospital.example.org/pharmacy"
D0 = date(2026, 1, 10)


def _at(n: int, hour: int = 8) -> str:
    return f"{date.fromordinal(D0.toordinal() + n).isoformat()}T{hour:02d}:00:00+08:00"


def _obs(pid: str, ident: str, system: str, code: str, n: int, value: float | None, unit: str,
         high: float | None = None, integer: bool = False) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Observation", "id": ident, "status": "final",
                           "code": {"coding": [{"system": system, "code": code}]},
                           "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": _at(n)}
    if integer:
        res["valueInteger"] = int(value or 0)
    else:
        res["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if high is not None:
        res["referenceRange"] = [{"high": {"value": high, "unit": unit, "system": UCUM, "code": unit}}]
    return res


def _infusion(pid: str, ident: str, n: int, cells: float, status: str = "completed") -> dict[str, Any]:
    return {"resourceType": "MedicationAdministration", "id": ident, "status": status,
            "medicationCodeableConcept": {"coding": [{"system": PHARMACY, "code": "CART-CD7"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": _at(n, 10),
            "dosage": {"dose": {"value": cells, "unit": "cells", "system": UCUM, "code": "{cells}"}}}


def _bundle() -> dict[str, Any]:
    a, b = "nu-a", "nu-b"
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": a, "gender": "female", "birthDate": "2008-05-01",
         "deceasedDateTime": "2026-09-01"},
        _infusion(a, "a-inf0", 0, 250e6), _infusion(a, "a-inf1", 1, 50e6, status="stopped"),
        _obs(a, "a-wt", LOINC, "29463-7", -2, 50, "kg"),
        _obs(a, "a-bm0", LOINC, "11150-0", -7, 20, "%"),
        _obs(a, "a-bm17", LOINC, "11150-0", 17, 3, "%"),
        _obs(a, "a-anc17", LOINC, "751-8", 17, 5000, "10*9/L"),  # implausible (> 1000): not usable
        _obs(a, "a-plt17", LOINC, "777-3", 17, 150, "10*9/L"),
        _obs(a, "a-bb17", LOINC, "709-6", 17, 0, "%"),
        {"resourceType": "Condition", "id": "a-crs", "subject": {"reference": f"Patient/{a}"},
         "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D89.839"}]},
         "onsetDateTime": _at(2, 21)},
        _obs(a, "a-temp2", LOINC, "8310-5", 2, 39.0, "Cel"),
        _obs(a, "a-press2", ICU, "VASOPRESSORS", 2, 1, "", integer=True),
        _obs(a, "a-temp3", LOINC, "8310-5", 3, 60.0, "Cel"),  # implausible: not a sign
        _obs(a, "a-press4", ICU, "VASOPRESSORS", 4, 12, "", integer=True),  # outside 0-10: not a sign
        _obs(a, "a-alt0", LOINC, "1742-6", -7, 30, "U/L", high=40),
        _obs(a, "a-alt7", LOINC, "1742-6", 7, 160, "U/L", high=0),  # reference high 0: the default ULN 40
        _obs(a, "a-alt9", LOINC, "1742-6", 9, -20, "U/L", high=40),  # implausible: no AE, no end of one
        _obs(a, "a-alt14", LOINC, "1742-6", 14, 20, "U/L", high=40),
        {"resourceType": "Patient", "id": b, "gender": "male", "birthDate": "1990-01-01"},
        _infusion(b, "b-inf0", 0, -5e6),  # not usable: total unknown
        _obs(b, "b-wt-old", LOINC, "29463-7", -30, 70, "kg"),
        _obs(b, "b-wt", LOINC, "29463-7", -1, 0, "kg"),  # implausible: the per-kg dose is unknown
    ]
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"http://hospital.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r}
        for r in resources]}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(_bundle()), encoding="utf-8")
    return path


def _run(bundle: Path) -> Any:
    return CliRunner().invoke(app, ["assess", str(bundle), "--as-of", "2026-12-31", "--site-map", str(SITE_MAP),
                                    "--format", "json"])


def test_not_usable_values_through_the_normalize_path(bundle: Path) -> None:
    result = _run(bundle)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    a, b = (next(p for p in doc["patients"] if p["patient"] == f"Patient/{pid}") for pid in ("nu-a", "nu-b"))
    # dose: the stopped infusion is left out and the protocol check is unknown
    assert [i["evidence"] for i in a["infusions"]] == ["MedicationAdministration/a-inf0"]
    assert (a["cellsPerKg"], a["doseWithinProtocol"]) == (5e6, None)
    # response: the implausible ANC makes CR undecidable -> MLFS fallback, naming it
    [assessed] = a["assessments"]
    assert assessed["response"] == "MLFS" and "Observation/a-anc17" in assessed["reason"]
    assert "CR/CRi/PR undecidable" in assessed["reason"]
    # AEs: D89.839 takes the grade of the signs of its day (fever + one vasopressor = 3), implausible signs
    # add nothing; ALT graded against the default ULN; the implausible ALT neither grades nor ends the episode
    crs = [e for e in a["adverseEvents"] if e["term"] == CRS_TERM]
    assert [(e["grade"], e["onset"]) for e in crs] == [(3, "2026-01-12")]
    assert crs[0]["evidence"] == ["Condition/a-crs", "Observation/a-press2", "Observation/a-temp2"]
    alt = [e for e in a["adverseEvents"] if e["term"] == "Alanine aminotransferase increased"]
    assert [(e["grade"], e["evidence"]) for e in alt] == [(2, ["Observation/a-alt7"])]
    # a deceased patient is still assessed (death ends the CIR follow-up)
    assert a["bestResponse"] == "MLFS"
    # patient b: negative cells and an implausible latest weight: nothing per kg, no older weight instead
    assert (b["weightKg"], b["cellsPerKg"], b["doseWithinProtocol"]) == (None, None, None)
    assert b["infusions"] == [{"date": "2026-01-10", "cells": None, "evidence": "MedicationAdministration/b-inf0"}]
    assert "5000" not in result.stderr and "-20" not in result.stderr  # values never on stderr


def test_one_patient_failing_does_not_lose_the_others(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = assessment.assess_response

    def boom(pf: PatientFacts, *args: Any) -> Any:
        if pf.patient_id == "nu-b":
            raise ZeroDivisionError("value 0.0 leaked")
        return real(pf, *args)

    monkeypatch.setattr(assessment, "assess_response", boom)
    result = _run(bundle)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [p["patient"] for p in doc["patients"]] == ["Patient/nu-a"] and doc["cohort"]["infused"] == 1
    assert "Patient/nu-b: ZeroDivisionError" in result.stderr and "leaked" not in result.stderr
    table = CliRunner().invoke(app, ["assess", str(bundle), "--as-of", "2026-12-31", "--site-map", str(SITE_MAP)])
    assert table.exit_code == 1 and "Patient/nu-a" in table.stdout and "Patient/nu-b" not in table.stdout
    assert "1 infused (0 without infusion left out)" in table.stdout


def test_assess_patients_records_failures_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = patient(infusion(0), pid="good"), patient(infusion(0), pid="bad")

    def boom(pf: PatientFacts, *args: Any) -> Any:
        if pf.patient_id == "bad":
            raise KeyError("x")
        return real(pf, *args)

    real = assessment.course
    monkeypatch.setattr(assessment, "course", boom)
    failures: list[Failed] = []
    found = assess_patients([bad, good], OPTS, failures=failures)
    assert [pa.patient for pa in found] == ["Patient/good"]
    assert failures == [Failed("Patient/bad", "KeyError", "assessment")]
    with pytest.raises(KeyError):
        assess_patients([bad, good], OPTS)


def test_a_deceased_patient_is_assessed_and_death_ends_follow_up() -> None:
    pf = patient(infusion(0), obs("marrow-blasts-percent", 2.0, 20), pid="dead", deceased=True,
                 deceased_date=day(70))
    pf.activity.add(day(300))
    pa = assess_patient(pf, OPTS)
    assert pa is not None and cir_subject(pa, pf, OPTS) == CirSubject(day(20), day(70), "death")


def test_the_cir_censors_where_the_relapse_becomes_undecidable() -> None:
    bad = obs("marrow-blasts-percent", None, 60)
    pf = patient(infusion(0), obs("marrow-blasts-percent", 2.0, 20), bad, obs("marrow-blasts-percent", 30.0, 90))
    pf.activity.add(day(300))
    pa = assess_patient(pf, OPTS)
    assert pa is not None and pa.response.relapse_date is None
    assert cir_subject(pa, pf, OPTS) == CirSubject(day(20), day(60), "censored")
    # a death before that date still competes
    dead = patient(infusion(0), obs("marrow-blasts-percent", 2.0, 20), bad, deceased=True, deceased_date=day(40))
    pa = assess_patient(dead, OPTS)
    assert pa is not None and cir_subject(pa, dead, OPTS) == CirSubject(day(20), day(40), "death")
