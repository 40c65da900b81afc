"""The inbox and the re-screen queue: what a notification leaves behind, and the work it causes.

Two Protocols, because the HTTP routes need only a sliver of what the worker needs:

* ``Intake`` — ``accept`` a notification durably (before the 200) and report ``stats`` for ``/readyz``;
* ``Inbox`` — everything the worker does: claim / finish / retry / fail inbox entries under a lease, the
  per-patient coalesced re-screen tasks, the known patients and the resource versions already acted on.

The records here are plain values; a backend (``sqlite_inbox.py`` today, PostgreSQL per issue #15) stores them.
Every method is atomic and takes its times as arguments (epoch seconds): a backend never reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

EventKind = Literal["resource", "query", "catch-up"]
Json = dict[str, Any]


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

    def initial_coverage(self) -> int | None:
        """Where event counting starts for a subscription first heard of through this notification."""
        numbers = [e.event_number for e in self.events if e.event_number is not None]
        if numbers:
            return min(numbers) - 1
        if self.notification in ("handshake", "heartbeat"):
            return self.events_since_start or 0
        return None


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


class Intake(Protocol):
    """What the notification routes and ``/readyz`` use."""

    def accept(self, delivery: Delivery, now: float) -> AcceptResult:
        """Record a notification: its events (duplicates ignored) and its subscription's state, durably."""
        ...

    def stats(self) -> StoreStats:
        """Inbox and re-screen counts by state, the last event and the last notification time."""
        ...

    def probe_write(self, now: float) -> None:
        """Commit one small write (``/readyz``): raises when the store cannot take one — read-only, locked,
        full disk, closed."""
        ...


class Inbox(Intake, Protocol):
    """The durable inbox, the coalesced re-screen queue, known patients and seen versions (the worker's view)."""

    # inbox ----------------------------------------------------------------------------------------
    def enqueue(self, events: Iterable[InboxEvent], now: float) -> AcceptResult:
        """Queue events the bridge makes itself (polls, start-up catch-ups); duplicates ignored."""
        ...

    def claim_inbox(self, worker: str, now: float, lease: float, limit: int, max_attempts: int) -> list[InboxEntry]:
        """Claim due entries (pending, or claimed with an expired lease). An expired claim that has used up
        ``max_attempts`` becomes failed instead (a poison entry that keeps killing its worker)."""
        ...

    def finish_inbox(self, entry_id: int, worker: str, resolution: Resolution, now: float) -> bool:
        """Mark done and apply the resolution; False when the claim was lost (nothing applied)."""
        ...

    def retry_inbox(self, entry_id: int, worker: str, error: str, not_before: float) -> None: ...

    def fail_inbox(self, entry_id: int, worker: str, error: str, now: float) -> None: ...

    def inbox_entry(self, entry_id: int) -> InboxEntry | None: ...

    # re-screens ----------------------------------------------------------------------------------
    def request_rescreens(self, patients: Iterable[str], received_at: float, now: float, delay: float) -> None:
        """Ask for a re-screen of each patient (coalesced per patient), due ``delay`` seconds from now."""
        ...

    def claim_rescreens(self, worker: str, now: float, lease: float, limit: int,
                        max_attempts: int) -> list[RescreenTask]: ...

    def finish_rescreen(self, task: RescreenTask, worker: str, status: str, now: float) -> bool:
        """Done; or back to pending when it was requested again meanwhile (returns False then)."""
        ...

    def retry_rescreen(self, task: RescreenTask, worker: str, error: str, not_before: float) -> None: ...

    def fail_rescreen(self, task: RescreenTask, worker: str, error: str, now: float) -> None: ...

    # both queues -------------------------------------------------------------------------------------
    def release_claims(self, worker_prefix: str) -> int:
        """Claims of workers whose name starts with ``worker_prefix`` back to pending (a restarted worker)."""
        ...

    def requeue_failed(self, now: float) -> int:
        """Failed inbox entries and re-screens back to pending with their attempts reset."""
        ...

    def purge(self, before: float) -> int:
        """Delete done inbox entries and seen versions older than ``before`` (the de-duplication window)."""
        ...

    # patients and versions -----------------------------------------------------------------------
    def add_known(self, patients: Iterable[str], now: float, reason: str) -> None: ...

    def known(self, patients: Iterable[str]) -> set[str]:
        """Those of ``patients`` the bridge has seen admitted or has screened."""
        ...

    def seen_versions(self, keys: Iterable[str]) -> set[str]:
        """Those of the resource version ``keys`` already acted on (from any channel)."""
        ...


__all__ = [
    "AcceptResult",
    "Delivery",
    "EventKind",
    "Inbox",
    "InboxEntry",
    "InboxEvent",
    "Intake",
    "RescreenTask",
    "Resolution",
    "StoreStats",
]
