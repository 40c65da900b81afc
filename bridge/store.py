"""The state store: durable inbox, coalesced re-screen queue, subscriptions, published index, screenings.

``Store`` is the interface the service, the worker and the publisher talk to; ``SqliteStore`` is the embedded
implementation (WAL journal, ``synchronous=FULL``, a busy timeout, one connection per thread). A Postgres
implementation fills the same abstract methods; the only non-SQL logic (``find_holes``) is a pure function
here so both share it.

Tables::

    inbox          one row per accepted event; dedupe_key UNIQUE makes a second delivery a no-op.
                   state pending -> claimed (lease: claimed_at + lease seconds) -> done | failed;
                   an expired claim is claimable again (a crashed worker loses nothing).
                   payload holds only what processing needs (ids, codes, statuses — never a value) and is
                   cleared when the entry is done.
    rescreens      one row per patient (PRIMARY KEY): many events for one patient coalesce into one re-screen.
                   ``generation`` counts requests; a request that arrives while the re-screen runs sends the
                   row back to pending when that run finishes, so no change is ever missed.
    seen_versions  resource version keys already resolved (the same version from two channels acts once).
    known_patients patients the bridge has seen admitted or has screened: their results trigger re-screens.
    subscriptions  per subscription: channel, topic/criteria, heartbeat period, event numbers seen/covered,
                   last notification / heartbeat / query times — what gap and heartbeat checks need.
    published      what the bridge wrote to the EHR: key, fingerprint, version, the body as published (served
                   read-only at /fhir), plus study / patient / status columns for search.
    screenings     the latest pre-screen per patient (status, verdicts, as-of) for the coordinator page.
    not_screened   patients the latest pre-screen did not screen (RULES.md §2 "Who is screened": deceased,
                   non-human, no valid Patient resource) with the reason and as-of. A patient is in at most one
                   of ``screenings`` and ``not_screened``: recording one removes the other in the same
                   transaction, so a patient known to be not screened is never listed as screened.

Times are epoch seconds (floats) passed in by the caller — the store never reads a clock. Every SQLite
failure becomes ``StoreError`` whose message names the operation, never a row's content.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bridge.errors import StoreError

if TYPE_CHECKING:
    from bridge.evaluate.eligibility import Screening
    from bridge.model import NotScreened

EventKind = Literal["resource", "query", "catch-up"]
Json = dict[str, Any]
SCHEMA_VERSION = "1"


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class InboxEvent:
    """One thing to process. ``kind``: a resource changed (``resource``), ask the EHR what changed since the
    last query (``query``: an empty notification or a poll), or a catch-up over a window (``catch-up``)."""

    dedupe_key: str
    kind: EventKind
    channel: str
    subscription: str | None = None
    event_number: int | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    patient_id: str | None = None
    payload: Json | None = None


@dataclass(frozen=True)
class Delivery:
    """One notification as received: its events and what it says about its subscription.

    ``notification`` is ``rest-hook`` (classic) or the topic notification type (``handshake``, ``heartbeat``,
    ``event-notification``, ``query-status``, ``query-event``).
    """

    channel: str
    subscription: str
    notification: str
    events: tuple[InboxEvent, ...] = ()
    events_since_start: int | None = None
    topic: str | None = None
    status: str | None = None

    @property
    def kind(self) -> str:
        return "classic" if self.notification == "rest-hook" else "topic"


@dataclass(frozen=True)
class AcceptResult:
    new: int
    duplicates: int


@dataclass(frozen=True)
class InboxEntry:
    id: int
    event: InboxEvent
    received_at: float
    state: str
    attempts: int
    claimed_at: float | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Resolution:
    """What processing one inbox entry concluded, applied atomically with marking it done."""

    rescreen: frozenset[str] = frozenset()
    known: frozenset[str] = frozenset()
    versions: frozenset[str] = frozenset()
    queried: tuple[str, float] | None = None  # (subscription id, time the query started)
    rescreen_delay: float = 0.0  # seconds before a requested re-screen is due (lets a burst coalesce)


@dataclass(frozen=True)
class RescreenTask:
    patient_id: str
    generation: int
    attempts: int
    oldest_request_at: float | None


@dataclass(frozen=True)
class SubscriptionState:
    """What the bridge knows of one subscription. ``id`` is ``Subscription/<id>`` for topic subscriptions
    (as the EHR names it in its notifications) and ``channel/<name>`` for classic ones."""

    id: str
    channel: str
    kind: str = "classic"  # classic | topic | poll
    topic: str | None = None
    criteria: str | None = None
    ehr_id: str | None = None
    heartbeat_seconds: float | None = None
    resource_types: tuple[str, ...] = ()
    status: str | None = None
    max_event_number: int | None = None
    reported_events: int | None = None
    reported_at: float | None = None
    covered_through: int | None = None
    created_at: float | None = None
    last_seen_at: float | None = None
    last_heartbeat_at: float | None = None
    last_query_at: float | None = None
    last_catch_up_at: float | None = None


@dataclass(frozen=True)
class CatchUp:
    """A catch-up the store queued: why (``gap`` / ``heartbeat``), for which subscription, since when."""

    subscription: str
    reason: str
    since: float | None
    first: int | None = None
    last: int | None = None


@dataclass(frozen=True)
class PublishedRecord:
    """One resource the bridge wrote. ``key`` is stable (e.g. ``ResearchSubject|<system>|<value>``)."""

    key: str
    resource_type: str
    resource_id: str | None
    fingerprint: str
    version: str | None
    resource: Json
    updated_at: float


@dataclass(frozen=True)
class ScreeningRecord:
    patient_id: str
    status: str
    verdicts: list[Json]
    as_of: str
    updated_at: float


@dataclass(frozen=True)
class NotScreenedRecord:
    """A patient the pre-screen did not screen (RULES.md §2), with the reason
    (``deceased`` / ``non-human`` / ``no-patient-resource``) and the as-of date it was decided on."""

    patient_id: str
    reason: str
    as_of: str
    updated_at: float


@dataclass(frozen=True)
class StoreStats:
    inbox: dict[str, int] = field(default_factory=dict)
    rescreens: dict[str, int] = field(default_factory=dict)
    last_event_at: float | None = None
    last_notification_at: float | None = None

    @property
    def depth(self) -> int:
        """Inbox entries and re-screens not yet done (pending or claimed)."""
        waiting = ("pending", "claimed")
        return sum(self.inbox.get(s, 0) + self.rescreens.get(s, 0) for s in waiting)


# ---------------------------------------------------------------------------------------------- pure logic


def find_holes(covered: int, seen: Sequence[tuple[int, float]], reported: int | None, reported_at: float | None,
               now: float, grace: float) -> tuple[int, list[tuple[int, int]]]:
    """Missing event numbers above ``covered``, given the numbers ``seen`` (with their receipt times, sorted)
    and the count the EHR ``reported``. A hole counts once the evidence for it is ``grace`` seconds old
    (out-of-order deliveries get that long to fill it). Returns (new covered number, holes as (first, last)).
    Coverage stops at the first hole that is too young, so a late event can still fill it."""
    expected = covered + 1
    holes: list[tuple[int, int]] = []
    for number, received in seen:
        if number < expected:
            continue
        if number > expected:
            if now - received < grace:
                return expected - 1, holes
            holes.append((expected, number - 1))
        expected = number + 1
    if reported is not None and reported >= expected:
        if reported_at is None or now - reported_at < grace:
            return expected - 1, holes
        holes.append((expected, reported))
        expected = reported + 1
    return expected - 1, holes


# ---------------------------------------------------------------------------------------------- interface


class Store(ABC):
    """The state the service keeps. Every method is atomic; times are passed in (epoch seconds)."""

    # inbox ----------------------------------------------------------------------------------------
    @abstractmethod
    def accept(self, delivery: Delivery, now: float) -> AcceptResult:
        """Record a notification: its events (duplicates ignored) and its subscription's state, durably."""

    @abstractmethod
    def enqueue(self, events: Iterable[InboxEvent], now: float) -> AcceptResult:
        """Queue events the bridge makes itself (polls, start-up catch-ups); duplicates ignored."""

    @abstractmethod
    def claim_inbox(self, worker: str, now: float, lease: float, limit: int, max_attempts: int) -> list[InboxEntry]:
        """Claim due entries (pending, or claimed with an expired lease). An expired claim that has used up
        ``max_attempts`` becomes failed instead (a poison entry that keeps killing its worker)."""

    @abstractmethod
    def finish_inbox(self, entry_id: int, worker: str, resolution: Resolution, now: float) -> bool:
        """Mark done and apply the resolution; False when the claim was lost (nothing applied)."""

    @abstractmethod
    def retry_inbox(self, entry_id: int, worker: str, error: str, not_before: float) -> None: ...

    @abstractmethod
    def fail_inbox(self, entry_id: int, worker: str, error: str, now: float) -> None: ...

    @abstractmethod
    def inbox_entry(self, entry_id: int) -> InboxEntry | None: ...

    # re-screens ----------------------------------------------------------------------------------
    @abstractmethod
    def request_rescreens(self, patients: Iterable[str], received_at: float, now: float, delay: float) -> None:
        """Ask for a re-screen of each patient (coalesced per patient), due ``delay`` seconds from now."""

    @abstractmethod
    def claim_rescreens(self, worker: str, now: float, lease: float, limit: int,
                        max_attempts: int) -> list[RescreenTask]: ...

    @abstractmethod
    def finish_rescreen(self, task: RescreenTask, worker: str, status: str, now: float) -> bool:
        """Done; or back to pending when it was requested again meanwhile (returns False then)."""

    @abstractmethod
    def retry_rescreen(self, task: RescreenTask, worker: str, error: str, not_before: float) -> None: ...

    @abstractmethod
    def fail_rescreen(self, task: RescreenTask, worker: str, error: str, now: float) -> None: ...

    @abstractmethod
    def release_claims(self, worker_prefix: str) -> int:
        """Send the claims of workers named ``worker_prefix...`` back to pending: called when a worker
        restarts under the same name, whose earlier claims are certainly dead (no need to wait for the lease)."""

    @abstractmethod
    def requeue_failed(self, now: float) -> int:
        """Send every failed inbox entry and re-screen back to pending (after an outage was fixed)."""

    # patients and versions -------------------------------------------------------------------------
    @abstractmethod
    def add_known(self, patients: Iterable[str], now: float, reason: str) -> None: ...

    @abstractmethod
    def known(self, patients: Iterable[str]) -> set[str]:
        """The subset of ``patients`` already known to the bridge."""

    @abstractmethod
    def seen_versions(self, keys: Iterable[str]) -> set[str]: ...

    # subscriptions --------------------------------------------------------------------------------
    @abstractmethod
    def register_subscription(self, sub: SubscriptionState) -> None:
        """Create or update the configuration part of a subscription (keeps its counters and times)."""

    @abstractmethod
    def subscription(self, sub_id: str) -> SubscriptionState | None: ...

    @abstractmethod
    def subscriptions(self) -> list[SubscriptionState]: ...

    @abstractmethod
    def delete_subscription(self, sub_id: str) -> bool: ...

    @abstractmethod
    def detect_gaps(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        """Queue a catch-up for every hole in a topic subscription's event numbers (see ``find_holes``)."""

    @abstractmethod
    def queue_catch_up(self, sub_id: str, reason: str, since: float | None, now: float,
                       default_types: Sequence[str]) -> CatchUp | None:
        """Queue one catch-up for a subscription (None when the subscription is unknown)."""

    @abstractmethod
    def heartbeat_catch_ups(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        """Queue a catch-up for every subscription silent longer than its heartbeat period + ``grace``."""

    # published resources and screenings ---------------------------------------------------------------
    @abstractmethod
    def put_published(self, record: PublishedRecord) -> None: ...

    @abstractmethod
    def get_published(self, key: str) -> PublishedRecord | None: ...

    @abstractmethod
    def find_published(self, resource_type: str, resource_id: str | None = None, study: str | None = None,
                       patient: str | None = None, status: str | None = None) -> list[PublishedRecord]:
        """Published resources of a type, filtered (``study`` / ``patient`` as ``Type/id``)."""

    @abstractmethod
    def save_screening(self, record: ScreeningRecord) -> None:
        """Record the patient's latest screening (and forget that it was not screened, if it was)."""

    @abstractmethod
    def screening(self, patient_id: str) -> ScreeningRecord | None: ...

    @abstractmethod
    def screenings(self) -> list[ScreeningRecord]: ...

    @abstractmethod
    def mark_not_screened(self, record: NotScreenedRecord) -> bool:
        """Record that the patient is not screened and delete its saved screening, if any (True when one was
        deleted): the coordinator page no longer lists it."""

    @abstractmethod
    def not_screened(self) -> list[NotScreenedRecord]: ...

    def record_prescreen(self, screenings: Iterable[ScreeningRecord],
                         not_screened: Iterable[NotScreenedRecord] = ()) -> None:
        """Record a pre-screen run's results (an implementation may do it in one transaction)."""
        for record in screenings:
            self.save_screening(record)
        for ns in not_screened:
            self.mark_not_screened(ns)

    # housekeeping -----------------------------------------------------------------------------------
    @abstractmethod
    def stats(self) -> StoreStats: ...

    @abstractmethod
    def purge(self, before: float) -> int:
        """Delete done inbox entries and seen versions older than ``before`` (the de-duplication window)."""

    @abstractmethod
    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------- SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('resource', 'query', 'catch-up')),
    channel TEXT NOT NULL,
    subscription TEXT,
    event_number INTEGER,
    resource_type TEXT,
    resource_id TEXT,
    patient_id TEXT,
    payload TEXT,
    received_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    claimed_at REAL,
    claimed_by TEXT,
    done_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS inbox_due ON inbox(state, not_before);
CREATE INDEX IF NOT EXISTS inbox_events ON inbox(subscription, event_number);
CREATE TABLE IF NOT EXISTS rescreens(
    patient_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    generation INTEGER NOT NULL,
    claimed_generation INTEGER NOT NULL DEFAULT 0,
    requested_at REAL NOT NULL,
    oldest_request_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    claimed_at REAL,
    claimed_by TEXT,
    done_at REAL,
    last_status TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS rescreens_due ON rescreens(state, not_before);
CREATE TABLE IF NOT EXISTS seen_versions(key TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS known_patients(patient_id TEXT PRIMARY KEY, since REAL NOT NULL, reason TEXT);
CREATE TABLE IF NOT EXISTS subscriptions(
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT,
    criteria TEXT,
    ehr_id TEXT,
    heartbeat_seconds REAL,
    resource_types TEXT,
    status TEXT,
    max_event_number INTEGER,
    reported_events INTEGER,
    reported_at REAL,
    covered_through INTEGER,
    created_at REAL,
    last_seen_at REAL,
    last_heartbeat_at REAL,
    last_query_at REAL,
    last_catch_up_at REAL
);
CREATE TABLE IF NOT EXISTS published(
    key TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    fingerprint TEXT NOT NULL,
    version TEXT,
    resource TEXT NOT NULL,
    study TEXT,
    patient TEXT,
    status TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS published_type ON published(resource_type, resource_id);
CREATE TABLE IF NOT EXISTS screenings(
    patient_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    verdicts TEXT NOT NULL,
    as_of TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS not_screened(
    patient_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    as_of TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""

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

_PUT_PUBLISHED = """
INSERT INTO published(key, resource_type, resource_id, fingerprint, version, resource, study, patient, status,
                      updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET resource_type = excluded.resource_type, resource_id = excluded.resource_id,
    fingerprint = excluded.fingerprint, version = excluded.version, resource = excluded.resource,
    study = excluded.study, patient = excluded.patient, status = excluded.status, updated_at = excluded.updated_at
"""

_SAVE_SCREENING = """
INSERT INTO screenings(patient_id, status, verdicts, as_of, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(patient_id) DO UPDATE SET status = excluded.status, verdicts = excluded.verdicts,
    as_of = excluded.as_of, updated_at = excluded.updated_at
"""

_MARK_NOT_SCREENED = """
INSERT INTO not_screened(patient_id, reason, as_of, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT(patient_id) DO UPDATE SET reason = excluded.reason, as_of = excluded.as_of,
    updated_at = excluded.updated_at
"""


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _reference(node: Any) -> str | None:
    """``Type/id`` of a Reference element (absolute URLs and ``_history`` cut)."""
    ref = node.get("reference") if isinstance(node, dict) else None
    if not isinstance(ref, str):
        return None
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def _entry(row: sqlite3.Row) -> InboxEntry:
    event = InboxEvent(row["dedupe_key"], row["kind"], row["channel"], row["subscription"], row["event_number"],
                       row["resource_type"], row["resource_id"], row["patient_id"], _loads(row["payload"]))
    return InboxEntry(row["id"], event, row["received_at"], row["state"], row["attempts"], row["claimed_at"],
                      row["last_error"])


def _subscription(row: sqlite3.Row) -> SubscriptionState:
    values = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row iterates values, not keys
    values["resource_types"] = tuple(_loads(values["resource_types"]) or ())
    return SubscriptionState(**values)


def _published(row: sqlite3.Row) -> PublishedRecord:
    return PublishedRecord(row["key"], row["resource_type"], row["resource_id"], row["fingerprint"],
                           row["version"], _loads(row["resource"]), row["updated_at"])


def _screening(row: sqlite3.Row) -> ScreeningRecord:
    return ScreeningRecord(row["patient_id"], row["status"], _loads(row["verdicts"]), row["as_of"],
                           row["updated_at"])


def _not_screened(row: sqlite3.Row) -> NotScreenedRecord:
    return NotScreenedRecord(row["patient_id"], row["reason"], row["as_of"], row["updated_at"])


class SqliteStore(Store):
    """The embedded store: one SQLite file in WAL mode, one connection per thread.

    ``path`` must be a file (``:memory:`` would give every thread its own empty database).
    """

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        if str(path) in ("", ":memory:"):
            raise StoreError("the state store needs a file path, not an in-memory database")
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._migrate()

    # connections and transactions -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                 check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state store {self.path}: {exc}") from None
        with self._lock:
            self._connections.append(db)
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the state store is closed")
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    @contextmanager
    def _write(self, operation: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock is taken up front, no upgrade deadlock)."""
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"state store: {operation} failed: {exc}") from None
        except BaseException:
            self._rollback(db)
            raise

    @contextmanager
    def _read(self, operation: str) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        try:
            yield db
        except sqlite3.Error as exc:
            raise StoreError(f"state store: {operation} failed: {exc}") from None

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            db.execute("ROLLBACK")

    def _migrate(self) -> None:
        with self._read("schema creation") as db:
            db.executescript(_SCHEMA)
        with self._write("schema version") as db:
            db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO NOTHING",
                       (SCHEMA_VERSION,))
            found = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()["value"]
        if found != SCHEMA_VERSION:
            raise StoreError(f"the state store {self.path} has schema version {found}, expected {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()

    # inbox --------------------------------------------------------------------------------------------
    def accept(self, delivery: Delivery, now: float) -> AcceptResult:
        with self._write("accept") as db:
            self._touch_subscription(db, delivery, now)
            new = self._insert_events(db, delivery.events, now)
        return AcceptResult(new, len(delivery.events) - new)

    def enqueue(self, events: Iterable[InboxEvent], now: float) -> AcceptResult:
        events = list(events)
        with self._write("enqueue") as db:
            new = self._insert_events(db, events, now)
        return AcceptResult(new, len(events) - new)

    @staticmethod
    def _insert_events(db: sqlite3.Connection, events: Sequence[InboxEvent], now: float) -> int:
        new = 0
        for ev in events:
            cur = db.execute(_INSERT_EVENT, (ev.dedupe_key, ev.kind, ev.channel, ev.subscription, ev.event_number,
                                             ev.resource_type, ev.resource_id, ev.patient_id, _dumps(ev.payload),
                                             now))
            new += cur.rowcount
        return new

    @staticmethod
    def _initial_coverage(delivery: Delivery) -> int | None:
        """Where event counting starts for a subscription first heard of through this notification."""
        numbers = [e.event_number for e in delivery.events if e.event_number is not None]
        if numbers:
            return min(numbers) - 1
        if delivery.notification in ("handshake", "heartbeat"):
            return delivery.events_since_start or 0
        return None

    def _touch_subscription(self, db: sqlite3.Connection, d: Delivery, now: float) -> None:
        db.execute(_TOUCH_SUBSCRIPTION, (d.subscription, d.channel, d.kind, d.topic, d.status,
                                         self._initial_coverage(d), now, now))
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

    def claim_inbox(self, worker: str, now: float, lease: float, limit: int, max_attempts: int) -> list[InboxEntry]:
        args = {"now": now, "worker": worker, "expired": now - lease, "limit": limit, "max_attempts": max_attempts}
        with self._write("claim inbox") as db:
            db.execute(_POISON.format(table="inbox"), args)
            rows = db.execute(_CLAIM.format(table="inbox", key="id", extra="", order="id"), args).fetchall()
        return sorted((_entry(r) for r in rows), key=lambda e: e.id)

    def finish_inbox(self, entry_id: int, worker: str, resolution: Resolution, now: float) -> bool:
        with self._write("finish inbox entry") as db:
            cur = db.execute("UPDATE inbox SET state = 'done', done_at = ?, payload = NULL, last_error = NULL "
                             "WHERE id = ? AND state = 'claimed' AND claimed_by = ? RETURNING received_at",
                             (now, entry_id, worker))
            row = cur.fetchone()
            if row is None:
                return False
            self._apply(db, resolution, row["received_at"], now)
        return True

    def _apply(self, db: sqlite3.Connection, r: Resolution, received_at: float, now: float) -> None:
        db.executemany("INSERT INTO seen_versions(key, seen_at) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                       [(k, now) for k in sorted(r.versions)])
        self._add_known(db, r.known, now, "admission")
        for patient in sorted(r.rescreen):
            db.execute(_REQUEST_RESCREEN, (patient, now, received_at, now + r.rescreen_delay))
        if r.queried is not None:
            db.execute("UPDATE subscriptions SET last_query_at = MAX(COALESCE(last_query_at, 0), ?) WHERE id = ?",
                       (r.queried[1], r.queried[0]))

    def retry_inbox(self, entry_id: int, worker: str, error: str, not_before: float) -> None:
        with self._write("retry inbox entry") as db:
            db.execute("UPDATE inbox SET state = 'pending', not_before = ?, last_error = ?, claimed_by = NULL "
                       "WHERE id = ? AND state = 'claimed' AND claimed_by = ?", (not_before, error, entry_id, worker))

    def fail_inbox(self, entry_id: int, worker: str, error: str, now: float) -> None:
        with self._write("fail inbox entry") as db:
            db.execute("UPDATE inbox SET state = 'failed', done_at = ?, last_error = ?, claimed_by = NULL "
                       "WHERE id = ? AND state = 'claimed' AND claimed_by = ?", (now, error, entry_id, worker))

    def inbox_entry(self, entry_id: int) -> InboxEntry | None:
        with self._read("read inbox entry") as db:
            row = db.execute("SELECT * FROM inbox WHERE id = ?", (entry_id,)).fetchone()
        return _entry(row) if row else None

    def inbox_entries(self, state: str | None = None) -> list[InboxEntry]:
        """Every inbox entry (optionally of one state), oldest first — for inspection and tests."""
        sql, args = "SELECT * FROM inbox", tuple[str, ...]()
        if state is not None:
            sql, args = sql + " WHERE state = ?", (state,)
        with self._read("list inbox") as db:
            return [_entry(r) for r in db.execute(sql + " ORDER BY id", args).fetchall()]

    # re-screens ---------------------------------------------------------------------------------------
    def request_rescreens(self, patients: Iterable[str], received_at: float, now: float, delay: float) -> None:
        with self._write("request re-screens") as db:
            for patient in sorted(set(patients)):
                db.execute(_REQUEST_RESCREEN, (patient, now, received_at, now + delay))

    def claim_rescreens(self, worker: str, now: float, lease: float, limit: int,
                        max_attempts: int) -> list[RescreenTask]:
        args = {"now": now, "worker": worker, "expired": now - lease, "limit": limit, "max_attempts": max_attempts}
        sql = _CLAIM.format(table="rescreens", key="patient_id", extra=", claimed_generation = generation",
                            order="not_before, patient_id")
        with self._write("claim re-screens") as db:
            db.execute(_POISON.format(table="rescreens"), args)
            rows = db.execute(sql, args).fetchall()
        tasks = [RescreenTask(r["patient_id"], r["generation"], r["attempts"], r["oldest_request_at"]) for r in rows]
        return sorted(tasks, key=lambda t: t.patient_id)

    def finish_rescreen(self, task: RescreenTask, worker: str, status: str, now: float) -> bool:
        with self._write("finish re-screen") as db:
            row = db.execute(_FINISH_RESCREEN, (now, now, status, task.patient_id, worker,
                                                task.generation)).fetchone()
        return row is not None and row["state"] == "done"

    def retry_rescreen(self, task: RescreenTask, worker: str, error: str, not_before: float) -> None:
        with self._write("retry re-screen") as db:
            db.execute("UPDATE rescreens SET state = 'pending', not_before = ?, last_error = ?, claimed_by = NULL "
                       "WHERE patient_id = ? AND state = 'claimed' AND claimed_by = ?",
                       (not_before, error, task.patient_id, worker))

    def fail_rescreen(self, task: RescreenTask, worker: str, error: str, now: float) -> None:
        with self._write("fail re-screen") as db:
            db.execute("UPDATE rescreens SET state = 'failed', done_at = ?, last_error = ?, claimed_by = NULL "
                       "WHERE patient_id = ? AND state = 'claimed' AND claimed_by = ?",
                       (now, error, task.patient_id, worker))

    def rescreen_state(self, patient_id: str) -> dict[str, Any] | None:
        """The re-screen row of one patient as a dict — for inspection and tests."""
        with self._read("read re-screen") as db:
            row = db.execute("SELECT * FROM rescreens WHERE patient_id = ?", (patient_id,)).fetchone()
        return {k: row[k] for k in row.keys()} if row else None  # noqa: SIM118 - sqlite3.Row

    def release_claims(self, worker_prefix: str) -> int:
        pattern = worker_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._write("release claims") as db:
            n = 0
            for table in ("inbox", "rescreens"):
                sql = f"UPDATE {table} SET state = 'pending', claimed_by = NULL WHERE state = 'claimed' " \
                      "AND claimed_by LIKE ? ESCAPE '\\'"  # noqa: S608 - fixed table names
                n += db.execute(sql, (pattern,)).rowcount
        return n

    def requeue_failed(self, now: float) -> int:
        with self._write("requeue failed") as db:
            n = db.execute("UPDATE inbox SET state = 'pending', attempts = 0, not_before = ? "
                           "WHERE state = 'failed'", (now,)).rowcount
            n += db.execute("UPDATE rescreens SET state = 'pending', attempts = 0, not_before = ? "
                            "WHERE state = 'failed'", (now,)).rowcount
        return n

    # patients and versions -------------------------------------------------------------------------------
    @staticmethod
    def _add_known(db: sqlite3.Connection, patients: Iterable[str], now: float, reason: str) -> None:
        db.executemany("INSERT INTO known_patients(patient_id, since, reason) VALUES (?, ?, ?) "
                       "ON CONFLICT(patient_id) DO NOTHING", [(p, now, reason) for p in sorted(set(patients))])

    def add_known(self, patients: Iterable[str], now: float, reason: str) -> None:
        with self._write("add known patients") as db:
            self._add_known(db, patients, now, reason)

    def known(self, patients: Iterable[str]) -> set[str]:
        return self._present("known_patients", "patient_id", patients)

    def seen_versions(self, keys: Iterable[str]) -> set[str]:
        return self._present("seen_versions", "key", keys)

    def _present(self, table: str, column: str, values: Iterable[str]) -> set[str]:
        wanted, found = sorted(set(values)), set()
        with self._read(f"look up {table}") as db:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT {column} FROM {table} WHERE {column} IN ({marks})"  # noqa: S608 - fixed names
                found |= {r[0] for r in db.execute(sql, chunk)}
        return found

    # subscriptions ----------------------------------------------------------------------------------
    def register_subscription(self, sub: SubscriptionState) -> None:
        with self._write("register subscription") as db:
            db.execute(_REGISTER_SUBSCRIPTION, (sub.id, sub.channel, sub.kind, sub.topic, sub.criteria, sub.ehr_id,
                                                sub.heartbeat_seconds, _dumps(list(sub.resource_types)), sub.status,
                                                sub.covered_through, sub.created_at))

    def subscription(self, sub_id: str) -> SubscriptionState | None:
        with self._read("read subscription") as db:
            row = db.execute("SELECT * FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
        return _subscription(row) if row else None

    def subscriptions(self) -> list[SubscriptionState]:
        with self._read("list subscriptions") as db:
            return [_subscription(r) for r in db.execute("SELECT * FROM subscriptions ORDER BY id").fetchall()]

    def delete_subscription(self, sub_id: str) -> bool:
        with self._write("delete subscription") as db:
            return db.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,)).rowcount > 0

    def detect_gaps(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        found: list[CatchUp] = []
        with self._write("detect gaps") as db:
            rows = db.execute("SELECT * FROM subscriptions WHERE kind = 'topic' AND covered_through IS NOT NULL")
            for sub in [_subscription(r) for r in rows.fetchall()]:
                found += self._gaps_of(db, sub, now, grace, default_types)
        return found

    def _gaps_of(self, db: sqlite3.Connection, sub: SubscriptionState, now: float, grace: float,
                 default_types: Sequence[str]) -> list[CatchUp]:
        covered = sub.covered_through or 0
        seen = [(r[0], r[1]) for r in db.execute(
            "SELECT event_number, MIN(received_at) FROM inbox WHERE subscription = ? AND event_number > ? "
            "GROUP BY event_number ORDER BY event_number", (sub.id, covered))]
        new_covered, holes = find_holes(covered, seen, sub.reported_events, sub.reported_at, now, grace)
        out = []
        for first, last in holes:
            since = self._since_before(db, sub, first)
            self._queue_catch_up(db, sub, f"gap:{first}-{last}", "gap", since, default_types, now)
            out.append(CatchUp(sub.id, "gap", since, first, last))
        if new_covered != covered:
            db.execute("UPDATE subscriptions SET covered_through = ? WHERE id = ?", (new_covered, sub.id))
        return out

    @staticmethod
    def _since_before(db: sqlite3.Connection, sub: SubscriptionState, first: int) -> float | None:
        """When the last event before a hole arrived (the catch-up window starts there)."""
        row = db.execute("SELECT MAX(received_at) FROM inbox WHERE subscription = ? AND event_number < ?",
                         (sub.id, first)).fetchone()
        return row[0] if row[0] is not None else sub.created_at

    def queue_catch_up(self, sub_id: str, reason: str, since: float | None, now: float,
                       default_types: Sequence[str]) -> CatchUp | None:
        with self._write("queue catch-up") as db:
            row = db.execute("SELECT * FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
            if row is None:
                return None
            self._queue_catch_up(db, _subscription(row), f"{reason}:{now:.3f}", reason, since, default_types, now)
        return CatchUp(sub_id, reason, since)

    def heartbeat_catch_ups(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        out = []
        with self._write("heartbeat check") as db:
            rows = db.execute("SELECT * FROM subscriptions WHERE heartbeat_seconds IS NOT NULL").fetchall()
            for sub in [_subscription(r) for r in rows]:
                last = max(t for t in (sub.last_seen_at, sub.last_catch_up_at, sub.created_at, 0.0) if t is not None)
                if now - last > (sub.heartbeat_seconds or 0) + grace:
                    since = sub.last_seen_at or sub.created_at
                    self._queue_catch_up(db, sub, f"heartbeat:{now:.3f}", "heartbeat", since, default_types, now)
                    out.append(CatchUp(sub.id, "heartbeat", since))
        return out

    def _queue_catch_up(self, db: sqlite3.Connection, sub: SubscriptionState, tag: str, reason: str,
                        since: float | None, default_types: Sequence[str], now: float) -> None:
        payload = {"reason": reason, "since": since, "types": list(sub.resource_types or default_types)}
        event = InboxEvent(f"catch-up:{sub.id}:{tag}", "catch-up", sub.channel, sub.id, payload=payload)
        self._insert_events(db, [event], now)
        db.execute("UPDATE subscriptions SET last_catch_up_at = ? WHERE id = ?", (now, sub.id))

    # published resources and screenings -------------------------------------------------------------
    def put_published(self, record: PublishedRecord) -> None:
        res = record.resource
        study, patient = _reference(res.get("study")), _reference(res.get("individual"))
        status = res.get("status") if isinstance(res.get("status"), str) else None
        with self._write("record published resource") as db:
            db.execute(_PUT_PUBLISHED, (record.key, record.resource_type, record.resource_id, record.fingerprint,
                                        record.version, _dumps(res), study, patient, status, record.updated_at))

    def get_published(self, key: str) -> PublishedRecord | None:
        with self._read("read published resource") as db:
            row = db.execute("SELECT * FROM published WHERE key = ?", (key,)).fetchone()
        return _published(row) if row else None

    def find_published(self, resource_type: str, resource_id: str | None = None, study: str | None = None,
                       patient: str | None = None, status: str | None = None) -> list[PublishedRecord]:
        sql, args = "SELECT * FROM published WHERE resource_type = ?", [resource_type]
        for column, value in (("resource_id", resource_id), ("study", study), ("patient", patient),
                              ("status", status)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        with self._read("search published resources") as db:
            return [_published(r) for r in db.execute(sql + " ORDER BY key", args).fetchall()]

    @staticmethod
    def _save_screening(db: sqlite3.Connection, record: ScreeningRecord) -> None:
        db.execute(_SAVE_SCREENING, (record.patient_id, record.status, _dumps(record.verdicts), record.as_of,
                                     record.updated_at))
        db.execute("DELETE FROM not_screened WHERE patient_id = ?", (record.patient_id,))

    @staticmethod
    def _mark_not_screened(db: sqlite3.Connection, record: NotScreenedRecord) -> bool:
        db.execute(_MARK_NOT_SCREENED, (record.patient_id, record.reason, record.as_of, record.updated_at))
        return db.execute("DELETE FROM screenings WHERE patient_id = ?", (record.patient_id,)).rowcount > 0

    def save_screening(self, record: ScreeningRecord) -> None:
        with self._write("save screening") as db:
            self._save_screening(db, record)

    def mark_not_screened(self, record: NotScreenedRecord) -> bool:
        with self._write("record not screened") as db:
            return self._mark_not_screened(db, record)

    def not_screened(self) -> list[NotScreenedRecord]:
        with self._read("list not screened") as db:
            return [_not_screened(r) for r in db.execute("SELECT * FROM not_screened ORDER BY patient_id")]

    def record_prescreen(self, screenings: Iterable[ScreeningRecord],
                         not_screened: Iterable[NotScreenedRecord] = ()) -> None:
        with self._write("record pre-screen") as db:
            for record in screenings:
                self._save_screening(db, record)
            for ns in not_screened:
                self._mark_not_screened(db, ns)

    def screening(self, patient_id: str) -> ScreeningRecord | None:
        with self._read("read screening") as db:
            row = db.execute("SELECT * FROM screenings WHERE patient_id = ?", (patient_id,)).fetchone()
        return _screening(row) if row else None

    def screenings(self) -> list[ScreeningRecord]:
        with self._read("list screenings") as db:
            return [_screening(r) for r in db.execute("SELECT * FROM screenings ORDER BY patient_id").fetchall()]

    # housekeeping -------------------------------------------------------------------------------------
    def stats(self) -> StoreStats:
        with self._read("statistics") as db:
            inbox = {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM inbox GROUP BY state")}
            rescreens = {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM rescreens GROUP BY state")}
            last_event = db.execute("SELECT MAX(received_at) FROM inbox WHERE kind != 'catch-up'").fetchone()[0]
            last_note = db.execute("SELECT MAX(last_seen_at) FROM subscriptions").fetchone()[0]
        return StoreStats(inbox, rescreens, last_event, last_note)

    def purge(self, before: float) -> int:
        with self._write("purge") as db:
            n = db.execute("DELETE FROM inbox WHERE state = 'done' AND done_at < ?", (before,)).rowcount
            n += db.execute("DELETE FROM seen_versions WHERE seen_at < ?", (before,)).rowcount
        return n


# ---------------------------------------------------------------------------------------------- pre-screen runs


def screening_record(screening: Screening, as_of: date | str, now: float) -> ScreeningRecord:
    """The stored form of one screening (bare patient id, verdicts as ``{criterion, result, evidence, reason}``)."""
    verdicts = [{"criterion": v.criterion, **v.as_json()} for v in screening.verdicts]
    return ScreeningRecord(screening.patient.removeprefix("Patient/"), screening.status, verdicts, _iso(as_of), now)


def not_screened_record(ns: NotScreened, as_of: date | str, now: float) -> NotScreenedRecord:
    return NotScreenedRecord(ns.patient.removeprefix("Patient/"), ns.reason, _iso(as_of), now)


def _iso(as_of: date | str) -> str:
    return as_of.isoformat() if isinstance(as_of, date) else as_of


def save_prescreen(store: Store, screenings: Iterable[Screening], not_screened: Iterable[NotScreened],
                   as_of: date | str, now: float) -> tuple[int, int]:
    """Record a pre-screen run for the coordinator page — what ``bridge prescreen --save`` and the service both
    call: each screening replaces the patient's older one, and each not-screened patient (RULES.md §2) is marked
    so, its older screening deleted, so the page never lists it. Returns (screenings saved, not screened)."""
    records = [screening_record(s, as_of, now) for s in screenings]
    excluded = [not_screened_record(ns, as_of, now) for ns in not_screened]
    store.record_prescreen(records, excluded)
    return len(records), len(excluded)


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
