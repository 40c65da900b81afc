#!/usr/bin/env python3
"""Generate the synthetic treated cohort in ``samples/treated/`` (issue #5).

Writes, deterministically (no randomness; every value is written out below):

- ``bundle.json``: one FHIR R4 Bundle (type ``collection``) with every patient's Patient, Encounter,
  Condition, Observation and MedicationAdministration resources;
- ``ndjson/<Type>.ndjson``: the same resources in the Bulk Data layout;
- ``intent.json``: per patient, the assessment *intended* by the author from RULES.md §4-§5 (as of
  2026-12-31, default options): day 0, infusions, dose, baseline marrow, each response assessment, best
  response, remission and relapse dates, the adverse events deliberately put in, CAR-T kinetics and the
  pre-screen status on the screening day. It is hand-written in ``CASES`` — never produced by the engine.
  ``check_intent`` only guards it against slips (a day that does not match its date, a dose that does not
  add up, a response that contradicts its own numbers as RULES.md §4 reads them).

Every patient is synthetic. ``cao2022`` is the published case of RULES.md §7 (Cao X et al., Exp Hematol Oncol
2022;11:67): age, sex, diagnosis, marrow blasts, CD7 expression, total dose, MLFS on day 17, grade 3 CRS and
no ICANS are published; every other value of hers carries the Observation.note "synthetic value". Her Patient
resource is the same as in ``samples/prescreen/``; her other resources have ``cao2022-tx-`` ids so that both
datasets can be loaded into one server. Every resource carries the ``HTEST`` (test health data) tag.

Design rules that keep the intent exact (see samples/treated/README.md):

- post-infusion ANC, platelets, haemoglobin, AST, ALT, bilirubin and creatinine are inside their reference
  ranges unless a lab AE is intended, and every intended lab AE is closed by a normal result (one episode);
- no lab result is dated on an infusion day; the screening panel (day -14) is the baseline;
- laboratory draws are at 07:30 local time (+08:00, the previous day in UTC): day numbers use the date as
  written (RULES.md §4), so an engine that shifts to UTC gets them wrong;
- no body temperature exists except for the patient whose CRS is derived from vital signs.

Resources are built by ``samplegen.chart.Chart``. Each is checked against the R4B model
(``bridge.fhirmodels.parse_resource``) and the official R4 JSON Schema (Draft 6, ``$BRIDGE_FHIR_SCHEMA`` or
``<repo>/../shared/fhir-data/hl7-fhir-r4-schema/fhir.schema.json``); any failure stops with a non-zero exit.

Usage, from the repository root: ``python -m samplegen.treated [--out DIR] [--schema FILE]``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bridge.fhirmodels import parse_resource
from samplegen.chart import Chart
from samplegen.kit import (
    ABSENT,
    AMBULATORY,
    CART_CD7,
    CLINICAL,
    ICD10,
    ICD10CM,
    INPATIENT,
    LAB,
    LOINC,
    NEG_LA,
    PRESENT,
    TZ,
    GenerationError,
    Json,
    bundle,
    coding,
    concept,
    qty,
    schema_file,
    validate,
    write,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "samples" / "treated"
AS_OF = date(2026, 12, 31)
TYPES = ("Patient", "Condition", "Encounter", "Observation", "MedicationAdministration", "Consent")
# research Consent withdrawn (inactive) before the registry export: shows the registry's consent gate
WITHDRAWN = frozenset({"t07"})

NEURO = "http://hospital.example.org/neuro"
ICU = "http://hospital.example.org/icu"

PUBLISHED = "published value (Cao X et al., Exp Hematol Oncol 2022;11:67)"

# AE terms (RULES.md §5; CTCAE v5.0 spelling) and grading systems
NEUTROPENIA, THROMBOCYTOPENIA, ANEMIA = "Neutrophil count decreased", "Platelet count decreased", "Anemia"
AST_UP, ALT_UP = "Aspartate aminotransferase increased", "Alanine aminotransferase increased"
BILI_UP, CREAT_UP = "Blood bilirubin increased", "Creatinine increased"
CRS, ICANS = "Cytokine release syndrome", "Immune effector cell-associated neurotoxicity syndrome"
CTCAE, ASTCT = "CTCAE v5.0", "ASTCT 2019"
RANK = ("CR", "CRi", "MLFS", "PR", "NR", "NE")  # best first (RULES.md §4)
REMISSION = ("CR", "CRi", "MLFS")
DOSE_RANGE = (0.5e6, 10e6)
COURSE_DAYS = 14


# ------------------------------------------------------------------------------------------ lab catalogue
@dataclass(frozen=True)
class Lab:
    """A laboratory test: its LOINC (or site) coding and its reference range per unit."""

    code: Json
    ranges: dict[str, tuple[float, float] | None]
    category: str = "laboratory"


LABS: dict[str, Lab] = {
    "anc": Lab(coding(LOINC, "751-8", "Neutrophils [#/volume] in Blood by Automated count"),
               {"10*9/L": (1.8, 7.7), "10*3/uL": (1.8, 7.7), "/uL": (1800, 7700)}),
    "plt": Lab(coding(LOINC, "777-3", "Platelets [#/volume] in Blood by Automated count"),
               {"10*9/L": (150, 400), "10*3/uL": (150, 400), "/uL": (150000, 400000)}),
    "hb": Lab(coding(LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood"), {"g/dL": (12.0, 16.0)}),
    "ast": Lab(coding(LOINC, "1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
               {"U/L": (8, 40)}),
    "alt": Lab(coding(LOINC, "1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
               {"U/L": (7, 40)}),
    "bili": Lab(coding(LOINC, "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma"), {"mg/dL": (0.2, 1.2)}),
    "bili-molar": Lab(coding(LOINC, "14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma"),
                      {"umol/L": (3.4, 20.5)}),
    "creat": Lab(coding(LOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma"), {"mg/dL": (0.5, 1.1)}),
    "marrow": Lab(coding(LOINC, "11150-0", "Blasts/100 leukocytes in Bone marrow"), {"%": None}),
    "blasts": Lab(coding(LOINC, "26446-5", "Blasts/100 leukocytes in Blood"), {"%": None}),
    "blasts-manual": Lab(coding(LOINC, "709-6", "Blasts/100 leukocytes in Blood by Manual count"), {"%": None}),
    "blasts-count": Lab(coding(LOINC, "30376-8", "Blasts [#/volume] in Blood"), {"/uL": None}),
    "cd7": Lab(coding(LAB, "FC-CD7", "CD7+ % of leukemic blasts (flow)"), {"%": None}),
    "mrd": Lab(coding(LAB, "MRD-FC", "MRD by flow, % of cells"), {"%": None}),
    "qpcr": Lab(coding(LAB, "QPCR-CART", "CAR transgene copies/ug gDNA"), {"{copies}/ug": None}),
    "fc-cart": Lab(coding(LAB, "FC-CART", "CAR+ % of CD3+ cells"), {"%": None}),
    "lvef": Lab(coding(LOINC, "10230-1", "Left ventricular Ejection fraction"), {"%": None}, "imaging"),
    "weight": Lab(coding(LOINC, "29463-7", "Body weight"), {"kg": None, "g": None, "[lb_av]": None}, "vital-signs"),
    "temp": Lab(coding(LOINC, "8310-5", "Body temperature"), {"Cel": None}, "vital-signs"),
    "o2-flow": Lab(coding(ICU, "O2-FLOW", "Oxygen flow"), {"L/min": None}, "therapy"),
}
UNIT_TEXT = {"10*9/L": "10^9/L", "10*3/uL": "10^3/uL", "{copies}/ug": "copies/ug", "[lb_av]": "lb", "Cel": "°C",
             "umol/L": "µmol/L"}

# Normal post-infusion values (all inside the reference ranges above). Baseline chemistry equals these.
NORMAL_CHEM = {"ast": 24.0, "alt": 20.0, "bili": 0.6, "bili-molar": 10.0, "creat": 0.8}
BASELINE_CHEM = {"ast": 26.0, "alt": 22.0, "bili": 0.7, "bili-molar": 12.0, "creat": 0.8}


def normal_cbc(day: int) -> tuple[float, float, float]:
    """A normal (ANC 10*9/L, platelets 10*9/L, Hb g/dL) triple that varies a little with the day."""
    return round(2.6 + (day % 5) * 0.1, 2), float(190 + (day % 7) * 5), round(12.6 + (day % 4) * 0.1, 2)


# ------------------------------------------------------------------------------------------ the chart's conventions
# Ids are ``<prefix>-<suffix>`` (the prefix is the patient id, or ``cao2022-tx``); ``day`` counts from day 0, the
# chart's anchor; results are drawn at 07:30 local time unless said otherwise and issued at 17:00.
def encounter(c: Chart, suffix: str, klass: str, start: int, end: int, reason: str) -> None:
    c.encounter(c.rid(suffix), {"AMB": AMBULATORY, "IMP": INPATIENT}[klass], c.at(start, 9),
                c.at(end, 11 if start == end else 16), reason=reason)


def condition(c: Chart, suffix: str, code: Json, onset: int, *, clinical: str | None = "active",
              verification: str = "confirmed", abated: int | None = None, note: str | None = None) -> None:
    """Onset (also the recorded date) and abatement at 14:00."""
    c.condition(c.rid(suffix), code, clinical=clinical, verification=verification, onset=c.at(onset, 14),
                abated=None if abated is None else c.at(abated, 14), recorded=c.at(onset, 14), note=note)


def observation(c: Chart, suffix: str, code: Json, value: Json, day: int, *, category: str, status: str = "final",
                ranges: list[Json] | None = None, note: str | None = None, hour: int = 7, minute: int = 30) -> None:
    c.observation(c.rid(suffix), code, value, c.at(day, hour, minute), status=status, category=category,
                  issued=c.at(day, 17), ranges=ranges, note=note)


def infusion(c: Chart, suffix: str, day: int, value: float, unit: str, status: str = "completed",
             note: str | None = None) -> None:
    """An infusion of the CAR-T product at 10:00; a not-done one says why."""
    dose = qty(value, unit, "10^6 cells" if unit.startswith("10*6") else "cells")
    c.medication(c.rid(suffix), concept(CART_CD7, text="Humanized CD7 CAR-T cells"), c.at(day, 10),
                 {"text": "intravenous infusion", "dose": dose}, status=status,
                 reason="product not released" if status == "not-done" else None, note=note)


def consent(c: Chart, day: int, active: bool) -> None:
    """A research Consent (registry packaging is gated on an active one, docs/registry.md)."""
    c.consent(c.rid("consent"), c.at(day, 10), active=active)


def day_tag(day: int) -> str:
    return f"d{day}" if day >= 0 else f"dm{-day}"


# ------------------------------------------------------------------------------------------ observation shapes
def lab(c: Chart, kind: str, value: float, day: int, unit: str | None = None, *, comparator: str | None = None,
        suffix: str | None = None, **kw: Any) -> None:
    """A quantitative result of ``LABS[kind]`` with its reference range (when the lab has one)."""
    spec = LABS[kind]
    unit = unit or next(iter(spec.ranges))
    if unit not in spec.ranges:
        raise GenerationError(f"{c.pid}: unit {unit} not declared for {kind}")
    rng = spec.ranges[unit]
    ranges = [{"low": qty(rng[0], unit, UNIT_TEXT.get(unit)), "high": qty(rng[1], unit, UNIT_TEXT.get(unit))}] \
        if rng else None
    observation(c, suffix or f"{kind}-{day_tag(day)}", concept(spec.code),
                  {"valueQuantity": qty(value, unit, UNIT_TEXT.get(unit), comparator)}, day,
                  category=spec.category, ranges=ranges, **kw)


def answer(c: Chart, suffix: str, code: Json, value: Json, day: int, category: str = "laboratory") -> None:
    observation(c, suffix, concept(code), {"valueCodeableConcept": concept(value)}, day, category=category)


def score(c: Chart, suffix: str, code: Json, value: int, day: int, category: str, hour: int = 14) -> None:
    observation(c, suffix, concept(code), {"valueInteger": value}, day, category=category, hour=hour, minute=0)


UNIT_SCALE = {"10*9/L": 1.0, "10*3/uL": 1.0, "/uL": 1000.0}


def cbc(c: Chart, day: int, anc: float, plt: float, hb: float, anc_unit: str = "10*9/L",
        plt_unit: str = "10*9/L") -> None:
    """ANC, platelets (given in 10*9/L, written in the chosen units) and haemoglobin (g/dL) on one morning."""
    lab(c, "anc", round(anc * UNIT_SCALE[anc_unit], 3), day, anc_unit)
    lab(c, "plt", round(plt * UNIT_SCALE[plt_unit], 3), day, plt_unit)
    lab(c, "hb", hb, day)


def cbc_series(c: Chart, days: tuple[int, ...], special: dict[int, tuple[float, float, float]] | None = None,
               anc_unit: str = "10*9/L", plt_unit: str = "10*9/L") -> None:
    """CBC on each day: the ``special`` values where given, else ``normal_cbc``."""
    special = special or {}
    for day in days:
        cbc(c, day, *special.get(day, normal_cbc(day)), anc_unit=anc_unit, plt_unit=plt_unit)


def chem(c: Chart, day: int, values: dict[str, float] | None = None, molar_bili: bool = False) -> None:
    """AST, ALT, total bilirubin (mg/dL, or umol/L with ``molar_bili``) and creatinine on one morning."""
    values = values or {}
    base = BASELINE_CHEM if day < 0 else NORMAL_CHEM
    for kind in ("ast", "alt", "bili-molar" if molar_bili else "bili", "creat"):
        lab(c, kind, values.get(kind, base[kind]), day)


def chem_series(c: Chart, days: tuple[int, ...], special: dict[int, dict[str, float]] | None = None,
                molar_bili: bool = False) -> None:
    for day in days:
        chem(c, day, (special or {}).get(day), molar_bili)


def marrow(c: Chart, day: int, blasts: float, *, hour: int = 9, minute: int = 30, note: str | None = None) -> None:
    lab(c, "marrow", blasts, day, hour=hour, minute=minute, note=note)


def blood_blasts(c: Chart, day: int, value: float, kind: str = "blasts") -> None:
    lab(c, kind, value, day)


def assess(c: Chart, day: int, marrow_blasts: float, anc: float, plt: float, *, hb: float | None = None,
           blasts: float = 0.0, blasts_kind: str = "blasts", marrow_hour: int = 9, anc_unit: str = "10*9/L",
           plt_unit: str = "10*9/L") -> None:
    """One response assessment: the marrow, blood blasts and the CBC of the same morning (distance 0)."""
    marrow(c, day, marrow_blasts, hour=marrow_hour, minute=30)
    blood_blasts(c, day, blasts, blasts_kind)
    cbc(c, day, anc, plt, hb if hb is not None else normal_cbc(day)[2], anc_unit, plt_unit)


def finding(c: Chart, suffix: str, code: Json, present: bool, day: int, category: str = "laboratory") -> None:
    answer(c, suffix, code, PRESENT if present else ABSENT, day, category)


# ------------------------------------------------------------------------------------------ kinetics
QPCR_PROFILE: tuple[tuple[int, float], ...] = (
    (0, 120), (4, 8500), (7, 45000), (10, 98000), (14, 62000), (21, 21000), (28, 9800), (60, 2100), (90, 640))
FC_PROFILE: tuple[tuple[int, float], ...] = ((7, 2.1), (10, 8.4), (14, 12.5), (21, 6.0), (28, 3.2))


def qpcr(c: Chart, factor: float, last_day: int,
         profile: tuple[tuple[int, float], ...] = QPCR_PROFILE) -> None:
    """CAR transgene copies/ug gDNA: the profile scaled by ``factor`` (whole copies), up to ``last_day``."""
    for day, value in profile:
        if day <= last_day:
            lab(c, "qpcr", float(round(value * factor)), day, hour=7, minute=0)


def fc_cart(c: Chart, factor: float, extra: tuple[tuple[int, float], ...] = ()) -> None:
    for day, value in FC_PROFILE + extra:
        lab(c, "fc-cart", round(value * factor, 3), day, hour=7, minute=0)


# ------------------------------------------------------------------------------------------ standard parts
def icd(system: str, code: str, display: str) -> Json:
    return concept(coding(system, code, display))


AML_CM = (ICD10CM, "C92.02", "Acute myeloblastic leukemia, in relapse")
ALL_CM = (ICD10CM, "C91.02", "Acute lymphoblastic leukemia, in relapse")
MPAL_CM = (ICD10CM, "C95.02", "Acute leukemia of unspecified cell type, in relapse")
AML_CN = (ICD10, "C92.000", "急性髓系白血病")  # Chinese national clinical ICD-10; relapse from clinicalStatus


def screening(c: Chart, *, birth: str, sex: str, dx: tuple[str, str, str], marrow_blasts: float, cd7: float,
              published: bool = False, deceased: str | None = None) -> None:
    """Patient, diagnosis, the screening visit (day -14, the pre-infusion Encounter) and its work-up.

    The work-up is complete and normal where the pre-screen looks (RULES.md §2): ECOG 1, LVEF 60 %, AST, ALT,
    bilirubin, negative hCG (women), HBsAg, HCV antibody and HIV; the blood counts are those of active
    leukaemia (pre-infusion, so not adverse events).
    """
    c.patient(birth, sex, deceased=deceased)
    relapse = dx[0] == ICD10
    condition(c, "dx", icd(*dx), -400, clinical="relapse" if relapse else "active",
                note="published: relapsed/refractory AML (Cao X et al., Exp Hematol Oncol 2022;11:67)"
                if published else None)
    encounter(c, "screening", "AMB", -14, -14, "CD7 CAR-T trial screening")
    note = PUBLISHED if published else None
    marrow(c, -14, marrow_blasts, note=note)
    lab(c, "cd7", cd7, -14, hour=9, minute=30, note=note)
    blood_blasts(c, -14, 8.0)
    cbc(c, -14, 0.9, 70.0, 9.8)
    chem(c, -14)
    score(c, "ecog-dm14", coding(LOINC, "89247-1", "ECOG Performance Status score"), 1, -14, "exam", hour=10)
    lab(c, "lvef", 60.0, -14, hour=11, minute=0)
    if sex == "female":
        answer(c, "hcg-dm14", coding(LOINC, "2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine"),
               NEG_LA, -14)
    answer(c, "hbsag-dm14", coding(LOINC, "5196-1", "Hepatitis B virus surface Ag [Presence] in Serum"), NEG_LA, -14)
    answer(c, "hcv-dm14", coding(LOINC, "16128-1", "Hepatitis C virus Ab [Presence] in Serum"), NEG_LA, -14)
    answer(c, "hiv-dm14", coding(LOINC, "56888-1", "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by "
                                                 "Immunoassay"), NEG_LA, -14)


def admission(c: Chart, weight: float, unit: str = "kg", discharge: int = 21) -> None:
    """Admission for lymphodepletion and infusion (day -6 to ``discharge``); weight on day -7."""
    lab(c, "weight", weight, -7, unit, hour=8, minute=0)
    encounter(c, "admission", "IMP", -6, discharge, "lymphodepletion and CD7 CAR-T infusion")


def follow_up(c: Chart, day: int) -> None:
    encounter(c, f"visit-{day_tag(day)}", "AMB", day, day, "follow-up after CD7 CAR-T")


def syndrome(c: Chart, suffix: str, code: str, onset: int, abated: int) -> None:
    """A coded CRS (D89.83x) or ICANS (G92.0x) Condition, grade in the code, resolved."""
    grade = code[-1]
    name = "Cytokine release syndrome" if code.startswith("D89") else \
        "Immune effector cell-associated neurotoxicity syndrome"
    condition(c, suffix, icd(ICD10CM, code, f"{name}, grade {grade}"), onset, clinical="resolved", abated=abated)


def treated(c: Chart, factor: float, last_day: int, cbc_days: tuple[int, ...] = (7, 14, 21),
            chem_days: tuple[int, ...] = (7, 14, 28), cbc_special: dict[int, tuple[float, float, float]] | None = None,
            chem_special: dict[int, dict[str, float]] | None = None, molar_bili: bool = False,
            anc_unit: str = "10*9/L", plt_unit: str = "10*9/L") -> None:
    """The routine post-infusion follow-up: CBC, chemistry, qPCR kinetics and the last follow-up visit."""
    cbc_series(c, cbc_days, cbc_special, anc_unit, plt_unit)
    chem_series(c, chem_days, chem_special, molar_bili)
    qpcr(c, factor, last_day)
    follow_up(c, last_day)


# ------------------------------------------------------------------------------------------ intent helpers
def ass(on: str, day: int, marrow_blasts: float | None, anc: float | None, plt: float, blasts: float,
        response: str) -> Json:
    """One intended assessment (counts in 10*9/L, blasts in %; None: the result there is not usable)."""
    return {"date": on, "day": day, "marrowBlasts": marrow_blasts, "anc": anc, "platelets": plt,
            "bloodBlasts": blasts, "response": response}


def inf(on: str, day: int, cells: float | None, in_course: bool = True) -> Json:
    return {"date": on, "day": day, "cells": cells, "inCourse": in_course}


def ae(term: str, grade: int, onset: str, basis: str) -> Json:
    """One intended AE episode; basis: ``coded`` (Condition), ``derived`` (ASTCT inputs) or ``lab`` (CTCAE)."""
    return {"term": term, "grade": grade, "onset": onset, "gradingSystem": ASTCT if term in (CRS, ICANS) else CTCAE,
            "basis": basis}


def kin(cmax: float, tmax: int, auc: float, last: int | None) -> Json:
    return {"cmax": cmax, "tmaxDay": tmax, "auc0to28": auc, "lastDetectedDay": last}


# ------------------------------------------------------------------------------------------ the cases
@dataclass(frozen=True)
class Case:
    """One synthetic patient: what it exercises, its chart, and its hand-written intended assessment."""

    pid: str
    day0: date
    exercises: str
    build: Callable[[Chart], None]
    intent: Json
    prefix: str = ""


CASES: list[Case] = []


def case(pid: str, day0: date, exercises: str, prefix: str = "",
         **intent: Any) -> Callable[[Callable[[Chart], None]], None]:
    def register(build: Callable[[Chart], None]) -> None:
        CASES.append(Case(pid, day0, exercises, build, intent, prefix))
    return register


def infused(day_zero: str, infusions: list[Json], weight_kg: float, course_cells: float | None,
            cells_per_kg: float | None, within: bool | None, baseline: float, assessments: list[Json], best: str,
            remission: str | None, relapse: str | None, last_follow_up: str, aes: list[Json], kinetics: Json,
            screened: str, ignored: list[Json] | None = None, death: str | None = None) -> Json:
    """The intent of an infused patient, in the key order of intent.json."""
    return {"infused": True, "dayZero": day_zero, "infusions": infusions, "ignoredInfusions": ignored or [],
            "weightKg": weight_kg, "courseCells": course_cells, "cellsPerKg": cells_per_kg,
            "doseWithinProtocol": within, "baselineMarrowBlasts": baseline, "assessments": assessments,
            "bestResponse": best, "remissionDate": remission, "relapseDate": relapse, "deathDate": death,
            "lastFollowUp": last_follow_up, "adverseEvents": aes, "kinetics": kinetics,
            "prescreen": {"asOf": screened, "status": "candidate"}}


# --- t01: CR for over a year (the CIR's long follow-up); timezone trap; entered-in-error ANC; coded CRS 1
@case("t01", date(2025, 6, 2), "CR at days 28, 90 and 365, followed to day 540 (the only patient at risk at 12 "
      "months of the CIR); day-28 marrow drawn 07:30+08:00 (previous day in UTC); an entered-in-error ANC of 0.2 "
      "on day 14 (ignored, no AE); coded CRS grade 1 (D89.831); dose in 10*6{cells}; qPCR and FC-CART kinetics "
      "(FC-CART last detected day 60)",
      **infused("2025-06-02", [inf("2025-06-02", 0, 1.2e8)], 60.0, 1.2e8, 2.0e6, True, 35.0,
                [ass("2025-06-30", 28, 1.5, 2.6, 190.0, 0.0, "CR"), ass("2025-08-31", 90, 0.8, 3.1, 240.0, 0.0, "CR"),
                 ass("2026-06-02", 365, 0.5, 3.2, 235.0, 0.0, "CR")],
                "CR", "2025-06-30", None, "2026-11-24", [ae(CRS, 1, "2025-06-03", "coded")],
                {"car-t-copies": kin(98000.0, 10, 1030290.0, 90), "car-t-percent": kin(12.5, 14, 161.85, 60)},
                "2025-05-19"))
def _t01(c: Chart) -> None:
    screening(c, birth="1991-05-14", sex="male", dx=AML_CM, marrow_blasts=35.0, cd7=88.2)
    admission(c, 60.0)
    infusion(c, "inf-1", 0, 120, "10*6{cells}")
    syndrome(c, "crs", "D89.831", 1, 3)
    lab(c, "anc", 0.2, 14, status="entered-in-error", suffix="anc-d14-error")
    treated(c, 1.0, 540, cbc_days=(7, 14, 21, 180, 540))
    assess(c, 28, 1.5, 2.6, 190.0, marrow_hour=7)
    lab(c, "mrd", 0.02, 28, hour=9, minute=30)
    assess(c, 90, 0.8, 3.1, 240.0)
    lab(c, "mrd", 0.01, 90, comparator="<", hour=9, minute=30)
    assess(c, 365, 0.5, 3.2, 235.0)
    fc_cart(c, 1.0, extra=((60, 0.4),))


# --- t02: CRi because ANC is exactly 1.0 (record comparator '>'); coded CRS 2 and ICANS 1; neutropenia G2
@case("t02", date(2026, 1, 20), "CRi: ANC exactly 1.0 is not recovered under the record's '>' comparator "
      "(ELN '>=' would give CR); T-ALL (C91.02); coded CRS grade 2 (D89.832) and ICANS grade 1 (G92.01); "
      "neutropenia grade 2 (ANC 1.4, 1.1, 1.0, closed by 2.3); dose in {cells}",
      **infused("2026-01-20", [inf("2026-01-20", 0, 2.2e8)], 55.0, 2.2e8, 4.0e6, True, 62.0,
                [ass("2026-02-17", 28, 2.0, 1.0, 185.0, 0.0, "CRi")], "CRi", "2026-02-17", None, "2026-04-20",
                [ae(CRS, 2, "2026-01-22", "coded"), ae(ICANS, 1, "2026-01-25", "coded"),
                 ae(NEUTROPENIA, 2, "2026-02-03", "lab")],
                {"car-t-copies": kin(49000.0, 10, 515145.0, 90)}, "2026-01-06"))
def _t02(c: Chart) -> None:
    screening(c, birth="1997-08-02", sex="female", dx=ALL_CM, marrow_blasts=62.0, cd7=92.0)
    admission(c, 55.0)
    infusion(c, "inf-1", 0, 2.2e8, "{cells}")
    syndrome(c, "crs", "D89.832", 2, 6)
    syndrome(c, "icans", "G92.01", 5, 7)
    treated(c, 0.5, 90, cbc_days=(7, 14, 21, 42, 90),
            cbc_special={7: (2.2, 190.0, 12.8), 14: (1.4, 175.0, 12.7), 21: (1.1, 180.0, 12.9),
                         42: (2.3, 200.0, 13.1)})
    assess(c, 28, 2.0, 1.0, 185.0, hb=13.0)


# --- t03: CRi because platelets are exactly 100; counts in /uL and 10*3/uL; thrombocytopenia G1
@case("t03", date(2026, 2, 2), "CRi: platelets exactly 100 are not recovered under '>'; ANC in /uL, platelets "
      "in 10*3/uL; thrombocytopenia grade 1 (120, 95, 100, closed by 155); no CRS/ICANS",
      **infused("2026-02-02", [inf("2026-02-02", 0, 3.6e8)], 72.0, 3.6e8, 5.0e6, True, 28.0,
                [ass("2026-03-02", 28, 3.0, 2.5, 100.0, 0.0, "CRi")], "CRi", "2026-03-02", None, "2026-05-03",
                [ae(THROMBOCYTOPENIA, 1, "2026-02-16", "lab")],
                {"car-t-copies": kin(196000.0, 10, 2060580.0, 90)}, "2026-01-19"))
def _t03(c: Chart) -> None:
    screening(c, birth="1980-10-21", sex="male", dx=AML_CM, marrow_blasts=28.0, cd7=76.5)
    admission(c, 72.0)
    infusion(c, "inf-1", 0, 3.6e8, "{cells}")
    treated(c, 2.0, 90, cbc_days=(7, 14, 21, 42, 90),
            cbc_special={7: (2.6, 160.0, 12.9), 14: (2.9, 120.0, 12.8), 21: (3.1, 95.0, 13.0),
                         42: (2.8, 155.0, 13.1)}, anc_unit="/uL", plt_unit="10*3/uL")
    assess(c, 28, 3.0, 2.5, 100.0, anc_unit="/uL", plt_unit="10*3/uL")


# --- t04: MLFS then CR (best CR); MPAL; neutropenia G4, thrombocytopenia G3, anaemia G2; FC-CART
@case("t04", date(2026, 2, 16), "MLFS at day 28 (ANC 0.7 and platelets 45: both below -> MLFS, operational "
      "reading) then CR at day 56 (best CR, remission dated at the MLFS); MPAL (C95.02); neutropenia grade 4, "
      "thrombocytopenia grade 3, anaemia grade 2; FC-CART kinetics",
      **infused("2026-02-16", [inf("2026-02-16", 0, 1.6e8)], 64.0, 1.6e8, 2.5e6, True, 48.0,
                [ass("2026-03-16", 28, 1.0, 0.7, 45.0, 0.0, "MLFS"),
                 ass("2026-04-13", 56, 0.5, 2.0, 160.0, 0.0, "CR")],
                "CR", "2026-03-16", None, "2026-05-17",
                [ae(NEUTROPENIA, 4, "2026-02-23", "lab"), ae(THROMBOCYTOPENIA, 3, "2026-02-23", "lab"),
                 ae(ANEMIA, 2, "2026-02-23", "lab")],
                {"car-t-copies": kin(147000.0, 10, 1545435.0, 90), "car-t-percent": kin(25.0, 14, 323.7, 28)},
                "2026-02-02"))
def _t04(c: Chart) -> None:
    screening(c, birth="1973-04-09", sex="female", dx=MPAL_CM, marrow_blasts=48.0, cd7=81.0)
    admission(c, 64.0, discharge=28)
    infusion(c, "inf-1", 0, 160, "10*6{cells}")
    treated(c, 1.5, 90, cbc_days=(7, 14, 21, 42, 90),
            cbc_special={7: (0.4, 40.0, 9.4), 14: (0.6, 35.0, 10.5), 21: (0.8, 42.0, 12.2),
                         42: (1.6, 110.0, 12.8)})
    assess(c, 28, 1.0, 0.7, 45.0, hb=12.6)
    assess(c, 56, 0.5, 2.0, 160.0, hb=13.0)
    fc_cart(c, 2.0)


# --- t05: PR; entered-in-error CRS Condition; Auer rods only at screening; EMD absent; blasts as a count
@case("t05", date(2026, 3, 2), "PR: marrow 12 % from 40 % (5-25 % and a 70 % decrease) with recovered counts; "
      "an entered-in-error CRS grade 4 Condition (ignored: no AE); Auer rods seen only at screening (outside "
      "the +-7-day window); extramedullary disease recorded absent; blood blasts as a count (/uL); ANC in 10*3/uL",
      **infused("2026-03-02", [inf("2026-03-02", 0, 2.4e8)], 80.0, 2.4e8, 3.0e6, True, 40.0,
                [ass("2026-03-30", 28, 12.0, 2.1, 175.0, 0.0, "PR")], "PR", None, None, "2026-05-01", [],
                {"car-t-copies": kin(78400.0, 10, 824232.0, 60)}, "2026-02-16"))
def _t05(c: Chart) -> None:
    screening(c, birth="1986-12-01", sex="male", dx=AML_CM, marrow_blasts=40.0, cd7=69.3)
    finding(c, "auer-dm14", coding(LAB, "AUER", "Auer rods seen"), True, -14)
    admission(c, 80.0)
    infusion(c, "inf-1", 0, 2.4e8, "{cells}")
    condition(c, "crs-error", icd(ICD10CM, "D89.834", "Cytokine release syndrome, grade 4"), 2, clinical=None,
                verification="entered-in-error")
    treated(c, 0.8, 60, cbc_days=(7, 14, 21, 60), anc_unit="10*3/uL")
    assess(c, 28, 12.0, 2.1, 175.0, blasts_kind="blasts-count", anc_unit="10*3/uL")
    finding(c, "emd-d28", coding(CLINICAL, "EMD", "Extramedullary disease"), False, 28, "exam")


# --- t06: NR after a too-low dose; Chinese ICD-10 with clinicalStatus relapse; circulating blasts
@case("t06", date(2026, 3, 9), "NR: marrow 45 % from 60 % (25 % decrease) with circulating blasts 12 %; dose "
      "0.3 x10^6/kg (below 0.5: flagged); Chinese national ICD-10 C92.000 with clinicalStatus relapse",
      **infused("2026-03-09", [inf("2026-03-09", 0, 1.5e7)], 50.0, 1.5e7, 0.3e6, False, 60.0,
                [ass("2026-04-06", 28, 45.0, 2.0, 160.0, 12.0, "NR")], "NR", None, None, "2026-05-08", [],
                {"car-t-copies": kin(9800.0, 10, 103029.0, 60)}, "2026-02-23"))
def _t06(c: Chart) -> None:
    screening(c, birth="1964-07-30", sex="female", dx=AML_CN, marrow_blasts=60.0, cd7=55.0)
    admission(c, 50.0)
    infusion(c, "inf-1", 0, 1.5e7, "{cells}")
    treated(c, 0.1, 60, cbc_days=(7, 14, 21, 60))
    assess(c, 28, 45.0, 2.0, 160.0, blasts=12.0)


# --- t07: NE (no post-infusion marrow)
@case("t07", date(2026, 3, 16), "NE: no post-infusion marrow (best response NE, no assessments); T-ALL "
      "(C91.02); follow-up ends at day 28",
      **infused("2026-03-16", [inf("2026-03-16", 0, 2.04e8)], 68.0, 2.04e8, 3.0e6, True, 70.0,
                [], "NE", None, None, "2026-04-13", [],
                {"car-t-copies": kin(117600.0, 10, 1236348.0, 28)}, "2026-03-02"))
def _t07(c: Chart) -> None:
    screening(c, birth="2002-09-15", sex="male", dx=ALL_CM, marrow_blasts=70.0, cd7=97.1)
    admission(c, 68.0)
    infusion(c, "inf-1", 0, 204, "10*6{cells}")
    treated(c, 1.2, 28, cbc_days=(7, 14, 21, 28))


# --- t08: CR, then death without relapse; coded CRS 3 and ICANS 3
@case("t08", date(2026, 4, 6), "CR at day 28, death on day 75 without relapse (Patient.deceasedDateTime; the "
      "competing event of the CIR); coded CRS grade 3 (D89.833) and ICANS grade 3 (G92.03)",
      **infused("2026-04-06", [inf("2026-04-06", 0, 1.16e8)], 58.0, 1.16e8, 2.0e6, True, 22.0,
                [ass("2026-05-04", 28, 0.5, 2.4, 170.0, 0.0, "CR")], "CR", "2026-05-04", None, "2026-06-05",
                [ae(CRS, 3, "2026-04-07", "coded"), ae(ICANS, 3, "2026-04-12", "coded")],
                {"car-t-copies": kin(98000.0, 10, 1030290.0, 60)}, "2026-03-23", death="2026-06-20"))
def _t08(c: Chart) -> None:
    screening(c, birth="1978-11-11", sex="female", dx=AML_CM, marrow_blasts=22.0, cd7=84.4,
              deceased="2026-06-20T03:15:00+08:00")
    admission(c, 58.0)
    infusion(c, "inf-1", 0, 1.16e8, "{cells}")
    syndrome(c, "crs", "D89.833", 1, 5)
    syndrome(c, "icans", "G92.03", 6, 10)
    treated(c, 1.0, 60, cbc_days=(7, 14, 21, 60))
    assess(c, 28, 0.5, 2.4, 170.0)


# --- t09: relapse in the marrow at exactly 5 %; coded CRS 4; CAR-T undetectable ('<') at the end
QPCR_T09: tuple[tuple[int, float], ...] = (
    (0, 200), (4, 12000), (7, 80000), (10, 150000), (14, 90000), (21, 30000), (28, 12000), (60, 900), (90, 120))


@case("t09", date(2026, 1, 5), "CR at days 28 and 90, then relapse at day 150 with marrow blasts exactly 5 % "
      "(>= 5 %); coded CRS grade 4 (D89.834); qPCR undetectable (<50 copies/ug) at day 120",
      **infused("2026-01-05", [inf("2026-01-05", 0, 3.0e8)], 75.0, 3.0e8, 4.0e6, True, 55.0,
                [ass("2026-02-02", 28, 1.2, 2.7, 205.0, 0.0, "CR"), ass("2026-04-05", 90, 2.0, 2.9, 230.0, 0.0, "CR"),
                 ass("2026-06-04", 150, 5.0, 2.6, 180.0, 0.0, "relapse")],
                "CR", "2026-02-02", "2026-06-04", "2026-06-04", [ae(CRS, 4, "2026-01-08", "coded")],
                {"car-t-copies": kin(150000.0, 10, 1554400.0, 90)}, "2025-12-22"))
def _t09(c: Chart) -> None:
    screening(c, birth="1994-03-03", sex="male", dx=AML_CM, marrow_blasts=55.0, cd7=90.2)
    admission(c, 75.0)
    infusion(c, "inf-1", 0, 300, "10*6{cells}")
    syndrome(c, "crs", "D89.834", 3, 9)
    cbc_series(c, (7, 14, 21))
    chem_series(c, (7, 14, 28))
    qpcr(c, 1.0, 90, QPCR_T09)
    lab(c, "qpcr", 50.0, 120, comparator="<", hour=7, minute=0)
    assess(c, 28, 1.2, 2.7, 205.0)
    lab(c, "mrd", 0.05, 28, hour=9, minute=30)
    assess(c, 90, 2.0, 2.9, 230.0)
    assess(c, 150, 5.0, 2.6, 180.0)
    follow_up(c, 150)


# --- t10: blood-only relapse; bilirubin in umol/L with a grade 2 AE
@case("t10", date(2026, 2, 9), "CR at day 28, then blood-only relapse at day 120 (marrow 3 %, circulating blasts "
      "4 % by manual count); bilirubin in umol/L, one grade 2 episode (42.75 umol/L = 2.5 mg/dL, 2.09 x ULN)",
      **infused("2026-02-09", [inf("2026-02-09", 0, 1.86e8)], 62.0, 1.86e8, 3.0e6, True, 30.0,
                [ass("2026-03-09", 28, 1.0, 2.8, 210.0, 0.0, "CR"),
                 ass("2026-06-09", 120, 3.0, 2.5, 180.0, 4.0, "relapse")],
                "CR", "2026-03-09", "2026-06-09", "2026-06-09", [ae(BILI_UP, 2, "2026-02-16", "lab")],
                {"car-t-copies": kin(58800.0, 10, 618174.0, 90)}, "2026-01-26"))
def _t10(c: Chart) -> None:
    screening(c, birth="1989-06-18", sex="female", dx=AML_CM, marrow_blasts=30.0, cd7=73.8)
    admission(c, 62.0)
    infusion(c, "inf-1", 0, 1.86e8, "{cells}")
    cbc_series(c, (7, 14, 21, 90))
    chem_series(c, (7, 14, 28), {7: {"bili-molar": 42.75}, 14: {"bili-molar": 15.0}}, molar_bili=True)
    qpcr(c, 0.6, 120)
    assess(c, 28, 1.0, 2.8, 210.0)
    assess(c, 120, 3.0, 2.5, 180.0, blasts=4.0, blasts_kind="blasts-manual")
    follow_up(c, 120)


# --- t11: split dose day 0 + day 2; weight in [lb_av] (an older kg weight too); ICANS derived from ICE 5
@case("t11", date(2026, 3, 23), "split dose on day 0 and day 2; latest weight 165 [lb_av] (an older 80 kg "
      "weight on day -40 must not be used); ICANS grade 2 derived from an ICE score of 5 (no coded ICANS), "
      "closed by ICE 10",
      **infused("2026-03-23", [inf("2026-03-23", 0, 1.5e8), inf("2026-03-25", 2, 1.5e8)], 74.84274105, 3.0e8,
                4008404.766997774, True, 33.0, [ass("2026-04-20", 28, 0.8, 3.0, 220.0, 0.0, "CR")],
                "CR", "2026-04-20", None, "2026-06-21", [ae(ICANS, 2, "2026-03-28", "derived")],
                {"car-t-copies": kin(137200.0, 10, 1442406.0, 90)}, "2026-03-09"))
def _t11(c: Chart) -> None:
    screening(c, birth="1983-02-27", sex="male", dx=AML_CM, marrow_blasts=33.0, cd7=86.0)
    lab(c, "weight", 80.0, -40, "kg", hour=8, minute=0)
    admission(c, 165.0, "[lb_av]")
    infusion(c, "inf-1", 0, 1.5e8, "{cells}", note="split dose 1 of 2")
    infusion(c, "inf-2", 2, 1.5e8, "{cells}", note="split dose 2 of 2")
    ice = coding(NEURO, "ICE", "ICE score")
    score(c, "ice-d5", ice, 5, 5, "exam")
    score(c, "ice-d8", ice, 10, 8, "exam")
    treated(c, 1.4, 90, cbc_days=(7, 14, 21, 90))
    assess(c, 28, 0.8, 3.0, 220.0)


# --- t12: split dose in three (days 0, 1, 2) + a day-15 infusion outside the course; weight in g
@case("t12", date(2026, 4, 13), "split dose in three (days 0, 1, 2) and a further infusion on day 15 that is "
      "not part of the course (course = days 0-14); weight 58000 g (a post-infusion 55000 g must not be used)",
      **infused("2026-04-13", [inf("2026-04-13", 0, 5.8e7), inf("2026-04-14", 1, 5.8e7), inf("2026-04-15", 2, 1.16e8),
                               inf("2026-04-28", 15, 1.16e8, False)], 58.0, 2.32e8, 4.0e6, True, 26.0,
                [ass("2026-05-11", 28, 1.1, 2.6, 200.0, 0.0, "CR")], "CR", "2026-05-11", None, "2026-07-12", [],
                {"car-t-copies": kin(107800.0, 10, 1133319.0, 90)}, "2026-03-30"))
def _t12(c: Chart) -> None:
    screening(c, birth="1999-12-05", sex="female", dx=AML_CM, marrow_blasts=26.0, cd7=91.5)
    admission(c, 58000.0, "g")
    for n, (day, cells) in enumerate(((0, 5.8e7), (1, 5.8e7), (2, 1.16e8)), start=1):
        infusion(c, f"inf-{n}", day, cells, "{cells}", note=f"split dose {n} of 3")
    infusion(c, "inf-4", 15, 1.16e8, "{cells}", note="second infusion (not part of the first course)")
    lab(c, "weight", 55000.0, 14, "g", hour=8, minute=0)
    treated(c, 1.1, 90, cbc_days=(7, 14, 21, 90))
    assess(c, 28, 1.1, 2.6, 200.0)


# --- t13: too-high dose; CRS derived from vital signs (38.6 Cel + one vasopressor = grade 3)
@case("t13", date(2026, 4, 20), "dose 12 x10^6/kg (above 10: flagged); CRS grade 3 derived on day 2 from "
      "temperature 38.6 Cel and one vasopressor (oxygen 2 L/min, no positive pressure), no coded CRS; "
      "closed on day 5 (36.8 Cel, no vasopressor, no oxygen)",
      **infused("2026-04-20", [inf("2026-04-20", 0, 8.4e8)], 70.0, 8.4e8, 12.0e6, False, 42.0,
                [ass("2026-05-18", 28, 0.6, 2.9, 230.0, 0.0, "CR")], "CR", "2026-05-18", None, "2026-07-19",
                [ae(CRS, 3, "2026-04-22", "derived")],
                {"car-t-copies": kin(294000.0, 10, 3090870.0, 90)}, "2026-04-06"))
def _t13(c: Chart) -> None:
    screening(c, birth="1975-08-19", sex="male", dx=AML_CM, marrow_blasts=42.0, cd7=79.9)
    admission(c, 70.0)
    infusion(c, "inf-1", 0, 840, "10*6{cells}")
    for day, temp, pressors, flow in ((2, 38.6, 1, 2.0), (5, 36.8, 0, 0.0)):
        lab(c, "temp", temp, day, hour=14, minute=0)
        score(c, f"vasopressors-{day_tag(day)}", coding(ICU, "VASOPRESSORS", "Number of vasopressors"), pressors,
              day, "therapy")
        lab(c, "o2-flow", flow, day, hour=14, minute=0)
    finding(c, "ppv-d2", coding(ICU, "PPV", "Positive pressure ventilation"), False, 2, "therapy")
    treated(c, 3.0, 90, cbc_days=(7, 14, 21, 90))
    assess(c, 28, 0.6, 2.9, 230.0)


# --- t14: entered-in-error infusion the day before day 0; AST grade 1 and ALT grade 2
@case("t14", date(2026, 5, 4), "an entered-in-error infusion dated the day before the real one (ignored for day "
      "0 and dose); AST grade 1 (90 U/L = 2.25 x ULN) and ALT grade 2 (150 U/L = 3.75 x ULN, then 45 U/L "
      "grade 1, closed by 30 U/L) on a normal baseline",
      **infused("2026-05-04", [inf("2026-05-04", 0, 1.3e8)], 65.0, 1.3e8, 2.0e6, True, 38.0,
                [ass("2026-06-01", 28, 1.3, 2.7, 215.0, 0.0, "CR")], "CR", "2026-06-01", None, "2026-07-03",
                [ae(AST_UP, 1, "2026-05-11", "lab"), ae(ALT_UP, 2, "2026-05-11", "lab")],
                {"car-t-copies": kin(88200.0, 10, 927261.0, 60)}, "2026-04-20",
                ignored=[{"date": "2026-05-03", "cells": 2.0e8, "status": "entered-in-error"}]))
def _t14(c: Chart) -> None:
    screening(c, birth="1992-10-10", sex="female", dx=AML_CM, marrow_blasts=38.0, cd7=83.3)
    admission(c, 65.0)
    infusion(c, "inf-error", -1, 2.0e8, "{cells}", status="entered-in-error",
               note="recorded against the wrong date; see the completed administration")
    infusion(c, "inf-1", 0, 1.3e8, "{cells}")
    treated(c, 0.9, 60, cbc_days=(7, 14, 21, 60),
            chem_special={7: {"ast": 90.0, "alt": 150.0}, 14: {"ast": 35.0, "alt": 45.0},
                          28: {"ast": 22.0, "alt": 30.0}})
    assess(c, 28, 1.3, 2.7, 215.0)


# --- cao2022: the published case (RULES.md §7)
@case("cao2022", date(2026, 6, 23), "published case (RULES.md §7, Cao X et al. 2022): 17-year-old female, r/r "
      "AML, marrow 20 % blasts and 95.6 % CD7+ before; split dose 1.0e8 + 1.5e8 cells (days 0 and 1) at 50 kg "
      "= 5 x10^6/kg; MLFS on day 17 (marrow 1.5 %, ANC 0.4, platelets 30); coded CRS grade 3 (D89.833, day 2); "
      "no ICANS; the low counts around day 17 are neutropenia grade 4 and thrombocytopenia grade 3; other "
      "values synthetic", prefix="cao2022-tx",
      **infused("2026-06-23", [inf("2026-06-23", 0, 1.0e8), inf("2026-06-24", 1, 1.5e8)], 50.0, 2.5e8, 5.0e6, True,
                20.0, [ass("2026-07-10", 17, 1.5, 0.4, 30.0, 0.0, "MLFS")], "MLFS", "2026-07-10", None,
                "2026-09-21",
                [ae(CRS, 3, "2026-06-25", "coded"), ae(NEUTROPENIA, 4, "2026-06-30", "lab"),
                 ae(THROMBOCYTOPENIA, 3, "2026-06-30", "lab")],
                {"car-t-copies": kin(245000.0, 10, 2575725.0, 90)}, "2026-06-09"))
def _cao(c: Chart) -> None:
    c.published = True
    screening(c, birth="2008-11-03", sex="female", dx=AML_CN, marrow_blasts=20.0, cd7=95.6, published=True)
    admission(c, 50.0, discharge=28)
    infusion(c, "inf-1", 0, 1.0e8, "{cells}", note="split dose 1 of 2 (total 5 x10^6 cells/kg, published)")
    infusion(c, "inf-2", 1, 1.5e8, "{cells}", note="split dose 2 of 2 (total 5 x10^6 cells/kg, published)")
    syndrome(c, "crs", "D89.833", 2, 7)
    treated(c, 2.5, 90, cbc_days=(7, 14, 28, 60, 90),
            cbc_special={7: (0.3, 40.0, 12.4), 14: (0.35, 28.0, 12.3), 28: (1.9, 155.0, 12.6)})
    assess(c, 17, 1.5, 0.4, 30.0, hb=12.3)


# --- screened, never infused
@case("s01", date(2026, 5, 25), "screened, never infused: CD7+ blasts 25 % (ineligible); left out of the assessment",
      infused=False, prescreen={"asOf": "2026-05-11", "status": "ineligible"})
def _s01(c: Chart) -> None:
    screening(c, birth="1985-01-22", sex="female", dx=AML_CM, marrow_blasts=45.0, cd7=25.0)


@case("s02", date(2026, 6, 1), "screened and eligible, but the infusion was not done (status not-done: product "
      "not released); left out of the assessment",
      infused=False, prescreen={"asOf": "2026-05-18", "status": "candidate"},
      ignoredInfusions=[{"date": "2026-06-01", "cells": 2.8e8, "status": "not-done"}])
def _s02(c: Chart) -> None:
    screening(c, birth="1967-09-09", sex="male", dx=AML_CM, marrow_blasts=50.0, cd7=80.0)
    admission(c, 70.0, discharge=-1)
    infusion(c, "inf-1", 0, 2.8e8, "{cells}", status="not-done")


# --- t15-t19 (issue 12): values a real EHR sends that cannot be used (RULES.md §3-§5)
@case("t15", date(2026, 7, 6), "a stopped infusion in the course window: day 0 1.5e8 cells completed, day 1 an "
      "infusion of 1.5e8 stopped (the delivered dose is not known): left out of the sum, cellsPerKg the completed "
      "dose (2.5 x10^6/kg, a lower bound), doseWithinProtocol null; CR at day 28",
      **infused("2026-07-06", [inf("2026-07-06", 0, 1.5e8)], 60.0, 1.5e8, 2.5e6, None, 36.0,
                [ass("2026-08-03", 28, 1.2, 2.8, 195.0, 0.0, "CR")], "CR", "2026-08-03", None, "2026-10-04", [],
                {"car-t-copies": kin(68600.0, 10, 721203.0, 90)}, "2026-06-22",
                ignored=[{"date": "2026-07-07", "cells": 1.5e8, "status": "stopped"}]))
def _t15(c: Chart) -> None:
    screening(c, birth="1990-01-17", sex="male", dx=AML_CM, marrow_blasts=36.0, cd7=85.0)
    admission(c, 60.0)
    infusion(c, "inf-1", 0, 1.5e8, "{cells}", note="split dose 1 of 2")
    infusion(c, "inf-2", 1, 1.5e8, "{cells}", status="stopped",
               note="split dose 2 of 2, stopped early (infusion reaction); delivered volume not recorded")
    treated(c, 0.7, 90, cbc_days=(7, 14, 21, 90))
    assess(c, 28, 1.2, 2.8, 195.0)


@case("t16", date(2026, 7, 13), "a completed infusion recorded with a negative cell count (-2.0e8 cells: not "
      "usable, infused cells must be > 0): day 0 stands, the course total is unknown, cellsPerKg and "
      "doseWithinProtocol null; CR at day 28",
      **infused("2026-07-13", [inf("2026-07-13", 0, None)], 70.0, None, None, None, 44.0,
                [ass("2026-08-10", 28, 0.9, 2.9, 205.0, 0.0, "CR")], "CR", "2026-08-10", None, "2026-10-11", [],
                {"car-t-copies": kin(127400.0, 10, 1339377.0, 90)}, "2026-06-29"))
def _t16(c: Chart) -> None:
    screening(c, birth="1977-05-03", sex="female", dx=AML_CM, marrow_blasts=44.0, cd7=78.0)
    admission(c, 70.0)
    infusion(c, "inf-1", 0, -2.0e8, "{cells}", note="cell count entered with a sign error")
    treated(c, 1.3, 90, cbc_days=(7, 14, 21, 90))
    assess(c, 28, 0.9, 2.9, 205.0)


@case("t17", date(2026, 7, 20), "a CRS coded without a grade (D89.839, days 2-6) with grade-3 signs the same days "
      "(38.9 Cel and one vasopressor on day 2; 36.9 Cel, none on day 5): one CRS, grade 3 derived from the signs "
      "(not null, not a second AE); CR at day 28",
      **infused("2026-07-20", [inf("2026-07-20", 0, 2.1e8)], 70.0, 2.1e8, 3.0e6, True, 31.0,
                [ass("2026-08-17", 28, 0.7, 3.1, 210.0, 0.0, "CR")], "CR", "2026-08-17", None, "2026-10-18",
                [ae(CRS, 3, "2026-07-22", "coded+derived")],
                {"car-t-copies": kin(156800.0, 10, 1648464.0, 90)}, "2026-07-06"))
def _t17(c: Chart) -> None:
    screening(c, birth="1985-09-29", sex="male", dx=ALL_CM, marrow_blasts=31.0, cd7=94.0)
    admission(c, 70.0)
    infusion(c, "inf-1", 0, 2.1e8, "{cells}")
    condition(c, "crs", icd(ICD10CM, "D89.839", "Cytokine release syndrome, grade unspecified"), 2,
                clinical="resolved", abated=6)
    for day, temp, pressors, flow in ((2, 38.9, 1, 2.0), (5, 36.9, 0, 0.0)):
        lab(c, "temp", temp, day, hour=14, minute=0)
        score(c, f"vasopressors-{day_tag(day)}", coding(ICU, "VASOPRESSORS", "Number of vasopressors"), pressors,
              day, "therapy")
        lab(c, "o2-flow", flow, day, hour=14, minute=0)
    finding(c, "ppv-d2", coding(ICU, "PPV", "Positive pressure ventilation"), False, 2, "therapy")
    treated(c, 1.6, 90, cbc_days=(7, 14, 21, 90))
    assess(c, 28, 0.7, 3.1, 210.0)


@case("t18", date(2026, 7, 27), "an implausible count after the infusion: the day-28 ANC written 2600 in 10*9/L "
      "(a /uL value under the wrong unit; outside 0-1000: not usable). CR and CRi are undecidable (an implausible "
      "count never makes CR): the assessment falls back to MLFS (marrow 1.1 %); no neutropenia AE from it",
      **infused("2026-07-27", [inf("2026-07-27", 0, 1.8e8)], 60.0, 1.8e8, 3.0e6, True, 27.0,
                [ass("2026-08-24", 28, 1.1, None, 190.0, 0.0, "MLFS")], "MLFS", "2026-08-24", None, "2026-10-25",
                [], {"car-t-copies": kin(39200.0, 10, 412116.0, 90)}, "2026-07-13"))
def _t18(c: Chart) -> None:
    screening(c, birth="1995-02-08", sex="female", dx=MPAL_CM, marrow_blasts=27.0, cd7=88.0)
    admission(c, 60.0)
    infusion(c, "inf-1", 0, 1.8e8, "{cells}")
    treated(c, 0.4, 90, cbc_days=(7, 14, 21, 90))
    marrow(c, 28, 1.1)
    blood_blasts(c, 28, 0.0)
    cbc(c, 28, 2600.0, 190.0, 12.6)


@case("t19", date(2026, 8, 3), "an implausible marrow result after the infusion: the only post-infusion marrow reads "
      "150 % blasts (outside 0-100 %: not usable): that assessment is NE, best response NE, no remission",
      **infused("2026-08-03", [inf("2026-08-03", 0, 2.4e8)], 80.0, 2.4e8, 3.0e6, True, 52.0,
                [ass("2026-08-31", 28, None, 2.7, 200.0, 0.0, "NE")], "NE", None, None, "2026-11-01", [],
                {"car-t-copies": kin(19600.0, 10, 206058.0, 90)}, "2026-07-20"))
def _t19(c: Chart) -> None:
    screening(c, birth="1970-12-24", sex="male", dx=AML_CM, marrow_blasts=52.0, cd7=71.0)
    admission(c, 80.0)
    infusion(c, "inf-1", 0, 2.4e8, "{cells}")
    treated(c, 0.2, 90, cbc_days=(7, 14, 21, 90))
    marrow(c, 28, 150.0)
    blood_blasts(c, 28, 0.0)
    cbc(c, 28, 2.7, 200.0, 12.6)


COHORT: Json = {
    "infused": 20,
    "notInfused": ["s01", "s02"],
    "bestResponse": {"CR": 12, "CRi": 2, "MLFS": 2, "PR": 1, "NR": 1, "NE": 2},
    "responders": 17,
    "orr": "17/20 (best response CR, CRi, MLFS or PR among infused patients)",
    "remissions": 16,
    "relapses": 2,
    "deathsWithoutRelapse": 1,
    "adverseEvents": 20,
    "cir12Months": 0.622222,
}


# ------------------------------------------------------------------------------------------ intent checks
def _d(text: str) -> date:
    return date.fromisoformat(text)


def response_of(a: Json, baseline: float, in_remission: bool) -> str:
    """RULES.md §4 restated on one intended assessment's own numbers (record '>' comparators, operational CRi
    reading: exactly one lineage low), to catch slips in the hand-written responses."""
    marrow_blasts, anc, plt, blasts = a["marrowBlasts"], a["anc"], a["platelets"], a["bloodBlasts"]
    if marrow_blasts is None:  # a marrow result that is not usable: not assessable
        return "NE"
    if in_remission and (marrow_blasts >= 5 or blasts > 0):
        return "relapse"
    if marrow_blasts < 5:
        if anc is None or plt is None:  # a count that is not usable: CR/CRi undecidable, MLFS fallback
            return "MLFS"
        low = (anc <= 1.0) + (plt <= 100)
        if blasts == 0 and low < 2:
            return "CR" if low == 0 else "CRi"
        return "MLFS"
    if marrow_blasts <= 25 and (anc is None or plt is None):
        return "NE"  # PR undecidable
    recovered = anc is not None and plt is not None and anc > 1.0 and plt > 100 and blasts == 0
    return "PR" if recovered and 5 <= marrow_blasts <= 25 and marrow_blasts <= baseline / 2 else "NR"


def _dose_problems(it: Json) -> list[str]:
    """RULES.md §4 "Dose": a course cell count that is not usable makes the total, cellsPerKg and the protocol
    check unknown (None); a stopped or on-hold infusion in the course window leaves the sum of the completed
    ones but makes the protocol check None."""
    problems = []
    course = [i for i in it["infusions"] if i["inCourse"]]
    if any(i["inCourse"] != (0 <= i["day"] <= COURSE_DAYS) for i in it["infusions"]):
        problems.append("inCourse contradicts the 14-day course")
    if any(i["cells"] is None for i in course):
        if it["courseCells"] is not None or it["cellsPerKg"] is not None or it["doseWithinProtocol"] is not None:
            problems.append("a course cell count is not usable: courseCells, cellsPerKg and doseWithinProtocol are "
                            "null")
        return problems
    if abs(sum(i["cells"] for i in course) - it["courseCells"]) > 1e-6 * it["courseCells"]:
        problems.append("courseCells is not the sum of the course")
    if abs(it["courseCells"] / it["weightKg"] - it["cellsPerKg"]) > 1e-9 * it["cellsPerKg"]:
        problems.append("cellsPerKg is not courseCells / weightKg")
    day0 = _d(it["dayZero"])
    incomplete = [i for i in it["ignoredInfusions"] if i["status"] in ("stopped", "on-hold")
                  and 0 <= (_d(i["date"]) - day0).days <= COURSE_DAYS]
    within = None if incomplete else DOSE_RANGE[0] <= it["cellsPerKg"] <= DOSE_RANGE[1]
    if it["doseWithinProtocol"] != within:
        problems.append(f"doseWithinProtocol should be {within}")
    return problems


def _response_problems(it: Json) -> list[str]:
    problems, remitted = [], False
    for a in it["assessments"]:
        expected = response_of(a, it["baselineMarrowBlasts"], remitted)
        if a["response"] != expected:
            problems.append(f"assessment {a['date']}: {a['response']} but RULES.md §4 gives {expected}")
        remitted = remitted or a["response"] in REMISSION
    responses = [a["response"] for a in it["assessments"]]
    best = min((r for r in responses if r in RANK), key=RANK.index, default="NE")
    if it["bestResponse"] != best:
        problems.append(f"bestResponse {it['bestResponse']} but the assessments give {best}")
    first = {k: next((a["date"] for a in it["assessments"] if a["response"] in v), None)
             for k, v in (("remissionDate", REMISSION), ("relapseDate", ("relapse",)))}
    problems += [f"{k} should be {v}" for k, v in first.items() if it[k] != v]
    return problems


def _date_problems(cs: Case, it: Json) -> list[str]:
    d0 = cs.day0
    problems = [] if it["dayZero"] == d0.isoformat() else ["dayZero is not the chart's day 0"]
    for item in it["infusions"] + it["assessments"]:
        if (_d(item["date"]) - d0).days != item["day"]:
            problems.append(f"{item['date']} is not day {item['day']}")
    last = _d(it["lastFollowUp"])
    if last > AS_OF or any(_d(a["date"]) > last for a in it["assessments"]):
        problems.append("lastFollowUp is after the as-of date or before an assessment")
    for e in it["adverseEvents"]:
        if not d0 <= _d(e["onset"]) <= min(d0 + timedelta(days=365), last):
            problems.append(f"AE {e['term']} onset {e['onset']} outside day 0 .. 12 months / follow-up")
    if _d(it["prescreen"]["asOf"]) != d0 - timedelta(days=14):
        problems.append("prescreen asOf is not the screening day (day -14)")
    return problems


def check_intent(cases: list[Case]) -> None:
    """Guard the hand-written intent against slips; raise GenerationError listing every problem."""
    problems: list[str] = []
    for cs in cases:
        if cs.intent["infused"]:
            found = _dose_problems(cs.intent) + _response_problems(cs.intent) + _date_problems(cs, cs.intent)
            problems += [f"{cs.pid}: {p}" for p in found]
    problems += _cohort_problems(cases)
    if problems:
        raise GenerationError("intent inconsistent: " + "; ".join(problems))


def _cohort_problems(cases: list[Case]) -> list[str]:
    treated_ = [cs.intent for cs in cases if cs.intent["infused"]]
    best = {r: sum(1 for it in treated_ if it["bestResponse"] == r) for r in RANK}
    actual = {"infused": len(treated_), "notInfused": [cs.pid for cs in cases if not cs.intent["infused"]],
              "bestResponse": best, "responders": sum(best[r] for r in ("CR", "CRi", "MLFS", "PR")),
              "remissions": sum(1 for it in treated_ if it["remissionDate"]),
              "relapses": sum(1 for it in treated_ if it["relapseDate"]),
              "deathsWithoutRelapse": sum(1 for it in treated_ if it["deathDate"] and not it["relapseDate"]),
              "adverseEvents": sum(len(it["adverseEvents"]) for it in treated_)}
    return [f"cohort {k} should be {v}" for k, v in actual.items() if COHORT[k] != v]


def build_intent(cases: list[Case]) -> Json:
    check_intent(cases)
    return {"description": "Intended treated-cohort assessment (RULES.md §4-§5), hand-written per patient in "
                           "samplegen/treated.py; not produced by the engine. Counts in 10*9/L, blasts "
                           "in %, cells as absolute numbers, dates as written (local); null where the result is not "
                           "usable (RULES.md §3) or the value cannot be known.",
            "asOf": AS_OF.isoformat(), "siteMap": "samples/site-map.yaml",
            "options": {"comparators": "record", "criReading": "operational", "countWindowDays": 7,
                        "courseDays": COURSE_DAYS, "doseRangeCellsPerKg": list(DOSE_RANGE), "aeWindowDays": 365,
                        "remission": "first CR, CRi or MLFS (the responses after which a relapse is possible)"},
            "cohort": COHORT,
            "patients": {cs.pid: {"exercises": cs.exercises, **cs.intent} for cs in cases}}


# ------------------------------------------------------------------------------------------ validation
# ------------------------------------------------------------------------------------------ output
def charts(cases: list[Case]) -> list[Chart]:
    out = []
    for cs in cases:
        chart = Chart(cs.pid, anchor=cs.day0, prefix=cs.prefix or None)
        cs.build(chart)
        consent(chart, -20, active=cs.pid not in WITHDRAWN)
        out.append(chart)
    return out


def check_resources(resources: list[Json]) -> None:
    """Ids unique per type; nothing dated after the as-of date."""
    seen: set[tuple[str, str]] = set()
    for r in resources:
        key = (r["resourceType"], r["id"])
        if key in seen:
            raise GenerationError(f"duplicate {key[0]}/{key[1]}")
        seen.add(key)
        dates = [r.get(k) for k in ("effectiveDateTime", "onsetDateTime", "deceasedDateTime")]
        dates += [r.get("period", {}).get("end")]
        if any(d and _d(d[:10]) > AS_OF for d in dates):
            raise GenerationError(f"{key[0]}/{key[1]} is dated after the as-of date")


def generate(out: Path, schema: Path) -> list[Path]:
    intent = build_intent(CASES)
    resources = [r for chart in charts(CASES) for r in chart.resources]
    check_resources(resources)
    for r in resources:
        validate(r, schema)
    doc = bundle(resources, "treated-samples", f"{AS_OF.isoformat()}T07:00:00{TZ}")
    parse_resource(doc, "Bundle/treated-samples")
    return write(out, doc, intent, TYPES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default samples/treated)")
    parser.add_argument("--schema", help="fhir.schema.json (default $BRIDGE_FHIR_SCHEMA or the shared copy)")
    args = parser.parse_args(argv)
    try:
        written = generate(args.out, schema_file(args.schema))
    except GenerationError as exc:
        print(f"samplegen.treated: {exc}", file=sys.stderr)
        return 1
    print(f"samplegen.treated: {len(CASES)} patients, wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
