"""``UiSessions`` on PostgreSQL: ``ui_sessions`` (by id hash) and ``login_failures`` (by client), shared by every
replica, so a session opened on one is valid on all and the sign-in throttle counts across them."""

from __future__ import annotations

from bridge.state.postgres import PostgresBackend
from bridge.state.rows import session_from_row
from bridge.state.sessions import LoginFailures, UiSession

_OPEN = """INSERT INTO ui_sessions(id_hash, user_name, role, csrf, created_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id_hash) DO UPDATE SET user_name = excluded.user_name, role = excluded.role, csrf = excluded.csrf,
    created_at = excluded.created_at, expires_at = excluded.expires_at"""

_FAILED = """INSERT INTO login_failures AS f(client, failures, last_at) VALUES (%s, 1, %s)
ON CONFLICT (client) DO UPDATE SET failures = f.failures + 1, last_at = excluded.last_at
RETURNING failures, last_at"""


class PostgresUiSessions(PostgresBackend):
    """``UiSessions`` over a ``PostgresDatabase``."""

    def open_session(self, id_hash: str, session: UiSession) -> None:
        with self._db.write("open session") as cur:
            cur.execute("DELETE FROM ui_sessions WHERE expires_at < %s", (session.created_at,))
            cur.execute(_OPEN, (id_hash, session.user, session.role, session.csrf, session.created_at,
                                session.expires_at))

    def find_session(self, id_hash: str, now: float) -> UiSession | None:
        with self._db.read("find session") as cur:
            row = cur.execute("SELECT * FROM ui_sessions WHERE id_hash = %s AND expires_at >= %s "
                              "AND created_at <= %s", (id_hash, now, now + 60)).fetchone()  # a minute of skew
        return session_from_row(row) if row else None

    def close_session(self, id_hash: str) -> None:
        with self._db.write("close session") as cur:
            cur.execute("DELETE FROM ui_sessions WHERE id_hash = %s", (id_hash,))

    def login_failures(self, client: str) -> LoginFailures | None:
        with self._db.read("read sign-in failures") as cur:
            row = cur.execute("SELECT failures, last_at FROM login_failures WHERE client = %s", (client,)).fetchone()
        return LoginFailures(row["failures"], row["last_at"]) if row else None

    def record_login_failure(self, client: str, at: float, forget_before: float) -> LoginFailures:
        with self._db.write("record sign-in failure") as cur:
            cur.execute("DELETE FROM login_failures WHERE last_at < %s", (forget_before,))
            row = cur.execute(_FAILED, (client, at)).fetchone()
        assert row is not None  # noqa: S101 - INSERT … RETURNING always returns the row
        return LoginFailures(row["failures"], row["last_at"])

    def clear_login_failures(self, client: str) -> None:
        with self._db.write("clear sign-in failures") as cur:
            cur.execute("DELETE FROM login_failures WHERE client = %s", (client,))


__all__ = ["PostgresUiSessions"]
