"""The ``bridge`` command as a user runs it: a real subprocess, exit codes, JSON contract, table, --help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import __version__
from bridge.trial import load_trial

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def bridge(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=120, check=False)


def small_bundle(tmp_path: Path) -> Path:
    doc = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1990-03-04",
                      "name": [{"family": "Zeta-Surname"}]}},
        {"resource": {"resourceType": "Observation", "id": "bad", "status": "final", "code": {"text": "x"},
                      "valueQuantity": {"value": "NOT-A-NUMBER"}}},
    ]}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc))
    return path


def test_version() -> None:
    out = bridge("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"bridge {__version__}"


def test_help_has_an_example() -> None:
    out = bridge("prescreen", "--help")
    assert out.returncode == 0 and "bridge prescreen samples/" in out.stdout


def test_json_contract(tmp_path: Path) -> None:
    out = bridge("prescreen", str(small_bundle(tmp_path)), "--as-of", "2026-06-15", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert list(doc) == ["study", "rulesetVersion", "asOf", "organFunctionReading", "results", "notScreened"]
    assert doc["notScreened"] == []
    assert (doc["study"], doc["rulesetVersion"], doc["asOf"], doc["organFunctionReading"]) == (
        "NCT04762485", "NCT04762485-rules/2026-11", "2026-06-15", "organ-function")
    (result,) = doc["results"]
    assert result["patient"] == "Patient/p1" and result["status"] == "ineligible"
    assert list(result["criteria"]) == list(load_trial().criterion_ids)
    assert result["criteria"]["inc-age"] == {"result": "met", "evidence": ["Patient/p1"],
                                             "reason": "age 36 on 2026-06-15"}
    assert "1 resource(s) skipped" in out.stderr and "Observation.valueQuantity.value" in out.stderr
    assert "NOT-A-NUMBER" not in out.stderr + out.stdout and "Zeta-Surname" not in out.stderr + out.stdout


def test_strict_turns_skips_into_exit_2(tmp_path: Path) -> None:
    assert bridge("prescreen", str(small_bundle(tmp_path)), "--as-of", "2026-06-15", "--strict").returncode == 2


def test_table_is_the_default(tmp_path: Path) -> None:
    out = bridge("prescreen", str(small_bundle(tmp_path)), "--as-of", "2026-06-15")
    assert out.returncode == 0
    assert "ineligible" in out.stdout and "inc-diagnosis" in out.stdout and "1 patients:" in out.stdout


def test_stdin(tmp_path: Path) -> None:
    out = bridge("prescreen", "-", "--as-of", "2026-06-15", "--format", "json",
                 stdin=small_bundle(tmp_path).read_bytes())
    assert out.returncode == 0 and json.loads(out.stdout)["results"][0]["patient"] == "Patient/p1"


def test_literal_reading_is_named(tmp_path: Path) -> None:
    out = bridge("prescreen", str(small_bundle(tmp_path)), "--as-of", "2026-06-15", "--format", "json",
                 "--organ-function-reading", "literal")
    assert json.loads(out.stdout)["organFunctionReading"] == "literal"


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["prescreen", "/nonexistent/file.json"], 3, "no such file"),
    (["prescreen", "{tmp}/bad.json"], 3, "not JSON"),
    (["prescreen", "{tmp}/b.json", "--site-map", "{tmp}/site.yaml"], 4, "site map site.yaml"),
    (["prescreen", "{tmp}/b.json", "--as-of", "15/06/2026"], 2, "YYYY-MM-DD"),
])
def test_errors_are_one_line_with_exit_code(tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    small_bundle(tmp_path)
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "site.yaml").write_text("concepts:\n  not-a-concept:\n    - {system: s, code: c}\n")
    out = bridge(*[a.format(tmp=tmp_path) for a in args])
    assert out.returncode == code, out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("count", [0, 1, 3])
def test_streamed_json_equals_the_document(count: int) -> None:
    import io
    from datetime import date

    from bridge.config import RuleOptions
    from bridge.evaluate.eligibility import screen
    from bridge.model import PartialDate, PatientFacts
    from bridge.pipeline import prescreen_json, write_prescreen_json

    options = RuleOptions(as_of=date(2026, 6, 15))
    screenings = [screen(PatientFacts(f"p{i}", birth_date=PartialDate(1990 + i)), options) for i in range(count)]
    out = io.StringIO()
    write_prescreen_json(out, screenings, options)
    assert json.loads(out.getvalue()) == prescreen_json(screenings, options)


def test_population_mode_is_announced_and_all_patients_evaluates_everyone(tmp_path: Path) -> None:
    d = tmp_path / "export"
    d.mkdir()
    (d / "Patient.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "p1", "gender": "male"}) + "\n")
    out = bridge("prescreen", str(d), "--as-of", "2026-06-15", "--format", "json")
    assert out.returncode == 0 and json.loads(out.stdout)["results"] == []
    assert "population mode" in out.stderr and "--all-patients" in out.stderr
    out = bridge("prescreen", str(d), "--as-of", "2026-06-15", "--format", "json", "--all-patients")
    assert [r["patient"] for r in json.loads(out.stdout)["results"]] == ["Patient/p1"]
    assert "population mode" not in out.stderr


_LOADED = """
import sys
from bridge.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(" ".join(sorted(m for m in sys.modules if m.startswith(("bridge.", "requests", "jwt", "fastapi")))),
      file=sys.stderr)
"""


def test_a_command_loads_only_its_own_modules(tmp_path: Path) -> None:
    """Start-up is most of a small run: ``bridge prescreen FILE`` imports neither the other commands nor HTTP."""
    out = subprocess.run([sys.executable, "-c", _LOADED, "prescreen", str(small_bundle(tmp_path)), "--format", "json"],
                         capture_output=True, text=True, timeout=120, check=False)
    loaded = set(out.stderr.split()[-1000:])
    assert "bridge.cli.prescreen" in loaded and "bridge.pipeline" in loaded
    assert not loaded & {"bridge.cli.assess", "bridge.cli.registry", "bridge.cli.serve", "bridge.client",
                         "requests", "jwt", "fastapi"}


@pytest.mark.parametrize(("argv", "command"), [
    (["prescreen", "x"], "prescreen"), (["--log-level", "DEBUG", "assess", "x"], "assess"),
    (["--log-level=DEBUG", "registry", "status"], "registry"), (["--version"], None), (["--help"], None),
    (["prescren"], None), ([], None),
])
def test_the_command_is_read_from_the_arguments(argv: list[str], command: str | None) -> None:
    from bridge.cli import command_in

    assert command_in(argv) == command


def test_the_demos_save_runs_fill_fhir_and_a_second_run_adds_nothing(tmp_path: Path) -> None:
    """``scripts/demo``'s commands (``prescreen --save``, ``assess --save``) on one store, the pre-screen twice:
    the second run records nothing new, and the service on that store serves the subjects and the treated
    cohort's Observations at ``/fhir`` with no EHR."""
    from fastapi.testclient import TestClient

    from bridge.config import Settings
    from bridge.service.app import create_app
    from bridge.state.sqlite_state import SqliteState

    db = tmp_path / "bridge-state.sqlite3"
    env = {**os.environ, "BRIDGE_DB_PATH": str(db)}
    site = ["--site-map", str(SAMPLES / "site-map.yaml")]
    screen = [sys.executable, "-m", "bridge", "prescreen", str(SAMPLES / "prescreen" / "bundle.json"), *site,
              "--as-of", "2026-06-15", "--save"]
    first = subprocess.run(screen, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert first.returncode == 0, first.stderr
    made = re.search(r"recorded for /fhir: (\d+) resources \(1 ResearchStudy, \d+ ResearchSubject\): \1 created, "
                     r"0 updated, 0 unchanged; \1 new Provenance", first.stderr)
    assert made, first.stderr
    again = subprocess.run(screen, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert again.returncode == 0
    assert f"0 created, 0 updated, {made.group(1)} unchanged; 0 new Provenance" in again.stderr
    treated = subprocess.run([sys.executable, "-m", "bridge", "assess", str(SAMPLES / "treated" / "bundle.json"),
                              *site, "--as-of", "2026-12-31", "--save"],
                             capture_output=True, text=True, timeout=120, check=False, env=env)
    assert treated.returncode == 0, treated.stderr
    store = SqliteState(db)
    token = "t" * 32
    try:
        with TestClient(create_app(Settings(api_token=token, webhook_secret="w" * 32), store)) as client:
            for rtype in ("ResearchStudy", "ResearchSubject", "Observation", "AdverseEvent", "Provenance"):
                got = client.get(f"/fhir/{rtype}", headers={"Authorization": f"Bearer {token}"})
                assert got.status_code == 200 and got.json().get("entry"), (rtype, got.text)
    finally:
        store.close()
