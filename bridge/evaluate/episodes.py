"""AE episodes (RULES.md §5): "one AE is one episode of a term — consecutive graded results of the same term
are one event at its worst grade".

Pure. Points are merged per term in a fixed order (date, source reference, grade), so the same data
always gives the same episodes. A point with grade 0 ends the open episode; its date becomes the episode's
``resolved`` date. With ``max_gap_days`` set, a graded point more than that many days after the previous
graded point of the episode starts a new one (default None: only a grade-0 result ends an episode).
Points with grade ``None`` (ungradable, e.g. no reference limit, or a baseline that is not usable) neither
extend nor end an episode. Values that are not usable (RULES.md §3) are never points at all: the caller
(``bridge.evaluate.safety``) leaves them out, so they cannot start, extend, end or split an episode.

The caller grades post-infusion results only (RULES.md §5) and keeps episodes whose onset lies in the
12-month window with ``within_window``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import groupby

from bridge.errors import InputError


@dataclass(frozen=True)
class GradedPoint:
    """One graded observation of an AE term: a lab result, a CRS/ICANS assessment or a coded Condition."""

    term: str
    when: date
    grade: int | None
    source: str

    def __post_init__(self) -> None:
        if self.grade is not None and not 0 <= self.grade <= 5:
            raise InputError(f"graded point from {self.source} has a grade outside 0-5")


@dataclass(frozen=True)
class Episode:
    """One AE: a run of graded (> 0) points of one term, at its worst grade.

    ``onset`` is the first graded point's date, ``end`` the last's; ``resolved`` is the date of the grade-0
    result that closed it (None when it was still open at the last result, or closed by a gap).
    ``evidence`` lists the graded points' sources in time order.
    """

    term: str
    onset: date
    end: date
    worst_grade: int
    evidence: tuple[str, ...]
    resolved: date | None = None


def _order(point: GradedPoint) -> tuple[str, date, str, int]:
    return point.term, point.when, point.source, point.grade or 0


def merge_episodes(points: Iterable[GradedPoint], max_gap_days: int | None = None) -> list[Episode]:
    """Merge graded points into episodes, per term; sorted by onset, then term."""
    if max_gap_days is not None and max_gap_days < 0:
        raise InputError("max_gap_days must not be negative")
    usable = sorted((p for p in points if p.grade is not None), key=_order)
    episodes: list[Episode] = []
    for _term, run in groupby(usable, key=lambda p: p.term):
        episodes.extend(_term_episodes(list(run), max_gap_days))
    return sorted(episodes, key=lambda e: (e.onset, e.term, e.end, e.evidence))


def _term_episodes(points: list[GradedPoint], max_gap_days: int | None) -> list[Episode]:
    out: list[Episode] = []
    current: list[GradedPoint] = []
    for point in points:
        if point.grade == 0:
            if current:
                out.append(_episode(current, resolved=point.when))
            current = []
            continue
        if current and _gap_exceeded(current[-1].when, point.when, max_gap_days):
            out.append(_episode(current, resolved=None))
            current = []
        current.append(point)
    if current:
        out.append(_episode(current, resolved=None))
    return out


def _gap_exceeded(previous: date, this: date, max_gap_days: int | None) -> bool:
    return max_gap_days is not None and (this - previous).days > max_gap_days


def _episode(points: list[GradedPoint], resolved: date | None) -> Episode:
    evidence = tuple(dict.fromkeys(p.source for p in points))
    worst = max(p.grade or 0 for p in points)
    return Episode(points[0].term, points[0].when, points[-1].when, worst, evidence, resolved)


def within_window(episodes: Iterable[Episode], day0: date, days: int = 365) -> list[Episode]:
    """The episodes whose onset lies in [day0, day0 + days], both ends included."""
    last = day0 + timedelta(days=days)
    return [e for e in episodes if day0 <= e.onset <= last]


__all__ = ["Episode", "GradedPoint", "merge_episodes", "within_window"]
