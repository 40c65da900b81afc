"""Property-based tests (issue 12 item 10; RULES.md §3 "Usable values", §2 "Versions of one resource").

Random Observations for every concept the eligibility criteria read — zero, negative, huge and ordinary
numbers, canonical, wrong and junk units, comparators, reference ranges with a zero or negative ``high``, every
Observation status, no date, partial and future dates, time-zoned dateTimes, interpretations, coded answers,
text and booleans — are mixed into a Bundle of three fixed, decided patients and run through the real path
(FHIR JSON -> ``bridge.normalize.patients.assemble`` -> ``bridge.evaluate.eligibility.screen``):

- nothing raises, whatever the input;
- adding observations (fresh ids) whose every fact is *not usable* keeps each criterion's verdict or makes it
  ``unknown``: never ``met`` <-> ``not-met``, and an ``unknown`` stays ``unknown`` (a not-usable value is an
  unknown value, never an absent one). Observations that produce no fact (entered-in-error, cancelled,
  registered, skipped as invalid, unmapped) change nothing at all. A *usable* random value may decide a
  criterion: for those only a valid three-valued result is asserted;
- the other patients' verdicts (result, reason and evidence) never change, whatever is added to one patient;
- a random observation that reuses the id of an existing one with a *lower* ``meta.versionId`` (or a version id
  that is not an integer, or none) changes nothing, whatever its ``lastUpdated``, status, subject or position:
  the newer version wins.
"""

from __future__ import annotations

import math
import os
import string
from datetime import date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bridge.config import RuleOptions
from bridge.evaluate.eligibility import Screening, screen
from bridge.ingest.readers import Entry
from bridge.model import Fact, PatientFacts, Quantity
from bridge.normalize.mappings import CodeMap, load_code_map
from bridge.normalize.patients import assemble
from bridge.trial import load_trial

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 6, 15)
OPTIONS = RuleOptions(as_of=AS_OF)
BASE = "http://hospital.example.org/fhir"
LOINC, SNOMED, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
LAB, CLINICAL, CARDIO = ("http://hospital.example.org/lab", "http://hospital.example.org/clinical",
                         "http://hospital.example.org/cardio")
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
TRI = frozenset({"met", "not-met", "unknown"})
# examples per property (half of it per concept where parametrised): the file runs in about 15 s;
# PROPERTY_EXAMPLES=3000 explores further with a fresh random seed each run
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "120"))

#: every observation concept the eligibility criteria read, with the codes that map to it (default tables and
#: the samples' site map)
CONCEPT_CODES: dict[str, list[tuple[str, str]]] = {
    "ecog": [(LOINC, "89247-1")],
    "nyha-class": [(CARDIO, "NYHA")],
    "cd7-blast-percent": [(LAB, "FC-CD7")],
    "lvef": [(LOINC, "10230-1")],
    "ast": [(LOINC, "1920-8")],
    "alt": [(LOINC, "1742-6")],
    "bilirubin-total": [(LOINC, "1975-2"), (LOINC, "14631-6")],
    "pregnancy-test": [(LOINC, "2106-3"), (LOINC, "2118-8")],
    "hbsag": [(LOINC, "5196-1"), (LOINC, "5195-3")],
    "hbv-dna": [(LOINC, "29615-2")],
    "hcv-antibody": [(LOINC, "16128-1")],
    "hcv-rna": [(LOINC, "11011-4")],
    "hiv-test": [(LOINC, "56888-1")],
    "body-temperature": [(LOINC, "8310-5")],
    "cns-involvement": [(CLINICAL, "CNSL")],
    "refractory-disease": [(CLINICAL, "REFRACTORY")],
}
CONCEPTS = sorted(CONCEPT_CODES)
SCORES = frozenset({"ecog", "nyha-class"})


@cache
def cmap() -> CodeMap:
    return load_code_map(ROOT / "samples" / "site-map.yaml")


# ------------------------------------------------------------------------------------------ fixed patients
def _when(days_ago: int, hour: int = 8) -> str:
    return f"{(AS_OF - timedelta(days=days_ago)).isoformat()}T{hour:02d}:00:00+08:00"


def _q(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def _obs(oid: str, pid: str, system: str, code: str, value: dict[str, Any], days_ago: int = 3,
         rng: dict[str, Any] | None = None, version: str | None = "2") -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Observation", "id": oid, "status": "final",
                           "code": {"coding": [{"system": system, "code": code}]},
                           "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": _when(days_ago)}
    if version is not None:
        res["meta"] = {"versionId": version, "lastUpdated": _when(days_ago - 1, 18)}
    res.update(value)
    if rng is not None:
        res["referenceRange"] = [rng]
    return res


def _answer(system: str, code: str) -> dict[str, Any]:
    return {"valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}


POS, NEG = _answer(LOINC, "LA6576-8"), _answer(LOINC, "LA6577-6")
PRESENT, ABSENT = _answer(SNOMED, "52101004"), _answer(SNOMED, "2667000")


def _dx(pid: str, suffix: str, code: str, days_ago: int = 300) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": f"{pid}-{suffix}",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": ICD10CM, "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "onsetDateTime": _when(days_ago)}


def _patient(pid: str, gender: str, born: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": born}


def candidate() -> list[dict[str, Any]]:
    """A clear candidate: every inclusion met, every exclusion not-met."""
    p = "cand"
    return [_patient(p, "female", "1990-04-02"), _dx(p, "dx", "C92.02"),
            _obs(f"{p}-ecog", p, LOINC, "89247-1", {"valueInteger": 1}),
            _obs(f"{p}-nyha", p, CARDIO, "NYHA", {"valueInteger": 1}, 10),
            _obs(f"{p}-cd7", p, LAB, "FC-CD7", {"valueQuantity": _q(72, "%")}, 5),
            _obs(f"{p}-lvef", p, LOINC, "10230-1", {"valueQuantity": _q(62, "%")}, 20),
            _obs(f"{p}-ast", p, LOINC, "1920-8", {"valueQuantity": _q(25, "U/L")}, 2, {"high": _q(40, "U/L")}),
            _obs(f"{p}-alt", p, LOINC, "1742-6", {"valueQuantity": _q(22, "U/L")}, 2, {"high": _q(40, "U/L")}),
            _obs(f"{p}-bili", p, LOINC, "1975-2", {"valueQuantity": _q(0.7, "mg/dL")}, 2),
            _obs(f"{p}-hcg", p, LOINC, "2106-3", NEG, 4),
            _obs(f"{p}-hbsag", p, LOINC, "5196-1", NEG, 9),
            _obs(f"{p}-hbv", p, LOINC, "29615-2", {"valueQuantity": _q(20, "[IU]/mL")}, 9),
            _obs(f"{p}-hcv", p, LOINC, "16128-1", NEG, 9),
            _obs(f"{p}-hcv-rna", p, LOINC, "11011-4", _answer(LOINC, "LA11883-8"), 9),
            _obs(f"{p}-hiv", p, LOINC, "56888-1", NEG, 9),
            _obs(f"{p}-temp", p, LOINC, "8310-5", {"valueQuantity": _q(36.8, "Cel")}, 1),
            _obs(f"{p}-csf", p, CLINICAL, "CNSL", ABSENT, 6)]


def ineligible() -> list[dict[str, Any]]:
    """A clear ineligible: most inclusions not-met, most exclusions met; refractory by a finding, a neutropenia
    (D70) without fever, so that a febrile temperature would make the infection criterion unknown."""
    p = "inel"
    return [_patient(p, "female", "1985-11-20"), _dx(p, "dx", "C92.00"), _dx(p, "d70", "D70.9", 5),
            _obs(f"{p}-refractory", p, CLINICAL, "REFRACTORY", PRESENT, 20),
            _obs(f"{p}-ecog", p, LOINC, "89247-1", {"valueInteger": 3}),
            _obs(f"{p}-nyha", p, CARDIO, "NYHA", {"valueString": "III"}, 10),
            _obs(f"{p}-cd7", p, LAB, "FC-CD7", {"valueQuantity": _q(10, "%")}, 5),
            _obs(f"{p}-lvef", p, LOINC, "10230-1", {"valueQuantity": _q(0.4, "1")}, 20),
            _obs(f"{p}-ast", p, LOINC, "1920-8", {"valueQuantity": _q(200, "U/L")}, 2, {"high": _q(40, "U/L")}),
            _obs(f"{p}-alt", p, LOINC, "1742-6", {"valueQuantity": _q(30, "U/L")}, 2, {"high": _q(40, "U/L")}),
            _obs(f"{p}-bili", p, LOINC, "14631-6", {"valueQuantity": _q(60, "umol/L")}, 2),
            _obs(f"{p}-hcg", p, LOINC, "2106-3", POS, 3),
            _obs(f"{p}-hbsag", p, LOINC, "5196-1", POS, 9),
            _obs(f"{p}-hcv", p, LOINC, "16128-1", POS, 9),
            _obs(f"{p}-hiv", p, LOINC, "56888-1", POS, 9),
            _obs(f"{p}-temp", p, LOINC, "8310-5", {"valueQuantity": _q(37.1, "Cel")}, 1),
            _obs(f"{p}-csf", p, CLINICAL, "CNSL", PRESENT, 6)]


def male_mixed() -> list[dict[str, Any]]:
    """A male (pregnancy not-met by sex) with some criteria decided and some unknown: no ECOG, an old CD7, HCV
    antibody positive without RNA; refractory by a finding."""
    p = "male"
    return [_patient(p, "male", "1979-07-07"), _dx(p, "dx", "C92.00"),
            _obs(f"{p}-refractory", p, CLINICAL, "REFRACTORY", PRESENT, 3),
            _obs(f"{p}-cd7", p, LAB, "FC-CD7", {"valueQuantity": _q(80, "%")}, 45),
            _obs(f"{p}-lvef", p, LOINC, "10230-1", {"valueQuantity": _q(45, "%")}, 20),
            _obs(f"{p}-ast", p, LOINC, "1920-8", {"valueQuantity": _q(30, "U/L")}, 2),
            _obs(f"{p}-alt", p, LOINC, "1742-6", {"valueQuantity": _q(30, "U/L")}, 2),
            _obs(f"{p}-bili", p, LOINC, "1975-2", {"valueQuantity": _q(1.0, "mg/dL")}, 2),
            _obs(f"{p}-hbsag", p, LOINC, "5196-1", NEG, 9),
            _obs(f"{p}-hcv", p, LOINC, "16128-1", POS, 9),
            _obs(f"{p}-hiv", p, LOINC, "56888-1", NEG, 9)]


PATIENTS = {"cand": candidate, "inel": ineligible, "male": male_mixed}


@cache
def fixed() -> tuple[dict[str, Any], ...]:
    return tuple(r for build in PATIENTS.values() for r in build())


def run(extra: list[dict[str, Any]], position: int | None = None) -> tuple[dict[str, Screening], list[PatientFacts]]:
    """The fixed Bundle plus ``extra`` (appended, or inserted at ``position``) through the real path."""
    resources = list(fixed())
    if position is None:
        resources += extra
    else:
        resources[position:position] = extra
    items = [Entry(r, f"bundle entry {i}", f"{BASE}/{r['resourceType']}/{r['id']}")
             for i, r in enumerate(resources)]
    patients, report = assemble(items, cmap())
    bugs = [s.reason for s in report.skipped if "a bug" in s.reason]
    assert not bugs, f"normalize raised (property a, no exception): {bugs}"
    return {pf.patient_id: screen(pf, OPTIONS, cmap().uln) for pf in patients}, patients


@cache
def baseline() -> dict[str, Screening]:
    screenings, _ = run([])
    return screenings


def test_the_fixed_patients_are_decided() -> None:
    base = baseline()
    assert sorted(base) == sorted(PATIENTS)
    assert base["cand"].status == "candidate"
    assert base["inel"].status == "ineligible"
    decided = {pid: sum(v.result != "unknown" for v in s.verdicts) for pid, s in base.items()}
    assert decided["cand"] == 14 and decided["inel"] >= 12 and decided["male"] >= 9, decided
    inel = {v.criterion: v.result for v in base["inel"].verdicts}
    assert inel["inc-ecog"] == inel["inc-cd7-expression"] == inel["inc-cardiac"] == "not-met"
    assert inel["inc-organ-function"] == "not-met" and inel["exc-active-infection"] == "not-met"
    assert inel["exc-pregnancy"] == inel["exc-hepatitis"] == inel["exc-hiv"] == inel["exc-cns-leukemia"] == "met"
    male = {v.criterion: v.result for v in base["male"].verdicts}
    assert male["inc-ecog"] == male["inc-cd7-expression"] == male["exc-hepatitis"] == "unknown"
    assert male["inc-diagnosis"] == "met" and male["exc-pregnancy"] == "not-met"


# ------------------------------------------------------------------------------------------ strategies
JUNK_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " /*^[]{}%.-_µ", min_size=1, max_size=12)
UNITS = ["%", "1", "U/L", "IU/L", "[IU]/L", "ukat/L", "mg/dL", "umol/L", "mmol/mol", "g/L", "[IU]/mL", "IU/mL",
         "kIU/mL", "m[IU]/mL", "mIU/mL", "copies/mL", "{copies}/mL", "{index}", "{COI}", "{s_co_ratio}", "{ratio}",
         "Cel", "[degF]", "K", "kg", "10*9/L", "/uL", "{score}", "mm[Hg]", "s"]
NUMBERS = st.one_of(
    st.sampled_from([0, 0.0, -0.0, -1, -0.75, 0.35, 0.5, 1, 1.0, 2, 4.9, 5, 25, 30, 30.0001, 38, 50, 55, 100,
                     101, 120, 999, 1000, 1001, 1e6, 1e12, 1e300, -1e12]),
    st.integers(min_value=-10, max_value=200),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15),
    st.floats(allow_nan=False, allow_infinity=False),
)
OFFSETS = ["Z", "+08:00", "-05:00", "+14:00", "-12:00", "+05:45", "-03:30", "+00:00"]
ZONES = [timezone(timedelta(minutes=m)) for m in (0, 480, -300, 840, -720, 345, -210)]


@st.composite
def unit_fields(draw: st.DrawFn) -> dict[str, Any]:
    """A Quantity's unit: UCUM code, text only, both disagreeing, junk, or none."""
    kind = draw(st.sampled_from(["code", "text", "both", "junk-text", "junk-code", "none"]))
    unit = draw(st.sampled_from(UNITS))
    if kind == "code":
        return {"unit": unit, "system": UCUM, "code": unit}
    if kind == "text":
        return {"unit": unit}
    if kind == "both":
        return {"unit": draw(st.sampled_from(UNITS)), "system": UCUM, "code": unit}
    if kind == "junk-text":
        return {"unit": draw(JUNK_TEXT)}
    if kind == "junk-code":
        return {"system": UCUM, "code": draw(JUNK_TEXT.filter(lambda s: s.strip() == s and "  " not in s))}
    return {}


@st.composite
def quantities(draw: st.DrawFn) -> dict[str, Any]:
    q: dict[str, Any] = {"value": draw(NUMBERS)}
    if draw(st.integers(0, 3)) == 0:
        q["comparator"] = draw(st.sampled_from(["<", "<=", ">=", ">"]))
    q.update(draw(unit_fields()))
    return q


ANSWERS = [(LOINC, c) for c in ("LA6576-8", "LA6577-6", "LA11882-0", "LA11883-8", "LA9622-7", "LA9624-3",
                                "LA9625-0", "LA9627-6", "LA0000-0")] + \
          [(SNOMED, c) for c in ("10828004", "260385009", "52101004", "2667000", "422512005", "423053003",
                                 "420300004", "420913000", "422293003", "1")] + \
          [(V3, "POS"), ("http://example.org/other", "LA6576-8")]
TEXTS = ["positive", "Negative", "detected", "not detected", "reactive", "non-reactive", "I", "II", "class III",
         "IV", "V", "0", "2", "5", "7", "grade 1", "ECOG 4", "NYHA 2", "yes", "absent", "equivocal", "?"]


@st.composite
def values(draw: st.DrawFn) -> dict[str, Any]:
    """value[x]: a Quantity, an integer, a string, a coded answer (or its text), a boolean, or none."""
    kind = draw(st.sampled_from(["quantity", "quantity", "quantity", "integer", "string", "coded", "coded-text",
                                 "boolean", "none"]))
    if kind == "quantity":
        return {"valueQuantity": draw(quantities())}
    if kind == "integer":
        return {"valueInteger": draw(st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.integers(-3, 8))}
    if kind == "string":
        return {"valueString": draw(st.sampled_from(TEXTS) | JUNK_TEXT)}
    if kind == "coded":
        system, code = draw(st.sampled_from(ANSWERS))
        return {"valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}
    if kind == "coded-text":
        return {"valueCodeableConcept": {"text": draw(st.sampled_from(TEXTS) | JUNK_TEXT)}}
    if kind == "boolean":
        return {"valueBoolean": draw(st.booleans())}
    return {}


@st.composite
def datetimes(draw: st.DrawFn, past: int = 200, future: int = 30) -> str:
    """A dateTime around the as-of date: full with any offset, date only, year-month, year, or an instant."""
    day = AS_OF + timedelta(days=draw(st.integers(-past, future)))
    form = draw(st.sampled_from(["full", "full", "full", "date", "month", "year", "seconds"]))
    if form == "date":
        return day.isoformat()
    if form == "month":
        return day.isoformat()[:7]
    if form == "year":
        return str(day.year)
    hour, minute = draw(st.integers(0, 23)), draw(st.sampled_from([0, 15, 30, 59]))
    frac = ".123" if form == "seconds" else ""
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00{frac}{draw(st.sampled_from(OFFSETS))}"


@st.composite
def dates(draw: st.DrawFn) -> dict[str, Any]:
    """effective[x] and issued: none at all, either, both, a period (open or closed)."""
    kind = draw(st.sampled_from(["effective", "effective", "effective", "issued", "both", "period", "instant",
                                 "none"]))
    if kind == "none":
        return {}
    if kind == "period":
        period = {"start": draw(datetimes())}
        if draw(st.booleans()):
            period["end"] = draw(datetimes())
        return {"effectivePeriod": period}
    if kind == "instant":
        day = AS_OF + timedelta(days=draw(st.integers(-60, 10)))
        return {"effectiveInstant": f"{day.isoformat()}T07:30:00{draw(st.sampled_from(OFFSETS))}"}
    out: dict[str, Any] = {}
    if kind in ("effective", "both"):
        out["effectiveDateTime"] = draw(datetimes())
    if kind in ("issued", "both"):
        day = AS_OF + timedelta(days=draw(st.integers(-60, 10)))
        out["issued"] = f"{day.isoformat()}T12:00:00{draw(st.sampled_from(OFFSETS))}"
    return out


@st.composite
def reference_ranges(draw: st.DrawFn) -> dict[str, Any]:
    """None, or a range whose high (and low) may be zero, negative, unconvertible or junk."""
    if draw(st.integers(0, 2)) == 0:
        return {}
    rng: dict[str, Any] = {}
    for bound in ("low", "high"):
        if draw(st.booleans()):
            value = draw(st.sampled_from([0, -0.0, -5, -1e9, 0.001, 1, 40, 1.2, 1e12]) | NUMBERS)
            rng[bound] = {"value": value, **draw(unit_fields())}
    if not rng or draw(st.integers(0, 5)) == 0:
        rng["text"] = "normal"
    return {"referenceRange": [rng]}


INTERPRETATIONS = ["POS", "NEG", "DET", "ND", "A", "H", "N", "IND", "E", "L", "HH", "XYZ"]


@st.composite
def interpretations(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {}
    codings = [{"system": draw(st.sampled_from([V3, V3, V3, "http://example.org/interp"])),
                "code": draw(st.sampled_from(INTERPRETATIONS))} for _ in range(draw(st.integers(1, 2)))]
    return {"interpretation": [{"coding": codings}]}


STATUSES = ["registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error",
            "unknown"]


def _code(draw: st.DrawFn, concept: str) -> dict[str, Any]:
    system, code = draw(st.sampled_from(CONCEPT_CODES[concept]))
    code = draw(st.sampled_from([code, code, code.lower()]))  # case ignored (spaces would fail the R4B model)
    codings = [{"system": system, "code": code}]
    if draw(st.integers(0, 3)) == 0:  # the mapped coding not first
        codings.insert(0, {"system": "http://hospital.example.org/local", "code": "X-1"})
    return {"coding": codings}


@st.composite
def observations(draw: st.DrawFn, concept: str | st.SearchStrategy[str], oid: str, subject: str) -> dict[str, Any]:
    """One random Observation of ``concept`` about ``subject``."""
    concept = draw(concept) if isinstance(concept, st.SearchStrategy) else concept
    res: dict[str, Any] = {"resourceType": "Observation", "id": oid, "status": draw(st.sampled_from(STATUSES)),
                           "code": _code(draw, concept), "subject": {"reference": subject}}
    if draw(st.integers(0, 3)) == 0:
        stamp = AS_OF + timedelta(days=draw(st.integers(-30, 5)))
        res["meta"] = {"versionId": draw(st.sampled_from(["1", "2", "7", "x"])),
                       "lastUpdated": f"{stamp.isoformat()}T11:00:00{draw(st.sampled_from(OFFSETS))}"}
    res.update(draw(dates()))
    res.update(draw(values()))
    res.update(draw(interpretations()))
    res.update(draw(reference_ranges()))
    if draw(st.integers(0, 7)) == 0:  # a component of another concept, with its own value
        other = draw(st.sampled_from(CONCEPTS))
        res["component"] = [{"code": _code(draw, other), **draw(values()), **draw(interpretations())}]
    return res


def subjects(pid: str) -> st.SearchStrategy[str]:
    """The patient's reference, relative or absolute (resolved through the Bundle's fullUrl); now and then a
    patient known only from this reference."""
    return st.sampled_from([f"Patient/{pid}", f"Patient/{pid}", f"Patient/{pid}", f"{BASE}/Patient/{pid}",
                            "Patient/ghost"])


# ------------------------------------------------------------------------------------------ helpers
def new_facts(patients: list[PatientFacts], refs: set[str]) -> list[Fact]:
    return [f for pf in patients for f in pf.facts if f.source in refs]


def assert_tri(screenings: dict[str, Screening]) -> None:
    for s in screenings.values():
        assert [v.criterion for v in s.verdicts] == list(load_trial().criterion_ids)
        assert all(v.result in TRI for v in s.verdicts)
        assert s.status in ("candidate", "potential-candidate", "ineligible")


def assert_plausible_if_usable(f: Fact) -> None:
    """A usable fact is dated, of its concept's kind, and inside its plausible range (RULES.md §3)."""
    if not f.usable:
        assert f.problem is not None and f.span is not None, f  # why, and where it may lie (for ``decide``)
        return
    kind = cmap().concepts[f.concept].kind
    rng = cmap().plausible.get(f.concept)
    if kind == "quantity":
        assert isinstance(f.value, Quantity) and f.value.unit == cmap().concepts[f.concept].unit, f
        assert rng is None or rng.holds(f.value.value), f
    elif kind == "score":
        assert isinstance(f.value, int) and not isinstance(f.value, bool), f
        assert rng is None or rng.holds(f.value), f
    else:
        assert isinstance(f.value, bool), f


def results(s: Screening) -> dict[str, str]:
    return {v.criterion: v.result for v in s.verdicts}


def check_addition(pid: str, extra: list[dict[str, Any]]) -> None:
    screenings, patients = run(extra)
    assert_tri(screenings)
    base = baseline()
    # (c) the other fixed patients: the very same verdicts, reasons and evidence
    for other in PATIENTS:
        if other != pid:
            assert screenings[other].verdicts == base[other].verdicts, other
    facts = new_facts(patients, {f"Observation/{r['id']}" for r in extra})
    for f in facts:
        assert_plausible_if_usable(f)
    if any(f.usable for f in facts):
        event("usable")
        return  # a usable value may legitimately decide a criterion
    before, after = results(base[pid]), results(screenings[pid])
    event("no fact" if not facts else "not usable")
    if not facts:  # ignored status, skipped as invalid, unmapped, or another subject: nothing changes
        assert after == before
        return
    # (b) not-usable values only: each verdict stays, or becomes unknown
    changed = {c: (before[c], after[c]) for c in load_trial().criterion_ids if after[c] != before[c]}
    assert all(now == "unknown" for _, now in changed.values()), (changed, [f.problem for f in facts])
    for criterion in changed:  # and the reason names the resource
        verdict = screenings[pid].verdict(criterion)
        assert any(f.source in verdict.reason or f.source in verdict.evidence for f in facts), verdict
    if len(extra) == 1 and len(facts) == 1 and "component" not in extra[0] and \
            extra[0]["subject"]["reference"].endswith(f"Patient/{pid}"):
        check_unknown_exactly_where_it_matters(pid, extra[0], facts[0], after)


def _usable_variants(res: dict[str, Any], fact: Fact) -> list[dict[str, Any]]:
    """``res`` holding, instead of its not-usable value, each usable value in turn that matters to a rule: the ends
    of the concept's plausible range and the values either side of each threshold (undated: dated the as-of day)."""
    base = {k: v for k, v in res.items() if not k.startswith("value") and k not in ("interpretation", "meta")}
    if fact.when is None:
        for key in ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"):
            base.pop(key, None)
        base["effectiveDateTime"] = f"{AS_OF.isoformat()}T08:00:00+08:00"
    info, rng = cmap().concepts[fact.concept], cmap().plausible.get(fact.concept)
    if info.kind == "score":
        assert rng is not None and rng.low is not None and rng.high is not None
        return [{**base, "valueInteger": n} for n in range(int(rng.low), int(rng.high) + 1)]
    if info.kind == "quantity":
        ends = [rng.low if rng and rng.low is not None else 0.0, rng.high if rng and rng.high is not None else 1e12]
        numbers = sorted({*ends, *THRESHOLDS.get(fact.concept, ())})
        return [{**base, "valueQuantity": _q(n, info.unit or "")} for n in numbers]
    if info.kind == "finding":
        return [{**base, **PRESENT}, {**base, **ABSENT}]
    return [{**base, "interpretation": [{"coding": [{"system": V3, "code": c}]}]} for c in ("POS", "NEG")]


#: values either side of the thresholds the criteria use (canonical units), besides the plausible range's ends
THRESHOLDS: dict[str, tuple[float, ...]] = {
    "cd7-blast-percent": (30.0, 30.01), "lvef": (49.99, 50.0), "ast": (40.0, 120.0, 120.01, 600.0),
    "alt": (40.0, 120.0, 120.01, 600.0), "bilirubin-total": (2.0, 2.01), "hbv-dna": (1000.0, 1000.01),
    "body-temperature": (37.99, 38.0),
}


def check_unknown_exactly_where_it_matters(pid: str, res: dict[str, Any], fact: Fact, after: dict[str, str]) -> None:
    """RULES.md §3: "a verdict that would differ depending on what it holds is unknown ...; a verdict that other
    usable data decide on their own stands". Each criterion is unknown with the not-usable value exactly when some
    usable value in its place would give another verdict than the patient has without it."""
    before = results(baseline()[pid])
    differs: set[str] = set()
    for variant in _usable_variants(res, fact):
        screenings, patients = run([variant])
        (placed,) = new_facts(patients, {fact.source})
        if not placed.usable:  # e.g. a reference range the unit parser chokes on: the oracle cannot be built
            return
        differs |= {c for c, r in results(screenings[pid]).items() if r != before[c]}
    for criterion in load_trial().criterion_ids:
        wanted = "unknown" if criterion in differs else before[criterion]
        assert after[criterion] == wanted, (criterion, before[criterion], after[criterion], fact.problem)


PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("PROPERTY_EXAMPLES"),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------------ properties
@pytest.mark.parametrize("concept", CONCEPTS)
@settings(PROPERTY, max_examples=max(EXAMPLES // 2, 10))
@given(data=st.data())
def test_one_random_observation(concept: str, data: st.DataObject) -> None:
    """(a), (b), (c) for one random observation of each concept, added to any of the three patients."""
    pid = data.draw(st.sampled_from(sorted(PATIENTS)), label="patient")
    res = data.draw(observations(concept, "new-1", data.draw(subjects(pid))), label="obs")
    check_addition(pid, [res])


@PROPERTY
@given(data=st.data())
def test_several_random_observations(data: st.DataObject) -> None:
    """Up to four random observations of mixed concepts at once (several not-usable values of one concept, or of
    several concepts of one criterion)."""
    pid = data.draw(st.sampled_from(sorted(PATIENTS)), label="patient")
    n = data.draw(st.integers(2, 4), label="n")
    extra = [data.draw(observations(st.sampled_from(CONCEPTS), f"new-{i}", data.draw(subjects(pid))),
                       label=f"obs{i}") for i in range(n)]
    check_addition(pid, extra)


@PROPERTY
@given(data=st.data())
def test_not_usable_by_construction(data: st.DataObject) -> None:
    """Observations built to be not usable (no date; a junk unit; an implausible number), so the strict branch of
    the property is exercised for every concept, not left to chance."""
    pid = data.draw(st.sampled_from(sorted(PATIENTS)), label="patient")
    concept = data.draw(st.sampled_from(CONCEPTS), label="concept")
    res = data.draw(observations(concept, "new-1", f"Patient/{pid}"), label="obs")
    res["status"] = data.draw(st.sampled_from(["final", "amended", "corrected", "preliminary", "unknown"]))
    how = data.draw(st.sampled_from(["undated", "junk-unit", "implausible"]), label="how")
    if how == "junk-unit" and concept in SCORES:
        how = "implausible"  # a score is read as a number whatever its unit
    if how == "undated":
        for key in ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"):
            res.pop(key, None)
    else:
        res.pop("component", None)
        if how == "junk-unit":
            junk = data.draw(st.text(alphabet=string.ascii_letters + string.digits + "/.", max_size=8))
            res["valueQuantity"] = {"value": data.draw(NUMBERS), "unit": "zz" + junk}
        else:
            wrong = [-1, -0.001, -1e12] + ([2.5, 7, 99] if concept in SCORES else [])
            res["valueQuantity"] = {"value": data.draw(st.sampled_from(wrong))}
        for key in ("valueInteger", "valueString", "valueCodeableConcept", "valueBoolean", "interpretation"):
            res.pop(key, None)
        for key in ("effectivePeriod", "effectiveInstant"):
            res.pop(key, None)
        res["effectiveDateTime"] = _when(data.draw(st.integers(0, 20)))
    check_addition(pid, [res])
    _, patients = run([res])
    facts = new_facts(patients, {"Observation/new-1"})
    assert facts and not any(f.usable for f in facts), (how, res)


EXISTING = [(r["id"], r["subject"]["reference"].removeprefix("Patient/")) for r in fixed()
            if r["resourceType"] == "Observation"]


@PROPERTY
@given(data=st.data())
def test_an_older_version_changes_nothing(data: st.DataObject) -> None:
    """A random observation reusing an existing id (version 2) with a lower, non-integer or absent versionId
    changes no patient's verdicts, whatever its lastUpdated, status, subject, concept or position."""
    oid, _owner = data.draw(st.sampled_from(EXISTING), label="id")
    pid = data.draw(st.sampled_from(sorted(PATIENTS)), label="subject")
    res = data.draw(observations(st.sampled_from(CONCEPTS), oid, f"Patient/{pid}"), label="obs")
    meta = data.draw(st.sampled_from([{"versionId": "1"}, {"versionId": "0"}, {"versionId": "01"},
                                      {"versionId": "1.5"}, {"versionId": "v3"}, {}, None]), label="meta")
    if meta is None:
        res.pop("meta", None)
    else:
        meta = dict(meta)
        if data.draw(st.booleans()):
            meta["lastUpdated"] = data.draw(st.sampled_from(["2030-01-01T00:00:00Z", "2026-06-14T18:00:00+08:00",
                                                             "2026-06-14T11:00:00Z", "2026-06-16T00:00:00-12:00",
                                                             "junk"]))
        res["meta"] = meta
    position = data.draw(st.sampled_from([None, 0, len(fixed()) // 2]), label="position")
    screenings, _ = run([res], position)
    assert {pid: s.verdicts for pid, s in screenings.items()} == {pid: s.verdicts for pid, s in baseline().items()}


RANK = {"preliminary": 1, "final": 2, "amended": 3, "corrected": 3}


@PROPERTY
@given(data=st.data())
def test_versions_without_version_id_are_ordered_by_instant_then_status_then_arrival(data: st.DataObject) -> None:
    """RULES.md §2: two versions of one resource with no versionId -- the newer meta.lastUpdated compared as an
    instant (offsets honoured: 18:00+08:00 is before 11:00Z; absent is oldest), then status precedence, then the
    later arrival wins. ECOG 1 (met) against ECOG 4 (not-met) for the patient who has no other ECOG."""
    versions = []
    for arrival, score in enumerate((1, 4)):
        res = _obs("male-ecog-v", "male", LOINC, "89247-1", {"valueInteger": score}, 2, version=None)
        res["status"] = data.draw(st.sampled_from(sorted(RANK)), label=f"status{arrival}")
        stamp = data.draw(st.none() | st.datetimes(min_value=datetime(2026, 6, 10), max_value=datetime(2026, 6, 14),
                                                   timezones=st.sampled_from(ZONES)), label=f"lastUpdated{arrival}")
        if stamp is not None:
            stamp = stamp.replace(microsecond=0)
            res["meta"] = {"lastUpdated": stamp.isoformat(timespec="seconds").replace("+00:00", "Z")}
        versions.append((stamp.timestamp() if stamp is not None else -math.inf, RANK[res["status"]], arrival, res))
    if data.draw(st.booleans(), label="reversed"):  # arrival order is the listing order
        versions = [(t, r, 1 - a, res) for t, r, a, res in reversed(versions)]
    winner = max(versions, key=lambda v: v[:3])[3]
    screenings, _ = run([v[3] for v in sorted(versions, key=lambda v: v[2])])
    wanted = "met" if winner["valueInteger"] == 1 else "not-met"
    assert screenings["male"].verdict("inc-ecog").result == wanted, [v[3].get("meta") for v in versions]


# ------------------------------------------------------------------------------------------ found by the properties
@pytest.mark.parametrize("unit", ["-", "U/L*", "IU/L ^", "%)", "(U/L", "{", "\u2014"])
def test_a_unit_the_unit_parser_chokes_on_is_not_usable_not_a_skipped_resource(unit: str) -> None:
    """RULES.md §3: a value whose unit cannot be converted is not usable -- an unknown value, never an absent one.
    A newer ALT with a unit text that pint's tokenizer rejects (TokenError / AssertionError, which
    bridge/normalize/units.py does not turn into UnitError) must make organ function unknown, naming it; it must
    not be skipped as "could not be read (...; a bug)" so that the older ALT decides ``met``."""
    newer = _obs("new-alt", "cand", LOINC, "1742-6", {"valueQuantity": {"value": 30, "unit": unit}}, 0, version=None)
    screenings, patients = run([newer])
    found = new_facts(patients, {"Observation/new-alt"})
    assert len(found) == 1, "the ALT was skipped as a bug (an absent value) instead of being not usable"
    (fact,) = found
    assert not fact.usable and "cannot be converted" in (fact.problem or "")
    verdict = screenings["cand"].verdict("inc-organ-function")
    assert verdict.result == "unknown" and "Observation/new-alt" in verdict.reason
