"""The worker: inbox -> decisions -> coalesced re-screens, with leases, retries and catch-ups.

One pass (``Worker.step``):

1. *monitor* (thread 0, once a second, in the one replica that wins ``leader("monitor")`` for that pass): holes
   in a topic subscription's event numbers and subscriptions silent past their heartbeat period +
   ``heartbeat_grace_seconds`` queue a catch-up (logged as such); every ``takeover_interval_seconds`` the claims
   of replicas that are gone — their slot's lock found free twice, ``takeover_grace_seconds`` apart — go back
   to pending (``bridge.service.replicas``). A thread of its own (``bridge-slot``) checks every second that this
   replica still holds its slot and takes it again when the database dropped the lock (a restarted PostgreSQL
   ends every session): the grace is what keeps a live replica's claims from being released meanwhile;
2. *inbox*: claim a batch (lease), resolve each entry — a digest from the payload, or the resource read
   from the EHR by id (``id-only``), or a ``_lastUpdated`` query (empty ping, catch-up, poll) — into
   ``Resolution``\\ s (patients to re-screen, patients now known, versions seen), applied atomically with
   marking the entry done;
3. *re-screens*: claim ``rescreen_batch`` (1) due patients (one row per patient, so a burst of events is one
   re-screen — across replicas too, the row is in the database; due ``coalesce_seconds`` after the first
   request, the setting ``rescreen_delay_seconds``), call the injected ``rescreen(patient_id) -> status``, mark
   done (or pending again if requested meanwhile).

Failures: a ``RemoteError`` (EHR down, 5xx, timeout) is retried with exponential backoff; after
``max_attempts`` the entry or re-screen is *failed* — kept, visible in ``/readyz``, re-queued by
``requeue_failed`` — never dropped. Another ``BridgeError`` (bad data, own output invalid, configuration)
fails at once. A crash anywhere leaves a claim whose lease expires, or that another replica releases as soon
as it sees the crashed replica's slot free (or the next replica in that slot at its start), so the work is done
again; re-screens are idempotent (the publisher skips an
unchanged ResearchSubject), which makes delivery exactly-once in effect.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge.client import FhirClient
from bridge.config import Settings
from bridge.errors import BridgeError, InputError, RemoteError, ServerRejected, StoreError
from bridge.normalize.mappings import CodeMap
from bridge.service.logs import event
from bridge.service.replicas import MAX_REPLICAS, MONITOR, Alone, Election, slot_lock, slot_prefix
from bridge.service.triggers import TRIGGER_TYPES, Digest, decide, digest, is_admission
from bridge.state import Inbox, InboxEntry, RescreenTask, Resolution, Subscriptions, SubscriptionState

log = logging.getLogger("bridge.service.worker")
Rescreen = Callable[[str], str]
Json = dict[str, Any]


class WorkerState(Inbox, Subscriptions, Protocol):
    """What the worker uses of the state: the inbox and re-screen queue, and the subscriptions it catches up."""


class Ehr(Protocol):
    """What the worker reads from the EHR."""

    def fetch(self, resource_type: str, resource_id: str) -> Json | None:
        """The current version of a resource; None when it is gone (404 / 410)."""

    def changed_since(self, resource_types: Sequence[str], since: datetime) -> Iterator[Json]:
        """Every resource of these types last updated after ``since``."""


class ClientEhr:
    """``Ehr`` over the bridge's FHIR client (its credentials, timeouts and retries)."""

    def __init__(self, client: FhirClient, page_size: int = 200) -> None:
        self.client = client
        self.page_size = page_size

    def fetch(self, resource_type: str, resource_id: str) -> Json | None:
        try:
            return self.client.read(resource_type, resource_id).resource
        except ServerRejected as exc:
            if exc.status in (404, 410):
                return None
            raise

    def changed_since(self, resource_types: Sequence[str], since: datetime) -> Iterator[Json]:
        stamp = since.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        for rtype in resource_types:
            params = {"_lastUpdated": f"gt{stamp}", "_count": str(self.page_size)}
            yield from self.client.search(rtype, params, matches_only=True)


@dataclass(frozen=True)
class WorkerConfig:
    lease_seconds: float = 120.0
    batch: int = 50
    # re-screens claimed per pass: one, so the due re-screens spread over every thread of every replica instead of
    # queueing behind one thread's batch (a re-screen is ~a dozen EHR requests; an inbox entry a few ms)
    rescreen_batch: int = 1
    max_attempts: int = 6
    backoff_first: float = 2.0
    backoff_cap: float = 300.0
    coalesce_seconds: float = 0.5
    idle_seconds: float = 0.2
    gap_grace_seconds: float = 5.0
    heartbeat_grace_seconds: float = 120.0
    clock_skew_seconds: float = 300.0
    first_query_window_seconds: float = 86400.0
    monitor_interval_seconds: float = 1.0
    retention_seconds: float = 14 * 86400.0
    takeover_interval_seconds: float = 5.0
    takeover_grace_seconds: float = 10.0
    writeback_retry_seconds: float = 30.0  # how often the monitor retries the study team's pending write-backs
    slot_check_seconds: float = 1.0
    replica_slots: int = MAX_REPLICAS
    catch_up_on_start: bool = True
    trigger_types: tuple[str, ...] = TRIGGER_TYPES

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WorkerConfig:
        values = {"heartbeat_grace_seconds": settings.heartbeat_grace_seconds,
                  "coalesce_seconds": settings.rescreen_delay_seconds, **overrides}
        return cls(**values)


def describe(exc: BaseException) -> str:
    """A failure as stored and logged: a bridge error's (data-free) message, else only the type name."""
    return exc.message if isinstance(exc, BridgeError) else type(exc).__name__


def _criteria_type(criteria: str | None) -> str | None:
    head = (criteria or "").split("?", 1)[0].strip()
    return head if head.isalpha() else None


class Worker:
    """Processes the inbox of ``store``; ``threads`` loops when started, or ``step()`` driven by hand.

    ``election`` and ``slot`` make it one replica of several (``bridge.service.replicas``): ``slot`` is the
    replica slot this process holds, ``name`` starts with its prefix. Without them it is alone."""

    def __init__(self, store: WorkerState, rescreen: Rescreen, ehr: Ehr, cmap: CodeMap,
                 config: WorkerConfig | None = None, clock: Callable[[], float] = time.time,
                 name: str | None = None, threads: int = 1, election: Election | None = None,
                 slot: int | None = None, retry_writebacks: Callable[[], tuple[int, int]] | None = None) -> None:
        self.store, self.rescreen, self.ehr, self.cmap = store, rescreen, ehr, cmap
        self.config = config or WorkerConfig()
        self.clock = clock
        self.name = name or f"worker@{socket.gethostname()}"
        self.threads = max(1, threads)
        self.election: Election = election or Alone()
        self.slot = slot
        self._next_takeover = 0.0
        self._free_since: dict[int, float] = {}
        self._last_sweep = float("-inf")
        self._regained = ExitStack()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_monitor = 0.0
        self._next_purge = 0.0
        self.retry_writebacks = retry_writebacks  # issue #17: the actions not yet written to the EHR
        self._next_writeback = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Release this name's stale claims, queue start-up catch-ups, start the loops."""
        self._stop.clear()
        self.recover()
        self._threads = [threading.Thread(target=self._loop, args=(i,), name=f"bridge-worker-{i}", daemon=True)
                         for i in range(self.threads)]
        if self.slot is not None:
            self._threads.append(threading.Thread(target=self._slot_loop, name="bridge-slot", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self._regained.close()

    def _slot_loop(self) -> None:
        while not self._stop.wait(self.config.slot_check_seconds):
            try:
                self.keep_slot()
            except Exception as exc:  # noqa: BLE001 - the store may be down: try again next time
                event(log, "worker.error", logging.ERROR, worker=self.name, error=describe(exc))

    def keep_slot(self) -> bool:
        """Take this replica's slot lock again if it is free (the database dropped the session that held it);
        True when it had to. Held by anyone — this process, as it should — it is left alone."""
        assert self.slot is not None
        held = ExitStack()
        if not held.enter_context(self.election.leader(slot_lock(self.slot))):
            held.close()
            return False
        self._regained.close()  # a lock held on a session that is gone
        self._regained = held
        event(log, "worker.slot-regained", logging.WARNING, worker=self.name)
        return True

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def recover(self) -> None:
        """Release the claims left by this name, or by the last process of this replica slot (it is gone: the
        slot is ours); queue start-up catch-ups unless another replica is running the checks."""
        prefix = f"{self.name}#" if self.slot is None else slot_prefix(self.slot, self._role)
        released = self.store.release_claims(prefix)
        if released:
            event(log, "worker.recovered", count=released, worker=self.name)
        if self.config.catch_up_on_start:
            with self.election.leader(MONITOR) as leading:
                if leading:
                    self._catch_up_on_start(self.clock())

    @property
    def _role(self) -> str:
        return self.name.split("/", 1)[0]

    def _catch_up_on_start(self, now: float) -> None:
        for sub in self.store.subscriptions():
            since = max((t for t in (sub.last_seen_at, sub.last_query_at) if t is not None), default=None)
            if sub.kind != "poll" and since is not None:
                self.store.queue_catch_up(sub.id, "startup", since, now, self.config.trigger_types)
                event(log, "catch-up.queued", reason="startup", subscription=sub.id)

    def _loop(self, index: int) -> None:
        me, stranded = f"{self.name}#{index}", False
        while not self._stop.is_set():
            try:
                if stranded:  # a pass broke off (the store was down): what it still holds is nobody's work
                    self._release_own(me)
                    stranded = False
                busy = self.step(me, monitor=index == 0)
            except Exception as exc:  # noqa: BLE001 - the loop must survive a store outage or a bug
                event(log, "worker.error", logging.ERROR, worker=me, error=describe(exc))
                busy, stranded = 0, True
            if not busy:
                self._stop.wait(self.config.idle_seconds)

    def _release_own(self, me: str) -> None:
        """Release the claims of the thread ``me`` between two passes, when it holds nothing in hand: those of a
        pass that broke off (a finish the store did not take) would otherwise wait for their lease. With more
        than ten threads ``…#1`` is a prefix of ``…#10``: that thread's claims are released too and done twice,
        which the idempotent re-screen allows."""
        released = self.store.release_claims(me)
        if released:
            event(log, "worker.recovered", count=released, worker=me)

    # ------------------------------------------------------------------ one pass

    def step(self, worker: str | None = None, monitor: bool = True) -> int:
        """One pass: monitor, a batch of inbox entries, a batch of re-screens. Returns the work done."""
        me = worker or f"{self.name}#0"
        if monitor:
            self.monitor()
        entries = self.store.claim_inbox(me, self.clock(), self.config.lease_seconds, self.config.batch,
                                         self.config.max_attempts)
        for entry in entries:
            self._process(entry, me)
        tasks = self.store.claim_rescreens(me, self.clock(), self.config.lease_seconds, self.config.rescreen_batch,
                                           self.config.max_attempts)
        for task in tasks:
            self._rescreen(task, me)
        return len(entries) + len(tasks)

    def run_until_idle(self, max_steps: int = 1000) -> int:
        """Step until a pass finds nothing due (tests, one-shot runs). Returns the work done."""
        total = 0
        for _ in range(max_steps):
            done = self.step()
            total += done
            if not done:
                break
        return total

    def monitor(self, force: bool = False) -> None:
        """The periodic checks, in whichever replica holds ``leader("monitor")`` for this pass."""
        now = self.clock()
        if not force and now < self._next_monitor:
            return
        self._next_monitor = now + self.config.monitor_interval_seconds
        with self.election.leader(MONITOR) as leading:
            if leading:
                self._checks(now)

    def _checks(self, now: float) -> None:
        types = self.config.trigger_types
        for gap in self.store.detect_gaps(now, self.config.gap_grace_seconds, types):
            event(log, "catch-up.queued", logging.WARNING, reason="gap", subscription=gap.subscription,
                  first=gap.first, last=gap.last)
        for hb in self.store.heartbeat_catch_ups(now, self.config.heartbeat_grace_seconds, types):
            event(log, "catch-up.queued", logging.WARNING, reason="heartbeat", subscription=hb.subscription)
        if now >= self._next_purge:
            self._next_purge = now + 3600.0
            self.store.purge(now - self.config.retention_seconds)
        if self.retry_writebacks is not None and now >= self._next_writeback:
            self._next_writeback = now + self.config.writeback_retry_seconds
            written, failed = self.retry_writebacks()
            if written or failed:
                event(log, "writeback.retried", logging.WARNING if failed else logging.INFO, written=written,
                      failed=failed)
        if self.slot is not None and now >= self._next_takeover:
            self._next_takeover = now + self.config.takeover_interval_seconds
            self.take_over(now)

    def take_over(self, now: float) -> int:
        """Release the claims of every replica slot no live process holds (its replica died): free now and
        already free ``takeover_grace_seconds`` ago (a live replica whose lock was dropped takes it back sooner)."""
        total = 0
        if now - self._last_sweep > 3 * self.config.takeover_interval_seconds:
            self._free_since.clear()  # another replica led meanwhile: what this one saw free then is stale
        self._last_sweep = now
        for slot in range(self.config.replica_slots):
            if slot == self.slot:
                continue
            with self.election.leader(slot_lock(slot)) as free:
                if not free:
                    self._free_since.pop(slot, None)
                    continue
                since = self._free_since.setdefault(slot, now)
                gone = now - since >= self.config.takeover_grace_seconds
                released = self.store.release_claims(slot_prefix(slot, self._role)) if gone else 0
            if released:
                event(log, "worker.took-over", logging.WARNING, worker=slot_prefix(slot, self._role),
                      count=released)
            total += released
        return total

    # ------------------------------------------------------------------ inbox entries

    def _process(self, entry: InboxEntry, me: str) -> None:
        started = self.clock()
        try:
            resolution = self._resolve(entry)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the entry, none is lost
            self._entry_failed(entry, me, exc)
            return
        finished = self.store.finish_inbox(entry.id, me, resolution, self.clock())
        event(log, "inbox.done" if finished else "inbox.claim-lost", inbox_id=entry.id, kind=entry.event.kind,
              subscription=entry.event.subscription, event_number=entry.event.event_number,
              resource_type=entry.event.resource_type, resource_id=entry.event.resource_id,
              count=len(resolution.rescreen), duration_ms=round((self.clock() - started) * 1000, 1))

    def _resolve(self, entry: InboxEntry) -> Resolution:
        if entry.event.kind == "resource":
            return self._resolve_resource(entry)
        return self._resolve_query(entry)

    def _resolve_resource(self, entry: InboxEntry) -> Resolution:
        ev = entry.event
        payload = ev.payload or {}
        if "digest" in payload:
            return self._decide([Digest.from_json(payload["digest"])])
        if not ev.resource_type or not ev.resource_id:
            raise InputError(f"inbox entry {entry.id} names no resource")
        body = self.ehr.fetch(ev.resource_type, ev.resource_id)
        if body is None:
            event(log, "resource.gone", resource_type=ev.resource_type, resource_id=ev.resource_id)
            return Resolution()
        return self._decide([digest(body, ev.resource_type)])

    def _resolve_query(self, entry: InboxEntry) -> Resolution:
        ev, payload = entry.event, entry.event.payload or {}
        sub = self.store.subscription(ev.subscription) if ev.subscription else None
        started = self.clock()
        since = self._since(payload, sub, started)
        types = self._types(payload, sub)
        event(log, "query.start", reason=payload.get("reason", ev.kind), subscription=ev.subscription,
              types=list(types), since=datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds"))
        digests = list(self._digests(self.ehr.changed_since(types, datetime.fromtimestamp(since, UTC))))
        resolution = self._decide(digests)
        return replace(resolution, queried=(sub.id, started) if sub else None)

    def _since(self, payload: Json, sub: SubscriptionState | None, now: float) -> float:
        """Start of the query window: the catch-up's own, else the last query / notification, less skew."""
        since = payload.get("since")
        if not isinstance(since, int | float) and sub is not None:
            since = sub.last_query_at or sub.created_at
        if not isinstance(since, int | float):
            since = now - self.config.first_query_window_seconds
        return float(since) - self.config.clock_skew_seconds

    def _types(self, payload: Json, sub: SubscriptionState | None) -> tuple[str, ...]:
        if payload.get("types"):
            return tuple(payload["types"])
        if sub is not None and sub.resource_types:
            return sub.resource_types
        from_criteria = _criteria_type(sub.criteria) if sub is not None else None
        return (from_criteria,) if from_criteria else self.config.trigger_types

    @staticmethod
    def _digests(resources: Iterable[Json]) -> Iterator[Digest]:
        for resource in resources:
            try:
                yield digest(resource, str(resource.get("resourceType") or "resource"))
            except InputError as exc:
                event(log, "resource.skipped", logging.WARNING, error=exc.message)

    def _decide(self, digests: list[Digest]) -> Resolution:
        seen = self.store.seen_versions(d.version_key for d in digests)
        fresh = sorted((d for d in digests if d.version_key not in seen), key=lambda d: not is_admission(d))
        known = self.store.known({d.patient_id for d in fresh if d.patient_id})
        rescreen: set[str] = set()
        for d in fresh:
            decision = decide(d, self.cmap, d.patient_id in known)
            if decision.known:
                known.add(decision.known)
            if decision.rescreen:
                rescreen.add(decision.rescreen)
                event(log, "rescreen.requested", patient_id=decision.rescreen, reason=decision.reason,
                      resource_type=d.resource_type, resource_id=d.resource_id)
        newly_known = frozenset(d.patient_id for d in fresh if d.patient_id and is_admission(d))
        return Resolution(frozenset(rescreen), newly_known, frozenset(d.version_key for d in fresh),
                          rescreen_delay=self.config.coalesce_seconds)

    def _backoff(self, attempts: int) -> float:
        return float(min(self.config.backoff_cap, self.config.backoff_first * 2 ** max(0, attempts - 1)))

    def _permanent(self, exc: BaseException, attempts: int) -> bool:
        transient = isinstance(exc, RemoteError | StoreError) or not isinstance(exc, BridgeError)
        return not transient or attempts >= self.config.max_attempts

    def _entry_failed(self, entry: InboxEntry, me: str, exc: BaseException) -> None:
        now, error = self.clock(), describe(exc)
        fields = {"inbox_id": entry.id, "kind": entry.event.kind, "attempts": entry.attempts, "error": error}
        if self._permanent(exc, entry.attempts):
            self.store.fail_inbox(entry.id, me, error, now)
            event(log, "inbox.failed", logging.ERROR, **fields)
            return
        delay = self._backoff(entry.attempts)
        self.store.retry_inbox(entry.id, me, error, now + delay)
        event(log, "inbox.retry", logging.WARNING, delay_s=delay, **fields)

    # ------------------------------------------------------------------ re-screens

    def _rescreen(self, task: RescreenTask, me: str) -> None:
        started = self.clock()
        try:
            status = self.rescreen(task.patient_id)
        except Exception as exc:  # noqa: BLE001 - recorded on the re-screen row, retried or failed
            self._rescreen_failed(task, me, exc)
            return
        now = self.clock()
        done = self.store.finish_rescreen(task, me, status, now)
        latency = round((now - task.oldest_request_at) * 1000, 1) if task.oldest_request_at else None
        event(log, "rescreen.done", patient_id=task.patient_id, status=status,
              state="done" if done else "requested-again", duration_ms=round((now - started) * 1000, 1),
              latency_ms=latency)

    def _rescreen_failed(self, task: RescreenTask, me: str, exc: BaseException) -> None:
        now, error = self.clock(), describe(exc)
        fields = {"patient_id": task.patient_id, "attempts": task.attempts, "error": error}
        if self._permanent(exc, task.attempts):
            self.store.fail_rescreen(task, me, error, now)
            event(log, "rescreen.failed", logging.ERROR, **fields)
            return
        delay = self._backoff(task.attempts)
        self.store.retry_rescreen(task, me, error, now + delay)
        event(log, "rescreen.retry", logging.WARNING, delay_s=delay, **fields)


__all__ = ["ClientEhr", "Ehr", "Rescreen", "Worker", "WorkerConfig", "WorkerState", "describe"]
