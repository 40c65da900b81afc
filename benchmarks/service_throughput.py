"""Sustained notifications per second into 1 and 2 service replicas, on SQLite and on PostgreSQL (issue #15).

``python -m benchmarks.service_throughput [--rates 50 100] [--seconds 30] [--per-patient 10]
[--replicas 1 2] [--backends sqlite postgresql] [--pg-url URL] [--json FILE]``

For each backend × replica count × rate, in one run (so the figures share the machine's load): a fresh peer
FHIR server (sekmet-fhir) holding ``rate × seconds / per-patient`` synthetic patients (clones of sample p01),
a fresh database (a SQLite file, or a new database on a PostgreSQL server the benchmark starts for itself with
``scripts/pg-server``, or on ``--pg-url``), and N ``server.py`` replicas on it. The EHR's notifier
(``tests/integration/burst.py``) then sends, at a fixed rate for ``seconds``, per patient its admission
Encounter followed by ``per-patient - 1`` lab Observations (classic rest-hook ``PUT`` with the resource), spread
round-robin over the replicas with 16 connections, each retried until answered 200.

Reported per configuration (one JSON document, and a table on stderr):

* ``accepted_per_s`` — notifications answered 200 per second of sending (the offered rate when it keeps up),
  and ``notify_ms`` p50 / p99: the time to that answer (the event durably in the store);
* ``latency_ms`` p50 / p90 / p99 / max — admission sent → the patient's ResearchSubject version 1 on the peer
  (``meta.lastUpdated``; one machine, one clock);
* ``lost`` — admitted patients without a ResearchSubject when the store has drained (or at the deadline), and
  the store's inbox and re-screen counts (nothing may be failed or left);
* where the time goes: from the replicas' logs the time in re-screens (pull from the EHR, evaluate, publish),
  in resolving inbox entries and in accepting notifications; the CPU seconds used by the peer, by the
  replicas and by the sender (``/proc``) over the run; and ``phases_ms``: one re-screen taken apart in this
  process for 20 of the patients — EHR reads (``fetch_patient``), evaluation (``screen_one``), the publish round
  trip (``publish_subject``, unchanged: one conditional read) — and one store cycle (accept, claim, finish) on
  the backend.

Run by hand; never a timed unit test. The machine is shared: the load average is printed with each result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.service_latency import percentile, written_times
from bridge.client import FhirClient
from bridge.config import RuleOptions
from bridge.ingest.pull import fetch_patient
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import screen_one
from bridge.publish.publisher import publish_subject
from bridge.service.notifications import parse_put
from bridge.state import Resolution, open_state
from bridge.trial import load_trial
from tests.integration.burst import Population, Sender, drained, wait_for
from tests.integration.peer import PeerServer, find_sekmet
from tests.processes import ServiceProcess

REPO = Path(__file__).resolve().parents[1]
SECRET = "bench-webhook-secret-0123456789abcdef"  # noqa: S105 - a throw-away secret of a local benchmark run
SITE_MAP = REPO / "samples" / "site-map.yaml"
Json = dict[str, Any]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (and its waited-for children) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def quantiles(values: list[float]) -> Json | None:
    if not values:
        return None
    return {"p50": round(percentile(values, 0.5), 1), "p90": round(percentile(values, 0.9), 1),
            "p99": round(percentile(values, 0.99), 1), "max": round(max(values), 1)}


@contextmanager
def database(backend: str, workdir: Path, pg_url: str | None) -> Iterator[tuple[Json, str]]:
    """The settings that put the replicas on a fresh database of ``backend``, and its location."""
    if backend == "sqlite":
        db = workdir / "state.sqlite3"
        yield {"db_path": str(db)}, str(db)
        return
    if not pg_url:
        raise SystemExit("postgresql: no server (give --pg-url, or let the benchmark start its own)")
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"bench_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
    try:
        yield {"db_url": url}, url
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def log_events(paths: list[Path]) -> list[Json]:
    out = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def where_time_goes(events: list[Json]) -> Json:
    """Seconds spent per kind of work in the replicas (summed over worker threads / requests)."""
    def total(name: str, path: str | None = None) -> tuple[float, int]:
        durations = [e.get("duration_ms") or 0.0 for e in events if e.get("event") == name
                     and (path is None or str(e.get("path", "")).startswith(path))]
        return round(sum(durations) / 1000, 2), len(durations)

    rescreen_s, rescreens = total("rescreen.done")
    inbox_s, entries = total("inbox.done")
    notify_s, requests_ = total("http.request", "/notify")
    durations = [e["duration_ms"] for e in events if e.get("event") == "rescreen.done"]
    return {"rescreens": rescreens, "rescreen_s": rescreen_s, "rescreen_ms": quantiles(durations),
            "inbox_entries": entries, "inbox_s": inbox_s, "notify_requests": requests_, "notify_s": notify_s,
            "retries": sum(1 for e in events if str(e.get("event", "")).endswith(".retry")),
            "errors": sum(1 for e in events if e.get("level") in ("error", "critical"))}


def phases(client: FhirClient, location: str, patients: list[str]) -> Json:
    """One re-screen taken apart (EHR reads, evaluation, publish round trip) and one store cycle, in ms."""
    cmap, trial = load_code_map(str(SITE_MAP)), load_trial()
    options = RuleOptions.for_trial(trial, date.today())
    pull, evaluate, publish = [], [], []
    for pid in patients:
        t0 = time.perf_counter()
        items = list(fetch_patient(client, pid, cmap, options.as_of))  # it is lazy: the reads happen here
        t1 = time.perf_counter()
        result = screen_one(items, pid, options, cmap, trial)
        t2 = time.perf_counter()
        if not hasattr(result, "verdicts"):
            continue
        publish_subject(client, result, options, transaction=None, trial=trial)  # type: ignore[arg-type]
        t3 = time.perf_counter()
        pull.append((t1 - t0) * 1000)
        evaluate.append((t2 - t1) * 1000)
        publish.append((t3 - t2) * 1000)
    store_ms = store_cycle(location)
    return {"ehr_reads_ms": round(statistics.median(pull), 1), "evaluate_ms": round(statistics.median(evaluate), 1),
            "publish_ms": round(statistics.median(publish), 1), "store_cycle_ms": store_ms}


def store_cycle(location: str, rounds: int = 50) -> float:
    """Median ms of accept + claim + finish of one notification on the benchmark's database."""
    state = open_state(location)
    body = json.dumps({"resourceType": "Encounter", "id": "cycle", "status": "finished", "meta": {"versionId": "0"},
                       "class": {"code": "AMB"}, "subject": {"reference": "Patient/cycle"}})
    times = []
    try:
        for n in range(rounds):
            t0 = time.perf_counter()
            state.accept(parse_put("default", "Encounter", "cycle", body.replace('"0"', f'"c{n}"').encode()),
                         time.time())
            for entry in state.claim_inbox("bench#0", time.time(), 60, 10, 6):
                state.finish_inbox(entry.id, "bench#0", Resolution(), time.time())
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        state.close()
    return round(statistics.median(times), 2)


@contextmanager
def own_postgres(workdir: Path) -> Iterator[str]:
    """A PostgreSQL server of this run only (``scripts/pg-server`` with a pointer file of its own), so no test
    run that stops the shared one takes the benchmark's database away."""
    env = {**os.environ, "PG_SERVER_FILE": str(workdir / "pg-server")}
    script = str(REPO / "scripts" / "pg-server")
    done = subprocess.run([script], env=env, capture_output=True, text=True, timeout=120, check=True)
    try:
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=60, check=False)


def run_one(backend: str, replicas: int, rate: float, args: argparse.Namespace) -> Json:
    count = max(1, math.ceil(rate * args.seconds / args.per_patient))
    population = Population(count, prefix="tp")
    with PeerServer(find_sekmet()) as peer, FhirClient(peer.base_url) as client, \
            tempfile.TemporaryDirectory(prefix="bridge-throughput-") as tmp, \
            database(backend, Path(tmp), args.pg_url) as (db_settings, location):
        population.load(client)
        settings = {"ehr_base_url": peer.base_url, "webhook_secret": SECRET, "site_map": str(SITE_MAP),
                    "workers": args.workers, "log_level": "INFO", "rescreen_delay_seconds": args.delay,
                    **db_settings}
        services = []
        for i in range(replicas):
            (Path(tmp) / f"r{i}").mkdir()
            services.append(ServiceProcess(Path(tmp) / f"r{i}", settings).start())
        pids = {"peer": [peer.process.pid] if peer.process else [],
                "replicas": [s.proc.pid for s in services if s.proc], "sender": [os.getpid()]}
        before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        load_before = os.getloadavg()[0]
        try:
            sender = Sender(lambda: [s.url for s in services], SECRET, threads=16)
            report = sender.send(population.notes(args.per_patient), rate)
            state = open_state(location)
            try:
                wait_for(lambda: drained(state.stats()), args.timeout)
                drained_at = time.time()
                stats = state.stats()
            finally:
                state.close()
            cpu = {k: round(sum(cpu_seconds(p) for p in v) - before[k], 1) for k, v in pids.items()}
            written = written_times(client, set(population.patients))
            admitted = {d.note.patient: d.first_sent for d in report.deliveries if d.note.admission}
            latencies = [(written[p] - t) * 1000 for p, t in admitted.items() if p in written]
            notify = [(d.accepted_at - d.first_sent) * 1000 for d in report.accepted if d.accepted_at]
            breakdown = phases(client, location, population.patients[:20])
        finally:
            for service in services:
                service.stop()
        events = log_events([s.log for s in services])
    return {
        "backend": backend, "replicas": replicas, "offered_per_s": rate, "notifications": len(report.deliveries),
        "patients": count, "accepted": len(report.accepted),
        "accepted_per_s": round(len(report.accepted) / max(1e-9, report.finished - report.started), 1),
        "notify_ms": quantiles(notify), "latency_ms": quantiles(latencies),
        "drain_s_after_last_sent": round(drained_at - report.finished, 1),
        "lost": len(admitted) - len([p for p in admitted if p in written]),
        "store": {"inbox": stats.inbox, "rescreens": stats.rescreens}, "http": dict(report.outcomes),
        "cpu_s": cpu, "time": where_time_goes(events), "phases_ms": breakdown,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def line(r: Json) -> str:
    lat = r["latency_ms"] or {}
    return (f"{r['backend']:10} {r['replicas']:>2} {r['offered_per_s']:>6.0f} {r['accepted_per_s']:>8.1f} "
            f"{lat.get('p50', float('nan')):>7.0f} {lat.get('p90', float('nan')):>7.0f} "
            f"{lat.get('p99', float('nan')):>7.0f} {r['lost']:>4} {r['time']['rescreens']:>5} "
            f"{r['cpu_s']['peer']:>6.1f} {r['cpu_s']['replicas']:>6.1f}  load {r['load_avg_1m']}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rates", type=float, nargs="+", default=[50.0])
    p.add_argument("--seconds", type=float, default=30.0, help="how long each rate is sent")
    p.add_argument("--per-patient", type=int, default=10, help="notifications per patient (admission + labs)")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    p.add_argument("--pg-url", help="a PostgreSQL server to create the databases on (default: one of its own)")
    p.add_argument("--workers", type=int, default=2, help="worker threads per replica")
    p.add_argument("--delay", type=float, default=0.5, help="rescreen_delay_seconds")
    p.add_argument("--timeout", type=float, default=180.0, help="how long to wait for the store to drain")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    results: list[Json] = []
    with tempfile.TemporaryDirectory(prefix="bridge-throughput-pg-") as pg_dir, ExitStack() as stack:
        if "postgresql" in args.backends and not args.pg_url:
            args.pg_url = stack.enter_context(own_postgres(Path(pg_dir)))
        run_all(args, results)


def run_all(args: argparse.Namespace, results: list[Json]) -> None:
    print(f"{'backend':10} {'N':>2} {'rate':>6} {'accept/s':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'lost':>4} "
          f"{'rescr':>5} {'cpuPeer':>6} {'cpuRep':>6}", file=sys.stderr)
    for backend in args.backends:
        for rate in args.rates:
            for replicas in args.replicas:
                result = run_one(backend, replicas, rate, args)
                results.append(result)
                print(line(result), file=sys.stderr, flush=True)
                doc = {"results": results, "cpus": os.cpu_count(),
                       "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                    if k != "pg_url"}}
                if args.json:  # after every configuration: a failure later keeps what was measured
                    args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    print(json.dumps({"results": results}, indent=2))


if __name__ == "__main__":
    main()
