"""Every Patient, Condition, Observation, Encounter and MedicationAdministration of the official R4 examples and
the Synthea bundles goes through the readers, the normalizer and the engine without an exception."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from bridge.config import RuleOptions
from bridge.evaluate.eligibility import screen
from bridge.ingest.readers import read_source
from bridge.normalize.mappings import load_code_map
from bridge.normalize.patients import assemble
from bridge.trial import load_trial
from tests.shared import EXAMPLES, FHIR_DATA

TYPES = ("Patient", "Condition", "Observation", "Encounter", "MedicationAdministration")
CMAP = load_code_map(Path("samples/site-map.yaml"))
OPTS = RuleOptions(as_of=date(2026, 6, 15))


def _example_files() -> list[Path]:
    if not EXAMPLES.is_dir():
        pytest.fail(f"shared corpus missing at {EXAMPLES}")
    out = []
    for p in sorted(EXAMPLES.glob("*.json")):
        rtype = json.loads(p.read_text()).get("resourceType")
        if rtype in TYPES or rtype == "Bundle":
            out.append(p)
    return out


def test_corpus_is_present_and_large() -> None:
    files = _example_files()
    kinds = {json.loads(p.read_text())["resourceType"] for p in files}
    assert set(TYPES) <= kinds and len(files) > 100


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.name)
def test_official_example(path: Path) -> None:
    patients, report = assemble(read_source(str(path)), CMAP)
    assert report.read >= 1
    for pf in patients:
        assert [v.criterion for v in screen(pf, OPTS, CMAP.uln).verdicts] == list(load_trial().criterion_ids)


@pytest.mark.parametrize("path", sorted(FHIR_DATA.glob("synthea*/*.json")), ids=lambda p: p.name[:20])
def test_synthea_bundle(path: Path) -> None:
    patients, report = assemble(read_source(str(path)), CMAP)
    assert len(patients) == 1 and report.used > 50 and not report.skipped
    s = screen(patients[0], OPTS)
    assert s.status == "ineligible" and s.verdict("inc-diagnosis").result == "not-met"
