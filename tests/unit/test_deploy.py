"""The shipped deployment files (``deploy/``, docs/deployment.md): the systemd unit passes ``systemd-analyze
verify`` (where systemd is installed) with no warning, and the example settings and environment files name
only settings the bridge knows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from bridge.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "cd7-bridge@.service"
INSTALLED = "/opt/cd7-bridge/venv/bin/bridge"


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine (Debian: apt-get install systemd)")
    bridge = Path(sys.executable).with_name("bridge")
    assert bridge.exists(), "the bridge console script of this environment"
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED} serve --port %i" in text
    instance = tmp_path / "cd7-bridge@8081.service"  # a template is verified as an instance
    instance.write_text(text.replace(INSTALLED, str(bridge)), encoding="utf-8")  # verify wants it executable
    done = subprocess.run([analyze, "verify", str(instance)], capture_output=True, text=True, timeout=120,
                          check=False)
    ours = [line for line in done.stderr.splitlines() if "cd7-bridge" in line]
    assert done.returncode == 0 and ours == [], done.stderr


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """systemd-analyze exits 0 on an unknown key: only its warning line shows it, which the test above reads."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    bridge = Path(sys.executable).with_name("bridge")
    broken = tmp_path / "cd7-bridge@8081.service"
    broken.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, str(bridge))
                      .replace("NoNewPrivileges=yes", "NoNewPrivilegs=yes"), encoding="utf-8")
    done = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=120, check=False)
    assert any("NoNewPrivilegs" in line and "cd7-bridge" in line for line in done.stderr.splitlines())


def test_the_example_settings_load() -> None:
    settings = load_settings(DEPLOY / "bridge.yaml.example", env={})
    assert settings.public_base_url == "https://cd7-bridge.hospital.example"
    assert settings.listen_host == "127.0.0.1" and settings.webhook_secret is None  # secrets are not in it


def test_the_example_environment_names_known_settings_only() -> None:
    known = {f"BRIDGE_{f.name.upper()}" for f in fields(Settings)} | {"BRIDGE_DB_URL"}
    names = [line.split("=", 1)[0] for line in (DEPLOY / "bridge.env.example").read_text(encoding="utf-8")
             .splitlines() if line.strip() and not line.startswith("#")]
    assert names and set(names) <= known, set(names) - known
