"""The durable outbox of registry packages and the cache of registry patient ids.

Every state change is its own committed transaction, so a process killed at any instant leaves each package
in a state the next run knows how to continue from::

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

Unlike the service's state, an outbox reads its own clock (ISO times in its rows, its lease) and knows its
owner (``host:pid``); a backend's outbox object is made with both (``SqliteOutbox`` in ``sqlite_outbox.py``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, Self

STATES = ("pending", "sending", "sent", "failed", "superseded", "withdrawn")
WITHDRAWN = "no longer in the export (consent withdrawn, or no longer due)"
DEFAULT_LEASE_SECONDS = 300.0

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


class OutboxBase:
    """What both backends' outboxes share: the owner (``host:pid``), the clock and the lease, the ISO time of
    their rows, when a ``sending`` package may be claimed again, and closing the database only when the outbox
    opened it (``close_db``: its close, None for a database shared with the service's state)."""

    def __init__(self, close_db: Callable[[], None] | None, clock: Callable[[], float] = time.time,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self._close_db = close_db
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}"

    def close(self) -> None:
        """Close the database when this outbox opened it (one shared with the service's state stays open)."""
        if self._close_db is not None:
            self._close_db()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    def _claimable(self, state: str, owner: str | None, lease_until: float | None) -> bool:
        """A pending package, or one being sent by a sender whose lease ran out or whose process is gone."""
        if state == "pending":
            return True
        return (lease_until or 0.0) < self.clock() or owner_gone(owner, self.host)


class RegistryOutbox(Protocol):
    """The registry outbox and CRID cache, as ``bridge registry submit`` / ``status`` use them."""

    def enqueue(self, key: str, package_id: str, timepoint: str, pseudonym: str, bundle: Json) -> bool:
        """Queue a package; False when this exact content (key) is already known. Supersedes unsent versions."""
        ...

    def withdraw_except(self, package_ids: Collection[str]) -> int:
        """Every unsent package whose id is not in ``package_ids`` becomes ``withdrawn`` (see the module
        docstring); a package being sent right now by a live process is left alone. Returns how many."""
        ...

    def claim(self) -> OutboxRow | None:
        """The next package to send (oldest first), now ``sending`` under this process's lease; None when done."""
        ...

    def mark_sent(self, key: str, status: int, receipt: Json) -> None: ...

    def mark_pending(self, key: str, status: int | None, error: str) -> None: ...

    def mark_failed(self, key: str, status: int | None, error: str) -> None: ...

    def requeue_failed(self) -> int:
        """Failed packages back to pending (after the cause was fixed); returns how many."""
        ...

    def rows(self, states: tuple[str, ...] = STATES) -> list[OutboxRow]:
        """The packages in the given states, oldest first (without bodies)."""
        ...

    def counts(self) -> dict[str, int]: ...

    def crid(self, pseudonym: str) -> str | None: ...

    def remember_crid(self, pseudonym: str, crid: str) -> None: ...


__all__ = ["DEFAULT_LEASE_SECONDS", "STATES", "WITHDRAWN", "OutboxBase", "OutboxRow", "RegistryOutbox", "owner_gone"]
