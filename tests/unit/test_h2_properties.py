"""Issue #12 properties: adding not-usable values (value None with a problem, or no date) to an infused patient
never raises, never turns a decided response into another decided one (only into NE, or CR/CRi into MLFS by
RULES.md §4's fallback when a count becomes unknown), never declares a relapse, never improves the best response,
and never creates or re-grades an adverse event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.evaluate.assessment import assess_patient
from bridge.evaluate.response import RANK, assess_response
from bridge.evaluate.safety import adverse_events
from bridge.model import Diagnosis, Fact, PatientFacts, Quantity
from tests.unit.test_response import D0, OPTS, UNITS, condition, day, infusion, patient

RESPONSE_CONCEPTS = ("marrow-blasts-percent", "anc", "platelets", "blood-blasts-percent", "blood-blasts-count",
                     "mrd-percent")
FINDINGS = ("auer-rods", "extramedullary-disease")
LAB_CONCEPTS = ("anc", "platelets", "hemoglobin", "ast", "alt", "bilirubin-total", "creatinine")
SIGNS = ("body-temperature", "oxygen-flow", "vasopressors", "ice-score", "consciousness-depressed", "seizure",
         "positive-pressure", "cerebral-edema", "motor-weakness")
PROBLEMS = ("Observation.valueQuantity.value: outside the plausible range",
            "Observation.valueQuantity.code: unit 'xyz' cannot be converted",
            "Observation.effective[x]: no date (effective[x] and issued absent)",
            "Observation.interpretation: indeterminate or equivocal")

_serial = iter(range(10**9))


def _q(concept: str, value: float, n: int, comparator: str | None = None, high: float | None = None) -> Fact:
    unit = UNITS.get(concept, "1")
    return Fact(concept, Quantity(value, unit, comparator), day(n), f"Observation/u{next(_serial)}",
                ref_high=None if high is None else Quantity(high, unit))


@st.composite
def not_usable(draw: st.DrawFn, concepts: tuple[str, ...]) -> Fact:
    concept = draw(st.sampled_from(concepts))
    n = draw(st.one_of(st.none(), st.integers(-20, 200)))
    return Fact(concept, None, None if n is None else day(n), f"Observation/nu{next(_serial)}",
                status=draw(st.sampled_from(["final", "amended", "preliminary"])),
                problem=draw(st.sampled_from(PROBLEMS)))


@st.composite
def response_patient(draw: st.DrawFn) -> PatientFacts:
    items: list[Fact | Diagnosis] = []
    if draw(st.booleans()):
        items.append(_q("marrow-blasts-percent", draw(st.floats(0, 100)), draw(st.integers(-20, -1))))
    for n in draw(st.lists(st.integers(1, 200), min_size=1, max_size=5, unique=True)):
        items.append(_q("marrow-blasts-percent", draw(st.sampled_from([0.5, 2.0, 4.9, 5.0, 8.0, 15.0, 30.0])), n,
                        draw(st.sampled_from([None, None, None, "<"]))))
        for concept, values in (("anc", [0.3, 0.8, 1.0, 1.5, 3.0]), ("platelets", [20.0, 80.0, 100.0, 150.0]),
                                ("blood-blasts-percent", [0.0, 0.0, 2.0])):
            if draw(st.integers(0, 4)):
                items.append(_q(concept, draw(st.sampled_from(values)), n + draw(st.integers(-3, 3))))
    for n in draw(st.lists(st.integers(1, 200), max_size=3)):
        items.append(_q("blood-blasts-percent", draw(st.sampled_from([0.0, 1.0])), n))
    for concept in FINDINGS:
        if not draw(st.integers(0, 5)):
            items.append(Fact(concept, draw(st.booleans()), day(draw(st.integers(1, 200))),
                              f"Observation/f{next(_serial)}"))
    return patient(infusion(0), *items)


@dataclass(frozen=True)
class _Seen:
    response: str
    category: str | None


def _by_key(pf: PatientFacts) -> tuple[dict[tuple[date, str], _Seen], str, date | None]:
    r = assess_response(pf, D0, OPTS)
    seen = {(a.when, a.evidence[0]): _Seen(a.response, a.category) for a in r.assessments}
    return seen, r.best_response, r.relapse_date


def _allowed(before: str, after: str) -> bool:
    return after in (before, "NE") or (before in ("CR", "CRi") and after == "MLFS")


@settings(max_examples=300, deadline=None)
@given(response_patient(), st.lists(not_usable(RESPONSE_CONCEPTS + FINDINGS), min_size=1, max_size=4))
def test_not_usable_values_never_decide_a_response_differently(pf: PatientFacts, extra: list[Fact]) -> None:
    before, best_before, relapse_before = _by_key(pf)
    more = PatientFacts(pf.patient_id, facts=[*pf.facts, *extra], infusions=pf.infusions)
    after, best_after, relapse_after = _by_key(more)
    for key, seen in before.items():
        if key in after:
            assert _allowed(seen.response, after[key].response), (key, seen, after[key])
            category = after[key].category
            if seen.category is not None and category is not None:
                assert _allowed(seen.category, category)
        else:  # an added relapse assessment may be gone (relapse now undecidable, tagged on another one)
            assert seen.category is None
    for key, seen in after.items():
        if key not in before:
            assert seen.response == "NE" or key[1] in {f.source for f in extra}, (key, seen)
    assert RANK[best_after] >= RANK[best_before]  # the best response is a lower bound: never better
    assert relapse_after in (relapse_before, None)  # a relapse is never declared from a not-usable value


def _events(pf: PatientFacts) -> set[tuple[object, ...]]:
    return {(e.term, e.grade, e.onset, e.evidence) for e in adverse_events(pf, D0, OPTS)}


@st.composite
def safety_patient(draw: st.DrawFn) -> PatientFacts:
    items: list[Fact | Diagnosis] = []
    values = {"anc": [0.3, 1.2, 2.5], "platelets": [20.0, 60.0, 200.0], "hemoglobin": [7.0, 9.0, 13.0],
              "ast": [20.0, 60.0, 250.0], "alt": [20.0, 130.0, 900.0], "bilirubin-total": [0.5, 2.0, 5.0],
              "creatinine": [0.7, 1.8, 4.0]}
    for concept in draw(st.lists(st.sampled_from(LAB_CONCEPTS), max_size=8)):
        items.append(_q(concept, draw(st.sampled_from(values[concept])), draw(st.integers(-10, 60)),
                        high=draw(st.sampled_from([None, 40.0, 1.2]))))
    for n in draw(st.lists(st.integers(0, 20), max_size=4)):
        items.append(_q("body-temperature", draw(st.sampled_from([36.8, 38.2, 39.5])), n))
        if draw(st.booleans()):
            items.append(Fact("vasopressors", draw(st.integers(0, 3)), day(n), f"Observation/v{next(_serial)}"))
    for n in draw(st.lists(st.integers(0, 20), max_size=2)):
        items.append(Fact("ice-score", draw(st.integers(0, 10)), day(n), f"Observation/i{next(_serial)}"))
    for concept, code in (("crs", "D89.839"), ("icans", "G92.00")):
        if draw(st.booleans()):
            items.append(condition(concept, draw(st.integers(0, 20)), code=code))
    return patient(infusion(0), *items)


@settings(max_examples=300, deadline=None)
@given(safety_patient(), st.lists(not_usable(LAB_CONCEPTS + SIGNS), min_size=1, max_size=5))
def test_not_usable_values_never_create_or_grade_an_adverse_event(pf: PatientFacts, extra: list[Fact]) -> None:
    before = _events(pf)
    more = PatientFacts(pf.patient_id, facts=[*pf.facts, *extra], infusions=pf.infusions, diagnoses=pf.diagnoses)
    after = _events(more)
    assert after <= before  # nothing new, nothing re-graded (a baseline made unknown may only make AEs ungradable)
    # values that are implausible but typed (as an older normalizer passed them) create nothing either
    typed = [Fact("body-temperature", Quantity(60.0, "Cel"), day(3), "Observation/t60"),
             Fact("vasopressors", 11, day(3), "Observation/v11"),
             Fact("ice-score", 12, day(3), "Observation/i12"),
             Fact("oxygen-flow", Quantity(-1.0, "L/min"), day(3), "Observation/o-1")]
    assert _events(PatientFacts(pf.patient_id, facts=[*pf.facts, *typed], infusions=pf.infusions,
                                diagnoses=pf.diagnoses)) == before


@settings(max_examples=150, deadline=None)
@given(response_patient(), st.lists(not_usable(RESPONSE_CONCEPTS + FINDINGS + LAB_CONCEPTS + SIGNS + ("body-weight",
                                                                                                      "car-t-copies")),
                                    max_size=8))
def test_assessing_a_patient_with_not_usable_values_never_raises(pf: PatientFacts, extra: list[Fact]) -> None:
    more = PatientFacts(pf.patient_id, facts=[*pf.facts, *extra], infusions=pf.infusions)
    pa = assess_patient(more, OPTS)
    assert pa is not None
    pa.as_json()
