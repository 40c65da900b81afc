"""The durable outbox of registry packages and the cache of registry patient ids (SQLite, WAL).

Tables live in the state database (``Settings.db_path``) beside the service's own, prefixed ``registry_``.
Every state change is its own committed transaction (``synchronous=FULL``), so a process killed at any
instant leaves each package in a state the next run knows how to continue from::

    pending ──claim──► sending ──registry said 2xx / 409──► sent      (receipt stored)
       ▲                 │ ├────transient error, auth───────► pending  (attempts, last error kept)
       │                 │ └────registry rejected (4xx)─────► failed   (``requeue_failed`` -> pending)
       │                 └─process died─► sending, lease expired or owner gone -> claimed again
       ├── a newer version of the same package id enqueued before this one was sent ──► superseded
       └── no longer in the export a submit was given (consent withdrawn, no longer due) ──► withdrawn

A withdrawn package is never sent and its content is not kept (its body is emptied, as is that of superseded
versions of it); enqueueing exactly that package again (consent given again) makes it pending once more.

A package is known by its idempotency key (the SHA-256 of its content): enqueueing the same content twice
is a no-op; a changed package (same id, new key) supersedes an unsent older version and is sent after it
was sent before (a correction). Re-sending after a crash uses the same key, so the registry can tell it has
the package already (409 / replayed answer) — the package is received exactly once.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.errors import StoreError

STATES = ("pending", "sending", "sent", "failed", "superseded", "withdrawn")
WITHDRAWN = "no longer in the export (consent withdrawn, or no longer due)"
DEFAULT_LEASE_SECONDS = 300.0

_TABLE = """
CREATE TABLE IF NOT EXISTS registry_outbox (
    key         TEXT PRIMARY KEY,
    package_id  TEXT NOT NULL,
    timepoint   TEXT NOT NULL,
    pseudonym   TEXT NOT NULL,
    body        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'superseded', 'withdrawn')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    enqueued_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    owner       TEXT,
    lease_until REAL,
    last_status INTEGER,
    last_error  TEXT,
    receipt     TEXT,
    sent_at     TEXT
);
"""
_SCHEMA = _TABLE + """
CREATE INDEX IF NOT EXISTS registry_outbox_state ON registry_outbox (state);
CREATE INDEX IF NOT EXISTS registry_outbox_package ON registry_outbox (package_id);
CREATE TABLE IF NOT EXISTS registry_crid (
    pseudonym   TEXT PRIMARY KEY,
    crid        TEXT NOT NULL,
    obtained_at TEXT NOT NULL
);
"""


def _migrate(db: sqlite3.Connection) -> None:
    """An outbox made before the 'withdrawn' state: the table is rebuilt with the new CHECK, rows kept."""
    found = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'registry_outbox'").fetchone()
    if found is None or "'withdrawn'" in found[0]:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE registry_outbox RENAME TO registry_outbox_before_withdrawn")
        db.execute(_TABLE)
        db.execute("INSERT INTO registry_outbox SELECT * FROM registry_outbox_before_withdrawn")
        db.execute("DROP TABLE registry_outbox_before_withdrawn")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    db.executescript(_SCHEMA)  # the indexes went with the old table


Json = dict[str, Any]


@dataclass(frozen=True)
class OutboxRow:
    """One package in the outbox (``body`` only when claimed for sending)."""

    key: str
    package_id: str
    timepoint: str
    pseudonym: str
    state: str
    attempts: int
    enqueued_at: str
    updated_at: str
    last_status: int | None = None
    last_error: str | None = None
    receipt: Json | None = None
    sent_at: str | None = None
    body: Json | None = None

    def as_json(self) -> Json:
        return {"package": self.package_id, "timepoint": self.timepoint, "key": self.key, "state": self.state,
                "attempts": self.attempts, "enqueuedAt": self.enqueued_at, "updatedAt": self.updated_at,
                "lastStatus": self.last_status, "lastError": self.last_error, "sentAt": self.sent_at,
                "receipt": self.receipt}


_COLUMNS = ("key, package_id, timepoint, pseudonym, state, attempts, enqueued_at, updated_at, last_status, "
            "last_error, receipt, sent_at")


def _row(values: tuple[Any, ...], body: str | None = None) -> OutboxRow:
    (key, package_id, timepoint, pseudonym, state, attempts, enqueued, updated, status, error, receipt,
     sent_at) = values
    return OutboxRow(key, package_id, timepoint, pseudonym, state, attempts, enqueued, updated, status, error,
                     json.loads(receipt) if receipt else None, sent_at, json.loads(body) if body else None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(owner: str | None, host: str) -> bool:
    """True when ``owner`` (``host:pid``) is a process of this host that no longer runs."""
    if not owner or ":" not in owner:
        return True
    where, _, pid = owner.rpartition(":")
    return where == host and pid.isdigit() and not _pid_alive(int(pid))


class Outbox:
    """The registry outbox and CRID cache in one SQLite file; one instance per process."""

    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], float] = time.time,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.path = str(path)
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}"
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:" and not Path(self.path).resolve().parent.is_dir():
            raise StoreError(f"state store {self.path}: its directory does not exist")
        try:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            _migrate(db)
        except sqlite3.Error as exc:
            raise StoreError(f"state store {self.path}: {type(exc).__name__}") from None
        return db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"state store {self.path}: {type(exc).__name__}") from None

    def _now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    # ------------------------------------------------------------------ packages

    def enqueue(self, key: str, package_id: str, timepoint: str, pseudonym: str, bundle: Json) -> bool:
        """Queue a package; False when this exact content (key) is already known. Supersedes unsent versions."""
        now = self._now()
        body = json.dumps(bundle, ensure_ascii=False)
        with self._tx() as db:
            known = db.execute("SELECT state FROM registry_outbox WHERE key = ?", (key,)).fetchone()
            if known and known[0] != "withdrawn":
                return False
            db.execute("UPDATE registry_outbox SET state = 'superseded', updated_at = ? "
                       "WHERE package_id = ? AND state IN ('pending', 'failed')", (now, package_id))
            if known:  # withdrawn, and now in an export again (consent given again): pending once more
                db.execute("UPDATE registry_outbox SET state = 'pending', body = ?, last_error = NULL, "
                           "updated_at = ? WHERE key = ?", (body, now, key))
            else:
                db.execute("INSERT INTO registry_outbox (key, package_id, timepoint, pseudonym, body, state, "
                           "enqueued_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                           (key, package_id, timepoint, pseudonym, body, now, now))
        return True

    def withdraw_except(self, package_ids: Collection[str]) -> int:
        """Every unsent package whose id is not in ``package_ids`` becomes ``withdrawn`` (never sent; its body
        emptied; superseded versions of it emptied too). A package being sent right now by a live process is
        left alone. Returns how many were withdrawn."""
        now, keep = self._now(), set(package_ids)
        withdrawn = 0
        with self._tx() as db:
            rows = db.execute("SELECT key, package_id, state, owner, lease_until FROM registry_outbox "
                              "WHERE state IN ('pending', 'sending', 'failed', 'superseded')").fetchall()
            for key, package_id, state, owner, lease_until in rows:
                if package_id in keep or (state == "sending" and not self._claimable(state, owner, lease_until)):
                    continue
                if state == "superseded":
                    db.execute("UPDATE registry_outbox SET body = '{}' WHERE key = ?", (key,))
                    continue
                db.execute("UPDATE registry_outbox SET state = 'withdrawn', body = '{}', owner = NULL, "
                           "lease_until = NULL, last_error = ?, updated_at = ? WHERE key = ?", (WITHDRAWN, now, key))
                withdrawn += 1
        return withdrawn

    def claim(self) -> OutboxRow | None:
        """The next package to send (oldest first), now ``sending`` under this process's lease; None when done."""
        with self._tx() as db:
            rows = db.execute(f"SELECT {_COLUMNS}, owner, lease_until, body FROM registry_outbox "  # noqa: S608 - constant columns
                              "WHERE state IN ('pending', 'sending') ORDER BY rowid").fetchall()
            chosen = next((r for r in rows if self._claimable(r[4], r[12], r[13])), None)
            if chosen is None:
                return None
            db.execute("UPDATE registry_outbox SET state = 'sending', owner = ?, lease_until = ?, "
                       "attempts = attempts + 1, updated_at = ? WHERE key = ?",
                       (self.owner, self.clock() + self.lease_seconds, self._now(), chosen[0]))
        row = _row(chosen[:12], chosen[14])
        return replace(row, state="sending", attempts=row.attempts + 1)

    def _claimable(self, state: str, owner: str | None, lease_until: float | None) -> bool:
        if state == "pending":
            return True
        return (lease_until or 0.0) < self.clock() or owner_gone(owner, self.host)

    def _set(self, key: str, state: str, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        extra = f", {columns}" if columns else ""
        with self._tx() as db:
            db.execute(f"UPDATE registry_outbox SET state = ?, owner = NULL, lease_until = NULL, "  # noqa: S608 - names are ours
                       f"updated_at = ?{extra} WHERE key = ?", (state, self._now(), *values.values(), key))

    def mark_sent(self, key: str, status: int, receipt: Json) -> None:
        self._set(key, "sent", last_status=status, last_error=None, sent_at=self._now(),
                  receipt=json.dumps(receipt, ensure_ascii=False))

    def mark_pending(self, key: str, status: int | None, error: str) -> None:
        self._set(key, "pending", last_status=status, last_error=error)

    def mark_failed(self, key: str, status: int | None, error: str) -> None:
        self._set(key, "failed", last_status=status, last_error=error)

    def requeue_failed(self) -> int:
        """Failed packages back to pending (after the cause was fixed); returns how many."""
        with self._tx() as db:
            cur = db.execute("UPDATE registry_outbox SET state = 'pending', updated_at = ? WHERE state = 'failed'",
                             (self._now(),))
            return cur.rowcount

    def rows(self, states: tuple[str, ...] = STATES) -> list[OutboxRow]:
        """The packages in the given states, oldest first (without bodies)."""
        marks = ", ".join("?" for _ in states)
        try:
            found = self._db.execute(f"SELECT {_COLUMNS} FROM registry_outbox WHERE state IN ({marks}) "  # noqa: S608 - placeholders
                                     "ORDER BY rowid", states).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"state store {self.path}: {type(exc).__name__}") from None
        return [_row(r) for r in found]

    def counts(self) -> dict[str, int]:
        found = dict(self._db.execute("SELECT state, COUNT(*) FROM registry_outbox GROUP BY state").fetchall())
        return {s: int(found.get(s, 0)) for s in STATES}

    # ------------------------------------------------------------------ CRID cache

    def crid(self, pseudonym: str) -> str | None:
        found = self._db.execute("SELECT crid FROM registry_crid WHERE pseudonym = ?", (pseudonym,)).fetchone()
        return str(found[0]) if found else None

    def remember_crid(self, pseudonym: str, crid: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO registry_crid (pseudonym, crid, obtained_at) VALUES (?, ?, ?)",
                       (pseudonym, crid, self._now()))


__all__ = ["DEFAULT_LEASE_SECONDS", "STATES", "WITHDRAWN", "Outbox", "OutboxRow", "owner_gone"]
