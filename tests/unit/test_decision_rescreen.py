"""The service's re-screen never overwrites the study team's decision (issue #17 item 3): it keeps the decision
the EHR's subject carries, writes back one whose write-back is still pending, refreshes the verdicts and says
when they changed since the review."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.decisions import verdicts_digest
from bridge.ingest.readers import Entry
from bridge.normalize.mappings import load_code_map
from bridge.publish.decision import decision_writer
from bridge.publish.publisher import Written
from bridge.publish.subject import decision_from_subject, verdicts_from_subject
from bridge.service import rescreen as module
from bridge.service.rescreen import PublishingRescreen
from bridge.service.triggers import patient_of
from bridge.state.sqlite_state import SqliteState
from bridge.trial import load_trial
from tests.unit.decision_fakes import FakeActions, Store, act
from tests.unit.test_decision_writeback import MemoryEhr

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "samples" / "prescreen" / "bundle.json"
AS_OF = date(2026, 6, 15)
T0 = datetime(2026, 6, 15, 9, 30, tzinfo=UTC).timestamp()
TRIAL = load_trial()
Json = dict[str, Any]


def sample(pid: str, ecog: int | None = None) -> list[Json]:
    import json

    out = []
    for entry in json.loads(BUNDLE.read_text(encoding="utf-8"))["entry"]:
        r = entry["resource"]
        if (r["resourceType"] == "Patient" and r["id"] == pid) or patient_of(r.get("subject")) == pid:
            out.append(r)
    if ecog is not None:
        out.append({"resourceType": "Observation", "id": f"{pid}-ecog-late", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "89247-1"}]},
                    "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-06-14",
                    "valueInteger": ecog})
    return out


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PublishingRescreen, Store, MemoryEhr,
                                                                            dict[str, int | None]]]:
    state = SqliteState(tmp_path / "s.db")
    store, ehr = Store(state, FakeActions()), MemoryEhr()
    ehr.resources[("ResearchStudy", "x")] = {"resourceType": "ResearchStudy", "id": "x", "meta": {"versionId": "1"}}
    ecog: dict[str, int | None] = {"value": None}
    monkeypatch.setattr(module, "fetch_patient", lambda client, pid, cmap, as_of: iter(
        [Entry(r, f"{r['resourceType']}/{r['id']}") for r in sample(pid, ecog["value"])]))
    monkeypatch.setattr(module, "publish_study", lambda client, reading, trial: Written(
        "ResearchStudy/x", "unchanged", "1"))
    rescreen = PublishingRescreen(ehr, load_code_map(REPO / "samples" / "site-map.yaml"), store,  # type: ignore[arg-type]
                                  today=lambda: AS_OF, clock=lambda: T0)
    yield rescreen, store, ehr, ecog
    state.close()


def subject(ehr: MemoryEhr) -> Json:
    (found,) = [r for (t, _), r in ehr.resources.items() if t == "ResearchSubject"]  # never a duplicate
    return found


def digest(store: Store, pid: str) -> str:
    record = store.screening(pid)
    assert record is not None
    return verdicts_digest(record.verdicts)


def test_a_rescreen_keeps_the_written_back_decision_and_flags_changed_verdicts(env: Any) -> None:
    rescreen, store, ehr, ecog = env
    assert rescreen("p01") == "candidate"
    a = act(store.acts, TRIAL.id, "p01", "screen-failure", reason="lost-to-contact", digest=digest(store, "p01"))
    decision_writer(Settings(), store, TRIAL, lambda: T0, client=ehr)(a.seq)
    assert rescreen("p01") == "candidate"  # the automated result; the subject keeps the team's
    kept = subject(ehr)
    assert kept["status"] == "ineligible" and decision_from_subject(kept).changed is False  # type: ignore[union-attr]
    ecog["value"] = 3  # a newer ECOG: inc-ecog not-met
    assert rescreen("p01") == "ineligible"
    after = subject(ehr)
    team = decision_from_subject(after)
    assert after["status"] == "ineligible" and team is not None and team.changed is True
    assert team.action == "screen-failure" and team.by == "dr.inv"
    _, _, verdicts = verdicts_from_subject(after)
    assert next(v for v in verdicts if v.criterion == "inc-ecog").result == "not-met"


def test_a_pending_write_back_is_done_by_the_rescreen(env: Any) -> None:
    rescreen, store, ehr, _ = env
    rescreen("p01")
    a = act(store.acts, TRIAL.id, "p01", "consented", role="coordinator", user="c.jones", digest=digest(store, "p01"))
    assert subject(ehr)["status"] == "candidate"  # recorded, not yet written back
    rescreen("p01")
    assert subject(ehr)["status"] == "screening"
    team = decision_from_subject(subject(ehr))
    assert team is not None and team.by == "c.jones"
    assert store.acts.writeback(a.seq).written_back_at == T0
    writes = ehr.writes
    rescreen("p01")  # nothing left to do
    assert ehr.writes == writes
