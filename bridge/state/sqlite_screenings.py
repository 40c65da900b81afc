"""``Screenings`` on SQLite: ``screenings`` and ``not_screened``, each write keeping a patient in at most one."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from bridge.state.rows import dumps, not_screened_from_row, screening_from_row
from bridge.state.screenings import NotScreenedRecord, ScreeningRecord
from bridge.state.sqlite import SqliteBackend

_SAVE_SCREENING = """
INSERT INTO screenings(patient_id, status, verdicts, as_of, updated_at, trial, ruleset_version, first_screened_at,
                       age, sex)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(patient_id) DO UPDATE SET status = excluded.status, verdicts = excluded.verdicts,
    as_of = excluded.as_of, updated_at = excluded.updated_at, trial = excluded.trial,
    ruleset_version = excluded.ruleset_version,
    first_screened_at = MIN(COALESCE(screenings.first_screened_at, excluded.first_screened_at),
                            excluded.first_screened_at),
    age = excluded.age, sex = excluded.sex
"""

# the screening log's number, assigned once (never reused: AUTOINCREMENT), on the patient's first saved screening
_NUMBER = """
INSERT INTO screening_numbers(patient_id, assigned_at) SELECT ?, ?
WHERE NOT EXISTS (SELECT 1 FROM screening_numbers WHERE patient_id = ?)
"""

_MARK_NOT_SCREENED = """
INSERT INTO not_screened(patient_id, reason, as_of, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT(patient_id) DO UPDATE SET reason = excluded.reason, as_of = excluded.as_of,
    updated_at = excluded.updated_at
"""


def _save_screening(db: sqlite3.Connection, record: ScreeningRecord) -> None:
    first = record.first_screened_at if record.first_screened_at is not None else record.updated_at
    db.execute(_SAVE_SCREENING, (record.patient_id, record.status, dumps(record.verdicts), record.as_of,
                                 record.updated_at, record.trial, record.ruleset_version, first, record.age,
                                 record.sex))
    db.execute(_NUMBER, (record.patient_id, first, record.patient_id))
    db.execute("DELETE FROM not_screened WHERE patient_id = ?", (record.patient_id,))


def _mark_not_screened(db: sqlite3.Connection, record: NotScreenedRecord) -> bool:
    db.execute(_MARK_NOT_SCREENED, (record.patient_id, record.reason, record.as_of, record.updated_at))
    return db.execute("DELETE FROM screenings WHERE patient_id = ?", (record.patient_id,)).rowcount > 0


class SqliteScreenings(SqliteBackend):
    """``Screenings`` over a ``SqliteDatabase``."""

    def save_screening(self, record: ScreeningRecord) -> None:
        with self._db.write("save screening") as db:
            _save_screening(db, record)

    def mark_not_screened(self, record: NotScreenedRecord) -> bool:
        with self._db.write("record not screened") as db:
            return _mark_not_screened(db, record)

    def record_prescreen(self, screenings: Iterable[ScreeningRecord],
                         not_screened: Iterable[NotScreenedRecord] = ()) -> None:
        with self._db.write("record pre-screen") as db:
            for record in screenings:
                _save_screening(db, record)
            for ns in not_screened:
                _mark_not_screened(db, ns)

    def screening(self, patient_id: str) -> ScreeningRecord | None:
        with self._db.read("read screening") as db:
            row = db.execute("SELECT * FROM screenings WHERE patient_id = ?", (patient_id,)).fetchone()
        return screening_from_row(row) if row else None

    def screenings(self) -> list[ScreeningRecord]:
        with self._db.read("list screenings") as db:
            rows = db.execute("SELECT * FROM screenings ORDER BY patient_id").fetchall()
        return [screening_from_row(r) for r in rows]

    def screening_numbers(self) -> dict[str, int]:
        with self._db.read("list screening numbers") as db:
            return {r["patient_id"]: r["number"] for r in db.execute("SELECT patient_id, number FROM "
                                                                     "screening_numbers")}

    def not_screened(self) -> list[NotScreenedRecord]:
        with self._db.read("list not screened") as db:
            return [not_screened_from_row(r) for r in db.execute("SELECT * FROM not_screened ORDER BY patient_id")]


__all__ = ["SqliteScreenings"]
