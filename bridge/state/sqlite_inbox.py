"""``Inbox`` on SQLite: the durable inbox, the coalesced re-screen queue, known patients, seen versions.

Accepting a notification also records what it says of its subscription (first contact, heartbeat, event
numbers, the count the EHR reported) in the same transaction, so ``touch_subscription`` lives here;
``insert_events`` is shared with ``sqlite_subscriptions`` (catch-ups are inbox events).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from bridge.state.inbox import AcceptResult, Delivery, InboxEntry, InboxEvent, RescreenTask, Resolution, StoreStats
from bridge.state.rows import claim_args, dumps, entry_from_row
from bridge.state.sqlite import SqliteBackend

_INSERT_EVENT = """
INSERT INTO inbox(dedupe_key, kind, channel, subscription, event_number, resource_type, resource_id, patient_id,
                  payload, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(dedupe_key) DO NOTHING
"""

_TOUCH_SUBSCRIPTION = """
INSERT INTO subscriptions(id, channel, kind, topic, status, covered_through, created_at, last_seen_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET last_seen_at = excluded.last_seen_at,
    topic = COALESCE(excluded.topic, topic), status = COALESCE(excluded.status, status),
    covered_through = COALESCE(covered_through, excluded.covered_through)
"""

_REQUEST_RESCREEN = """
INSERT INTO rescreens(patient_id, state, generation, requested_at, oldest_request_at, not_before)
VALUES (?, 'pending', 1, ?, ?, ?)
ON CONFLICT(patient_id) DO UPDATE SET
    generation = generation + 1,
    requested_at = excluded.requested_at,
    oldest_request_at = CASE WHEN state IN ('done', 'failed') OR oldest_request_at IS NULL
                             THEN excluded.oldest_request_at
                             ELSE MIN(oldest_request_at, excluded.oldest_request_at) END,
    attempts = CASE WHEN state IN ('done', 'failed') THEN 0 ELSE attempts END,
    not_before = CASE WHEN state IN ('done', 'failed') THEN excluded.not_before ELSE not_before END,
    last_error = CASE WHEN state = 'failed' THEN NULL ELSE last_error END,
    state = CASE WHEN state = 'claimed' THEN 'claimed' ELSE 'pending' END
"""

_CLAIM = """
UPDATE {table} SET state = 'claimed', claimed_at = :now, claimed_by = :worker, attempts = attempts + 1{extra}
WHERE {key} IN (SELECT {key} FROM {table}
                WHERE (state = 'pending' AND not_before <= :now) OR (state = 'claimed' AND claimed_at <= :expired)
                ORDER BY {order} LIMIT :limit)
RETURNING *
"""

_POISON = """
UPDATE {table} SET state = 'failed', last_error = 'lease expired after the last allowed attempt'
WHERE state = 'claimed' AND claimed_at <= :expired AND attempts >= :max_attempts
"""

_FINISH_RESCREEN = """
UPDATE rescreens SET
    state = CASE WHEN generation = claimed_generation THEN 'done' ELSE 'pending' END,
    attempts = CASE WHEN generation = claimed_generation THEN attempts ELSE 0 END,
    oldest_request_at = CASE WHEN generation = claimed_generation THEN NULL ELSE requested_at END,
    not_before = ?, done_at = ?, last_status = ?, last_error = NULL, claimed_by = NULL
WHERE patient_id = ? AND state = 'claimed' AND claimed_by = ? AND claimed_generation = ?
RETURNING state
"""


def insert_events(db: sqlite3.Connection, events: Sequence[InboxEvent], now: float) -> int:
    """Insert events (duplicates by dedupe key ignored); returns how many were new."""
    new = 0
    for ev in events:
        cur = db.execute(_INSERT_EVENT, (ev.dedupe_key, ev.kind, ev.channel, ev.subscription, ev.event_number,
                                         ev.resource_type, ev.resource_id, ev.patient_id, dumps(ev.payload), now))
        new += cur.rowcount
    return new


def touch_subscription(db: sqlite3.Connection, d: Delivery, now: float) -> None:
    """What a notification tells of its subscription: seen now, heartbeat, highest event number, reported count."""
    db.execute(_TOUCH_SUBSCRIPTION, (d.subscription, d.channel, d.kind, d.topic, d.status, d.initial_coverage(),
                                     now, now))
    if d.notification in ("handshake", "heartbeat"):
        db.execute("UPDATE subscriptions SET last_heartbeat_at = ? WHERE id = ?", (now, d.subscription))
    numbers = [e.event_number for e in d.events if e.event_number is not None]
    if numbers:
        db.execute("UPDATE subscriptions SET max_event_number = MAX(COALESCE(max_event_number, 0), ?) "
                   "WHERE id = ?", (max(numbers), d.subscription))
    if d.events_since_start is not None:
        db.execute("UPDATE subscriptions SET reported_events = ?, reported_at = ? WHERE id = ? AND "
                   "(reported_events IS NULL OR reported_events < ?)",
                   (d.events_since_start, now, d.subscription, d.events_since_start))


def add_known(db: sqlite3.Connection, patients: Iterable[str], now: float, reason: str) -> None:
    db.executemany("INSERT INTO known_patients(patient_id, since, reason) VALUES (?, ?, ?) "
                   "ON CONFLICT(patient_id) DO NOTHING", [(p, now, reason) for p in sorted(set(patients))])


class SqliteInbox(SqliteBackend):
    """``Inbox`` (and ``Intake``) over a ``SqliteDatabase``."""

    # inbox --------------------------------------------------------------------------------------------
    def accept(self, delivery: Delivery, now: float) -> AcceptResult:
        with self._db.write("accept") as db:
            touch_subscription(db, delivery, now)
            new = insert_events(db, delivery.events, now)
        return AcceptResult(new, len(delivery.events) - new)

    def enqueue(self, events: Iterable[InboxEvent], now: float) -> AcceptResult:
        events = list(events)
        with self._db.write("enqueue") as db:
            new = insert_events(db, events, now)
        return AcceptResult(new, len(events) - new)

    def claim_inbox(self, worker: str, now: float, lease: float, limit: int, max_attempts: int) -> list[InboxEntry]:
        args = claim_args(worker, now, lease, limit, max_attempts)
        with self._db.write("claim inbox") as db:
            db.execute(_POISON.format(table="inbox"), args)
            rows = db.execute(_CLAIM.format(table="inbox", key="id", extra="", order="id"), args).fetchall()
        return sorted((entry_from_row(r) for r in rows), key=lambda e: e.id)

    def finish_inbox(self, entry_id: int, worker: str, resolution: Resolution, now: float) -> bool:
        with self._db.write("finish inbox entry") as db:
            cur = db.execute("UPDATE inbox SET state = 'done', done_at = ?, payload = NULL, last_error = NULL "
                             "WHERE id = ? AND state = 'claimed' AND claimed_by = ? RETURNING received_at",
                             (now, entry_id, worker))
            row = cur.fetchone()
            if row is None:
                return False
            self._apply(db, resolution, row["received_at"], now)
        return True

    @staticmethod
    def _apply(db: sqlite3.Connection, r: Resolution, received_at: float, now: float) -> None:
        db.executemany("INSERT INTO seen_versions(key, seen_at) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                       [(k, now) for k in sorted(r.versions)])
        add_known(db, r.known, now, "admission")
        for patient in sorted(r.rescreen):
            db.execute(_REQUEST_RESCREEN, (patient, now, received_at, now + r.rescreen_delay))
        if r.queried is not None:
            db.execute("UPDATE subscriptions SET last_query_at = MAX(COALESCE(last_query_at, 0), ?) WHERE id = ?",
                       (r.queried[1], r.queried[0]))

    def retry_inbox(self, entry_id: int, worker: str, error: str, not_before: float) -> None:
        with self._db.write("retry inbox entry") as db:
            db.execute("UPDATE inbox SET state = 'pending', not_before = ?, last_error = ?, claimed_by = NULL "
                       "WHERE id = ? AND state = 'claimed' AND claimed_by = ?", (not_before, error, entry_id, worker))

    def fail_inbox(self, entry_id: int, worker: str, error: str, now: float) -> None:
        with self._db.write("fail inbox entry") as db:
            db.execute("UPDATE inbox SET state = 'failed', done_at = ?, last_error = ?, claimed_by = NULL "
                       "WHERE id = ? AND state = 'claimed' AND claimed_by = ?", (now, error, entry_id, worker))

    def inbox_entry(self, entry_id: int) -> InboxEntry | None:
        with self._db.read("read inbox entry") as db:
            row = db.execute("SELECT * FROM inbox WHERE id = ?", (entry_id,)).fetchone()
        return entry_from_row(row) if row else None

    def inbox_entries(self, state: str | None = None) -> list[InboxEntry]:
        """Every inbox entry (optionally of one state), oldest first — for inspection and tests."""
        sql, args = "SELECT * FROM inbox", tuple[str, ...]()
        if state is not None:
            sql, args = sql + " WHERE state = ?", (state,)
        with self._db.read("list inbox") as db:
            return [entry_from_row(r) for r in db.execute(sql + " ORDER BY id", args).fetchall()]

    # re-screens ---------------------------------------------------------------------------------------
    def request_rescreens(self, patients: Iterable[str], received_at: float, now: float, delay: float) -> None:
        with self._db.write("request re-screens") as db:
            for patient in sorted(set(patients)):
                db.execute(_REQUEST_RESCREEN, (patient, now, received_at, now + delay))

    def claim_rescreens(self, worker: str, now: float, lease: float, limit: int,
                        max_attempts: int) -> list[RescreenTask]:
        args = claim_args(worker, now, lease, limit, max_attempts)
        sql = _CLAIM.format(table="rescreens", key="patient_id", extra=", claimed_generation = generation",
                            order="not_before, patient_id")
        with self._db.write("claim re-screens") as db:
            db.execute(_POISON.format(table="rescreens"), args)
            rows = db.execute(sql, args).fetchall()
        tasks = [RescreenTask(r["patient_id"], r["generation"], r["attempts"], r["oldest_request_at"]) for r in rows]
        return sorted(tasks, key=lambda t: t.patient_id)

    def finish_rescreen(self, task: RescreenTask, worker: str, status: str, now: float) -> bool:
        with self._db.write("finish re-screen") as db:
            row = db.execute(_FINISH_RESCREEN, (now, now, status, task.patient_id, worker,
                                                task.generation)).fetchone()
        return row is not None and row["state"] == "done"

    def retry_rescreen(self, task: RescreenTask, worker: str, error: str, not_before: float) -> None:
        with self._db.write("retry re-screen") as db:
            db.execute("UPDATE rescreens SET state = 'pending', not_before = ?, last_error = ?, claimed_by = NULL "
                       "WHERE patient_id = ? AND state = 'claimed' AND claimed_by = ?",
                       (not_before, error, task.patient_id, worker))

    def fail_rescreen(self, task: RescreenTask, worker: str, error: str, now: float) -> None:
        with self._db.write("fail re-screen") as db:
            db.execute("UPDATE rescreens SET state = 'failed', done_at = ?, last_error = ?, claimed_by = NULL "
                       "WHERE patient_id = ? AND state = 'claimed' AND claimed_by = ?",
                       (now, error, task.patient_id, worker))

    def rescreen_state(self, patient_id: str) -> dict[str, Any] | None:
        """The re-screen row of one patient as a dict — for inspection and tests."""
        with self._db.read("read re-screen") as db:
            row = db.execute("SELECT * FROM rescreens WHERE patient_id = ?", (patient_id,)).fetchone()
        return {k: row[k] for k in row.keys()} if row else None  # noqa: SIM118 - sqlite3.Row

    # both queues ----------------------------------------------------------------------------------------
    def release_claims(self, worker_prefix: str) -> int:
        pattern = worker_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._db.write("release claims") as db:
            n = 0
            for table in ("inbox", "rescreens"):
                sql = f"UPDATE {table} SET state = 'pending', claimed_by = NULL WHERE state = 'claimed' " \
                      "AND claimed_by LIKE ? ESCAPE '\\'"  # noqa: S608 - fixed table names
                n += db.execute(sql, (pattern,)).rowcount
        return n

    def requeue_failed(self, now: float) -> int:
        with self._db.write("requeue failed") as db:
            n = db.execute("UPDATE inbox SET state = 'pending', attempts = 0, not_before = ? "
                           "WHERE state = 'failed'", (now,)).rowcount
            n += db.execute("UPDATE rescreens SET state = 'pending', attempts = 0, not_before = ? "
                            "WHERE state = 'failed'", (now,)).rowcount
        return n

    def stats(self) -> StoreStats:
        with self._db.read("statistics") as db:
            inbox = {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM inbox GROUP BY state")}
            rescreens = {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM rescreens GROUP BY state")}
            last_event = db.execute("SELECT MAX(received_at) FROM inbox WHERE kind != 'catch-up'").fetchone()[0]
            last_note = db.execute("SELECT MAX(last_seen_at) FROM subscriptions").fetchone()[0]
        return StoreStats(inbox, rescreens, last_event, last_note)

    def probe_write(self, now: float) -> None:
        with self._db.write("probe a write") as db:
            db.execute("INSERT INTO write_probe(id, at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET at = excluded.at",
                       (now,))

    def purge(self, before: float) -> int:
        with self._db.write("purge") as db:
            n = db.execute("DELETE FROM inbox WHERE state = 'done' AND done_at < ?", (before,)).rowcount
            n += db.execute("DELETE FROM seen_versions WHERE seen_at < ?", (before,)).rowcount
        return n

    # patients and versions -------------------------------------------------------------------------------
    def add_known(self, patients: Iterable[str], now: float, reason: str) -> None:
        with self._db.write("add known patients") as db:
            add_known(db, patients, now, reason)

    def known(self, patients: Iterable[str]) -> set[str]:
        return self._present("known_patients", "patient_id", patients)

    def seen_versions(self, keys: Iterable[str]) -> set[str]:
        return self._present("seen_versions", "key", keys)

    def _present(self, table: str, column: str, values: Iterable[str]) -> set[str]:
        wanted, found = sorted(set(values)), set()
        with self._db.read(f"look up {table}") as db:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT {column} FROM {table} WHERE {column} IN ({marks})"  # noqa: S608 - fixed names
                found |= {r[0] for r in db.execute(sql, chunk)}
        return found


__all__ = ["SqliteInbox", "add_known", "insert_events", "touch_subscription"]
