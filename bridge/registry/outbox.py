"""Moved to ``bridge.state`` (``bridge.state.outbox`` for the Protocol and the states, ``sqlite_outbox`` for
the SQLite implementation). This module keeps the old names importable: ``Outbox`` is ``SqliteOutbox``."""

from __future__ import annotations

from bridge.state.outbox import DEFAULT_LEASE_SECONDS, STATES, WITHDRAWN, OutboxRow, owner_gone
from bridge.state.sqlite_outbox import SqliteOutbox as Outbox

__all__ = ["DEFAULT_LEASE_SECONDS", "STATES", "WITHDRAWN", "Outbox", "OutboxRow", "owner_gone"]
