"""No log line or error message contains a patient name, an identifier value, a birth date or a result value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _secrets(bundle: Path) -> set[str]:
    """Every name, identifier value, birth date and decimal result value in a sample bundle."""
    found: set[str] = set()
    for entry in json.loads(bundle.read_text())["entry"]:
        res: dict[str, Any] = entry["resource"]
        for name in res.get("name") or []:
            found.add(name.get("text") or "")
            found.update(name.get("given") or [])
            if name.get("family"):
                found.add(name["family"])
        found.update(i["value"] for i in res.get("identifier") or [] if isinstance(i, dict) and i.get("value"))
        if res.get("birthDate"):
            found.add(res["birthDate"])
        value = (res.get("valueQuantity") or {}).get("value")
        if isinstance(value, float) and len(repr(value)) >= 4:
            found.add(repr(value))
        if isinstance(res.get("valueString"), str) and len(res["valueString"]) >= 4:
            found.add(res["valueString"])
    return {s for s in found if s}


@pytest.mark.parametrize(("command", "sample", "as_of"), [("prescreen", "prescreen", "2026-06-15"),
                                                          ("assess", "treated", "2026-12-31")])
def test_debug_logs_and_messages_hold_no_patient_data(command: str, sample: str, as_of: str) -> None:
    bundle = SAMPLES / sample / "bundle.json"
    secrets = _secrets(bundle)
    assert len(secrets) > 50  # the check has teeth: names, MRNs, birth dates and values are there to find
    out = subprocess.run([sys.executable, "-m", "bridge", "--log-level", "DEBUG", command, str(bundle),
                          "--site-map", str(SAMPLES / "site-map.yaml"), "--as-of", as_of, "--format", "json"],
                         capture_output=True, text=True, timeout=120, check=True)
    leaked = sorted(s for s in secrets if s in out.stderr)
    assert leaked == []


def test_bad_resources_are_reported_without_their_content(tmp_path: Path) -> None:
    doc = json.loads((SAMPLES / "prescreen" / "bundle.json").read_text())
    secrets = _secrets(SAMPLES / "prescreen" / "bundle.json")
    name, mrn = "Synthetic P01", "SYN-P01"
    doc["entry"] += [
        {"resource": {"resourceType": "Observation", "id": "bad1", "status": "final", "code": {"text": name},
                      "subject": {"reference": "Patient/p01"}, "valueQuantity": {"value": mrn}}},
        {"resource": {"resourceType": "Patient", "id": "bad2", "birthDate": "1991-09-23T99", "name": [{"text": name}]}},
        {"resource": {"resourceType": "Observation", "id": "bad3", "status": "final",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "1975-2"}]},
                      "subject": {"reference": "Patient/p01"}, "effectiveDateTime": "2026-06-10",
                      "valueQuantity": {"value": 12.345, "unit": mrn, "code": mrn}}},
    ]
    bad = tmp_path / "bundle.json"
    bad.write_text(json.dumps(doc))
    out = subprocess.run([sys.executable, "-m", "bridge", "--log-level", "DEBUG", "prescreen", str(bad),
                          "--site-map", str(SAMPLES / "site-map.yaml"), "--as-of", "2026-06-15"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert "Observation/bad1" in out.stderr and "Patient/bad2" in out.stderr and "Observation/bad3" in out.stderr
    assert "12.345" not in out.stderr
    leaked = sorted(s for s in secrets | {name} if s in out.stderr)
    assert leaked == [], "the unit string itself is a code, shown; everything else must not be"
