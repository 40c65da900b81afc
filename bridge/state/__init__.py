"""The bridge's durable state, behind one narrow Protocol per concern.

::

    concern                        Protocol (module)                       SQLite / PostgreSQL implementation
    inbox and re-screen queue      Intake, Inbox (inbox.py)                 sqlite_inbox.SqliteInbox
    subscriptions, catch-ups       Subscriptions (subscriptions.py)         sqlite_subscriptions.SqliteSubscriptions
    what the bridge published      PublishedIndex (published.py)            sqlite_published.SqlitePublishedIndex
    screenings, not screened       Screenings (screenings.py)               sqlite_screenings.SqliteScreenings
    trial versions seen            TrialVersions (trials.py)                sqlite_trials.SqliteTrialVersions
    registry outbox, CRID cache    RegistryOutbox (outbox.py)               sqlite_outbox.SqliteOutbox
    study-team actions (audit)     Actions (actions.py)                     sqlite_actions.SqliteActions
    coordinator page sessions      UiSessions (sessions.py)                 sqlite_sessions.SqliteUiSessions
    one runner of periodic work    Leadership (leader.py)                   leader.file_leader / postgres.leader
    all of the above on one file   State (here)                             sqlite_state.SqliteState
    ... or on one PostgreSQL db    State (here)                             postgres_state.PostgresState

Callers name only what they use: the HTTP routes an ``Intake``, the worker ``Inbox`` and ``Subscriptions``,
the read API a ``PublishedIndex``, the coordinator page ``Screenings``, ``bridge registry submit`` a
``RegistryOutbox``. ``open_state`` opens the configured backend.

Two backends implement every Protocol, one module per concern: SQLite (``sqlite*.py``; connections,
transactions and migrations in ``sqlite.py``), the embedded default, and PostgreSQL (``postgres*.py``; the pool,
transactions and migrations in ``postgres.py``), for several replicas on one database (issue #15). Nothing
outside those modules knows which one it has: ``open_state`` / ``open_outbox`` pick PostgreSQL for a
``postgresql://`` (or ``postgres://``) location and SQLite for a file path (``Settings.state_location()``).
Both record their schema in a ``schema_migrations`` table (``postgres.py`` says why not Alembic). Records are
plain dataclasses; times are epoch seconds passed in by the caller.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

from bridge.state.actions import Actions, NewAction, WriteBack
from bridge.state.inbox import (
    AcceptResult,
    Delivery,
    EventKind,
    Inbox,
    InboxEntry,
    InboxEvent,
    Intake,
    RescreenTask,
    Resolution,
    StoreStats,
)
from bridge.state.leader import Leadership
from bridge.state.outbox import DEFAULT_LEASE_SECONDS, STATES, WITHDRAWN, OutboxRow, RegistryOutbox, owner_gone
from bridge.state.published import PublishedIndex, PublishedRecord
from bridge.state.screenings import (
    NotScreenedRecord,
    ScreeningRecord,
    Screenings,
    not_screened_record,
    save_prescreen,
    screening_record,
)
from bridge.state.sessions import LoginFailures, UiSession, UiSessions
from bridge.state.subscriptions import CatchUp, Subscriptions, SubscriptionState, find_holes
from bridge.state.trials import TrialVersions


class State(Inbox, Subscriptions, PublishedIndex, Screenings, TrialVersions, Actions, UiSessions, Leadership,
            Protocol):
    """Everything the service keeps, on one database; the registry outbox is reached through it, and
    ``leader(name)`` elects one process for periodic work (``bridge.state.leader``)."""

    def registry_outbox(self, clock: Callable[[], float] = time.time,
                        lease_seconds: float = DEFAULT_LEASE_SECONDS) -> RegistryOutbox: ...

    def close(self) -> None: ...


def open_state(location: str | os.PathLike[str]) -> State:
    """The state at ``location``: a ``postgresql://`` URL opens the PostgreSQL backend, anything else is a SQLite
    file path (``Settings.state_location()``). Opening migrates; an unreachable database, a file that cannot be
    opened or a schema newer than this bridge is one ``StoreError`` line (exit 8), never with a password."""
    if is_postgres_url(location):
        from bridge.state.postgres_state import PostgresState  # the backend loads only when a state is opened

        return PostgresState(str(location))
    from bridge.state.sqlite_state import SqliteState

    return SqliteState(location)


class ClosingOutbox(RegistryOutbox, Protocol):
    """A registry outbox opened on its own: closed after use (``with open_outbox(...) as outbox``)."""

    def __enter__(self) -> ClosingOutbox: ...

    def __exit__(self, *exc: object) -> None: ...


def open_outbox(location: str | os.PathLike[str]) -> ClosingOutbox:
    """The registry outbox at ``location`` on its own (``bridge registry``: no service state is needed); like
    ``open_state``, the one place that picks the backend."""
    if is_postgres_url(location):
        from bridge.state.postgres_outbox import PostgresOutbox  # the backend loads only when an outbox is opened

        return PostgresOutbox(str(location))
    from bridge.state.sqlite_outbox import SqliteOutbox

    return SqliteOutbox(location)


def is_postgres_url(location: object) -> bool:
    """Whether a state location names PostgreSQL (``postgresql://`` / ``postgres://``) rather than a file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "Actions",
    "LoginFailures",
    "NewAction",
    "UiSession",
    "UiSessions",
    "WriteBack",
    "STATES",
    "WITHDRAWN",
    "AcceptResult",
    "CatchUp",
    "Delivery",
    "EventKind",
    "Inbox",
    "InboxEntry",
    "InboxEvent",
    "Leadership",
    "Intake",
    "NotScreenedRecord",
    "OutboxRow",
    "PublishedIndex",
    "PublishedRecord",
    "RegistryOutbox",
    "RescreenTask",
    "Resolution",
    "ScreeningRecord",
    "Screenings",
    "State",
    "StoreStats",
    "SubscriptionState",
    "Subscriptions",
    "TrialVersions",
    "find_holes",
    "is_postgres_url",
    "not_screened_record",
    "ClosingOutbox",
    "open_outbox",
    "open_state",
    "owner_gone",
    "save_prescreen",
    "screening_record",
]
