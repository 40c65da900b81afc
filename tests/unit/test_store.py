"""The state store on both backends (SQLite file, PostgreSQL schema: the ``state_location`` fixture of
``tests/pg.py``): durable de-duplicated inbox, leases, coalesced re-screens, gaps, heartbeats."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import StoreError
from bridge.state import (
    Delivery,
    InboxEvent,
    PublishedRecord,
    Resolution,
    ScreeningRecord,
    State,
    SubscriptionState,
    find_holes,
    open_state,
)
from bridge.state.postgres_state import PostgresState
from bridge.state.sqlite_state import SqliteState

Store = SqliteState | PostgresState  # the inspection helpers (inbox_entries, rescreen_state) are on both

T0 = 1_780_000_000.0  # a fixed instant (2026-05-28); the store never reads the clock
TYPES = ("Encounter", "Condition", "Observation")


@pytest.fixture
def store(state: State) -> Store:
    assert isinstance(state, SqliteState | PostgresState)
    return state


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteState]:
    s = SqliteState(tmp_path / "state.sqlite3")
    yield s
    s.close()


def resource_event(n: int, patient: str = "p1", channel: str = "c1") -> InboxEvent:
    return InboxEvent(f"res:Encounter/e{n}/_history/1", "resource", channel, f"channel/{channel}", None,
                      "Encounter", f"e{n}", patient, {"digest": {"id": f"e{n}"}})


def topic_event(sub: str, n: int) -> InboxEvent:
    return InboxEvent(f"event:{sub}:{n}", "resource", "t1", sub, n, "Encounter", f"e{n}", None, None)


def rest_hook(*events: InboxEvent, channel: str = "c1") -> Delivery:
    return Delivery(channel, f"channel/{channel}", "rest-hook", tuple(events))


def topic(sub: str, *numbers: int, kind: str = "event-notification", since: int | None = None) -> Delivery:
    events = tuple(topic_event(sub, n) for n in numbers)
    reported = since if since is not None else (max(numbers) if numbers else None)
    return Delivery("t1", sub, kind, events, reported, "http://example.org/topic/admission", "active")


# ------------------------------------------------------------------------------------------ inbox


def test_accept_is_durable_and_deduplicated(state_location: str) -> None:
    first = open_state(state_location)
    assert first.accept(rest_hook(resource_event(1), resource_event(2)), T0).new == 2
    again = first.accept(rest_hook(resource_event(1)), T0 + 1)
    assert (again.new, again.duplicates) == (0, 1)
    first.close()
    reopened = open_state(state_location)  # another process would see the same
    assert isinstance(reopened, SqliteState | PostgresState)
    entries = reopened.inbox_entries()
    assert [e.event.dedupe_key for e in entries] == ["res:Encounter/e1/_history/1", "res:Encounter/e2/_history/1"]
    assert entries[0].received_at == T0 and entries[0].state == "pending"
    assert entries[0].event.payload == {"digest": {"id": "e1"}}
    reopened.close()


def test_the_database_is_in_wal_mode_with_full_sync(sqlite_store: SqliteState) -> None:
    store = sqlite_store
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_dedupe_key_is_unique_in_the_schema(sqlite_store: SqliteState) -> None:
    store = sqlite_store
    store.accept(rest_hook(resource_event(1)), T0)
    with pytest.raises(sqlite3.IntegrityError):
        store._conn().execute("INSERT INTO inbox(dedupe_key, kind, channel, received_at) VALUES (?, ?, ?, ?)",
                              ("res:Encounter/e1/_history/1", "resource", "c1", T0))


def test_claim_takes_a_lease_and_an_expired_lease_is_claimable_again(store: Store) -> None:
    store.accept(rest_hook(resource_event(1)), T0)
    [entry] = store.claim_inbox("w#0", T0, lease=60, limit=10, max_attempts=5)
    assert (entry.state, entry.attempts, entry.claimed_at) == ("claimed", 1, T0)
    assert store.claim_inbox("w#1", T0 + 59, lease=60, limit=10, max_attempts=5) == []
    [again] = store.claim_inbox("w#1", T0 + 60, lease=60, limit=10, max_attempts=5)
    assert (again.id, again.attempts) == (entry.id, 2)
    assert store.finish_inbox(entry.id, "w#0", Resolution(rescreen=frozenset({"p1"})), T0 + 61) is False
    assert store.rescreen_state("p1") is None  # the stale worker's result was not applied
    assert store.finish_inbox(entry.id, "w#1", Resolution(rescreen=frozenset({"p1"})), T0 + 61) is True


def test_an_expired_claim_past_max_attempts_becomes_failed_not_lost(store: Store) -> None:
    store.accept(rest_hook(resource_event(1)), T0)
    for i in range(3):
        assert len(store.claim_inbox("w#0", T0 + 100 * i, lease=60, limit=1, max_attempts=3)) == 1
    assert store.claim_inbox("w#0", T0 + 300, lease=60, limit=1, max_attempts=3) == []
    [failed] = store.inbox_entries("failed")
    assert failed.attempts == 3 and "lease expired" in (failed.last_error or "")
    assert store.requeue_failed(T0 + 400) == 1
    assert store.inbox_entries("pending")[0].attempts == 0


def test_finish_applies_the_resolution_atomically_and_clears_the_payload(store: Store) -> None:
    store.accept(rest_hook(resource_event(1)), T0)
    [entry] = store.claim_inbox("w#0", T0 + 1, 60, 10, 5)
    resolution = Resolution(frozenset({"p1"}), frozenset({"p1"}), frozenset({"Encounter/e1/_history/1"}),
                            ("channel/c1", T0 + 1), rescreen_delay=0.5)
    assert store.finish_inbox(entry.id, "w#0", resolution, T0 + 2)
    done = store.inbox_entry(entry.id)
    assert done is not None and done.state == "done" and done.event.payload is None
    assert store.known(["p1", "p2"]) == {"p1"}
    assert store.seen_versions(["Encounter/e1/_history/1", "x"]) == {"Encounter/e1/_history/1"}
    row = store.rescreen_state("p1")
    assert row is not None
    assert (row["state"], row["generation"], row["oldest_request_at"], row["not_before"]) == ("pending", 1, T0,
                                                                                                T0 + 2.5)
    assert store.subscription("channel/c1").last_query_at == T0 + 1  # type: ignore[union-attr]


def test_retry_postpones_and_fail_keeps_the_entry(store: Store) -> None:
    store.accept(rest_hook(resource_event(1), resource_event(2)), T0)
    first, second = store.claim_inbox("w#0", T0, 60, 10, 5)
    store.retry_inbox(first.id, "w#0", "GET Encounter/e1: 503", T0 + 30)
    store.fail_inbox(second.id, "w#0", "bad data", T0)
    assert store.claim_inbox("w#0", T0 + 29, 60, 10, 5) == []
    [retried] = store.claim_inbox("w#0", T0 + 30, 60, 10, 5)
    assert retried.id == first.id and retried.last_error == "GET Encounter/e1: 503"
    assert store.inbox_entry(second.id).state == "failed"  # type: ignore[union-attr]


def test_concurrent_claims_never_hand_out_an_entry_twice(store: Store) -> None:
    store.enqueue([resource_event(n, f"p{n}") for n in range(200)], T0)
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while True:
            got = store.claim_inbox(name, T0, 60, 7, 5)
            if not got:
                return
            with lock:
                claimed.extend(e.id for e in got)

    threads = [threading.Thread(target=claimer, args=(f"w#{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 200


def test_release_claims_frees_only_the_named_workers_claims(store: Store) -> None:
    store.enqueue([resource_event(1), resource_event(2)], T0)
    store.claim_inbox("serve@host#0", T0, 600, 1, 5)
    store.claim_inbox("watch@host#0", T0, 600, 1, 5)
    assert store.release_claims("serve@host#") == 1
    states = {e.event.resource_id: e.state for e in store.inbox_entries()}
    assert sorted(states.values()) == ["claimed", "pending"]


# ------------------------------------------------------------------------------------------ re-screens


def test_requests_for_one_patient_coalesce_into_one_rescreen(store: Store) -> None:
    for i in range(5):
        store.request_rescreens(["p1"], received_at=T0 + i / 10, now=T0 + i / 10, delay=1.0)
    assert store.claim_rescreens("w#0", T0 + 0.9, 60, 10, 5) == []  # due 1 s after the first request
    [task] = store.claim_rescreens("w#0", T0 + 1.0, 60, 10, 5)
    assert (task.patient_id, task.generation, task.oldest_request_at) == ("p1", 5, T0)
    assert store.finish_rescreen(task, "w#0", "candidate", T0 + 6) is True
    row = store.rescreen_state("p1")
    assert row is not None and (row["state"], row["last_status"]) == ("done", "candidate")


def test_a_request_during_a_rescreen_sends_it_back_to_pending(store: Store) -> None:
    store.request_rescreens(["p1"], T0, T0, 0)
    [task] = store.claim_rescreens("w#0", T0, 60, 10, 5)
    store.request_rescreens(["p1"], T0 + 1, T0 + 1, 0)  # new data while the re-screen runs
    assert store.claim_rescreens("w#1", T0 + 1, 60, 10, 5) == []  # still claimed: not run twice at once
    assert store.finish_rescreen(task, "w#0", "ineligible", T0 + 2) is False
    [again] = store.claim_rescreens("w#0", T0 + 2, 60, 10, 5)
    assert again.generation == 2 and again.attempts == 1
    assert store.finish_rescreen(again, "w#0", "candidate", T0 + 3) is True


def test_failed_rescreen_is_kept_and_a_new_request_revives_it(store: Store) -> None:
    store.request_rescreens(["p1"], T0, T0, 0)
    [task] = store.claim_rescreens("w#0", T0, 60, 10, 5)
    store.fail_rescreen(task, "w#0", "own output invalid", T0)
    assert store.stats().rescreens == {"failed": 1}
    store.request_rescreens(["p1"], T0 + 5, T0 + 5, 0)
    row = store.rescreen_state("p1")
    assert row is not None and (row["state"], row["attempts"], row["last_error"]) == ("pending", 0, None)


# ------------------------------------------------------------------------------------------ gaps, heartbeats


def test_find_holes_examples() -> None:
    old = T0 - 100
    assert find_holes(0, [(1, old), (2, old), (5, old)], 5, old, T0, 5) == (5, [(3, 4)])
    assert find_holes(0, [(1, old), (3, T0 - 1)], 3, T0 - 1, T0, 5) == (1, [])  # too young: wait
    assert find_holes(2, [(1, old), (3, old)], 7, old, T0, 5) == (7, [(4, 7)])
    assert find_holes(0, [], None, None, T0, 5) == (0, [])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.data())
def test_find_holes_reports_exactly_the_missing_numbers(n: int, data: st.DataObject) -> None:
    present = data.draw(st.sets(st.integers(1, n), max_size=n))
    reported = data.draw(st.one_of(st.none(), st.integers(0, n)))
    seen = [(k, T0 - 100) for k in sorted(present)]
    covered, holes = find_holes(0, seen, reported, T0 - 100, T0, 5)
    missing = {k for first, last in holes for k in range(first, last + 1)}
    top = max([*present, reported or 0])
    assert missing == set(range(1, top + 1)) - present
    assert covered == top
    assert all(first <= last for first, last in holes)


@settings(max_examples=100, deadline=None)
@given(st.permutations(list(range(1, 12))))
def test_find_holes_out_of_order_arrival_within_grace_is_no_gap(order: list[int]) -> None:
    seen: list[tuple[int, float]] = []
    for i, number in enumerate(order):  # one arrival per second, each checked at once (grace 30 s)
        seen = sorted([*seen, (number, T0 + i)])
        covered, holes = find_holes(0, seen, number, T0 + i, T0 + i, 30)
        assert holes == []
    assert covered == 11


def test_detect_gaps_queues_one_catch_up_per_hole(store: Store) -> None:
    sub = "Subscription/admission"
    store.accept(topic(sub, kind="handshake", since=0), T0)
    for n in (1, 2, 5):
        store.accept(topic(sub, n), T0 + n)
    assert store.detect_gaps(T0 + 6, grace=5, default_types=TYPES) == []  # event 5 is 1 s old: wait
    [gap] = store.detect_gaps(T0 + 20, grace=5, default_types=TYPES)
    assert (gap.reason, gap.first, gap.last, gap.since) == ("gap", 3, 4, T0 + 2)
    assert store.detect_gaps(T0 + 40, grace=5, default_types=TYPES) == []
    [entry] = [e for e in store.inbox_entries() if e.event.kind == "catch-up"]
    assert entry.event.payload == {"reason": "gap", "since": T0 + 2, "types": list(TYPES)}
    assert store.subscription(sub).covered_through == 5  # type: ignore[union-attr]


def test_heartbeat_count_above_the_events_seen_is_a_gap(store: Store) -> None:
    sub = "Subscription/s2"
    store.accept(topic(sub, 1, 2), T0)
    store.accept(topic(sub, kind="heartbeat", since=4), T0 + 10)
    [gap] = store.detect_gaps(T0 + 30, grace=5, default_types=TYPES)
    assert (gap.first, gap.last) == (3, 4)
    assert store.subscription(sub).last_heartbeat_at == T0 + 10  # type: ignore[union-attr]


def test_first_contact_does_not_invent_earlier_gaps(store: Store) -> None:
    store.accept(topic("Subscription/late", 41, 42), T0)
    assert store.detect_gaps(T0 + 60, 5, TYPES) == []


def test_a_missed_heartbeat_queues_one_catch_up(store: Store) -> None:
    store.register_subscription(SubscriptionState("Subscription/hb", "hb", "topic", heartbeat_seconds=60,
                                                  resource_types=("Encounter",), created_at=T0, covered_through=0))
    store.accept(topic("Subscription/hb", kind="heartbeat", since=0), T0 + 10)
    assert store.heartbeat_catch_ups(T0 + 10 + 60 + 30, grace=30, default_types=TYPES) == []
    [late] = store.heartbeat_catch_ups(T0 + 10 + 60 + 31, grace=30, default_types=TYPES)
    assert (late.reason, late.since) == ("heartbeat", T0 + 10)
    assert store.heartbeat_catch_ups(T0 + 10 + 60 + 32, grace=30, default_types=TYPES) == []
    [entry] = store.inbox_entries("pending")
    assert entry.event.payload == {"reason": "heartbeat", "since": T0 + 10, "types": ["Encounter"]}


def test_registration_and_handshake_merge_in_either_order(store: Store) -> None:
    store.accept(topic("Subscription/x", kind="handshake", since=0), T0)  # handshake comes during the create
    store.register_subscription(SubscriptionState("Subscription/x", "adm", "topic", topic="urn:t",
                                                  heartbeat_seconds=30, resource_types=("Encounter",),
                                                  ehr_id="x", created_at=T0 + 1, covered_through=0))
    sub = store.subscription("Subscription/x")
    assert sub is not None
    assert (sub.channel, sub.heartbeat_seconds, sub.resource_types, sub.covered_through, sub.last_seen_at) == (
        "adm", 30, ("Encounter",), 0, T0)
    assert store.delete_subscription("Subscription/x") and store.subscription("Subscription/x") is None


# ------------------------------------------------------------------------------------------ other tables


def test_published_records_are_searchable_by_study_patient_status(store: Store) -> None:
    for pid, status in (("p1", "candidate"), ("p2", "ineligible")):
        subject = {"resourceType": "ResearchSubject", "status": status,
                   "study": {"reference": "ResearchStudy/nct04762485"},
                   "individual": {"reference": f"http://ehr.example/fhir/Patient/{pid}/_history/3"}}
        store.put_published(PublishedRecord(f"ResearchSubject|sys|{pid}", "ResearchSubject", f"rs-{pid}", "f",
                                            "1", subject, T0))
    assert [r.resource_id for r in store.find_published("ResearchSubject", patient="Patient/p2")] == ["rs-p2"]
    assert [r.resource_id for r in store.find_published("ResearchSubject", status="candidate",
                                                        study="ResearchStudy/nct04762485")] == ["rs-p1"]
    assert store.find_published("ResearchSubject", resource_id="rs-p9") == []
    got = store.get_published("ResearchSubject|sys|p1")
    assert got is not None and got.resource["status"] == "candidate" and got.version == "1"


def test_screenings_are_upserted_per_patient(store: Store) -> None:
    store.save_screening(ScreeningRecord("p1", "potential-candidate", [{"criterion": "inc-age"}], "2026-06-15", T0))
    store.save_screening(ScreeningRecord("p1", "candidate", [], "2026-06-16", T0 + 1))
    [only] = store.screenings()
    assert (only.status, only.as_of, only.verdicts) == ("candidate", "2026-06-16", [])


def test_stats_and_purge(store: Store) -> None:
    store.accept(rest_hook(resource_event(1), resource_event(2)), T0)
    [entry, _] = store.claim_inbox("w#0", T0, 60, 10, 5)
    store.finish_inbox(entry.id, "w#0", Resolution(rescreen=frozenset({"p1"})), T0 + 1)
    stats = store.stats()
    assert stats.inbox == {"done": 1, "claimed": 1} and stats.rescreens == {"pending": 1}
    assert stats.depth == 2 and stats.last_event_at == T0 and stats.last_notification_at == T0
    assert store.purge(T0 + 2) == 1
    assert len(store.inbox_entries()) == 1


def test_unusable_paths_raise_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="file path"):
        SqliteState(":memory:")
    with pytest.raises(StoreError, match="cannot open|failed"):
        SqliteState(tmp_path)  # a directory


def test_a_closed_store_refuses_work(state_location: str) -> None:
    s = open_state(state_location)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.stats()
