"""Bursts of EHR notifications into bridge replicas, and what must hold afterwards (issue #15).

Shared by the failure tests (``test_replicas.py``) and the throughput benchmark
(``benchmarks/service_throughput.py``):

* ``Population`` — N synthetic patients, clones of sample patient p01 (16 resources each: the Patient, one
  Condition, 13 mapped Observations, the admission Encounter), loaded onto the peer EHR;
* ``notes`` — the notifications the EHR would send for them: per patient the admission Encounter, then lab
  Observations (each a new ``meta.versionId``, so each is a new event), as classic rest-hook ``PUT``s with the
  full resource;
* ``Sender`` — the EHR's side of the webhook: notifications at a fixed rate over a pool of connections, spread
  over the replicas as a load balancer would, each retried (another replica, after a pause) on a connection
  error or a 5xx until answered 200 — an EHR retries what it was not told it delivered;
* ``subjects_by_patient`` and ``drained`` — the end checks: the ResearchSubjects on the peer per patient, and
  the store with nothing pending, claimed or failed.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from benchmarks.service_latency import clone_patient, template_resources
from bridge.client import FhirClient
from bridge.publish.subject import subject_identifier
from bridge.service.channels import DEFAULT_CHANNEL, channel_secret
from bridge.state import StoreStats

from .loading import load_bundle

Json = dict[str, Any]


@dataclass(frozen=True)
class Note:
    """One notification: ``method`` ``path`` with ``body`` (a classic rest-hook: ``PUT /notify/{type}/{id}``
    with the resource)."""

    patient: str
    path: str
    body: bytes
    admission: bool
    method: str = "PUT"
    channel: str = DEFAULT_CHANNEL  # whose secret the EHR presents


class Population:
    """``count`` clones of the sample patient p01 named ``<prefix><n>``."""

    def __init__(self, count: int, prefix: str = "rp") -> None:
        template = template_resources()
        self.patients = [f"{prefix}{n:04d}" for n in range(count)]
        self.resources = {pid: clone_patient(template, pid) for pid in self.patients}

    def load(self, client: FhirClient, patients: Iterable[str] | None = None, admissions: bool = True) -> None:
        """Write the patients' resources to the EHR (without their admission Encounters unless ``admissions``)."""
        chosen = list(self.patients if patients is None else patients)
        data = [r for pid in chosen for r in self.resources[pid] if r["resourceType"] != "Encounter"]
        for start in range(0, len(data), 400):
            load_bundle(client, {"entry": [{"resource": r} for r in data[start:start + 400]]})
        if admissions:
            self.admit(client, chosen)

    def admit(self, client: FhirClient, patients: Iterable[str]) -> None:
        encounters = [r for pid in patients for r in self.resources[pid] if r["resourceType"] == "Encounter"]
        load_bundle(client, {"entry": [{"resource": r} for r in encounters]})

    def notes(self, per_patient: int, patients: Iterable[str] | None = None, version: str = "n") -> list[Note]:
        """Per patient its admission, then ``per_patient - 1`` lab results, patient after patient; the versions
        are ``<version><serial>`` (another ``version`` for another round of the same resources)."""
        out: list[Note] = []
        serial = itertools.count(1)
        for pid in self.patients if patients is None else patients:
            resources = self.resources[pid]
            [encounter] = [r for r in resources if r["resourceType"] == "Encounter"]
            labs = itertools.cycle([r for r in resources if r["resourceType"] == "Observation"])
            for resource in [encounter, *itertools.islice(labs, per_patient - 1)]:
                body = {**resource, "meta": {"versionId": f"{version}{next(serial)}"}}
                out.append(Note(pid, f"/notify/{resource['resourceType']}/{resource['id']}",
                                json.dumps(body).encode(), resource is encounter))
        return out


@dataclass
class Sent:
    """What happened to one notification: when it was first sent and when (if ever) a replica took it."""

    note: Note
    first_sent: float = 0.0
    accepted_at: float | None = None
    tries: int = 0


@dataclass
class SendReport:
    deliveries: list[Sent]
    outcomes: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0

    @property
    def accepted(self) -> list[Sent]:
        return [d for d in self.deliveries if d.accepted_at is not None]

    @property
    def offered_rate(self) -> float:
        return len(self.deliveries) / max(1e-9, self.finished - self.started)


class Sender:
    """The EHR's notifier: ``send`` posts every note at ``rate`` per second over ``threads`` connections, each
    note round-robin to the replicas at ``urls()`` and retried until accepted or ``give_up`` seconds passed."""

    def __init__(self, urls: Callable[[], list[str]], secret: str, threads: int = 16, give_up: float = 180.0,
                 pause: float = 0.25) -> None:
        self.urls, self.secret, self.threads, self.give_up, self.pause = urls, secret, threads, give_up, pause
        self._local = threading.local()
        self._lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _secret(self, note: Note) -> str:
        return channel_secret(self.secret, note.channel)

    def _deliver(self, delivery: Sent, index: int) -> None:
        note, deadline = delivery.note, time.monotonic() + self.give_up
        delivery.first_sent = time.time()
        for attempt in itertools.count():
            urls = self.urls()
            url = urls[(index + attempt) % len(urls)]
            delivery.tries += 1
            try:
                resp = self._session().request(note.method, f"{url}{note.path}", data=note.body, timeout=(2, 30),
                                               headers={"Authorization": f"Bearer {self._secret(note)}",
                                                        "Content-Type": "application/fhir+json"})
                outcome = str(resp.status_code)
            except requests.RequestException as exc:
                outcome = type(exc).__name__
                self._local.session = None  # a connection of a killed replica stays broken
            self._count(outcome)
            if outcome == "200":
                delivery.accepted_at = time.time()
                return
            if outcome.startswith("4") or time.monotonic() > deadline:
                return  # a refusal the EHR would not retry, or it gave up
            time.sleep(self.pause)

    def send(self, notes: list[Note], rate: float, during: Callable[[int], None] | None = None) -> SendReport:
        """Post ``notes`` at ``rate`` per second; ``during(i)`` runs in this thread before the i-th is queued."""
        deliveries = [Sent(n) for n in notes]
        report = SendReport(deliveries, started=time.time())
        with ThreadPoolExecutor(self.threads) as pool:
            start = time.monotonic()
            for i, delivery in enumerate(deliveries):
                if during is not None:
                    during(i)
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
                pool.submit(self._deliver, delivery, i)
            report.finished = time.time()
        report.outcomes = self.outcomes
        return report


def subjects_by_patient(client: FhirClient, patients: Iterable[str]) -> dict[str, list[Json]]:
    """Every ResearchSubject on the EHR (the peer's search on the type returns them all), per patient."""
    wanted = {subject_identifier(p)[1]: p for p in patients}
    found: dict[str, list[Json]] = {p: [] for p in wanted.values()}
    for res in client.search("ResearchSubject", {"_count": "500"}, matches_only=True):
        for value in {i.get("value") for i in res.get("identifier") or []} & wanted.keys():
            found[wanted[str(value)]].append(res)
    return found


def wait_for(check: Callable[[], bool], timeout: float, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(poll)
    return check()


def drained(stats: StoreStats) -> bool:
    """Nothing pending or claimed (done or failed only)."""
    return stats.depth == 0


__all__ = ["Note", "Sent", "Population", "SendReport", "Sender", "drained", "subjects_by_patient", "wait_for"]
