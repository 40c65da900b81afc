"""Tests for bridge.evaluate.kinetics: Cmax/Tmax, AUC 0–28 (trapezoid), persistence, evidence."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.evaluate.kinetics import KineticPoint, kinetics

TYPICAL = [
    (0, 0.0, "Observation/k0"),
    (7, 50000.0, "Observation/k7"),
    (10, 120000.0, "Observation/k10"),
    (14, 80000.0, "Observation/k14"),
    (28, 10000.0, "Observation/k28"),
    (90, 200.0, "Observation/k90"),
]


def test_typical_profile() -> None:
    # AUC by hand, trapezoids between consecutive points up to day 28 (day 90 is outside):
    #   0-7:   7 * (0 + 50000) / 2       = 175000
    #   7-10:  3 * (50000 + 120000) / 2  = 255000
    #   10-14: 4 * (120000 + 80000) / 2  = 400000
    #   14-28: 14 * (80000 + 10000) / 2  = 630000
    #   total                             = 1460000
    result = kinetics(TYPICAL)
    assert result["cmax"] == 120000.0
    assert result["tmaxDay"] == 10
    assert result["auc0to28"] == pytest.approx(1460000.0, abs=1e-6)
    assert result["aucThroughDay"] == 28
    assert result["lastDetectedDay"] == 90
    assert result["evidence"] == [source for _, _, source in TYPICAL]


def test_output_is_json_ready_with_float_values() -> None:
    result = kinetics([(3, 5, "Observation/a"), (10, 20, "Observation/b")])
    assert isinstance(result["cmax"], float)
    assert isinstance(result["auc0to28"], float)
    assert isinstance(result["tmaxDay"], int)
    assert json.loads(json.dumps(result)) == result


def test_no_data_gives_all_none() -> None:
    assert kinetics([]) == {
        "cmax": None,
        "tmaxDay": None,
        "auc0to28": None,
        "aucThroughDay": None,
        "lastDetectedDay": None,
        "evidence": [],
    }


def test_only_pre_infusion_or_unusable_values_give_all_none() -> None:
    result = kinetics([(-3, 500.0, "Observation/pre"), (5, None, "Observation/bad-unit")])
    assert result["cmax"] is None
    assert result["auc0to28"] is None
    assert result["lastDetectedDay"] is None
    assert result["evidence"] == [] and result["notUsable"] == ["Observation/bad-unit"]


def test_missing_day_zero_is_taken_as_zero() -> None:
    # assumed (0, 0): 0-7: 7*(0+70)/2 = 245; 7-14: 7*(70+30)/2 = 350; total 595
    result = kinetics([(7, 70.0, "Observation/a"), (14, 30.0, "Observation/b")])
    assert result["auc0to28"] == pytest.approx(595.0)
    assert result["aucThroughDay"] == 14  # no point after 28: no extrapolation
    assert result["tmaxDay"] == 7


def test_measured_day_zero_is_used_as_is() -> None:
    # 0-4: 4*(10+30)/2 = 80
    result = kinetics([(0, 10.0, "Observation/a"), (4, 30.0, "Observation/b")])
    assert result["auc0to28"] == pytest.approx(80.0)
    assert result["aucThroughDay"] == 4


def test_interpolates_to_day_28_when_a_later_point_exists() -> None:
    # points (0,0) assumed, (14, 100), (42, 30). Value at 28 = 100 + (14/28)*(30-100) = 65.
    # 0-14: 14*(0+100)/2 = 700; 14-28: 14*(100+65)/2 = 1155; total 1855
    result = kinetics([(14, 100.0, "Observation/a"), (42, 30.0, "Observation/b")])
    assert result["auc0to28"] == pytest.approx(1855.0)
    assert result["aucThroughDay"] == 28
    assert result["lastDetectedDay"] == 42


def test_points_only_after_day_28_give_no_auc() -> None:
    result = kinetics([(35, 80.0, "Observation/a"), (60, 5.0, "Observation/b")])
    assert result["auc0to28"] is None
    assert result["aucThroughDay"] is None
    assert result["cmax"] == 80.0
    assert result["tmaxDay"] == 35


def test_single_day_zero_point_has_zero_area() -> None:
    result = kinetics([(0, 12.0, "Observation/a")])
    assert result["auc0to28"] == 0.0
    assert result["aucThroughDay"] == 0
    assert result["cmax"] == 12.0
    assert result["tmaxDay"] == 0


def test_cmax_tie_takes_earliest_day() -> None:
    result = kinetics([(21, 400.0, "Observation/late"), (7, 400.0, "Observation/early"), (14, 100.0, "x")])
    assert result["cmax"] == 400.0
    assert result["tmaxDay"] == 7


def test_input_order_does_not_matter() -> None:
    assert kinetics(list(reversed(TYPICAL)))["auc0to28"] == kinetics(TYPICAL)["auc0to28"]
    assert kinetics(list(reversed(TYPICAL)))["evidence"] == kinetics(TYPICAL)["evidence"]


def test_pre_infusion_points_are_ignored() -> None:
    result = kinetics([(-5, 9999.0, "Observation/pre"), *TYPICAL])
    assert result["cmax"] == 120000.0
    assert result["auc0to28"] == pytest.approx(1460000.0)
    assert "Observation/pre" not in result["evidence"]  # type: ignore[operator]


def test_below_detection_comparator_is_not_detected() -> None:
    points = [
        KineticPoint(0, 0.0, "Observation/a"),
        KineticPoint(7, 300.0, "Observation/b"),
        KineticPoint(28, 50.0, "Observation/c"),
        KineticPoint(60, 20.0, "Observation/d", "<"),
        KineticPoint(90, 20.0, "Observation/e", "<="),
    ]
    result = kinetics(points)
    assert result["lastDetectedDay"] == 28
    assert "Observation/e" in result["evidence"]  # type: ignore[operator]


def test_below_detection_counts_as_zero_in_auc() -> None:
    # (0,0) assumed, (7, 100), (14, <50 -> 0): 7*100/2 + 7*100/2 = 700
    result = kinetics([(7, 100.0, "a"), KineticPoint(14, 50.0, "b", "<")])
    assert result["auc0to28"] == pytest.approx(700.0)
    assert result["lastDetectedDay"] == 7


def test_above_range_comparator_uses_the_bound() -> None:
    result = kinetics([KineticPoint(10, 1e6, "Observation/a", ">"), (14, 10.0, "Observation/b")])
    assert result["cmax"] == 1e6
    assert result["tmaxDay"] == 10


def test_never_detected() -> None:
    result = kinetics([KineticPoint(7, 10.0, "a", "<"), KineticPoint(14, 10.0, "b", "<")])
    assert result["cmax"] == 0.0
    assert result["tmaxDay"] == 7
    assert result["auc0to28"] == 0.0
    assert result["lastDetectedDay"] is None


def test_same_day_replicates_are_averaged() -> None:
    # day 7: mean(100, 300) = 200; (0,0) assumed -> AUC 0-7 = 7*200/2 = 700
    result = kinetics([(7, 100.0, "Observation/a"), (7, 300.0, "Observation/b")])
    assert result["cmax"] == 200.0
    assert result["auc0to28"] == pytest.approx(700.0)
    assert result["evidence"] == ["Observation/a", "Observation/b"]


def test_duplicate_sources_are_cited_once() -> None:
    result = kinetics([(7, 1.0, "Observation/a"), (14, 2.0, "Observation/a")])
    assert result["evidence"] == ["Observation/a"]


def test_zero_value_not_detected() -> None:
    result = kinetics([(7, 5.0, "a"), (30, 0.0, "b")])
    assert result["lastDetectedDay"] == 7


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, None])
def test_impossible_values_are_not_usable_and_make_the_metrics_they_could_change_unknown(bad: float | None) -> None:
    result = kinetics([(1, 5.0, "Observation/a"), (3, bad, "Observation/b"), (40, 2.0, "Observation/c")])
    assert result["notUsable"] == ["Observation/b"] and result["evidence"] == ["Observation/a", "Observation/c"]
    assert (result["cmax"], result["tmaxDay"], result["auc0to28"], result["aucThroughDay"]) == (None,) * 4
    assert result["lastDetectedDay"] == 40  # a point before the last detected one cannot change it


def test_a_not_usable_point_only_hides_what_it_could_change() -> None:
    points = [(0, 0.0, "Observation/a"), (7, 50.0, "Observation/b"), (28, 10.0, "Observation/c")]
    late = kinetics([*points, (60, None, "Observation/x")])
    assert late["auc0to28"] == pytest.approx(kinetics(points)["auc0to28"]) and late["aucThroughDay"] == 28
    assert late["cmax"] is None and late["lastDetectedDay"] is None  # day 60 could be the peak, or detected
    gap = kinetics([(0, 0.0, "Observation/a"), (7, 50.0, "Observation/b"), (35, None, "Observation/x"),
                    (42, 10.0, "Observation/c")])
    assert gap["auc0to28"] is None  # it lies where the AUC is interpolated to day 28
    assert gap["lastDetectedDay"] == 42


def test_no_not_usable_key_without_one() -> None:
    assert "notUsable" not in kinetics(TYPICAL)


points_strategy = st.lists(
    st.tuples(
        st.integers(-10, 120),
        st.one_of(st.none(), st.floats(0, 1e7, allow_nan=False)),
        st.sampled_from(["Observation/a", "Observation/b", "Observation/c"]),
    ),
    max_size=25,
)


@given(points_strategy)
def test_properties(points: list[tuple[int, float | None, str]]) -> None:
    result = kinetics(points)
    usable = [(d, v) for d, v, _ in points if d >= 0 and v is not None]
    unknown = [d for d, v, _ in points if d >= 0 and v is None]
    clean = kinetics([p for p in points if p[1] is not None])
    for key in ("cmax", "tmaxDay", "auc0to28", "aucThroughDay", "lastDetectedDay"):
        # a not-usable point keeps a metric or makes it unknown, never another value
        assert result[key] is None or result[key] == clean[key]
    if not usable:
        assert result["cmax"] is None
        return
    cmax = clean["cmax"]
    assert isinstance(cmax, float)
    assert (result["cmax"] is None) is bool(unknown)
    assert 0.0 <= cmax <= max(v for _, v in usable) * (1 + 1e-12)  # a mean of equal replicates may round up
    auc = clean["auc0to28"]
    if any(d <= 28 for d, _ in usable):
        assert isinstance(auc, float)
        assert 0.0 <= auc <= cmax * 28 * (1 + 1e-9)
    else:
        assert auc is None
    last = result["lastDetectedDay"]
    assert last is None or (isinstance(last, int) and 0 <= last <= max(d for d, _ in usable))
