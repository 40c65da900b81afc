"""The study team's decisions on a pre-screened patient (issue #17): what each action means, who may take it,
and the decision state an append-only list of actions adds up to.

Pure functions over plain values; the actions themselves are stored append-only by ``bridge.state.actions``,
written back to the EHR by ``bridge.publish.decision`` and listed in the screening log.

::

    action        who                          note          ResearchSubject.status it sets
    judgement     investigator                 required      (none; records exc-investigator met / not-met)
    reviewed      coordinator, investigator    optional      (none)
    contacted     coordinator, investigator    optional      (none)
    consented     coordinator, investigator    optional      screening
    eligible      investigator                 optional      eligible   (the investigator confirms eligibility)
    screen-failure coordinator, investigator   see reason    ineligible; not-registered when the reason is declined
    undo          coordinator, investigator    optional      (takes back the last action still in effect)

A screen failure names its reason: a criterion id of the trial, ``declined``, ``lost-to-contact`` or ``other``
(then a note saying what is required). An undo is itself an action: it takes back the latest action still in
effect that is not an undo, and is recorded like any other; undoing twice takes back two actions. Only a role
that may take an action may take it back (a coordinator cannot undo the investigator's judgement).

A human decision is never overwritten by an automated re-screen. Every action records the digest of the
verdicts it was taken on (``verdicts_digest``: each criterion's result, evidence and reasons aside); when the
latest screening's digest differs from the one the latest action in effect was taken on, the patient is
*changed since review*: the decision stays, and the page and the ResearchSubject say so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["coordinator", "investigator"]
ROLES: tuple[Role, ...] = ("coordinator", "investigator")

ActionKind = Literal["judgement", "reviewed", "contacted", "consented", "eligible", "screen-failure", "undo"]
ACTION_KINDS: tuple[ActionKind, ...] = ("judgement", "reviewed", "contacted", "consented", "eligible",
                                        "screen-failure", "undo")

INVESTIGATOR_CRITERION = "exc-investigator"  # the criterion only an investigator's judgement decides
JUDGEMENTS = ("met", "not-met")
FAILURE_REASONS = ("declined", "lost-to-contact", "other")  # besides a criterion id of the trial

# who may take each action
ALLOWED: Mapping[ActionKind, frozenset[Role]] = {
    "judgement": frozenset({"investigator"}),
    "reviewed": frozenset(ROLES),
    "contacted": frozenset(ROLES),
    "consented": frozenset(ROLES),
    "eligible": frozenset({"investigator"}),
    "screen-failure": frozenset(ROLES),
    "undo": frozenset(ROLES),
}

MAX_NOTE = 2000  # characters


class ActionRefused(ValueError):
    """An action that cannot be taken: ``forbidden`` (the role may not: HTTP 403) or ``invalid`` (a missing
    note, an unknown reason, nothing to undo: HTTP 400/422). The message names the field, never a value."""

    def __init__(self, message: str, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


@dataclass(frozen=True)
class NewAction:
    """An action as the page takes it, before the store records it. ``request_key`` makes a re-submitted form
    idempotent (the same key gives back the stored action). ``value`` is the judgement (``met`` / ``not-met``)
    of a ``judgement``; ``reason`` the screen failure's reason; ``undoes`` the ``seq`` an undo took back. ``at``
    is epoch seconds."""

    trial: str
    patient_id: str
    kind: ActionKind
    user: str
    role: Role
    at: float
    request_key: str
    verdicts_digest: str
    note: str | None = None
    value: str | None = None
    reason: str | None = None
    undoes: int | None = None

    def stored(self, seq: int) -> ActionRecord:
        """This action as recorded under ``seq``."""
        return ActionRecord(seq=seq, **vars(self))


@dataclass(frozen=True)
class ActionRecord(NewAction):
    """One stored action: a ``NewAction`` and the ``seq`` the store assigned it (increasing)."""

    seq: int = field(kw_only=True)


@dataclass(frozen=True)
class Decision:
    """What a patient's actions add up to.

    ``status``: the ResearchSubject status the team set (None: no status-setting action in effect, the
    automated pre-screen status applies); ``judgement``: the investigator's exc-investigator result (None: not
    judged); ``failure_reason``; ``in_effect``: the actions not taken back, oldest first; ``last``: the latest
    action in effect (what an undo would take back); ``decided_on``: the verdicts digest the latest action in
    effect was taken on."""

    status: str | None = None
    judgement: ActionRecord | None = None
    status_action: ActionRecord | None = None
    in_effect: tuple[ActionRecord, ...] = ()

    @property
    def last(self) -> ActionRecord | None:
        return self.in_effect[-1] if self.in_effect else None

    @property
    def decided_on(self) -> str | None:
        return self.last.verdicts_digest if self.last else None

    @property
    def failure_reason(self) -> str | None:
        a = self.status_action
        return a.reason if a is not None and a.kind == "screen-failure" else None

    @property
    def human(self) -> bool:
        """Whether any action is in effect (a human has looked at this patient)."""
        return bool(self.in_effect)

    def changed_since_review(self, current_digest: str | None) -> bool:
        """The latest screening's verdicts differ from those the latest action in effect was taken on."""
        return self.decided_on is not None and current_digest is not None and current_digest != self.decided_on


def status_of(action: ActionRecord) -> str | None:
    """The ResearchSubject status an action sets, or None."""
    if action.kind == "consented":
        return "screening"
    if action.kind == "eligible":
        return "eligible"
    if action.kind == "screen-failure":
        return "not-registered" if action.reason == "declined" else "ineligible"
    return None


def decision(actions: Iterable[ActionRecord]) -> Decision:
    """Fold a patient's actions (any order; sorted by ``seq``) into its decision."""
    stack: list[ActionRecord] = []
    for a in sorted(actions, key=lambda x: x.seq):
        if a.kind == "undo":
            if stack:
                stack.pop()
            continue
        stack.append(a)
    status_action = next((a for a in reversed(stack) if status_of(a) is not None), None)
    judgement = next((a for a in reversed(stack) if a.kind == "judgement"), None)
    return Decision(status_of(status_action) if status_action else None, judgement, status_action, tuple(stack))


def check_action(kind: str, role: str, *, note: str | None, value: str | None, reason: str | None,
                 criteria: Sequence[str], current: Decision) -> None:
    """Refuse (``ActionRefused``) an action that may not be taken: an unknown kind or role, a role not allowed
    (``forbidden``), a judgement without ``met``/``not-met`` or without a note, a screen failure without a known
    reason (a criterion id of ``criteria``, or one of ``FAILURE_REASONS``) or ``other`` without a note, a note
    over ``MAX_NOTE`` characters, an undo with nothing in effect, an undo of an action the role may not take
    (``forbidden``: a coordinator cannot take back an investigator's judgement or eligibility)."""
    if kind not in ACTION_KINDS:
        raise ActionRefused("action: unknown action")
    if role not in ROLES:
        raise ActionRefused("role: unknown role", forbidden=True)
    if role not in ALLOWED[kind]:
        raise ActionRefused(f"action: the {role} role may not record '{kind}'", forbidden=True)
    text = (note or "").strip()
    if len(text) > MAX_NOTE:
        raise ActionRefused(f"note: at most {MAX_NOTE} characters")
    if kind == "judgement":
        if value not in JUDGEMENTS:
            raise ActionRefused("value: the judgement is 'met' or 'not-met'")
        if not text:
            raise ActionRefused("note: a judgement needs a note")
    if kind == "screen-failure":
        if reason not in FAILURE_REASONS and reason not in criteria:
            raise ActionRefused("reason: a criterion id, 'declined', 'lost-to-contact' or 'other'")
        if reason == "other" and not text:
            raise ActionRefused("note: a screen failure for 'other' reason needs a note saying what")
    if kind == "undo" and current.last is None:
        raise ActionRefused("action: there is nothing to undo")
    if kind == "undo" and current.last is not None and role not in ALLOWED[current.last.kind]:
        raise ActionRefused(f"action: the {role} role may not take back '{current.last.kind}'", forbidden=True)


def verdicts_digest(verdicts: Iterable[Mapping[str, Any]]) -> str:
    """A digest of the verdicts' results (``[{criterion, result, ...}]`` as the screenings store keeps them):
    the same results give the same digest whatever the evidence, reasons or order."""
    pairs = sorted((str(v.get("criterion")), str(v.get("result"))) for v in verdicts)
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()[:16]


__all__ = ["ACTION_KINDS", "ALLOWED", "FAILURE_REASONS", "INVESTIGATOR_CRITERION", "JUDGEMENTS", "MAX_NOTE",
           "ROLES", "ActionKind", "ActionRecord", "ActionRefused", "Decision", "NewAction", "Role", "check_action",
           "decision", "status_of", "verdicts_digest"]
