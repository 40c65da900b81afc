"""Write a synthetic Bulk Data export of N patients for the population-scale pre-screen benchmark.

``python -m samplegen.population N OUTDIR [--seed S] [--leukemia-rate R] [--results-per-candidate K] [--as-of DATE]``
(from the repository root) writes
``Patient.ndjson``, ``Encounter.ndjson``, ``Condition.ndjson``, ``Observation.ndjson`` and
``MedicationAdministration.ndjson`` into OUTDIR — about 100 resources per patient, of which:

* everyone: encounters, a few coded conditions (hypertension, diabetes, pneumonia, thrombosis, chronic
  leukaemias that are *not* acute, ...), CBC and chemistry panels of 8 and 11 analytes (most analytes are
  not mapped by the bridge), vital signs (temperature in Cel or [degF], weight in kg or [lb_av], a blood
  pressure panel with components), sometimes serology, and a few medication administrations;
* a few percent (``--leukemia-rate``, default 3 %) have an acute leukaemia (AML/ALL/MPAL/T-LBL in WHO
  ICD-10, the Chinese national ICD-10, ICD-10-CM "in relapse", SNOMED CT or ICD-O-3) and its work-up:
  ECOG (integer, LOINC answer or SNOMED), CD7 by flow (a site code, sometimes as a component of a flow
  panel), echo LVEF (% or fraction), NYHA, marrow and blood blasts, hCG, HBsAg, HCV, HIV, findings.

The shape of a lab-dense export (issue #16) is a parameter: with ``--results-per-candidate K`` (10-150) a
leukaemia patient's laboratory results are K results of a liver panel repeated over the last 60 days -- ALT,
AST and total bilirubin, which the eligibility criteria read, and creatinine, which they do not -- instead of
the 4 CBC and 3 chemistry panels everyone else has (65 results, 13 of them concepts the criteria read). Without
it the output is unchanged (same seed, same bytes).

The variety of units and codings follows ``samples/prescreen`` (counts in 10*9/L, 10*3/uL or /uL,
bilirubin in mg/dL or umol/L, a local coding before the LOINC one, lower-case or absolute references) and
a small, fixed share of defects (an invalid date, a truncated line) exercises the skip reports. Values are
synthetic; the output is deterministic for a seed -- it depends on the order the random values are drawn in,
so each resource draws its values first and then hands them to ``samplegen.chart.Chart``, whose ``add`` writes
the line (with orjson) here.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO

import orjson

from samplegen.chart import Chart
from samplegen.kit import (
    ABSENT,
    ACT_CODE,
    BASE_URL,
    CARDIO,
    CART_CD7,
    CLINICAL,
    ICD10,
    ICD10CM,
    LAB,
    LOINC,
    NEG_LA,
    NEG_SCT,
    POS_LA,
    POS_SCT,
    PRESENT,
    SNOMED,
    UCUM,
    Json,
    coding,
    concept,
    qty,
)

ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HIS_DX = "http://hospital.example.org/his-dx"
TYPES = ("Patient", "Encounter", "Condition", "Observation", "MedicationAdministration")

# (code, display, unit, low, high, reference low, reference high); None: no reference range
CBC = [("6690-2", "Leukocytes [#/volume] in Blood", "10*9/L", 1.0, 15.0, 4.0, 10.0),
       ("789-8", "Erythrocytes [#/volume] in Blood", "10*12/L", 2.5, 5.8, 4.2, 5.9),
       ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 6.5, 16.5, 12.0, 17.0),
       ("4544-3", "Hematocrit [Volume Fraction] of Blood", "%", 22.0, 50.0, 36.0, 50.0),
       ("787-2", "MCV [Entitic volume]", "fL", 75.0, 105.0, 80.0, 100.0),
       ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*9/L", 15.0, 420.0, 150.0, 400.0),
       ("751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*9/L", 0.2, 9.0, 1.8, 7.5),
       ("731-0", "Lymphocytes [#/volume] in Blood by Automated count", "10*9/L", 0.3, 4.5, 1.0, 4.0)]
CHEM = [("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 128.0, 148.0, 135.0, 145.0),
        ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.0, 5.6, 3.5, 5.1),
        ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 95.0, 110.0, 98.0, 107.0),
        ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.5, 2.4, 0.6, 1.1),
        ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 6.0, 40.0, 7.0, 20.0),
        ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70.0, 240.0, 70.0, 99.0),
        ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", 2.5, 5.0, 3.5, 5.0),
        ("6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 30.0, 250.0,
         44.0, 147.0),
        ("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 10.0,
         190.0, 0.0, 40.0),
        ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 8.0, 170.0,
         0.0, 40.0),
        ("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", 0.2, 3.5, 0.2, 1.2)]
# the lab-dense candidate's panel: three concepts the criteria read (ALT, AST, total bilirubin), one they do not
DENSE_PANEL = [row for code in ("1742-6", "1920-8", "1975-2", "2160-0") for row in CHEM if row[0] == code]
RESULTS_PER_CANDIDATE = (10, 150)  # the range --results-per-candidate is meant for
COUNT_UNITS = (("10*9/L", 1.0), ("10*3/uL", 1.0), ("/uL", 1000.0))  # the same count, three spellings
COUNTS = frozenset({"6690-2", "777-3", "751-8", "731-0"})
BACKGROUND_DX = [(ICD10, "I10", "Essential (primary) hypertension"), (ICD10, "E11.9", "Type 2 diabetes mellitus"),
                 (ICD10CM, "J18.9", "Pneumonia, unspecified organism"), (ICD10, "N39.0", "Urinary tract infection"),
                 (ICD10CM, "I82.40", "Acute embolism and thrombosis of deep veins of lower extremity"),
                 (ICD10, "I21.9", "Acute myocardial infarction"), (ICD10, "C50.9", "Breast cancer"),
                 (ICD10CM, "C91.10", "Chronic lymphocytic leukemia of B-cell type"),
                 (ICD10, "C92.1", "Chronic myeloid leukaemia"), (ICD10, "D80.1", "Nonfamilial hypogammaglobulinaemia"),
                 (SNOMED, "38341003", "Hypertensive disorder"), (ICD10, "K21.9", "Gastro-oesophageal reflux"),
                 (ICD10, "J45.9", "Asthma"), (ICD10, "M54.5", "Low back pain")]
LEUKEMIA_DX = [(ICD10CM, "C92.02", "Acute myeloblastic leukemia, in relapse", None),
               (ICD10, "C92.000", "急性髓系白血病", "relapse"),
               (ICD10, "C92.0", "Acute myeloblastic leukaemia", None),
               (ICD10CM, "C91.02", "Acute lymphoblastic leukemia, in relapse", None),
               (ICD10CM, "C95.02", "Acute leukemia of unspecified cell type, in relapse", None),
               (ICD10, "C83.5", "Lymphoblastic (diffuse) lymphoma", "recurrence"),
               (ICD10CM, "c92.00", "Acute myeloblastic leukemia, not having achieved remission", None),
               (SNOMED, "91861009", "Acute myeloid leukemia", "relapse"),
               (ICDO3, "9837/3", "T lymphoblastic leukemia/lymphoma", None)]
DRUGS = [("197361", "Amlodipine 5 MG Oral Tablet"), ("860975", "Metformin 500 MG Oral Tablet"),
         ("1659149", "Piperacillin / Tazobactam Injection"), ("1807516", "Cytarabine 100 MG Injection"),
         ("313782", "Acetaminophen 325 MG Oral Tablet"), ("1665060", "Ceftriaxone 1000 MG Injection")]
ECOG_ANSWERS = [(LOINC, "LA9622-7", 0), (LOINC, "LA9623-5", 1), (LOINC, "LA9624-3", 2),
                (SNOMED, "425389002", 0), (SNOMED, "422512005", 1)]


class PatientChart(Chart):
    """One synthetic patient: the shared chart builder, whose ``add`` writes each resource as an NDJSON line of
    its type (now and then truncated: the defects the skip reports are tested with)."""

    def __init__(self, gen: Generator, pid: str, sex: str, leukemia: bool) -> None:
        super().__init__(pid, tagged=False, rng=gen.rng)
        self.gen = gen
        self.sex = sex
        self.leukemia = leukemia
        self.out: dict[str, list[bytes]] = {t: [] for t in TYPES}
        self.encounters: list[tuple[str, int]] = []

    def reference(self) -> Json:
        """The subject reference, absolute in 3 % of resources."""
        absolute = self.rng.random() < 0.03
        return {"reference": f"{BASE_URL}/Patient/{self.pid}" if absolute else f"Patient/{self.pid}"}

    def add(self, resource: Json) -> Json:
        line = orjson.dumps(resource)
        defect = self.rng.random()
        if defect < self.gen.truncate_rate:
            line = line[: len(line) // 2]
        self.out[resource["resourceType"]].append(line)
        return resource

    def encounter_ref(self) -> tuple[str, int]:
        return self.rng.choice(self.encounters)


class Generator:
    """Deterministic (seeded) writer of synthetic patients."""

    def __init__(self, seed: int, leukemia_rate: float, as_of: date, defects: bool = True,
                 results_per_candidate: int | None = None) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
        self.leukemia_rate = leukemia_rate
        self.results_per_candidate = results_per_candidate
        self.as_of = as_of
        self.truncate_rate = 0.000005 if defects else 0.0  # about one line in 200 000
        self.bad_date_rate = 0.0001 if defects else 0.0  # valid JSON that fails the R4B model
        self._days = [(as_of - timedelta(days=d)).isoformat() for d in range(0, 800)]

    def uid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def when(self, days_ago: int, hour: int = 8) -> str:
        return f"{self._days[max(0, min(days_ago, 799))]}T{hour:02d}:{self.rng.randrange(60):02d}:00+08:00"

    # -------------------------------------------------------------------- one patient
    def chart(self) -> PatientChart:
        leukemia = self.rng.random() < self.leukemia_rate
        c = PatientChart(self, self.uid(), self.rng.choice(("male", "female")), leukemia)
        self.patient(c)
        for _ in range(self.rng.randint(4, 7)):
            self.encounter(c)
        self.conditions(c)
        self.labs(c)
        self.vitals(c)
        if leukemia:
            self.workup(c)
        elif self.rng.random() < 0.25:
            self.serology(c)
        for _ in range(self.rng.randint(1, 4)):
            self.medication(c)
        return c

    def patient(self, c: PatientChart) -> None:
        age = self.rng.randint(8, 88) if not c.leukemia else self.rng.randint(10, 72)
        born = self.as_of - timedelta(days=age * 365 + self.rng.randrange(365))
        birth = born.isoformat() if self.rng.random() > 0.02 else born.isoformat()[:4]
        updated = self.when(1)
        mrn = f"SYN-{self.rng.getrandbits(40):010x}"
        c.patient(birth, c.sex, mrn=mrn, name="Synthetic Patient", updated=updated)

    def encounter(self, c: PatientChart) -> None:
        eid, days = self.uid(), self.rng.randrange(3, 720)
        inpatient = self.rng.random() < 0.3
        subject = c.reference()
        start, end = self.when(days, 9), self.when(max(0, days - (3 if inpatient else 0)), 17)
        c.encounters.append((eid, days))
        c.encounter(eid, coding(ACT_CODE, "IMP" if inpatient else "AMB"), start, end,
                    kind=concept(coding(SNOMED, "185349003", "Encounter for check up")), subject=subject)

    def condition(self, c: PatientChart, system: str, code: str, display: str, *, clinical: str | None = "active",
                  onset: int | None = None) -> None:
        codings = [coding(system, code, display)]
        if self.rng.random() < 0.2:
            codings.insert(0, coding(HIS_DX, f"HIS-{self.rng.randrange(9999):04d}", display))
        rid, updated, subject = self.uid(), self.when(2), c.reference()
        onset_at = self.when(onset if onset is not None else self.rng.randrange(5, 790))
        recorded = self.when(self.rng.randrange(1, 60), 15)
        c.condition(rid, concept(*codings), clinical=clinical, onset=onset_at, recorded=recorded, subject=subject,
                    updated=updated)

    def conditions(self, c: PatientChart) -> None:
        for _ in range(self.rng.choice((1, 2, 2, 3, 3, 4))):
            system, code, display = self.rng.choice(BACKGROUND_DX)
            clinical = self.rng.choice(("active", "active", "resolved"))
            self.condition(c, system, code, display, clinical=clinical)
        if c.leukemia:
            system, code, display, status = self.rng.choice(LEUKEMIA_DX)
            self.condition(c, system, code, display, clinical=status or "active", onset=self.rng.randrange(30, 700))

    # -------------------------------------------------------------------- observations
    def observation(self, c: PatientChart, code: Json, value: Json, days_ago: int, category: str = "laboratory",
                    ranges: list[Json] | None = None) -> None:
        eid, _ = c.encounter_ref()
        status = "final" if self.rng.random() > 0.02 else self.rng.choice(("amended", "corrected", "preliminary",
                                                                            "entered-in-error"))
        rid, updated, subject, effective = self.uid(), self.when(days_ago), c.reference(), self.when(days_ago)
        if self.rng.random() < self.bad_date_rate:
            effective = f"{self._days[days_ago][:4]}-13-45"
        issued = self.when(days_ago, 14).replace("+08:00", ".000+08:00")
        c.observation(rid, code, value, effective, status=status, category=category, encounter=eid, issued=issued,
                      ranges=ranges, subject=subject, updated=updated)

    def analyte(self, c: PatientChart, row: tuple[str, str, str, float, float, float, float], days_ago: int) -> None:
        code, display, unit, low, high, ref_low, ref_high = row
        scale = 1.0
        if code in COUNTS:
            unit, scale = self.rng.choice(COUNT_UNITS)
        if code == "1975-2" and self.rng.random() < 0.3:
            code, display, unit, scale = "14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma", "umol/L", 17.1
        value = round(self.rng.uniform(low, high) * scale, 1 if scale == 1.0 else 0)
        codings = [coding(LOINC, code, display)]
        if self.rng.random() < 0.1:
            codings.insert(0, coding(LAB, f"CHEM-{code.replace('-', '')}", display.split(" [")[0]))
        ranges = [{"low": qty(round(ref_low * scale, 1), unit), "high": qty(round(ref_high * scale, 1), unit)}]
        self.observation(c, concept(*codings, text=display.split(" [")[0]), {"valueQuantity": qty(value, unit)},
                         days_ago, ranges=ranges)

    def labs(self, c: PatientChart) -> None:
        if c.leukemia and self.results_per_candidate is not None:
            self.dense_labs(c, self.results_per_candidate)
            return
        for _ in range(4):
            days = self.rng.randrange(0, 400) if not c.leukemia else self.rng.randrange(0, 60)
            for row in CBC:
                self.analyte(c, row, days)
        for _ in range(3):
            days = self.rng.randrange(0, 400) if not c.leukemia else self.rng.randrange(0, 45)
            for row in CHEM:
                self.analyte(c, row, days)

    def dense_labs(self, c: PatientChart, count: int) -> None:
        """``count`` laboratory results: the liver panel (``DENSE_PANEL``) drawn on days of the last 60, the
        last panel cut short — three in four are concepts the criteria read."""
        for first in range(0, count, len(DENSE_PANEL)):
            days = self.rng.randrange(0, 60)
            for row in DENSE_PANEL[:count - first]:
                self.analyte(c, row, days)

    def vitals(self, c: PatientChart) -> None:
        for _eid, days in c.encounters[:5]:
            fahrenheit = self.rng.random() < 0.2
            temp = round(self.rng.uniform(36.0, 39.2), 1)
            temp_q = qty(round(temp * 9 / 5 + 32, 1), "[degF]") if fahrenheit else qty(temp, "Cel")
            self.observation(c, concept(coding(LOINC, "8310-5", "Body temperature")), {"valueQuantity": temp_q},
                             days, "vital-signs")
            self.observation(c, concept(coding(LOINC, "8867-4", "Heart rate")),
                             {"valueQuantity": qty(self.rng.randint(55, 120), "/min")}, days, "vital-signs")
            kg = round(self.rng.uniform(38, 110), 1)
            weight = qty(round(kg * 2.20462, 1), "[lb_av]") if self.rng.random() < 0.15 else qty(kg, "kg")
            self.observation(c, concept(coding(LOINC, "29463-7", "Body weight")), {"valueQuantity": weight}, days,
                             "vital-signs")
            bp = [{"code": concept(coding(LOINC, "8480-6", "Systolic blood pressure")),
                   "valueQuantity": qty(self.rng.randint(95, 170), "mm[Hg]")},
                  {"code": concept(coding(LOINC, "8462-4", "Diastolic blood pressure")),
                   "valueQuantity": qty(self.rng.randint(55, 100), "mm[Hg]")}]
            self.observation(c, concept(coding(LOINC, "85354-9", "Blood pressure panel")), {"component": bp}, days,
                             "vital-signs")

    def qualitative(self, c: PatientChart, code: str, display: str, positive: bool, days: int,
                    sct: bool = False) -> None:
        answer = (POS_SCT if positive else NEG_SCT) if sct else (POS_LA if positive else NEG_LA)
        self.observation(c, concept(coding(LOINC, code, display)), {"valueCodeableConcept": concept(answer)}, days)

    def serology(self, c: PatientChart, recent: bool = False) -> None:
        days = self.rng.randrange(1, 80) if recent else self.rng.randrange(1, 500)
        self.qualitative(c, "5196-1", "Hepatitis B virus surface Ag [Presence] in Serum", self.rng.random() < 0.03,
                         days)
        self.qualitative(c, "16128-1", "Hepatitis C virus Ab [Presence] in Serum", self.rng.random() < 0.03, days,
                         sct=True)
        self.qualitative(c, "56888-1", "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay",
                         self.rng.random() < 0.01, days, sct=True)

    def workup(self, c: PatientChart) -> None:
        """The leukaemia work-up: ECOG, CD7, echo, NYHA, blasts, hCG, serology, findings."""
        for step in (self.ecog, self.cd7, self.echo, self.blasts, self.findings):
            step(c)
        if c.sex == "female":
            self.qualitative(c, self.rng.choice(("2106-3", "2118-8")), "Choriogonadotropin [Presence]",
                             self.rng.random() < 0.05, self.rng.randrange(0, 20))
        self.serology(c, recent=True)

    def ecog(self, c: PatientChart) -> None:
        days = self.rng.randrange(0, 45)
        code = concept(coding(LOINC, "89247-1", "ECOG Performance Status score"))
        pick = self.rng.random()
        if pick < 0.5:
            value: Json = {"valueInteger": self.rng.choice((0, 1, 1, 2, 3))}
        else:
            system, answer, _ = self.rng.choice(ECOG_ANSWERS)
            value = {"valueCodeableConcept": concept(coding(system, answer))}
        self.observation(c, code, value, days, "exam")

    def cd7(self, c: PatientChart) -> None:
        days, pct = self.rng.randrange(0, 45), round(self.rng.uniform(5, 99), 1)
        cd7_code = self.rng.choice(("FC-CD7", "FC-CD7", "fc-cd7"))
        if self.rng.random() < 0.4:  # CD7 as a component of a flow panel
            cd3 = qty(round(self.rng.uniform(1, 90), 1), "%")
            cd7 = concept(coding(LAB, cd7_code, "CD7+ % of leukemic blasts"))
            comps = [{"code": concept(coding(LAB, "FC-CD3")), "valueQuantity": cd3},
                     {"code": cd7, "valueQuantity": qty(pct, "%")}]
            self.observation(c, concept(coding(LAB, "FLOW-PANEL", "Leukemia flow panel")), {"component": comps}, days)
            return
        self.observation(c, concept(coding(LAB, cd7_code, "CD7+ % of leukemic blasts (flow)")),
                         {"valueQuantity": qty(pct, "%")}, days)

    def echo(self, c: PatientChart) -> None:
        days, lvef = self.rng.randrange(0, 120), self.rng.choice((38, 45, 52, 58, 60, 62, 65, 68))
        value = qty(lvef / 100, "1") if self.rng.random() < 0.3 else qty(lvef, "%")
        self.observation(c, concept(coding(LOINC, "10230-1", "Left ventricular Ejection fraction")),
                         {"valueQuantity": value}, days, "imaging")
        if self.rng.random() < 0.4:
            self.observation(c, concept(coding(CARDIO, "NYHA", "NYHA functional class")),
                             {"valueString": self.rng.choice(("class I", "class II", "II", "III"))}, days, "exam")

    def blasts(self, c: PatientChart) -> None:
        days = self.rng.randrange(0, 60)
        self.observation(c, concept(coding(LOINC, "11150-0", "Blasts/100 leukocytes in Bone marrow")),
                         {"valueQuantity": qty(round(self.rng.uniform(3, 90), 1), "%")}, days)
        self.observation(c, concept(coding(LOINC, "26446-5", "Blasts/100 leukocytes in Blood")),
                         {"valueQuantity": qty(round(self.rng.uniform(0, 60), 1), "%")}, days)

    def findings(self, c: PatientChart) -> None:
        for code, display, rate in (("REFRACTORY", "Refractory disease", 0.3), ("CNSL", "CNS leukemia", 0.1)):
            if self.rng.random() < 0.6:
                present = self.rng.random() < rate
                answer = PRESENT if present else ABSENT
                self.observation(c, concept(coding(CLINICAL, code, display)),
                                 {"valueCodeableConcept": concept(answer)}, self.rng.randrange(0, 40), "exam")

    def medication(self, c: PatientChart) -> None:
        code, display = self.rng.choice(DRUGS)
        eid, days = c.encounter_ref()
        med = concept(coding(RXNORM, code, display))
        dosage: Json = {"dose": {"value": self.rng.choice((1, 2, 500)), "unit": "mg", "system": UCUM, "code": "mg"}}
        if c.leukemia and self.rng.random() < 0.05:
            med = concept(CART_CD7)
            dosage = {"dose": {"value": 2.5e8, "unit": "cells", "system": UCUM, "code": "{cells}"}}
        rid, subject, effective = self.uid(), c.reference(), self.when(days, 11)
        c.medication(rid, med, effective, dosage, encounter=eid, subject=subject)


def write_population(n: int, outdir: Path, seed: int = 20260615, leukemia_rate: float = 0.03,
                     as_of: date = date(2026, 6, 15), defects: bool = True,
                     progress: Callable[[int], None] | None = None, *,
                     results_per_candidate: int | None = None) -> dict[str, int]:
    """Write the export; returns the number of lines written per resource type. ``results_per_candidate``:
    each leukaemia patient's laboratory results are that many (see the module docstring); None: the panels
    everyone has."""
    if results_per_candidate is not None and results_per_candidate < 1:
        raise ValueError("results_per_candidate must be at least 1")
    if not 0.0 <= leukemia_rate <= 1.0:
        raise ValueError("leukemia_rate is a share between 0 and 1")
    outdir.mkdir(parents=True, exist_ok=True)
    gen = Generator(seed, leukemia_rate, as_of, defects, results_per_candidate)
    counts = dict.fromkeys(TYPES, 0)
    handles: dict[str, BinaryIO] = {t: (outdir / f"{t}.ndjson").open("wb", buffering=1 << 20) for t in TYPES}
    try:
        for i in range(n):
            chart = gen.chart()
            for rtype, lines in chart.out.items():
                if lines:
                    handles[rtype].write(b"\n".join(lines) + b"\n")
                    counts[rtype] += len(lines)
            if progress and (i + 1) % 10000 == 0:
                progress(i + 1)
    finally:
        for handle in handles.values():
            handle.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of patients")
    parser.add_argument("outdir", type=Path, help="output directory (write it under /tmp, not in the repo)")
    parser.add_argument("--seed", type=int, default=20260615)
    parser.add_argument("--leukemia-rate", type=float, default=0.03, help="share of patients with acute leukaemia")
    parser.add_argument("--results-per-candidate", type=int, default=None, metavar="K",
                        help="laboratory results per leukaemia patient (a lab-dense export, 10-150; default: the "
                             "CBC and chemistry panels everyone has)")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 6, 15))
    parser.add_argument("--no-defects", action="store_true", help="no invalid dates and no truncated lines")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = write_population(args.n, args.outdir, args.seed, args.leukemia_rate, args.as_of, not args.no_defects,
                              lambda k: print(f"  {k} patients", file=sys.stderr),
                              results_per_candidate=args.results_per_candidate)
    total = sum(counts.values())
    elapsed = time.perf_counter() - started
    print(f"{args.n} patients, {total} resources ({total / max(args.n, 1):.0f} per patient) in {elapsed:.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
