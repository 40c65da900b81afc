"""``PublishedIndex`` on PostgreSQL: ``published`` (body as JSON text, search columns beside it) and
``published_history`` (every version of each ``Type/id``). Choosing the next version reads the latest one, so
each put holds an advisory transaction lock on its ``Type/id``: two replicas publishing one resource at once
make versions 2 and 3, never two versions 2."""

from __future__ import annotations

from bridge.state.postgres import Cursor, PostgresBackend, xact_lock
from bridge.state.published import PublishedRecord, PublishedVersion, same_content, search_columns
from bridge.state.rows import dumps, loads, published_from_row, version_from_row

_PUT_PUBLISHED = """
INSERT INTO published(key, resource_type, resource_id, fingerprint, version, resource, study, patient, status,
                      updated_at, version_id, last_updated)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key) DO UPDATE SET resource_type = excluded.resource_type, resource_id = excluded.resource_id,
    fingerprint = excluded.fingerprint, version = excluded.version, resource = excluded.resource,
    study = excluded.study, patient = excluded.patient, status = excluded.status, updated_at = excluded.updated_at,
    version_id = excluded.version_id, last_updated = excluded.last_updated
"""
_LATEST_VERSION = """
SELECT version_id, resource, last_updated FROM published_history
WHERE resource_type = %s AND resource_id = %s ORDER BY version_id DESC LIMIT 1
"""


def _next_version(cur: Cursor, record: PublishedRecord) -> tuple[int | None, float]:
    """(version id, last updated) of ``record`` once recorded, adding a history row when its content changed."""
    served = record.served_id
    if served is None:  # nothing /fhir could serve: no version of its own
        return None, record.updated_at
    xact_lock(cur, f"published:{record.resource_type}/{served}")
    latest = cur.execute(_LATEST_VERSION, (record.resource_type, served)).fetchone()
    if latest is not None and same_content(loads(latest["resource"]), record.resource):
        return latest["version_id"], latest["last_updated"]
    version_id = 1 if latest is None else latest["version_id"] + 1
    cur.execute("INSERT INTO published_history(resource_type, resource_id, version_id, key, resource, last_updated) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (record.resource_type, served, version_id, record.key, dumps(record.resource), record.updated_at))
    return version_id, record.updated_at


class PostgresPublishedIndex(PostgresBackend):
    """``PublishedIndex`` over a ``PostgresDatabase``."""

    def put_published(self, record: PublishedRecord) -> None:
        study, patient, status = search_columns(record.resource)
        with self._db.write("record published resource") as cur:
            version_id, last_updated = _next_version(cur, record)
            cur.execute(_PUT_PUBLISHED, (record.key, record.resource_type, record.resource_id, record.fingerprint,
                                         record.version, dumps(record.resource), study, patient, status,
                                         record.updated_at, version_id, last_updated))

    def get_published(self, key: str) -> PublishedRecord | None:
        with self._db.read("read published resource") as cur:
            row = cur.execute("SELECT * FROM published WHERE key = %s", (key,)).fetchone()
        return published_from_row(row) if row else None

    def find_published(self, resource_type: str, resource_id: str | None = None, study: str | None = None,
                       patient: str | None = None, status: str | None = None) -> list[PublishedRecord]:
        with self._db.read("search published resources") as cur:
            rows = cur.execute(
                "SELECT * FROM published WHERE resource_type = %(type)s "
                "AND (%(id)s::text IS NULL OR resource_id = %(id)s) AND (%(study)s::text IS NULL OR study = %(study)s) "
                "AND (%(patient)s::text IS NULL OR patient = %(patient)s) "
                "AND (%(status)s::text IS NULL OR status = %(status)s) ORDER BY key COLLATE \"C\"",
                {"type": resource_type, "id": resource_id, "study": study, "patient": patient, "status": status})
            return [published_from_row(r) for r in rows.fetchall()]

    def published_history(self, resource_type: str, resource_id: str | None = None,
                          since: float | None = None) -> list[PublishedVersion]:
        with self._db.read("read published history") as cur:
            rows = cur.execute(
                "SELECT * FROM published_history WHERE resource_type = %(type)s "
                "AND (%(id)s::text IS NULL OR resource_id = %(id)s) "
                "AND (%(since)s::float8 IS NULL OR last_updated >= %(since)s) "
                "ORDER BY last_updated DESC, resource_id COLLATE \"C\" DESC, version_id DESC",
                {"type": resource_type, "id": resource_id, "since": since})
            return [version_from_row(r) for r in rows.fetchall()]

    def published_version(self, resource_type: str, resource_id: str, version_id: int) -> PublishedVersion | None:
        with self._db.read("read published version") as cur:
            row = cur.execute("SELECT * FROM published_history WHERE resource_type = %s AND resource_id = %s "
                              "AND version_id = %s", (resource_type, resource_id, version_id)).fetchone()
        return version_from_row(row) if row else None


__all__ = ["PostgresPublishedIndex"]
