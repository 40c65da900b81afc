"""An in-memory ``Actions`` (bridge.state.actions) for the write-back and screening-log tests, and a helper that
records an action the way the coordinator page does (checked, with the current verdicts' digest)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from bridge.decisions import ActionRecord, check_action, decision
from bridge.state.actions import NewAction, WriteBack
from bridge.state.published import PublishedRecord
from bridge.state.screenings import ScreeningRecord
from bridge.state.sqlite_state import SqliteState


class FakeActions:
    """``Actions`` in memory: append-only, idempotent on ``request_key``, with the write-back columns."""

    def __init__(self) -> None:
        self.rows: list[ActionRecord] = []
        self.backs: dict[int, WriteBack] = {}
        self._seq = itertools.count(1)

    def record_action(self, action: NewAction) -> tuple[ActionRecord, bool]:
        for row in self.rows:
            if row.request_key == action.request_key:
                return row, False
        rec = action.stored(next(self._seq))
        self.rows.append(rec)
        self.backs[rec.seq] = WriteBack(rec.seq, None, None, 0)
        return rec, True

    def actions(self, trial: str, patient_id: str) -> list[ActionRecord]:
        return [a for a in self.rows if a.trial == trial and a.patient_id == patient_id]

    def all_actions(self, trial: str, since: float | None = None, until: float | None = None) -> list[ActionRecord]:
        return [a for a in self.rows if a.trial == trial and (since is None or a.at >= since)
                and (until is None or a.at < until)]

    def writeback(self, seq: int) -> WriteBack | None:
        return self.backs.get(seq)

    def mark_written_back(self, seq: int, at: float) -> None:
        wb = self.backs[seq]
        self.backs[seq] = replace(wb, written_back_at=at, error=None, attempts=wb.attempts + 1)

    def mark_writeback_failed(self, seq: int, error: str) -> None:
        wb = self.backs[seq]
        if wb.written_back_at is None:
            self.backs[seq] = replace(wb, error=error, attempts=wb.attempts + 1)

    def pending_writebacks(self, limit: int = 100) -> list[ActionRecord]:
        return [a for a in self.rows if self.backs[a.seq].written_back_at is None][:limit]


class Store:
    """A SQLite state's published index and screenings with ``FakeActions``: a ``DecisionState``."""

    def __init__(self, state: SqliteState, actions: FakeActions) -> None:
        self.state, self.acts = state, actions

    def screening(self, patient_id: str) -> ScreeningRecord | None:
        return self.state.screening(patient_id)

    def get_published(self, key: str) -> PublishedRecord | None:
        return self.state.get_published(key)

    def put_published(self, record: PublishedRecord) -> None:
        self.state.put_published(record)

    def __getattr__(self, name: str) -> Any:  # the actions' methods, else the state's (record_trial, …)
        return getattr(self.acts if hasattr(self.acts, name) else self.state, name)


def act(store: FakeActions, trial: str, patient_id: str, kind: str, *, role: str = "investigator",
        user: str = "dr.inv", digest: str = "d0", at: float = 1_800_000_000.0, note: str | None = None,
        value: str | None = None, reason: str | None = None, criteria: tuple[str, ...] = ()) -> ActionRecord:
    """Record one action as the page would: refused (ActionRefused) when ``check_action`` refuses it."""
    current = decision(store.actions(trial, patient_id))
    check_action(kind, role, note=note, value=value, reason=reason, criteria=criteria, current=current)
    undoes = current.last.seq if kind == "undo" and current.last is not None else None
    key = f"k{len(store.rows) + 1}"
    rec, _ = store.record_action(NewAction(trial, patient_id, kind, user, role, at, key, digest,  # type: ignore[arg-type]
                                           note, value, reason, undoes))
    return rec


__all__ = ["FakeActions", "Store", "act"]
