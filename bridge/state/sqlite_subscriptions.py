"""``Subscriptions`` on SQLite: the subscriptions table, gap and heartbeat checks, catch-ups queued in the inbox."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from bridge.state.inbox import InboxEvent
from bridge.state.rows import dumps, loads
from bridge.state.sqlite import SqliteBackend
from bridge.state.sqlite_inbox import insert_events
from bridge.state.subscriptions import CatchUp, SubscriptionState, find_holes, heartbeat_overdue

_REGISTER_SUBSCRIPTION = """
INSERT INTO subscriptions(id, channel, kind, topic, criteria, ehr_id, heartbeat_seconds, resource_types, status,
                          covered_through, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET channel = excluded.channel, kind = excluded.kind,
    topic = COALESCE(excluded.topic, topic), criteria = COALESCE(excluded.criteria, criteria),
    ehr_id = COALESCE(excluded.ehr_id, ehr_id), heartbeat_seconds = excluded.heartbeat_seconds,
    resource_types = excluded.resource_types, status = COALESCE(excluded.status, status),
    covered_through = COALESCE(MIN(covered_through, excluded.covered_through), excluded.covered_through,
                               covered_through)
"""


def _subscription(row: sqlite3.Row) -> SubscriptionState:
    values = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row iterates values, not keys
    values["resource_types"] = tuple(loads(values["resource_types"]) or ())
    return SubscriptionState(**values)


def _since_before(db: sqlite3.Connection, sub: SubscriptionState, first: int) -> float | None:
    """When the last event before a hole arrived (the catch-up window starts there)."""
    row = db.execute("SELECT MAX(received_at) FROM inbox WHERE subscription = ? AND event_number < ?",
                     (sub.id, first)).fetchone()
    return row[0] if row[0] is not None else sub.created_at


def _queue_catch_up(db: sqlite3.Connection, sub: SubscriptionState, tag: str, reason: str, since: float | None,
                    default_types: Sequence[str], now: float) -> None:
    payload = {"reason": reason, "since": since, "types": list(sub.resource_types or default_types)}
    event = InboxEvent(f"catch-up:{sub.id}:{tag}", "catch-up", sub.channel, sub.id, payload=payload)
    insert_events(db, [event], now)
    db.execute("UPDATE subscriptions SET last_catch_up_at = ? WHERE id = ?", (now, sub.id))


def _gaps_of(db: sqlite3.Connection, sub: SubscriptionState, now: float, grace: float,
             default_types: Sequence[str]) -> list[CatchUp]:
    covered = sub.covered_through or 0
    seen = [(r[0], r[1]) for r in db.execute(
        "SELECT event_number, MIN(received_at) FROM inbox WHERE subscription = ? AND event_number > ? "
        "GROUP BY event_number ORDER BY event_number", (sub.id, covered))]
    new_covered, holes = find_holes(covered, seen, sub.reported_events, sub.reported_at, now, grace)
    out = []
    for first, last in holes:
        since = _since_before(db, sub, first)
        _queue_catch_up(db, sub, f"gap:{first}-{last}", "gap", since, default_types, now)
        out.append(CatchUp(sub.id, "gap", since, first, last))
    if new_covered != covered:
        db.execute("UPDATE subscriptions SET covered_through = ? WHERE id = ?", (new_covered, sub.id))
    return out


class SqliteSubscriptions(SqliteBackend):
    """``Subscriptions`` over a ``SqliteDatabase``."""

    def register_subscription(self, sub: SubscriptionState) -> None:
        with self._db.write("register subscription") as db:
            db.execute(_REGISTER_SUBSCRIPTION, (sub.id, sub.channel, sub.kind, sub.topic, sub.criteria, sub.ehr_id,
                                                sub.heartbeat_seconds, dumps(list(sub.resource_types)), sub.status,
                                                sub.covered_through, sub.created_at))

    def subscription(self, sub_id: str) -> SubscriptionState | None:
        with self._db.read("read subscription") as db:
            row = db.execute("SELECT * FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
        return _subscription(row) if row else None

    def subscriptions(self) -> list[SubscriptionState]:
        with self._db.read("list subscriptions") as db:
            return [_subscription(r) for r in db.execute("SELECT * FROM subscriptions ORDER BY id").fetchall()]

    def delete_subscription(self, sub_id: str) -> bool:
        with self._db.write("delete subscription") as db:
            return db.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,)).rowcount > 0

    def detect_gaps(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        found: list[CatchUp] = []
        with self._db.write("detect gaps") as db:
            rows = db.execute("SELECT * FROM subscriptions WHERE kind = 'topic' AND covered_through IS NOT NULL")
            for sub in [_subscription(r) for r in rows.fetchall()]:
                found += _gaps_of(db, sub, now, grace, default_types)
        return found

    def queue_catch_up(self, sub_id: str, reason: str, since: float | None, now: float,
                       default_types: Sequence[str]) -> CatchUp | None:
        with self._db.write("queue catch-up") as db:
            row = db.execute("SELECT * FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
            if row is None:
                return None
            _queue_catch_up(db, _subscription(row), f"{reason}:{now:.3f}", reason, since, default_types, now)
        return CatchUp(sub_id, reason, since)

    def heartbeat_catch_ups(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        out = []
        with self._db.write("heartbeat check") as db:
            rows = db.execute("SELECT * FROM subscriptions WHERE heartbeat_seconds IS NOT NULL").fetchall()
            for sub in [_subscription(r) for r in rows]:
                if heartbeat_overdue(sub, now, grace):
                    since = sub.last_seen_at or sub.created_at
                    _queue_catch_up(db, sub, f"heartbeat:{now:.3f}", "heartbeat", since, default_types, now)
                    out.append(CatchUp(sub.id, "heartbeat", since))
        return out


__all__ = ["SqliteSubscriptions"]
