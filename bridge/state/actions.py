"""The study team's actions (issue #17): an append-only audit trail, and whether each was written back.

Rows are never updated or deleted, except the write-back columns (``written_back_at`` / ``writeback_error``)
that record whether the action reached the EHR (or the local store). What the actions mean is in
``bridge.decisions``; an undo is a new row. ``record_action`` is idempotent on ``request_key``: a form sent
twice records one action and returns it both times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bridge.decisions import ActionRecord, NewAction


@dataclass(frozen=True)
class WriteBack:
    """Where an action stands with the EHR: written at ``written_back_at`` (epoch seconds), or not yet, with the
    last error (a short class of failure, never a response body)."""

    seq: int
    written_back_at: float | None
    error: str | None
    attempts: int


class Actions(Protocol):
    """The append-only actions of the study team, per trial and patient."""

    def record_action(self, action: NewAction) -> tuple[ActionRecord, bool]:
        """Append ``action`` (True) or, when its ``request_key`` was recorded before, return that one (False)."""
        ...

    def actions(self, trial: str, patient_id: str) -> list[ActionRecord]:
        """The patient's actions in ``seq`` order."""
        ...

    def all_actions(self, trial: str, since: float | None = None, until: float | None = None) -> list[ActionRecord]:
        """Every action of the trial (``since`` <= at < ``until`` when given), in ``seq`` order."""
        ...

    def writeback(self, seq: int) -> WriteBack | None: ...

    def mark_written_back(self, seq: int, at: float) -> None: ...

    def mark_writeback_failed(self, seq: int, error: str) -> None:
        """Count a failed attempt and keep its error class; the action stays pending."""
        ...

    def pending_writebacks(self, limit: int = 100) -> list[ActionRecord]:
        """Actions not yet written back, oldest first (the worker retries them)."""
        ...


__all__ = ["Actions", "NewAction", "WriteBack"]
