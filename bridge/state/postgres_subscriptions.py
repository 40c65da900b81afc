"""``Subscriptions`` on PostgreSQL: the subscriptions table, gap and heartbeat checks, catch-ups queued in the
inbox in the same transaction. The checks run in one replica at a time (``leader("monitor")``); each
subscription's row is locked while it is checked, so even two checks at once queue a hole once."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.state.inbox import InboxEvent
from bridge.state.postgres import Cursor, PostgresBackend, Row
from bridge.state.postgres_inbox import insert_events
from bridge.state.rows import dumps, loads
from bridge.state.subscriptions import CatchUp, SubscriptionState, find_holes, heartbeat_overdue

_REGISTER_SUBSCRIPTION = """
INSERT INTO subscriptions AS s(id, channel, kind, topic, criteria, ehr_id, heartbeat_seconds, resource_types,
                               status, covered_through, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET channel = excluded.channel, kind = excluded.kind,
    topic = COALESCE(excluded.topic, s.topic), criteria = COALESCE(excluded.criteria, s.criteria),
    ehr_id = COALESCE(excluded.ehr_id, s.ehr_id), heartbeat_seconds = excluded.heartbeat_seconds,
    resource_types = excluded.resource_types, status = COALESCE(excluded.status, s.status),
    covered_through = LEAST(s.covered_through, excluded.covered_through)
"""  # LEAST ignores NULLs: the lower of the two, or whichever is known (SQLite's COALESCE(MIN(..), ..))


def _subscription(row: Row) -> SubscriptionState:
    values = dict(row)
    values["resource_types"] = tuple(loads(values["resource_types"]) or ())
    return SubscriptionState(**values)


def _since_before(cur: Cursor, sub: SubscriptionState, first: int) -> float | None:
    """When the last event before a hole arrived (the catch-up window starts there)."""
    row = cur.execute("SELECT MAX(received_at) AS t FROM inbox WHERE subscription = %s AND event_number < %s",
                      (sub.id, first)).fetchone()
    return row["t"] if row and row["t"] is not None else sub.created_at


def _queue_catch_up(cur: Cursor, sub: SubscriptionState, tag: str, reason: str, since: float | None,
                    default_types: Sequence[str], now: float) -> None:
    payload = {"reason": reason, "since": since, "types": list(sub.resource_types or default_types)}
    event = InboxEvent(f"catch-up:{sub.id}:{tag}", "catch-up", sub.channel, sub.id, payload=payload)
    insert_events(cur, [event], now)
    cur.execute("UPDATE subscriptions SET last_catch_up_at = %s WHERE id = %s", (now, sub.id))


def _gaps_of(cur: Cursor, sub: SubscriptionState, now: float, grace: float,
             default_types: Sequence[str]) -> list[CatchUp]:
    covered = sub.covered_through or 0
    seen = [(r["n"], r["t"]) for r in cur.execute(
        "SELECT event_number AS n, MIN(received_at) AS t FROM inbox WHERE subscription = %s AND event_number > %s "
        "GROUP BY event_number ORDER BY event_number", (sub.id, covered)).fetchall()]
    new_covered, holes = find_holes(covered, seen, sub.reported_events, sub.reported_at, now, grace)
    out = []
    for first, last in holes:
        since = _since_before(cur, sub, first)
        _queue_catch_up(cur, sub, f"gap:{first}-{last}", "gap", since, default_types, now)
        out.append(CatchUp(sub.id, "gap", since, first, last))
    if new_covered != covered:
        cur.execute("UPDATE subscriptions SET covered_through = %s WHERE id = %s", (new_covered, sub.id))
    return out


class PostgresSubscriptions(PostgresBackend):
    """``Subscriptions`` over a ``PostgresDatabase``."""

    def register_subscription(self, sub: SubscriptionState) -> None:
        with self._db.write("register subscription") as cur:
            cur.execute(_REGISTER_SUBSCRIPTION, (sub.id, sub.channel, sub.kind, sub.topic, sub.criteria, sub.ehr_id,
                                                 sub.heartbeat_seconds, dumps(list(sub.resource_types)), sub.status,
                                                 sub.covered_through, sub.created_at))

    def subscription(self, sub_id: str) -> SubscriptionState | None:
        with self._db.read("read subscription") as cur:
            row = cur.execute("SELECT * FROM subscriptions WHERE id = %s", (sub_id,)).fetchone()
        return _subscription(row) if row else None

    def subscriptions(self) -> list[SubscriptionState]:
        with self._db.read("list subscriptions") as cur:
            rows = cur.execute('SELECT * FROM subscriptions ORDER BY id COLLATE "C"').fetchall()
        return [_subscription(r) for r in rows]

    def delete_subscription(self, sub_id: str) -> bool:
        with self._db.write("delete subscription") as cur:
            cur.execute("DELETE FROM subscriptions WHERE id = %s", (sub_id,))
            return cur.rowcount > 0

    def detect_gaps(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        found: list[CatchUp] = []
        with self._db.write("detect gaps") as cur:
            rows = cur.execute("SELECT * FROM subscriptions WHERE kind = 'topic' AND covered_through IS NOT NULL "
                               "ORDER BY id FOR UPDATE").fetchall()
            for sub in [_subscription(r) for r in rows]:
                found += _gaps_of(cur, sub, now, grace, default_types)
        return found

    def queue_catch_up(self, sub_id: str, reason: str, since: float | None, now: float,
                       default_types: Sequence[str]) -> CatchUp | None:
        with self._db.write("queue catch-up") as cur:
            row = cur.execute("SELECT * FROM subscriptions WHERE id = %s FOR UPDATE", (sub_id,)).fetchone()
            if row is None:
                return None
            _queue_catch_up(cur, _subscription(row), f"{reason}:{now:.3f}", reason, since, default_types, now)
        return CatchUp(sub_id, reason, since)

    def heartbeat_catch_ups(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        out = []
        with self._db.write("heartbeat check") as cur:
            rows = cur.execute("SELECT * FROM subscriptions WHERE heartbeat_seconds IS NOT NULL "
                               "ORDER BY id FOR UPDATE").fetchall()
            for sub in [_subscription(r) for r in rows]:
                if heartbeat_overdue(sub, now, grace):
                    since = sub.last_seen_at or sub.created_at
                    _queue_catch_up(cur, sub, f"heartbeat:{now:.3f}", "heartbeat", since, default_types, now)
                    out.append(CatchUp(sub.id, "heartbeat", since))
        return out


__all__ = ["PostgresSubscriptions"]
