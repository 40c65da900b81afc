"""Three-valued logic, comparator-aware comparisons and fact selection shared by the rules. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from bridge.model import Fact, Quantity, Tri

_STATUS_RANK = {"preliminary": 0, "final": 1, "amended": 2, "corrected": 2, "appended": 2}


def tri_and(*values: Tri) -> Tri:
    if "not-met" in values:
        return "not-met"
    return "met" if all(v == "met" for v in values) else "unknown"


def tri_or(*values: Tri) -> Tri:
    if "met" in values:
        return "met"
    return "not-met" if all(v == "not-met" for v in values) else "unknown"


def holds(x: float, op: str, t: float) -> bool:
    """``x op t`` for one of the comparators ``<``, ``<=``, ``>``, ``>=``."""
    return {"<": x < t, "<=": x <= t, ">": x > t, ">=": x >= t}[op]


def compare(q: Quantity, op: str, threshold: float) -> Tri:
    """Is ``q op threshold``? A reported comparator (``<5``) makes the answer unknown when the bound allows both."""
    if q.comparator is None:
        return "met" if holds(q.value, op, threshold) else "not-met"
    below = q.comparator in ("<", "<=")
    # the true value lies in an open/closed half-line from q.value; test its two ends
    near_ok = holds(q.value, op, threshold) if q.comparator in ("<=", ">=") else _near_strict(q, op, threshold)
    far_ok = holds(-1e300 if below else 1e300, op, threshold)
    if near_ok and far_ok:
        return "met"
    if not near_ok and not far_ok:
        return "not-met"
    return "unknown"


def _near_strict(q: Quantity, op: str, threshold: float) -> bool:
    """For ``<v`` / ``>v`` the value is strictly beyond v: judge at v, nudged by a hair toward the inside."""
    eps = max(abs(q.value), 1.0) * 1e-9
    return holds(q.value - eps if q.comparator == "<" else q.value + eps, op, threshold)


def in_window(when: date | None, as_of: date, days: int | None) -> bool:
    if when is None or when > as_of:
        return False
    return days is None or when >= as_of - timedelta(days=days)


def dated(facts: Iterable[Fact], as_of: date, days: int | None = None) -> list[Fact]:
    """Facts dated within ``days`` back from ``as_of`` (inclusive), latest first (ties: stronger status)."""
    keep = [f for f in facts if in_window(f.when, as_of, days)]
    return sorted(keep, key=lambda f: (f.when, _STATUS_RANK.get(f.status, 1), f.source), reverse=True)


def latest(facts: Iterable[Fact], as_of: date, days: int | None = None) -> Fact | None:
    found = dated(facts, as_of, days)
    return found[0] if found else None


def fmt(x: float) -> str:
    """A number for a reason line: no trailing zeros, no float noise."""
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.4e}"


def show(q: Quantity) -> str:
    return f"{q.comparator or ''}{fmt(q.value)} {q.unit}"


__all__ = ["compare", "dated", "fmt", "holds", "in_window", "latest", "show", "tri_and", "tri_or"]
