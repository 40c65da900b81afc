"""``PublishedIndex`` on SQLite: the ``published`` table (body as JSON text, search columns beside it)."""

from __future__ import annotations

import sqlite3

from bridge.state.published import PublishedRecord, search_columns
from bridge.state.sqlite import SqliteBackend, dumps, loads

_PUT_PUBLISHED = """
INSERT INTO published(key, resource_type, resource_id, fingerprint, version, resource, study, patient, status,
                      updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET resource_type = excluded.resource_type, resource_id = excluded.resource_id,
    fingerprint = excluded.fingerprint, version = excluded.version, resource = excluded.resource,
    study = excluded.study, patient = excluded.patient, status = excluded.status, updated_at = excluded.updated_at
"""


def _published(row: sqlite3.Row) -> PublishedRecord:
    return PublishedRecord(row["key"], row["resource_type"], row["resource_id"], row["fingerprint"],
                           row["version"], loads(row["resource"]), row["updated_at"])


class SqlitePublishedIndex(SqliteBackend):
    """``PublishedIndex`` over a ``SqliteDatabase``."""

    def put_published(self, record: PublishedRecord) -> None:
        study, patient, status = search_columns(record.resource)
        with self._db.write("record published resource") as db:
            db.execute(_PUT_PUBLISHED, (record.key, record.resource_type, record.resource_id, record.fingerprint,
                                        record.version, dumps(record.resource), study, patient, status,
                                        record.updated_at))

    def get_published(self, key: str) -> PublishedRecord | None:
        with self._db.read("read published resource") as db:
            row = db.execute("SELECT * FROM published WHERE key = ?", (key,)).fetchone()
        return _published(row) if row else None

    def find_published(self, resource_type: str, resource_id: str | None = None, study: str | None = None,
                       patient: str | None = None, status: str | None = None) -> list[PublishedRecord]:
        sql, args = "SELECT * FROM published WHERE resource_type = ?", [resource_type]
        for column, value in (("resource_id", resource_id), ("study", study), ("patient", patient),
                              ("status", status)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        with self._db.read("search published resources") as db:
            return [_published(r) for r in db.execute(sql + " ORDER BY key", args).fetchall()]


__all__ = ["SqlitePublishedIndex"]
