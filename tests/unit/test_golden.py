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
