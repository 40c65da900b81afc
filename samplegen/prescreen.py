#!/usr/bin/env python3
"""Generate the synthetic pre-screen dataset in ``samples/prescreen/`` (issue #2).

Writes, deterministically (fixed seed, dates fixed relative to the as-of date 2026-06-15):

- ``bundle.json``: one FHIR R4 Bundle (type ``collection``) with every patient's Patient, Encounter,
  Condition and Observation resources;
- ``ndjson/{Patient,Condition,Observation,Encounter}.ndjson``: the same resources in the Bulk Data layout;
- ``intent.json``: for each patient, the verdict per criterion and the overall status *intended* by the
  author of each case from RULES.md §2 — hand-written here in ``CASES``, never produced by the engine.

Every patient is synthetic. The one exception to "all values invented" is ``cao2022``, the published case of
RULES.md §7 (Cao X et al., Exp Hematol Oncol 2022;11:67): her age, sex, diagnosis, marrow blasts and CD7
expression are published; every other value of hers carries the note "synthetic value". Every resource
carries the ``HTEST`` (test health data) security tag.

Resources are built by ``samplegen.chart.Chart``. Each is checked against the R4B model
(``bridge.fhirmodels.parse_resource``) and the official R4 JSON Schema (Draft 6, ``$BRIDGE_FHIR_SCHEMA`` or
``<repo>/../shared/fhir-data/hl7-fhir-r4-schema/fhir.schema.json``); any failure stops with a non-zero exit.

Usage, from the repository root: ``python -m samplegen.prescreen [--out DIR] [--schema FILE]``
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bridge.fhirmodels import parse_resource
from bridge.trial import load_trial
from samplegen.chart import Chart
from samplegen.kit import (
    ABSENT,
    AMBULATORY,
    BASE_URL,
    CARDIO,
    CLINICAL,
    HTEST,
    ICD10,
    ICD10CM,
    INPATIENT,
    LAB,
    LOINC,
    NEG_LA,
    NEG_SCT,
    POS_LA,
    POS_SCT,
    PRESENT,
    SNOMED,
    TZ,
    GenerationError,
    Json,
    bundle,
    coding,
    concept,
    dumps,
    qty,
    schema_file,
    validate,
    write,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "samples" / "prescreen"
AS_OF = date(2026, 6, 15)
SEED = 20260615

HIS_DX = "http://hospital.example.org/diagnosis"

# No data can make these criteria `unknown` (RULES.md §2 defines only met / not-met for them).
IMPOSSIBLE = {
    "exc-cns-leukemia": {"unknown": "RULES.md §2: CNS involvement recorded -> met; none recorded -> not-met "
                                    "('no record'); the engine's only unknown path (a CNS finding without a usable "
                                    "result) is covered by tests/unit/test_eligibility.py, not by the samples"},
    "exc-thrombosis": {"unknown": "RULES.md §2: an active thrombosis code -> met; condition-based exclusions with "
                                  "no matching record are not-met; no third outcome is defined"},
}


# ------------------------------------------------------------------------------------------ primitives
def day(days_ago: int) -> date:
    return AS_OF - timedelta(days=days_ago)


def when(days_ago: int, hour: int = 8) -> str:
    """A local dateTime ``days_ago`` days before the as-of date (negative: after it)."""
    return f"{day(days_ago).isoformat()}T{hour:02d}:00:00{TZ}"


def birth_on_as_of(years: int, shift_days: int = 0) -> str:
    """The birth date of someone who turns ``years`` on the as-of date (shifted by ``shift_days``)."""
    return (date(AS_OF.year - years, AS_OF.month, AS_OF.day) + timedelta(days=shift_days)).isoformat()


def ref_range(low: float, high: float, unit: str) -> list[Json]:
    return [{"low": qty(low, unit), "high": qty(high, unit)}]


# ------------------------------------------------------------------------------------------ the chart's conventions
# Resource ids are ``<pid>`` and ``<pid>-<suffix>``; times are whole hours ``days_ago`` days before the as-of date;
# every Observation belongs to the patient's one Encounter, ``<pid>-enc``.
def new_chart(pid: str) -> Chart:
    return Chart(pid, rng=random.Random(f"{SEED}-{pid}"))  # noqa: S311 - reproducible, not secrets


def encounter(c: Chart, inpatient: bool = True, days_ago: int = 12) -> Json:
    if inpatient:
        return c.encounter(c.rid("enc"), INPATIENT, when(days_ago, 10), status="in-progress")
    return c.encounter(c.rid("enc"), AMBULATORY, when(days_ago, 9), when(days_ago, 11))


def condition(c: Chart, suffix: str, code: Json, *, clinical: str | None = "active", verification: str = "confirmed",
              onset: int | None = None, recorded: int | None = 3, abated: int | None = None,
              category: str = "encounter-diagnosis", note: str | None = None) -> Json:
    """Onset and abatement at 08:00, recorded at 15:00, each ``n`` days before the as-of date when given."""
    return c.condition(c.rid(suffix), code, clinical=clinical, verification=verification, category=category,
                       onset=None if onset is None else when(onset), abated=None if abated is None else when(abated),
                       recorded=None if recorded is None else when(recorded, 15), note=note)


def observation(c: Chart, suffix: str, code: Json, value: Json, *, days_ago: int, category: str | None,
                status: str = "final", ranges: list[Json] | None = None, version: int | None = None,
                note: str | None = None, updated: str | None = None) -> Json:
    """``version`` sets meta.versionId (and a lastUpdated after the result); ``updated`` sets lastUpdated."""
    stamp = updated or (when(days_ago - version + 1, 18) if version else None)
    return c.observation(c.rid(suffix), code, value, when(days_ago), status=status, category=category,
                         encounter=c.rid("enc"), ranges=ranges, note=note, version=version, updated=stamp)


# ------------------------------------------------------------------------------------------ observation shapes
def ecog(c: Chart, score: int | Json, days_ago: int = 3, suffix: str = "ecog", **kw: Any) -> Json:
    """ECOG as an integer, or as an answer coding (LOINC LA96xx or SNOMED)."""
    value = {"valueInteger": score} if isinstance(score, int) else {"valueCodeableConcept": concept(score)}
    code = concept(coding(LOINC, "89247-1", "ECOG Performance Status score"))
    return observation(c, suffix, code, value, days_ago=days_ago, category="exam", **kw)


def nyha(c: Chart, value: Json, days_ago: int = 6) -> Json:
    code = concept(coding(CARDIO, "NYHA", "NYHA functional class"))
    return observation(c, "nyha", code, value, days_ago=days_ago, category="exam")


def cd7(c: Chart, percent: float, days_ago: int = 5, **kw: Any) -> Json:
    code = concept(coding(LAB, "FC-CD7", "CD7+ % of leukemic blasts (flow)"), text="CD7 on blasts")
    return observation(c, kw.pop("suffix", "cd7"), code, {"valueQuantity": qty(percent, "%")},
                         days_ago=days_ago, category="laboratory", **kw)


def marrow_blasts(c: Chart, percent: float, days_ago: int = 5, **kw: Any) -> Json:
    code = concept(coding(LOINC, "11150-0", "Blasts/100 leukocytes in Bone marrow"))
    return observation(c, "marrow-blasts", code, {"valueQuantity": qty(percent, "%")}, days_ago=days_ago,
                         category="laboratory", **kw)


def lvef(c: Chart, value: float, unit: str = "%", days_ago: int = 20, suffix: str = "lvef") -> Json:
    code = concept(coding(LOINC, "10230-1", "Left ventricular Ejection fraction"))
    return observation(c, suffix, code, {"valueQuantity": qty(value, unit)}, days_ago=days_ago, category="imaging")


def enzyme(c: Chart, which: str, value: float, uln: float | None = 40, days_ago: int = 2,
           local_first: bool = False) -> Json:
    """AST or ALT in U/L; with a reference range (0-ULN) unless ``uln`` is None."""
    loinc = {"ast": coding(LOINC, "1920-8", "AST [Enzymatic activity/volume] in Serum or Plasma"),
             "alt": coding(LOINC, "1742-6", "ALT [Enzymatic activity/volume] in Serum or Plasma")}[which]
    codings = [coding(LAB, f"CHEM-{which.upper()}", which.upper()), loinc] if local_first else [loinc]
    ranges = ref_range(0, uln, "U/L") if uln is not None else None
    return observation(c, which, concept(*codings), {"valueQuantity": qty(value, "U/L")}, days_ago=days_ago,
                         category="laboratory", ranges=ranges)


BILI_MASS = coding(LOINC, "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma")
BILI_MOLES = coding(LOINC, "14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma")
BILIRUBIN = {"mg/dL": (BILI_MASS, (0.2, 1.2)), "umol/L": (BILI_MOLES, (3.4, 20.5))}


def bilirubin(c: Chart, value: float, unit: str = "mg/dL", days_ago: int = 2) -> Json:
    """Total bilirubin: LOINC 1975-2 (mass) for mg/dL, 14631-6 (moles) for umol/L; another unit on 1975-2."""
    code, normal = BILIRUBIN.get(unit, (BILI_MASS, None))
    ranges = ref_range(*normal, unit) if normal else None
    return observation(c, "bili", concept(code), {"valueQuantity": qty(value, unit)}, days_ago=days_ago,
                         category="laboratory", ranges=ranges)


def blood_counts(c: Chart, unit: str, days_ago: int = 2) -> None:
    """ANC and platelets (not read by eligibility; present as a real chart would have them)."""
    anc = round(c.rng.uniform(0.3, 2.5), 2)
    plt = int(c.rng.uniform(20, 180))
    observation(c, "anc", concept(coding(LOINC, "751-8", "Neutrophils [#/volume] in Blood by Automated count")),
                  {"valueQuantity": qty(anc, unit)}, days_ago=days_ago, category="laboratory")
    observation(c, "plt", concept(coding(LOINC, "777-3", "Platelets [#/volume] in Blood by Automated count")),
                  {"valueQuantity": qty(plt, unit)}, days_ago=days_ago, category="laboratory")


def vital(c: Chart, suffix: str, loinc: str, display: str, value: float, unit: str, days_ago: int = 1) -> Json:
    return observation(c, suffix, concept(coding(LOINC, loinc, display)), {"valueQuantity": qty(value, unit)},
                         days_ago=days_ago, category="vital-signs")


def qualitative(c: Chart, suffix: str, code: Json, answer: Json, days_ago: int, **kw: Any) -> Json:
    return observation(c, suffix, concept(code), {"valueCodeableConcept": concept(answer)}, days_ago=days_ago,
                         category="laboratory", **kw)


def hcg(c: Chart, positive: bool, days_ago: int = 4, serum: bool = False, **kw: Any) -> Json:
    code = coding(LOINC, "2118-8", "hCG [Presence] in Serum or Plasma") if serum else \
        coding(LOINC, "2106-3", "hCG [Presence] in Urine")
    return qualitative(c, kw.pop("suffix", "hcg"), code, POS_LA if positive else NEG_LA, days_ago, **kw)


def hbsag(c: Chart, positive: bool, days_ago: int = 9) -> Json:
    code = coding(LOINC, "5196-1", "Hepatitis B virus surface Ag [Presence] in Serum")
    return qualitative(c, "hbsag", code, POS_LA if positive else NEG_LA, days_ago)


def hcv_ab(c: Chart, positive: bool, days_ago: int = 9) -> Json:
    code = coding(LOINC, "16128-1", "Hepatitis C virus Ab [Presence] in Serum")
    return qualitative(c, "hcv-ab", code, POS_SCT if positive else NEG_SCT, days_ago)


def hbv_dna(c: Chart, iu_ml: float, days_ago: int = 9) -> Json:
    code = concept(coding(LOINC, "29615-2", "Hepatitis B virus DNA [#/volume] (viral load) in Serum or Plasma"))
    return observation(c, "hbv-dna", code, {"valueQuantity": qty(iu_ml, "[IU]/mL", "IU/mL")}, days_ago=days_ago,
                         category="laboratory")


def hiv(c: Chart, positive: bool, days_ago: int = 9) -> Json:
    code = coding(LOINC, "56888-1", "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay")
    return qualitative(c, "hiv", code, POS_SCT if positive else NEG_SCT, days_ago)


def finding(c: Chart, suffix: str, code: str, display: str, present: bool, days_ago: int = 4) -> Json:
    """A site-coded finding (REFRACTORY, CNSL, ...) recorded present or absent."""
    return observation(c, suffix, concept(coding(CLINICAL, code, display)),
                         {"valueCodeableConcept": concept(PRESENT if present else ABSENT)},
                         days_ago=days_ago, category="exam")


# ------------------------------------------------------------------------------------------ condition shapes
def icd(system: str, code: str, display: str, local: str | None = None) -> Json:
    """An ICD-10 / ICD-10-CM CodeableConcept; with ``local``, a hospital coding comes first."""
    codings = [coding(HIS_DX, local, display)] if local else []
    return concept(*codings, coding(system, code, display))


AML_CN = ("C92.000", "急性髓系白血病")  # ICD-10 Chinese national clinical version (国家临床版 2.0)


# ------------------------------------------------------------------------------------------ standard work-up
WORKUP = ("ecog", "cd7", "lvef", "ast", "alt", "bili", "hcg", "hbsag", "hcv", "hiv")


def workup(c: Chart, sex: str, skip: tuple[str, ...] = ()) -> None:
    """The pre-screen tests a candidate would have, with normal synthetic values; ``skip`` leaves some out."""
    unknown = set(skip) - set(WORKUP)
    if unknown:
        raise GenerationError(f"{c.pid}: unknown work-up items {sorted(unknown)}")
    steps: dict[str, Callable[[], object]] = {
        "ecog": lambda: ecog(c, c.rng.choice([0, 1])),
        "cd7": lambda: cd7(c, round(c.rng.uniform(55, 98), 1)),
        "lvef": lambda: lvef(c, c.rng.choice([58, 60, 62, 65, 68])),
        "ast": lambda: enzyme(c, "ast", c.rng.choice([18, 22, 27, 31, 36])),
        "alt": lambda: enzyme(c, "alt", c.rng.choice([15, 21, 26, 33, 39])),
        "bili": lambda: bilirubin(c, c.rng.choice([0.5, 0.7, 0.8, 1.0])),
        "hcg": lambda: hcg(c, False) if sex == "female" else None,
        "hbsag": lambda: hbsag(c, False),
        "hcv": lambda: hcv_ab(c, False),
        "hiv": lambda: hiv(c, False),
    }
    for name in WORKUP:
        if name not in skip:
            steps[name]()


def standard(c: Chart, birth: str | None, sex: str, dx: Callable[[Chart], object] | None,
             skip: tuple[str, ...] = (), inpatient: bool = True) -> None:
    """Patient, Encounter, the leukemia diagnosis (``dx``) and the standard work-up."""
    c.patient(birth, sex)
    encounter(c, inpatient)
    if dx is not None:
        dx(c)
    workup(c, sex, skip)


def aml_cm_relapse(c: Chart) -> None:
    condition(c, "dx", icd(ICD10CM, "C92.02", "Acute myeloblastic leukemia, in relapse"), onset=400)


# ------------------------------------------------------------------------------------------ the cases
@dataclass(frozen=True)
class Case:
    """One synthetic patient: what it exercises, its chart, and its intended verdicts and status."""

    pid: str
    exercises: str
    status: str
    build: Callable[[Chart], None]
    intent: dict[str, str] = field(default_factory=dict)  # deviations from the default verdicts
    reason: str | None = None  # not screened (RULES.md §2): deceased, non-human or no-patient-resource


CASES: list[Case] = []
NOT_SCREENED_REASONS = ("deceased", "non-human", "no-patient-resource")


def case(pid: str, exercises: str, status: str, **intent: str) -> Callable[[Callable[[Chart], None]], None]:
    def register(build: Callable[[Chart], None]) -> None:
        CASES.append(Case(pid, exercises, status, build, {k.replace("_", "-"): v for k, v in intent.items()}))
    return register


def not_screened(pid: str, exercises: str, reason: str) -> Callable[[Callable[[Chart], None]], None]:
    """A patient the rules are not applied to; its intent is the reason in the JSON's ``notScreened``."""
    if reason not in NOT_SCREENED_REASONS:
        raise GenerationError(f"{pid}: unknown not-screened reason {reason!r}")

    def register(build: Callable[[Chart], None]) -> None:
        CASES.append(Case(pid, exercises, "not-screened", build, reason=reason))
    return register


# --- cases p01-p44 and the published case; the intent keywords list only deviations from a clean candidate
@case("p01", "ICD-10-CM C92.02 (in relapse) with a local coding first; ECOG as integer 0; negative CNS finding; "
      "male", "candidate")
def _p01(c: Chart) -> None:
    standard(c, "1991-09-23", "male", lambda c: condition(
        c, "dx", icd(ICD10CM, "C92.02", "Acute myeloblastic leukemia, in relapse", local="HIS-DX-0412"), onset=420),
        skip=("ecog",))
    ecog(c, 0)
    blood_counts(c, unit="10*9/L")
    vital(c, "temp", "8310-5", "Body temperature", 36.8, "Cel")
    finding(c, "csf", "CNSL", "CNS leukemia (CSF cytology)", present=False)


@case("p02", "Chinese national ICD-10 C92.000 with clinicalStatus relapse; ECOG as LOINC answer LA9624-3 (=2); "
      "bilirubin exactly 34.2 umol/L (= 2.0 mg/dL, passes); LVEF 0.5 in unit '1' (passes); negative serum hCG",
      "candidate")
def _p02(c: Chart) -> None:
    standard(c, "1998-02-11", "female", lambda c: condition(
        c, "dx", icd(ICD10, *AML_CN), clinical="relapse", onset=300), skip=("ecog", "bili", "lvef", "hcg"))
    ecog(c, coding(LOINC, "LA9624-3", "Ambulatory and capable of all selfcare but unable to carry out any work "
                   "activities"))
    bilirubin(c, 34.2, "umol/L")
    lvef(c, 0.5, "1")
    hcg(c, False, serum=True, days_ago=5)


@case("p03", "T-ALL ICD-10-CM C91.02; age exactly 12; ECOG as SNOMED (grade 1); NYHA 'class II' text without "
      "LVEF; AST/ALT without referenceRange (default ULN 40), AST 110 U/L with a local coding first; outpatient",
      "candidate")
def _p03(c: Chart) -> None:
    standard(c, birth_on_as_of(12), "male", lambda c: condition(
        c, "dx", icd(ICD10CM, "C91.02", "Acute lymphoblastic leukemia, in relapse"), onset=500),
        skip=("ecog", "lvef", "ast", "alt"), inpatient=False)
    ecog(c, coding(SNOMED, "422512005", "ECOG performance status - grade 1"))
    nyha(c, {"valueString": "class II"})
    enzyme(c, "ast", 110, uln=None, local_first=True)
    enzyme(c, "alt", 35, uln=None)


@case("p04", "MPAL ICD-10-CM C95.02; age exactly 65; CD7 amended (v1 preliminary 25 % -> v2 amended 72 %, same "
      "id); an ECOG 4 dated after the as-of date (ignored); counts in 10*3/uL", "candidate")
def _p04(c: Chart) -> None:
    standard(c, birth_on_as_of(65), "female", lambda c: condition(
        c, "dx", icd(ICD10CM, "C95.02", "Acute leukemia of unspecified cell type, in relapse"), onset=260),
        skip=("ecog", "cd7"))
    blood_counts(c, unit="10*3/uL")
    ecog(c, 1, days_ago=3)
    ecog(c, 4, days_ago=-5, suffix="ecog-future")
    cd7(c, 25.0, days_ago=6, status="preliminary", version=1)
    cd7(c, 72.0, days_ago=6, status="amended", version=2)


@case("p05", "T-LBL WHO ICD-10 C83.5 with clinicalStatus recurrence; birth year only (1980: 45 or 46, decides "
      "met); LVEF 42 % then 58 % (latest wins); a positive hCG entered-in-error after a negative one",
      "candidate")
def _p05(c: Chart) -> None:
    standard(c, "1980", "female", lambda c: condition(
        c, "dx", icd(ICD10, "C83.5", "Lymphoblastic (diffuse) lymphoma"), clinical="recurrence", onset=700),
        skip=("lvef", "hcg"))
    lvef(c, 42, days_ago=60, suffix="lvef-1")
    lvef(c, 58, days_ago=7, suffix="lvef-2")
    hcg(c, False, days_ago=10, suffix="hcg-1")
    hcg(c, True, days_ago=2, suffix="hcg-2", status="entered-in-error")


@case("p06", "refractory AML: ICD-10-CM C92.00 (not in relapse) plus a REFRACTORY finding; AST exactly 3x ULN "
      "(120 U/L, reference high 40) passes", "candidate")
def _p06(c: Chart) -> None:
    standard(c, "1972-12-01", "male", lambda c: condition(
        c, "dx", icd(ICD10CM, "C92.00", "Acute myeloblastic leukemia, not having achieved remission"), onset=150),
        skip=("ast",))
    finding(c, "refractory", "REFRACTORY", "Refractory disease (primary induction failure)", present=True)
    enzyme(c, "ast", 120, uln=40)


@case("p07", "AML WHO ICD-10 C92.0 active, relapse/refractory status not documented", "potential-candidate",
      inc_diagnosis="unknown")
def _p07(c: Chart) -> None:
    standard(c, "1985-04-30", "male", lambda c: condition(
        c, "dx", icd(ICD10, "C92.0", "Acute myeloblastic leukaemia"), onset=90))


@case("p08", "no acute leukemia: CML C92.1 only; an entered-in-error C92.02 Condition (ignored)", "ineligible",
      inc_diagnosis="not-met")
def _p08(c: Chart) -> None:
    def dx(c: Chart) -> None:
        condition(c, "dx", icd(ICD10, "C92.1", "Chronic myeloid leukaemia"), onset=800)
        condition(c, "dx-eie", icd(ICD10CM, "C92.02", "Acute myeloblastic leukemia, in relapse"), clinical=None,
                    verification="entered-in-error", onset=30)
    standard(c, "1979-07-19", "male", dx)


@case("p09", "T-LBL ICD-10-CM C83.52 (fifth character = site, not relapse), active, no r/r status",
      "potential-candidate", inc_diagnosis="unknown")
def _p09(c: Chart) -> None:
    standard(c, "2001-01-05", "male", lambda c: condition(
        c, "dx", icd(ICD10CM, "C83.52", "Lymphoblastic (diffuse) lymphoma, intrathoracic lymph nodes"), onset=60))


@case("p10", "age 66 (66th birthday on the as-of date)", "ineligible", inc_age="not-met")
def _p10(c: Chart) -> None:
    standard(c, birth_on_as_of(66), "male", aml_cm_relapse)


@case("p11", "age 11 (12th birthday is the day after the as-of date)", "ineligible", inc_age="not-met")
def _p11(c: Chart) -> None:
    standard(c, birth_on_as_of(12, shift_days=1), "female", aml_cm_relapse)


@case("p12", "birth year only 2014 (11 or 12 on the as-of date); outpatient", "potential-candidate",
      inc_age="unknown")
def _p12(c: Chart) -> None:
    standard(c, "2014", "male", aml_cm_relapse, inpatient=False)


@case("p13", "birth year-month 1960-06 (65 or 66 on the as-of date)", "potential-candidate", inc_age="unknown")
def _p13(c: Chart) -> None:
    standard(c, "1960-06", "male", aml_cm_relapse)


@case("p14", "ECOG 3 as SNOMED answer", "ineligible", inc_ecog="not-met")
def _p14(c: Chart) -> None:
    standard(c, "1966-03-14", "male", aml_cm_relapse, skip=("ecog",))
    ecog(c, coding(SNOMED, "423053003", "ECOG performance status - grade 3"))


@case("p15", "ECOG only 45 days old (outside 30 days)", "potential-candidate", inc_ecog="unknown")
def _p15(c: Chart) -> None:
    standard(c, "1993-10-08", "male", aml_cm_relapse, skip=("ecog",))
    ecog(c, 1, days_ago=45)


@case("p16", "female without a pregnancy test; ECOG 4 entered-in-error after ECOG 1 (ECOG met)",
      "potential-candidate", exc_pregnancy="unknown")
def _p16(c: Chart) -> None:
    standard(c, "1995-05-21", "female", aml_cm_relapse, skip=("ecog", "hcg"))
    ecog(c, 1, days_ago=10, suffix="ecog-1")
    ecog(c, 4, days_ago=2, suffix="ecog-2", status="entered-in-error")


@case("p17", "CD7+ blasts exactly 30 % (> 30 needed)", "ineligible", inc_cd7_expression="not-met")
def _p17(c: Chart) -> None:
    standard(c, "1988-08-08", "male", aml_cm_relapse, skip=("cd7",))
    cd7(c, 30.0)


@case("p18", "CD7 reported only as LOINC 8135-6 (% of all cells, not of blasts: not used)", "potential-candidate",
      inc_cd7_expression="unknown")
def _p18(c: Chart) -> None:
    standard(c, "1990-12-12", "male", aml_cm_relapse, skip=("cd7",))
    code = concept(coding(LOINC, "8135-6", "CD7 cells/100 cells in Blood"))
    observation(c, "cd7-all", code, {"valueQuantity": qty(64.0, "%")}, days_ago=5, category="laboratory")


@case("p19", "LVEF 40 % and NYHA 'III' (Roman numeral text)", "ineligible", inc_cardiac="not-met")
def _p19(c: Chart) -> None:
    standard(c, "1968-11-30", "male", aml_cm_relapse, skip=("lvef",))
    lvef(c, 40)
    nyha(c, {"valueCodeableConcept": {"text": "III"}})


@case("p20", "LVEF 45 % without NYHA; ICD-10-CM code written in lower case (c92.02: still in relapse)",
      "potential-candidate", inc_cardiac="unknown")
def _p20(c: Chart) -> None:
    standard(c, "1975-02-02", "male", lambda c: condition(
        c, "dx", icd(ICD10CM, "c92.02", "Acute myeloblastic leukemia, in relapse"), onset=380), skip=("lvef",))
    lvef(c, 45)


@case("p21", "ALT 200 U/L with reference high 40 (5x ULN), local coding first", "ineligible",
      inc_organ_function="not-met")
def _p21(c: Chart) -> None:
    standard(c, "1983-06-06", "male", aml_cm_relapse, skip=("alt",))
    enzyme(c, "alt", 200, uln=40, local_first=True)


@case("p22", "total bilirubin in an unconvertible unit (mmol/mol)", "potential-candidate",
      inc_organ_function="unknown")
def _p22(c: Chart) -> None:
    standard(c, "1987-09-17", "male", aml_cm_relapse, skip=("bili",))
    bilirubin(c, 1.1, "mmol/mol")


@case("p23", "female with a positive urine hCG 3 days ago", "ineligible", exc_pregnancy="met")
def _p23(c: Chart) -> None:
    standard(c, "1999-03-03", "female", aml_cm_relapse, skip=("hcg",))
    hcg(c, True, days_ago=3)


@case("p24", "female whose only (negative) hCG is 20 days old (outside 14 days)", "potential-candidate",
      exc_pregnancy="unknown")
def _p24(c: Chart) -> None:
    standard(c, "1992-07-27", "female", aml_cm_relapse, skip=("hcg",))
    hcg(c, False, days_ago=20)


@case("p25", "D80.1 non-familial hypogammaglobulinaemia (not primary immunodeficiency); AML coded in SNOMED CT "
      "(91861009) with clinicalStatus recurrence", "candidate")
def _p25(c: Chart) -> None:
    standard(c, "1970-01-25", "male", lambda c: condition(
        c, "dx", concept(coding(SNOMED, "91861009", "Acute myeloid leukemia")), clinical="recurrence", onset=610))
    condition(c, "d80", icd(ICD10, "D80.1", "Nonfamilial hypogammaglobulinaemia"), onset=200)


@case("p26", "D81.9 combined immunodeficiency (primary)", "ineligible", exc_congenital_immunodeficiency="met")
def _p26(c: Chart) -> None:
    standard(c, "2005-05-05", "male", aml_cm_relapse)
    condition(c, "d81", icd(ICD10, "D81.9", "Combined immunodeficiency, unspecified"), category="problem-list-item",
                recorded=900)


@case("p27", "D84.9 immunodeficiency, unspecified (congenital or acquired: review)", "potential-candidate",
      exc_congenital_immunodeficiency="unknown")
def _p27(c: Chart) -> None:
    standard(c, "1968-10-10", "male", aml_cm_relapse)
    condition(c, "d84", icd(ICD10, "D84.9", "Immunodeficiency, unspecified"), onset=120)


@case("p28", "CNS involvement: positive CSF finding (site code CNSL)", "ineligible", exc_cns_leukemia="met")
def _p28(c: Chart) -> None:
    standard(c, "1997-04-14", "male", aml_cm_relapse)
    finding(c, "csf", "CNSL", "CNS leukemia (CSF cytology)", present=True)


@case("p44", "CNS involvement recorded as a Condition with the site code CNSL", "ineligible",
      exc_cns_leukemia="met")
def _p44(c: Chart) -> None:
    standard(c, "2002-02-20", "female", aml_cm_relapse)
    condition(c, "cnsl", concept(coding(CLINICAL, "CNSL", "CNS leukemia")), onset=20)


@case("p29", "sepsis A41.9 active", "ineligible", exc_active_infection="met")
def _p29(c: Chart) -> None:
    standard(c, "1963-12-24", "male", aml_cm_relapse)
    condition(c, "sepsis", icd(ICD10, "A41.9", "Sepsis, unspecified organism"), onset=4)


@case("p30", "pneumonia J18.9 with onset 10 days ago", "potential-candidate", exc_active_infection="unknown")
def _p30(c: Chart) -> None:
    standard(c, "1981-08-18", "male", aml_cm_relapse)
    condition(c, "pneumonia", icd(ICD10, "J18.9", "Pneumonia, unspecified"), onset=10)


@case("p31", "pneumonia J18.9 with onset 60 days ago (outside 30 days); superficial thrombophlebitis I80.0; old "
      "MI I21.9 eight months ago (outside 6 months)", "candidate")
def _p31(c: Chart) -> None:
    standard(c, "1962-02-28", "male", aml_cm_relapse)
    condition(c, "pneumonia", icd(ICD10, "J18.9", "Pneumonia, unspecified"), onset=60, recorded=58)
    condition(c, "i80", icd(ICD10, "I80.0", "Phlebitis and thrombophlebitis of superficial vessels of lower "
                           "extremities"), onset=25)
    condition(c, "mi", icd(ICD10, "I21.9", "Acute myocardial infarction, unspecified"), clinical="resolved",
                onset=243, abated=200, recorded=243)


@case("p32", "HBsAg positive", "ineligible", exc_hepatitis="met")
def _p32(c: Chart) -> None:
    standard(c, "1974-09-09", "male", aml_cm_relapse, skip=("hbsag",))
    hbsag(c, True)


@case("p33", "HBV DNA 2000 IU/mL with HBsAg and HCV antibody negative", "ineligible", exc_hepatitis="met")
def _p33(c: Chart) -> None:
    standard(c, "1969-06-01", "male", aml_cm_relapse)
    hbv_dna(c, 2000)


@case("p34", "HCV antibody positive, no HCV RNA result", "potential-candidate", exc_hepatitis="unknown")
def _p34(c: Chart) -> None:
    standard(c, "1977-11-11", "male", aml_cm_relapse, skip=("hcv",))
    hcv_ab(c, True)


@case("p35", "HIV Ag/Ab positive", "ineligible", exc_hiv="met")
def _p35(c: Chart) -> None:
    standard(c, "1986-01-16", "male", aml_cm_relapse, skip=("hiv",))
    hiv(c, True)


@case("p36", "HIV negative 100 days ago (outside 90 days); outpatient", "potential-candidate", exc_hiv="unknown")
def _p36(c: Chart) -> None:
    standard(c, "1994-04-04", "male", aml_cm_relapse, skip=("hiv",), inpatient=False)
    hiv(c, False, days_ago=100)


@case("p37", "deep vein thrombosis ICD-10-CM I82.409 (I82.4) active", "ineligible", exc_thrombosis="met")
def _p37(c: Chart) -> None:
    standard(c, "1961-07-07", "male", aml_cm_relapse)
    condition(c, "dvt", icd(ICD10CM, "I82.409", "Acute embolism and thrombosis of unspecified deep veins of "
                           "unspecified lower extremity"), onset=15)


@case("p38", "myocardial infarction I21.9 three months ago, clinicalStatus resolved (still counts)", "ineligible",
      exc_cardiac_event="met")
def _p38(c: Chart) -> None:
    standard(c, "1964-03-19", "male", aml_cm_relapse)
    condition(c, "mi", icd(ICD10, "I21.9", "Acute myocardial infarction, unspecified"), clinical="resolved",
                onset=91, abated=60, recorded=91)


@case("p39", "old MI I25.2 with onset 2 months ago", "ineligible", exc_cardiac_event="met")
def _p39(c: Chart) -> None:
    standard(c, "1960-12-31", "male", aml_cm_relapse)
    condition(c, "mi", icd(ICD10, "I25.2", "Old myocardial infarction"), onset=61)


@case("p40", "myocardial infarction I21.9 with no onset and no recorded date", "potential-candidate",
      exc_cardiac_event="unknown")
def _p40(c: Chart) -> None:
    standard(c, "1967-05-15", "male", aml_cm_relapse)
    condition(c, "mi", icd(ICD10, "I21.9", "Acute myocardial infarction, unspecified"), category="problem-list-item",
                recorded=None)


@case("p41", "newly admitted, work-up pending: no test results at all (female)", "potential-candidate",
      inc_ecog="unknown", inc_cd7_expression="unknown", inc_cardiac="unknown", inc_organ_function="unknown",
      exc_pregnancy="unknown", exc_hepatitis="unknown", exc_hiv="unknown")
def _p41(c: Chart) -> None:
    standard(c, "2003-08-29", "female", aml_cm_relapse, skip=WORKUP)


@case("p42", "ALL of unstated lineage (WHO C91.0, clinicalStatus relapse): CD7 decides, 8 % CD7+", "ineligible",
      inc_cd7_expression="not-met")
def _p42(c: Chart) -> None:
    standard(c, "2000-10-20", "male", lambda c: condition(
        c, "dx", icd(ICD10, "C91.0", "Acute lymphoblastic leukaemia"), clinical="relapse", onset=330), skip=("cd7",))
    cd7(c, 8.0)


@case("p43", "CD7+ blasts reported with a comparator, '<50 %' (may be above or below 30)", "potential-candidate",
      inc_cd7_expression="unknown")
def _p43(c: Chart) -> None:
    standard(c, "1989-03-23", "female", aml_cm_relapse, skip=("cd7",))
    observation(c, "cd7", concept(coding(LAB, "FC-CD7", "CD7+ % of leukemic blasts (flow)")),
                  {"valueQuantity": qty(50.0, "%", comparator="<")}, days_ago=5, category="laboratory")


# --- p45-p58 (issue 12): messy values a real EHR sends -- usable values, qualitative tests, versions, who is screened
@case("p45", "quantitative serum hCG 2 mIU/mL (m[IU]/mL; < 5 is negative, not 'any number above 0')", "candidate")
def _p45(c: Chart) -> None:
    standard(c, "1994-10-02", "female", aml_cm_relapse, skip=("hcg",))
    observation(c, "hcg", concept(coding(LOINC, "2118-8", "hCG [Presence] in Serum or Plasma")),
                  {"valueQuantity": qty(2, "m[IU]/mL", "mIU/mL")}, days_ago=4, category="laboratory")


@case("p46", "HBsAg as a signal-to-cut-off index 0.35 {s_co_ratio} (< 1.0 is negative)", "candidate")
def _p46(c: Chart) -> None:
    standard(c, "1976-03-14", "male", aml_cm_relapse, skip=("hbsag",))
    observation(c, "hbsag", concept(coding(LOINC, "5196-1", "Hepatitis B virus surface Ag [Presence] in Serum")),
                  {"valueQuantity": qty(0.35, "{s_co_ratio}", "S/CO")}, days_ago=9, category="laboratory")


def hbv_dna_as(c: Chart, value: float, unit: Json) -> Json:
    code = concept(coding(LOINC, "29615-2", "Hepatitis B virus DNA [#/volume] (viral load) in Serum or Plasma"))
    return observation(c, "hbv-dna", code, {"valueQuantity": {"value": value, **unit}}, days_ago=9,
                         category="laboratory")


@case("p47", "HBV DNA 800 copies/mL (assay-dependent: not usable, an unknown value against the 1000 IU/mL "
      "threshold, never dropped) beside negative HBsAg and HCV antibody", "potential-candidate",
      exc_hepatitis="unknown")
def _p47(c: Chart) -> None:
    standard(c, "1984-05-26", "male", aml_cm_relapse)
    hbv_dna_as(c, 800, {"unit": "copies/mL", "system": "http://unitsofmeasure.org", "code": "{copies}/mL"})


@case("p48", "HBV DNA 2000 with the unit only as text 'IU/mL' (no UCUM code): the international unit [IU]/mL, "
      "above 1000", "ineligible", exc_hepatitis="met")
def _p48(c: Chart) -> None:
    standard(c, "1971-12-19", "male", aml_cm_relapse)
    hbv_dna_as(c, 2000, {"unit": "IU/mL"})


@case("p49", "LVEF 55 in unit '1' (a fraction: 5500 %, outside 0-100 %: not usable), no NYHA class",
      "potential-candidate", inc_cardiac="unknown")
def _p49(c: Chart) -> None:
    standard(c, "1982-01-30", "male", aml_cm_relapse, skip=("lvef",))
    lvef(c, 55, "1")


@case("p50", "AST -30 U/L (negative: outside 0-100000 U/L, not usable)", "potential-candidate",
      inc_organ_function="unknown")
def _p50(c: Chart) -> None:
    standard(c, "1990-07-08", "male", aml_cm_relapse, skip=("ast",))
    enzyme(c, "ast", -30)


@case("p51", "CD7+ blasts 1e12 % (outside 0-100 %: not usable)", "potential-candidate", inc_cd7_expression="unknown")
def _p51(c: Chart) -> None:
    standard(c, "1987-02-17", "female", aml_cm_relapse, skip=("cd7",))
    cd7(c, 1e12)


@case("p52", "AST 100 U/L whose reference range high is 0 U/L (not usable: the configured default ULN 40 applies, "
      "2.5x ULN, with a warning; no division by zero)", "candidate")
def _p52(c: Chart) -> None:
    standard(c, "1966-09-04", "male", aml_cm_relapse, skip=("ast",))
    observation(c, "ast", concept(coding(LOINC, "1920-8", "AST [Enzymatic activity/volume] in Serum or Plasma")),
                  {"valueQuantity": qty(100, "U/L")}, days_ago=2, category="laboratory",
                  ranges=ref_range(0, 0, "U/L"))


@case("p53", "CD7 amended 72 % listed before its preliminary 25 % (same id, no versionId or lastUpdated): status "
      "precedence, the amended version wins over the later-listed preliminary", "candidate")
def _p53(c: Chart) -> None:
    standard(c, "1993-04-11", "male", aml_cm_relapse, skip=("cd7",))
    cd7(c, 72.0, days_ago=6, status="amended")
    cd7(c, 25.0, days_ago=6, status="preliminary")


@case("p54", "ECOG with two versions (same id, no versionId): lastUpdated 2026-06-12T11:00:00Z (ECOG 1, listed "
      "first) and 2026-06-12T18:00:00+08:00 (= 10:00Z, ECOG 3, listed second); as instants the 11:00Z version is "
      "the newer (as text, or by arrival, ECOG 3 would win)", "candidate")
def _p54(c: Chart) -> None:
    standard(c, "1978-08-25", "female", aml_cm_relapse, skip=("ecog",))
    ecog(c, 1, updated="2026-06-12T11:00:00Z")
    ecog(c, 3, updated="2026-06-12T18:00:00+08:00")


@case("p55", "two Patient resources share the id p55: versionId 2 (male, listed first) and versionId 1 (female, "
      "listed second); the newest wins (male: no pregnancy test needed), a warning names Patient/p55",
      "candidate")
def _p55(c: Chart) -> None:
    standard(c, "1988-12-12", "male", aml_cm_relapse)
    c.resources[0]["meta"] = c.meta(2)
    c.patient("1988-12-12", "female", version=1)


# --- not screened (RULES.md §2 "Who is screened"): listed in notScreened, never in the results
@not_screened("p56", "deceasedDateTime 2026-06-01 (before the as-of date); otherwise a complete candidate's chart",
              "deceased")
def _p56(c: Chart) -> None:
    standard(c, "1970-06-30", "male", aml_cm_relapse)
    c.resources[0]["deceasedDateTime"] = when(14, 23)


@not_screened("p57", "a dog: the patient-animal extension (species Canis lupus familiaris); otherwise a complete "
              "candidate's chart", "non-human")
def _p57(c: Chart) -> None:
    c.patient("2019-03-01", "male", animal=concept(coding(SNOMED, "448771007", "Canis lupus subsp. familiaris")))
    encounter(c)
    aml_cm_relapse(c)
    workup(c, "male")


@not_screened("p58", "known only from subject references: a diagnosis and a work-up, no Patient resource",
              "no-patient-resource")
def _p58(c: Chart) -> None:
    encounter(c)
    aml_cm_relapse(c)
    workup(c, "male")


@case("cao2022", "published case (RULES.md §7, Cao X et al. 2022): 17-year-old female, r/r AML, marrow 20 % blasts, "
      "95.6 % CD7+; other values synthetic (Observation.note)", "candidate")
def _cao(c: Chart) -> None:
    c.published = True
    c.patient("2008-11-03", "female")
    encounter(c, True, days_ago=8)
    condition(c, "dx", icd(ICD10, *AML_CN), clinical="relapse", onset=420,
                note="published: relapsed/refractory AML (Cao X et al., Exp Hematol Oncol 2022;11:67)")
    published = "published value (Cao X et al., Exp Hematol Oncol 2022;11:67)"
    marrow_blasts(c, 20.0, note=published)
    cd7(c, 95.6, note=published)
    ecog(c, 1)
    lvef(c, 60)
    enzyme(c, "ast", 24)
    enzyme(c, "alt", 19)
    bilirubin(c, 0.6)
    blood_counts(c, unit="10*9/L")
    vital(c, "weight", "29463-7", "Body weight", 52.0, "kg")
    hcg(c, False, days_ago=4, serum=True)
    hbsag(c, False)
    hcv_ab(c, False)
    hiv(c, False)
    finding(c, "csf", "CNSL", "CNS leukemia (CSF cytology)", present=False)


# ------------------------------------------------------------------------------------------ intent
def default_verdicts() -> dict[str, str]:
    trial = load_trial()  # the samples are written for the shipped trial: its criteria, in its file's order
    out = {cid: "met" for cid in trial.inclusions}
    out |= {cid: "not-met" for cid in trial.exclusions}
    out |= {cid: "unknown" for cid in trial.advisory}
    return out


def status_of(verdicts: dict[str, str]) -> str:
    """RULES.md §2 overall status, restated independently of the engine, to check each hand-written status."""
    trial = load_trial()
    inc = [verdicts[c] for c in trial.inclusions]
    exc = [verdicts[c] for c in trial.exclusions if c not in trial.advisory]
    if "not-met" in inc or "met" in exc:
        return "ineligible"
    if all(r == "met" for r in inc) and all(r == "not-met" for r in exc):
        return "candidate"
    return "potential-candidate"


def intent_of(case: Case) -> Json:
    verdicts = default_verdicts()
    unknown = set(case.intent) - set(verdicts)
    if unknown:
        raise GenerationError(f"{case.pid}: intent names unknown criteria {sorted(unknown)}")
    verdicts |= case.intent
    if status_of(verdicts) != case.status:
        raise GenerationError(f"{case.pid}: written status {case.status} contradicts its verdicts "
                              f"({status_of(verdicts)} by RULES.md §2)")
    return {"exercises": case.exercises, "status": case.status, "criteria": verdicts}


def coverage(patients: dict[str, Json]) -> dict[str, list[str]]:
    """Per automated criterion, the outcomes that no patient is intended to have (minus documented ones)."""
    missing: dict[str, list[str]] = {}
    trial = load_trial()
    for cid in trial.criterion_ids:
        if cid in trial.advisory:
            continue
        seen = {p["criteria"][cid] for p in patients.values()}
        gap = [r for r in ("met", "not-met", "unknown") if r not in seen and r not in IMPOSSIBLE.get(cid, {})]
        if gap:
            missing[cid] = gap
    return missing


def build_intent(cases: list[Case]) -> Json:
    patients = {c.pid: intent_of(c) for c in cases if c.reason is None}
    skipped = {c.pid: {"exercises": c.exercises, "reason": c.reason} for c in cases if c.reason is not None}
    gaps = coverage(patients)
    if gaps:
        raise GenerationError(f"coverage gaps: {gaps}")
    statuses = [p["status"] for p in patients.values()]
    if statuses.count("candidate") < 4 or not {"potential-candidate", "ineligible"} <= set(statuses):
        raise GenerationError("the statuses candidate (>= 4), potential-candidate and ineligible must all appear")
    return {"description": "Intended pre-screen verdicts (RULES.md §2), hand-written per case in "
                           "samplegen/prescreen.py; not produced by the engine.",
            "as_of": AS_OF.isoformat(), "site_map": "samples/site-map.yaml",
            "impossible": IMPOSSIBLE, "patients": patients,
            "notScreened": skipped}


# ------------------------------------------------------------------------------------------ validation
# ------------------------------------------------------------------------------------------ output
def charts(cases: list[Case]) -> list[Chart]:
    out = []
    for cs in cases:
        chart = new_chart(cs.pid)
        cs.build(chart)
        out.append(chart)
    return out


def check_ids(resources: list[Json]) -> None:
    """Ids are unique per type, except the versions of one resource, which must differ in versionId, or (without
    one) in lastUpdated or status -- what RULES.md §2 orders versions by."""
    seen: set[tuple[str, str, str | None, str | None, str | None]] = set()
    for r in resources:
        meta = r.get("meta", {})
        key = (r["resourceType"], r["id"], meta.get("versionId"), meta.get("lastUpdated"), r.get("status"))
        if key in seen:
            raise GenerationError(f"duplicate {key[0]}/{key[1]}")
        seen.add(key)


def ordered(cases: list[Case]) -> list[Case]:
    """p01, p02, ... then the published case."""
    return sorted(cases, key=lambda cs: (not cs.pid.startswith("p"), cs.pid))


# ------------------------------------------------------------------------------------------ transaction.json
# A collection Bundle may not carry ``request`` (FHIR R4 invariant bdl-3), so the batch/transaction shape has its
# own small file: one patient's chart as PUT entries, and an entry holding only a ``request`` (a DELETE), which is
# not clinical data: read and counted, never a skipped resource, never a --strict failure (RULES.md §2).
def _p59(c: Chart) -> None:
    standard(c, "1983-11-05", "male", aml_cm_relapse)


TRANSACTION_CASE = Case("p59", "a transaction Bundle (transaction.json): the chart as PUT entries, plus a DELETE "
                               "entry holding only a request (not clinical data, not a skipped resource)",
                        "candidate", _p59)
REQUEST_ONLY = [{"request": {"method": "DELETE", "url": "Observation/p59-ecog-draft"}}]


def transaction(chart: Chart) -> Json:
    entries: list[Json] = [{"fullUrl": f"{BASE_URL}/{r['resourceType']}/{r['id']}", "resource": r,
                            "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                           for r in chart.resources]
    return {"resourceType": "Bundle", "id": "prescreen-transaction", "meta": {"security": [HTEST]},
            "type": "transaction", "timestamp": f"{AS_OF.isoformat()}T07:00:00{TZ}", "entry": entries + REQUEST_ONLY}


def generate(out: Path, schema: Path) -> list[Path]:
    cases = ordered(CASES)
    intent = build_intent(cases)
    resources = [r for chart in charts(cases) for r in chart.resources]
    check_ids(resources)
    for r in resources:
        validate(r, schema)
    doc = bundle(resources, "prescreen-samples", f"{AS_OF.isoformat()}T07:00:00{TZ}")
    parse_resource(doc, "Bundle/prescreen-samples")
    (chart,) = charts([TRANSACTION_CASE])
    for r in chart.resources:
        validate(r, schema)
    tx = transaction(chart)
    parse_resource(tx, "Bundle/prescreen-transaction")
    validate(tx, schema)
    intent["transaction"] = {"file": "transaction.json", "nonClinicalEntries": len(REQUEST_ONLY),
                             "patients": {TRANSACTION_CASE.pid: intent_of(TRANSACTION_CASE)}}
    written = write(out, doc, intent, ("Patient", "Condition", "Observation", "Encounter"))
    (out / "transaction.json").write_text(dumps(tx), encoding="utf-8")
    return [*written, out / "transaction.json"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default samples/prescreen)")
    parser.add_argument("--schema", help="fhir.schema.json (default $BRIDGE_FHIR_SCHEMA or the shared copy)")
    args = parser.parse_args(argv)
    try:
        written = generate(args.out, schema_file(args.schema))
    except GenerationError as exc:
        print(f"samplegen.prescreen: {exc}", file=sys.stderr)
        return 1
    print(f"samplegen.prescreen: {len(CASES)} patients, wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
