"""CAR-T kinetics for one concept (``car-t-copies`` or ``car-t-percent``): Cmax, Tmax, AUC 0–28, persistence.

Pure: a list of points ``(day, value, source[, comparator])`` in, a JSON-ready dict out. Day numbers are
calendar days from day 0 (the first completed infusion, RULES.md §4); the caller computes them.

Rules, in the order they are applied:

1. **Usable points.** Only ``day >= 0`` (pre-infusion baselines are ignored). A point whose value is ``None``
   (the normalizer could not use it: unconvertible, implausible) or is negative, NaN or infinite is *not
   usable*: an unknown value, never an absent one (RULES.md §3). It is listed in ``notUsable`` (a key present
   only when there is one) and makes every metric it could change None: Cmax and Tmax always (it could be the
   peak); the AUC when it lies in [0, 28] or between day 28 and the point the AUC is interpolated to;
   lastDetectedDay when it lies after the last detected day (or nothing was detected).
2. **Comparators.** ``<`` or ``<=`` means below the limit of detection: the point counts as 0 (not
   detected). ``>`` or ``>=`` (above the upper limit of quantification) uses the reported bound as is,
   so Cmax and AUC are then lower bounds.
3. **Same-day replicates** are averaged (arithmetic mean) into one point of the profile; every metric is
   computed on that one-point-per-day profile.
4. **Cmax** = the largest profile value; **tmaxDay** its day (ties: the earliest day). When nothing was
   ever detected Cmax is 0.0 at the first measured day.
5. **AUC 0–28** by the linear trapezoid rule over the profile points in [0, 28]:

   - *No day-0 point*: the profile is taken as 0 at day 0 (CAR-T cells are absent before the infusion).
     This assumed point never counts as a measurement: with no measured point in [0, 28] the AUC is None.
   - *No day-28 point*: if a measured point exists after day 28, the profile is linearly interpolated
     to day 28 between the last point before and the first point after it; otherwise the integral stops
     at the last measured day ≤ 28 (no extrapolation). ``aucThroughDay`` says where it stopped (28 or less).

   Units: value × days (e.g. copies/µg·day, %·day).
6. **lastDetectedDay** = the latest profile day with a value > 0, or None when never detected.

With no usable point every metric is None. ``evidence`` lists the sources of every usable point, in day
order then input order, without duplicates. Nothing here raises on a value: a malformed one is not usable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

AUC_END_DAY = 28
_NOT_DETECTED = frozenset({"<", "<="})


class KineticPoint(NamedTuple):
    """One measurement. A plain ``(day, value, source)`` tuple is accepted wherever this is."""

    day: int
    value: float | None
    source: str
    comparator: str | None = None


PointLike = KineticPoint | tuple[int, float | None, str] | tuple[int, float | None, str, str | None]


def _usable(points: Iterable[PointLike]) -> tuple[list[KineticPoint], list[KineticPoint]]:
    """(usable, not usable) post-infusion points, ``<`` values set to 0, each sorted by day (stable)."""
    out, unknown = [], []
    for raw in points:
        p = KineticPoint(*raw)
        if p.day < 0:
            continue
        if p.value is None or not math.isfinite(p.value) or p.value < 0:
            unknown.append(p._replace(value=None))
            continue
        value = 0.0 if p.comparator in _NOT_DETECTED else float(p.value)
        out.append(p._replace(value=value))
    return sorted(out, key=lambda p: p.day), sorted(unknown, key=lambda p: p.day)


def _profile(points: Sequence[KineticPoint]) -> list[tuple[int, float]]:
    """One (day, mean value) per measured day, in day order."""
    by_day: dict[int, list[float]] = {}
    for p in points:
        by_day.setdefault(p.day, []).append(float(p.value or 0.0))
    return [(day, sum(vals) / len(vals)) for day, vals in sorted(by_day.items())]


def _peak(profile: Sequence[tuple[int, float]]) -> tuple[float, int]:
    """(Cmax, Tmax): the first day reaching the maximum."""
    cmax = max(v for _, v in profile)
    tmax = next(d for d, v in profile if v == cmax)
    return cmax, tmax


def _auc_points(profile: Sequence[tuple[int, float]], end: int) -> list[tuple[float, float]]:
    """The profile on [0, end]: 0 assumed at day 0, interpolated to ``end`` when a later point exists."""
    inside: list[tuple[float, float]] = [(float(d), v) for d, v in profile if d <= end]
    if inside[0][0] > 0:  # callers guarantee a measured point in [0, end]
        inside.insert(0, (0.0, 0.0))
    after = [(float(d), v) for d, v in profile if d > end]
    last_day, last_value = inside[-1]
    if last_day < end and after:
        next_day, next_value = after[0]
        fraction = (end - last_day) / (next_day - last_day)
        inside.append((float(end), last_value + fraction * (next_value - last_value)))
    return inside


def _trapezoid(points: Sequence[tuple[float, float]]) -> float:
    """Linear trapezoid rule over consecutive (x, y) points."""
    return float(sum((x1 - x0) * (y0 + y1) / 2.0 for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False)))


def _auc(profile: Sequence[tuple[int, float]], end: int = AUC_END_DAY) -> tuple[float | None, int | None]:
    """(AUC over [0, end], the day it ran to); (None, None) without a measured point in [0, end]."""
    if not any(d <= end for d, _ in profile):
        return None, None
    points = _auc_points(profile, end)
    return _trapezoid(points), int(points[-1][0])


def _evidence(points: Sequence[KineticPoint]) -> list[str]:
    return list(dict.fromkeys(p.source for p in points))


def _auc_unknown(profile: Sequence[tuple[int, float]], unknown_days: Sequence[int], end: int = AUC_END_DAY) -> bool:
    """Could a not-usable point change the AUC over [0, end]? Inside it, or where the interpolation to ``end``
    runs (after ``end``, before the first measured point after it, when none is on ``end``)."""
    if any(d <= end for d in unknown_days):
        return True
    after = [d for d, _ in profile if d > end]
    if any(d == end for d, _ in profile) or not after:
        return False
    return any(end < d < after[0] for d in unknown_days)


def kinetics(points: Iterable[PointLike]) -> dict[str, object]:
    """Cmax, tmaxDay, auc0to28 (with aucThroughDay), lastDetectedDay and evidence for one concept (and
    ``notUsable``, the sources of points that are not usable, when there are any)."""
    usable, unknown = _usable(points)
    result: dict[str, object] = dict.fromkeys(
        ("cmax", "tmaxDay", "auc0to28", "aucThroughDay", "lastDetectedDay")
    )
    result["evidence"] = _evidence(usable)
    if unknown:
        result["notUsable"] = _evidence(unknown)
    if not usable:
        return result
    profile = _profile(usable)
    unknown_days = [p.day for p in unknown]
    if not unknown:
        result["cmax"], result["tmaxDay"] = _peak(profile)
    if not _auc_unknown(profile, unknown_days):
        result["auc0to28"], result["aucThroughDay"] = _auc(profile)
    last = max((d for d, v in profile if v > 0), default=None)
    if not any(last is None or d > last for d in unknown_days):
        result["lastDetectedDay"] = last
    return result


__all__ = ["AUC_END_DAY", "KineticPoint", "PointLike", "kinetics"]
