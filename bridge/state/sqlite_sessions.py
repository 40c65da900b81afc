"""``UiSessions`` on SQLite: ``ui_sessions`` (by id hash) and ``login_failures`` (by client), migration 10."""

from __future__ import annotations

from bridge.state.rows import session_from_row
from bridge.state.sessions import LoginFailures, UiSession
from bridge.state.sqlite import SqliteBackend

_OPEN = """INSERT INTO ui_sessions(id_hash, user_name, role, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT(id_hash) DO UPDATE SET user_name = excluded.user_name, role = excluded.role, csrf = excluded.csrf,
    created_at = excluded.created_at, expires_at = excluded.expires_at"""

_FAILED = """INSERT INTO login_failures(client, failures, last_at) VALUES (?, 1, ?)
ON CONFLICT(client) DO UPDATE SET failures = login_failures.failures + 1, last_at = excluded.last_at"""


class SqliteUiSessions(SqliteBackend):
    """``UiSessions`` over a ``SqliteDatabase``."""

    def open_session(self, id_hash: str, session: UiSession) -> None:
        with self._db.write("open session") as db:
            db.execute("DELETE FROM ui_sessions WHERE expires_at < ?", (session.created_at,))
            db.execute(_OPEN, (id_hash, session.user, session.role, session.csrf, session.created_at,
                               session.expires_at))

    def find_session(self, id_hash: str, now: float) -> UiSession | None:
        with self._db.read("find session") as db:
            row = db.execute("SELECT * FROM ui_sessions WHERE id_hash = ? AND expires_at >= ? AND created_at <= ?",
                             (id_hash, now, now + 60)).fetchone()  # a minute of clock skew between replicas
        return session_from_row(row) if row else None

    def close_session(self, id_hash: str) -> None:
        with self._db.write("close session") as db:
            db.execute("DELETE FROM ui_sessions WHERE id_hash = ?", (id_hash,))

    def login_failures(self, client: str) -> LoginFailures | None:
        with self._db.read("read sign-in failures") as db:
            row = db.execute("SELECT failures, last_at FROM login_failures WHERE client = ?", (client,)).fetchone()
        return LoginFailures(row[0], row[1]) if row else None

    def record_login_failure(self, client: str, at: float, forget_before: float) -> LoginFailures:
        with self._db.write("record sign-in failure") as db:
            db.execute("DELETE FROM login_failures WHERE last_at < ?", (forget_before,))
            db.execute(_FAILED, (client, at))
            row = db.execute("SELECT failures, last_at FROM login_failures WHERE client = ?", (client,)).fetchone()
        return LoginFailures(row[0], row[1])

    def clear_login_failures(self, client: str) -> None:
        with self._db.write("clear sign-in failures") as db:
            db.execute("DELETE FROM login_failures WHERE client = ?", (client,))


__all__ = ["SqliteUiSessions"]
