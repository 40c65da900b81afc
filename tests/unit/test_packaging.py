"""The wheel: `pip install` of a built wheel gives a `bridge` that works from any folder (issue #13 item 7).

The code tables and schemas ship as package data (``bridge.mappings``, ``bridge.profiles``), read with
importlib.resources. The test builds the wheel, installs it (without dependencies) into a fresh venv that sees the
dev venv's dependencies through a ``.pth`` line (not its editable finder), and screens the samples from a
temporary folder: the same document as the editable install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_package_list_covers_the_bridge_tree() -> None:
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(ROOT).parts[:-1]) for p in (ROOT / "bridge").rglob("__init__.py")}
    assert found <= declared
    assert {"bridge.mappings", "bridge.profiles"} <= declared


@pytest.mark.slow
def test_wheel_installs_and_runs_from_any_folder(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                    "-w", str(dist), str(ROOT)], check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("cd7_bridge-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "dev-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    args = ["prescreen", str(ROOT / "samples" / "prescreen" / "bundle.json"), "--site-map",
            str(ROOT / "samples" / "site-map.yaml"), "--as-of", "2026-06-15", "--format", "json"]
    installed = subprocess.run([str(env_dir / "bin" / "bridge"), *args], cwd=work, env=env, capture_output=True,
                               text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    where = subprocess.run([str(py), "-c", "import bridge.normalize.mappings as m; print(m.mappings_dir())"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert str(ROOT) not in where  # the tables came from the installed wheel, not the source tree
    editable = subprocess.run([sys.executable, "-m", "bridge", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300, check=True)
    assert json.loads(installed.stdout) == json.loads(editable.stdout)
