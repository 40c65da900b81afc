"""Golden files: `bridge prescreen samples/... --format json` equals samples/prescreen/expected.json (as JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.mark.parametrize("source", ["prescreen/bundle.json", "prescreen/ndjson"])
def test_prescreen_matches_golden(source: str) -> None:
    out = subprocess.run([sys.executable, "-m", "bridge", "prescreen", str(SAMPLES / source), "--site-map",
                          str(SAMPLES / "site-map.yaml"), "--as-of", "2026-06-15", "--format", "json"],
                         capture_output=True, text=True, timeout=120, check=True)
    expected = json.loads((SAMPLES / "prescreen" / "expected.json").read_text())
    assert json.loads(out.stdout) == expected


def test_transaction_bundle_matches_golden_under_strict() -> None:
    """Request-only entries of a transaction Bundle are not skipped resources: --strict exits 0 (RULES.md §2)."""
    out = subprocess.run([sys.executable, "-m", "bridge", "prescreen", str(SAMPLES / "prescreen" / "transaction.json"),
                          "--site-map", str(SAMPLES / "site-map.yaml"), "--as-of", "2026-06-15", "--format", "json",
                          "--strict"], capture_output=True, text=True, timeout=120, check=True)
    expected = json.loads((SAMPLES / "prescreen" / "expected-transaction.json").read_text())
    assert json.loads(out.stdout) == expected


def test_golden_is_consistent_with_intent() -> None:
    expected = json.loads((SAMPLES / "prescreen" / "expected.json").read_text())
    intent = json.loads((SAMPLES / "prescreen" / "intent.json").read_text())["patients"]
    assert len(expected["results"]) == len(intent) >= 31
    for result in expected["results"]:
        want = intent[result["patient"].removeprefix("Patient/")]
        assert result["status"] == want["status"]
        assert {k: v["result"] for k, v in result["criteria"].items()} == want["criteria"]


def test_published_case_is_a_candidate() -> None:
    expected = json.loads((SAMPLES / "prescreen" / "expected.json").read_text())
    (cao,) = [r for r in expected["results"] if r["patient"] == "Patient/cao2022"]
    assert cao["status"] == "candidate"


@pytest.mark.parametrize("source", ["treated/bundle.json", "treated/ndjson"])
def test_assess_matches_golden(source: str) -> None:
    out = subprocess.run([sys.executable, "-m", "bridge", "assess", str(SAMPLES / source), "--site-map",
                          str(SAMPLES / "site-map.yaml"), "--as-of", "2026-12-31", "--format", "json"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == json.loads((SAMPLES / "treated" / "expected.json").read_text())


def test_published_case_assessment() -> None:
    """RULES.md §7: dose within protocol, MLFS at day 17, one grade 3 CRS."""
    doc = json.loads((SAMPLES / "treated" / "expected.json").read_text())
    (cao,) = [p for p in doc["patients"] if p["patient"] == "Patient/cao2022"]
    assert cao["doseWithinProtocol"] is True and cao["cellsPerKg"] == pytest.approx(5e6)
    assert [(a["day"], a["response"]) for a in cao["assessments"]][0] == (17, "MLFS")
    assert cao["bestResponse"] == "MLFS"
    crs = [ae for ae in cao["adverseEvents"] if ae["term"] == "Cytokine release syndrome"]
    assert [ae["grade"] for ae in crs] == [3]
    assert not [ae for ae in cao["adverseEvents"] if ae["term"].startswith("Immune effector")]
