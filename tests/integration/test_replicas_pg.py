"""PostgreSQL restarted in the middle of a burst into two replicas (issue #15 item 4).

The server is one of this test's own (``scripts/pg-server`` with a pointer file of its own, so the shared test
server ``BRIDGE_TEST_PG_URL`` that other tests use is never stopped). While it is down the replicas answer the
EHR 503 (a ``StoreError``) and the EHR retries; once it is back the connection pools reconnect by themselves,
and the burst ends with the checks of ``test_replicas``: every accepted event done, nothing lost, at most one
ResearchSubject per patient.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.client import FhirClient

from .burst import Population, Sender
from .peer import PeerServer
from .test_replicas import SECRET, Replicas, assert_all_processed, service_settings

pytestmark = pytest.mark.peer

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
DOWN_SECONDS = 5.0


class OwnPostgres:
    """A throw-away PostgreSQL server of this test (``scripts/pg-server`` with its own pointer file)."""

    def __init__(self, workdir: Path) -> None:
        self.env = {**os.environ, "PG_SERVER_FILE": str(workdir / "pg-server")}
        self.pointer = workdir / "pg-server"

    def start(self) -> str:
        done = subprocess.run([str(REPO / "scripts" / "pg-server")], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"scripts/pg-server failed: {done.stderr[-500:]}", pytrace=False)
            pytest.skip(f"PostgreSQL unavailable: scripts/pg-server failed: {done.stderr.strip()[-300:]}")
        return done.stdout.strip().splitlines()[-1]

    @property
    def folder(self) -> Path:
        return Path(self.pointer.read_text(encoding="utf-8").strip())

    def _ctl(self, *args: str) -> None:
        command = [str(PG_BIN / "pg_ctl"), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as scripts/pg-server, run it as postgres
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def stop_server(self) -> None:
        self._ctl("stop", "-D", str(self.folder / "data"), "-m", "fast", "-w")

    def start_server(self) -> None:
        folder = self.folder  # the options of scripts/pg-server: the socket in the folder, no TCP, fsync on
        options = (f"-c listen_addresses='' -c unix_socket_directories='{folder}' -p 5432 -c fsync=on "
                   "-c max_connections=300")
        self._ctl("start", "-w", "-t", "60", "-D", str(folder / "data"), "-l", str(folder / "server.log"),
                  "-o", options)

    def remove(self) -> None:
        subprocess.run([str(REPO / "scripts" / "pg-server"), "stop"], env=self.env, capture_output=True,
                       timeout=60, check=False)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[OwnPostgres, str]]:
    if not (PG_BIN / "pg_ctl").exists() or shutil.which("runuser") is None and os.geteuid() == 0:
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
    pytest.importorskip("psycopg")
    server = OwnPostgres(tmp_path)
    url = server.start()
    try:
        yield server, url
    finally:
        server.remove()


def test_postgresql_restarts_during_a_burst(fresh_peer: PeerServer, own_postgres: tuple[OwnPostgres, str],
                                            tmp_path: Path) -> None:
    server, url = own_postgres
    population = Population(60)
    database = {"settings": {"db_url": url}, "location": url}
    with FhirClient(fresh_peer.base_url) as client:
        population.load(client)
        replicas = Replicas(tmp_path, service_settings(fresh_peer.base_url, database)).start()
        restarted = threading.Event()

        def restart() -> None:
            server.stop_server()
            time.sleep(DOWN_SECONDS)
            server.start_server()
            restarted.set()

        restarter = threading.Thread(target=restart)

        def during(i: int) -> None:
            if i == 200:
                restarter.start()

        try:
            report = Sender(replicas.urls, SECRET).send(population.notes(per_patient=10), rate=100.0, during=during)
            restarter.join(90)
            assert restarted.is_set()
            assert len(report.accepted) == 600, report.outcomes  # the EHR retried until the store was back
            assert report.outcomes["503"] > 0, report.outcomes  # the service said 503 while it was down
            assert_all_processed(url, 600, population.patients, client)
            assert all(s.proc is not None and s.proc.poll() is None for s in replicas.services)  # nobody died
        finally:
            replicas.stop()
