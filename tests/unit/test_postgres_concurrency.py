"""Several replicas on one PostgreSQL database, at the store: each ``PostgresState`` / ``PostgresOutbox`` here
has its own pool, as a replica process would (and the first test uses real processes). Claims never hand out
an entry twice, an expired lease is taken over, re-screen requests coalesce per patient across states, and
each registry package is claimed once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from bridge.state import InboxEvent, Resolution
from bridge.state.postgres_outbox import PostgresOutbox
from bridge.state.postgres_state import PostgresState

T0 = 1_780_000_000.0
T = TypeVar("T")


def event(n: int, patient: str = "p1") -> InboxEvent:
    return InboxEvent(f"res:Encounter/e{n}/_history/1", "resource", "c1", "channel/c1", None, "Encounter", f"e{n}",
                      patient)


@pytest.fixture
def replicas(pg_url: str) -> Iterator[list[PostgresState]]:
    states = [PostgresState(pg_url, pool_size=4) for _ in range(3)]
    yield states
    for s in states:
        s.close()


def race(workers: list[Callable[[], T]]) -> list[T]:
    """Run every worker in a thread of its own, started together; their results in order (errors re-raised)."""
    start, results, errors = threading.Barrier(len(workers)), [None] * len(workers), []

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = workers[i]()  # type: ignore[call-overload]
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


CLAIMER = """
import json, sys
from bridge.state import Resolution
from bridge.state.postgres_state import PostgresState
state, me, got = PostgresState(sys.argv[1], pool_size=2), sys.argv[2], []
while True:
    batch = state.claim_inbox(me, 1780000000.0, 60, 5, 5)
    if not batch:
        break
    for entry in batch:
        assert state.finish_inbox(entry.id, me, Resolution(rescreen=frozenset({entry.event.patient_id})),
                                  1780000001.0)
        got.append(entry.id)
state.close()
print(json.dumps(got))
"""


def test_two_processes_claiming_from_the_inbox_never_get_the_same_entry(pg_url: str) -> None:
    state = PostgresState(pg_url)
    try:
        state.enqueue([event(n, f"p{n % 17}") for n in range(300)], T0)
        procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, pg_url, f"serve/{i}@h:1:x#0"],
                                  stdout=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=180)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        claimed = [json.loads(o) for o in outs]
        everything = claimed[0] + claimed[1]
        assert len(everything) == 300 and len(set(everything)) == 300
        assert claimed[0] and claimed[1]  # both took part
        assert state.stats().inbox == {"done": 300}
        assert state.stats().rescreens == {"pending": 17}  # one per patient, whichever process resolved it
    finally:
        state.close()


def test_threads_on_three_states_never_claim_an_entry_twice(replicas: list[PostgresState]) -> None:
    replicas[0].enqueue([event(n, f"p{n}") for n in range(240)], T0)

    def claimer(state: PostgresState, me: str) -> Callable[[], list[int]]:
        def claim_all() -> list[int]:
            got: list[int] = []
            while batch := state.claim_inbox(me, T0, 60, 7, 5):
                got += [e.id for e in batch]
            return got
        return claim_all

    results = race([claimer(s, f"r{i}#{k}") for i, s in enumerate(replicas) for k in range(2)])
    everything = [i for r in results for i in r]
    assert len(everything) == 240 and len(set(everything)) == 240


def test_an_expired_lease_is_taken_over_by_another_replica(replicas: list[PostgresState]) -> None:
    dead, alive = replicas[0], replicas[1]
    dead.enqueue([event(1)], T0)
    [entry] = dead.claim_inbox("serve/0@h:1:a#0", T0, lease=60, limit=10, max_attempts=5)
    assert alive.claim_inbox("serve/1@h:2:b#0", T0 + 59, lease=60, limit=10, max_attempts=5) == []
    [taken] = alive.claim_inbox("serve/1@h:2:b#0", T0 + 60, lease=60, limit=10, max_attempts=5)
    assert (taken.id, taken.attempts) == (entry.id, 2)
    late = Resolution(rescreen=frozenset({"p-late"}))
    assert dead.finish_inbox(entry.id, "serve/0@h:1:a#0", late, T0 + 61) is False  # its claim was lost
    assert alive.rescreen_state("p-late") is None
    assert alive.finish_inbox(taken.id, "serve/1@h:2:b#0", Resolution(rescreen=frozenset({"p1"})), T0 + 61)
    assert dead.stats().inbox == {"done": 1}


def test_rescreen_requests_coalesce_per_patient_across_states(replicas: list[PostgresState]) -> None:
    def requester(state: PostgresState, offset: int) -> Callable[[], None]:
        def request() -> None:
            for i in range(20):
                state.request_rescreens(["p1", "p2"], T0 + offset + i, T0 + offset + i, delay=0)
        return request

    race([requester(s, 100 * k) for k, s in enumerate(replicas)])
    for patient in ("p1", "p2"):
        row = replicas[2].rescreen_state(patient)
        assert row is not None and (row["state"], row["generation"]) == ("pending", 60)
        assert row["oldest_request_at"] == T0
    claims = race([lambda s=s, k=k: s.claim_rescreens(f"r{k}#0", T0 + 400, 60, 10, 5)  # type: ignore[misc]
                   for k, s in enumerate(replicas)])
    tasks = [t for c in claims for t in c]
    assert sorted(t.patient_id for t in tasks) == ["p1", "p2"]  # each patient's re-screen runs once


def test_a_request_on_another_replica_during_a_rescreen_sends_it_back_to_pending(
        replicas: list[PostgresState]) -> None:
    a, b = replicas[0], replicas[1]
    a.request_rescreens(["p1"], T0, T0, 0)
    [task] = a.claim_rescreens("a#0", T0, 60, 10, 5)
    b.request_rescreens(["p1"], T0 + 1, T0 + 1, 0)
    assert b.claim_rescreens("b#0", T0 + 1, 60, 10, 5) == []  # never run twice at once
    assert a.finish_rescreen(task, "a#0", "candidate", T0 + 2) is False
    [again] = b.claim_rescreens("b#0", T0 + 2, 60, 10, 5)
    assert again.generation == 2


def test_each_registry_package_is_claimed_once(pg_url: str) -> None:
    boxes = [PostgresOutbox(pg_url, clock=lambda: T0) for _ in range(3)]
    try:
        for n in range(30):
            assert boxes[0].enqueue(f"key{n}", f"pkg{n}", "infusion-1", f"ps{n}", {"n": n})
        for i, box in enumerate(boxes):
            box.owner = f"{box.host}:1-{i}"  # distinct owners none of which looks dead (leases never expire here)

        def sender(box: PostgresOutbox) -> Callable[[], list[str]]:
            def send_all() -> list[str]:
                sent = []
                while (row := box.claim()) is not None:
                    assert row.body == {"n": int(row.package_id[3:])}
                    box.mark_sent(row.key, 201, {"id": row.key})
                    sent.append(row.key)
                return sent
            return send_all

        results = race([sender(b) for b in boxes])
        everything = [k for r in results for k in r]
        assert sorted(everything) == sorted(f"key{n}" for n in range(30)) and len(set(everything)) == 30
        assert boxes[1].counts()["sent"] == 30
    finally:
        for box in boxes:
            box.close()
