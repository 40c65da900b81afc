"""Day 0 and the CAR-T dose (RULES.md §4 "Dose"): split courses, statuses, dosing weight, protocol range."""

from __future__ import annotations

import pytest

from bridge.evaluate.dose import course, day_zero, in_range
from tests.unit.test_response import D0, OPTS, day, infusion, obs, patient


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


def test_stopped_infusion_counts_only_as_recorded() -> None:
    partial, empty = infusion(2, 5e6, status="stopped"), infusion(3, None, status="stopped")
    d = course(patient(infusion(0, 20e6), partial, empty, obs("body-weight", 50.0, 0)), OPTS)
    assert d is not None and d.total_cells == 25e6 and d.cells_per_kg == 5e5
    assert partial.source in [i.source for i in d.infusions] and empty.source not in [i.source for i in d.infusions]
    assert (empty.source, "stopped without a recorded cell count") in d.ignored


def test_a_stopped_infusion_alone_gives_no_day_0() -> None:
    assert course(patient(infusion(0, 5e6, status="stopped")), OPTS) is None


@pytest.mark.parametrize("status", ["in-progress", "on-hold", "unknown"])
def test_other_statuses_do_not_count(status: str) -> None:
    d = course(patient(infusion(0, 25e6), infusion(1, 25e6, status=status), obs("body-weight", 50.0, -1)), OPTS)
    assert d is not None and d.total_cells == 25e6


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
