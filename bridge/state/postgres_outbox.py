"""``RegistryOutbox`` on PostgreSQL: ``registry_outbox`` and ``registry_crid`` in the state database.

``PostgresOutbox(url)`` opens the database itself (``bridge registry submit`` / ``status``);
``PostgresState.registry_outbox()`` gives one over the service's pool. Every state change is its own
transaction (see ``bridge.state.outbox``). Claiming locks the one chosen row with ``FOR UPDATE SKIP LOCKED``
and re-checks it under the lock, so two processes submitting at once each take a different package and each
package is claimed once; one whose sender died (lease expired, or a dead process on this host) is claimable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from bridge.state.outbox import DEFAULT_LEASE_SECONDS, STATES, WITHDRAWN, OutboxBase, OutboxRow
from bridge.state.postgres import PostgresDatabase, Row, xact_lock

Json = dict[str, Any]

_COLUMNS = ("key, package_id, timepoint, pseudonym, state, attempts, enqueued_at, updated_at, last_status, "
            "last_error, receipt, sent_at")


def _row(r: Row, with_body: bool = False) -> OutboxRow:
    return OutboxRow(r["key"], r["package_id"], r["timepoint"], r["pseudonym"], r["state"], r["attempts"],
                     r["enqueued_at"], r["updated_at"], r["last_status"], r["last_error"],
                     json.loads(r["receipt"]) if r["receipt"] else None, r["sent_at"],
                     json.loads(r["body"]) if with_body and r["body"] else None)


class PostgresOutbox(OutboxBase):
    """The registry outbox and CRID cache; one instance per process (its owner is ``host:pid``)."""

    def __init__(self, database: PostgresDatabase | str, clock: Callable[[], float] = time.time,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        owns = not isinstance(database, PostgresDatabase)
        self._db = database if isinstance(database, PostgresDatabase) else PostgresDatabase(database, max_size=2)
        self.path = self._db.where
        super().__init__(self._db.close if owns else None, clock, lease_seconds)

    # ------------------------------------------------------------------ packages

    def enqueue(self, key: str, package_id: str, timepoint: str, pseudonym: str, bundle: Json) -> bool:
        """Queue a package; False when this exact content (key) is already known. Supersedes unsent versions."""
        now = self._now()
        body = json.dumps(bundle, ensure_ascii=False)
        with self._db.write("queue registry package") as cur:
            xact_lock(cur, f"registry-package:{package_id}")  # two submits of one package: one supersedes
            known = cur.execute("SELECT state FROM registry_outbox WHERE key = %s", (key,)).fetchone()
            if known and known["state"] != "withdrawn":
                return False
            cur.execute("UPDATE registry_outbox SET state = 'superseded', updated_at = %s "
                        "WHERE package_id = %s AND state IN ('pending', 'failed')", (now, package_id))
            if known:  # withdrawn, and now in an export again (consent given again): pending once more
                cur.execute("UPDATE registry_outbox SET state = 'pending', body = %s, last_error = NULL, "
                            "updated_at = %s WHERE key = %s", (body, now, key))
            else:
                cur.execute("INSERT INTO registry_outbox (key, package_id, timepoint, pseudonym, body, state, "
                            "enqueued_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'pending', %s, %s)",
                            (key, package_id, timepoint, pseudonym, body, now, now))
        return True

    def withdraw_except(self, package_ids: Collection[str]) -> int:
        """Every unsent package whose id is not in ``package_ids`` becomes ``withdrawn`` (see the Protocol)."""
        now, keep = self._now(), set(package_ids)
        withdrawn = 0
        with self._db.write("withdraw registry packages") as cur:
            rows = cur.execute("SELECT key, package_id, state, owner, lease_until FROM registry_outbox "
                               "WHERE state IN ('pending', 'sending', 'failed', 'superseded') ORDER BY seq "
                               "FOR UPDATE").fetchall()
            for r in rows:
                if r["package_id"] in keep or (r["state"] == "sending" and not self._row_claimable(r)):
                    continue
                if r["state"] == "superseded":
                    cur.execute("UPDATE registry_outbox SET body = '{}' WHERE key = %s", (r["key"],))
                    continue
                cur.execute("UPDATE registry_outbox SET state = 'withdrawn', body = '{}', owner = NULL, "
                            "lease_until = NULL, last_error = %s, updated_at = %s WHERE key = %s",
                            (WITHDRAWN, now, r["key"]))
                withdrawn += 1
        return withdrawn

    def claim(self) -> OutboxRow | None:
        """The next package to send (oldest first), now ``sending`` under this process's lease; None when done."""
        with self._db.read("list registry packages to send") as cur:
            candidates = cur.execute("SELECT key, state, owner, lease_until FROM registry_outbox "
                                     "WHERE state IN ('pending', 'sending') ORDER BY seq").fetchall()
        for candidate in candidates:
            if self._row_claimable(candidate):
                claimed = self._claim_one(candidate["key"])
                if claimed is not None:
                    return claimed
        return None

    def _claim_one(self, key: str) -> OutboxRow | None:
        """Claim ``key`` if it is still claimable once locked (None: another process took it first)."""
        with self._db.write("claim registry package") as cur:
            row = cur.execute(f"SELECT {_COLUMNS}, owner, lease_until, body FROM registry_outbox "  # noqa: S608 - constant columns
                              "WHERE key = %s AND state IN ('pending', 'sending') FOR UPDATE SKIP LOCKED",
                              (key,)).fetchone()
            if row is None or not self._row_claimable(row):
                return None
            cur.execute("UPDATE registry_outbox SET state = 'sending', owner = %s, lease_until = %s, "
                        "attempts = attempts + 1, updated_at = %s WHERE key = %s",
                        (self.owner, self.clock() + self.lease_seconds, self._now(), key))
        claimed = _row(row, with_body=True)
        return replace(claimed, state="sending", attempts=claimed.attempts + 1)

    def _row_claimable(self, row: Row) -> bool:
        return self._claimable(row["state"], row["owner"], row["lease_until"])

    def _set(self, key: str, state: str, **values: Any) -> None:
        columns = "".join(f", {name} = %s" for name in values)
        with self._db.write(f"mark registry package {state}") as cur:
            cur.execute(f"UPDATE registry_outbox SET state = %s, owner = NULL, lease_until = NULL, "  # noqa: S608 - names are ours
                        f"updated_at = %s{columns} WHERE key = %s", (state, self._now(), *values.values(), key))

    def mark_sent(self, key: str, status: int, receipt: Json) -> None:
        self._set(key, "sent", last_status=status, last_error=None, sent_at=self._now(),
                  receipt=json.dumps(receipt, ensure_ascii=False))

    def mark_pending(self, key: str, status: int | None, error: str) -> None:
        self._set(key, "pending", last_status=status, last_error=error)

    def mark_failed(self, key: str, status: int | None, error: str) -> None:
        self._set(key, "failed", last_status=status, last_error=error)

    def requeue_failed(self) -> int:
        """Failed packages back to pending (after the cause was fixed); returns how many."""
        with self._db.write("requeue failed registry packages") as cur:
            cur.execute("UPDATE registry_outbox SET state = 'pending', updated_at = %s WHERE state = 'failed'",
                        (self._now(),))
            return cur.rowcount

    def rows(self, states: tuple[str, ...] = STATES) -> list[OutboxRow]:
        """The packages in the given states, oldest first (without bodies)."""
        with self._db.read("list registry packages") as cur:
            found = cur.execute(f"SELECT {_COLUMNS} FROM registry_outbox WHERE state = ANY(%s) "  # noqa: S608 - constant columns
                                "ORDER BY seq", (list(states),)).fetchall()
        return [_row(r) for r in found]

    def counts(self) -> dict[str, int]:
        with self._db.read("count registry packages") as cur:
            found = {r["state"]: r["n"] for r in cur.execute("SELECT state, COUNT(*) AS n FROM registry_outbox "
                                                             "GROUP BY state").fetchall()}
        return {s: int(found.get(s, 0)) for s in STATES}

    # ------------------------------------------------------------------ CRID cache

    def crid(self, pseudonym: str) -> str | None:
        with self._db.read("read registry patient id") as cur:
            found = cur.execute("SELECT crid FROM registry_crid WHERE pseudonym = %s", (pseudonym,)).fetchone()
        return str(found["crid"]) if found else None

    def remember_crid(self, pseudonym: str, crid: str) -> None:
        with self._db.write("store registry patient id") as cur:
            cur.execute("INSERT INTO registry_crid (pseudonym, crid, obtained_at) VALUES (%s, %s, %s) "
                        "ON CONFLICT (pseudonym) DO UPDATE SET crid = excluded.crid, "
                        "obtained_at = excluded.obtained_at",
                        (pseudonym, crid, self._now()))


__all__ = ["PostgresOutbox"]
