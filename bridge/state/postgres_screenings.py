"""``Screenings`` on PostgreSQL: ``screenings`` and ``not_screened``, each write keeping a patient in at most one,
and ``screening_numbers``: the next number (1, 2, 3 …, never reused) is taken under an advisory transaction
lock, so replicas screening new patients at once neither collide nor skip a number."""

from __future__ import annotations

from collections.abc import Iterable

from bridge.state.postgres import Cursor, PostgresBackend, xact_lock
from bridge.state.rows import dumps, not_screened_from_row, screening_from_row
from bridge.state.screenings import NotScreenedRecord, ScreeningRecord

_SAVE_SCREENING = """
INSERT INTO screenings AS s(patient_id, status, verdicts, as_of, updated_at, trial, ruleset_version,
                            first_screened_at, age, sex)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (patient_id) DO UPDATE SET status = excluded.status, verdicts = excluded.verdicts,
    as_of = excluded.as_of, updated_at = excluded.updated_at, trial = excluded.trial,
    ruleset_version = excluded.ruleset_version,
    first_screened_at = LEAST(s.first_screened_at, excluded.first_screened_at),
    age = excluded.age, sex = excluded.sex
"""

_NUMBER = """
INSERT INTO screening_numbers(number, patient_id, assigned_at)
SELECT COALESCE(MAX(number), 0) + 1, %s, %s FROM screening_numbers
"""

_MARK_NOT_SCREENED = """
INSERT INTO not_screened(patient_id, reason, as_of, updated_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (patient_id) DO UPDATE SET reason = excluded.reason, as_of = excluded.as_of,
    updated_at = excluded.updated_at
"""


def _number(cur: Cursor, patient_id: str, at: float) -> None:
    """The patient's screening number, assigned the first time (the check before the lock keeps the common
    case — a patient screened before — free of it)."""
    if cur.execute("SELECT 1 FROM screening_numbers WHERE patient_id = %s", (patient_id,)).fetchone():
        return
    xact_lock(cur, "screening-numbers")
    if not cur.execute("SELECT 1 FROM screening_numbers WHERE patient_id = %s", (patient_id,)).fetchone():
        cur.execute(_NUMBER, (patient_id, at))


def _save_screening(cur: Cursor, record: ScreeningRecord) -> None:
    first = record.first_screened_at if record.first_screened_at is not None else record.updated_at
    cur.execute(_SAVE_SCREENING, (record.patient_id, record.status, dumps(record.verdicts), record.as_of,
                                  record.updated_at, record.trial, record.ruleset_version, first, record.age,
                                  record.sex))
    _number(cur, record.patient_id, first)
    cur.execute("DELETE FROM not_screened WHERE patient_id = %s", (record.patient_id,))


def _mark_not_screened(cur: Cursor, record: NotScreenedRecord) -> bool:
    cur.execute(_MARK_NOT_SCREENED, (record.patient_id, record.reason, record.as_of, record.updated_at))
    cur.execute("DELETE FROM screenings WHERE patient_id = %s", (record.patient_id,))
    return cur.rowcount > 0


class PostgresScreenings(PostgresBackend):
    """``Screenings`` over a ``PostgresDatabase``."""

    def save_screening(self, record: ScreeningRecord) -> None:
        with self._db.write("save screening") as cur:
            _save_screening(cur, record)

    def mark_not_screened(self, record: NotScreenedRecord) -> bool:
        with self._db.write("record not screened") as cur:
            return _mark_not_screened(cur, record)

    def record_prescreen(self, screenings: Iterable[ScreeningRecord],
                         not_screened: Iterable[NotScreenedRecord] = ()) -> None:
        with self._db.write("record pre-screen") as cur:
            for record in screenings:
                _save_screening(cur, record)
            for ns in not_screened:
                _mark_not_screened(cur, ns)

    def screening(self, patient_id: str) -> ScreeningRecord | None:
        with self._db.read("read screening") as cur:
            row = cur.execute("SELECT * FROM screenings WHERE patient_id = %s", (patient_id,)).fetchone()
        return screening_from_row(row) if row else None

    def screenings(self) -> list[ScreeningRecord]:
        with self._db.read("list screenings") as cur:
            rows = cur.execute('SELECT * FROM screenings ORDER BY patient_id COLLATE "C"').fetchall()
        return [screening_from_row(r) for r in rows]

    def screening_numbers(self) -> dict[str, int]:
        with self._db.read("list screening numbers") as cur:
            return {r["patient_id"]: r["number"]
                    for r in cur.execute("SELECT patient_id, number FROM screening_numbers").fetchall()}

    def not_screened(self) -> list[NotScreenedRecord]:
        with self._db.read("list not screened") as cur:
            rows = cur.execute('SELECT * FROM not_screened ORDER BY patient_id COLLATE "C"').fetchall()
        return [not_screened_from_row(r) for r in rows]


__all__ = ["PostgresScreenings"]
