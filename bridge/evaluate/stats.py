"""Cohort statistics for response and safety: ORR with an exact interval, cumulative incidence of relapse.

Pure functions: plain Python values in (counts, dates), plain values out. No I/O, no clock, no FHIR.
Nothing is rounded here; the caller rounds for display.

ORR (RULES.md §4)
    ``clopper_pearson(k, n)`` is the exact (Clopper–Pearson) interval from beta quantiles:
    lower = Beta(α/2; k, n−k+1), upper = Beta(1−α/2; k+1, n−k), with lower = 0 when k = 0 and upper = 1
    when k = n. Decision for n = 0: ``(0.0, 1.0)`` — both of those rules apply at once and the interval is
    the whole parameter space (no information). ``orr`` reports ``rate`` and ``ci95`` as ``None`` when
    n = 0, so a report shows "not estimable" rather than a vacuous [0, 1].

CIR (RULES.md §4) — Aalen–Johansen estimator, relapse as the event, death without relapse as competing.
    Time of a subject = ``(exit - origin).days``. Subjects still followed past ``horizon_days`` are
    censored at the horizon (events after it are not counted).

    Ties, deterministic: at a time t all events of both causes are processed together, each using the
    overall survival just before t: ``F_k(t) = F_k(t-) + S(t-) · d_k(t) / n(t)`` and
    ``S(t) = S(t-) · (1 − d(t)/n(t))``, where n(t) counts everyone whose time is ≥ t. Subjects censored at
    t are therefore still at risk at t (events before censorings). Input order never matters.

    Variance of the relapse CIF: the delta-method (Greenwood-type) estimator of Collett, *Modelling
    Survival Data in Medical Research*, 3rd ed., p. 411 — the one lifelines' ``AalenJohansenFitter``
    computes::

        Var F(t) = Σ_{t_i ≤ t} (F(t) − F(t_i))² · d_i / (n_i (n_i − d_i))
                 + Σ_{t_i ≤ t} S(t_i−)² · d1_i (n_i − d1_i) / n_i³
                 − 2 Σ_{t_i ≤ t} (F(t) − F(t_i)) · S(t_i−) · d1_i / n_i²

    (d_i events of any cause, d1_i relapses, n_i at risk). When d_i = n_i nobody is left at risk after
    t_i, so F(t) = F(t_i) for every later t and the first term's summand is taken as 0 (lifelines yields
    NaN there). The sums are evaluated directly, not by lifelines' expanded accumulators.

    Interval: the log(−log) transform, as lifelines does:
    ``[F^exp(+z·se), F^exp(−z·se)]`` with ``se = sqrt(Var) / (F · |log F|)``, clipped to [0, 1]. At
    F = 0 or F = 1 the transform is undefined and the variance is 0: the interval is the point itself.

    Where the curve is defined: up to the largest follow-up time (capped at the horizon), or for all
    times once the overall survival has reached 0 (no one left who could still have an event).
    Beyond that ``cif_at`` returns ``None`` rather than carrying the last value forward.

    ``cir_summary`` converts months to days as ``months × 365.25 / 12`` (12 months = 365.25 days,
    24 months = 730.5 days). With no subjects every estimate and interval is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from statistics import NormalDist
from typing import Literal

from bridge.errors import InputError

Event = Literal["relapse", "death", "censored"]
Interval = tuple[float, float]

DAYS_PER_MONTH = 365.25 / 12
_EVENTS = ("relapse", "death", "censored")


def clopper_pearson(k: int, n: int, level: float = 0.95) -> Interval:
    """Exact two-sided binomial interval for k successes out of n (see the module docstring for n = 0)."""
    if n < 0 or not 0 <= k <= n:
        raise InputError("clopper_pearson needs 0 <= k <= n")
    if not 0.0 < level < 1.0:
        raise InputError("clopper_pearson needs a confidence level strictly between 0 and 1")
    alpha = 1.0 - level
    from scipy.stats import beta  # imported on first use: scipy.stats costs ~0.4 s at start-up

    lower = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


def orr(responders: int, n: int) -> dict[str, object]:
    """Overall response rate with its exact 95 % interval; rate and interval are None when n is 0."""
    lo, hi = clopper_pearson(responders, n)  # validates the counts, n = 0 included
    if n == 0:
        return {"responders": responders, "n": n, "rate": None, "ci95": None}
    return {"responders": responders, "n": n, "rate": responders / n, "ci95": [lo, hi]}


@dataclass(frozen=True)
class CirSubject:
    """One patient in the CIR: remission date (origin), exit date and what happened at exit."""

    origin: date
    exit: date
    event: Event


@dataclass(frozen=True)
class CifCurve:
    """Aalen–Johansen step curves. Index i describes the i-th distinct event time ``times[i]`` (days).

    ``cif_relapse[i]`` / ``cif_death[i]`` / ``variance[i]`` (of the relapse CIF) hold from ``times[i]``
    until the next event time; before ``times[0]`` both CIFs are 0. ``defined_until`` is the last day
    at which the curve is estimable (``math.inf`` once the overall survival reached 0).
    """

    times: tuple[float, ...]
    at_risk: tuple[int, ...]
    relapses: tuple[int, ...]
    deaths: tuple[int, ...]
    cif_relapse: tuple[float, ...]
    cif_death: tuple[float, ...]
    variance: tuple[float, ...]
    n_subjects: int
    horizon_days: float
    defined_until: float


@dataclass(frozen=True)
class _Obs:
    time: float
    event: Event


def _observations(subjects: Iterable[CirSubject], horizon_days: float) -> list[_Obs]:
    """Times in days, administratively censored at the horizon."""
    out = []
    for index, s in enumerate(subjects):
        if s.event not in _EVENTS:
            raise InputError(f"CIR subject {index}: event must be relapse, death or censored")
        days = float((s.exit - s.origin).days)
        if days < 0:
            raise InputError(f"CIR subject {index}: exit is before origin")
        out.append(_Obs(days, s.event) if days <= horizon_days else _Obs(horizon_days, "censored"))
    return out


def _event_table(obs: Sequence[_Obs]) -> list[tuple[float, int, int, int]]:
    """(time, at risk, relapses, deaths) at every distinct time with at least one event."""
    rows = []
    for t in sorted({o.time for o in obs if o.event != "censored"}):
        at_risk = sum(1 for o in obs if o.time >= t)
        relapses = sum(1 for o in obs if o.time == t and o.event == "relapse")
        deaths = sum(1 for o in obs if o.time == t and o.event == "death")
        rows.append((t, at_risk, relapses, deaths))
    return rows


def _variance_at(
    k: int, rows: Sequence[tuple[float, int, int, int]], cif: Sequence[float], lag_s: Sequence[float]
) -> float:
    """Delta-method variance of the relapse CIF at event time index k (formula in the module docstring)."""
    f_t = cif[k]
    total = 0.0
    for i in range(k + 1):
        _, n, d1, d2 = rows[i]
        d = d1 + d2
        gap = f_t - cif[i]
        if n > d:
            total += gap * gap * d / (n * (n - d))
        total += lag_s[i] ** 2 * d1 * (n - d1) / n**3
        total -= 2.0 * gap * lag_s[i] * d1 / n**2
    return max(total, 0.0)


def aalen_johansen(subjects: Iterable[CirSubject], horizon_days: float) -> CifCurve:
    """Cumulative incidence of relapse (and of death as the competing event) up to ``horizon_days``."""
    if not horizon_days >= 0:
        raise InputError("aalen_johansen needs a horizon of 0 days or more")
    obs = _observations(subjects, horizon_days)
    rows = _event_table(obs)
    surv, f_rel, f_death = 1.0, 0.0, 0.0
    lag_s: list[float] = []
    cif_rel: list[float] = []
    cif_death: list[float] = []
    for _, n, d1, d2 in rows:
        lag_s.append(surv)
        f_rel += surv * d1 / n
        f_death += surv * d2 / n
        surv *= 1.0 - (d1 + d2) / n
        cif_rel.append(min(f_rel, 1.0))  # rounding in the running sums can overshoot 1 by an ulp
        cif_death.append(min(f_death, 1.0))
    variance = [_variance_at(k, rows, cif_rel, lag_s) for k in range(len(rows))]
    last_time = max((o.time for o in obs), default=0.0)
    return CifCurve(
        times=tuple(r[0] for r in rows),
        at_risk=tuple(r[1] for r in rows),
        relapses=tuple(r[2] for r in rows),
        deaths=tuple(r[3] for r in rows),
        cif_relapse=tuple(cif_rel),
        cif_death=tuple(cif_death),
        variance=tuple(variance),
        n_subjects=len(obs),
        horizon_days=horizon_days,
        defined_until=math.inf if rows and surv <= 0.0 else last_time,
    )


def _loglog_interval(f: float, var: float, level: float) -> Interval:
    """log(−log F) interval, clipped to [0, 1]; the point itself where the transform is undefined."""
    if f <= 0.0 or f >= 1.0 or var <= 0.0:
        point = min(max(f, 0.0), 1.0)
        return point, point
    z = NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)
    se = math.sqrt(var) / (f * abs(math.log(f)))
    lower = f ** math.exp(z * se)
    upper = f ** math.exp(-z * se)
    return min(max(lower, 0.0), 1.0), min(max(upper, 0.0), 1.0)


def cif_at(curve: CifCurve, day: float, level: float = 0.95) -> tuple[float | None, Interval | None]:
    """Relapse CIF at ``day`` with its interval; ``(None, None)`` where the curve is not defined."""
    if curve.n_subjects == 0 or day < 0 or day > min(curve.defined_until, curve.horizon_days):
        return None, None
    k = sum(1 for t in curve.times if t <= day) - 1
    if k < 0:
        return 0.0, (0.0, 0.0)
    estimate = curve.cif_relapse[k]
    return estimate, _loglog_interval(estimate, curve.variance[k], level)


def cir_summary(
    subjects: Iterable[CirSubject], months: Sequence[int] | None = None
) -> dict[str, dict[str, object]]:
    """CIR at each of ``months`` (keys ``"12months"`` …), each ``{"estimate": x, "ci95": [lo, hi]}``; the last
    is the horizon. ``months`` None: the shipped trial's time points (``RuleOptions.cir_months``)."""
    if months is None:
        from bridge.trial import load_trial  # the default trial, read once (cached)

        months = load_trial().rule_defaults()["cir_months"]
    horizon = max(months, default=0) * DAYS_PER_MONTH
    curve = aalen_johansen(subjects, horizon)
    summary: dict[str, dict[str, object]] = {}
    for m in months:
        estimate, interval = cif_at(curve, m * DAYS_PER_MONTH)
        summary[f"{m}months"] = {"estimate": estimate, "ci95": list(interval) if interval else None}
    return summary


__all__ = [
    "DAYS_PER_MONTH",
    "CifCurve",
    "CirSubject",
    "aalen_johansen",
    "cif_at",
    "cir_summary",
    "clopper_pearson",
    "orr",
]
