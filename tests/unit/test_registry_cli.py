"""``bridge registry`` as a user runs it, against a real local HTTP registry.

Most tests invoke the command in-process (``CliRunner``); the crash test runs real subprocesses: it kills the
sender with SIGKILL (``BRIDGE_TEST_REGISTRY_KILL_AFTER``) after N packages — after the receipt was stored, or
between the registry's answer and storing it — then runs it again and counts what the registry accepted:
every package exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from tests.unit.test_registry_fixtures import (
    CENTRE,
    SECRET,
    administration,
    assessment,
    consent,
    patient_doc,
    rich_patient,
)

Json = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]


class FakeRegistry(ThreadingHTTPServer):
    """Token endpoint + CRID operation + Bundle endpoint that de-duplicates on Idempotency-Key."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.accepted: dict[str, int] = {}
        self.answers: list[tuple[str, int]] = []
        self.tokens = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def log_message(self, *args: Any) -> None:
        return None

    def _reply(self, status: int, body: Json, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/token":
            with self.server.lock:
                self.server.tokens += 1
                n = self.server.tokens
            self._reply(200, {"access_token": f"tok-{n}", "token_type": "bearer", "expires_in": 3600})
            return
        if not (self.headers.get("Authorization") or "").startswith("Bearer tok-"):
            self._reply(401, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]})
            return
        if self.path == "/fhir/Patient/$crid-assignment":
            pseud = json.loads(body)["parameter"][0]["resource"]["identifier"][0]["value"]
            self._reply(200, {"resourceType": "Parameters", "parameter": [
                {"name": "identifier", "valueIdentifier": {"value": f"CRID-{pseud[:8]}"}}]})
            return
        self._bundle(self.headers.get("Idempotency-Key") or "")

    def _bundle(self, key: str) -> None:
        with self.server.lock:
            duplicate = key in self.server.accepted
            if not duplicate:
                self.server.accepted[key] = len(self.server.accepted) + 1
            n = self.server.accepted[key]
            self.server.answers.append((key, 409 if duplicate else 201))
        if duplicate:
            self._reply(409, {"resourceType": "OperationOutcome",
                              "issue": [{"severity": "error", "code": "duplicate"}]})
        else:
            self._reply(201, {"resourceType": "OperationOutcome", "id": f"r{n}",
                              "issue": [{"severity": "information", "code": "informational"}]},
                        {"Location": f"/fhir/Bundle/r{n}"})


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def bridge(*args: str) -> Ran:
    """The command in-process (no BRIDGE_* settings of the test environment leak in; the schema's location does)."""
    clean = {k: None for k in os.environ if k.startswith("BRIDGE_") and k != "BRIDGE_FHIR_SCHEMA"}
    result = CliRunner(env=clean).invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def bridge_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a real process (``python -m bridge``)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") or k == "BRIDGE_FHIR_SCHEMA"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=180,
                          check=False, env=full_env, cwd=REPO)


def setup(tmp_path: Path, registry_base: str = "http://127.0.0.1:9/") -> tuple[Path, Path, Path]:
    """A bundle of two consenting patients and one without consent, its assessment, and a config file."""
    res = [rich_patient(), consent(), administration(),
           rich_patient("pt-b"), consent("pt-b", "consent-b"), administration("pt-b", "ma-b"),
           rich_patient("pt-c"), administration("pt-c", "ma-c")]
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": r} for r in res]}))
    doc = tmp_path / "assess.json"
    doc.write_text(json.dumps(assessment(patient_doc(), patient_doc("pt-b", "ma-b"), patient_doc("pt-c", "ma-c"))))
    config = tmp_path / "bridge.yaml"
    config.write_text("\n".join([
        f"registry_url: {registry_base.rstrip('/')}/fhir", f"registry_token_url: {registry_base.rstrip('/')}/token",
        "registry_client_id: site-7", "registry_client_secret: secret-7", f"registry_centre: {CENTRE}",
        f"pseudonym_secret: {SECRET}", f"db_path: {tmp_path / 'state.sqlite3'}", "retries: 1", ""]))
    return bundle, doc, config


def export(tmp_path: Path, config: Path, bundle: Path, doc: Path, *extra: str) -> Ran:
    return bridge("registry", "export", str(bundle), "--assessment", str(doc), "--out", str(tmp_path / "pk"),
                  "--config", str(config), *extra)


def status(config: Path) -> Json:
    out = bridge("registry", "status", "--config", str(config), "--format", "json")
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


# ---------------------------------------------------------------------------------------------- export


def test_export_writes_checked_packages_and_lists_the_skipped(tmp_path: Path) -> None:
    bundle, doc, config = setup(tmp_path)
    out = export(tmp_path, config, bundle, doc, "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["packages"]) == 8
    assert {p["patient"] for p in result["packages"]} == {"Patient/pt-zel-001", "Patient/pt-b"}
    assert result["skipped"] == [{"patient": "Patient/pt-c", "reason": "no research Consent"}]
    assert "skipped Patient/pt-c: no research Consent" in out.stderr
    files = sorted(p.name for p in (tmp_path / "pk").iterdir())
    assert files == sorted(p["file"] for p in result["packages"])
    everything = out.stdout + out.stderr + "".join((tmp_path / "pk" / f).read_text() for f in files)
    for value in ("Zelinskaya", "MRN-778899", "+1-555-0199", "2009-03-14", "Springfield"):
        assert value not in everything


def test_export_keeps_only_this_exports_files(tmp_path: Path) -> None:
    bundle, doc, config = setup(tmp_path)
    assert export(tmp_path, config, bundle, doc).returncode == 0
    stale = tmp_path / "pk" / f"{'a' * 32}-day100.json"
    stale.write_text("{}")
    mine = tmp_path / "pk" / "notes.json"
    mine.write_text("{}")
    assert export(tmp_path, config, bundle, doc, "--timepoint", "infusion").returncode == 0
    names = sorted(p.name for p in (tmp_path / "pk").iterdir())
    assert len(names) == 3 and "notes.json" in names and stale.name not in names
    assert all(n.endswith("-infusion-1.json") for n in names if n != "notes.json")


def test_export_without_a_secret_is_a_configuration_error(tmp_path: Path) -> None:
    bundle, doc, config = setup(tmp_path)
    config.write_text(config.read_text().replace(f"pseudonym_secret: {SECRET}", ""))
    out = export(tmp_path, config, bundle, doc)
    assert out.returncode == 5 and "pseudonym_secret is not configured" in out.stderr
    assert not (tmp_path / "pk").exists()


def test_export_as_of_must_match_the_assessment(tmp_path: Path) -> None:
    bundle, doc, config = setup(tmp_path)
    out = export(tmp_path, config, bundle, doc, "--as-of", "2026-12-31")
    assert out.returncode == 2 and "differs from the asOf" in out.stderr


@pytest.mark.slow
def test_export_computes_the_assessment_from_the_source(tmp_path: Path) -> None:
    """The treated sample (with its research Consents; t07's is withdrawn) through the assessment engine."""
    bundle = REPO / "samples" / "treated" / "bundle.json"
    sample = json.loads(bundle.read_text())
    consents = {e["resource"]["patient"]["reference"]: e["resource"]["status"] for e in sample["entry"]
                if e["resource"]["resourceType"] == "Consent"}
    assert consents.pop("Patient/t07") == "inactive" and set(consents.values()) == {"active"}
    _, _, config = setup(tmp_path)
    out = bridge("registry", "export", str(bundle), "--out", str(tmp_path / "pk"), "--as-of", "2026-12-31",
                 "--site-map", str(REPO / "samples" / "site-map.yaml"), "--config", str(config), "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [s["patient"] for s in result["skipped"]] == ["Patient/t07"]
    assert "inactive" in result["skipped"][0]["reason"]
    infused = {p["patient"] for p in result["packages"]}
    assert "Patient/t07" not in infused and len(result["packages"]) > len(infused)
    assert {p["timepoint"] for p in result["packages"]} >= {"infusion-1", "day100"}


# ---------------------------------------------------------------------------------------------- submit


def test_submit_then_status(tmp_path: Path, registry: FakeRegistry) -> None:
    bundle, doc, config = setup(tmp_path, registry.base)
    assert export(tmp_path, config, bundle, doc).returncode == 0
    out = bridge("registry", "submit", str(tmp_path / "pk"), "--config", str(config), "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["sent"]) == 8 and report["outbox"]["sent"] == 8 and report["stopped"] is None
    st = status(config)
    assert st["counts"]["sent"] == 8
    assert sorted(p["receipt"]["id"] for p in st["packages"]) == sorted(f"r{n}" for n in range(1, 9))
    again = bridge("registry", "submit", str(tmp_path / "pk"), "--config", str(config))
    assert again.returncode == 0 and "sent 0" in again.stdout
    assert len(registry.answers) == 8 and registry.tokens == 1


@pytest.mark.parametrize(("kill_at", "duplicates"), [("sent", 0), ("posted", 1)])
def test_killed_mid_way_then_resumed_sends_each_package_exactly_once(tmp_path: Path, registry: FakeRegistry,
                                                                      kill_at: str, duplicates: int) -> None:
    bundle, doc, config = setup(tmp_path, registry.base)
    assert export(tmp_path, config, bundle, doc).returncode == 0
    killed = bridge_process("registry", "submit", str(tmp_path / "pk"), "--config", str(config),
                            env={"BRIDGE_TEST_REGISTRY_KILL_AFTER": "3", "BRIDGE_TEST_REGISTRY_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL
    assert len(registry.accepted) == 3
    counts = status(config)["counts"]
    assert counts["sent"] == (3 if kill_at == "sent" else 2) and counts["sent"] + counts["pending"] + counts[
        "sending"] == 8
    resumed = bridge_process("registry", "submit", "--config", str(config), "--format", "json")
    assert resumed.returncode == 0, resumed.stderr
    keys = [p["key"] for p in status(config)["packages"]]
    assert len(keys) == 8
    assert sorted(registry.accepted) == sorted(keys)  # every package accepted, each once
    assert [k for k, code in registry.answers if code == 201] == list(registry.accepted)
    assert sum(1 for _, code in registry.answers if code == 409) == duplicates
    final = status(config)
    assert final["counts"]["sent"] == 8
    assert sum(1 for p in final["packages"] if p["receipt"] and p["receipt"]["duplicate"]) == duplicates


def test_submit_stops_with_exit_7_when_the_registry_is_down(tmp_path: Path) -> None:
    bundle, doc, config = setup(tmp_path, "http://127.0.0.1:9")  # nothing listens on port 9
    assert export(tmp_path, config, bundle, doc).returncode == 0
    out = bridge("registry", "submit", str(tmp_path / "pk"), "--config", str(config))
    assert out.returncode == 7 and "stopped" in out.stderr
    assert status(config)["counts"]["pending"] == 8


def test_a_consent_withdrawn_before_sending_keeps_the_queued_packages_from_the_registry(
        tmp_path: Path, registry: FakeRegistry) -> None:
    bundle, doc, config = setup(tmp_path, "http://127.0.0.1:9")  # the registry is down at first
    assert export(tmp_path, config, bundle, doc).returncode == 0
    assert bridge("registry", "submit", str(tmp_path / "pk"), "--config", str(config)).returncode == 7
    assert status(config)["counts"]["pending"] == 8  # both patients' packages are queued
    source = json.loads(bundle.read_text())
    for entry in source["entry"]:
        if entry["resource"]["id"] == "consent-b":
            entry["resource"]["status"] = "inactive"  # pt-b withdraws
    bundle.write_text(json.dumps(source))
    config.write_text(config.read_text().replace("http://127.0.0.1:9", registry.base.rstrip("/")))
    assert export(tmp_path, config, bundle, doc).returncode == 0
    out = bridge("registry", "submit", str(tmp_path / "pk"), "--config", str(config), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert "withdrew 4 queued package(s)" in out.stderr and json.loads(out.stdout)["withdrawn"] == 4
    files = {p.stem for p in (tmp_path / "pk").glob("*.json")}  # pt-zel-001's four packages
    st = status(config)
    assert st["counts"] == {"pending": 0, "sending": 0, "sent": 4, "failed": 0, "superseded": 0, "withdrawn": 4}
    assert {p["package"] for p in st["packages"] if p["state"] == "sent"} == files
    withdrawn = {p["key"] for p in st["packages"] if p["state"] == "withdrawn"}
    assert set(registry.accepted) == {p["key"] for p in st["packages"] if p["state"] == "sent"}
    assert not withdrawn & set(registry.accepted)  # nothing of pt-b reached the registry
    consent_again = bundle.read_text().replace('"status": "inactive"', '"status": "active"')
    bundle.write_text(consent_again)
    assert export(tmp_path, config, bundle, doc).returncode == 0
    again = bridge("registry", "submit", str(tmp_path / "pk"), "--config", str(config), "--format", "json")
    assert again.returncode == 0 and status(config)["counts"]["sent"] == 8 and len(registry.accepted) == 8


def test_status_of_an_empty_outbox(tmp_path: Path) -> None:
    _, _, config = setup(tmp_path)
    assert status(config) == {"counts": {"pending": 0, "sending": 0, "sent": 0, "failed": 0, "superseded": 0,
                                         "withdrawn": 0}, "packages": []}
