"""Adverse events (RULES.md §5): lab grading with limits and baseline, CRS/ICANS coded or derived, episodes, window."""

from __future__ import annotations

import math

import pytest

from bridge.config import RuleOptions
from bridge.evaluate.grading import ASTCT_2019, CRS_TERM, CTCAE_V5, ICANS_TERM
from bridge.evaluate.safety import AdverseEvent, adverse_events, crs_grade, icans_grade
from bridge.model import Diagnosis, Fact, Quantity
from tests.unit.test_response import D0, OPTS, condition, day, finding, obs, patient, ref

ANC = "Neutrophil count decreased"
ALT = "Alanine aminotransferase increased"


def events(*items: Fact | Diagnosis, opts: RuleOptions = OPTS, site_lln: dict[str, float] | None = None,
           site_uln: dict[str, float] | None = None) -> list[AdverseEvent]:
    return adverse_events(patient(*items), D0, opts, site_lln=site_lln, site_uln=site_uln)


def summary(evs: list[AdverseEvent]) -> list[tuple[str, int | None, int]]:
    return [(e.term, e.grade, (e.onset - D0).days) for e in evs]


# ------------------------------------------------------------------ lab terms
def test_lln_from_reference_range_then_site_default_then_configured_default() -> None:
    assert summary(events(obs("anc", 1.6, 5, low=1.5))) == []  # above its own LLN
    assert summary(events(obs("anc", 1.6, 5), site_lln={"anc": 1.5})) == []
    assert summary(events(obs("anc", 1.6, 5))) == [(ANC, 1, 5)]  # default LLN 1.8


def test_alt_grade_depends_on_the_baseline() -> None:
    # ULN 40: 160 U/L is 4x ULN (grade 2) over a normal baseline, 1.6x an abnormal baseline of 100 (grade 1)
    normal = events(obs("alt", 30.0, -3, high=40.0), obs("alt", 160.0, 10, high=40.0))
    abnormal = events(obs("alt", 100.0, -3, high=40.0), obs("alt", 160.0, 10, high=40.0))
    assert summary(normal) == [(ALT, 2, 10)]
    assert summary(abnormal) == [(ALT, 1, 10)]
    assert summary(events(obs("alt", 100.0, -10), obs("alt", 30.0, -3), obs("alt", 160.0, 10))) == [(ALT, 2, 10)]


def test_pre_infusion_results_are_not_adverse_events() -> None:
    assert events(obs("anc", 0.1, -1)) == []


def test_consecutive_graded_results_are_one_event_at_the_worst_grade() -> None:
    a, b = obs("anc", 0.8, 5), obs("anc", 0.4, 7)
    evs = events(a, b, obs("anc", 2.0, 10), obs("anc", 1.2, 20))
    assert summary(evs) == [(ANC, 4, 5), (ANC, 2, 20)]
    assert evs[0].evidence == (a.source, b.source) and evs[0].resolved == day(10) and evs[0].origin == "lab"
    assert evs[0].as_json() == {"term": ANC, "grade": 4, "onset": "2026-03-15", "evidence": [a.source, b.source],
                                "gradingSystem": CTCAE_V5}


def test_twelve_month_window_from_day_0() -> None:
    opts = OPTS.with_(as_of=day(400))
    assert summary(events(obs("alt", 240.0, 365, high=40.0), opts=opts)) == [(ALT, 3, 365)]
    assert summary(events(obs("alt", 240.0, 366, high=40.0), opts=opts)) == []


def test_data_after_as_of_is_not_graded() -> None:
    assert events(obs("anc", 0.1, 5), opts=OPTS.with_(as_of=day(4))) == []


# ------------------------------------------------------------------ CRS / ICANS coded
def test_coded_crs_wins_over_derived_inputs() -> None:
    crs = condition("crs", 2, grade=3, code="D89.833")
    evs = events(crs, obs("body-temperature", 39.5, 2), finding("vasopressors", 2, 2))
    assert summary(evs) == [(CRS_TERM, 3, 2)]
    assert evs[0].evidence == (crs.source,) and evs[0].origin == "coded" and evs[0].grading_system == ASTCT_2019


def test_coded_episodes_closed_by_abatement_are_separate_events() -> None:
    evs = events(condition("crs", 2, grade=2, abated=6), condition("crs", 4, grade=3), condition("crs", 100, grade=1))
    assert summary(evs) == [(CRS_TERM, 3, 2), (CRS_TERM, 1, 100)]


def test_coded_crs_without_a_grade_is_an_event_of_unknown_grade_unless_covered() -> None:
    lone = condition("crs", 3, code="D89.839")
    assert summary(events(lone)) == [(CRS_TERM, None, 3)]
    assert summary(events(condition("crs", 2, grade=2), condition("crs", 3, code="D89.839"))) == [(CRS_TERM, 2, 2)]
    closed = events(condition("crs", 2, grade=2, abated=3), condition("crs", 9, code="D89.839"))
    assert summary(closed) == [(CRS_TERM, 2, 2), (CRS_TERM, None, 9)]


def test_refuted_or_pre_infusion_conditions_do_not_count() -> None:
    assert events(condition("crs", 2, grade=3, verification="entered-in-error"), condition("crs", -2, grade=2)) == []


# ------------------------------------------------------------------ CRS / ICANS derived
def test_crs_derived_per_day_with_fever_masked_once_established() -> None:
    first = obs("body-temperature", 39.0, 1)
    evs = events(first, obs("body-temperature", 39.5, 2), finding("vasopressors", 1, 2),
                 obs("body-temperature", 37.0, 3), obs("oxygen-flow", 2.0, 3),
                 obs("body-temperature", 36.8, 4), obs("body-temperature", 38.2, 40))
    assert summary(evs) == [(CRS_TERM, 3, 1), (CRS_TERM, 1, 40)]
    assert evs[0].origin == "derived" and evs[0].evidence[0] == first.source and len(evs[0].evidence) == 5
    assert evs[0].resolved == day(4)


def test_no_crs_without_a_febrile_start() -> None:
    assert events(obs("body-temperature", 37.0, 1), finding("vasopressors", 1, 1), obs("oxygen-flow", 8.0, 2)) == []


def test_crs_grade_of_one_day() -> None:
    temp, pressors = obs("body-temperature", 38.0, 1), finding("vasopressors", 2, 1)
    assert crs_grade([temp], established=False) == 1
    assert crs_grade([temp, pressors], established=False) == 4
    assert crs_grade([temp, finding("positive-pressure", True, 1)], established=False) == 4
    assert crs_grade([obs("oxygen-flow", 8.0, 1)], established=True) == 3
    assert crs_grade([obs("oxygen-flow", 8.0, 1)], established=False) is None
    assert crs_grade([obs("body-temperature", 102.0, 1)], established=False) is None  # impossible value skipped


def test_icans_derived_from_ice_seizure_and_findings() -> None:
    ice = finding("ice-score", 5, 5)
    evs = events(ice, finding("ice-score", 8, 6), finding("ice-score", 10, 7), finding("seizure", True, 9),
                 finding("seizure", False, 11))
    assert summary(evs) == [(ICANS_TERM, 2, 5), (ICANS_TERM, 3, 9)]
    assert evs[0].evidence[0] == ice.source and evs[0].grading_system == ASTCT_2019


def test_icans_grade_of_one_day() -> None:
    assert icans_grade([finding("ice-score", 2, 1), finding("ice-score", 9, 1)]) == 3  # worst ICE of the day
    assert icans_grade([finding("consciousness-depressed", 4, 1)]) == 4
    assert icans_grade([finding("cerebral-edema", True, 1)]) == 3
    assert icans_grade([finding("motor-weakness", True, 1)]) == 4
    assert icans_grade([finding("ice-score", 12, 1)]) is None  # impossible value skipped, nothing assessed
    assert icans_grade([]) is None


def test_coded_icans_does_not_hide_derived_crs() -> None:
    evs = events(condition("icans", 6, grade=1, code="G92.01"), obs("body-temperature", 38.5, 2))
    assert summary(evs) == [(CRS_TERM, 1, 2), (ICANS_TERM, 1, 6)]


# ------------------------------------------------------------------ not-usable values (RULES.md §3, issue #12)
AST = "Aspartate aminotransferase increased"
CREAT = "Creatinine increased"


def nu(concept: str, n: int | None, why: str = "outside the plausible range") -> Fact:
    return Fact(concept, None, None if n is None else day(n), ref(), problem=f"Observation.valueQuantity.value: {why}")


def test_a_not_usable_lab_value_creates_no_adverse_event() -> None:
    assert events(nu("anc", 5), nu("alt", 6), nu("platelets", None)) == []


def test_a_not_usable_lab_value_neither_splits_nor_ends_an_episode() -> None:
    a, b = obs("anc", 0.8, 5), obs("anc", 0.4, 9)
    evs = events(a, nu("anc", 7), b, obs("anc", 2.0, 12))
    assert summary(evs) == [(ANC, 4, 5)] and evs[0].evidence == (a.source, b.source) and evs[0].resolved == day(12)


def test_a_not_usable_lab_value_does_not_extend_an_episode() -> None:
    evs = events(obs("anc", 0.8, 5), obs("anc", 2.0, 7), nu("anc", 9))
    assert summary(evs) == [(ANC, 3, 5)] and evs[0].end == day(5) and evs[0].resolved == day(7)


def test_an_unusable_reference_range_uses_the_default_limit_and_still_grades() -> None:
    flagged = Fact("alt", Quantity(160.0, "U/L"), day(10), ref(), ref_problem="Observation.referenceRange[0].high: "
                   "zero or negative; the configured default limit applies")
    assert summary(events(flagged)) == [(ALT, 2, 10)]  # default ULN 40: 4x ULN
    low = Fact("anc", Quantity(1.6, "10*9/L"), day(5), ref(), ref_problem="Observation.referenceRange[0].low: negative")
    assert summary(events(low)) == [(ANC, 1, 5)]  # default LLN 1.8


def test_a_reference_high_of_zero_or_below_never_raises_and_falls_back_to_the_default() -> None:
    for high in (0.0, -40.0, math.inf, math.nan):
        evs = events(obs("alt", 30.0, -3, high=high), obs("alt", 160.0, 10, high=high),
                     obs("creatinine", 3.0, 10, high=high), obs("anc", 0.4, 12, low=high, high=high))
        assert [(t, g) for t, g, _ in summary(evs)] == [(ALT, 2), (CREAT, 2), (ANC, 4)]


def test_a_not_usable_baseline_is_unknown_not_normal() -> None:
    # ALT 160 is grade 2 over a normal baseline, 0-1 over an abnormal one: ungradable, so no AE
    assert events(nu("alt", -3), obs("alt", 160.0, 10, high=40.0)) == []
    # ... and ungradable points neither start nor end the episode of graded ones
    assert events(nu("alt", -3), obs("alt", 30.0, 10, high=40.0)) == []  # <= ULN: grade 0 whatever the baseline
    # an older usable baseline is never used instead of the newer not-usable one
    assert events(obs("alt", 30.0, -10, high=40.0), nu("alt", -3), obs("alt", 160.0, 10, high=40.0)) == []
    # a not-usable result older than the baseline does not matter
    assert summary(events(nu("alt", -10), obs("alt", 30.0, -3, high=40.0), obs("alt", 160.0, 10, high=40.0))) == \
        [(ALT, 2, 10)]
    # a not-usable baseline on the same day as a usable one: unknown
    assert events(obs("alt", 30.0, -3, high=40.0), nu("alt", -3), obs("alt", 160.0, 10, high=40.0)) == []
    # terms that are not baseline-aware are graded as ever
    assert summary(events(nu("anc", -3), obs("anc", 0.4, 10))) == [(ANC, 4, 10)]


def test_no_baseline_at_all_stays_normal() -> None:
    assert summary(events(obs("ast", 130.0, 10, high=40.0))) == [(AST, 2, 10)]


# ------------------------------------------------------------------ CRS / ICANS: ungraded codes take the signs' grade
def test_crs_coded_without_a_grade_takes_the_grade_of_the_signs_on_the_same_days() -> None:
    crs = condition("crs", 2, code="D89.839")
    temp, pressor = obs("body-temperature", 39.0, 2), finding("vasopressors", 1, 2)
    evs = events(crs, temp, pressor, obs("body-temperature", 36.8, 5))
    assert summary(evs) == [(CRS_TERM, 3, 2)]
    assert evs[0].evidence == (crs.source, temp.source, pressor.source) and evs[0].origin == "coded+derived"
    assert evs[0].grading_system == ASTCT_2019


def test_signs_of_the_episode_starting_before_the_code_count() -> None:
    crs = condition("crs", 3, code="D89.839")
    first = obs("body-temperature", 38.5, 1)
    evs = events(first, obs("body-temperature", 38.9, 2), obs("oxygen-flow", 8.0, 3), crs)
    assert summary(evs) == [(CRS_TERM, 3, 1)] and evs[0].evidence[0] == crs.source and first.source in evs[0].evidence


def test_ungraded_code_with_signs_on_other_days_keeps_a_null_grade() -> None:
    evs = events(condition("crs", 10, code="D89.839"), obs("body-temperature", 39.0, 2),
                 obs("body-temperature", 37.0, 4))
    assert summary(evs) == [(CRS_TERM, None, 10)]  # the fever of day 2 is not reported: the term is coded


def test_an_abated_ungraded_code_covers_its_days() -> None:
    evs = events(condition("crs", 2, code="D89.839", abated=6), obs("body-temperature", 36.5, 2),
                 obs("body-temperature", 38.4, 5), finding("vasopressors", 2, 5))
    assert summary(evs) == [(CRS_TERM, 4, 2)]


def test_a_coded_grade_always_wins_over_derived_signs() -> None:
    evs = events(condition("crs", 2, grade=2, code="D89.832"), condition("crs", 2, code="D89.839"),
                 obs("body-temperature", 39.5, 2), finding("vasopressors", 3, 2))
    assert summary(evs) == [(CRS_TERM, 2, 2)] and evs[0].origin == "coded"
    # signs that share a day with a graded coded episode are not given to a later ungraded code
    graded = condition("crs", 2, grade=1, code="D89.831", abated=4)
    evs = events(graded, condition("crs", 5, code="D89.839"), obs("body-temperature", 39.5, 3),
                 obs("body-temperature", 39.0, 5), finding("vasopressors", 3, 5))
    assert summary(evs) == [(CRS_TERM, 1, 2), (CRS_TERM, None, 5)]
    # ... while a separate episode of signs on the ungraded code's day grades it
    evs = events(graded, condition("crs", 8, code="D89.839"), obs("body-temperature", 39.0, 8),
                 finding("vasopressors", 3, 8))
    assert summary(evs) == [(CRS_TERM, 1, 2), (CRS_TERM, 4, 8)]


def test_icans_coded_without_a_grade_takes_the_grade_of_ice_and_findings() -> None:
    icans = condition("icans", 6, code="G92.00")
    ice = finding("ice-score", 5, 6)
    evs = events(icans, ice, finding("ice-score", 10, 8))
    assert summary(evs) == [(ICANS_TERM, 2, 6)] and evs[0].evidence == (icans.source, ice.source)
    assert summary(events(icans, finding("seizure", True, 6))) == [(ICANS_TERM, 3, 6)]


@pytest.mark.parametrize("sign", [
    Fact("body-temperature", Quantity(60.0, "Cel"), day(2), "Observation/t60"),  # old normalizer: implausible kept
    Fact("body-temperature", None, day(2), "Observation/tnu", problem="outside the plausible range"),
    Fact("vasopressors", 11, day(2), "Observation/v11"),
    Fact("vasopressors", -1, day(2), "Observation/vneg"),
    Fact("oxygen-flow", Quantity(150.0, "L/min"), day(2), "Observation/o150"),
    Fact("oxygen-flow", Quantity(-2.0, "L/min"), day(2), "Observation/oneg"),
    Fact("ice-score", 11, day(2), "Observation/i11"),
    Fact("ice-score", None, day(2), "Observation/inu", problem="outside the plausible range"),
    Fact("consciousness-depressed", 7, day(2), "Observation/c7"),
])
def test_signs_that_are_not_usable_create_and_grade_nothing(sign: Fact) -> None:
    assert events(sign) == []
    coded_crs = condition("crs", 2, code="D89.839")
    coded_icans = condition("icans", 2, code="G92.00")
    evs = events(coded_crs, coded_icans, sign)
    assert [(t, g) for t, g, _ in summary(evs)] == [(CRS_TERM, None), (ICANS_TERM, None)]
    # beside a usable fever the unusable sign adds nothing: grade 1 (fever alone)
    fever = obs("body-temperature", 38.5, 2)
    assert [g for t, g, _ in summary(events(fever, sign)) if t == CRS_TERM] == [1]


def test_an_unusable_sign_neither_ends_nor_extends_a_derived_episode() -> None:
    evs = events(obs("body-temperature", 39.0, 1), nu("body-temperature", 2), obs("body-temperature", 38.6, 3),
                 obs("body-temperature", 36.9, 4), nu("body-temperature", 5))
    assert summary(evs) == [(CRS_TERM, 1, 1)] and evs[0].resolved == day(4) and len(evs[0].evidence) == 2
