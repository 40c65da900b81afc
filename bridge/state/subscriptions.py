"""Subscriptions as the bridge knows them, and the catch-ups that cover what a notification channel missed.

A topic subscription numbers its events; ``find_holes`` (pure, shared by every backend) turns the numbers seen
and the count the EHR reported into holes, each queued as a catch-up query in the inbox. A subscription silent
past its heartbeat period queues one too. The queueing happens in the same transaction as the bookkeeping, so
a backend implements ``detect_gaps`` / ``heartbeat_catch_ups`` whole rather than the worker composing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


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


def heartbeat_overdue(sub: SubscriptionState, now: float, grace: float) -> bool:
    """True when ``sub`` has a heartbeat period and nothing (notification, catch-up, creation) came within
    that period + ``grace``."""
    if sub.heartbeat_seconds is None:
        return False
    last = max(t for t in (sub.last_seen_at, sub.last_catch_up_at, sub.created_at, 0.0) if t is not None)
    return now - last > sub.heartbeat_seconds + grace


class Subscriptions(Protocol):
    """The subscriptions table and its catch-ups."""

    def register_subscription(self, sub: SubscriptionState) -> None:
        """Insert or merge what ``bridge subscribe`` (or a poll) knows of a subscription."""
        ...

    def subscription(self, sub_id: str) -> SubscriptionState | None: ...

    def subscriptions(self) -> list[SubscriptionState]: ...

    def delete_subscription(self, sub_id: str) -> bool: ...

    def detect_gaps(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        """Queue a catch-up for every hole in a topic subscription's event numbers (see ``find_holes``)."""
        ...

    def queue_catch_up(self, sub_id: str, reason: str, since: float | None, now: float,
                       default_types: Sequence[str]) -> CatchUp | None:
        """Queue one catch-up for a subscription (None when the subscription is unknown)."""
        ...

    def heartbeat_catch_ups(self, now: float, grace: float, default_types: Sequence[str]) -> list[CatchUp]:
        """Queue a catch-up for every subscription silent longer than its heartbeat period + ``grace``."""
        ...


__all__ = ["CatchUp", "SubscriptionState", "Subscriptions", "find_holes", "heartbeat_overdue"]
