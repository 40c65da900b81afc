"""The consent gate: only a patient whose most recent research ``Consent`` is in force is packaged.

A Consent is a *research* Consent when its ``scope`` carries ``consentscope|research`` or one of its
``category`` codings is ``consentcategorycodes|research``. Research Consents with status ``draft``,
``proposed`` or ``entered-in-error`` are not decisions and are left aside; among the others the most recent
(``dateTime``, then the order read) decides — a withdrawal recorded after an older permit wins. It lets the
patient through when its status is ``active``, it is dated on or before the as-of date, its top-level
``provision.type`` is not ``deny`` and its ``provision.period`` (when given) covers the as-of date.

Reasons name the Consent by type/id only — never a date, a name or a text of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from bridge.normalize.fhirpath import partial_date

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentcategorycodes"
NOT_A_DECISION = frozenset({"draft", "proposed", "entered-in-error"})

Json = dict[str, Any]


@dataclass(frozen=True)
class ConsentDecision:
    """Whether a patient may be packaged, why, and which Consent decided (``Consent/<id>`` or None)."""

    allowed: bool
    reason: str
    consent: str | None = None


def _codings(concept: Any) -> list[Json]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def _has_code(concepts: Sequence[Any], system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code for cc in concepts for c in _codings(cc))


def is_research_consent(consent: Json) -> bool:
    """True when the scope or a category says research."""
    categories = consent.get("category") if isinstance(consent.get("category"), list) else []
    return _has_code([consent.get("scope")], SCOPE_SYSTEM, "research") or _has_code(
        categories or [], CATEGORY_SYSTEM, "research")


def _day(value: Any, end: bool = False) -> date | None:
    pd = partial_date(value) if isinstance(value, str) else None
    if pd is None:
        return None
    return pd.latest() if end else pd.earliest()


def _label(consent: Json) -> str:
    return f"Consent/{consent.get('id', '?')}"


def _deciding(consents: Sequence[Json]) -> Json | None:
    candidates = [(i, c) for i, c in enumerate(consents)
                  if is_research_consent(c) and c.get("status") not in NOT_A_DECISION]
    if not candidates:
        return None
    return max(candidates, key=lambda ic: (_day(ic[1].get("dateTime")) or date.min, ic[0]))[1]


def _refusal(consent: Json, as_of: date) -> str | None:
    status = consent.get("status")
    if status != "active":
        return f"research {_label(consent)} is {status if isinstance(status, str) else 'without status'}"
    signed = _day(consent.get("dateTime"))
    if signed is not None and signed > as_of:
        return f"research {_label(consent)} is dated after the as-of date"
    provision = consent.get("provision")
    provision = provision if isinstance(provision, dict) else {}
    if provision.get("type") == "deny":
        return f"research {_label(consent)} denies (provision.type deny)"
    return _period_refusal(consent, provision.get("period"), as_of)


def _period_refusal(consent: Json, period: Any, as_of: date) -> str | None:
    if not isinstance(period, dict):
        return None
    start, end = _day(period.get("start")), _day(period.get("end"), end=True)
    if (start is not None and start > as_of) or (end is not None and end < as_of):
        return f"research {_label(consent)}: provision.period does not cover the as-of date"
    return None


def consent_decision(consents: Sequence[Json], as_of: date) -> ConsentDecision:
    """May this patient's data go to the registry on ``as_of``? (the most recent research Consent decides)"""
    deciding = _deciding(consents)
    if deciding is None:
        return ConsentDecision(False, "no research Consent")
    refusal = _refusal(deciding, as_of)
    if refusal is not None:
        return ConsentDecision(False, refusal, _label(deciding))
    return ConsentDecision(True, f"active research {_label(deciding)}", _label(deciding))


__all__ = ["CATEGORY_SYSTEM", "SCOPE_SYSTEM", "ConsentDecision", "consent_decision", "is_research_consent"]
