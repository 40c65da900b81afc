"""Backup and restore of a running service's PostgreSQL database (docs/deployment.md, issue #15 item 6).

A service on database A screens a first group of patients; while it runs, ``pg_dump -Fc`` takes A (a
consistent snapshot, no lock that stops the service); ``pg_restore`` puts it into a new database B, and a service
started on B — after the one on A is stopped, as in a restore — carries on: a second group is screened, and new
lab results for the first group re-screen those patients without a second ResearchSubject (the restored
published index and known patients are used), with every event accepted on B done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bridge.client import FhirClient
from bridge.state import open_state
from tests.pg import base_url, temporary_database, with_database
from tests.processes import ServiceProcess

from .burst import Population, Sender
from .peer import PeerServer
from .test_replicas import SECRET, assert_all_processed, service_settings, wait_subjects

REPO = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian: postgresql-client)")
    return found


@pytest.mark.peer
def test_pg_dump_of_a_running_service_restores_into_a_new_database_that_carries_on(
        fresh_peer: PeerServer, tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    server = base_url()
    dump = tmp_path / "bridge.dump"
    population = Population(20, prefix="bk")
    first, second = population.patients[:10], population.patients[10:]
    with FhirClient(fresh_peer.base_url) as client, temporary_database(server, "backup_a") as a, \
            temporary_database(server, "backup_b") as b:
        population.load(client)
        (tmp_path / "a").mkdir()
        on_a = ServiceProcess(tmp_path / "a", service_settings(fresh_peer.base_url, {"settings": {"db_url": a}}))
        on_a.start()
        try:
            sent = Sender(lambda: [on_a.url], SECRET).send(population.notes(3, first), rate=50.0)
            assert len(sent.accepted) == 30
            assert_all_processed(a, 30, first, client)
            subprocess.run([tool("pg_dump"), "--format=custom", "--no-owner", f"--file={dump}", f"--dbname={a}"],
                           check=True, capture_output=True, timeout=120)  # while the service on A runs
        finally:
            on_a.stop()
        subprocess.run([tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={b}", str(dump)],
                       check=True, capture_output=True, timeout=120)
        (tmp_path / "b").mkdir()
        on_b = ServiceProcess(tmp_path / "b", service_settings(fresh_peer.base_url, {"settings": {"db_url": b}}))
        on_b.start()
        try:
            notes = population.notes(3, second) + [n for n in population.notes(4, first, "m") if not n.admission]
            later = Sender(lambda: [on_b.url], SECRET).send(notes, rate=50.0)
            assert len(later.accepted) == 30 + 30
            assert_all_processed(b, 30 + 60, population.patients, client)  # A's 30 came with the restore
            state = open_state(b)
            try:
                assert state.known(first) == set(first)  # restored, so the labs of the first group re-screened
                rescreened = [state.rescreen_state(p) for p in first]  # type: ignore[attr-defined]
            finally:
                state.close()
            assert all(r is not None and r["generation"] >= 2 for r in rescreened), rescreened
            assert all(len(s) == 1 for s in wait_subjects(client, population.patients).values())
        finally:
            on_b.stop()


def test_least_privilege_roles(tmp_path: Path) -> None:
    """deploy/roles.sql: the owner role migrates; the runtime role works the queue but cannot change the schema."""
    import psycopg

    from bridge.service.notifications import parse_put

    server, tag = base_url(), f"{os.getpid()}_{int(time.time()) % 100000}"
    owner, app, db = f"o_{tag}", f"a_{tag}", f"roles_{tag}"
    script = tmp_path / "roles.sql"
    script.write_text((REPO / "deploy" / "roles.sql").read_text(encoding="utf-8")
                      .replace("cd7_bridge_owner", owner).replace("cd7_bridge_app", app)
                      .replace("cd7_bridge", db), encoding="utf-8")

    def as_role(role: str) -> str:
        return with_user(with_database(server, db), role)

    try:
        subprocess.run([tool("psql"), server, "-v", "ON_ERROR_STOP=1", "-v", "owner_password='o-pw'", "-v",
                        "app_password='a-pw'", "-f", str(script)], check=True, capture_output=True, timeout=60)
        open_state(as_role(owner)).close()  # the upgrade step: migrations as the owner
        state = open_state(as_role(app))  # nothing pending: no DDL, so the runtime role may open it
        try:
            body = b'{"resourceType": "Encounter", "id": "e1", "status": "in-progress", "meta": {"versionId": "1"}}'
            assert state.accept(parse_put("default", "Encounter", "e1", body), time.time()).new == 1
            assert len(state.claim_inbox("roles#0", time.time(), 60, 10, 6)) == 1
        finally:
            state.close()
        with psycopg.connect(as_role(app), autocommit=True) as conn:
            for ddl in ("CREATE TABLE intruder(x int)", "DROP TABLE inbox", "ALTER TABLE inbox ADD COLUMN x int"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(ddl.encode())
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)".encode())
            conn.execute(f"DROP ROLE IF EXISTS {app}".encode())
            conn.execute(f"DROP ROLE IF EXISTS {owner}".encode())


def with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"))
