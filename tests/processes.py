"""Helpers for tests that run real processes on loopback: a free port, and waiting for a service to answer."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import requests


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


__all__ = ["free_port", "wait_until_healthy"]
