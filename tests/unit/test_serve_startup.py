"""Start-up and hardening of ``bridge serve`` / ``server.py`` (issue #14 item 7).

The port is bound before the database is opened or the worker started: a second service started while the port
is taken exits 5 with one line on stderr and leaves the running instance's claimed work, subscriptions and the
EHR alone. A second service on another port over the same database is a replica (issue #15): it takes the next
replica slot; only when every slot is held is it refused, with exit 5 and the claims untouched.
Secrets shorter than 32 bytes are refused before anything else; every log line is JSON, Python warnings and
pint's included; ``serve --help`` lists every exit code.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bridge.cli import app as cli_app
from bridge.config import MIN_SECRET_BYTES, Settings, check_service_secrets
from bridge.errors import ConfigError
from bridge.service.logs import configure_logging
from bridge.service.notifications import parse_post, parse_put
from bridge.service.replicas import MAX_REPLICAS, replica_name, replica_slot, slot_lock
from bridge.service.startup import bind
from bridge.state.leader import file_leader
from bridge.state.sqlite_state import SqliteState
from tests.processes import free_port, wait_until_healthy

from .test_notifications import backport_bundle, encounter, raw

REPO = Path(__file__).resolve().parents[2]
SECRET = "startup-webhook-secret-0123456789abcdef"
TOKEN = "startup-api-token-0123456789abcdefghijk"
CLAIMER = "serve/0@elsewhere:1:abcdef"  # a replica of another host, alive (its claim must stay)


class Recorder:
    """A stand-in EHR that records every request it gets (and answers each with a CapabilityStatement)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                recorder.requests.append(self.path)
                body = json.dumps({"resourceType": "CapabilityStatement"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _config(path: Path, **values: Any) -> Path:
    settings = {"db_path": str(path.parent / "state.sqlite3"), "webhook_secret": SECRET, "api_token": TOKEN,
                "log_level": "INFO", **values}
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def _serve(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bridge", "serve", "--config", str(config), *args]


def _seed(db: Path) -> None:
    """Work the running instance has claimed, and a topic subscription a start-up would catch up."""
    store = SqliteState(db)
    try:
        store.accept(parse_put("default", "Encounter", "e1", raw(encounter())), time.time())
        store.accept(parse_post("adm", raw(backport_bundle("handshake", 0))), time.time())
        claimed = store.claim_inbox(f"{CLAIMER}#0", time.time(), 3600, 10, 6)
        assert len(claimed) == 1
    finally:
        store.close()


def _state(db: Path) -> list[tuple[Any, ...]]:
    store = SqliteState(db)
    try:
        return store._conn().execute("SELECT id, dedupe_key, state, claimed_by FROM inbox ORDER BY id").fetchall()
    finally:
        store.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    """A first ``bridge serve`` (no EHR: no worker of its own) over a database with claimed work."""
    db, port = tmp_path / "state.sqlite3", free_port()
    _seed(db)
    config = _config(tmp_path / "first.yaml", listen_port=port)
    log = tmp_path / "first.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_serve(config), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(proc, f"http://127.0.0.1:{port}", log)
        yield f"http://127.0.0.1:{port}", log, port
    finally:
        proc.terminate()
        proc.wait(15)


# ------------------------------------------------------------------------------------------ a second instance


@pytest.mark.slow
def test_a_busy_port_exits_5_with_one_line_having_touched_nothing(running: tuple[str, Path, int],
                                                                   tmp_path: Path) -> None:
    _, first_log, port = running
    db = tmp_path / "state.sqlite3"
    before = _state(db)
    with Recorder() as ehr:
        config = _config(tmp_path / "second.yaml", listen_port=port, ehr_base_url=ehr.url)
        second = subprocess.run(_serve(config), cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        time.sleep(0.3)
        assert ehr.requests == []
    assert second.returncode == 5
    assert second.stdout == "" and second.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: the port is in use (another bridge serve?)"]
    assert _state(db) == before  # its claim still held, no start-up catch-up queued
    assert [row[2:] for row in before] == [("claimed", f"{CLAIMER}#0")]
    for line in first_log.read_text(encoding="utf-8").splitlines():  # the first one's log: JSON, pint included
        json.loads(line)


@pytest.mark.slow
def test_a_second_service_on_the_same_database_is_a_replica(running: tuple[str, Path, int],
                                                            tmp_path: Path) -> None:
    first_url, first_log, _ = running
    port = free_port()
    config = _config(tmp_path / "second.yaml", listen_port=port)
    log = tmp_path / "second.log"
    with log.open("wb") as out:
        second = subprocess.Popen(_serve(config), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(second, f"http://127.0.0.1:{port}", log)
        names = [_listening(path)["worker"] for path in (first_log, log)]
        assert names[0].startswith("serve/0@") and names[1].startswith("serve/1@") and len(set(names)) == 2
    finally:
        second.terminate()
        second.wait(15)
    assert _state(tmp_path / "state.sqlite3")[0][2:] == ("claimed", f"{CLAIMER}#0")  # nobody released it


def _listening(log: Path) -> dict[str, Any]:
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    [listening] = [line for line in lines if line.get("event") == "service.listening"]
    return dict(listening)


@pytest.mark.slow
def test_a_service_beyond_the_last_replica_slot_exits_5(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    _seed(db)
    before = _state(db)
    with Recorder() as ehr, contextlib.ExitStack() as held:
        for slot in range(MAX_REPLICAS):  # as MAX_REPLICAS running replicas hold them
            assert held.enter_context(file_leader(str(db), slot_lock(slot)))
        config = _config(tmp_path / "extra.yaml", listen_port=free_port(), ehr_base_url=ehr.url)
        extra = subprocess.run(_serve(config), cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert ehr.requests == []
    assert extra.returncode == 5 and extra.stderr.splitlines() == [
        f"error: {MAX_REPLICAS} replicas already serve this database (every replica slot is held): stop one first"]
    assert _state(db) == before


def test_replica_slots_are_exclusive_released_and_named(tmp_path: Path) -> None:
    election = SqliteState(tmp_path / "state.sqlite3")
    with replica_slot(election, limit=2) as first, replica_slot(election, limit=2) as second:
        assert (first, second) == (0, 1)
        with pytest.raises(ConfigError, match="2 replicas already serve"), replica_slot(election, limit=2):
            pass
    with replica_slot(election, limit=2) as again:  # released when the block ended
        assert again == 0
    election.close()
    a, b = replica_name(3), replica_name(3)
    assert a.startswith("serve/3@") and a != b and not a.startswith("serve/30@")


def test_a_dead_process_releases_its_file_lock(tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from bridge.state.leader import file_leader\n"
        f"with file_leader({db!r}, 'replica-slot:0') as held:\n"
        "    print(held, flush=True); time.sleep(60)")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        with file_leader(db, "replica-slot:0") as mine:
            assert mine is False
    finally:
        holder.kill()  # SIGKILL: no clean-up in the holder
        holder.wait(10)
    with file_leader(db, "replica-slot:0") as mine:
        assert mine is True


def test_bind_refuses_a_port_in_use() -> None:
    first = bind("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: the port is in use"):
            bind("127.0.0.1", port)
    finally:
        first.close()
    bind("127.0.0.1", port).close()  # free again
    with pytest.raises(ConfigError, match="does not resolve"):
        bind("no-such-host.invalid", 0)


# ------------------------------------------------------------------------------------------ secrets


@pytest.mark.parametrize(("values", "named"), [
    ({"webhook_secret": "x"}, "webhook_secret"),
    ({"api_token": "a" * (MIN_SECRET_BYTES - 1)}, "api_token"),
    ({"webhook_secret": "é" * 15, "api_token": "short"}, "webhook_secret, api_token"),  # bytes, not characters
])
def test_short_secrets_are_a_configuration_error(values: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_service_secrets(Settings(**{"webhook_secret": SECRET, "api_token": TOKEN, **values}))
    assert exc.value.message.startswith(f"{named} must be at least 32 bytes") and exc.value.exit_code == 5
    for secret in values.values():
        assert secret not in exc.value.message


def test_unset_secrets_pass_and_32_bytes_suffice() -> None:
    check_service_secrets(Settings())
    check_service_secrets(Settings(webhook_secret="w" * 32, api_token="é" * 16))


@pytest.mark.slow
def test_server_py_refuses_a_short_secret_before_binding(tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path / "short.yaml", listen_port=port, api_token="tiny")
    done = subprocess.run([sys.executable, "server.py", "--config", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 5 and done.stderr.splitlines()[-1].startswith(
        "error: api_token must be at least 32 bytes long")
    assert "tiny" not in done.stderr and not (tmp_path / "state.sqlite3").exists()
    bind("127.0.0.1", port).close()  # never bound, or released


# ------------------------------------------------------------------------------------------ help, logs


def test_serve_help_lists_every_exit_code() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    section = result.output[result.output.index("Exit codes:"):]
    listed = {int(code) for code in re.findall(r"^\s+(\d)\s{2}", section, re.M)}
    assert listed == {0, 1, 3, 4, 5, 8}
    assert "port in use" in section and "32 bytes" in section


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """``configure_logging`` on a buffer; the process-wide hooks it sets are put back afterwards."""
    hooks = sys.excepthook, threading.excepthook
    stream = io.StringIO()
    handler = configure_logging("INFO", stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)
        logging.captureWarnings(False)
        sys.excepthook, threading.excepthook = hooks


def test_python_warnings_and_uncaught_exceptions_are_json_lines(json_log: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)  # catch_warnings put back the original showwarning
        warnings.warn("a library's deprecation", UserWarning, stacklevel=1)
    logging.getLogger("pint.util").warning("Redefining 'U' (<class 'UnitDefinition'>)")
    thread = threading.Thread(target=lambda: 1 / 0, name="bridge-worker-9")
    thread.start()
    thread.join()
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("py.warnings", "warning"), ("pint.util", "warning"), ("bridge", "critical")]
    assert "a library's deprecation" in lines[0]["event"]
    assert (lines[2]["event"], lines[2]["error"], lines[2]["worker"]) == ("uncaught", "ZeroDivisionError",
                                                                        "bridge-worker-9")
