"""Helpers for tests that run real processes on loopback: a free port, waiting for a service to answer, and the
bridge service itself as a child process (``server.py``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 30.0,
                       poll: float = 0.1) -> None:
    """Wait (bounded) until ``GET {url}/healthz`` answers OK; fail with the log if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(poll)
    raise AssertionError(f"the service did not start; see {log}")


class ServiceProcess:
    """``server.py`` on a free loopback port, with its settings file (``settings`` plus the port and a state file
    of its own), its log and its state file in ``workdir``."""

    def __init__(self, workdir: Path, settings: dict[str, Any]) -> None:
        self.workdir, self.port = workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fhir = f"{self.url}/fhir"
        self.db, self.log, self.config = workdir / "state.sqlite3", workdir / "service.log", workdir / "bridge.yaml"
        full = {"db_path": str(self.db), "listen_host": "127.0.0.1", "listen_port": self.port, **settings}
        self.config.write_text(yaml.safe_dump(full), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "server.py", "--config", str(self.config)], cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_until_healthy(self.proc, self.url, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


__all__ = ["REPO", "ServiceProcess", "free_port", "wait_until_healthy"]
