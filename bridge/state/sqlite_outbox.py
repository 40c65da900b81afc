"""``RegistryOutbox`` on SQLite: ``registry_outbox`` and ``registry_crid`` in the state database.

``SqliteOutbox(path)`` opens the file itself (what ``bridge registry submit`` / ``status`` do);
``SqliteState.registry_outbox()`` gives one over the service's open database. Either way every state change
is its own ``BEGIN IMMEDIATE`` transaction, committed with ``synchronous=FULL`` (see ``bridge.state.outbox``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from bridge.state.outbox import DEFAULT_LEASE_SECONDS, STATES, WITHDRAWN, OutboxBase, OutboxRow
from bridge.state.sqlite import SqliteDatabase

Json = dict[str, Any]

_COLUMNS = ("key, package_id, timepoint, pseudonym, state, attempts, enqueued_at, updated_at, last_status, "
            "last_error, receipt, sent_at")


def _row(values: tuple[Any, ...], body: str | None = None) -> OutboxRow:
    (key, package_id, timepoint, pseudonym, state, attempts, enqueued, updated, status, error, receipt,
     sent_at) = values
    return OutboxRow(key, package_id, timepoint, pseudonym, state, attempts, enqueued, updated, status, error,
                     json.loads(receipt) if receipt else None, sent_at, json.loads(body) if body else None)


class SqliteOutbox(OutboxBase):
    """The registry outbox and CRID cache; one instance per process (its owner is ``host:pid``)."""

    def __init__(self, database: SqliteDatabase | str | os.PathLike[str], clock: Callable[[], float] = time.time,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        owns = not isinstance(database, SqliteDatabase)
        self._db = database if isinstance(database, SqliteDatabase) else SqliteDatabase(database)
        self.path = self._db.path
        super().__init__(self._db.close if owns else None, clock, lease_seconds)

    # ------------------------------------------------------------------ packages

    def enqueue(self, key: str, package_id: str, timepoint: str, pseudonym: str, bundle: Json) -> bool:
        """Queue a package; False when this exact content (key) is already known. Supersedes unsent versions."""
        now = self._now()
        body = json.dumps(bundle, ensure_ascii=False)
        with self._db.write("queue registry package") as db:
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
        with self._db.write("withdraw registry packages") as db:
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
        with self._db.write("claim registry package") as db:
            rows = db.execute(f"SELECT {_COLUMNS}, owner, lease_until, body FROM registry_outbox "  # noqa: S608 - constant columns
                              "WHERE state IN ('pending', 'sending') ORDER BY rowid").fetchall()
            chosen = next((tuple(r) for r in rows if self._claimable(r[4], r[12], r[13])), None)
            if chosen is None:
                return None
            db.execute("UPDATE registry_outbox SET state = 'sending', owner = ?, lease_until = ?, "
                       "attempts = attempts + 1, updated_at = ? WHERE key = ?",
                       (self.owner, self.clock() + self.lease_seconds, self._now(), chosen[0]))
        row = _row(chosen[:12], chosen[14])
        return replace(row, state="sending", attempts=row.attempts + 1)

    def _set(self, key: str, state: str, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        extra = f", {columns}" if columns else ""
        with self._db.write(f"mark registry package {state}") as db:
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
        with self._db.write("requeue failed registry packages") as db:
            cur = db.execute("UPDATE registry_outbox SET state = 'pending', updated_at = ? WHERE state = 'failed'",
                             (self._now(),))
            return cur.rowcount

    def rows(self, states: tuple[str, ...] = STATES) -> list[OutboxRow]:
        """The packages in the given states, oldest first (without bodies)."""
        marks = ", ".join("?" for _ in states)
        with self._db.read("list registry packages") as db:
            found = db.execute(f"SELECT {_COLUMNS} FROM registry_outbox WHERE state IN ({marks}) "  # noqa: S608 - placeholders
                               "ORDER BY rowid", states).fetchall()
        return [_row(tuple(r)) for r in found]

    def counts(self) -> dict[str, int]:
        with self._db.read("count registry packages") as db:
            found = {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM registry_outbox GROUP BY state")}
        return {s: int(found.get(s, 0)) for s in STATES}

    # ------------------------------------------------------------------ CRID cache

    def crid(self, pseudonym: str) -> str | None:
        with self._db.read("read registry patient id") as db:
            found = db.execute("SELECT crid FROM registry_crid WHERE pseudonym = ?", (pseudonym,)).fetchone()
        return str(found[0]) if found else None

    def remember_crid(self, pseudonym: str, crid: str) -> None:
        with self._db.write("store registry patient id") as db:
            db.execute("INSERT OR REPLACE INTO registry_crid (pseudonym, crid, obtained_at) VALUES (?, ?, ?)",
                       (pseudonym, crid, self._now()))


__all__ = ["SqliteOutbox"]
