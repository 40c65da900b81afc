"""Moved to ``bridge.state`` (one Protocol per concern, SQLite in ``bridge/state/sqlite*.py``).

This module keeps the old names importable while callers move: ``Store`` is ``bridge.state.State`` and
``SqliteStore`` is ``bridge.state.sqlite_state.SqliteState``. New code imports from ``bridge.state`` and names
the narrow Protocol it uses (``Inbox``, ``Subscriptions``, ``PublishedIndex``, ``Screenings``, ...).
"""

from __future__ import annotations

from bridge.state import (
    AcceptResult,
    CatchUp,
    Delivery,
    EventKind,
    InboxEntry,
    InboxEvent,
    NotScreenedRecord,
    PublishedRecord,
    RescreenTask,
    Resolution,
    ScreeningRecord,
    StoreStats,
    SubscriptionState,
    find_holes,
    not_screened_record,
    save_prescreen,
    screening_record,
)
from bridge.state import State as Store
from bridge.state.sqlite_state import SqliteState as SqliteStore

__all__ = [
    "AcceptResult",
    "CatchUp",
    "Delivery",
    "EventKind",
    "InboxEntry",
    "InboxEvent",
    "NotScreenedRecord",
    "PublishedRecord",
    "RescreenTask",
    "Resolution",
    "ScreeningRecord",
    "SqliteStore",
    "Store",
    "StoreStats",
    "SubscriptionState",
    "find_holes",
    "not_screened_record",
    "save_prescreen",
    "screening_record",
]
