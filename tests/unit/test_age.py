"""Age arithmetic in completed years, full and partial birth dates (property tests)."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import assume, given
from hypothesis import strategies as st

from bridge.config import RuleOptions
from bridge.evaluate.eligibility import completed_years, inc_age
from bridge.model import PartialDate, PatientFacts

dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31))


@given(dates, dates)
def test_completed_years_matches_birthday_count(born: date, on: date) -> None:
    assume(born <= on)
    years = completed_years(born, on)
    birthdays = sum(1 for y in range(born.year + 1, on.year + 1)
                    if (on.month, on.day) >= (born.month, born.day) or y < on.year)
    assert years == birthdays
    assert years >= 0


def test_leap_day_birthday() -> None:
    born = date(2012, 2, 29)
    assert completed_years(born, date(2024, 2, 28)) == 11
    assert completed_years(born, date(2024, 2, 29)) == 12
    assert completed_years(born, date(2025, 2, 28)) == 12
    assert completed_years(born, date(2026, 3, 1)) == 14


@given(dates, st.integers(min_value=0, max_value=100))
def test_birthday_eve(born: date, age: int) -> None:
    try:
        birthday = born.replace(year=born.year + age)
    except ValueError:  # 29 February in a common year
        return
    assume(age >= 1)
    assert completed_years(born, birthday) == age
    assert completed_years(born, birthday - timedelta(days=1)) == age - 1


@given(st.integers(min_value=1940, max_value=2020), dates)
def test_partial_year_is_decided_only_when_both_ends_agree(year: int, as_of: date) -> None:
    assume(as_of.year >= year)
    pf = PatientFacts("p", birth_date=PartialDate(year))
    verdict = inc_age(pf, RuleOptions(as_of=as_of))
    ages = {completed_years(date(year, 1, 1), as_of), completed_years(date(year, 12, 31), as_of)}
    inside = {12 <= a <= 65 for a in ages}
    expected = {frozenset({True}): "met", frozenset({False}): "not-met"}.get(frozenset(inside), "unknown")
    assert verdict.result == expected
