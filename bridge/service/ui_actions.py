"""The study team's actions on the coordinator page's patient page (issue #17): recording them, and what the
page shows of them.

``TeamDesk.record`` takes one posted action form of a signed-in user: a form whose ``request_key`` was recorded
before gives back that action (a double submission records once); otherwise the action is checked
(``bridge.decisions.check_action``: the role, the note, the reason; an undo must name the action it takes back,
which must still be the last in effect), stamped with the digest of the patient's current verdicts and
appended to the store. Then ``write_back(seq)`` (``bridge.publish.decision.decision_writer``) writes it to the
EHR and marks it written back, or marks the failure (``mark_writeback_failed``) and raises: the action stays
recorded and pending, the worker retries it, and the page says it will be written when the EHR answers.

``TeamDesk.view`` is the patient page's data: the decision in effect, whether the verdicts changed since that
review, the audit trail (who, role, when, what, note, taken back or not, written back or not) and the forms the
user's role may use, each with a fresh request key. Nothing here logs a note, a name or a patient id.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from bridge.decisions import (
    ACTION_KINDS,
    ALLOWED,
    FAILURE_REASONS,
    INVESTIGATOR_CRITERION,
    JUDGEMENTS,
    ActionKind,
    ActionRecord,
    ActionRefused,
    Decision,
    Role,
    check_action,
    decision,
    verdicts_digest,
)
from bridge.service.logs import event
from bridge.state.actions import Actions, NewAction
from bridge.trial import Trial

log = logging.getLogger("bridge.service")
REQUEST_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
FORM_KINDS: tuple[ActionKind, ...] = tuple(k for k in ACTION_KINDS if k != "undo")
KIND_LABELS = {"judgement": "investigator's judgement", "reviewed": "reviewed", "contacted": "contacted",
               "consented": "consented", "eligible": "eligibility confirmed", "screen-failure": "screen failure",
               "undo": "undo"}
REASON_LABELS = {"declined": "declined", "lost-to-contact": "lost to contact", "other": "other"}
WriteBackCall = Callable[[int], None]


class ActionConflict(ActionRefused):
    """The form no longer fits the record (HTTP 409): its request key was used for another patient or user, or
    the undo names an action that is no longer the last in effect."""


@dataclass(frozen=True)
class Recorded:
    """What ``record`` did: the stored action, whether it is new (False: a resubmitted form) and whether it is
    still to be written back (the EHR did not answer)."""

    action: ActionRecord
    added: bool
    pending: bool


def current_digest(screening: Mapping[str, Any]) -> str:
    """The verdicts digest of a page screening (``{"criteria": {id: {"result", ...}}}``)."""
    criteria = screening.get("criteria") or {}
    return verdicts_digest({"criterion": cid, "result": v.get("result")} for cid, v in criteria.items())


def _text(form: Mapping[str, str], name: str) -> str | None:
    value = (form.get(name) or "").strip()
    return value or None


class TeamDesk:
    """The actions of one trial's study team over an ``Actions`` store."""

    def __init__(self, actions: Actions, trial: Trial, clock: Callable[[], float],
                 write_back: WriteBackCall | None = None) -> None:
        self.actions, self.trial, self.clock, self.write_back = actions, trial, clock, write_back

    # ------------------------------------------------------------------ recording
    def record(self, patient_id: str, screening: Mapping[str, Any], user: str, role: str,
               form: Mapping[str, str]) -> Recorded:
        """Record the action of ``form`` (see the module docstring); ``ActionRefused`` when it may not be."""
        key = form.get("request_key") or ""
        if not REQUEST_KEY.fullmatch(key):
            raise ActionRefused("request_key: missing or malformed (reload the page)")
        history = self.actions.actions(self.trial.id, patient_id)
        earlier = next((a for a in history if a.request_key == key), None)
        if earlier is not None:
            return self._resubmitted(earlier, patient_id, user)
        new = self._checked(patient_id, screening, user, role, form, decision(history), key)
        stored, added = self.actions.record_action(new)
        if not added:
            return self._resubmitted(stored, patient_id, user)
        return Recorded(stored, True, not self._write_back(stored))

    def _resubmitted(self, earlier: ActionRecord, patient_id: str, user: str) -> Recorded:
        if earlier.patient_id != patient_id or earlier.user != user or earlier.trial != self.trial.id:
            raise ActionConflict("request_key: already used by another form (reload the page)")
        wb = self.actions.writeback(earlier.seq)
        return Recorded(earlier, False, wb is not None and wb.written_back_at is None)

    def _checked(self, patient_id: str, screening: Mapping[str, Any], user: str, role: str,
                 form: Mapping[str, str], current: Decision, key: str) -> NewAction:
        kind, note = form.get("kind") or "", _text(form, "note")
        value = _text(form, "value") if kind == "judgement" else None
        reason = _text(form, "reason") if kind == "screen-failure" else None
        check_action(kind, role, note=note, value=value, reason=reason, criteria=self.trial.criterion_ids,
                     current=current)
        undoes = None
        if kind == "undo":
            undoes = current.last.seq if current.last else None
            if form.get("undoes") != str(undoes):
                raise ActionConflict("undoes: the last action changed since the page was shown (reload the page)")
        return NewAction(self.trial.id, patient_id, cast(ActionKind, kind), user, cast(Role, role), self.clock(),
                         key, current_digest(screening), note, value, reason, undoes)

    def _write_back(self, action: ActionRecord) -> bool:
        """Whether the action reached the EHR now (no write-back configured: it stays pending)."""
        if self.write_back is None:
            return False
        try:
            self.write_back(action.seq)
        except Exception as exc:  # noqa: BLE001 - recorded and pending; the writer has marked the failure
            event(log, "ui.writeback-pending", logging.WARNING, kind=action.kind, error=type(exc).__name__)
            return False
        wb = self.actions.writeback(action.seq)
        return wb is not None and wb.written_back_at is not None

    # ------------------------------------------------------------------ the page
    def statuses(self) -> dict[str, str]:
        """Each patient's status set by the team (patients with none are left out), for the queue."""
        by_patient: dict[str, list[ActionRecord]] = {}
        for a in self.actions.all_actions(self.trial.id):
            by_patient.setdefault(a.patient_id, []).append(a)
        found = {pid: decision(actions).status for pid, actions in by_patient.items()}
        return {pid: status for pid, status in found.items() if status}

    def view(self, patient_id: str, screening: Mapping[str, Any], role: str | None) -> dict[str, Any]:
        """The patient page's decision, audit trail and forms for a user of ``role`` (None: read only)."""
        history = self.actions.actions(self.trial.id, patient_id)
        d = decision(history)
        trail = self._trail(history, d)
        return {"decision": d, "judgement": d.judgement, "status_action": d.status_action,
                "changed": d.changed_since_review(current_digest(screening)), "trail": trail,
                "pending": any(row["pending"] for row in trail), "forms": self._forms(role, d),
                "undo": self._undo(role, d), "reasons": self.reasons(), "judgements": JUDGEMENTS,
                "investigator_criterion": INVESTIGATOR_CRITERION}

    def reasons(self) -> list[tuple[str, str]]:
        """(value, label) of every screen-failure reason: each criterion of the trial, then the others."""
        criteria = [(cid, f"{cid}: {self.trial.label(cid)}") for cid in self.trial.criterion_ids]
        return criteria + [(r, REASON_LABELS[r]) for r in FAILURE_REASONS]

    def _trail(self, history: Iterable[ActionRecord], d: Decision) -> list[dict[str, Any]]:
        in_effect = {a.seq for a in d.in_effect}
        rows = []
        for a in history:
            wb = self.actions.writeback(a.seq)
            rows.append({"seq": a.seq, "at": _when(a.at), "user": a.user, "role": a.role, "kind": a.kind,
                         "what": _what(a), "note": a.note or "",
                         "taken_back": a.kind != "undo" and a.seq not in in_effect,
                         "pending": wb is not None and wb.written_back_at is None})
        return rows

    @staticmethod
    def _forms(role: str | None, d: Decision) -> list[dict[str, str]]:
        if role is None:
            return []
        return [{"kind": k, "label": KIND_LABELS[k], "key": secrets.token_urlsafe(16)}
                for k in FORM_KINDS if role in ALLOWED[k]]

    @staticmethod
    def _undo(role: str | None, d: Decision) -> dict[str, Any] | None:
        last = d.last
        if role is None or last is None or role not in ALLOWED[last.kind]:
            return None
        return {"seq": last.seq, "what": _what(last), "key": secrets.token_urlsafe(16)}


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _what(a: ActionRecord) -> str:
    label = KIND_LABELS.get(a.kind, a.kind)
    if a.kind == "judgement":
        return f"{label}: {INVESTIGATOR_CRITERION} {a.value}"
    if a.kind == "screen-failure":
        return f"{label}: {REASON_LABELS.get(a.reason or '', a.reason)}"
    if a.kind == "undo":
        return f"{label} of #{a.undoes}"
    return label


__all__ = ["REQUEST_KEY", "ActionConflict", "Recorded", "TeamDesk", "current_digest"]
