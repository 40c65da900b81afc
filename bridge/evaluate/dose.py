"""Day 0 and the CAR-T dose (RULES.md §4, "Dose"). Pure: ``PatientFacts`` and ``RuleOptions`` in, ``Dose`` out.

Decisions, in the order they are applied (every infusion not counted is listed in ``Dose.ignored`` with why):

- Only infusions of the trial's product (``RuleOptions.product``, e.g. ``cd7-car-t-product``) with a date on or
  before the as-of date are looked at.
- **Day 0** is the date of the first infusion with status ``completed`` (RULES.md §4 says "the first completed
  infusion"). No completed infusion → no day 0 → the patient is not assessed (``course`` returns None).
- **Counted statuses.** Only ``completed`` counts. ``entered-in-error`` and ``not-done`` (nothing was given) are
  ignored. ``stopped``, ``on-hold``, ``in-progress`` and ``unknown`` are *incomplete*: some of the product may
  have been given, but the delivered dose is not known. One dated in the course window is left out of the sum,
  listed in ``ignored`` ("stopped: the delivered dose is not known"), flags ``incomplete-infusion`` and makes
  ``doseWithinProtocol`` None (RULES.md §4 names stopped and on-hold; in-progress and unknown are the same
  case). ``cellsPerKg`` stays the completed infusions' dose (RULES.md: "left out of the sum"), a lower bound of
  what was given. An incomplete infusion outside the window is ignored like any other.
- **The course** is every counted infusion dated day 0 to day 0 + ``course_days`` (the trial's), both ends
  included: with 14 days an infusion on day 14 belongs to the split dose, one on day 15 does not. An infusion
  dated before day 0 is not part of the course (day 0 is the first completed infusion).
- **Undated infusions** of the product (completed or incomplete) cannot be placed against the course window: the
  course total is unknown, ``undated-infusion`` is flagged and ``doseWithinProtocol`` is None (RULES.md §3: a
  not-usable value is unknown, never absent).
- **Cells**: a completed infusion without a usable cell count — none recorded, an unconvertible unit, or zero,
  negative or not finite (RULES.md §3: infused cells > 0) — makes the total unknown: ``cellsPerKg`` and
  ``doseWithinProtocol`` are None and ``missing-cell-count`` is flagged; its ``cells`` is written as null.
- **Dosing weight**: the latest ``body-weight`` dated on or before day 0 (a weight taken on the morning of the
  infusion is the dosing weight). When a result on that latest date is not usable (implausible, outside
  0.3–700 kg; unconvertible; a bound such as ``>50 kg``), the dosing weight is unknown: ``weightKg``,
  ``cellsPerKg`` and ``doseWithinProtocol`` are None, ``unusable-weight`` is flagged and the result is named in
  the evidence — an older weight is never used instead. No weight at all flags ``missing-weight``. Undated
  weights are not placed (they cannot be the latest on or before day 0).
- **Cells per kg** = the course's summed cells ÷ the dosing weight (never a division by a weight that is not a
  finite number > 0).
- **Protocol range** ``dose_range_cells_per_kg`` (the trial's, e.g. 0.5–10 ×10⁶ cells/kg), both ends included,
  compared with a relative tolerance of 1e-9 so float noise at a bound does not flip the answer; outside it
  flags ``out-of-range``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from bridge.config import RuleOptions
from bridge.evaluate.logic import dated
from bridge.model import Fact, Infusion, PatientFacts, Quantity

_IGNORED = {
    "entered-in-error": "entered in error",
    "not-done": "not done",
}
INCOMPLETE = frozenset({"stopped", "on-hold", "in-progress", "unknown"})
_DROPPED_WEIGHT = frozenset({"entered-in-error", "cancelled"})
_TOL = 1e-9


@dataclass(frozen=True)
class CountedInfusion:
    """One infusion of the course (``cells`` None: no usable cell count)."""

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
    reason: str = ""  # one line: why the protocol check is what it is (RULES.md §4: a null check says why)

    @property
    def evidence(self) -> list[str]:
        refs = [i.source for i in self.infusions] + ([self.weight_source] if self.weight_source else [])
        return list(dict.fromkeys(refs))


def _number(x: float | None) -> float | int | None:
    """A cell count as written in the contract: an integer when it is whole."""
    if x is None:
        return None
    return int(x) if math.isfinite(x) and x.is_integer() else x


def usable_cells(inf: Infusion) -> float | None:
    """The infusion's cell count when it is usable: recorded, finite and > 0 (RULES.md §3), else None."""
    cells = inf.cells
    if inf.problem is not None or cells is None or not math.isfinite(cells) or cells <= 0:
        return None
    return cells


def _product(pf: PatientFacts, product: str) -> list[Infusion]:
    return [i for i in pf.infusions if i.concept == product and i.status not in _IGNORED]


def day_zero(pf: PatientFacts, options: RuleOptions) -> date | None:
    """The date of the first completed infusion of the product on or before the as-of date."""
    return min((i.when for i in _product(pf, options.product) if i.status == "completed" and i.when is not None
                and i.when <= options.as_of), default=None)


def dosing_weight(pf: PatientFacts, day0: date) -> Fact | None:
    """The body weight of the latest date on or before day 0 (None: no weight dated then).

    The returned fact is not usable (``usable_weight`` None) when any result of that date is not a usable weight:
    a not-usable weight is unknown, so an older one is never taken instead.
    """
    found = [f for f in dated(pf.of("body-weight"), day0) if f.status not in _DROPPED_WEIGHT]
    if not found:
        return None
    same_day = [f for f in found if f.when == found[0].when]
    return next((f for f in same_day if usable_weight(f) is None), found[0])


def usable_weight(f: Fact | None) -> float | None:
    """The weight in kg when the fact is a usable, exact weight (no comparator, finite, > 0), else None."""
    if f is None or not f.usable or not isinstance(f.value, Quantity):
        return None
    q = f.value
    ok = q.comparator is None and q.unit == "kg" and math.isfinite(q.value) and q.value > 0
    return q.value if ok else None


def in_range(value: float, low: float, high: float) -> bool:
    """``low <= value <= high`` with a relative tolerance of 1e-9 at both ends."""
    near = math.isclose(value, low, rel_tol=_TOL) or math.isclose(value, high, rel_tol=_TOL)
    return near or low <= value <= high


@dataclass
class _Sorted:
    course: list[Infusion]
    incomplete: list[Infusion]
    undated: list[Infusion]
    ignored: list[tuple[str, str]]


def _sort(pf: PatientFacts, day0: date, options: RuleOptions) -> _Sorted:
    """The product's infusions up to as-of: the course, the incomplete ones in its window, the undated ones, and
    the ignored ones with why (in date order, then by source)."""
    last = day0 + timedelta(days=options.course_days)
    out = _Sorted([], [], [], [])
    infusions = [i for i in pf.infusions if i.concept == options.product]
    for inf in sorted(infusions, key=lambda i: (i.when or date.min, i.source)):
        if inf.status in _IGNORED:
            out.ignored.append((inf.source, _IGNORED[inf.status]))
        elif inf.status != "completed" and inf.status not in INCOMPLETE:
            out.ignored.append((inf.source, f"status {inf.status} is not counted"))
        elif inf.when is None:
            out.undated.append(inf)
            out.ignored.append((inf.source, "no administration date: the course total is not known"))
        elif inf.when > options.as_of:
            continue
        elif inf.when < day0:
            out.ignored.append((inf.source, "before day 0"))
        elif inf.when > last:
            out.ignored.append((inf.source, f"after day {options.course_days} (not this course)"))
        elif inf.status == "completed":
            out.course.append(inf)
        else:
            out.incomplete.append(inf)
            out.ignored.append((inf.source, f"{inf.status}: the delivered dose is not known"))
    return out


def course(pf: PatientFacts, options: RuleOptions) -> Dose | None:
    """Day 0, the split-dose course and cells per kg; None when there is no completed infusion."""
    day0 = day_zero(pf, options)
    if day0 is None:
        return None
    parts = _sort(pf, day0, options)
    cells = [usable_cells(i) for i in parts.course]
    total = None if any(c is None for c in cells) else sum(c or 0.0 for c in cells)
    weight = dosing_weight(pf, day0)
    kg = usable_weight(weight)
    flags = (["missing-cell-count"] if total is None else []) + (
        [] if kg is not None else ["missing-weight"] if weight is None else ["unusable-weight"])
    per_kg = total / kg if total is not None and kg is not None else None
    if parts.incomplete:
        flags.append("incomplete-infusion")
    if parts.undated:
        flags.append("undated-infusion")
    decidable = per_kg is not None and not parts.incomplete and not parts.undated
    within = in_range(per_kg, *options.dose_range_cells_per_kg) if decidable and per_kg is not None else None
    if within is False:
        flags.append("out-of-range")
    infusions = tuple(CountedInfusion(i.when or day0, c, i.source, i.status) for i, c in zip(parts.course, cells,
                                                                                            strict=True))
    why = _reason(per_kg, within, options.dose_range_cells_per_kg, parts, weight, [
        i.source for i, c in zip(parts.course, cells, strict=True) if c is None])
    return Dose(day0, infusions, total, kg, weight.source if weight else None, per_kg, within, tuple(flags),
                tuple(parts.ignored), why)


def _reason(per_kg: float | None, within: bool | None, bounds: tuple[float, float], parts: _Sorted,
            weight: Fact | None, no_cells: list[str]) -> str:
    """The protocol check in one line, without patient values other than the dose itself."""
    low, high = bounds
    if within is not None and per_kg is not None:
        where = "within" if within else "outside"
        return (f"{per_kg / 1e6:.4g}x10^6 cells/kg, {where} the protocol range {low / 1e6:g}-{high / 1e6:g}x10^6 "
                "cells/kg")
    why: list[str] = []
    if parts.incomplete:
        why += [f"{src}: {what}" for src, what in parts.ignored if "not known" in what]
    if parts.undated:
        why.append("an infusion without a date: the course total is not known")
    if no_cells:
        why.append(f"no usable cell count ({', '.join(no_cells)})")
    if weight is None:
        why.append("no body weight on or before day 0")
    elif usable_weight(weight) is None:
        why.append(f"the latest body weight on or before day 0 is not usable ({weight.source})")
    return "dose not decidable: " + ("; ".join(why) or "unknown")


__all__ = ["INCOMPLETE", "CountedInfusion", "Dose", "course", "day_zero", "dosing_weight", "in_range",
           "usable_cells", "usable_weight"]
