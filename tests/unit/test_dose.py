"""Day 0 and the CAR-T dose (RULES.md §4 "Dose"): split courses, statuses, dosing weight, protocol range."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.evaluate.dose import course, day_zero, in_range
from bridge.model import Fact, Infusion, Quantity
from tests.unit.test_response import D0, OPTS, day, infusion, obs, patient, ref


def test_split_dose_within_14_days_is_summed_and_day_15_is_excluded() -> None:
    first, second, third, late = infusion(0, 10e6), infusion(3, 10e6), infusion(14, 5e6), infusion(15, 50e6)
    d = course(patient(first, second, third, late, obs("body-weight", 50.0, -2)), OPTS)
    assert d is not None
    assert d.day0 == D0
    assert [i.source for i in d.infusions] == [first.source, second.source, third.source]
    assert d.total_cells == 25e6 and d.cells_per_kg == 500000.0 and d.within_protocol is True
    assert (late.source, "after day 14 (not this course)") in d.ignored


def test_day_0_is_the_first_completed_infusion_and_entered_in_error_is_ignored() -> None:
    wrong = infusion(-5, 99e6, status="entered-in-error")
    not_done = infusion(-2, 99e6, status="not-done")
    pf = patient(wrong, not_done, infusion(0, 25e6), obs("body-weight", 50.0, -1))
    d = course(pf, OPTS)
    assert d is not None and d.day0 == D0 and d.total_cells == 25e6
    assert dict(d.ignored) == {wrong.source: "entered in error", not_done.source: "not done"}


def test_a_stopped_infusion_in_the_course_window_is_left_out_and_the_protocol_check_is_unknown() -> None:
    partial, empty = infusion(2, 5e6, status="stopped"), infusion(3, None, status="stopped")
    d = course(patient(infusion(0, 20e6), partial, empty, obs("body-weight", 50.0, 0)), OPTS)
    assert d is not None and d.total_cells == 20e6 and d.cells_per_kg == 4e5
    assert d.within_protocol is None and "incomplete-infusion" in d.flags and "out-of-range" not in d.flags
    assert [i.source for i in d.infusions] == [d.infusions[0].source]
    assert (partial.source, "stopped: the delivered dose is not known") in d.ignored
    assert (empty.source, "stopped: the delivered dose is not known") in d.ignored


@pytest.mark.parametrize("status", ["stopped", "on-hold", "in-progress", "unknown"])
def test_any_incomplete_infusion_in_the_window_makes_the_protocol_check_unknown(status: str) -> None:
    d = course(patient(infusion(0, 25e6), infusion(14, 25e6, status=status), obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None and (d.total_cells, d.cells_per_kg, d.within_protocol) == (25e6, 5e5, None)
    assert d.flags == ("incomplete-infusion",)


def test_an_incomplete_infusion_outside_the_window_is_only_ignored() -> None:
    early, late = infusion(-3, 5e6, status="stopped"), infusion(15, 5e6, status="on-hold")
    d = course(patient(early, infusion(0, 25e6), late, obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None and d.within_protocol is True and d.flags == ()
    assert dict(d.ignored) == {early.source: "before day 0", late.source: "after day 14 (not this course)"}


def test_a_stopped_infusion_alone_gives_no_day_0() -> None:
    assert course(patient(infusion(0, 5e6, status="stopped")), OPTS) is None


def test_no_completed_infusion_on_or_before_as_of_means_no_day_0() -> None:
    assert course(patient(obs("body-weight", 50.0, -1)), OPTS) is None
    pf = patient(infusion(30, 25e6))
    assert day_zero(pf, OPTS.with_(as_of=day(29))) is None and day_zero(pf, OPTS.with_(as_of=day(30))) == day(30)
    other = infusion(0, 25e6, concept="other-product")
    assert course(patient(other), OPTS) is None


def test_weight_is_the_latest_on_or_before_day_0() -> None:
    chosen = obs("body-weight", 50.0, 0)
    pf = patient(infusion(0, 25e6), obs("body-weight", 40.0, -30), chosen, obs("body-weight", 60.0, 1))
    d = course(pf, OPTS)
    assert d is not None and d.weight_kg == 50.0 and d.weight_source == chosen.source
    assert d.evidence == [d.infusions[0].source, chosen.source]


def test_missing_weight_or_cell_count_is_flagged_not_guessed() -> None:
    d = course(patient(infusion(0, 25e6)), OPTS)
    assert d is not None and (d.cells_per_kg, d.within_protocol, d.flags) == (None, None, ("missing-weight",))
    d = course(patient(infusion(0, None), infusion(2, 5e6), obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None and (d.total_cells, d.cells_per_kg, d.within_protocol) == (None, None, None)
    assert d.flags == ("missing-cell-count",)


@pytest.mark.parametrize(("cells", "within"), [
    (25e6, True), (24.5e6, False), (25e6 * 0.1, False), (500e6, True), (500.5e6, False), (250e6, True),
])
def test_protocol_range_is_inclusive_and_out_of_range_is_flagged(cells: float, within: bool) -> None:
    # weight 50 kg: 25e6 cells = 0.5e6/kg (lower bound), 500e6 = 10e6/kg (upper bound)
    d = course(patient(infusion(0, cells), obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None and d.within_protocol is within
    assert ("out-of-range" in d.flags) is (not within)


def test_in_range_tolerates_float_noise_at_the_bounds() -> None:
    assert in_range(0.1 * 3 * 1e6 / 0.6, 0.5e6, 10e6)  # 499999.99999999994
    assert not in_range(0.4999e6, 0.5e6, 10e6)


def test_infusion_json_writes_whole_cell_counts_as_integers() -> None:
    d = course(patient(infusion(0, 25e6), obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None
    doc = d.infusions[0].as_json()
    assert doc == {"date": "2026-03-10", "cells": 25000000, "evidence": d.infusions[0].source}
    assert isinstance(doc["cells"], int)


# ------------------------------------------------------------------ not-usable values (RULES.md §3, issue #12)
def _nu_weight(n: int) -> Fact:
    return Fact("body-weight", None, day(n), ref(), problem="Observation.valueQuantity.value: outside the plausible "
                "range of body-weight (0.3-700 kg)")


@pytest.mark.parametrize("cells", [0.0, -25e6, math.inf, math.nan])
def test_zero_negative_or_infinite_cells_are_not_usable(cells: float) -> None:
    d = course(patient(infusion(0, cells), infusion(2, 25e6), obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None and (d.total_cells, d.cells_per_kg, d.within_protocol) == (None, None, None)
    assert d.flags == ("missing-cell-count",) and d.infusions[0].as_json()["cells"] is None


def test_a_cell_count_with_a_problem_is_not_usable() -> None:
    bad = Infusion("cd7-car-t-product", D0, "completed", None, ref("MedicationAdministration"),
                   problem="MedicationAdministration.dosage.dose.value: outside the plausible range")
    d = course(patient(bad, obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None and d.day0 == D0 and d.cells_per_kg is None and d.flags == ("missing-cell-count",)


def test_a_not_usable_latest_weight_makes_the_dose_per_kg_unknown_not_an_older_weight() -> None:
    bad = _nu_weight(-1)
    d = course(patient(infusion(0, 25e6), obs("body-weight", 50.0, -30), bad), OPTS)
    assert d is not None and (d.weight_kg, d.cells_per_kg, d.within_protocol) == (None, None, None)
    assert d.flags == ("unusable-weight",) and d.weight_source == bad.source and bad.source in d.evidence
    assert d.total_cells == 25e6


def test_a_not_usable_weight_on_the_same_day_as_a_usable_one_is_unknown_too() -> None:
    d = course(patient(infusion(0, 25e6), obs("body-weight", 50.0, -1), _nu_weight(-1)), OPTS)
    assert d is not None and d.cells_per_kg is None and d.flags == ("unusable-weight",)


def test_an_older_not_usable_weight_does_not_matter() -> None:
    d = course(patient(infusion(0, 25e6), _nu_weight(-30), obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None and d.cells_per_kg == 5e5 and d.within_protocol is True and d.flags == ()


def test_a_weight_bound_is_not_a_dosing_weight() -> None:
    d = course(patient(infusion(0, 25e6), obs("body-weight", 50.0, -1, comparator=">")), OPTS)
    assert d is not None and d.cells_per_kg is None and d.flags == ("unusable-weight",)


def test_an_undated_weight_or_infusion() -> None:
    undated_weight = Fact("body-weight", None, None, ref(), problem="Observation.effective[x]: no date")
    d = course(patient(infusion(0, 25e6), obs("body-weight", 50.0, -1), undated_weight), OPTS)
    assert d is not None and d.within_protocol is True  # an undated weight is not the latest of anything
    undated = Infusion("cd7-car-t-product", None, "completed", 25e6, ref("MedicationAdministration"))
    d = course(patient(infusion(0, 25e6), undated, obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None and d.cells_per_kg == 5e5 and d.within_protocol is None
    assert d.flags == ("undated-infusion",)


def test_entered_in_error_weight_is_not_the_latest() -> None:
    wrong = Fact("body-weight", Quantity(5000.0, "kg"), day(-1), ref(), status="entered-in-error")
    d = course(patient(infusion(0, 25e6), obs("body-weight", 50.0, -2), wrong), OPTS)
    assert d is not None and d.weight_kg == 50.0


@given(st.lists(st.tuples(st.integers(-5, 20), st.sampled_from(["completed", "stopped", "on-hold", "not-done",
                                                                 "entered-in-error", "in-progress", "unknown"]),
                          st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))), max_size=6),
       st.lists(st.tuples(st.integers(-40, 5), st.one_of(st.none(), st.floats(allow_nan=True))), max_size=4))
def test_dose_never_raises_and_never_gives_a_negative_or_infinite_dose(
        infusions: list[tuple[int, str, float | None]], weights: list[tuple[int, float | None]]) -> None:
    items: list[Fact | Infusion] = [infusion(n, c, status=s) for n, s, c in infusions]
    items += [obs("body-weight", w, n) if w is None or (math.isfinite(w) and 0.3 <= w <= 700)
              else _nu_weight(n) for n, w in weights]
    d = course(patient(*items), OPTS)
    if d is None:
        return
    if d.cells_per_kg is not None:
        assert math.isfinite(d.cells_per_kg) and d.cells_per_kg > 0
    if d.within_protocol is not None:
        assert not {"incomplete-infusion", "undated-infusion", "unusable-weight", "missing-weight",
                    "missing-cell-count"} & set(d.flags)


def test_a_null_protocol_check_says_why() -> None:
    """RULES.md §4: a stopped infusion in the course makes doseWithinProtocol null, with a reason."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[2] / "samples" / "treated" / "expected.json").read_text())
    by = {p["patient"]: p for p in doc["patients"]}
    assert by["Patient/t15"]["doseWithinProtocol"] is None
    assert "MedicationAdministration/t15-inf-2" in by["Patient/t15"]["doseReason"]
    assert "not known" in by["Patient/t15"]["doseReason"]
    assert by["Patient/t16"]["doseWithinProtocol"] is None and "cell count" in by["Patient/t16"]["doseReason"]
    assert by["Patient/t13"]["doseWithinProtocol"] is False and "outside" in by["Patient/t13"]["doseReason"]
