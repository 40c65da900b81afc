"""Submission time points and the window of days each one reports (CIBMTR's rhythm of forms).

- ``infusion-<n>``: one per infusion of the course, due once the infusion is done;
- ``day100``: days 0-100; ``month6``: days 101-183; ``yearly-1``: days 184-365; ``yearly-<k>``: days
  365(k-1)+1 to 365k.

A follow-up window is due when the as-of date has reached its last day — or, for the window in which the
patient died, once the death is on record (on or before the as-of date); no window after a death is due.
Days are counted from day 0 (the first infusion).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

KINDS = ("infusion", "day100", "month6", "yearly")
DAY100_LAST = 100
MONTH6_LAST = 183
YEAR_DAYS = 365


@dataclass(frozen=True)
class Timepoint:
    """One submission time point: ``code`` (``day100``, ``yearly-2``, ``infusion-1``), its kind and window."""

    code: str
    kind: str
    first_day: int
    last_day: int
    infusion: int | None = None

    def covers(self, day: int) -> bool:
        return self.first_day <= day <= self.last_day

    def last_date(self, day0: date) -> date:
        return day0 + timedelta(days=self.last_day)


@dataclass(frozen=True)
class Death:
    """What the record says about death as of the as-of date: day None with ``dead`` = date unknown."""

    dead: bool = False
    day: int | None = None


def infusion_timepoints(infusion_days: list[int]) -> list[Timepoint]:
    """``infusion-1`` ... in the order given (the course order), each covering its own day."""
    return [Timepoint(f"infusion-{n}", "infusion", d, d, n) for n, d in enumerate(infusion_days, start=1)]


def follow_up_windows() -> Iterator[Timepoint]:
    """day100, month6, yearly-1, yearly-2, ... (endless; the caller stops)."""
    yield Timepoint("day100", "day100", 0, DAY100_LAST)
    yield Timepoint("month6", "month6", DAY100_LAST + 1, MONTH6_LAST)
    yield Timepoint("yearly-1", "yearly", MONTH6_LAST + 1, YEAR_DAYS)
    k = 2
    while True:
        yield Timepoint(f"yearly-{k}", "yearly", YEAR_DAYS * (k - 1) + 1, YEAR_DAYS * k)
        k += 1


def due_follow_ups(day0: date, as_of: date, death: Death) -> list[Timepoint]:
    """The follow-up windows due on ``as_of``: complete ones, and the one holding a recorded death."""
    reached = (as_of - day0).days
    due: list[Timepoint] = []
    for tp in follow_up_windows():
        if death.day is not None and tp.first_day > death.day:
            break
        died_in = death.day is not None and tp.covers(death.day) and death.day <= reached
        if tp.last_day > reached and not died_in:
            break
        due.append(tp)
    return due


__all__ = ["DAY100_LAST", "KINDS", "MONTH6_LAST", "YEAR_DAYS", "Death", "Timepoint", "due_follow_ups",
           "follow_up_windows", "infusion_timepoints"]
