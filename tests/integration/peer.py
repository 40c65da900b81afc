"""The peer FHIR server (sekmet-fhir 0.1.1) for integration tests: find it, start it, wait for it, stop it.

``PeerServer`` writes a settings.yaml into a fresh temporary folder (loopback host, a free port, its own
data folder so every start is a clean database, the order simulator off, the inbound traffic log off),
runs ``sekmet serve`` as a subprocess with its output in ``server.log`` beside it, waits (bounded) for
``GET /fhir/metadata`` and stops the process by its PID: terminate, then kill after a timeout.

``find_sekmet`` takes the executable from ``BRIDGE_PEER_SEKMET``, else ``<repo>/.peer-venv/bin/sekmet``,
else runs ``scripts/peer-server`` to build that environment. See ``../shared/PEER.md``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_SCRIPT = REPO_ROOT / "scripts" / "peer-server"
INSTALL_TIMEOUT = 600.0


class PeerUnavailable(RuntimeError):
    """The sekmet executable cannot be found or built, or the server does not come up."""


class _PortTaken(PeerUnavailable):
    """Another process took the port between choosing it and binding it."""


def find_sekmet(env: dict[str, str] | None = None) -> Path:
    """The ``sekmet`` executable: $BRIDGE_PEER_SEKMET, else .peer-venv, else built by scripts/peer-server."""
    env = dict(os.environ) if env is None else env
    configured = env.get("BRIDGE_PEER_SEKMET")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise PeerUnavailable(f"BRIDGE_PEER_SEKMET={configured} is not an executable file")
        return path
    local = REPO_ROOT / ".peer-venv" / "bin" / "sekmet"
    if local.is_file() and os.access(local, os.X_OK):
        return local
    return _build_with_script(env)


def _build_with_script(env: dict[str, str]) -> Path:
    try:
        done = subprocess.run(
            ["bash", str(PEER_SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"scripts/peer-server could not run: {type(exc).__name__}") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        raise PeerUnavailable(f"scripts/peer-server failed (exit {done.returncode}): {' | '.join(tail)}")
    return Path(lines[-1])


class PeerServer:
    """One sekmet-fhir process on loopback with a throw-away data folder."""

    def __init__(self, executable: Path, extra_settings: dict[str, Any] | None = None) -> None:
        self.executable = executable
        self.extra_settings = extra_settings or {}
        self.workdir = Path(tempfile.mkdtemp(prefix="bridge-peer-"))
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/fhir"
        self.log_path = self.workdir / "server.log"
        self.settings_path = self.workdir / "settings.yaml"
        self.process: subprocess.Popen[bytes] | None = None

    def settings(self) -> dict[str, Any]:
        """The settings.yaml content (keys of sekmet.config.Settings)."""
        return {
            "base_url": self.base_url,
            "host": "127.0.0.1",
            "port": self.port,
            "data_dir": str(self.workdir / "data"),
            "own_private_key_path": str(self.workdir / "keys" / "sekmet_private.pem"),
            "simulator": {"enabled": False},
            "log_inbound": False,
            **self.extra_settings,
        }

    def start(self, timeout: float = 30.0, attempts: int = 3) -> PeerServer:
        """Start and wait for /metadata; a port taken meanwhile by someone else means another port."""
        for _ in range(attempts):
            try:
                return self._start_once(timeout)
            except _PortTaken:
                self._use_port(free_port())
        raise PeerUnavailable(f"sekmet found no free port in {attempts} attempts; see {self.log_path}")

    def _use_port(self, port: int) -> None:
        self.port = port
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root_url}/fhir"

    def _start_once(self, timeout: float) -> PeerServer:
        self.settings_path.write_text(yaml.safe_dump(self.settings()), encoding="utf-8")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.executable), "serve", "-c", str(self.settings_path)],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self._wait_ready(timeout)
        except PeerUnavailable:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                if "address already in use" in self.log_tail().lower():
                    raise _PortTaken(self.log_tail())
                raise PeerUnavailable(f"sekmet exited during start-up; see {self.log_path}:\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.1)
        raise PeerUnavailable(f"sekmet did not answer /fhir/metadata within {timeout:.0f} s; see {self.log_path}")

    def _answers(self) -> bool:
        try:
            resp = requests.get(f"{self.base_url}/metadata", timeout=(1.0, 2.0))
        except requests.RequestException:
            return False
        return resp.status_code == 200 and resp.json().get("resourceType") == "CapabilityStatement"

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (by its PID) and kill it if it lingers; the temporary folder stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def cleanup(self) -> None:
        """Stop the server and remove its temporary folder (settings, database, log)."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PeerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
