"""``Actions`` on PostgreSQL: the ``actions`` table, append-only.

As on SQLite, the only statements are ``INSERT`` (a repeated ``request_key`` inserts nothing and the earlier
action is returned) and ``UPDATE``s of the write-back columns; no row is ever deleted.
"""

from __future__ import annotations

from bridge.decisions import ActionRecord
from bridge.state.actions import NewAction, WriteBack
from bridge.state.postgres import PostgresBackend
from bridge.state.rows import action_from_row

_INSERT = """INSERT INTO actions(trial, patient_id, kind, user_name, role, at, request_key, verdicts_digest, note,
                    value, reason, undoes)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (request_key) DO NOTHING"""


class PostgresActions(PostgresBackend):
    """``Actions`` over a ``PostgresDatabase``."""

    def record_action(self, action: NewAction) -> tuple[ActionRecord, bool]:
        a = action
        with self._db.write("record action") as cur:
            cur.execute(_INSERT, (a.trial, a.patient_id, a.kind, a.user, a.role, a.at, a.request_key,
                                  a.verdicts_digest, a.note, a.value, a.reason, a.undoes))
            added = cur.rowcount > 0
            row = cur.execute("SELECT * FROM actions WHERE request_key = %s", (a.request_key,)).fetchone()
        assert row is not None  # noqa: S101 - inserted or already there, in this transaction
        return action_from_row(row), added

    def actions(self, trial: str, patient_id: str) -> list[ActionRecord]:
        with self._db.read("list a patient's actions") as cur:
            rows = cur.execute("SELECT * FROM actions WHERE trial = %s AND patient_id = %s ORDER BY seq",
                               (trial, patient_id)).fetchall()
        return [action_from_row(r) for r in rows]

    def all_actions(self, trial: str, since: float | None = None, until: float | None = None) -> list[ActionRecord]:
        with self._db.read("list actions") as cur:
            rows = cur.execute("SELECT * FROM actions WHERE trial = %(trial)s "
                               "AND (%(since)s::float8 IS NULL OR at >= %(since)s) "
                               "AND (%(until)s::float8 IS NULL OR at < %(until)s) ORDER BY seq",
                               {"trial": trial, "since": since, "until": until}).fetchall()
        return [action_from_row(r) for r in rows]

    def writeback(self, seq: int) -> WriteBack | None:
        with self._db.read("read write-back") as cur:
            row = cur.execute("SELECT seq, written_back_at, writeback_error, writeback_attempts FROM actions "
                              "WHERE seq = %s", (seq,)).fetchone()
        return WriteBack(row["seq"], row["written_back_at"], row["writeback_error"],
                         row["writeback_attempts"]) if row else None

    def mark_written_back(self, seq: int, at: float) -> None:
        with self._db.write("mark written back") as cur:
            cur.execute("UPDATE actions SET written_back_at = %s, writeback_error = NULL, "
                        "writeback_attempts = writeback_attempts + 1 WHERE seq = %s", (at, seq))

    def mark_writeback_failed(self, seq: int, error: str) -> None:
        with self._db.write("mark write-back failed") as cur:
            cur.execute("UPDATE actions SET writeback_error = %s, writeback_attempts = writeback_attempts + 1 "
                        "WHERE seq = %s AND written_back_at IS NULL", (error[:200], seq))

    def pending_writebacks(self, limit: int = 100) -> list[ActionRecord]:
        with self._db.read("list pending write-backs") as cur:
            rows = cur.execute("SELECT * FROM actions WHERE written_back_at IS NULL ORDER BY seq LIMIT %s",
                               (limit,)).fetchall()
        return [action_from_row(r) for r in rows]


__all__ = ["PostgresActions"]
