"""``Inbox`` on PostgreSQL: the durable inbox, the coalesced re-screen queue, known patients, seen versions.

What makes it safe for several replicas on one database:

* an event is inserted with ``ON CONFLICT (dedupe_key) DO NOTHING``: a notification delivered to two replicas
  is one entry;
* claims pick their rows with ``SELECT … FOR UPDATE SKIP LOCKED`` and mark them in the same statement, so two
  workers never get the same entry, and an expired lease is taken over by whichever worker claims next;
* a re-screen request is one ``INSERT … ON CONFLICT (patient_id) DO UPDATE`` on the patient's row, so requests
  from every replica coalesce per patient (and a request during a run sends the row back to pending).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bridge.state.inbox import AcceptResult, Delivery, InboxEntry, InboxEvent, RescreenTask, Resolution, StoreStats
from bridge.state.postgres import Cursor, PostgresBackend
from bridge.state.rows import claim_args, dumps, entry_from_row

_INSERT_EVENT = """
INSERT INTO inbox(dedupe_key, kind, channel, subscription, event_number, resource_type, resource_id, patient_id,
                  payload, received_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dedupe_key) DO NOTHING
"""

_TOUCH_SUBSCRIPTION = """
INSERT INTO subscriptions AS s(id, channel, kind, topic, status, covered_through, created_at, last_seen_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at,
    topic = COALESCE(excluded.topic, s.topic), status = COALESCE(excluded.status, s.status),
    covered_through = COALESCE(s.covered_through, excluded.covered_through)
"""

_REQUEST_RESCREEN = """
INSERT INTO rescreens AS r(patient_id, state, generation, requested_at, oldest_request_at, not_before)
VALUES (%s, 'pending', 1, %s, %s, %s)
ON CONFLICT (patient_id) DO UPDATE SET
    generation = r.generation + 1,
    requested_at = excluded.requested_at,
    oldest_request_at = CASE WHEN r.state IN ('done', 'failed') OR r.oldest_request_at IS NULL
                             THEN excluded.oldest_request_at
                             ELSE LEAST(r.oldest_request_at, excluded.oldest_request_at) END,
    attempts = CASE WHEN r.state IN ('done', 'failed') THEN 0 ELSE r.attempts END,
    not_before = CASE WHEN r.state IN ('done', 'failed') THEN excluded.not_before ELSE r.not_before END,
    last_error = CASE WHEN r.state = 'failed' THEN NULL ELSE r.last_error END,
    state = CASE WHEN r.state = 'claimed' THEN 'claimed' ELSE 'pending' END
"""

# the due rows, locked (rows another worker is claiming right now are skipped, not waited for), then marked
_CLAIM = """
WITH due AS (
    SELECT {key} FROM {table}
    WHERE state IN ('pending', 'claimed')
      AND ((state = 'pending' AND not_before <= %(now)s) OR (state = 'claimed' AND claimed_at <= %(expired)s))
    ORDER BY {order} LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
UPDATE {table} AS t SET state = 'claimed', claimed_at = %(now)s, claimed_by = %(worker)s,
    attempts = t.attempts + 1{extra}
FROM due WHERE t.{key} = due.{key}
RETURNING t.*
"""

_POISON = """
WITH spent AS (
    SELECT {key} FROM {table}
    WHERE state = 'claimed' AND claimed_at <= %(expired)s AND attempts >= %(max_attempts)s
    FOR UPDATE SKIP LOCKED)
UPDATE {table} AS t SET state = 'failed', last_error = 'lease expired after the last allowed attempt'
FROM spent WHERE t.{key} = spent.{key}
"""

_FINISH_RESCREEN = """
UPDATE rescreens SET
    state = CASE WHEN generation = claimed_generation THEN 'done' ELSE 'pending' END,
    attempts = CASE WHEN generation = claimed_generation THEN attempts ELSE 0 END,
    oldest_request_at = CASE WHEN generation = claimed_generation THEN NULL ELSE requested_at END,
    not_before = %s, done_at = %s, last_status = %s, last_error = NULL, claimed_by = NULL
WHERE patient_id = %s AND state = 'claimed' AND claimed_by = %s AND claimed_generation = %s
RETURNING state
"""


def insert_events(cur: Cursor, events: Sequence[InboxEvent], now: float) -> int:
    """Insert events (duplicates by dedupe key ignored); returns how many were new."""
    new = 0
    for ev in events:
        cur.execute(_INSERT_EVENT, (ev.dedupe_key, ev.kind, ev.channel, ev.subscription, ev.event_number,
                                    ev.resource_type, ev.resource_id, ev.patient_id, dumps(ev.payload), now))
        new += cur.rowcount
    return new


def touch_subscription(cur: Cursor, d: Delivery, now: float) -> None:
    """What a notification tells of its subscription: seen now, heartbeat, highest event number, reported count."""
    cur.execute(_TOUCH_SUBSCRIPTION, (d.subscription, d.channel, d.kind, d.topic, d.status, d.initial_coverage(),
                                      now, now))
    if d.notification in ("handshake", "heartbeat"):
        cur.execute("UPDATE subscriptions SET last_heartbeat_at = %s WHERE id = %s", (now, d.subscription))
    numbers = [e.event_number for e in d.events if e.event_number is not None]
    if numbers:
        cur.execute("UPDATE subscriptions SET max_event_number = GREATEST(COALESCE(max_event_number, 0), %s) "
                    "WHERE id = %s", (max(numbers), d.subscription))
    if d.events_since_start is not None:
        cur.execute("UPDATE subscriptions SET reported_events = %s, reported_at = %s WHERE id = %s AND "
                    "(reported_events IS NULL OR reported_events < %s)",
                    (d.events_since_start, now, d.subscription, d.events_since_start))


def add_known(cur: Cursor, patients: Iterable[str], now: float, reason: str) -> None:
    rows = [(p, now, reason) for p in sorted(set(patients))]
    if rows:
        cur.executemany("INSERT INTO known_patients(patient_id, since, reason) VALUES (%s, %s, %s) "
                        "ON CONFLICT (patient_id) DO NOTHING", rows)


def _sql(template: str, **names: str) -> bytes:
    """A statement from one of this module's templates and fixed table / column names (never input)."""
    return template.format(**names).encode()


class PostgresInbox(PostgresBackend):
    """``Inbox`` (and ``Intake``) over a ``PostgresDatabase``."""

    # inbox --------------------------------------------------------------------------------------------
    def accept(self, delivery: Delivery, now: float) -> AcceptResult:
        with self._db.write("accept") as cur:
            touch_subscription(cur, delivery, now)
            new = insert_events(cur, delivery.events, now)
        return AcceptResult(new, len(delivery.events) - new)

    def enqueue(self, events: Iterable[InboxEvent], now: float) -> AcceptResult:
        events = list(events)
        with self._db.write("enqueue") as cur:
            new = insert_events(cur, events, now)
        return AcceptResult(new, len(events) - new)

    def claim_inbox(self, worker: str, now: float, lease: float, limit: int, max_attempts: int) -> list[InboxEntry]:
        args = claim_args(worker, now, lease, limit, max_attempts)
        with self._db.write("claim inbox") as cur:
            cur.execute(_sql(_POISON, table="inbox", key="id"), args)
            rows = cur.execute(_sql(_CLAIM, table="inbox", key="id", extra="", order="id"), args).fetchall()
        return sorted((entry_from_row(r) for r in rows), key=lambda e: e.id)

    def finish_inbox(self, entry_id: int, worker: str, resolution: Resolution, now: float) -> bool:
        with self._db.write("finish inbox entry") as cur:
            row = cur.execute("UPDATE inbox SET state = 'done', done_at = %s, payload = NULL, last_error = NULL "
                              "WHERE id = %s AND state = 'claimed' AND claimed_by = %s RETURNING received_at",
                              (now, entry_id, worker)).fetchone()
            if row is None:
                return False
            self._apply(cur, resolution, row["received_at"], now)
        return True

    @staticmethod
    def _apply(cur: Cursor, r: Resolution, received_at: float, now: float) -> None:
        versions = [(k, now) for k in sorted(r.versions)]
        if versions:
            cur.executemany("INSERT INTO seen_versions(key, seen_at) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                            versions)
        add_known(cur, r.known, now, "admission")
        for patient in sorted(r.rescreen):  # sorted: two replicas lock patients' rows in one order (no deadlock)
            cur.execute(_REQUEST_RESCREEN, (patient, now, received_at, now + r.rescreen_delay))
        if r.queried is not None:
            cur.execute("UPDATE subscriptions SET last_query_at = GREATEST(COALESCE(last_query_at, 0), %s) "
                        "WHERE id = %s", (r.queried[1], r.queried[0]))

    def retry_inbox(self, entry_id: int, worker: str, error: str, not_before: float) -> None:
        with self._db.write("retry inbox entry") as cur:
            cur.execute("UPDATE inbox SET state = 'pending', not_before = %s, last_error = %s, claimed_by = NULL "
                        "WHERE id = %s AND state = 'claimed' AND claimed_by = %s",
                        (not_before, error, entry_id, worker))

    def fail_inbox(self, entry_id: int, worker: str, error: str, now: float) -> None:
        with self._db.write("fail inbox entry") as cur:
            cur.execute("UPDATE inbox SET state = 'failed', done_at = %s, last_error = %s, claimed_by = NULL "
                        "WHERE id = %s AND state = 'claimed' AND claimed_by = %s", (now, error, entry_id, worker))

    def inbox_entry(self, entry_id: int) -> InboxEntry | None:
        with self._db.read("read inbox entry") as cur:
            row = cur.execute("SELECT * FROM inbox WHERE id = %s", (entry_id,)).fetchone()
        return entry_from_row(row) if row else None

    def inbox_entries(self, state: str | None = None) -> list[InboxEntry]:
        """Every inbox entry (optionally of one state), oldest first — for inspection and tests."""
        with self._db.read("list inbox") as cur:
            if state is None:
                rows = cur.execute("SELECT * FROM inbox ORDER BY id").fetchall()
            else:
                rows = cur.execute("SELECT * FROM inbox WHERE state = %s ORDER BY id", (state,)).fetchall()
        return [entry_from_row(r) for r in rows]

    # re-screens ---------------------------------------------------------------------------------------
    def request_rescreens(self, patients: Iterable[str], received_at: float, now: float, delay: float) -> None:
        with self._db.write("request re-screens") as cur:
            for patient in sorted(set(patients)):
                cur.execute(_REQUEST_RESCREEN, (patient, now, received_at, now + delay))

    def claim_rescreens(self, worker: str, now: float, lease: float, limit: int,
                        max_attempts: int) -> list[RescreenTask]:
        args = claim_args(worker, now, lease, limit, max_attempts)
        claim = _sql(_CLAIM, table="rescreens", key="patient_id", extra=", claimed_generation = t.generation",
                     order="not_before, patient_id")
        with self._db.write("claim re-screens") as cur:
            cur.execute(_sql(_POISON, table="rescreens", key="patient_id"), args)
            rows = cur.execute(claim, args).fetchall()
        tasks = [RescreenTask(r["patient_id"], r["generation"], r["attempts"], r["oldest_request_at"]) for r in rows]
        return sorted(tasks, key=lambda t: t.patient_id)

    def finish_rescreen(self, task: RescreenTask, worker: str, status: str, now: float) -> bool:
        with self._db.write("finish re-screen") as cur:
            row = cur.execute(_FINISH_RESCREEN, (now, now, status, task.patient_id, worker,
                                                 task.generation)).fetchone()
        return row is not None and row["state"] == "done"

    def retry_rescreen(self, task: RescreenTask, worker: str, error: str, not_before: float) -> None:
        with self._db.write("retry re-screen") as cur:
            cur.execute("UPDATE rescreens SET state = 'pending', not_before = %s, last_error = %s, "
                        "claimed_by = NULL WHERE patient_id = %s AND state = 'claimed' AND claimed_by = %s",
                        (not_before, error, task.patient_id, worker))

    def fail_rescreen(self, task: RescreenTask, worker: str, error: str, now: float) -> None:
        with self._db.write("fail re-screen") as cur:
            cur.execute("UPDATE rescreens SET state = 'failed', done_at = %s, last_error = %s, claimed_by = NULL "
                        "WHERE patient_id = %s AND state = 'claimed' AND claimed_by = %s",
                        (now, error, task.patient_id, worker))

    def rescreen_state(self, patient_id: str) -> dict[str, Any] | None:
        """The re-screen row of one patient as a dict — for inspection and tests."""
        with self._db.read("read re-screen") as cur:
            return cur.execute("SELECT * FROM rescreens WHERE patient_id = %s", (patient_id,)).fetchone()

    # both queues ----------------------------------------------------------------------------------------
    def release_claims(self, worker_prefix: str) -> int:
        pattern = worker_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        n = 0
        with self._db.write("release claims") as cur:
            for table in ("inbox", "rescreens"):
                cur.execute(_sql("UPDATE {table} SET state = 'pending', claimed_by = NULL WHERE state = 'claimed' "
                                 "AND claimed_by LIKE %s ESCAPE '\\'", table=table), (pattern,))
                n += cur.rowcount
        return n

    def requeue_failed(self, now: float) -> int:
        n = 0
        with self._db.write("requeue failed") as cur:
            for table in ("inbox", "rescreens"):
                cur.execute(_sql("UPDATE {table} SET state = 'pending', attempts = 0, not_before = %s "
                                 "WHERE state = 'failed'", table=table), (now,))
                n += cur.rowcount
        return n

    def stats(self) -> StoreStats:
        with self._db.read("statistics") as cur:
            inbox = {r["state"]: r["n"] for r in cur.execute("SELECT state, COUNT(*) AS n FROM inbox GROUP BY state")}
            rescreens = {r["state"]: r["n"]
                         for r in cur.execute("SELECT state, COUNT(*) AS n FROM rescreens GROUP BY state")}
            last_event = cur.execute("SELECT MAX(received_at) AS t FROM inbox WHERE kind <> 'catch-up'").fetchone()
            last_note = cur.execute("SELECT MAX(last_seen_at) AS t FROM subscriptions").fetchone()
        return StoreStats(inbox, rescreens, last_event["t"] if last_event else None,
                          last_note["t"] if last_note else None)

    def probe_write(self, now: float) -> None:
        with self._db.write("probe a write") as cur:
            cur.execute("INSERT INTO write_probe(id, at) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET "
                        "at = excluded.at", (now,))

    def purge(self, before: float) -> int:
        with self._db.write("purge") as cur:
            cur.execute("DELETE FROM inbox WHERE state = 'done' AND done_at < %s", (before,))
            n = cur.rowcount
            cur.execute("DELETE FROM seen_versions WHERE seen_at < %s", (before,))
            return n + cur.rowcount

    # patients and versions -------------------------------------------------------------------------------
    def add_known(self, patients: Iterable[str], now: float, reason: str) -> None:
        with self._db.write("add known patients") as cur:
            add_known(cur, patients, now, reason)

    def known(self, patients: Iterable[str]) -> set[str]:
        with self._db.read("look up known patients") as cur:
            rows = cur.execute("SELECT patient_id AS v FROM known_patients WHERE patient_id = ANY(%s)",
                               (sorted(set(patients)),))
            return {r["v"] for r in rows}

    def seen_versions(self, keys: Iterable[str]) -> set[str]:
        with self._db.read("look up seen versions") as cur:
            rows = cur.execute("SELECT key AS v FROM seen_versions WHERE key = ANY(%s)", (sorted(set(keys)),))
            return {r["v"] for r in rows}


__all__ = ["PostgresInbox", "add_known", "insert_events", "touch_subscription"]
