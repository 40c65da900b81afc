"""``PublishedIndex`` on SQLite: the ``published`` table (body as JSON text, search columns beside it) and
``published_history`` (every version of each ``Type/id``)."""

from __future__ import annotations

import sqlite3

from bridge.state.published import PublishedRecord, PublishedVersion, same_content, search_columns
from bridge.state.rows import dumps, loads, published_from_row, version_from_row
from bridge.state.sqlite import SqliteBackend

_PUT_PUBLISHED = """
INSERT INTO published(key, resource_type, resource_id, fingerprint, version, resource, study, patient, status,
                      updated_at, version_id, last_updated)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET resource_type = excluded.resource_type, resource_id = excluded.resource_id,
    fingerprint = excluded.fingerprint, version = excluded.version, resource = excluded.resource,
    study = excluded.study, patient = excluded.patient, status = excluded.status, updated_at = excluded.updated_at,
    version_id = excluded.version_id, last_updated = excluded.last_updated
"""
_LATEST_VERSION = """
SELECT version_id, resource, last_updated FROM published_history
WHERE resource_type = ? AND resource_id = ? ORDER BY version_id DESC LIMIT 1
"""


def _next_version(db: sqlite3.Connection, record: PublishedRecord) -> tuple[int | None, float]:
    """(version id, last updated) of ``record`` once recorded, adding a history row when its content changed."""
    served = record.served_id
    if served is None:  # nothing /fhir could serve: no version of its own
        return None, record.updated_at
    latest = db.execute(_LATEST_VERSION, (record.resource_type, served)).fetchone()
    if latest is not None and same_content(loads(latest["resource"]), record.resource):
        return latest["version_id"], latest["last_updated"]
    version_id = 1 if latest is None else latest["version_id"] + 1
    db.execute("INSERT INTO published_history VALUES (?, ?, ?, ?, ?, ?)",
               (record.resource_type, served, version_id, record.key, dumps(record.resource), record.updated_at))
    return version_id, record.updated_at


class SqlitePublishedIndex(SqliteBackend):
    """``PublishedIndex`` over a ``SqliteDatabase``."""

    def put_published(self, record: PublishedRecord) -> None:
        study, patient, status = search_columns(record.resource)
        with self._db.write("record published resource") as db:
            version_id, last_updated = _next_version(db, record)
            db.execute(_PUT_PUBLISHED, (record.key, record.resource_type, record.resource_id, record.fingerprint,
                                        record.version, dumps(record.resource), study, patient, status,
                                        record.updated_at, version_id, last_updated))

    def get_published(self, key: str) -> PublishedRecord | None:
        with self._db.read("read published resource") as db:
            row = db.execute("SELECT * FROM published WHERE key = ?", (key,)).fetchone()
        return published_from_row(row) if row else None

    def find_published(self, resource_type: str, resource_id: str | None = None, study: str | None = None,
                       patient: str | None = None, status: str | None = None) -> list[PublishedRecord]:
        sql, args = "SELECT * FROM published WHERE resource_type = ?", [resource_type]
        for column, value in (("resource_id", resource_id), ("study", study), ("patient", patient),
                              ("status", status)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        with self._db.read("search published resources") as db:
            return [published_from_row(r) for r in db.execute(sql + " ORDER BY key", args).fetchall()]

    def published_history(self, resource_type: str, resource_id: str | None = None,
                          since: float | None = None) -> list[PublishedVersion]:
        sql = "SELECT * FROM published_history WHERE resource_type = ?"
        args: list[object] = [resource_type]
        for condition, value in (("resource_id = ?", resource_id), ("last_updated >= ?", since)):
            if value is not None:
                sql += f" AND {condition}"
                args.append(value)
        order = " ORDER BY last_updated DESC, resource_id DESC, version_id DESC"
        with self._db.read("read published history") as db:
            return [version_from_row(r) for r in db.execute(sql + order, args).fetchall()]

    def published_version(self, resource_type: str, resource_id: str, version_id: int) -> PublishedVersion | None:
        with self._db.read("read published version") as db:
            row = db.execute("SELECT * FROM published_history WHERE resource_type = ? AND resource_id = ? "
                             "AND version_id = ?", (resource_type, resource_id, version_id)).fetchone()
        return version_from_row(row) if row else None


__all__ = ["SqlitePublishedIndex"]
