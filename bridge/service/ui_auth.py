"""Who is signed in to the coordinator page: server-side sessions and the sign-in throttle, over ``UiSessions``.

Both are kept in the state (``bridge.state.sessions``) so that every replica of the service sees the same
sessions and the same failed sign-ins. A store without ``UiSessions`` (a page over in-memory screenings, in
tests and demos) gets ``MemoryUiSessions``: the same behaviour in one process.

- ``Sessions.open`` makes a new random id (256 bits; the cookie value) and a CSRF token for the signed-in user;
  only the SHA-256 of the id is stored. A sign-in always opens a new session (the id is rotated: the caller
  closes the visitor's previous one), valid ``SESSION_SECONDS``.
- ``LoginThrottle``: ``FREE_FAILURES`` failed sign-ins from a client address are free, then the client must wait
  1, 2, 4 … up to ``MAX_WAIT_SECONDS`` seconds after each further failure; a success forgets the client, and a
  client with no failure for ``FORGET_SECONDS`` starts again from zero.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable

from bridge.state.sessions import LoginFailures, UiSession, UiSessions

SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
FREE_FAILURES = 5
MAX_WAIT_SECONDS = 300
FORGET_SECONDS = 24 * 3600
MAX_CLIENTS = 10_000


def id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def same(given: str, expected: str) -> bool:
    """``given == expected`` in constant time (both as UTF-8)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class Sessions:
    """Sessions by id, valid ``max_age`` seconds from sign-in until signed out."""

    def __init__(self, store: UiSessions, clock: Callable[[], float], max_age: float = SESSION_SECONDS) -> None:
        self.store, self.clock, self.max_age = store, clock, max_age

    def open(self, user: str, role: str) -> tuple[str, UiSession]:
        """A new session of ``user``: (the id for the cookie, the session)."""
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        session = UiSession(user, role, secrets.token_urlsafe(32), now, now + self.max_age)
        self.store.open_session(id_hash(session_id), session)
        return session_id, session

    def find(self, session_id: str | None) -> UiSession | None:
        """The live session of a cookie value; None for anything else (malformed, unknown, expired, closed)."""
        if session_id is None or not SESSION_ID.fullmatch(session_id):
            return None
        return self.store.find_session(id_hash(session_id), self.clock())

    def close(self, session_id: str | None) -> None:
        if session_id is not None and SESSION_ID.fullmatch(session_id):
            self.store.close_session(id_hash(session_id))


class LoginThrottle:
    """Failed sign-ins per client (see the module docstring)."""

    def __init__(self, store: UiSessions, clock: Callable[[], float], free: int = FREE_FAILURES,
                 cap: float = MAX_WAIT_SECONDS) -> None:
        self.store, self.clock, self.free, self.cap = store, clock, free, cap

    def wait_after(self, failures: int) -> float:
        extra = failures - self.free
        return 0.0 if extra <= 0 else min(self.cap, 2.0 ** (extra - 1))

    def retry_after(self, client: str) -> int:
        """Seconds the client must still wait before its next try (0: it may try now)."""
        found = self.store.login_failures(client)
        if found is None:
            return 0
        wait = found.last_at + self.wait_after(found.count) - self.clock()
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, client: str) -> None:
        now = self.clock()
        self.store.record_login_failure(client, now, forget_before=now - FORGET_SECONDS)

    def succeeded(self, client: str) -> None:
        self.store.clear_login_failures(client)


class MemoryUiSessions:
    """``UiSessions`` in one process's memory, at most ``limit`` sessions and clients (the oldest go first)."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self.limit = limit
        self._sessions: OrderedDict[str, UiSession] = OrderedDict()
        self._failures: OrderedDict[str, LoginFailures] = OrderedDict()
        self._lock = threading.Lock()

    def open_session(self, id_hash: str, session: UiSession) -> None:
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s.expires_at < session.created_at]:
                del self._sessions[key]
            self._sessions[id_hash] = session
            while len(self._sessions) > self.limit:
                self._sessions.popitem(last=False)

    def find_session(self, id_hash: str, now: float) -> UiSession | None:
        with self._lock:
            found = self._sessions.get(id_hash)
        return found if found is not None and found.created_at <= now + 60 and now <= found.expires_at else None

    def close_session(self, id_hash: str) -> None:
        with self._lock:
            self._sessions.pop(id_hash, None)

    def login_failures(self, client: str) -> LoginFailures | None:
        with self._lock:
            return self._failures.get(client)

    def record_login_failure(self, client: str, at: float, forget_before: float) -> LoginFailures:
        with self._lock:
            before = self._failures.pop(client, None)
            count = before.count + 1 if before is not None and before.last_at >= forget_before else 1
            self._failures[client] = counted = LoginFailures(count, at)
            while len(self._failures) > self.limit:
                self._failures.popitem(last=False)
        return counted

    def clear_login_failures(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def _conforms(memory: MemoryUiSessions) -> UiSessions:
    """mypy checks here that ``MemoryUiSessions`` implements ``UiSessions``."""
    return memory


__all__ = ["FREE_FAILURES", "MAX_WAIT_SECONDS", "SESSION_SECONDS", "LoginThrottle", "MemoryUiSessions", "Sessions",
           "id_hash", "same"]
