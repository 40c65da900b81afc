"""The screening log (issue #17 item 5): rows and reasons from the saved screenings and the team's actions, no
patient id or name in it, stable pseudonymous numbers, CSV-injection safe, and the command line."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.cli import build_app
from bridge.config import RuleOptions
from bridge.decisions import verdicts_digest
from bridge.evaluate.eligibility import Screening
from bridge.model import PartialDate, PatientFacts
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import ScreenedPatient, age_on, prescreen
from bridge.report.screening_log import (
    identification_list_csv,
    log_rows,
    safe_cell,
    screening_log_csv,
    summary,
)
from bridge.state import ScreeningRecord, save_prescreen
from bridge.state.sqlite_state import SqliteState
from bridge.trial import load_trial
from tests.unit.decision_fakes import FakeActions, act

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "samples" / "prescreen" / "bundle.json"
AS_OF = date(2026, 6, 15)
TRIAL = load_trial()
DAY1 = datetime(2026, 6, 15, 9, 30, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 6, 20, 23, 30, tzinfo=UTC).timestamp()


class LogStore:
    """The SQLite screenings (and their numbers) with the in-memory actions."""

    def __init__(self, state: SqliteState, actions: FakeActions) -> None:
        self.state, self.actions_store = state, actions

    def screenings(self) -> list[ScreeningRecord]:
        return self.state.screenings()

    def screening_numbers(self) -> dict[str, int]:
        return self.state.screening_numbers()

    def all_actions(self, trial: str, since: float | None = None, until: float | None = None) -> list[Any]:
        return self.actions_store.all_actions(trial, since, until)


@pytest.fixture(scope="module")
def run() -> Any:
    cmap = load_code_map(ROOT / "samples" / "site-map.yaml")
    return prescreen(str(BUNDLE), RuleOptions.for_trial(TRIAL, AS_OF), cmap)


@pytest.fixture
def saved(tmp_path: Path, run: Any) -> SqliteState:
    state = SqliteState(tmp_path / "state.sqlite3")
    save_prescreen(state, run.screenings, run.not_screened, AS_OF, DAY1, trial=TRIAL.id,
                   ruleset_version=TRIAL.ruleset_version)
    return state


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _names_and_ids() -> list[str]:
    out = []
    for entry in json.loads(BUNDLE.read_text())["entry"]:
        res = entry["resource"]
        out.append(res["id"])
        if res["resourceType"] == "Patient":
            out += [n.get("text") or " ".join(n.get("given", []) + [n.get("family", "")]) for n in res.get("name", [])]
            out += [i["value"] for i in res.get("identifier", []) if i.get("value")]
    return [x for x in out if x]


def test_the_pipeline_carries_age_and_sex_into_the_saved_screening(saved: SqliteState, run: Any) -> None:
    first = run.screenings[0]
    assert isinstance(first, ScreenedPatient)
    rec = saved.screening("p01")
    assert rec is not None and rec.sex == "male"
    assert rec.age == 34  # born 1991-09-23, on 2026-06-15
    assert rec.first_screened_at == DAY1


def test_rows_match_the_saved_screenings_and_hold_no_patient_id_or_name(saved: SqliteState) -> None:
    text = screening_log_csv(LogStore(saved, FakeActions()), TRIAL)
    rows = _rows(text)
    records = {r.patient_id: r for r in saved.screenings()}
    assert len(rows) == len(records) > 10
    numbers = saved.screening_numbers()
    by_number = {f"S{n:05d}": pid for pid, n in numbers.items()}
    for row in rows:
        rec = records[by_number[row["screening_number"]]]
        assert row["prescreen_status"] == row["status"] == rec.status
        assert {c: row[c] for c in TRIAL.criterion_ids} == {v["criterion"]: v["result"] for v in rec.verdicts}
        assert row["first_screened"] == "2026-06-15"
        assert row["age"] == ("" if rec.age is None else str(rec.age)) and row["sex"] == (rec.sex or "")
        assert row["decision"] == "" and row["enrolled"] == "no"
        blocking = [v["criterion"] for v in rec.verdicts if TRIAL.blocking(v["criterion"], v["result"])]
        # a pre-screen screen failure names the criteria that failed it; anyone else has no reason
        assert row["reason"] == ";".join(c for c in TRIAL.criterion_ids if c in blocking)
        assert bool(row["reason"]) == (rec.status == "ineligible")
    assert any(";" in r["reason"] or r["reason"].startswith(("inc-", "exc-")) for r in rows)
    lowered = text.lower()
    leaked = [x for x in _names_and_ids() if x.lower() in lowered]
    assert leaked == []


def test_decisions_reasons_enrolment_and_the_judgement(saved: SqliteState) -> None:
    actions = FakeActions()
    ids = TRIAL.criterion_ids
    digest = verdicts_digest(saved.screening("p01").verdicts)  # type: ignore[union-attr]
    act(actions, TRIAL.id, "p01", "judgement", value="not-met", note="no concern", digest=digest)
    act(actions, TRIAL.id, "p01", "consented", digest=digest)
    act(actions, TRIAL.id, "p02", "screen-failure", reason="inc-ecog", criteria=ids)
    act(actions, TRIAL.id, "p03", "screen-failure", reason="declined", role="coordinator", user="co")
    act(actions, TRIAL.id, "p04", "eligible")
    act(actions, TRIAL.id, "p04", "undo")
    act(actions, TRIAL.id, "p05", "screen-failure", reason="other", note="=HYPERLINK(\"x\") moved away")
    rows = {r["screening_number"]: r for r in _rows(screening_log_csv(LogStore(saved, actions), TRIAL))}
    n = {pid: f"S{num:05d}" for pid, num in saved.screening_numbers().items()}
    p01, p02, p03, p04, p05 = (rows[n[p]] for p in ("p01", "p02", "p03", "p04", "p05"))
    assert (p01["decision"], p01["status"], p01["enrolled"], p01["exc-investigator"]) == (
        "consented", "screening", "yes", "not-met")
    assert p01["changed_since_review"] == "no"
    assert (p02["decision"], p02["reason"], p02["status"], p02["enrolled"]) == (
        "screen-failure", "inc-ecog", "ineligible", "no")
    assert (p02["changed_since_review"]) == "yes"  # its action was taken on other verdicts (digest d0)
    assert (p03["reason"], p03["status"]) == ("declined", "not-registered")
    assert (p04["decision"], p04["enrolled"], p04["status"]) == ("", "no", p04["prescreen_status"])
    assert (p05["reason"], p05["status"]) == ("other", "ineligible")
    assert "HYPERLINK" not in screening_log_csv(LogStore(saved, actions), TRIAL)  # notes are never exported


def test_the_investigator_s_exclusion_is_a_screen_failure_reason(saved: SqliteState) -> None:
    actions = FakeActions()
    candidate = next(r for r in saved.screenings() if r.status == "candidate")
    act(actions, TRIAL.id, candidate.patient_id, "judgement", value="met", note="frailty",
        digest=verdicts_digest(candidate.verdicts))
    store = LogStore(saved, actions)
    n = f"S{saved.screening_numbers()[candidate.patient_id]:05d}"
    row = next(r for r in _rows(screening_log_csv(store, TRIAL)) if r["screening_number"] == n)
    assert (row["exc-investigator"], row["decision"], row["reason"]) == ("met", "", "exc-investigator")
    before = summary(log_rows(LogStore(saved, FakeActions()), TRIAL), TRIAL)
    after = summary(log_rows(store, TRIAL), TRIAL)
    assert after["screen failures"] == before["screen failures"] + 1 and before["screen failures"] > 0


def test_numbers_are_stable_across_runs_and_rescreens_and_the_list_maps_them(saved: SqliteState, run: Any) -> None:
    before = saved.screening_numbers()
    assert sorted(before.values()) == list(range(1, len(before) + 1))
    save_prescreen(saved, run.screenings[:3], (), AS_OF, DAY2, trial=TRIAL.id, ruleset_version=TRIAL.ruleset_version)
    assert saved.screening_numbers() == before
    listed = _rows(identification_list_csv(LogStore(saved, FakeActions()), TRIAL))
    assert {r["screening_number"]: r["patient_id"] for r in listed} == {f"S{n:05d}": p for p, n in before.items()}
    assert saved.screening("p01").first_screened_at == DAY1  # type: ignore[union-attr]


def test_from_and_to_select_by_the_date_first_screened(saved: SqliteState, run: Any) -> None:
    late = ScreenedPatient("Patient/late1", "candidate", run.screenings[0].verdicts, 40, "female")
    save_prescreen(saved, [late], (), AS_OF, DAY2, trial=TRIAL.id, ruleset_version=TRIAL.ruleset_version)
    store = LogStore(saved, FakeActions())
    only_late = _rows(screening_log_csv(store, TRIAL, date(2026, 6, 20), date(2026, 6, 20)))
    assert [(r["first_screened"], r["age"], r["sex"]) for r in only_late] == [("2026-06-20", "40", "female")]
    assert len(_rows(screening_log_csv(store, TRIAL, None, date(2026, 6, 19)))) == len(run.screenings)
    assert _rows(screening_log_csv(store, TRIAL, date(2026, 6, 21))) == []


@pytest.mark.parametrize(("value", "cell"), [("=1+1", "'=1+1"), ("+x", "'+x"), ("-2", "'-2"), ("@SUM", "'@SUM"),
                                             ("\tx", "'\tx"), ("ok", "ok"), (None, ""), (34, "34")])
def test_cells_a_spreadsheet_would_run_are_prefixed(value: object, cell: str) -> None:
    assert safe_cell(value) == cell


def test_another_trials_screenings_are_not_listed(saved: SqliteState, run: Any) -> None:
    other = ScreenedPatient("Patient/other1", "candidate", run.screenings[0].verdicts, None, None)
    save_prescreen(saved, [other], (), AS_OF, DAY1, trial="TEST-0002", ruleset_version="TEST-0002-v1")
    numbers = saved.screening_numbers()
    text = screening_log_csv(LogStore(saved, FakeActions()), TRIAL)
    assert f"S{numbers['other1']:05d}" not in text


# ---------------------------------------------------------------------------------------------- command line


def _cli(args: list[str], db: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BRIDGE_DB_PATH", str(db))
    return CliRunner().invoke(build_app("screening-log"), ["screening-log", *args])


def test_cli_writes_the_log_and_the_identification_list_apart(saved: SqliteState, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    saved.close()
    out, ids = tmp_path / "log.csv", tmp_path / "ids.csv"
    result = _cli(["--out", str(out), "--identification-list", str(ids), "--from", "2026-06-01"],
                  tmp_path / "state.sqlite3", monkeypatch)
    assert result.exit_code == 0, result.output
    log_rows, id_rows = _rows(out.read_text()), _rows(ids.read_text())
    assert len(log_rows) == len(id_rows) > 10
    assert "patient_id" not in log_rows[0] and "p01" not in out.read_text()
    assert "p01" in {r["patient_id"] for r in id_rows}


@pytest.mark.parametrize(("args", "hint"), [(["--from", "2026-13-01"], "--from"), (["--to", "june"], "--to"),
                                            (["--from", "2026-06-02", "--to", "2026-06-01"], "--from")])
def test_cli_bad_dates_exit_2_naming_the_option(args: list[str], hint: str, saved: SqliteState, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    result = _cli(["--out", str(tmp_path / "x.csv"), *args], tmp_path / "state.sqlite3", monkeypatch)
    assert result.exit_code == 2 and hint in result.output
    assert not (tmp_path / "x.csv").exists()


def test_cli_without_a_store_exits_8_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _cli(["--out", str(tmp_path / "x.csv")], tmp_path / "missing.sqlite3", monkeypatch)
    assert result.exit_code == 8
    assert "no state store at" in result.output and "bridge prescreen --save" in result.output
    assert not (tmp_path / "missing.sqlite3").exists()


def test_cli_help_has_an_example_and_exit_codes() -> None:
    result = CliRunner().invoke(build_app("screening-log"), ["screening-log", "--help"])
    assert result.exit_code == 0
    assert "bridge screening-log --from" in result.output and "Exit codes" in result.output


def test_the_population_path_carries_age_and_sex_too() -> None:
    cmap = load_code_map(ROOT / "samples" / "site-map.yaml")
    run = prescreen(str(ROOT / "samples" / "prescreen" / "ndjson"), RuleOptions.for_trial(TRIAL, AS_OF), cmap)
    first = {s.patient: s for s in run.screenings}["Patient/p01"]
    assert isinstance(first, ScreenedPatient) and (first.age, first.sex) == (34, "male")


@pytest.mark.parametrize(("born", "age"), [(PartialDate(1991, 9, 23), 34), (PartialDate(1991, 6, 15), 35),
                                           (PartialDate(1991, 6), None), (PartialDate(1991, 7), 34),
                                           (PartialDate(1990), None), (None, None)])
def test_age_in_completed_years_or_none_when_a_partial_birth_date_leaves_it_open(born: PartialDate | None,
                                                                                 age: int | None) -> None:
    assert age_on(PatientFacts("x", has_patient=True, birth_date=born), AS_OF) == age


def test_a_screened_patient_equals_the_plain_screening() -> None:
    plain = Screening("Patient/a", "candidate", ())
    assert ScreenedPatient("Patient/a", "candidate", (), 40, "female") == plain
    assert plain == ScreenedPatient("Patient/a", "candidate", (), 40, "female")
    assert hash(plain) == hash(ScreenedPatient("Patient/a", "candidate", (), None, None))
