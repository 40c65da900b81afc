"""``PostgresState``: every state Protocol on one PostgreSQL database — what several replicas share (``db_url``).

Each concern's implementation (``postgres_inbox``, ``postgres_subscriptions``, ``postgres_published``,
``postgres_screenings``, ``postgres_trials``, ``postgres_actions``, ``postgres_sessions``) shares the one
``PostgresDatabase`` and its pool. ``leader(name)`` elects one replica for periodic work (see ``State.leader``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from bridge.state.outbox import DEFAULT_LEASE_SECONDS
from bridge.state.postgres import PostgresDatabase
from bridge.state.postgres_actions import PostgresActions
from bridge.state.postgres_inbox import PostgresInbox
from bridge.state.postgres_outbox import PostgresOutbox
from bridge.state.postgres_published import PostgresPublishedIndex
from bridge.state.postgres_screenings import PostgresScreenings
from bridge.state.postgres_sessions import PostgresUiSessions
from bridge.state.postgres_subscriptions import PostgresSubscriptions
from bridge.state.postgres_trials import PostgresTrialVersions

if TYPE_CHECKING:
    from bridge.state import State


class PostgresState(PostgresInbox, PostgresSubscriptions, PostgresPublishedIndex, PostgresScreenings,
                    PostgresTrialVersions, PostgresActions, PostgresUiSessions):
    """The shared state: one PostgreSQL database (``postgresql://`` URL), a pool of connections.

    ``pool_size``: at most this many connections for the store's own work (the service's threads and the
    HTTP routes share them); leadership locks hold connections of their own."""

    def __init__(self, url: str, *, pool_size: int = 10, timeout: float = 5.0,
                 connect_timeout: float = 10.0) -> None:
        super().__init__(PostgresDatabase(url, min_size=1, max_size=pool_size, timeout=timeout,
                                          connect_timeout=connect_timeout))

    def __repr__(self) -> str:
        return f"PostgresState({self._db.where})"

    @property
    def path(self) -> str:
        """Where the state is, for messages: database and host, never the URL's password."""
        return self._db.where

    def schema_versions(self) -> list[int]:
        """The migrations applied to this database (``schema_migrations``)."""
        return self._db.applied()

    def leader(self, name: str) -> AbstractContextManager[bool]:
        return self._db.leader(name)

    def registry_outbox(self, clock: Callable[[], float] = time.time,
                        lease_seconds: float = DEFAULT_LEASE_SECONDS) -> PostgresOutbox:
        """The registry outbox in this same database (closing it leaves the database open)."""
        return PostgresOutbox(self._db, clock, lease_seconds)

    def close(self) -> None:
        self._db.close()


def _conforms(state: PostgresState) -> State:
    """mypy checks here that ``PostgresState`` implements every Protocol of ``State``."""
    return state


__all__ = ["PostgresState"]
