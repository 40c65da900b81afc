"""The ICH E6 subject screening log (issue #17 item 5): everyone screened for a trial, and why each screen failure
failed, as CSV — built from the local state store (saved screenings and the study team's actions).

One row per screened patient of the trial (its latest saved screening), in screening-number order::

    screening_number   S00001 … — the store's pseudonym of the patient (``ScreeningNumbers``): assigned on the
                       patient's first saved screening, 1, 2, 3 … in that order, kept for ever; never derived
                       from the patient id
    first_screened     the date (UTC) of the patient's first saved screening
    age, sex           completed years on the latest screening's as-of date, administrative sex (empty: unknown)
    <criterion id> …   one column per criterion of the trial, in the trial file's order: met | not-met |
                       unknown (exc-investigator: the investigator's judgement when one is in effect)
    prescreen_status   the automated pre-screen status (candidate | potential-candidate | ineligible)
    status             the ResearchSubject status in effect: the study team's (screening, eligible,
                       ineligible, not-registered) when a status-setting action is in effect, else the
                       pre-screen status
    decision           the study team's status-setting action in effect: consented | eligible | screen-failure
                       (empty: none)
    reason             why the screen failed: the study team's screen-failure reason (a criterion id of the
                       trial, declined, lost-to-contact or other; the note itself is never exported: free text
                       may name people), else, when the pre-screen found the patient ineligible, the criteria
                       that made it so (``;``-separated ids, e.g. ``inc-age;exc-hiv``)
    enrolled           yes when the decision in effect is consented or eligible (the patient consented, or the
                       investigator confirmed eligibility: status screening or eligible), else no
    changed_since_review  yes when the verdicts changed since the latest action in effect was taken

``--from`` / ``--to`` select patients by the date first screened (both inclusive). A screening saved before
screenings named their trial (store migration 4) belongs to no trial and is not listed. The log holds no patient
id, name or other identifier; the subject identification list (``identification_list_csv``: screening number →
patient id) is a separate file, kept apart by the site. Every cell that a spreadsheet would read as a formula
(starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

from bridge.decisions import INVESTIGATOR_CRITERION, ActionRecord, Decision, decision, verdicts_digest
from bridge.state.screenings import ScreeningNumbers, ScreeningRecord
from bridge.trial import Trial

ENROLLING = frozenset({"consented", "eligible"})  # the decisions that make a patient "enrolled" in the log
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class LogState(ScreeningNumbers, Protocol):
    """What the screening log reads: the saved screenings, their numbers and the study team's actions."""

    def screenings(self) -> list[ScreeningRecord]: ...

    def all_actions(self, trial: str, since: float | None = None, until: float | None = None
                    ) -> list[ActionRecord]: ...


@dataclass(frozen=True)
class LogRow:
    """One screened patient, as the log shows it (``patient_id`` only for the identification list)."""

    number: int
    patient_id: str
    record: ScreeningRecord
    decision: Decision


def screening_number(number: int) -> str:
    return f"S{number:05d}"


def safe_cell(value: object) -> str:
    """The cell as text, prefixed with ``'`` when a spreadsheet would take it for a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA) else text


def first_screened(record: ScreeningRecord) -> date:
    at = record.first_screened_at if record.first_screened_at is not None else record.updated_at
    return datetime.fromtimestamp(at, UTC).date()


def log_rows(state: LogState, trial: Trial, since: date | None = None, until: date | None = None) -> list[LogRow]:
    """The screened patients of ``trial`` first screened between ``since`` and ``until`` (inclusive), each with
    its screening number and the decision its actions add up to, in screening-number order. A screening the
    store has no number for (it cannot be: the store numbers every saved screening) is left out rather than
    shown without one."""
    numbers = state.screening_numbers()
    by_patient: dict[str, list[ActionRecord]] = {}
    for a in state.all_actions(trial.id):
        by_patient.setdefault(a.patient_id, []).append(a)
    rows = []
    for rec in state.screenings():
        day = first_screened(rec)
        if rec.trial != trial.id or rec.patient_id not in numbers:
            continue
        if (since is not None and day < since) or (until is not None and day > until):
            continue
        rows.append(LogRow(numbers[rec.patient_id], rec.patient_id, rec, decision(by_patient.get(rec.patient_id, ()))))
    return sorted(rows, key=lambda r: r.number)


def effective_results(record: ScreeningRecord, d: Decision) -> dict[str, str]:
    """Each criterion's result, ``exc-investigator`` the investigator's judgement when one is in effect."""
    results = {str(v.get("criterion")): str(v.get("result")) for v in record.verdicts}
    if d.judgement is not None and d.judgement.value:
        results[INVESTIGATOR_CRITERION] = d.judgement.value
    return results


def failure_reason(row: LogRow, trial: Trial) -> str:
    """Why the screen failed: the team's screen-failure reason, else the criteria that make the patient
    ineligible (``;``-separated, in the trial's order; the investigator's ``met`` judgement of exc-investigator
    counts, as it does on the ResearchSubject), else empty. Consented or confirmed eligible: empty."""
    d, rec = row.decision, row.record
    if d.failure_reason is not None:
        return d.failure_reason
    if d.status is not None:  # consented or confirmed eligible: not a screen failure
        return ""
    results = effective_results(rec, d)
    judged_out = d.judgement is not None and d.judgement.value == "met"  # the investigator's exclusion counts
    blocking = [c for c in trial.criterion_ids if c in results and (
        trial.blocking(c, results[c]) or (c == INVESTIGATOR_CRITERION and judged_out))]
    return ";".join(blocking)


def screen_failed(row: LogRow, trial: Trial) -> bool:
    """A screen failure: the status in effect is ineligible or not-registered."""
    return (row.decision.status or row.record.status) in ("ineligible", "not-registered") \
        or bool(failure_reason(row, trial))


def header(trial: Trial) -> list[str]:
    return ["screening_number", "first_screened", "age", "sex", *trial.criterion_ids, "prescreen_status", "status",
            "decision", "reason", "enrolled", "changed_since_review"]


def _cells(row: LogRow, trial: Trial) -> list[object]:
    d, rec = row.decision, row.record
    results = effective_results(rec, d)
    kind = d.status_action.kind if d.status_action is not None else ""
    return [screening_number(row.number), first_screened(rec).isoformat(), rec.age, rec.sex,
            *(results.get(c, "") for c in trial.criterion_ids), rec.status, d.status or rec.status, kind,
            failure_reason(row, trial), "yes" if kind in ENROLLING else "no",
            "yes" if d.changed_since_review(verdicts_digest(rec.verdicts)) else "no"]


def _csv(head: list[str], rows: Iterable[Iterable[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in head])
    writer.writerows([safe_cell(c) for c in r] for r in rows)
    return out.getvalue()


def screening_log_csv(state: LogState, trial: Trial, since: date | None = None, until: date | None = None) -> str:
    """The screening log of ``trial`` as CSV text (RFC 4180, CRLF line ends): a header and one row per patient
    first screened between ``since`` and ``until`` (inclusive; None: unbounded). No patient id or name."""
    return _csv(header(trial), (_cells(r, trial) for r in log_rows(state, trial, since, until)))


def identification_list_csv(state: LogState, trial: Trial, since: date | None = None,
                            until: date | None = None) -> str:
    """The subject identification list: screening number → patient id, for the same patients as the log. It
    identifies patients: keep it apart from the log, at the site."""
    return _csv(["screening_number", "patient_id"],
                ([screening_number(r.number), r.patient_id] for r in log_rows(state, trial, since, until)))


def summary(rows: Iterable[LogRow], trial: Trial) -> Mapping[str, int]:
    """Counts for the command's one-line summary: screened, enrolled, screen failures (the team's and the
    pre-screen's ineligible)."""
    listed = list(rows)
    return {"screened": len(listed),
            "enrolled": sum(1 for r in listed if r.decision.status_action is not None
                            and r.decision.status_action.kind in ENROLLING),
            "screen failures": sum(1 for r in listed if screen_failed(r, trial))}


__all__ = ["ENROLLING", "LogRow", "LogState", "effective_results", "failure_reason", "first_screened", "header",
           "identification_list_csv", "log_rows", "safe_cell", "screen_failed", "screening_log_csv",
           "screening_number", "summary"]
