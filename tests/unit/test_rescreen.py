"""The service's default re-screen: pull -> screen -> publish -> record, and who gets a ResearchSubject."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bridge.ingest.readers import Entry
from bridge.normalize.mappings import load_code_map
from bridge.publish.publisher import Written
from bridge.publish.subject import research_subject
from bridge.service import rescreen as module
from bridge.service.rescreen import NOT_PUBLISHED, NOT_SCREENED, PublishingRescreen, study_key
from bridge.service.triggers import patient_of
from bridge.state.sqlite_state import SqliteState as SqliteStore

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "samples" / "prescreen" / "bundle.json"
AS_OF = date(2026, 6, 15)
T0 = 1_780_000_000.0


def sample(pid: str) -> list[dict[str, Any]]:
    import json

    doc = json.loads(BUNDLE.read_text(encoding="utf-8"))
    out = []
    for entry in doc["entry"]:
        r = entry["resource"]
        if (r["resourceType"] == "Patient" and r["id"] == pid) or patient_of(r.get("subject")) == pid:
            out.append(r)
    return out


class FakeClient:
    def __init__(self) -> None:
        self.reads: list[str] = []

    def read(self, rtype: str, rid: str) -> Any:
        self.reads.append(f"{rtype}/{rid}")
        if rtype == "ResearchSubject":  # as the EHR holds it after the write
            resource = research_subject("p01", "candidate", [], AS_OF, "organ-function")
        else:
            resource = {"resourceType": rtype}
        resource |= {"id": rid, "meta": {"versionId": "1"}}
        return type("R", (), {"resource": resource})


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PublishingRescreen, SqliteStore,
                                                                            dict[str, list[Any]]]]:
    store = SqliteStore(tmp_path / "s.db")
    calls: dict[str, list[Any]] = {"published": [], "study": [], "found": []}
    monkeypatch.setattr(module, "fetch_patient", lambda client, pid, cmap, as_of: iter(
        [Entry(r, f"{r['resourceType']}/{r['id']}") for r in sample(pid)]))
    monkeypatch.setattr(module, "publish_study", lambda client, reading, trial: calls["study"].append(
        (reading, trial.id)) or Written("ResearchStudy/nct04762485", "created", "1"))
    monkeypatch.setattr(module, "publish_subject", lambda client, screening, options, transaction, trial: calls[
        "published"].append((screening.patient, screening.status, options.as_of, transaction, trial.id)) or Written(
        "ResearchSubject/rs1", "created", "1"))
    monkeypatch.setattr(module, "find_subject", lambda client, pid, trial: calls["found"].append(pid))
    rescreen = PublishingRescreen(FakeClient(), load_code_map(REPO / "samples" / "site-map.yaml"), store,  # type: ignore[arg-type]
                                  today=lambda: AS_OF, clock=lambda: T0)
    yield rescreen, store, calls
    store.close()


def test_a_leukaemia_patient_is_screened_published_and_recorded(env: Any) -> None:
    rescreen, store, calls = env
    assert rescreen("p01") == "candidate"  # samples/prescreen/intent.json
    # the re-screen passes its trial, and lets the publisher use a transaction where the EHR offers one
    assert calls["published"] == [("Patient/p01", "candidate", AS_OF, None, "NCT04762485")]
    assert calls["study"] == [("organ-function", "NCT04762485")]
    record = store.screening("p01")
    assert record is not None and (record.status, record.as_of, record.updated_at) == ("candidate", "2026-06-15", T0)
    assert {v["criterion"]: v["result"] for v in record.verdicts}["inc-diagnosis"] == "met"
    published = store.find_published("ResearchSubject", patient="Patient/p01")
    assert [(p.resource_id, p.version) for p in published] == [("rs1", "1")]
    assert store.get_published(study_key(rescreen.trial)) is not None
    assert study_key(rescreen.trial) == "ResearchStudy|nct04762485"
    rescreen("p01")
    assert len(calls["study"]) == 1  # once per process


def test_a_patient_without_the_diagnosis_gets_no_research_subject(env: Any) -> None:
    rescreen, store, calls = env
    assert rescreen("p08") == NOT_PUBLISHED
    assert calls["published"] == [] and calls["found"] == ["p08"] and store.screening("p08") is None


def test_but_an_existing_subject_is_kept_up_to_date(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rescreen, _store, calls = env
    monkeypatch.setattr(module, "find_subject", lambda client, pid, trial: {"resourceType": "ResearchSubject",
                                                                           "id": "x"})
    assert rescreen("p08") == "ineligible"
    assert calls["published"] == [("Patient/p08", "ineligible", AS_OF, None, "NCT04762485")]


def test_a_patient_with_nothing_usable_is_not_screened(env: Any) -> None:
    """No Patient resource came back (absent, or rejected by validation): RULES.md §2 "no-patient-resource"."""
    rescreen, store, calls = env
    assert rescreen("nobody") == NOT_SCREENED
    assert calls["published"] == [] and calls["study"] == [] and calls["found"] == []
    assert store.screening("nobody") is None
    assert [(n.patient_id, n.reason) for n in store.not_screened()] == [("nobody", "no-patient-resource")]


def test_saved_screenings_name_the_trial_and_its_version(env: Any) -> None:
    rescreen, store, _calls = env
    rescreen("p01")
    record = store.screening("p01")
    assert record is not None and (record.trial, record.ruleset_version) == (rescreen.trial.id,
                                                                             rescreen.trial.ruleset_version)
    assert store.trial_digest(rescreen.trial.id, rescreen.trial.ruleset_version) == rescreen.trial.digest


def test_the_trial_comes_from_the_settings_and_a_changed_file_is_refused(env: Any, tmp_path: Path) -> None:
    from bridge.config import Settings
    from bridge.errors import StoreError
    from bridge.trial import load_trial

    rescreen, store, calls = env
    rescreen("p01")  # records the shipped trial's version and content
    edited = tmp_path / "edited.yaml"
    edited.write_text((REPO / "trials" / "nct04762485.yaml").read_text().replace("label: Age\n", "label: Age now\n"))
    other = PublishingRescreen.from_settings(rescreen.client, rescreen.cmap, store, Settings(trial=str(edited)))
    assert other.trial == load_trial(edited) and other.trial.ruleset_version == rescreen.trial.ruleset_version
    other.today, other.clock = rescreen.today, rescreen.clock
    with pytest.raises(StoreError, match="already recorded with different content"):
        other("p02")
    assert store.screening("p02") is None and len(calls["published"]) == 1  # nothing saved for p02
