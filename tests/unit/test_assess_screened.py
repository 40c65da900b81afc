"""Who is assessed (RULES.md §2 with §4): screened patients and deceased ones — never a non-human patient or one
without a Patient resource — the same in `bridge assess`, the report and the registry export."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from bridge.cli import app as cli_app
from bridge.config import RuleOptions
from bridge.ingest.readers import read_source
from bridge.normalize.mappings import load_code_map
from bridge.registry.export import assessment_for

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
ANIMAL = "http://hl7.org/fhir/StructureDefinition/patient-animal"


def _bundle(tmp_path: Path) -> tuple[Path, list[str]]:
    bundle = json.loads((SAMPLES / "treated" / "bundle.json").read_text(encoding="utf-8"))
    infused = sorted({e["resource"]["subject"]["reference"] for e in bundle["entry"]
                      if e["resource"]["resourceType"] == "MedicationAdministration"})
    dog, patientless = infused[0], infused[1]
    kept = []
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Patient" and f"Patient/{res['id']}" == dog:
            res["extension"] = [*res.get("extension", []), {"url": ANIMAL, "extension": [
                {"url": "species", "valueCodeableConcept": {"text": "dog"}}]}]
        if res["resourceType"] == "Patient" and f"Patient/{res['id']}" == patientless:
            continue
        kept.append(entry)
    bundle["entry"] = kept
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    return path, [dog, patientless]


def _patients(doc: dict[str, Any]) -> set[str]:
    return {p["patient"] for p in doc["patients"]}


def test_assess_and_registry_export_leave_out_non_human_and_patientless(tmp_path: Path) -> None:
    path, gone = _bundle(tmp_path)
    result = CliRunner().invoke(cli_app, ["assess", str(path), "--site-map", str(SAMPLES / "site-map.yaml"),
                                          "--as-of", "2026-12-31", "--format", "json"])
    assert result.exit_code == 0, result.output
    assessed = _patients(json.loads(result.stdout))
    assert assessed and not assessed & set(gone)
    doc = assessment_for(list(read_source(str(path))), RuleOptions(as_of=date(2026, 12, 31)),
                         load_code_map(SAMPLES / "site-map.yaml"))
    assert _patients(doc) == assessed
