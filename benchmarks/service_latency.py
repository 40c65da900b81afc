"""Latency of the subscription-driven pre-screen: EHR admission -> ResearchSubject written on the EHR.

``python -m benchmarks.service_latency [--patients N] [--rate R] [--mode classic|topic] [--workers W]``

Starts a fresh peer FHIR server (sekmet-fhir, ``tests/integration/peer.py``) and the bridge service
(``server.py``) on loopback, loads N synthetic patients (clones of sample patient p01 under new ids), runs
``bridge subscribe`` (classic rest-hook or the backport admission topic), then writes one admission
Encounter per patient at a fixed rate of R per second. For each patient the latency is the ResearchSubject's
``meta.lastUpdated`` on the peer minus the moment its Encounter was sent (both clocks are this machine's).

Prints one JSON document: latency p50 / p90 / p99 / max (ms), throughput (ResearchSubjects per second between the
first admission and the last subject), lost events (admissions without a ResearchSubject at the deadline),
failed entries in the bridge's store, and the settings. The peer serialises every request behind one SQLite
lock and each re-screen makes about a dozen requests to it, so this measures the pair, not the bridge alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from bridge.client import FhirClient
from bridge.publish.subject import subject_identifier
from bridge.state import open_state
from tests.integration.loading import load_bundle, sample_resources
from tests.integration.peer import PeerServer, find_sekmet, free_port

REPO = Path(__file__).resolve().parents[1]

Json = dict[str, Any]
TEMPLATE = "p01"
SECRET = "bench-webhook-secret-0123456789abcdef"  # noqa: S105 - a throw-away secret of a local benchmark run (32+ bytes)


def clone_patient(template: list[Json], pid: str) -> list[Json]:
    """The template patient's resources under another patient id (ids and references rewritten)."""
    text = json.dumps(template).replace(f'"{TEMPLATE}', f'"{pid}').replace(f"/{TEMPLATE}", f"/{pid}")
    return list(json.loads(text))


def template_resources() -> list[Json]:
    out = []
    for r in sample_resources(REPO / "samples" / "prescreen" / "bundle.json"):
        ref = str((r.get("subject") or {}).get("reference", ""))
        if (r["resourceType"] == "Patient" and r["id"] == TEMPLATE) or ref == f"Patient/{TEMPLATE}":
            out.append(r)
    return out


def start_service(workdir: Path, base_url: str, workers: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    config = workdir / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "ehr_base_url": base_url, "db_path": str(workdir / "state.sqlite3"), "webhook_secret": SECRET,
        "listen_port": port, "site_map": str(REPO / "samples" / "site-map.yaml"), "workers": workers,
        "log_level": "WARNING"}), encoding="utf-8")
    log = (workdir / "service.log").open("wb")
    proc = subprocess.Popen([sys.executable, "server.py", "--config", str(config)], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                return proc, url, config
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the service did not start; see {workdir / 'service.log'}")


def subscribe(peer: PeerServer, url: str, config: Path, mode: str) -> None:
    cmd = [sys.executable, "-m", "bridge", "subscribe", peer.base_url, "--endpoint", f"{url}/notify", "--config",
           str(config), "--mode", mode, "--json"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bridge subscribe failed: {done.stderr.strip()[-500:]}")


def send_admissions(client: FhirClient, encounters: list[Json], rate: float) -> dict[str, float]:
    """PUT one Encounter every 1/rate seconds; the wall-clock send time per patient."""
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i, enc in enumerate(encounters):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        pid = enc["subject"]["reference"].split("/")[-1]
        sent[pid] = time.time()
        client.update({k: v for k, v in enc.items() if k != "meta"})
    return sent


def written_times(client: FhirClient, pids: set[str]) -> dict[str, float]:
    """When each patient's ResearchSubject was first written (its first version's lastUpdated)."""
    values = {subject_identifier(p)[1]: p for p in pids}
    found: dict[str, float] = {}
    for res in client.search("ResearchSubject", {"_count": "500"}, matches_only=True):
        for ident in res.get("identifier") or []:
            pid = values.get(ident.get("value"))
            if pid and pid not in found:
                first = client.vread("ResearchSubject", res["id"], "1").resource
                found[pid] = datetime.fromisoformat(first["meta"]["lastUpdated"].replace("Z", "+00:00")).timestamp()
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def wait_written(client: FhirClient, pids: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    found: dict[str, float] = {}
    while time.monotonic() < deadline and len(found) < len(pids):
        time.sleep(1.0)
        found = written_times(client, pids)
    return found


def report(sent: dict[str, float], written: dict[str, float], store_path: Path, args: argparse.Namespace) -> Json:
    latencies = [(written[p] - sent[p]) * 1000 for p in sent if p in written]
    store = open_state(store_path)
    stats = store.stats()
    store.close()
    span = (max(written.values()) - min(sent.values())) if written else float("nan")
    return {
        "patients": len(sent), "rate_per_s": args.rate, "mode": args.mode, "workers": args.workers,
        "latency_ms": {"p50": round(percentile(latencies, 0.5), 1), "p90": round(percentile(latencies, 0.9), 1),
                       "p99": round(percentile(latencies, 0.99), 1), "max": round(max(latencies), 1),
                       "mean": round(statistics.fmean(latencies), 1)} if latencies else None,
        "subjects_per_s": round(len(written) / span, 2) if written and span > 0 else None,
        "lost_events": len(sent) - len(written),
        "store": {"inbox": stats.inbox, "rescreens": stats.rescreens},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=40)
    p.add_argument("--rate", type=float, default=4.0, help="admissions per second")
    p.add_argument("--mode", choices=["classic", "topic"], default="classic")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=180.0)
    args = p.parse_args(argv)
    template = template_resources()
    patients = [f"bench{n:04d}" for n in range(args.patients)]
    resources = [r for pid in patients for r in clone_patient(template, pid)]
    encounters = [r for r in resources if r["resourceType"] == "Encounter"]
    with PeerServer(find_sekmet()) as peer, FhirClient(peer.base_url) as client, \
            tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        load_bundle(client, {"entry": [{"resource": r} for r in resources if r["resourceType"] != "Encounter"]})
        proc, url, config = start_service(Path(tmp), peer.base_url, args.workers)
        try:
            subscribe(peer, url, config, args.mode)
            sent = send_admissions(client, encounters, args.rate)
            written = wait_written(client, set(patients), args.timeout)
            print(json.dumps(report(sent, written, Path(tmp) / "state.sqlite3", args), indent=2))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
