"""Response assessment (RULES.md §4, errata 4 and 5): categories at every boundary, relapse, best response.

The builders here (``obs``, ``finding``, ``infusion``, ``patient``, ``day``) are shared by the dose, safety and
assessment tests: facts are dated by day number from D0 (10 March 2026).
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import RuleOptions
from bridge.evaluate.response import (
    RANK,
    RESPONSES,
    Inputs,
    assess_response,
    best_of,
    classify,
    nearest,
)
from bridge.model import Diagnosis, Fact, Infusion, PatientFacts, Quantity

D0 = date(2026, 3, 10)
AS_OF = date(2026, 12, 31)
OPTS = RuleOptions(as_of=AS_OF)
UNITS = {"marrow-blasts-percent": "%", "blood-blasts-percent": "%", "blood-blasts-count": "10*9/L",
         "anc": "10*9/L", "platelets": "10*9/L", "hemoglobin": "g/dL", "ast": "U/L", "alt": "U/L",
         "bilirubin-total": "mg/dL", "creatinine": "mg/dL", "body-weight": "kg", "body-temperature": "Cel",
         "car-t-copies": "{copies}/ug", "car-t-percent": "%", "mrd-percent": "%", "oxygen-flow": "L/min"}
_ids = itertools.count(1)


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def ref(kind: str = "Observation") -> str:
    return f"{kind}/r{next(_ids)}"


def obs(concept: str, value: float | None, n: int, comparator: str | None = None, low: float | None = None,
        high: float | None = None, status: str = "final", source: str | None = None) -> Fact:
    unit = UNITS[concept]
    return Fact(concept, None if value is None else Quantity(value, unit, comparator), day(n), source or ref(),
                status, ref_low=None if low is None else Quantity(low, unit),
                ref_high=None if high is None else Quantity(high, unit),
                problem="Observation.valueQuantity: no unit" if value is None else None)


def finding(concept: str, value: bool | int, n: int) -> Fact:
    return Fact(concept, value, day(n), ref())


def infusion(n: int, cells: float | None = 25e6, status: str = "completed", concept: str = "cd7-car-t-product",
             when: date | None = None) -> Infusion:
    return Infusion(concept, when or day(n), status, cells, ref("MedicationAdministration"))


def condition(concept: str, n: int, grade: int | None = None, code: str = "D89.83", abated: int | None = None,
              verification: str | None = "confirmed") -> Diagnosis:
    return Diagnosis(frozenset({concept}), "http://hl7.org/fhir/sid/icd-10-cm", code, ref("Condition"),
                     clinical_status="active", verification_status=verification, onset=day(n),
                     abatement=None if abated is None else day(abated), grade=grade)


def patient(*items: Fact | Infusion | Diagnosis, pid: str = "p1", deceased: bool = False,
            deceased_date: date | None = None) -> PatientFacts:
    pf = PatientFacts(pid, deceased=deceased, deceased_date=deceased_date)
    for it in items:
        if isinstance(it, Fact):
            pf.facts.append(it)
        elif isinstance(it, Infusion):
            pf.infusions.append(it)
        else:
            pf.diagnoses.append(it)
        when = it.when
        if when is not None:
            pf.activity.add(when)
    return pf


def pct(x: float, comparator: str | None = None) -> Quantity:
    return Quantity(x, "%", comparator)


def cnt(x: float) -> Quantity:
    return Quantity(x, "10*9/L")


def inputs(marrow: float, anc: float | None = 2.0, plt: float | None = 150.0, blasts: float | None = 0.0,
           baseline: float | None = 40.0, **kw: bool) -> Inputs:
    return Inputs(pct(marrow), None if baseline is None else pct(baseline), None if anc is None else cnt(anc),
                  None if plt is None else cnt(plt), None if blasts is None else pct(blasts), **kw)


# ------------------------------------------------------------------ category boundaries
@pytest.mark.parametrize(("x", "expected"), [
    (inputs(4.99), "CR"),
    (inputs(5.0, baseline=20.0), "PR"),  # exactly 5 % is not CR; 5-25 % with >= 50 % decrease
    (inputs(5.0, baseline=8.0), "NR"),  # ... and without the decrease it is no response
    (inputs(25.0, baseline=50.0), "PR"),  # 25 % included, exactly 50 % decrease included
    (inputs(25.01, baseline=80.0), "NR"),
    (inputs(15.0, baseline=30.0), "PR"),  # exactly a 50 % decrease
    (inputs(15.01, baseline=30.0), "NR"),
    (inputs(10.0, baseline=None), "NE"),  # PR undecidable without a baseline
    (inputs(10.0, anc=0.8, baseline=40.0), "NR"),  # PR needs the haematological CR criteria
    (inputs(10.0, blasts=2.0, baseline=40.0), "NR"),  # ... including no circulating blasts
    (inputs(10.0, baseline=40.0, auer_rods=True), "PR"),  # Auer rods are not a haematological criterion
    (inputs(2.0, auer_rods=True), "NR"),
    (inputs(2.0, extramedullary=True), "NR"),
    (inputs(2.0, blasts=1.0), "MLFS"),  # circulating blasts: not CR/CRi, but MLFS needs no blood criteria
    (inputs(2.0, blasts=None), "MLFS"),  # no blood blast result: CR undecidable -> MLFS
    (inputs(2.0, anc=None), "MLFS"),  # no ANC in the window
    (inputs(2.0, anc=None, plt=None), "MLFS"),
    (inputs(10.0, anc=None, plt=None, baseline=40.0), "NE"),  # no counts: PR undecidable, MLFS not met
    (inputs(40.0, anc=None, plt=None), "NR"),  # no count could make 40 % a response
    (Inputs(pct(5.0, "<"), None, cnt(2.0), cnt(150.0), pct(0.0)), "CR"),  # "<5 %" is below 5
    (Inputs(pct(10.0, "<"), None, cnt(2.0), cnt(150.0), pct(0.0)), "NE"),  # "<10 %" decides nothing
])
def test_category_boundaries(x: Inputs, expected: str) -> None:
    assert classify(x) == expected


@pytest.mark.parametrize(("anc", "plt", "comparators", "expected"), [
    (1.0, 150.0, "record", "CRi"),  # ANC exactly 1.0 is not > 1.0
    (1.0, 150.0, "eln", "CR"),  # ... but is >= 1.0
    (1.01, 150.0, "record", "CR"),
    (2.0, 100.0, "record", "CRi"),  # platelets exactly 100 likewise
    (2.0, 100.0, "eln", "CR"),
    (0.99, 150.0, "eln", "CRi"),
    (1.0, 100.0, "record", "MLFS"),  # both at the threshold = both below under record comparators
    (1.0, 100.0, "eln", "CR"),
])
def test_count_thresholds_follow_the_comparators(anc: float, plt: float, comparators: str, expected: str) -> None:
    assert classify(inputs(2.0, anc=anc, plt=plt), comparators) == expected


@pytest.mark.parametrize(("reading", "expected"), [("operational", "MLFS"), ("literal", "CRi")])
def test_both_lineages_below_depends_on_the_cri_reading(reading: str, expected: str) -> None:
    assert classify(inputs(2.0, anc=0.3, plt=20.0), "record", reading) == expected


def test_literal_reading_keeps_one_lineage_below_as_cri() -> None:
    assert classify(inputs(2.0, anc=0.3, plt=150.0), "record", "literal") == "CRi"
    assert classify(inputs(2.0, anc=0.3, plt=None), "record", "literal") == "MLFS"  # a missing count: undecidable


# ------------------------------------------------------------------ properties of the classifier
counts = st.one_of(st.none(), st.floats(0.0, 5.0, allow_nan=False))
plts = st.one_of(st.none(), st.floats(0.0, 400.0, allow_nan=False))
percents = st.floats(0.0, 100.0, allow_nan=False)
case = st.builds(
    lambda m, b, a, p, bb, auer, emd: Inputs(pct(m), None if b is None else pct(b), None if a is None else cnt(a),
                                             None if p is None else cnt(p), None if bb is None else pct(bb), auer,
                                             emd),
    percents, st.one_of(st.none(), percents), counts, plts, st.one_of(st.none(), st.floats(0.0, 20.0)),
    st.booleans(), st.booleans())


@given(case)
def test_classifier_is_total_and_consistent(x: Inputs) -> None:
    r = classify(x)
    assert r in RESPONSES
    if r in ("CR", "CRi", "MLFS"):
        assert x.marrow.value < 5.0 and not x.auer_rods and not x.extramedullary
    if r == "CR":
        assert x.anc and x.anc.value > 1.0 and x.platelets and x.platelets.value > 100.0
        assert x.blood_blasts is not None and x.blood_blasts.value == 0.0
    if r == "PR":
        assert 5.0 <= x.marrow.value <= 25.0 and x.baseline and x.marrow.value <= x.baseline.value / 2
    if x.marrow.value > 25.0:
        assert r == "NR"


@given(case)
def test_eln_comparators_never_give_a_worse_response(x: Inputs) -> None:
    assert RANK[classify(x, "eln")] <= RANK[classify(x, "record")]


@given(case)
def test_literal_cri_reading_only_turns_mlfs_into_cri(x: Inputs) -> None:
    operational, literal = classify(x, "record", "operational"), classify(x, "record", "literal")
    assert operational == literal or (operational, literal) == ("MLFS", "CRi")


# ------------------------------------------------------------------ assessments from facts
def test_day_numbers_are_calendar_date_differences() -> None:
    # infusion at 10:00 on 10 March, marrow at 08:00 on 27 March: the normalizer keeps local dates
    pf = patient(infusion(0, when=date(2026, 3, 10)), obs("marrow-blasts-percent", 3.0, 17))
    r = assess_response(pf, date(2026, 3, 10), OPTS)
    assert [(a.when, a.day) for a in r.assessments] == [(date(2026, 3, 27), 17)]


def test_baseline_is_the_latest_marrow_strictly_before_day_0() -> None:
    pf = patient(obs("marrow-blasts-percent", 60.0, -20), obs("marrow-blasts-percent", 20.0, -5),
                 obs("marrow-blasts-percent", 99.0, 0), obs("marrow-blasts-percent", 3.0, 28))
    r = assess_response(pf, D0, OPTS)
    assert r.baseline_marrow_blasts == 20.0
    assert [a.day for a in r.assessments] == [28]  # the day-0 marrow is neither baseline nor assessment


def test_mlfs_case_of_the_published_patient() -> None:
    marrow = obs("marrow-blasts-percent", 3.0, 17)
    anc, plt, blasts = obs("anc", 0.3, 16), obs("platelets", 20.0, 17), obs("blood-blasts-percent", 0.0, 17)
    pf = patient(obs("marrow-blasts-percent", 20.0, -7), marrow, anc, plt, blasts)
    r = assess_response(pf, D0, OPTS)
    [a] = r.assessments
    assert (a.day, a.response, r.best_response, r.remission_date, r.relapse_date) == (17, "MLFS", "MLFS", day(17),
                                                                                          None)
    assert a.evidence == (marrow.source, anc.source, plt.source, blasts.source)
    assert "no Auer rods recorded (absent by default)" in a.reason
    assert "no extramedullary disease recorded (absent by default)" in a.reason
    assert "operational CRi reading" in a.reason
    assert a.crh is False  # ANC 0.3 and platelets 20: no partial recovery either


def test_counts_are_taken_from_the_nearest_result_in_the_window() -> None:
    pf = patient(obs("marrow-blasts-percent", 2.0, 30), obs("anc", 0.2, 22), obs("anc", 3.0, 27),
                 obs("anc", 0.1, 33), obs("platelets", 150.0, 37), obs("platelets", 10.0, 38),
                 obs("blood-blasts-percent", 0.0, 30))
    [a] = assess_response(pf, D0, OPTS).assessments
    # ANC: day 27 (3 days) beats day 33 (3 days, later on a tie) and day 22 (out of ±7); platelets on day 37 is
    # 7 days away (inside), day 38 is outside
    assert a.response == "CR"


def test_no_counts_in_the_window_fall_back_to_mlfs_or_ne() -> None:
    far = obs("anc", 3.0, 40)
    pf = patient(obs("marrow-blasts-percent", 50.0, -3), obs("marrow-blasts-percent", 2.0, 30), far,
                 obs("marrow-blasts-percent", 10.0, 60))
    first, second = assess_response(pf, D0, OPTS).assessments
    assert (first.response, second.response) == ("MLFS", "relapse")
    assert "CR/CRi/PR undecidable" in first.reason and far.source not in first.evidence
    pf = patient(obs("marrow-blasts-percent", 50.0, -3), obs("marrow-blasts-percent", 10.0, 30))
    assert assess_response(pf, D0, OPTS).assessments[0].response == "NE"


def test_positive_auer_rods_in_the_window_prevent_remission() -> None:
    auer = finding("auer-rods", True, 29)
    pf = patient(obs("marrow-blasts-percent", 2.0, 30), obs("anc", 2.0, 30), obs("platelets", 150.0, 30),
                 obs("blood-blasts-percent", 0.0, 30), auer, finding("auer-rods", True, 50))
    [a] = assess_response(pf, D0, OPTS).assessments
    assert a.response == "NR" and auer.source in a.evidence and "Auer rods recorded on" in a.reason


def test_negative_findings_are_absence() -> None:
    pf = patient(obs("marrow-blasts-percent", 2.0, 30), obs("anc", 2.0, 30), obs("platelets", 150.0, 30),
                 obs("blood-blasts-percent", 0.0, 30), finding("extramedullary-disease", False, 30))
    assert assess_response(pf, D0, OPTS).assessments[0].response == "CR"


def test_crh_and_mrd_are_reported_per_assessment() -> None:
    mrd = obs("mrd-percent", 0.01, 31, comparator="<")
    pf = patient(obs("marrow-blasts-percent", 2.0, 30), obs("anc", 0.6, 30), obs("platelets", 60.0, 30),
                 obs("blood-blasts-percent", 0.0, 30), mrd)
    [a] = assess_response(pf, D0, OPTS).assessments
    assert (a.response, a.crh) == ("MLFS", True)
    assert a.as_json()["mrd"] == {"percent": 0.01, "comparator": "<"} and mrd.source in a.evidence
    pf = patient(obs("marrow-blasts-percent", 2.0, 30), obs("anc", 0.5, 30), obs("platelets", 60.0, 30),
                 obs("blood-blasts-percent", 0.0, 30))
    [a] = assess_response(pf, D0, OPTS).assessments
    assert a.crh is False and a.as_json()["mrd"] is None  # ANC exactly 0.5 is not > 0.5 (record comparators)
    [a] = assess_response(pf, D0, OPTS.with_(comparators="eln")).assessments
    assert a.crh is True


def test_unusable_marrow_result_is_ne() -> None:
    bad = obs("marrow-blasts-percent", None, 30)
    [a] = assess_response(patient(bad), D0, OPTS).assessments
    assert (a.response, a.evidence) == ("NE", (bad.source,)) and "not usable" in a.reason


def test_no_post_infusion_marrow_is_ne_with_no_assessments() -> None:
    r = assess_response(patient(obs("marrow-blasts-percent", 20.0, -3)), D0, OPTS)
    assert (r.assessments, r.best_response, r.remission_date) == ((), "NE", None)


def test_data_after_the_as_of_date_is_ignored() -> None:
    pf = patient(obs("marrow-blasts-percent", 2.0, 30), obs("marrow-blasts-percent", 40.0, 60))
    r = assess_response(pf, D0, OPTS.with_(as_of=day(45)))
    assert [a.day for a in r.assessments] == [30] and r.relapse_date is None


# ------------------------------------------------------------------ relapse
def _cr(n: int) -> list[Fact]:
    return [obs("marrow-blasts-percent", 1.0, n), obs("anc", 2.0, n), obs("platelets", 150.0, n),
            obs("blood-blasts-percent", 0.0, n)]


def test_relapse_by_marrow_blasts_after_cr() -> None:
    late = obs("marrow-blasts-percent", 5.0, 90)  # exactly 5 % is relapse
    r = assess_response(patient(*_cr(28), late, obs("marrow-blasts-percent", 40.0, 120)), D0, OPTS)
    assert [a.response for a in r.assessments] == ["CR", "relapse", "NR"]
    assert (r.best_response, r.remission_date, r.relapse_date, r.relapse_evidence) == ("CR", day(28), day(90),
                                                                                      (late.source,))
    assert "relapse after CR" in r.assessments[1].reason


def test_blood_only_relapse_adds_a_relapse_assessment() -> None:
    blood = obs("blood-blasts-percent", 2.0, 60)
    r = assess_response(patient(*_cr(28), obs("blood-blasts-percent", 0.0, 45), blood), D0, OPTS)
    assert [(a.day, a.response, a.category) for a in r.assessments] == [(28, "CR", "CR"), (60, "relapse", None)]
    assert r.relapse_date == day(60) and r.assessments[1].evidence == (blood.source,)
    assert r.best_response == "CR"


def test_blood_blast_count_also_signals_relapse() -> None:
    r = assess_response(patient(*_cr(28), obs("blood-blasts-count", 0.05, 70)), D0, OPTS)
    assert r.relapse_date == day(70)


def test_circulating_blasts_present_at_mlfs_must_disappear_before_they_reappear() -> None:
    mlfs = [obs("marrow-blasts-percent", 2.0, 20), obs("blood-blasts-percent", 3.0, 20)]
    r = assess_response(patient(*mlfs, obs("blood-blasts-percent", 4.0, 30)), D0, OPTS)
    assert (r.best_response, r.relapse_date) == ("MLFS", None)
    r = assess_response(patient(*mlfs, obs("blood-blasts-percent", 0.0, 30), obs("blood-blasts-percent", 1.0, 40)),
                        D0, OPTS)
    assert r.relapse_date == day(40)


def test_new_extramedullary_disease_is_relapse_and_tags_a_same_day_marrow() -> None:
    emd = finding("extramedullary-disease", True, 90)
    r = assess_response(patient(*_cr(28), emd, obs("marrow-blasts-percent", 1.0, 90)), D0, OPTS)
    assert r.relapse_date == day(90)
    assert [a.response for a in r.assessments] == ["CR", "relapse"]
    assert emd.source in r.assessments[1].evidence


def test_the_first_relapse_result_wins_whatever_its_kind() -> None:
    r = assess_response(patient(*_cr(28), obs("blood-blasts-percent", 1.0, 80),
                                obs("marrow-blasts-percent", 30.0, 85)), D0, OPTS)
    assert r.relapse_date == day(80)
    assert [a.response for a in r.assessments] == ["CR", "relapse", "NR"]


def test_no_relapse_without_remission() -> None:
    r = assess_response(patient(obs("marrow-blasts-percent", 40.0, 28), obs("blood-blasts-percent", 5.0, 60)),
                        D0, OPTS)
    assert (r.best_response, r.remission_date, r.relapse_date) == ("NR", None, None)


@pytest.mark.parametrize(("seen", "best"), [
    (["NR", "PR", "MLFS"], "MLFS"), (["MLFS", "CRi"], "CRi"), (["CRi", "CR", "NE"], "CR"), (["NE", "NR"], "NR"),
    (["NE"], "NE"), ([], "NE"),
])
def test_best_response_ranking(seen: list[str], best: str) -> None:
    assert best_of(seen) == best


def test_nearest_prefers_the_stronger_status_on_the_same_day() -> None:
    pre = obs("anc", 0.5, 10, status="preliminary")
    amended = obs("anc", 1.5, 10, status="amended")
    assert nearest([pre, amended], day(12), 7, D0, AS_OF) is amended


# ------------------------------------------------------------------ not-usable values (RULES.md §3, issue #12)
def nu(concept: str, n: int | None, why: str = "outside the plausible range") -> Fact:
    return Fact(concept, None, None if n is None else day(n), ref(), problem=f"Observation.valueQuantity.value: {why}")


def _counts(n: int, anc: float = 2.0, plt: float = 150.0, blasts: float = 0.0) -> list[Fact]:
    return [obs("anc", anc, n), obs("platelets", plt, n), obs("blood-blasts-percent", blasts, n)]


def test_an_implausible_marrow_result_is_ne_naming_the_resource() -> None:
    bad = nu("marrow-blasts-percent", 30)
    [a] = assess_response(patient(bad, *_counts(30)), D0, OPTS).assessments
    assert a.response == "NE" and bad.source in a.reason and a.evidence == (bad.source,)


def test_a_not_usable_baseline_makes_the_pr_decrease_undecidable() -> None:
    bad = nu("marrow-blasts-percent", -3)
    r = assess_response(patient(obs("marrow-blasts-percent", 40.0, -20), bad, obs("marrow-blasts-percent", 10.0, 28),
                                *_counts(28)), D0, OPTS)
    [a] = r.assessments
    assert a.response == "NE" and bad.source in a.reason and bad.source in a.evidence
    assert r.baseline_marrow_blasts is None and r.baseline is bad  # never the older 40 %
    # the same with a usable baseline is PR; and a CR does not need the baseline at all
    r = assess_response(patient(obs("marrow-blasts-percent", 40.0, -3), obs("marrow-blasts-percent", 10.0, 28),
                                *_counts(28)), D0, OPTS)
    assert r.assessments[0].response == "PR"
    r = assess_response(patient(bad, obs("marrow-blasts-percent", 1.0, 28), *_counts(28)), D0, OPTS)
    assert r.assessments[0].response == "CR" and bad.source not in r.assessments[0].reason
    # a not-usable baseline on the same day as a usable one is unknown too
    r = assess_response(patient(obs("marrow-blasts-percent", 40.0, -3), nu("marrow-blasts-percent", -3),
                                obs("marrow-blasts-percent", 10.0, 28), *_counts(28)), D0, OPTS)
    assert r.assessments[0].response == "NE"


@pytest.mark.parametrize("concept", ["anc", "platelets", "blood-blasts-percent", "blood-blasts-count"])
def test_a_not_usable_nearest_count_makes_cr_undecidable(concept: str) -> None:
    bad = nu(concept, 29)
    usable = [f for f in _counts(25) if f.concept != concept or concept == "blood-blasts-count"]
    r = assess_response(patient(obs("marrow-blasts-percent", 40.0, -3), obs("marrow-blasts-percent", 2.0, 30),
                                *usable, bad), D0, OPTS)
    [a] = r.assessments
    assert a.response == "MLFS" and "CR/CRi/PR undecidable" in a.reason
    assert bad.source in a.reason and bad.source in a.evidence
    # PR is undecidable too: NE
    r = assess_response(patient(obs("marrow-blasts-percent", 40.0, -3), obs("marrow-blasts-percent", 10.0, 30),
                                *usable, bad), D0, OPTS)
    assert r.assessments[0].response == "NE"
    # no count could make 40 % a response
    r = assess_response(patient(obs("marrow-blasts-percent", 40.0, 30), *usable, bad), D0, OPTS)
    assert r.assessments[0].response == "NR"


def test_an_equally_near_not_usable_count_makes_it_unknown_a_farther_one_does_not() -> None:
    marrow = obs("marrow-blasts-percent", 2.0, 30)
    tied = patient(marrow, obs("anc", 3.0, 27), nu("anc", 33), obs("platelets", 150.0, 30),
                   obs("blood-blasts-percent", 0.0, 30))
    assert assess_response(tied, D0, OPTS).assessments[0].response == "MLFS"
    farther = patient(marrow, obs("anc", 3.0, 28), nu("anc", 33), obs("platelets", 150.0, 30),
                      obs("blood-blasts-percent", 0.0, 30))
    assert assess_response(farther, D0, OPTS).assessments[0].response == "CR"


def test_an_implausible_count_never_makes_cr() -> None:
    only_bad = patient(obs("marrow-blasts-percent", 2.0, 30), nu("anc", 30), nu("platelets", 30),
                       obs("blood-blasts-percent", 0.0, 30))
    assert assess_response(only_bad, D0, OPTS).assessments[0].response == "MLFS"


def test_a_not_usable_finding_leaves_auer_rods_or_emd_unknown() -> None:
    for concept in ("auer-rods", "extramedullary-disease"):
        bad = Fact(concept, None, day(30), ref(), problem="Observation.interpretation: indeterminate or equivocal")
        [a] = assess_response(patient(obs("marrow-blasts-percent", 2.0, 30), *_counts(30), bad), D0, OPTS).assessments
        assert a.response == "NE" and bad.source in a.reason and bad.source in a.evidence
        [a] = assess_response(patient(obs("marrow-blasts-percent", 40.0, 30), *_counts(30), bad), D0,
                              OPTS).assessments
        assert a.response == "NR"


def test_a_not_usable_mrd_is_no_mrd() -> None:
    [a] = assess_response(patient(obs("marrow-blasts-percent", 2.0, 30), *_counts(30), nu("mrd-percent", 30)), D0,
                          OPTS).assessments
    assert a.response == "CR" and a.mrd is None


def test_undated_results_are_left_out() -> None:
    r = assess_response(patient(obs("marrow-blasts-percent", 2.0, 30), *_counts(30), nu("marrow-blasts-percent", None),
                                nu("anc", None)), D0, OPTS)
    assert [a.response for a in r.assessments] == ["CR"]


def test_no_relapse_from_a_not_usable_marrow_and_no_evidence_of_remission_either() -> None:
    bad = nu("marrow-blasts-percent", 60)
    r = assess_response(patient(*_cr(28), bad, *_cr(90)), D0, OPTS)
    assert [a.response for a in r.assessments] == ["CR", "NE", "CR"]
    assert r.relapse_date is None and r.relapse_unknown_from == day(60)
    assert "relapse undecidable after CR" in r.assessments[1].reason and bad.source in r.assessments[1].reason


def test_a_relapse_after_a_not_usable_marrow_has_an_unknown_date() -> None:
    bad, late = nu("marrow-blasts-percent", 60), obs("marrow-blasts-percent", 30.0, 90)
    r = assess_response(patient(*_cr(28), bad, late), D0, OPTS)
    assert [(a.response, a.category) for a in r.assessments] == [("CR", "CR"), ("NE", "NE"), ("NE", "NR")]
    assert r.relapse_date is None and r.relapse_unknown_from == day(60) and r.best_response == "CR"
    assert "relapse by this date at the latest" in r.assessments[2].reason
    # a not-usable marrow after the relapse changes nothing
    r = assess_response(patient(*_cr(28), late, nu("marrow-blasts-percent", 120)), D0, OPTS)
    assert r.relapse_date == day(90) and r.relapse_unknown_from is None


def test_no_relapse_from_a_not_usable_blood_result() -> None:
    bad = nu("blood-blasts-percent", 60)
    r = assess_response(patient(*_cr(28), bad), D0, OPTS)
    assert (r.relapse_date, r.relapse_unknown_from) == (None, day(60))
    assert [(a.day, a.response, a.category) for a in r.assessments] == [(28, "CR", "CR"), (60, "NE", None)]


def test_blasts_after_a_not_usable_result_while_absent_may_have_reappeared_earlier() -> None:
    r = assess_response(patient(*_cr(28), nu("blood-blasts-percent", 50), obs("blood-blasts-percent", 2.0, 60)),
                        D0, OPTS)
    assert r.relapse_date is None and r.relapse_unknown_from == day(50)
    assert [(a.day, a.response) for a in r.assessments] == [(28, "CR"), (50, "NE"), (60, "NE")]


def test_blasts_after_a_not_usable_result_while_present_may_be_a_reappearance() -> None:
    mlfs = [obs("marrow-blasts-percent", 2.0, 20), obs("blood-blasts-percent", 3.0, 20)]
    # present -> not usable (no event: it cannot be a reappearance) -> 4 % may be one (if the unknown was 0)
    r = assess_response(patient(*mlfs, nu("blood-blasts-percent", 30), obs("blood-blasts-percent", 4.0, 40)), D0,
                        OPTS)
    assert (r.best_response, r.relapse_date, r.relapse_unknown_from) == ("MLFS", None, day(40))
    assert [(a.day, a.response) for a in r.assessments] == [(20, "MLFS"), (40, "NE")]


def test_a_not_usable_blood_result_at_remission_leaves_a_later_reappearance_undecidable() -> None:
    remission = [obs("marrow-blasts-percent", 2.0, 28), nu("blood-blasts-percent", 28)]
    r = assess_response(patient(*remission, obs("blood-blasts-percent", 2.0, 60)), D0, OPTS)
    assert [(a.day, a.response) for a in r.assessments] == [(28, "MLFS"), (60, "NE")]
    assert (r.relapse_date, r.relapse_unknown_from) == (None, day(60))
    # a usable 0 then > 0 is a reappearance again
    r = assess_response(patient(*remission, obs("blood-blasts-percent", 2.0, 60), obs("blood-blasts-percent", 0.0, 70),
                                obs("blood-blasts-percent", 1.0, 80)), D0, OPTS)
    assert r.relapse_date is None and r.relapse_unknown_from == day(60)  # the first may-be decides the date


def test_a_relapse_before_any_not_usable_result_stands() -> None:
    late = obs("marrow-blasts-percent", 30.0, 60)
    r = assess_response(patient(*_cr(28), late, nu("marrow-blasts-percent", 90), nu("blood-blasts-percent", 95)),
                        D0, OPTS)
    assert (r.relapse_date, r.relapse_unknown_from) == (day(60), None)
    assert [a.response for a in r.assessments] == ["CR", "relapse", "NE"]


def test_a_possible_remission_before_the_remission_makes_a_relapse_result_in_between_undecidable() -> None:
    # day 14 could have been a remission (marrow not usable): the 30 % of day 21 could then be a relapse
    r = assess_response(patient(nu("marrow-blasts-percent", 14), obs("marrow-blasts-percent", 30.0, 21),
                                *_counts(21), *_cr(28)), D0, OPTS)
    assert [(a.day, a.response, a.category) for a in r.assessments] == [(14, "NE", "NE"), (21, "NE", "NR"),
                                                                         (28, "CR", "CR")]
    assert r.remission_date == day(28) and r.relapse_date is None and r.best_response == "CR"
    # without the result in between nothing is undecidable
    r = assess_response(patient(nu("marrow-blasts-percent", 14), *_cr(28), obs("marrow-blasts-percent", 8.0, 60)),
                        D0, OPTS)
    assert r.relapse_date == day(60)


def test_a_positive_finding_rules_out_a_possible_remission() -> None:
    r = assess_response(patient(nu("marrow-blasts-percent", 14), finding("extramedullary-disease", True, 14),
                                obs("marrow-blasts-percent", 30.0, 21), *_counts(21)), D0, OPTS)
    assert [a.response for a in r.assessments] == ["NE", "NR"]
