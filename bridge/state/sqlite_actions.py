"""``Actions`` on SQLite: the ``actions`` table of migration 9, append-only.

The only statements here are ``INSERT`` (a new action; a repeated ``request_key`` inserts nothing) and
``UPDATE``s that set the write-back columns (``written_back_at``, ``writeback_error``, ``writeback_attempts``);
no row is ever deleted (``tests/unit/test_actions_store.py`` watches every statement).
"""

from __future__ import annotations

from bridge.decisions import ActionRecord
from bridge.state.actions import NewAction, WriteBack
from bridge.state.rows import action_from_row
from bridge.state.sqlite import SqliteBackend

_INSERT = """INSERT INTO actions(trial, patient_id, kind, user_name, role, at, request_key, verdicts_digest, note,
                    value, reason, undoes)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(request_key) DO NOTHING"""


class SqliteActions(SqliteBackend):
    """``Actions`` over a ``SqliteDatabase``."""

    def record_action(self, action: NewAction) -> tuple[ActionRecord, bool]:
        a = action
        with self._db.write("record action") as db:
            added = db.execute(_INSERT, (a.trial, a.patient_id, a.kind, a.user, a.role, a.at, a.request_key,
                                         a.verdicts_digest, a.note, a.value, a.reason, a.undoes)).rowcount > 0
            row = db.execute("SELECT * FROM actions WHERE request_key = ?", (a.request_key,)).fetchone()
        return action_from_row(row), added

    def actions(self, trial: str, patient_id: str) -> list[ActionRecord]:
        with self._db.read("list a patient's actions") as db:
            rows = db.execute("SELECT * FROM actions WHERE trial = ? AND patient_id = ? ORDER BY seq",
                              (trial, patient_id)).fetchall()
        return [action_from_row(r) for r in rows]

    def all_actions(self, trial: str, since: float | None = None, until: float | None = None) -> list[ActionRecord]:
        sql, params = "SELECT * FROM actions WHERE trial = ?", list[str | float]([trial])
        if since is not None:
            sql, params = sql + " AND at >= ?", [*params, since]
        if until is not None:
            sql, params = sql + " AND at < ?", [*params, until]
        with self._db.read("list actions") as db:
            return [action_from_row(r) for r in db.execute(sql + " ORDER BY seq", params).fetchall()]

    def writeback(self, seq: int) -> WriteBack | None:
        with self._db.read("read write-back") as db:
            row = db.execute("SELECT seq, written_back_at, writeback_error, writeback_attempts FROM actions "
                             "WHERE seq = ?", (seq,)).fetchone()
        return WriteBack(row[0], row[1], row[2], row[3]) if row else None

    def mark_written_back(self, seq: int, at: float) -> None:
        with self._db.write("mark written back") as db:
            db.execute("UPDATE actions SET written_back_at = ?, writeback_error = NULL, "
                       "writeback_attempts = writeback_attempts + 1 WHERE seq = ?", (at, seq))

    def mark_writeback_failed(self, seq: int, error: str) -> None:
        with self._db.write("mark write-back failed") as db:
            db.execute("UPDATE actions SET writeback_error = ?, writeback_attempts = writeback_attempts + 1 "
                       "WHERE seq = ? AND written_back_at IS NULL", (error[:200], seq))

    def pending_writebacks(self, limit: int = 100) -> list[ActionRecord]:
        with self._db.read("list pending write-backs") as db:
            rows = db.execute("SELECT * FROM actions WHERE written_back_at IS NULL ORDER BY seq LIMIT ?",
                              (limit,)).fetchall()
        return [action_from_row(r) for r in rows]


__all__ = ["SqliteActions"]
