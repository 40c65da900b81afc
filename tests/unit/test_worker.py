"""The worker: decisions, coalescing, retries with backoff, leases after a crash, catch-up queries."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.errors import InvalidResource, ServerRejected, StoreError, TransportError, ValidationFailed
from bridge.normalize.mappings import CodeMap, load_code_map
from bridge.service.notifications import parse_bundle, parse_post, parse_put
from bridge.service.replicas import replica_name, slot_lock
from bridge.service.worker import ClientEhr, Worker, WorkerConfig
from bridge.state import SubscriptionState
from bridge.state.leader import file_leader
from bridge.state.sqlite_state import SqliteState as SqliteStore

from .test_notifications import backport_bundle, encounter, observation, raw

T0 = 1_780_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeEhr:
    def __init__(self) -> None:
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.fetches: list[tuple[str, str]] = []
        self.queries: list[tuple[tuple[str, ...], datetime]] = []
        self.fail_fetch: Exception | None = None
        self.changed: list[dict[str, Any]] = []

    def fetch(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        self.fetches.append((resource_type, resource_id))
        if self.fail_fetch is not None:
            raise self.fail_fetch
        return self.resources.get((resource_type, resource_id))

    def changed_since(self, resource_types: Sequence[str], since: datetime) -> Iterator[dict[str, Any]]:
        self.queries.append((tuple(resource_types), since))
        return iter([r for r in self.changed if r["resourceType"] in resource_types])


class FakeRescreen:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.errors: list[Exception] = []
        self.during: Any = None

    def __call__(self, patient_id: str) -> str:
        self.calls.append(patient_id)
        if self.during is not None:
            self.during()
        if self.errors:
            raise self.errors.pop(0)
        return "candidate"


@pytest.fixture(scope="module")
def cmap() -> CodeMap:
    return load_code_map()


@pytest.fixture
def env(tmp_path: Path, cmap: CodeMap) -> Iterator[tuple[SqliteStore, Worker, FakeEhr, FakeRescreen, Clock]]:
    store = SqliteStore(tmp_path / "state.sqlite3")
    ehr, rescreen, clock = FakeEhr(), FakeRescreen(), Clock()
    config = WorkerConfig(coalesce_seconds=0, max_attempts=3, backoff_first=2, catch_up_on_start=False)
    worker = Worker(store, rescreen, ehr, cmap, config, clock=clock, name="test")
    yield store, worker, ehr, rescreen, clock
    store.close()


def put(store: SqliteStore, resource: dict[str, Any], now: float = T0, channel: str = "c1") -> None:
    store.accept(parse_put(channel, resource["resourceType"], resource["id"], raw(resource)), now)


def test_an_admission_rescreens_its_patient_once(env: Any) -> None:
    store, worker, _ehr, rescreen, _clock = env
    put(store, encounter())
    worker.run_until_idle()
    assert rescreen.calls == ["p1"]
    assert store.known(["p1"]) == {"p1"}
    assert store.stats().inbox == {"done": 1} and store.stats().rescreens == {"done": 1}
    assert store.rescreen_state("p1")["last_status"] == "candidate"


def test_a_burst_for_one_patient_coalesces(env: Any, cmap: CodeMap) -> None:
    store, worker, _ehr, rescreen, clock = env
    worker.config = WorkerConfig(coalesce_seconds=1.0, catch_up_on_start=False)
    put(store, encounter())
    for i in range(5):
        put(store, observation(f"o{i}", code="751-8"))
    worker.run_until_idle()
    assert rescreen.calls == []  # not due yet: the burst may still grow
    clock.advance(1.0)
    worker.run_until_idle()
    assert rescreen.calls == ["p1"]


def test_results_of_an_unknown_patient_do_nothing(env: Any) -> None:
    store, worker, _ehr, rescreen, _clock = env
    put(store, observation("o1", patient="stranger"))
    worker.run_until_idle()
    assert rescreen.calls == [] and store.stats().inbox == {"done": 1}


def test_a_result_for_a_known_patient_rescreens(env: Any) -> None:
    store, worker, _ehr, rescreen, _clock = env
    put(store, encounter())
    worker.run_until_idle()
    put(store, observation("o7"))
    worker.run_until_idle()
    assert rescreen.calls == ["p1", "p1"]


def test_the_same_version_from_two_channels_acts_once(env: Any) -> None:
    store, worker, _ehr, rescreen, _clock = env
    put(store, encounter(), channel="classic")
    worker.run_until_idle()
    store.accept(parse_bundle("topic", backport_bundle("event-notification", 1, [{"number": 1, "focus":
                                                                                    "Encounter/e1"}],
                                                       [encounter()])), T0)
    worker.run_until_idle()
    assert rescreen.calls == ["p1"]


def test_id_only_events_are_read_from_the_ehr(env: Any) -> None:
    store, worker, ehr, rescreen, _clock = env
    ehr.resources[("Encounter", "e1")] = encounter()
    store.accept(parse_bundle("adm", backport_bundle("event-notification", 2, [
        {"number": 1, "focus": "Encounter/e1"}, {"number": 2, "focus": "Encounter/gone"}])), T0)
    worker.run_until_idle()
    assert ehr.fetches == [("Encounter", "e1"), ("Encounter", "gone")]
    assert rescreen.calls == ["p1"] and store.stats().inbox == {"done": 2}


def test_ehr_errors_are_retried_with_backoff_then_failed_never_dropped(env: Any) -> None:
    store, worker, ehr, rescreen, clock = env
    ehr.fail_fetch = TransportError("GET Encounter/e1: ConnectTimeout after 5 attempt(s), giving up")
    store.accept(parse_bundle("adm", backport_bundle("event-notification", 1, [{"number": 1,
                                                                                 "focus": "Encounter/e1"}])), T0)
    worker.step()
    [entry] = store.inbox_entries()
    assert (entry.state, entry.attempts) == ("pending", 1) and "ConnectTimeout" in (entry.last_error or "")
    clock.advance(1.9)
    assert worker.step() == 0  # backoff: 2 s after the first attempt
    clock.advance(0.1)
    worker.step()
    clock.advance(4)  # second backoff: 4 s
    worker.step()
    [entry] = store.inbox_entries()
    assert (entry.state, entry.attempts) == ("failed", 3)
    ehr.fail_fetch = None
    ehr.resources[("Encounter", "e1")] = encounter()
    assert store.requeue_failed(clock()) == 1
    worker.run_until_idle()
    assert rescreen.calls == ["p1"]


def test_rescreen_remote_errors_retry_and_other_bridge_errors_fail(env: Any) -> None:
    store, worker, _ehr, rescreen, clock = env
    rescreen.errors = [ServerRejected("PUT ResearchSubject: 500 rejected", status=500)]
    put(store, encounter())
    worker.run_until_idle()
    assert store.rescreen_state("p1")["state"] == "pending"
    clock.advance(2)
    worker.run_until_idle()
    assert store.rescreen_state("p1")["state"] == "done" and rescreen.calls == ["p1", "p1"]
    rescreen.errors = [ValidationFailed("ResearchSubject fails the R4 schema")]
    put(store, encounter("e2"))
    worker.run_until_idle()
    row = store.rescreen_state("p1")
    assert (row["state"], row["last_error"]) == ("failed", "ResearchSubject fails the R4 schema")


def test_a_new_event_during_a_rescreen_runs_it_again(env: Any) -> None:
    store, worker, _ehr, rescreen, _clock = env
    rescreen.during = lambda: put(store, encounter("e2")) if len(rescreen.calls) == 1 else None
    put(store, encounter())
    worker.run_until_idle()
    assert rescreen.calls == ["p1", "p1"]
    assert store.rescreen_state("p1")["state"] == "done"


def test_a_crashed_worker_s_claims_are_done_after_the_lease(env: Any, cmap: CodeMap) -> None:
    store, _worker, ehr, rescreen, clock = env
    put(store, encounter())
    put(store, encounter("e2", "p2"))
    store.claim_inbox("dead#0", clock(), 120, 10, 5)  # a worker that died holding both entries
    survivor = Worker(store, rescreen, ehr, cmap, WorkerConfig(coalesce_seconds=0, lease_seconds=120,
                                                               catch_up_on_start=False), clock=clock, name="other")
    assert survivor.run_until_idle() == 0
    clock.advance(120)
    survivor.run_until_idle()
    assert sorted(rescreen.calls) == ["p1", "p2"]


def test_recover_releases_the_same_worker_name_at_once(env: Any) -> None:
    store, worker, _ehr, rescreen, _clock = env
    put(store, encounter())
    store.claim_inbox("test#0", T0, 120, 10, 5)  # this worker's previous life
    worker.recover()
    worker.run_until_idle()
    assert rescreen.calls == ["p1"]


def test_a_ping_queries_what_changed_since_the_last_query(env: Any) -> None:
    store, worker, ehr, rescreen, clock = env
    store.register_subscription(SubscriptionState("channel/adm", "adm", "classic", criteria="Encounter?class=IMP",
                                                  created_at=T0 - 3600))
    ehr.changed = [encounter("e5", "p5"), {"resourceType": "Encounter"}]  # the second has no id: skipped
    store.accept(parse_post("adm", b""), T0)
    worker.run_until_idle()
    [(types, since)] = ehr.queries
    assert types == ("Encounter",)
    assert since == datetime.fromtimestamp(T0 - 3600 - 300, UTC)  # registration time less the clock skew
    assert rescreen.calls == ["p5"]
    assert store.subscription("channel/adm").last_query_at == T0
    clock.advance(60)
    store.accept(parse_post("adm", b""), clock())
    worker.run_until_idle()
    assert ehr.queries[1][1] == datetime.fromtimestamp(T0 - 300, UTC)
    assert rescreen.calls == ["p5"]  # the same version again: nothing new


def test_a_gap_is_logged_and_caught_up(env: Any, caplog: pytest.LogCaptureFixture) -> None:
    store, worker, ehr, rescreen, clock = env
    for n in (1, 2, 5):
        bundle = backport_bundle("event-notification", n, [{"number": n, "focus": f"Encounter/e{n}"}],
                                 [encounter(f"e{n}", f"p{n}")])
        store.accept(parse_bundle("adm", bundle), T0 + n)
    ehr.changed = [encounter("e3", "p3"), encounter("e4", "p4"), encounter("e5", "p5")]
    clock.now = T0 + 5
    worker.run_until_idle()
    assert sorted(rescreen.calls) == ["p1", "p2", "p5"] and ehr.queries == []
    clock.now = T0 + 30
    with caplog.at_level(logging.WARNING, logger="bridge.service.worker"):
        worker.run_until_idle()
    assert "catch-up.queued reason=gap subscription=Subscription/adm1 first=3 last=4" in caplog.text
    [(types, since)] = ehr.queries
    assert types == ("Encounter", "Condition", "Observation")
    assert since == datetime.fromtimestamp(T0 + 2 - 300, UTC)
    assert sorted(rescreen.calls) == ["p1", "p2", "p3", "p4", "p5"]  # p5's version was seen: not again


def test_out_of_order_delivery_is_not_a_gap(env: Any) -> None:
    store, worker, ehr, rescreen, clock = env
    for i, n in enumerate((1, 3, 2)):
        bundle = backport_bundle("event-notification", n, [{"number": n, "focus": f"Encounter/e{n}"}],
                                 [encounter(f"e{n}", f"p{n}")])
        store.accept(parse_bundle("adm", bundle), T0 + i)
        clock.now = T0 + i
        worker.monitor(force=True)
    clock.now = T0 + 60
    worker.run_until_idle()
    assert ehr.queries == [] and sorted(rescreen.calls) == ["p1", "p2", "p3"]


def test_a_missed_heartbeat_triggers_a_catch_up(env: Any, caplog: pytest.LogCaptureFixture) -> None:
    store, worker, ehr, rescreen, clock = env
    store.register_subscription(SubscriptionState("Subscription/adm1", "adm", "topic", heartbeat_seconds=60,
                                                  resource_types=("Encounter",), created_at=T0, covered_through=0))
    store.accept(parse_bundle("adm", backport_bundle("heartbeat", 0)), T0)
    ehr.changed = [encounter("e8", "p8")]
    clock.now = T0 + 60 + 120  # exactly the period + grace: not yet
    worker.run_until_idle()
    assert ehr.queries == []
    clock.now = T0 + 60 + 121
    with caplog.at_level(logging.WARNING, logger="bridge.service.worker"):
        worker.run_until_idle()
    assert "catch-up.queued reason=heartbeat subscription=Subscription/adm1" in caplog.text
    assert ehr.queries == [(("Encounter",), datetime.fromtimestamp(T0 - 300, UTC))]
    assert rescreen.calls == ["p8"]


def test_startup_catch_up_covers_the_downtime(env: Any, cmap: CodeMap) -> None:
    store, _worker, ehr, rescreen, clock = env
    put(store, encounter(), now=T0 - 600)
    worker = Worker(store, rescreen, ehr, cmap, WorkerConfig(coalesce_seconds=0), clock=clock, name="boot")
    worker.recover()
    worker.run_until_idle()
    assert ehr.queries == [(("Encounter", "Condition", "Observation"), datetime.fromtimestamp(T0 - 900, UTC))]


def test_threads_start_process_and_stop(tmp_path: Path, cmap: CodeMap) -> None:
    store = SqliteStore(tmp_path / "s.db")
    rescreen = FakeRescreen()
    worker = Worker(store, rescreen, FakeEhr(), cmap, WorkerConfig(coalesce_seconds=0, idle_seconds=0.01,
                                                                   catch_up_on_start=False), threads=3)
    for n in range(30):
        put(store, encounter(f"e{n}", f"p{n}"), now=time.time())
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while store.stats().depth and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.alive
    finally:
        worker.stop()
    assert not worker.alive
    assert sorted(rescreen.calls) == sorted(f"p{n}" for n in range(30))
    store.close()


def test_invalid_resources_from_a_query_are_skipped_not_fatal(env: Any) -> None:
    store, worker, ehr, _rescreen, _clock = env
    ehr.changed = [{"resourceType": "Encounter", "id": "bad id"}]
    store.accept(parse_post("c1", b""), T0)
    worker.run_until_idle()
    assert store.stats().inbox == {"done": 1}


def test_client_ehr_maps_gone_to_none() -> None:
    class Client:
        def read(self, rtype: str, rid: str) -> Any:
            raise ServerRejected(f"GET {rtype}/{rid}: 410 rejected", status=410)

        def search(self, rtype: str, params: dict[str, str], matches_only: bool) -> Iterator[dict[str, Any]]:
            assert params == {"_lastUpdated": "gt2026-05-28T20:26:40Z", "_count": "200"} and matches_only
            yield {"resourceType": rtype, "id": "x"}

    ehr = ClientEhr(Client())  # type: ignore[arg-type]
    assert ehr.fetch("Encounter", "e1") is None
    since = datetime.fromtimestamp(T0, UTC)
    assert [r["resourceType"] for r in ehr.changed_since(["Encounter", "Observation"], since)] == [
        "Encounter", "Observation"]


def test_client_ehr_lets_other_errors_through() -> None:
    class Client:
        def read(self, rtype: str, rid: str) -> Any:
            raise InvalidResource("Encounter/e1 is broken")

    with pytest.raises(InvalidResource):
        ClientEhr(Client()).fetch("Encounter", "e1")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ replicas (issue #15)


def _replica(store: SqliteStore, cmap: CodeMap, slot: int, rescreen: FakeRescreen, clock: Clock) -> Worker:
    config = WorkerConfig(coalesce_seconds=0, catch_up_on_start=False, replica_slots=4)
    return Worker(store, rescreen, FakeEhr(), cmap, config, clock=clock, name=replica_name(slot),
                  election=store, slot=slot)


def test_a_dead_replicas_claims_are_taken_over_at_once(tmp_path: Path, cmap: CodeMap) -> None:
    store, clock, rescreen = SqliteStore(tmp_path / "state.sqlite3"), Clock(), FakeRescreen()
    dead, survivor = _replica(store, cmap, 0, rescreen, clock), _replica(store, cmap, 1, rescreen, clock)
    try:
        put(store, encounter("e1", "p1"))
        put(store, encounter("e2", "p2"))
        with file_leader(store.path, slot_lock(0)) as alive:  # replica 0 runs and claims everything
            assert alive
            assert len(store.claim_inbox(f"{dead.name}#0", T0, 120, 10, 5)) == 2
            assert survivor.take_over(clock()) == 0 and survivor.run_until_idle() == 0
        assert survivor.take_over(clock()) == 0  # free once: maybe a live replica whose session was dropped
        clock.advance(survivor.config.takeover_grace_seconds)
        assert survivor.take_over(clock()) == 2  # still free: the process died; long before the lease ends
        survivor.run_until_idle()
        assert sorted(rescreen.calls) == ["p1", "p2"] and store.stats().inbox == {"done": 2}
    finally:
        store.close()


def test_only_the_replica_that_leads_runs_the_checks(tmp_path: Path, cmap: CodeMap) -> None:
    store, clock = SqliteStore(tmp_path / "state.sqlite3"), Clock()
    worker = _replica(store, cmap, 0, FakeRescreen(), clock)
    store.register_subscription(SubscriptionState("Subscription/t", "adm", "topic", heartbeat_seconds=60,
                                                  created_at=T0 - 3600, last_seen_at=T0 - 3600))
    try:
        with file_leader(store.path, "monitor") as other:  # another replica runs the checks this pass
            assert other
            worker.monitor(force=True)
            assert store.stats().inbox == {}
        worker.monitor(force=True)
        assert [e.event.kind for e in store.inbox_entries()] == ["catch-up"]  # the heartbeat is overdue
    finally:
        store.close()


def test_the_rescreen_delay_is_a_setting() -> None:
    assert WorkerConfig.from_settings(Settings(rescreen_delay_seconds=3.5)).coalesce_seconds == 3.5
    assert WorkerConfig.from_settings(Settings()).coalesce_seconds == Settings().rescreen_delay_seconds


class FlakyStore:
    """The store, whose first ``finish_rescreen`` fails as a store that went away would."""

    def __init__(self, store: SqliteStore) -> None:
        self.store, self.failures = store, 1

    def finish_rescreen(self, *args: Any) -> bool:
        if self.failures:
            self.failures -= 1
            raise StoreError("state store: finish re-screen failed: connection lost")
        return self.store.finish_rescreen(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_pass_broken_off_by_the_store_releases_its_claims_without_waiting_for_the_lease(
        tmp_path: Path, cmap: CodeMap) -> None:
    store, rescreen = SqliteStore(tmp_path / "state.sqlite3"), FakeRescreen()
    config = WorkerConfig(coalesce_seconds=0, catch_up_on_start=False, idle_seconds=0.01, lease_seconds=3600)
    worker = Worker(FlakyStore(store), rescreen, FakeEhr(), cmap, config, name="flaky")  # type: ignore[arg-type]
    put(store, encounter(), now=time.time())
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while store.stats().rescreens != {"done": 1} and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
        store.close()
    assert rescreen.calls == ["p1", "p1"]  # done again at once, not after the hour's lease


def test_a_replica_takes_its_slot_back_and_its_claims_are_not_released_meanwhile(tmp_path: Path,
                                                                                 cmap: CodeMap) -> None:
    store, clock, rescreen = SqliteStore(tmp_path / "state.sqlite3"), Clock(), FakeRescreen()
    live, other = _replica(store, cmap, 0, rescreen, clock), _replica(store, cmap, 1, rescreen, clock)
    try:
        put(store, encounter("e1", "p1"))
        with file_leader(store.path, slot_lock(0)) as held:  # as startup holds the slot
            assert held and live.keep_slot() is False  # held: nothing to do
        assert len(store.claim_inbox(f"{live.name}#0", T0, 120, 10, 5)) == 1
        assert other.take_over(clock()) == 0  # the lock was dropped (a database restart): seen free once
        assert live.keep_slot() is True  # the replica takes it back within a second
        clock.advance(other.config.takeover_grace_seconds)
        assert other.take_over(clock()) == 0  # held again: its claim stays its own
        assert store.stats().inbox == {"claimed": 1}
    finally:
        live.stop()
        store.close()


def test_pending_write_backs_are_retried_by_the_leading_replica_at_their_interval(tmp_path: Path,
                                                                                   cmap: CodeMap) -> None:
    store, clock, calls = SqliteStore(tmp_path / "state.sqlite3"), Clock(), []

    def retry() -> tuple[int, int]:
        calls.append(clock())
        return 1, 1

    config = WorkerConfig(coalesce_seconds=0, catch_up_on_start=False, writeback_retry_seconds=30)
    worker = Worker(store, FakeRescreen(), FakeEhr(), cmap, config, clock=clock, name="w", election=store,
                    retry_writebacks=retry)
    try:
        with file_leader(store.path, "monitor") as other:  # another replica leads: it retries, not this one
            assert other
            worker.monitor(force=True)
        assert calls == []
        worker.monitor(force=True)
        clock.advance(10)
        worker.monitor(force=True)  # within the interval: not again
        clock.advance(20)
        worker.monitor(force=True)
        assert calls == [T0, T0 + 30]
    finally:
        store.close()


def test_the_service_worker_retries_the_study_team_s_write_backs(tmp_path: Path) -> None:
    from bridge.service.app import build_worker

    settings = Settings(ehr_base_url="http://127.0.0.1:9/fhir", db_path=str(tmp_path / "state.sqlite3"))
    worker = build_worker(settings, "w")
    try:
        assert worker.retry_writebacks is not None
        assert worker.retry_writebacks() == (0, 0)  # nothing pending: no EHR request (port 9 would refuse)
    finally:
        worker.store.close()  # type: ignore[attr-defined]
