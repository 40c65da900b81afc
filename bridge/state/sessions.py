"""The coordinator page's sessions and sign-in throttle (issue #17), shared by every replica of the service.

A session is stored under the SHA-256 of its id (the cookie value is never stored, so a copy of the database
opens no session) with the signed-in user's name and role, its CSRF token and its expiry. Failed sign-ins are
counted per client address; the page (``bridge.service.ui``) turns the count and the time of the last failure
into a wait. Both live in the state so that a visitor signed in on one replica is signed in on all, and a
client throttled by one is throttled by all. Times are epoch seconds passed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class UiSession:
    """One signed-in visitor: who (``user``, ``role``), the CSRF token every form of the session carries, and
    when it was opened and expires."""

    user: str
    role: str
    csrf: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class LoginFailures:
    """A client's failed sign-ins since its last success: how many, and when the last one was."""

    count: int
    last_at: float


class UiSessions(Protocol):
    """Sessions by the SHA-256 (hex) of their id, and failed sign-ins by client address."""

    def open_session(self, id_hash: str, session: UiSession) -> None:
        """Store a new session (and drop every session expired at ``session.created_at``)."""
        ...

    def find_session(self, id_hash: str, now: float) -> UiSession | None:
        """The session stored under ``id_hash`` when it is open at ``now`` (expiry included); None when unknown or
        expired."""
        ...

    def close_session(self, id_hash: str) -> None:
        """Delete the session (signing out); unknown ids are ignored."""
        ...

    def login_failures(self, client: str) -> LoginFailures | None:
        """The client's failures since its last success, None when there are none."""
        ...

    def record_login_failure(self, client: str, at: float, forget_before: float) -> LoginFailures:
        """Count one more failure of ``client`` at ``at`` and return the new count; clients whose last failure
        is older than ``forget_before`` are forgotten (they start from zero)."""
        ...

    def clear_login_failures(self, client: str) -> None:
        """Forget the client's failures (after a successful sign-in)."""
        ...


__all__ = ["LoginFailures", "UiSession", "UiSessions"]
