"""Day 0 and the CAR-T dose (RULES.md §4, "Dose"). Pure: ``PatientFacts`` and ``RuleOptions`` in, ``Dose`` out.

Decisions, in the order they are applied (every infusion not counted is listed in ``Dose.ignored`` with why):

- Only infusions of ``cd7-car-t-product`` with a date on or before the as-of date are looked at.
- **Day 0** is the date of the first infusion with status ``completed`` (RULES.md §4 says "the first completed
  infusion"). No completed infusion → no day 0 → the patient is not assessed (``course`` returns None).
- **Counted statuses.** ``completed`` counts. ``stopped`` (given in part) counts only with a recorded cell
  count, and then only as recorded; without one it is ignored. ``entered-in-error``, ``not-done``,
  ``in-progress`` (the dose is not final yet), ``on-hold`` and ``unknown`` are ignored.
- **The course** is every counted infusion dated day 0 to day 0 + ``course_days`` (14), both ends included: an
  infusion on day 14 belongs to the split dose, one on day 15 does not. A stopped infusion dated before day 0
  is not part of the course (day 0 is the first completed infusion).
- **Cells per kg** = the course's summed cells ÷ the latest usable body weight dated on or before day 0 (a
  weight taken on the morning of the infusion is the dosing weight). A completed infusion without a usable cell
  count makes the total unknown: ``cellsPerKg`` and ``doseWithinProtocol`` are None and ``missing-cell-count``
  is flagged; no usable weight flags ``missing-weight`` the same way.
- **Protocol range** ``dose_range_cells_per_kg`` (0.5–10 ×10⁶ cells/kg), both ends included, compared with a
  relative tolerance of 1e-9 so float noise at a bound does not flip the answer; outside it flags
  ``out-of-range``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from bridge.config import RuleOptions
from bridge.evaluate.logic import latest
from bridge.model import Fact, Infusion, PatientFacts, Quantity

PRODUCT = "cd7-car-t-product"
_IGNORED = {
    "entered-in-error": "entered in error",
    "not-done": "not done",
    "in-progress": "still in progress (dose not final)",
    "on-hold": "on hold",
}
_TOL = 1e-9


@dataclass(frozen=True)
class CountedInfusion:
    """One infusion of the course."""

    when: date
    cells: float | None
    source: str
    status: str

    def as_json(self) -> dict[str, object]:
        return {"date": self.when.isoformat(), "cells": _number(self.cells), "evidence": self.source}


@dataclass(frozen=True)
class Dose:
    """Day 0, the course and the dose per kg with its protocol check."""

    day0: date
    infusions: tuple[CountedInfusion, ...]
    total_cells: float | None
    weight_kg: float | None
    weight_source: str | None
    cells_per_kg: float | None
    within_protocol: bool | None
    flags: tuple[str, ...] = ()
    ignored: tuple[tuple[str, str], ...] = ()

    @property
    def evidence(self) -> list[str]:
        refs = [i.source for i in self.infusions] + ([self.weight_source] if self.weight_source else [])
        return list(dict.fromkeys(refs))


def _number(x: float | None) -> float | int | None:
    """A cell count as written in the contract: an integer when it is whole."""
    if x is None:
        return None
    return int(x) if math.isfinite(x) and x.is_integer() else x


def _why_ignored(inf: Infusion) -> str | None:
    if inf.status in _IGNORED:
        return _IGNORED[inf.status]
    if inf.status == "stopped":
        return None if inf.cells is not None else "stopped without a recorded cell count"
    return None if inf.status == "completed" else f"status {inf.status} is not counted"


def _candidates(pf: PatientFacts, as_of: date) -> tuple[list[Infusion], list[tuple[str, str]]]:
    """Counted infusions of the product up to ``as_of`` (date order), and the ignored ones with a reason."""
    counted: list[Infusion] = []
    ignored: list[tuple[str, str]] = []
    for inf in pf.infusions:
        if inf.concept != PRODUCT:
            continue
        if inf.when is None:
            ignored.append((inf.source, "no administration date"))
        elif inf.when <= as_of:
            why = _why_ignored(inf)
            if why is None:
                counted.append(inf)
            else:
                ignored.append((inf.source, why))
    return sorted(counted, key=lambda i: (i.when or date.min, i.source)), ignored


def day_zero(pf: PatientFacts, options: RuleOptions) -> date | None:
    """The date of the first completed infusion of the product on or before the as-of date."""
    counted, _ = _candidates(pf, options.as_of)
    return next((i.when for i in counted if i.status == "completed"), None)


def dosing_weight(pf: PatientFacts, day0: date) -> Fact | None:
    """The latest usable body weight (kg, no comparator, > 0) dated on or before day 0."""
    usable = [f for f in pf.of("body-weight") if isinstance(f.value, Quantity) and f.value.comparator is None
              and f.value.unit == "kg" and f.value.value > 0]
    return latest(usable, day0)


def in_range(value: float, low: float, high: float) -> bool:
    """``low <= value <= high`` with a relative tolerance of 1e-9 at both ends."""
    near = math.isclose(value, low, rel_tol=_TOL) or math.isclose(value, high, rel_tol=_TOL)
    return near or low <= value <= high


def _split(counted: list[Infusion], day0: date, course_days: int) -> tuple[list[Infusion], list[tuple[str, str]]]:
    last = day0 + timedelta(days=course_days)
    inside = [i for i in counted if i.when is not None and day0 <= i.when <= last]
    outside = [(i.source, "before day 0" if i.when and i.when < day0 else f"after day {course_days} (not this course)")
               for i in counted if i not in inside]
    return inside, outside


def _total(course: list[Infusion]) -> float | None:
    if any(i.cells is None for i in course):
        return None
    return sum(i.cells or 0.0 for i in course)


def course(pf: PatientFacts, options: RuleOptions) -> Dose | None:
    """Day 0, the split-dose course and cells per kg; None when there is no completed infusion."""
    counted, ignored = _candidates(pf, options.as_of)
    day0 = next((i.when for i in counted if i.status == "completed"), None)
    if day0 is None:
        return None
    inside, outside = _split(counted, day0, options.course_days)
    total = _total(inside)
    weight = dosing_weight(pf, day0)
    kg = weight.value.value if weight is not None and isinstance(weight.value, Quantity) else None
    flags = (["missing-cell-count"] if total is None else []) + (["missing-weight"] if kg is None else [])
    per_kg = total / kg if total is not None and kg is not None else None
    within = None if per_kg is None else in_range(per_kg, *options.dose_range_cells_per_kg)
    if within is False:
        flags.append("out-of-range")
    infusions = tuple(CountedInfusion(i.when or day0, i.cells, i.source, i.status) for i in inside)
    return Dose(day0, infusions, total, kg, weight.source if weight else None, per_kg, within, tuple(flags),
                tuple(ignored + outside))


__all__ = ["PRODUCT", "CountedInfusion", "Dose", "course", "day_zero", "dosing_weight", "in_range"]
