"""The ``bridge assess`` document (issue #5): per patient and cohort, the published case (RULES.md §7), CIR."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.evaluate.assessment import (
    assess_patient,
    assess_patients,
    assessment_json,
    cir_subject,
    cohort,
    death_date,
    rounded,
)
from bridge.evaluate.stats import CirSubject, cir_summary
from bridge.model import Diagnosis, Fact, Infusion, PatientFacts, Quantity
from tests.unit.test_response import OPTS, condition, day, finding, infusion, obs, patient

SITE_MAP = Path(__file__).resolve().parents[2] / "samples" / "site-map.yaml"
PATIENT_KEYS = {"patient", "dayZero", "infusions", "weightKg", "cellsPerKg", "doseWithinProtocol", "doseReason",
                "baselineMarrowBlasts", "assessments", "bestResponse", "remissionDate", "relapseDate",
                "adverseEvents", "kinetics"}


# ------------------------------------------------------------------ the published case (RULES.md §7)
def _published_case_facts() -> PatientFacts:
    """Cao X et al. 2022: 17-year-old, r/r AML, marrow 20 % blasts, 5e6 cells/kg, MLFS on day 17, grade 3 CRS."""
    d0 = date(2026, 1, 10)

    def at(n: int) -> date:
        return date.fromordinal(d0.toordinal() + n)

    def q(concept: str, value: float, unit: str, n: int, ident: str) -> Fact:
        return Fact(concept, Quantity(value, unit), at(n), f"Observation/{ident}")

    pf = PatientFacts("cao", deceased=False)
    pf.facts += [q("body-weight", 50.0, "kg", -2, "wt"), q("marrow-blasts-percent", 20.0, "%", -7, "bm0"),
                 q("marrow-blasts-percent", 3.0, "%", 17, "bm17")]
    pf.facts += [q("car-t-copies", v, "{copies}/ug", n, f"qpcr{n}")
                 for n, v in ((7, 10000.0), (10, 120000.0), (14, 40000.0), (28, 10000.0), (90, 500.0))]
    pf.infusions.append(Infusion("cd7-car-t-product", d0, "completed", 250e6, "MedicationAdministration/inf"))
    pf.diagnoses.append(Diagnosis(frozenset({"crs"}), "http://hl7.org/fhir/sid/icd-10-cm", "D89.833",
                                  "Condition/crs", onset=at(2), grade=3))
    pf.activity |= {at(-7), at(0), at(17), at(90), date(2026, 12, 1)}
    return pf


EXPECTED_PATIENT: dict[str, Any] = {
    "patient": "Patient/cao", "dayZero": "2026-01-10",
    "infusions": [{"date": "2026-01-10", "cells": 250000000, "evidence": "MedicationAdministration/inf"}],
    "weightKg": 50.0, "cellsPerKg": 5000000.0, "doseWithinProtocol": True, "baselineMarrowBlasts": 20.0,
    "bestResponse": "MLFS", "remissionDate": "2026-01-27", "relapseDate": None,
    "adverseEvents": [{"term": "Cytokine release syndrome", "grade": 3, "onset": "2026-01-12",
                       "evidence": ["Condition/crs"], "gradingSystem": "ASTCT 2019"}],
}


def test_published_case_assesses_as_in_the_paper() -> None:
    pf = _published_case_facts()
    doc = assessment_json(assess_patients([pf], OPTS), [pf], OPTS)
    assert set(doc) == {"study", "asOf", "comparators", "patients", "cohort"}
    assert (doc["study"], doc["asOf"], doc["comparators"]) == ("NCT04762485", "2026-12-31", "record")
    [p] = doc["patients"]
    assert set(p) == PATIENT_KEYS
    assert {k: p[k] for k in EXPECTED_PATIENT} == EXPECTED_PATIENT
    [a] = p["assessments"]
    assert (a["date"], a["day"], a["response"], a["evidence"]) == ("2026-01-27", 17, "MLFS", ["Observation/bm17"])
    assert "CR/CRi/PR undecidable" in a["reason"]
    k = p["kinetics"]["car-t-copies"]
    assert (k["cmax"], k["tmaxDay"], k["auc0to28"], k["lastDetectedDay"]) == (120000.0, 10, 900000.0, 90)
    assert "car-t-percent" not in p["kinetics"]


def test_published_case_cohort_block() -> None:
    pf = _published_case_facts()
    block = assessment_json(assess_patients([pf], OPTS), [pf], OPTS)["cohort"]
    assert block["infused"] == 1
    assert block["orr"] == {"responders": 1, "n": 1, "rate": 1.0, "ci95": [0.025, 1.0]}
    assert block["bestResponse"] == {"CR": 0, "CRi": 0, "MLFS": 1, "PR": 0, "NR": 0, "NE": 0}
    assert block["adverseEvents"] == {"events": 1, "patients": 1,
                                      "byTermAndGrade": {"Cytokine release syndrome": {"3": 1}}}
    # censored at last follow-up 2026-12-01, 308 days after remission: 12 and 24 months are not estimable
    assert block["cir"] == {"12months": {"estimate": None, "ci95": None}, "24months": {"estimate": None, "ci95": None}}


def test_cir_is_zero_with_enough_follow_up_and_no_relapse() -> None:
    pf = _published_case_facts()
    pf.activity.add(date(2028, 3, 1))
    opts = OPTS.with_(as_of=date(2028, 6, 1))
    block = assessment_json(assess_patients([pf], opts), [pf], opts)["cohort"]
    assert block["cir"] == {"12months": {"estimate": 0.0, "ci95": [0.0, 0.0]},
                            "24months": {"estimate": 0.0, "ci95": [0.0, 0.0]}}


# ------------------------------------------------------------------ who is assessed
def test_patients_without_a_completed_infusion_are_left_out() -> None:
    infused = patient(infusion(0), obs("body-weight", 50.0, -1), pid="a")
    never = patient(obs("marrow-blasts-percent", 40.0, 5), pid="b")
    failed = patient(infusion(0, status="not-done"), pid="c")
    later = patient(infusion(400), pid="d")  # after the as-of date
    pats = [infused, never, failed, later]
    assert assess_patient(never, OPTS) is None
    doc = assessment_json(assess_patients(pats, OPTS), pats, OPTS)
    assert [p["patient"] for p in doc["patients"]] == ["Patient/a"]
    assert doc["cohort"]["infused"] == 1 and doc["cohort"]["orr"]["responders"] == 0
    assert doc["cohort"]["bestResponse"]["NE"] == 1


def test_empty_cohort_has_no_rate_and_no_cir() -> None:
    block = cohort([], [], OPTS)
    assert block["orr"] == {"responders": 0, "n": 0, "rate": None, "ci95": None}
    assert block["cir"]["12months"] == {"estimate": None, "ci95": None}


# ------------------------------------------------------------------ CIR subjects
def _remission_patient(pid: str, *extra: Fact | Diagnosis, deceased: bool = False,
                       deceased_date: date | None = None, follow_up: int = 500) -> PatientFacts:
    pf = patient(infusion(0), obs("marrow-blasts-percent", 2.0, 20), *extra, pid=pid, deceased=deceased,
                 deceased_date=deceased_date)
    pf.activity.add(day(follow_up))
    return pf


def test_cir_with_a_death_competing() -> None:
    opts = OPTS.with_(as_of=day(600))
    relapsed = _remission_patient("r", obs("marrow-blasts-percent", 30.0, 120))
    died = _remission_patient("d", deceased=True, deceased_date=day(70))
    followed = _remission_patient("c", follow_up=520)
    pats = [relapsed, died, followed]
    found = assess_patients(pats, opts)
    subjects = [cir_subject(pa, pf, opts) for pa, pf in zip(found, pats, strict=True)]
    assert subjects == [CirSubject(day(20), day(120), "relapse"), CirSubject(day(20), day(70), "death"),
                        CirSubject(day(20), day(520), "censored")]
    cir = cohort(found, pats, opts)["cir"]
    # death at day 50 of 3 at risk, then a relapse at day 100 of 2 at risk: F = 2/3 * 1/2
    assert cir == cir_summary(s for s in subjects if s is not None)
    assert cir["12months"]["estimate"] == pytest.approx(1 / 3)


def test_deceased_without_a_date_is_death_at_last_follow_up() -> None:
    pf = _remission_patient("x", deceased=True, follow_up=200)
    assert death_date(pf, day(600)) == day(200)
    pa = assess_patient(pf, OPTS)
    assert pa is not None and cir_subject(pa, pf, OPTS) == CirSubject(day(20), day(200), "death")
    later = _remission_patient("y", deceased_date=day(300))
    assert death_date(later, day(250)) is None  # a death after the as-of date is not known yet


def test_relapse_after_transplant_counts_by_default_or_is_censored() -> None:
    hsct = condition("hsct", 60, code="Z94.84")
    pf = _remission_patient("t", hsct, obs("marrow-blasts-percent", 30.0, 120))
    pa = assess_patient(pf, OPTS)
    assert pa is not None and pa.transplant == day(60) and pa.response.relapse_date == day(120)
    assert cir_subject(pa, pf, OPTS) == CirSubject(day(20), day(120), "relapse")
    censor = OPTS.with_(relapse_after_transplant_counts=False)
    assert cir_subject(pa, pf, censor) == CirSubject(day(20), day(60), "censored")


def test_no_remission_no_cir_subject() -> None:
    pf = patient(infusion(0), obs("marrow-blasts-percent", 40.0, 28))
    pa = assess_patient(pf, OPTS)
    assert pa is not None and cir_subject(pa, pf, OPTS) is None


# ------------------------------------------------------------------ AEs in the cohort
def test_cohort_counts_events_and_patients_by_term_and_grade() -> None:
    a = patient(infusion(0), condition("crs", 1, grade=2), obs("anc", 0.4, 5), pid="a")
    b = patient(infusion(0), condition("crs", 2, grade=2), condition("crs", 3, code="D89.839"),
                condition("icans", 4, grade=1, code="G92.01"), pid="b")
    c = patient(infusion(0), obs("body-temperature", 36.9, 3), pid="c")
    pats = [a, b, c]
    found = assess_patients(pats, OPTS)
    block = cohort(found, pats, OPTS)["adverseEvents"]
    assert block == {"events": 4, "patients": 2, "byTermAndGrade": {
        "Cytokine release syndrome": {"2": 2},
        "Immune effector cell-associated neurotoxicity syndrome": {"1": 1},
        "Neutrophil count decreased": {"4": 1}}}
    assert [pa.worst_grade("Cytokine release syndrome") for pa in found] == [2, 2, 0]


def test_as_of_cuts_every_part() -> None:
    pf = patient(infusion(0), obs("marrow-blasts-percent", 2.0, 20), obs("marrow-blasts-percent", 40.0, 90),
                 obs("alt", 500.0, 60), finding("vasopressors", 1, 50), obs("car-t-copies", 100.0, 80))
    pa = assess_patient(pf, OPTS.with_(as_of=day(45)))
    assert pa is not None
    assert (pa.response.best_response, pa.response.relapse_date, pa.adverse_events, dict(pa.kinetics)) == (
        "MLFS", None, (), {})


def test_rounding_is_stable() -> None:
    assert rounded({"a": [0.025000000000000022, 1.0], "b": (1 / 3,), "c": 3, "d": None}) == {
        "a": [0.025, 1.0], "b": [0.333333], "c": 3, "d": None}


# ------------------------------------------------------------------ the command, from a FHIR bundle
_SECURITY = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST"}]}


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    resource["meta"] = _SECURITY
    return {"fullUrl": f"http://hospital.example.org/fhir/{resource['resourceType']}/{resource['id']}",
            "resource": resource}


def _observation(ident: str, system: str, code: str, when: str, value: float, unit: str) -> dict[str, Any]:
    return _entry({"resourceType": "Observation", "id": ident, "status": "final",
                   "code": {"coding": [{"system": system, "code": code}]}, "subject": {"reference": "Patient/cao"},
                   "effectiveDateTime": when,
                   "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                                     "code": unit}})


def _bundle() -> dict[str, Any]:
    loinc, lab = "http://loinc.org", "http://hospital.example.org/lab"
    entries = [
        _entry({"resourceType": "Patient", "id": "cao", "gender": "female", "birthDate": "2008-05-01"}),
        _entry({"resourceType": "MedicationAdministration", "id": "inf", "status": "completed",
                "medicationCodeableConcept": {"coding": [{"system": "http://hospital.example.org/pharmacy",
                                                          "code": "CART-CD7"}]},
                "subject": {"reference": "Patient/cao"}, "effectiveDateTime": "2026-01-10T10:00:00+08:00",
                "dosage": {"dose": {"value": 250000000, "unit": "cells", "system": "http://unitsofmeasure.org",
                                    "code": "{cells}"}}}),
        _entry({"resourceType": "Condition", "id": "crs",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                               "code": "resolved"}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D89.833"}]},
                "subject": {"reference": "Patient/cao"}, "onsetDateTime": "2026-01-12T21:00:00+08:00"}),
        _observation("wt", loinc, "29463-7", "2026-01-08T09:00:00+08:00", 50, "kg"),
        _observation("bm0", loinc, "11150-0", "2026-01-03T09:00:00+08:00", 20, "%"),
        _observation("bm17", loinc, "11150-0", "2026-01-27T08:00:00+08:00", 3, "%"),
    ]
    entries += [_observation(f"qpcr{n}", lab, "QPCR-CART", f"2026-{m:02d}-{d:02d}T08:00:00+08:00", v, "{copies}/ug")
                for n, m, d, v in ((7, 1, 17, 10000), (10, 1, 20, 120000), (14, 1, 24, 40000), (28, 2, 7, 10000),
                                   (90, 4, 10, 500))]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def test_command_json_from_a_bundle(tmp_path: Path) -> None:
    source = tmp_path / "bundle.json"
    source.write_text(json.dumps(_bundle()), encoding="utf-8")
    result = CliRunner().invoke(app, ["assess", str(source), "--as-of", "2026-12-31", "--site-map", str(SITE_MAP),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    [p] = doc["patients"]
    assert {k: p[k] for k in EXPECTED_PATIENT} == EXPECTED_PATIENT
    assert [(a["day"], a["response"]) for a in p["assessments"]] == [(17, "MLFS")]
    assert p["kinetics"]["car-t-copies"]["auc0to28"] == 900000.0
    assert doc["cohort"]["orr"]["ci95"] == [0.025, 1.0]


def test_command_table_and_exit_codes(tmp_path: Path) -> None:
    source = tmp_path / "bundle.json"
    source.write_text(json.dumps(_bundle()), encoding="utf-8")
    result = CliRunner().invoke(app, ["assess", str(source), "--as-of", "2026-12-31", "--site-map", str(SITE_MAP),
                                      "--comparators", "eln"])
    assert result.exit_code == 0, result.output
    assert "Patient/cao" in result.stdout and "MLFS" in result.stdout and "G3" in result.stdout
    assert "1 infused (0 without infusion left out): ORR 1/1 = 100 %" in result.stdout
    missing = CliRunner().invoke(app, ["assess", str(tmp_path / "nope.json"), "--as-of", "2026-12-31"])
    assert missing.exit_code == 3
