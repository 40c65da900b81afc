"""What the coordinator page shows, as plain data: the pre-screen queue and one patient's screening.

The page (``bridge.service.ui``) reads screenings through the small ``CoordinatorData`` interface:

- ``list_screenings()`` → every patient's latest screening;
- ``get_screening(patient_id)`` → one, or None;
- ``get_assessment(patient_id)`` → the patient's entry of the ``bridge assess`` document, or None (untreated);
- ``list_not_screened()`` (optional) → ``[{"patient", "reason", "asOf"}]``, the patients the latest pre-screen
  did not screen (RULES.md §2: ``deceased``, ``non-human``, ``no-patient-resource``).

A patient who is not screened is never in the queue and has no patient page: ``screened_only`` drops any
screening of a patient listed as not screened (the store keeps the two apart already; a pre-screen document's
``notScreened`` array is honoured the same way), and the queue shows only how many there are, by reason.

A screening is a plain dict ``{"patient", "status", "criteria": {id: {result, evidence, reason}}, "asOf",
"updatedAt", "ruleset"}`` where ``patient`` is the bare resource id (``p01``) and ``updatedAt`` epoch seconds.
``StoreData`` adapts the state store (``bridge.state.Screenings``: ``screenings()`` / ``screening(id)``, records
with ``verdicts`` as a list or a mapping); ``MemoryData`` holds documents in memory (tests, demos) and can be
filled from a ``bridge prescreen --format json`` document.

Everything here is pure; no request, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from bridge.trial import Trial, load_trial

Json = dict[str, Any]
STATUS_ORDER = ("candidate", "potential-candidate", "ineligible", "screening", "on-study-intervention",
                "follow-up", "withdrawn", "off-study")
RESOURCE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
REFERENCE = re.compile(r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})")


class CoordinatorData(Protocol):
    """The read interface of the coordinator page."""

    def list_screenings(self) -> list[Json]: ...

    def get_screening(self, patient_id: str) -> Json | None: ...

    def get_assessment(self, patient_id: str) -> Json | None: ...


NOT_SCREENED_LABELS = {"deceased": "deceased", "non-human": "non-human",
                       "no-patient-resource": "no valid Patient resource"}


def not_screened_of(data: Any) -> list[Json]:
    """``data.list_not_screened()`` when the data source offers it, else nothing."""
    method = getattr(data, "list_not_screened", None)
    return list(method()) if callable(method) else []


def screened_only(screenings: Iterable[Json], not_screened: Iterable[Json]) -> list[Json]:
    """The screenings of patients not listed as not screened."""
    excluded = {bare_id(str(n.get("patient", ""))) for n in not_screened}
    return [s for s in screenings if bare_id(str(s.get("patient", ""))) not in excluded]


def not_screened_summary(not_screened: Iterable[Json]) -> list[Json]:
    """``[{"reason", "label", "count"}]`` in RULES order: how many patients were not screened, and why."""
    counts: dict[str, int] = {}
    for n in not_screened:
        reason = str(n.get("reason"))
        counts[reason] = counts.get(reason, 0) + 1
    order = list(NOT_SCREENED_LABELS)
    return [{"reason": r, "label": NOT_SCREENED_LABELS.get(r, r), "count": counts[r]}
            for r in sorted(counts, key=lambda r: (order.index(r) if r in order else len(order), r))]


def bare_id(patient: str) -> str:
    """``Patient/p01`` → ``p01``; a bare id is returned unchanged."""
    return patient.split("/", 1)[1] if patient.startswith("Patient/") else patient


def is_resource_id(value: str) -> bool:
    """A FHIR logical id (``[A-Za-z0-9\\-.]{1,64}``): the only patient data allowed in a page URL."""
    return RESOURCE_ID.fullmatch(value) is not None


def criteria_map(verdicts: Any) -> dict[str, Json]:
    """Verdicts as ``{criterion id: {result, evidence, reason}}``, from a mapping or a list of verdict dicts."""
    if isinstance(verdicts, Mapping):
        return {str(k): dict(v) for k, v in verdicts.items() if isinstance(v, Mapping)}
    out: dict[str, Json] = {}
    for v in verdicts or []:
        if isinstance(v, Mapping) and isinstance(v.get("criterion"), str):
            out[v["criterion"]] = {k: v.get(k) for k in ("result", "evidence", "reason")}
    return out


def screening_view(patient: str, status: str, verdicts: Any, as_of: str | None, updated_at: float | None,
                   ruleset: str | None = None) -> Json:
    """The normalized screening dict the page reads."""
    return {"patient": bare_id(patient), "status": status, "criteria": criteria_map(verdicts), "asOf": as_of,
            "updatedAt": updated_at, "ruleset": ruleset}


class MemoryData:
    """Screenings and assessments held in memory."""

    def __init__(self, screenings: Iterable[Json] = (), assessments: Mapping[str, Json] | None = None,
                 not_screened: Iterable[Json] = ()) -> None:
        self._not_screened = [{**n, "patient": bare_id(str(n["patient"]))} for n in not_screened]
        self._screenings = {s["patient"]: s for s in screened_only(screenings, self._not_screened)}
        self._assessments = {bare_id(k): dict(v) for k, v in (assessments or {}).items()}

    @classmethod
    def from_documents(cls, prescreen: Mapping[str, Any], assessment: Mapping[str, Any] | None = None,
                       updated_at: Callable[[int], float] | None = None, ruleset: str | None = None) -> MemoryData:
        """From a ``bridge prescreen`` JSON document (and optionally a ``bridge assess`` one); ``ruleset`` defaults
        to the shipped trial's version."""
        stamp = updated_at or (lambda i: float(i))
        ruleset = ruleset or load_trial().ruleset_version
        views = [screening_view(r["patient"], r["status"], r.get("criteria"), prescreen.get("asOf"), stamp(i), ruleset)
                 for i, r in enumerate(prescreen.get("results") or [])]
        treated = {p["patient"]: p for p in (assessment or {}).get("patients") or []}
        excluded = [{"patient": n["patient"], "reason": n.get("reason"), "asOf": prescreen.get("asOf")}
                    for n in prescreen.get("notScreened") or []]
        return cls(views, treated, excluded)

    def list_screenings(self) -> list[Json]:
        return list(self._screenings.values())

    def get_screening(self, patient_id: str) -> Json | None:
        return self._screenings.get(patient_id)

    def get_assessment(self, patient_id: str) -> Json | None:
        return self._assessments.get(patient_id)

    def list_not_screened(self) -> list[Json]:
        return list(self._not_screened)


class StoreData:
    """``CoordinatorData`` over the state store's screenings (``bridge.state.Screenings``)."""

    def __init__(self, store: Any, assessments: Callable[[str], Json | None] | None = None) -> None:
        self._store = store
        self._assessments = assessments

    @staticmethod
    def _view(record: Any) -> Json:
        return screening_view(record.patient_id, record.status, record.verdicts, record.as_of, record.updated_at,
                              getattr(record, "ruleset", None))

    def list_screenings(self) -> list[Json]:
        return screened_only([self._view(r) for r in self._store.screenings()], self.list_not_screened())

    def get_screening(self, patient_id: str) -> Json | None:
        record = self._store.screening(patient_id) or self._store.screening(f"Patient/{patient_id}")
        if record is None or not screened_only([self._view(record)], self.list_not_screened()):
            return None
        return self._view(record)

    def get_assessment(self, patient_id: str) -> Json | None:
        return self._assessments(patient_id) if self._assessments else None

    def list_not_screened(self) -> list[Json]:
        method = getattr(self._store, "not_screened", None)
        records = method() if callable(method) else []
        return [{"patient": bare_id(r.patient_id), "reason": r.reason, "asOf": r.as_of} for r in records]


def as_data(store: Any) -> CoordinatorData:
    """The page's read interface for ``store``: used as is when it already is one, else adapted."""
    if all(hasattr(store, m) for m in ("list_screenings", "get_screening", "get_assessment")):
        return cast(CoordinatorData, store)  # duck-typed CoordinatorData
    return StoreData(store)


# ------------------------------------------------------------------ page views
def _status_rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def blocking(criteria: Mapping[str, Json], trial: Trial | None = None) -> tuple[list[str], list[str]]:
    """(criteria that make the patient ineligible, criteria left unknown), advisory criteria aside; which
    verdict blocks is ``Trial.blocking``'s to say. An id the trial does not know is listed only when unknown."""
    t = trial or load_trial()
    known = set(t.criterion_ids)
    failing, unknown = [], []
    for cid, v in criteria.items():
        result = v.get("result")
        if cid in known and not t.counted(cid):
            continue
        if cid in known and t.blocking(cid, str(result)):
            failing.append(cid)
        elif result == "unknown":
            unknown.append(cid)
    return failing, unknown


def queue(screenings: Iterable[Json], status: str | None = None, trial: Trial | None = None) -> list[Json]:
    """Groups ``{"status", "rows"}`` in status order; newest first within a group; one status when given."""
    groups: dict[str, list[Json]] = {}
    for s in screenings:
        if status is None or s["status"] == status:
            failing, unknown = blocking(s.get("criteria") or {}, trial)
            groups.setdefault(s["status"], []).append({**s, "failing": failing, "unknown": unknown})
    ordered = sorted(groups, key=lambda k: (_status_rank(k), k))
    return [{"status": k, "rows": sorted(groups[k], key=lambda r: (-(r.get("updatedAt") or 0.0), r["patient"]))}
            for k in ordered]


def evidence_link(reference: str, ehr_base_url: str | None) -> str | None:
    """``{base}/{Type}/{id}`` for a well-formed reference when the EHR base URL is configured, else None."""
    if not ehr_base_url or REFERENCE.fullmatch(reference) is None:
        return None
    return ehr_base_url.rstrip("/") + "/" + reference


def criterion_rows(screening: Json, ehr_base_url: str | None, trial: Trial | None = None) -> list[Json]:
    """Every criterion in the trial's order (unknown ids after), with its label, text and linked evidence."""
    t = trial or load_trial()
    criteria = screening.get("criteria") or {}
    order = t.criterion_ids
    ids = [c for c in order if c in criteria] + sorted(c for c in criteria if c not in order)
    rows = []
    for cid in ids:
        v = criteria[cid]
        text = t.criterion(cid) if cid in order else None
        rows.append({"id": cid, "label": text.label if text else cid, "kind": text.kind if text else "",
                     "text": text.applied_text() if text else "",
                     "result": v.get("result") or "unknown", "reason": v.get("reason") or "",
                     "evidence": [{"ref": str(e), "href": evidence_link(str(e), ehr_base_url)}
                                  for e in v.get("evidence") or []]})
    return rows


def timeline(assessment: Json, ehr_base_url: str | None) -> list[Json]:
    """Dated events of a treated patient (infusions, marrow assessments, relapse, AEs), oldest first."""
    day0 = assessment.get("dayZero")
    events: list[Json] = []
    for inf in assessment.get("infusions") or []:
        events.append(_event(inf.get("date"), day0, "infusion", f"CAR-T cells {_cells(inf.get('cells'))}",
                             [inf.get("evidence")], ehr_base_url))
    for a in assessment.get("assessments") or []:
        events.append(_event(a.get("date"), day0, "marrow assessment", str(a.get("response")),
                             a.get("evidence") or [], ehr_base_url))
    for e in assessment.get("adverseEvents") or []:
        grade = "ungraded" if e.get("grade") is None else f"grade {e['grade']}"
        events.append(_event(e.get("onset"), day0, "adverse event", f"{e.get('term')}, {grade}",
                             e.get("evidence") or [], ehr_base_url))
    return sorted(events, key=lambda e: (e["date"] or "", e["order"]))


_ORDER = {"infusion": 0, "marrow assessment": 1, "adverse event": 2}


def _event(when: str | None, day0: str | None, kind: str, what: str, evidence: Iterable[Any],
           base: str | None) -> Json:
    refs = [str(r) for r in evidence if r]
    return {"date": when, "day": _day(when, day0), "kind": kind, "what": what, "order": _ORDER[kind],
            "evidence": [{"ref": r, "href": evidence_link(r, base)} for r in refs]}


def _day(when: str | None, day0: str | None) -> int | None:
    try:
        return (datetime.fromisoformat(str(when)).date() - datetime.fromisoformat(str(day0)).date()).days
    except ValueError:
        return None


def _cells(cells: Any) -> str:
    return f"{cells / 1e6:.3g} ×10⁶" if isinstance(cells, int | float) else "count unknown"


def updated_text(epoch: float | None) -> str:
    """Epoch seconds as ``2026-06-15 02:00 UTC`` (the page shows UTC; the store keeps epoch seconds)."""
    if epoch is None:
        return "–"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


__all__ = ["NOT_SCREENED_LABELS", "STATUS_ORDER", "CoordinatorData", "MemoryData", "StoreData", "as_data", "bare_id",
           "blocking", "criteria_map", "criterion_rows", "evidence_link", "is_resource_id", "not_screened_of",
           "not_screened_summary", "queue", "screened_only", "screening_view", "timeline", "updated_text"]
