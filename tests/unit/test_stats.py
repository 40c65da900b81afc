"""Tests for bridge.evaluate.stats: Clopper–Pearson / ORR and the Aalen–Johansen CIR.

Hand-computed fixtures live in tests/data/cir/*.json with the arithmetic written out in each file.
lifelines is a test-only dependency used as an independent reference.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import InputError
from bridge.evaluate.stats import (
    DAYS_PER_MONTH,
    CirSubject,
    aalen_johansen,
    cif_at,
    cir_summary,
    clopper_pearson,
    orr,
)

CIR_DATA = Path(__file__).resolve().parents[1] / "data" / "cir"
FIXTURES = sorted(CIR_DATA.glob("*.json"))
ORIGIN = date(2023, 3, 14)
EXACT = 1e-12


def _subject(days: int, event: str, origin: date = ORIGIN) -> CirSubject:
    return CirSubject(origin, origin + timedelta(days=days), event)  # type: ignore[arg-type]


def _load(path: Path) -> tuple[dict, list[CirSubject]]:
    spec = json.loads(path.read_text())
    subjects = [
        CirSubject(date.fromisoformat(s["origin"]), date.fromisoformat(s["exit"]), s["event"])
        for s in spec["subjects"]
    ]
    return spec, subjects


def _assert_interval(actual: tuple[float, float] | list[float] | None, expected: list[float] | None) -> None:
    if expected is None:
        assert actual is None
        return
    assert actual is not None
    assert list(actual) == pytest.approx(expected, abs=1e-9)


# --- Clopper–Pearson and ORR -------------------------------------------------------------------------


def test_clopper_pearson_one_of_one_is_alpha_half_to_one() -> None:
    lo, hi = clopper_pearson(1, 1)
    assert lo == pytest.approx(0.025, abs=EXACT)
    assert hi == 1.0


def test_clopper_pearson_zero_successes_has_closed_form_upper() -> None:
    # k = 0: lower is exactly 0, upper = 1 - (alpha/2)^(1/n)
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=EXACT)


def test_clopper_pearson_all_successes_has_closed_form_lower() -> None:
    lo, hi = clopper_pearson(10, 10)
    assert lo == pytest.approx(0.025 ** (1 / 10), abs=EXACT)
    assert hi == 1.0


def test_clopper_pearson_matches_published_values() -> None:
    # 5/10: (0.187086, 0.812914); 3/10: (0.066739, 0.652453) — standard exact-binomial tables
    assert clopper_pearson(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    assert clopper_pearson(3, 10) == pytest.approx((0.066739, 0.652453), abs=1e-6)


def test_clopper_pearson_level_changes_width() -> None:
    lo90, hi90 = clopper_pearson(3, 10, level=0.90)
    lo95, hi95 = clopper_pearson(3, 10)
    assert lo95 < lo90 < 0.3 < hi90 < hi95
    assert lo90 == pytest.approx(0.087264, abs=1e-6)


def test_clopper_pearson_no_patients_is_whole_range() -> None:
    assert clopper_pearson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("k", "n", "level"), [(-1, 5, 0.95), (6, 5, 0.95), (0, -1, 0.95), (1, 5, 1.0), (1, 5, 0.0)]
)
def test_clopper_pearson_rejects_impossible_input(k: int, n: int, level: float) -> None:
    with pytest.raises(InputError):
        clopper_pearson(k, n, level)


@given(st.integers(min_value=1, max_value=200).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_clopper_pearson_contains_the_proportion(kn: tuple[int, int]) -> None:
    k, n = kn
    lo, hi = clopper_pearson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert lo < hi


def test_orr_reports_rate_and_interval() -> None:
    result = orr(3, 10)
    assert result["responders"] == 3
    assert result["n"] == 10
    assert result["rate"] == pytest.approx(0.3)
    assert result["ci95"] == pytest.approx([0.066739, 0.652453], abs=1e-6)
    assert isinstance(result["ci95"], list)


def test_orr_all_responders() -> None:
    result = orr(4, 4)
    assert result["rate"] == 1.0
    assert result["ci95"] == pytest.approx([0.025 ** (1 / 4), 1.0], abs=EXACT)


def test_orr_without_patients_is_not_estimable() -> None:
    assert orr(0, 0) == {"responders": 0, "n": 0, "rate": None, "ci95": None}


def test_orr_rejects_more_responders_than_patients() -> None:
    with pytest.raises(InputError):
        orr(5, 4)
    with pytest.raises(InputError):
        orr(1, 0)


def test_orr_is_json_ready() -> None:
    assert json.loads(json.dumps(orr(2, 7)))["ci95"] == pytest.approx(orr(2, 7)["ci95"])


# --- Aalen–Johansen: hand-computed fixtures ----------------------------------------------------------


def test_there_are_at_least_three_fixtures() -> None:
    assert len(FIXTURES) >= 3


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_curve(path: Path) -> None:
    spec, subjects = _load(path)
    curve = aalen_johansen(subjects, spec["horizon_days"])
    want = spec["curve"]
    assert list(curve.times) == want["times"]
    assert list(curve.at_risk) == want["at_risk"]
    assert list(curve.relapses) == want["relapses"]
    assert list(curve.deaths) == want["deaths"]
    assert list(curve.cif_relapse) == pytest.approx(want["cif_relapse"], abs=EXACT)
    assert list(curve.cif_death) == pytest.approx(want["cif_death"], abs=EXACT)
    assert list(curve.variance) == pytest.approx(want["variance"], abs=EXACT)
    assert curve.defined_until == float(want["defined_until"])
    assert curve.n_subjects == len(subjects)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_points(path: Path) -> None:
    spec, subjects = _load(path)
    curve = aalen_johansen(subjects, spec["horizon_days"])
    for point in spec["at"]:
        estimate, interval = cif_at(curve, point["day"])
        if point["estimate"] is None:
            assert estimate is None, point["day"]
        else:
            assert estimate == pytest.approx(point["estimate"], abs=EXACT), point["day"]
        _assert_interval(interval, point["ci95"])


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_summary(path: Path) -> None:
    spec, subjects = _load(path)
    summary = cir_summary(subjects)
    assert set(summary) == {"12months", "24months"}
    for key, want in spec["summary"].items():
        if want["estimate"] is None:
            assert summary[key]["estimate"] is None
        else:
            assert summary[key]["estimate"] == pytest.approx(want["estimate"], abs=EXACT)
        _assert_interval(summary[key]["ci95"], want["ci95"])  # type: ignore[arg-type]


def test_fixture_input_order_does_not_matter() -> None:
    spec, subjects = _load(CIR_DATA / "ties.json")
    forward = aalen_johansen(subjects, spec["horizon_days"])
    backward = aalen_johansen(list(reversed(subjects)), spec["horizon_days"])
    assert forward == backward


# --- Aalen–Johansen: boundaries ----------------------------------------------------------------------


def test_tie_counts_censored_subject_at_risk() -> None:
    # n = 2 at day 5 (the censored subject still at risk) -> 1/2; censoring first would give 1/1.
    curve = aalen_johansen([_subject(5, "relapse"), _subject(5, "censored")], 365.25)
    assert curve.at_risk == (2,)
    assert cif_at(curve, 5)[0] == 0.5


def test_tied_relapse_and_death_share_survival_before_the_tie() -> None:
    # Both use S(5-) = 1 with n = 4: relapse 1/4, death 1/4, S(5) = 1/2, whichever cause comes first.
    subjects = [
        _subject(5, "relapse"),
        _subject(5, "death"),
        _subject(9, "censored"),
        _subject(9, "censored"),
    ]
    curve = aalen_johansen(subjects, 365.25)
    assert curve.cif_relapse == (0.25,)
    assert curve.cif_death == (0.25,)
    assert aalen_johansen(subjects[::-1], 365.25) == curve


def test_all_censored_gives_zero() -> None:
    subjects = [_subject(d, "censored") for d in (30, 100, 400, 800)]
    curve = aalen_johansen(subjects, 730.5)
    assert curve.times == ()
    assert cif_at(curve, 365.25) == (0.0, (0.0, 0.0))
    assert cif_at(curve, 730.5) == (0.0, (0.0, 0.0))
    assert cir_summary(subjects) == {
        "12months": {"estimate": 0.0, "ci95": [0.0, 0.0]},
        "24months": {"estimate": 0.0, "ci95": [0.0, 0.0]},
    }


def test_all_relapse_reaches_one_at_last_time() -> None:
    curve = aalen_johansen([_subject(d, "relapse") for d in (10, 20, 30, 40)], 730.5)
    assert curve.cif_relapse == pytest.approx((0.25, 0.5, 0.75, 1.0), abs=EXACT)
    assert cif_at(curve, 39)[0] == pytest.approx(0.75, abs=EXACT)
    assert cif_at(curve, 40) == (1.0, (1.0, 1.0))
    assert curve.variance[-1] == pytest.approx(0.0, abs=EXACT)
    assert curve.defined_until == math.inf
    assert cif_at(curve, 700) == (1.0, (1.0, 1.0))  # nobody left at risk: known for every later day


def test_all_relapse_on_the_same_day() -> None:
    curve = aalen_johansen([_subject(60, "relapse") for _ in range(3)], 730.5)
    assert curve.times == (60.0,)
    assert cif_at(curve, 60) == (1.0, (1.0, 1.0))
    assert cif_at(curve, 59) == (0.0, (0.0, 0.0))


def test_all_deaths_give_zero_relapse_incidence() -> None:
    curve = aalen_johansen([_subject(d, "death") for d in (10, 20)], 730.5)
    assert curve.cif_death == (0.5, 1.0)
    assert cif_at(curve, 365.25) == (0.0, (0.0, 0.0))


def test_binomial_variance_without_censoring() -> None:
    # Without censoring the AJ CIF is a proportion: Var = F(1 - F)/n.
    subjects = [_subject(10 * i, "relapse" if i % 2 else "death") for i in range(1, 11)]
    curve = aalen_johansen(subjects, 730.5)
    for f, var in zip(curve.cif_relapse, curve.variance, strict=True):
        assert var == pytest.approx(f * (1 - f) / 10, abs=EXACT)


def test_relapse_on_day_zero_counts() -> None:
    curve = aalen_johansen([_subject(0, "relapse"), _subject(50, "censored")], 730.5)
    assert cif_at(curve, 0)[0] == 0.5


def test_no_subjects() -> None:
    curve = aalen_johansen([], 730.5)
    assert curve.n_subjects == 0
    assert cif_at(curve, 10) == (None, None)
    assert cir_summary([]) == {
        "12months": {"estimate": None, "ci95": None},
        "24months": {"estimate": None, "ci95": None},
    }


def test_beyond_horizon_or_before_origin_is_undefined() -> None:
    curve = aalen_johansen([_subject(d, "relapse") for d in (10, 20)], 100)
    assert cif_at(curve, 101) == (None, None)
    assert cif_at(curve, -1) == (None, None)


def test_events_after_horizon_are_censored_at_horizon() -> None:
    curve = aalen_johansen([_subject(100, "relapse"), _subject(400, "relapse")], 365.25)
    assert curve.times == (100.0,)
    assert curve.defined_until == 365.25
    assert cif_at(curve, 365.25)[0] == 0.5


def test_months_are_converted_with_365_25_days_per_year() -> None:
    assert DAYS_PER_MONTH * 12 == 365.25
    # a relapse on day 366 is after 12 months (365.25 days); day 365 is within
    late = cir_summary([_subject(366, "relapse"), _subject(800, "censored")])
    early = cir_summary([_subject(365, "relapse"), _subject(800, "censored")])
    assert late["12months"]["estimate"] == 0.0
    assert early["12months"]["estimate"] == 0.5
    assert late["24months"]["estimate"] == 0.5


def test_custom_months() -> None:
    summary = cir_summary([_subject(100, "relapse"), _subject(200, "censored")], months=(6,))
    assert list(summary) == ["6months"]
    assert summary["6months"]["estimate"] == 0.5


def test_exit_before_origin_is_rejected() -> None:
    with pytest.raises(InputError) as caught:
        aalen_johansen([_subject(-1, "relapse")], 730.5)
    assert "subject 0" in str(caught.value)


def test_unknown_event_is_rejected() -> None:
    with pytest.raises(InputError):
        aalen_johansen([_subject(10, "progression")], 730.5)


def test_negative_horizon_is_rejected() -> None:
    with pytest.raises(InputError):
        aalen_johansen([_subject(10, "relapse")], -1)


# --- Cross-check against lifelines -------------------------------------------------------------------

EVENT_CODES = {"censored": 0, "relapse": 1, "death": 2}


def _lifelines_fit(subjects: list[CirSubject]) -> Any:
    from lifelines import AalenJohansenFitter  # test-only dependency

    durations = [(s.exit - s.origin).days for s in subjects]
    events = [EVENT_CODES[s.event] for s in subjects]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tie warning would mean lifelines jittered: not comparable
        return AalenJohansenFitter().fit(durations, events, event_of_interest=1)


def _random_subjects(seed: int, n: int = 30, distinct: bool = True) -> list[CirSubject]:
    rng = random.Random(seed)
    days = rng.sample(range(1, 1500), n) if distinct else [rng.randrange(1, 200) for _ in range(n)]
    kinds = ["relapse", "death", "censored"]
    return [_subject(d, rng.choices(kinds, weights=(3, 2, 3))[0]) for d in days]


def _tied_same_cause_subjects(seed: int) -> list[CirSubject]:
    """Ties only between events of one cause or with censorings: lifelines does not jitter those."""
    rng = random.Random(seed)
    out = []
    for day in rng.sample(range(1, 400, 2), 12):
        cause = rng.choice(["relapse", "death"])
        out += [_subject(day, cause) for _ in range(rng.randint(1, 3))]
        out += [_subject(day, "censored") for _ in range(rng.randint(0, 2))]
    return out


def _compare_with_lifelines(subjects: list[CirSubject]) -> int:
    fitted = _lifelines_fit(subjects)
    curve = aalen_johansen(subjects, 10_000)
    estimates = fitted.cumulative_density_.iloc[:, 0]
    bounds = fitted.confidence_interval_
    compared = 0
    for t, ref in estimates.items():
        estimate, interval = cif_at(curve, float(t))
        assert estimate == pytest.approx(float(ref), abs=1e-9), t
        ref_pair = sorted(float(x) for x in bounds.loc[t])
        if all(math.isfinite(x) for x in ref_pair) and 0.0 < float(ref) < 1.0:
            assert interval is not None
            assert list(interval) == pytest.approx(ref_pair, abs=1e-9), t
            compared += 1
    return compared


@pytest.mark.parametrize("seed", [11, 22, 33, 44, 55])
def test_matches_lifelines_without_ties(seed: int) -> None:
    assert _compare_with_lifelines(_random_subjects(seed)) > 5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_lifelines_with_same_cause_and_censoring_ties(seed: int) -> None:
    assert _compare_with_lifelines(_tied_same_cause_subjects(seed)) > 3


def test_matches_lifelines_on_hand_fixture_without_mixed_ties() -> None:
    _, subjects = _load(CIR_DATA / "five_subjects.json")
    assert _compare_with_lifelines(subjects) >= 2


# --- Properties --------------------------------------------------------------------------------------

subject_lists = st.lists(
    st.tuples(st.integers(0, 900), st.sampled_from(["relapse", "death", "censored"])), max_size=40
)


@settings(max_examples=150, deadline=None)
@given(subject_lists)
def test_cif_properties(raw: list[tuple[int, str]]) -> None:
    curve = aalen_johansen([_subject(d, e) for d, e in raw], 730.5)
    rel, death = curve.cif_relapse, curve.cif_death
    assert all(a <= b + EXACT for a, b in zip(rel, rel[1:], strict=False))
    assert all(a <= b + EXACT for a, b in zip(death, death[1:], strict=False))
    assert all(0.0 <= f <= 1.0 for f in rel + death)
    assert all(r + d <= 1.0 + EXACT for r, d in zip(rel, death, strict=True))
    assert all(v >= 0.0 for v in curve.variance)


@settings(max_examples=150, deadline=None)
@given(subject_lists, st.floats(0, 730.5))
def test_interval_contains_estimate(raw: list[tuple[int, str]], day: float) -> None:
    curve = aalen_johansen([_subject(d, e) for d, e in raw], 730.5)
    estimate, interval = cif_at(curve, day)
    if estimate is None:
        assert interval is None
        return
    assert interval is not None
    lo, hi = interval
    assert 0.0 <= lo <= estimate + EXACT
    assert estimate - EXACT <= hi <= 1.0


@settings(max_examples=60, deadline=None)
@given(subject_lists, st.randoms(use_true_random=False))
def test_order_of_subjects_does_not_matter(raw: list[tuple[int, str]], rnd: random.Random) -> None:
    subjects = [_subject(d, e) for d, e in raw]
    shuffled = subjects[:]
    rnd.shuffle(shuffled)
    assert aalen_johansen(subjects, 730.5) == aalen_johansen(shuffled, 730.5)
