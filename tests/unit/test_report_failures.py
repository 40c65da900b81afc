"""`bridge report`: a patient whose evaluation raises is named on stderr (exit 1); the report holds the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import bridge.evaluate.assessment as assessment
import bridge.pipeline as pipeline
from bridge.cli import app as cli_app
from bridge.config import RuleOptions
from bridge.evaluate.eligibility import Screening
from bridge.model import PatientFacts

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SECRET = "Zhang-Secret-4173"


def _report(tmp_path: Path) -> Any:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli_app, ["report", str(SAMPLES / "prescreen" / "bundle.json"), "--site-map",
                                          str(SAMPLES / "site-map.yaml"), "--as-of", "2026-06-15", "--out", str(out)])
    return result, out


def test_a_failing_screening_is_named_and_the_report_is_written(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipeline.screen

    def screen(pf: PatientFacts, options: RuleOptions, site_uln: Any = None, trial: Any = None) -> Screening:
        if pf.patient_id == "p01":
            raise ZeroDivisionError(SECRET)
        return real(pf, options, site_uln, trial)

    monkeypatch.setattr(pipeline, "screen", screen)
    result, out = _report(tmp_path)
    assert result.exit_code == 1, result.output
    assert "Patient/p01: evaluation failed (ZeroDivisionError" in result.stderr
    assert SECRET not in result.output
    assert out.exists()


def test_a_failing_assessment_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = assessment.assess_patient

    def assess_patient(pf: PatientFacts, *args: Any, **kwargs: Any) -> Any:
        if pf.patient_id == "cao2022":
            raise KeyError(SECRET)
        return real(pf, *args, **kwargs)

    monkeypatch.setattr(assessment, "assess_patient", assess_patient)
    result, out = _report(tmp_path)
    assert result.exit_code == 1, result.output
    assert "Patient/cao2022: assessment failed (KeyError)" in result.stderr
    assert SECRET not in result.output and out.exists()


def test_no_failure_exits_0(tmp_path: Path) -> None:
    result, out = _report(tmp_path)
    assert result.exit_code == 0, result.output
    assert out.exists()
