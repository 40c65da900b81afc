"""``bridge trial check`` and ``--trial``: a trial file is validated with every error listed (exit 4), and every
result names the trial id and ruleset version it was evaluated with; the store refuses a changed file under a
version it already holds (one line, exit 8) before anything is printed or saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bridge.cli import app as cli_app
from bridge.config import load_settings
from bridge.state.sqlite_state import SqliteState
from bridge.trial import load_trial

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "trials" / "nct04762485.yaml"
SAMPLES = REPO / "samples"
SITE_MAP = SAMPLES / "site-map.yaml"
VERSION = "NCT04762485-rules/2026-11"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli_app, list(args), env=env)


def variant(tmp_path: Path, name: str, **replace: str) -> Path:
    """A copy of the shipped trial file with some lines' text replaced."""
    text = SHIPPED.read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def amended(tmp_path: Path) -> Path:
    return variant(tmp_path, "amended.yaml", **{VERSION: "NCT04762485-rules/2027-01"})


def same_version_other_content(tmp_path: Path) -> Path:
    return variant(tmp_path, "edited.yaml", **{"label: Age": "label: Age at screening"})


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BRIDGE_CONFIG", "BRIDGE_TRIAL", "BRIDGE_DB_PATH", "BRIDGE_SITE_MAP"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------- trial check


def test_check_prints_the_summary_of_a_valid_file() -> None:
    result = invoke("trial", "check", str(SHIPPED))
    assert result.exit_code == 0, result.output
    assert result.stdout == load_trial(SHIPPED).summary() + "\n"
    assert result.stdout.startswith(f"NCT04762485 ruleset {VERSION} ")
    assert "inc-organ-function" in result.stdout


def test_check_lists_every_error_and_exits_4(tmp_path: Path) -> None:
    bad = variant(tmp_path, "bad.yaml", **{f"ruleset_version: {VERSION}": "ruleset_version: 2026-11",
                                           "label: Age": "label: 42"})
    result = invoke("trial", "check", str(bad))
    assert result.exit_code == 4, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: trial file bad.yaml: ") and "error(s)" in lines[0]
    assert len([line for line in lines if line.startswith("  - ")]) >= 2  # both problems, not only the first
    assert "ruleset_version" in result.stderr and "label" in result.stderr
    assert "Traceback" not in result.output


def test_check_of_a_missing_file_is_exit_3(tmp_path: Path) -> None:
    result = invoke("trial", "check", str(tmp_path / "none.yaml"))
    assert result.exit_code == 3 and "none.yaml" in result.stderr


def test_the_trial_command_has_help_with_an_example() -> None:
    assert "check" in invoke("trial", "--help").stdout
    assert "bridge trial check trials/nct04762485.yaml" in invoke("trial", "check", "--help").stdout
    for command in (["prescreen"], ["assess"], ["report"], ["registry", "export"]):
        assert "--trial" in invoke(*command, "--help").stdout, command


# ---------------------------------------------------------------------------------------------- --trial


def _prescreen(*extra: str, env: dict[str, str] | None = None) -> Result:
    return invoke("prescreen", str(SAMPLES / "prescreen" / "bundle.json"), "--site-map", str(SITE_MAP), "--as-of",
                  "2026-06-15", "--format", "json", *extra, env=env)


def test_every_result_names_the_trial_and_its_version(tmp_path: Path) -> None:
    shipped = json.loads(_prescreen().stdout)
    assert (shipped["study"], shipped["rulesetVersion"]) == ("NCT04762485", VERSION)
    other = json.loads(_prescreen("--trial", str(amended(tmp_path))).stdout)
    assert (other["study"], other["rulesetVersion"]) == ("NCT04762485", "NCT04762485-rules/2027-01")
    assert other["results"] == shipped["results"]  # same rules, another version string
    assessed = invoke("assess", str(SAMPLES / "treated" / "bundle.json"), "--site-map", str(SITE_MAP), "--as-of",
                      "2026-12-31", "--format", "json", "--trial", str(amended(tmp_path)))
    doc = json.loads(assessed.stdout)
    assert list(doc)[:3] == ["study", "rulesetVersion", "asOf"]
    assert (doc["study"], doc["rulesetVersion"]) == ("NCT04762485", "NCT04762485-rules/2027-01")


def test_the_trial_setting_is_the_default_and_trial_wins(tmp_path: Path) -> None:
    env = {"BRIDGE_TRIAL": str(amended(tmp_path))}
    assert json.loads(_prescreen(env=env).stdout)["rulesetVersion"] == "NCT04762485-rules/2027-01"
    assert json.loads(_prescreen("--trial", str(SHIPPED), env=env).stdout)["rulesetVersion"] == VERSION
    assert load_settings(env=env).trial == env["BRIDGE_TRIAL"]


def test_an_invalid_trial_stops_the_command_with_exit_4(tmp_path: Path) -> None:
    bad = variant(tmp_path, "bad.yaml", **{"label: Age": "label: 42"})
    result = _prescreen("--trial", str(bad))
    assert result.exit_code == 4 and result.stdout == ""
    assert "trial file bad.yaml" in result.stderr


# ---------------------------------------------------------------------------------------------- --save


def test_save_names_the_trial_and_refuses_a_changed_file_under_the_same_version(tmp_path: Path) -> None:
    env = {"BRIDGE_DB_PATH": str(tmp_path / "state.sqlite3")}
    first = _prescreen("--save", env=env)
    assert first.exit_code == 0, first.output
    state = SqliteState(tmp_path / "state.sqlite3")
    try:
        saved = state.screenings()
        assert saved and {(r.trial, r.ruleset_version) for r in saved} == {("NCT04762485", VERSION)}
        assert state.trial_digest("NCT04762485", VERSION) == load_trial(SHIPPED).digest
        before = [(r.patient_id, r.updated_at) for r in saved]
    finally:
        state.close()
    refused = _prescreen("--save", "--trial", str(same_version_other_content(tmp_path)), env=env)
    assert refused.exit_code == 8, refused.output
    assert refused.stdout == ""  # stopped before anything was printed
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: trial NCT04762485 ruleset {VERSION} is already recorded with different content: "
                      "an amendment must bump ruleset_version"]
    state = SqliteState(tmp_path / "state.sqlite3")
    try:
        assert [(r.patient_id, r.updated_at) for r in state.screenings()] == before  # nothing saved
    finally:
        state.close()
    bumped = _prescreen("--save", "--trial", str(amended(tmp_path)), env=env)
    assert bumped.exit_code == 0, bumped.output
