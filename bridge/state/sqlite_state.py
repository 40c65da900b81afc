"""``SqliteState``: every state Protocol on one SQLite file — the embedded default (``db_path``).

The service, ``bridge watch``, ``bridge subscribe`` and ``bridge prescreen --save`` open the same file; each
concern's implementation (``sqlite_inbox``, ``sqlite_subscriptions``, ``sqlite_published``,
``sqlite_screenings``, ``sqlite_trials``, ``sqlite_actions``, ``sqlite_sessions``) shares the one
``SqliteDatabase``. The registry outbox is an object of its own (``registry_outbox()``): it carries a clock, a
lease and an owner, and its method names (``enqueue``, ``requeue_failed``) mean other things than the inbox's.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from bridge.errors import StoreError
from bridge.state.leader import file_leader
from bridge.state.outbox import DEFAULT_LEASE_SECONDS
from bridge.state.sqlite import MEMORY, SqliteDatabase
from bridge.state.sqlite_actions import SqliteActions
from bridge.state.sqlite_inbox import SqliteInbox
from bridge.state.sqlite_outbox import SqliteOutbox
from bridge.state.sqlite_published import SqlitePublishedIndex
from bridge.state.sqlite_screenings import SqliteScreenings
from bridge.state.sqlite_sessions import SqliteUiSessions
from bridge.state.sqlite_subscriptions import SqliteSubscriptions
from bridge.state.sqlite_trials import SqliteTrialVersions

if TYPE_CHECKING:
    from bridge.state import State


class SqliteState(SqliteInbox, SqliteSubscriptions, SqlitePublishedIndex, SqliteScreenings, SqliteTrialVersions,
                  SqliteActions, SqliteUiSessions):
    """The embedded state: one SQLite file in WAL mode, one connection per thread.

    ``path`` must be a file (``:memory:`` would give every thread its own empty database).
    """

    def __init__(self, path: str | os.PathLike[str], busy_timeout: float = 30.0) -> None:
        if str(path) in ("", MEMORY):
            raise StoreError("the state store needs a file path, not an in-memory database")
        super().__init__(SqliteDatabase(path, busy_timeout))

    @property
    def path(self) -> str:
        return self._db.path

    @property
    def busy_timeout(self) -> float:
        return self._db.busy_timeout

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection — for inspection and tests."""
        return self._db.connection()

    def schema_versions(self) -> list[int]:
        """The migrations applied to this file (``schema_migrations``)."""
        return self._db.applied()

    def leader(self, name: str) -> AbstractContextManager[bool]:
        """``flock`` on ``<path>.<name>.lock`` (``bridge.state.leader``): the processes of this host that share
        the file elect one runner of periodic work."""
        return file_leader(self.path, name)

    def registry_outbox(self, clock: Callable[[], float] = time.time,
                        lease_seconds: float = DEFAULT_LEASE_SECONDS) -> SqliteOutbox:
        """The registry outbox in this same database (closing it leaves the database open)."""
        return SqliteOutbox(self._db, clock, lease_seconds)

    def close(self) -> None:
        self._db.close()


def _conforms(state: SqliteState) -> State:
    """mypy checks here that ``SqliteState`` implements every Protocol of ``State``."""
    return state


__all__ = ["SqliteState"]
