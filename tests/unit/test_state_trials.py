"""Trial versions (issue #13 item 4): one content per (trial, ruleset version); screenings name both."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.errors import StoreError
from bridge.evaluate.eligibility import Screening
from bridge.model import NotScreened, Verdict
from bridge.state import NotScreenedRecord, ScreeningRecord, State, open_state, save_prescreen, screening_record
from bridge.trial import load_trial

T0 = 1_780_000_000.0
REFUSAL = ("trial NCT04762485 ruleset r1 is already recorded with different content: "
           "an amendment must bump ruleset_version")


# ``state``: the conftest fixture, a fresh state on each backend (SQLite file, PostgreSQL schema)


def test_the_first_digest_of_a_version_is_kept_and_the_same_one_again_is_fine(state: State) -> None:
    state.record_trial("NCT04762485", "r1", "sha256:aaa")
    state.record_trial("NCT04762485", "r1", "sha256:aaa")
    assert state.trial_digest("NCT04762485", "r1") == "sha256:aaa"
    assert state.trial_digest("NCT04762485", "r2") is None


def test_other_content_under_a_recorded_version_is_refused_with_one_line(state: State) -> None:
    state.record_trial("NCT04762485", "r1", "sha256:aaa")
    with pytest.raises(StoreError) as caught:
        state.record_trial("NCT04762485", "r1", "sha256:bbb")
    assert str(caught.value) == REFUSAL and caught.value.exit_code == 8
    assert state.trial_digest("NCT04762485", "r1") == "sha256:aaa"  # the first content stays


def test_an_amendment_with_a_new_version_and_another_trial_are_recorded(state: State) -> None:
    state.record_trial("NCT04762485", "r1", "sha256:aaa")
    state.record_trial("NCT04762485", "r2", "sha256:bbb")  # the amendment bumped the version
    state.record_trial("NCT00000000", "r1", "sha256:ccc")  # the same version string of another trial
    assert [state.trial_digest(t, v) for t, v in (("NCT04762485", "r1"), ("NCT04762485", "r2"),
                                                  ("NCT00000000", "r1"))] == ["sha256:aaa", "sha256:bbb",
                                                                              "sha256:ccc"]


def test_the_record_survives_reopening_and_binds_another_process(state_location: str) -> None:
    first = open_state(state_location)
    first.record_trial("NCT04762485", "r1", "sha256:aaa")
    first.close()
    code = ("import sys; from bridge.state import open_state; "
            "open_state(sys.argv[1]).record_trial('NCT04762485', 'r1', 'sha256:bbb')")
    other = subprocess.run([sys.executable, "-c", code, state_location], capture_output=True, text=True,
                           timeout=60)
    assert other.returncode != 0 and REFUSAL in other.stderr


def screening(pid: str) -> Screening:
    return Screening(f"Patient/{pid}", "candidate",
                     (Verdict("inc-age", "met", "age 36 on 2026-06-15", (f"Patient/{pid}",)),))


def test_every_saved_screening_names_its_trial_and_ruleset_version(state: State) -> None:
    assert save_prescreen(state, [screening("p1")], [NotScreened("Patient/d1", "deceased")], "2026-06-15",
                          T0) == (1, 1)
    [saved] = state.screenings()
    shipped = load_trial()  # neither given: the shipped trial's
    assert (saved.patient_id, saved.trial, saved.ruleset_version) == ("p1", shipped.id, shipped.ruleset_version)
    assert saved.verdicts == [{"criterion": "inc-age", "result": "met", "evidence": ["Patient/p1"],
                               "reason": "age 36 on 2026-06-15"}]
    assert state.not_screened() == [NotScreenedRecord("d1", "deceased", "2026-06-15", T0)]
    save_prescreen(state, [screening("p1")], [], "2026-06-16", T0 + 1, trial="NCT00000000", ruleset_version="t2")
    assert (state.screening("p1").trial, state.screening("p1").ruleset_version) == (  # type: ignore[union-attr]
        "NCT00000000", "t2")


def test_a_screening_saved_without_them_reads_back_with_none(state: State) -> None:
    state.save_screening(ScreeningRecord("p1", "candidate", [], "2026-06-15", T0))
    # first screened: the store's own (the record's updated_at), since issue #17's screening log
    assert state.screening("p1") == ScreeningRecord("p1", "candidate", [], "2026-06-15", T0, None, None,
                                                    first_screened_at=T0)
    record = screening_record(screening("p2"), "2026-06-15", T0, "NCT00000000", "t2")
    assert (record.trial, record.ruleset_version) == ("NCT00000000", "t2")
