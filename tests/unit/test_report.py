"""The cohort report (``bridge report``) and the coordinator page (``/ui``) without a browser.

The report is checked against the engine's own documents: every number it prints carries ``data-key`` /
``data-value`` and is compared with ``bridge assess --format json`` and ``bridge prescreen --format json`` run as
real subprocesses on the same source. The plots must be real PNG images of non-trivial size and content.
The page is driven through FastAPI's test client: sign-in, sessions, ordering, verdicts, evidence links, headers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.image import imread
from typer.testing import CliRunner

from bridge.cli import app as cli_app
from bridge.config import RuleOptions, Settings
from bridge.errors import InputError
from bridge.ingest.readers import read_source
from bridge.normalize.mappings import load_code_map
from bridge.report import coordinator, plots
from bridge.report.data import gather
from bridge.report.render import (
    SECTIONS,
    blockers,
    interval,
    num,
    pct,
    render_report,
    syndrome_rows,
    write_report,
)
from bridge.service.ui import COOKIE, SESSION_SECONDS, ui_router
from bridge.trial import load_trial

ROOT = Path(__file__).resolve().parents[2]
SITE_MAP = ROOT / "samples" / "site-map.yaml"
PRESCREEN_SAMPLE = ROOT / "samples" / "prescreen" / "bundle.json"
TREATED_SAMPLE = ROOT / "samples" / "treated" / "bundle.json"
AS_OF = date(2026, 12, 31)
PLOTS = ("funnel", "criteria", "dose", "swimmer", "response", "cir", "kinetics")

# ---------------------------------------------------------------------------------------------- a treated cohort
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
LAB, PHARMACY = "http://hospital.example.org/lab", "http://hospital.example.org/pharmacy"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
DAY0 = date(2025, 10, 1)


def _on(day0: date, day: int) -> str:
    return (day0 + timedelta(days=day)).isoformat()


def _obs(rid: str, pid: str, system: str, code: str, when: str, value: float, unit: str,
         comparator: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if comparator:
        q["comparator"] = comparator
    return {"resourceType": "Observation", "id": rid, "status": "final", "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": system, "code": code}]}, "effectiveDateTime": when, "valueQuantity": q}


def _condition(rid: str, pid: str, code: str, when: str) -> dict[str, Any]:
    status = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}
    return {"resourceType": "Condition", "id": rid, "subject": {"reference": f"Patient/{pid}"},
            "clinicalStatus": status, "code": {"coding": [{"system": ICD10CM, "code": code}]}, "onsetDateTime": when}


def _infusion(rid: str, pid: str, when: str, millions: float) -> dict[str, Any]:
    dose = {"value": millions, "unit": "10*6{cells}", "system": UCUM, "code": "10*6{cells}"}
    return {"resourceType": "MedicationAdministration", "id": rid, "status": "completed",
            "medicationCodeableConcept": {"coding": [{"system": PHARMACY, "code": "CART-CD7"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when, "dosage": {"dose": dose}}


def _marrow(pid: str, day0: date, day: int, blasts: float, anc: float, plt: float,
            blood: float = 0.0) -> list[dict[str, Any]]:
    when = _on(day0, day)
    return [_obs(f"{pid}-bm-d{day}", pid, LOINC, "11150-0", when, blasts, "%"),
            _obs(f"{pid}-anc-d{day}", pid, LOINC, "751-8", when, anc, "10*9/L"),
            _obs(f"{pid}-plt-d{day}", pid, LOINC, "777-3", when, plt, "10*9/L"),
            _obs(f"{pid}-pb-d{day}", pid, LOINC, "26446-5", when, blood, "%")]


def _kinetics(pid: str, day0: date, copies: list[tuple[int, float]],
              percent: list[tuple[int, float]]) -> list[dict[str, Any]]:
    out = [_obs(f"{pid}-qpcr-d{d}", pid, LAB, "QPCR-CART", _on(day0, d), v or 100.0, "{copies}/ug",
                None if v else "<") for d, v in copies]
    return out + [_obs(f"{pid}-fc-d{d}", pid, LAB, "FC-CART", _on(day0, d), v, "%") for d, v in percent]


def _case(pid: str, gender: str, born: str, day0: date, weight: float, doses: list[tuple[int, float]],
          marrows: list[tuple[Any, ...]], conditions: tuple[tuple[str, int], ...] = (), deceased: str | None = None,
          copies: list[tuple[int, float]] | None = None, percent: list[tuple[int, float]] | None = None,
          ) -> list[dict[str, Any]]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": born}
    if deceased:
        patient["deceasedDateTime"] = deceased
    out = [patient, _condition(f"{pid}-dx", pid, "C92.02", _on(day0, -60)),
           _obs(f"{pid}-wt", pid, LOINC, "29463-7", _on(day0, -5), weight, "kg"),
           _obs(f"{pid}-bm-base", pid, LOINC, "11150-0", _on(day0, -7), 40.0, "%")]
    out += [_infusion(f"{pid}-inf{i}", pid, _on(day0, d), m) for i, (d, m) in enumerate(doses)]
    for m in marrows:
        out += _marrow(pid, day0, *m)
    out += [_condition(f"{pid}-{code}", pid, code, _on(day0, d)) for code, d in conditions]
    return out + _kinetics(pid, day0, copies or [], percent or [])


def treated_bundle() -> dict[str, Any]:
    """Four infused patients and one not infused, as-of 2026-12-31 (synthetic).

    t01: 5e6/kg, CR day 17 and 90, relapse day 180 (marrow 12 %), CRS grade 2, copies below LOD on day 0.
    t02: split dose 5e6/kg, MLFS then CR, CRS 3 + ICANS 1, alive (follow-up visit day 406).
    t03: 12e6/kg (outside protocol), NR, died on 2026-08-01. t04: CR, died without relapse (competing event).
    """
    res = _case("t01", "male", "1990-05-01", DAY0, 60.0, [(0, 300.0)],
                [(17, 2.0, 1.5, 120.0), (90, 1.0, 2.0, 160.0), (180, 12.0, 1.8, 130.0)], (("D89.832", 3),),
                copies=[(0, 0.0), (4, 2e4), (7, 1.5e5), (10, 4e5), (14, 2e5), (21, 6e4), (28, 2e4), (60, 1.5e3)],
                percent=[(4, 2.0), (7, 15.0), (10, 38.0), (14, 25.0), (21, 9.0), (28, 4.0)])
    res += _case("t02", "female", "2001-02-11", DAY0 + timedelta(days=20), 50.0, [(0, 100.0), (2, 150.0)],
                 [(17, 3.0, 0.6, 40.0), (60, 2.0, 1.2, 150.0)], (("D89.833", 2), ("G92.01", 6)),
                 copies=[(4, 5e4), (7, 3e5), (14, 9e5), (21, 3e5), (28, 1e5)], percent=[(7, 22.0), (14, 55.0)])
    res += _case("t03", "male", "1975-09-30", DAY0 + timedelta(days=40), 70.0, [(0, 840.0)],
                 [(28, 60.0, 0.4, 20.0, 5.0)], deceased="2026-08-01", copies=[(7, 3e3), (14, 1e4), (28, 0.0)])
    res += _case("t04", "female", "1995-12-24", DAY0 + timedelta(days=60), 45.0, [(0, 225.0)],
                 [(21, 4.0, 2.0, 150.0)], (("D89.831", 2),), deceased="2026-10-01",
                 copies=[(7, 8e4), (14, 2.5e5), (28, 4e4)], percent=[(14, 30.0)])
    res += [{"resourceType": "Patient", "id": "t05", "gender": "female", "birthDate": "1988-07-07"},
            _condition("t05-dx", "t05", "C92.02", "2026-11-01"),
            {"resourceType": "Encounter", "id": "t02-fu", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "subject": {"reference": "Patient/t02"}, "period": {"start": "2026-12-01", "end": "2026-12-01"}}]
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in res]}


# ---------------------------------------------------------------------------------------------- helpers
class _Collector(HTMLParser):
    """Every tag with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Collector()
    parser.feed(html)
    return parser.tags


def data_values(html: str) -> dict[str, Any]:
    """``data-key`` → decoded ``data-value``; a key printed twice must carry the same value both times."""
    out: dict[str, Any] = {}
    for _, attrs in tags(html):
        key, raw = attrs.get("data-key"), attrs.get("data-value")
        if key is None:
            continue
        value = json.loads(raw or "null")
        assert out.setdefault(key, value) == value, key
        out[key] = value
    return out


def images(html: str) -> dict[str, bytes]:
    found = {}
    for tag, attrs in tags(html):
        if tag == "img":
            src = attrs.get("src") or ""
            assert src.startswith("data:image/png;base64,"), src[:40]
            found[attrs["data-plot"] or ""] = base64.b64decode(src.split(",", 1)[1], validate=True)
    return found


def png_size(blob: bytes) -> tuple[int, int]:
    assert blob[:8] == b"\x89PNG\r\n\x1a\n" and blob[12:16] == b"IHDR"
    width, height = struct.unpack(">II", blob[16:24])
    return width, height


def bridge_json(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bridge", *args, "--format", "json"], capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@pytest.fixture(scope="module")
def treated_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "treated.json"
    path.write_text(json.dumps(treated_bundle()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def treated_doc(treated_file: Path) -> dict[str, Any]:
    return gather(read_source(str(treated_file)), RuleOptions(as_of=AS_OF), load_code_map(SITE_MAP), "treated.json")


@pytest.fixture(scope="module")
def treated_html(treated_doc: dict[str, Any]) -> str:
    return render_report(treated_doc)


# ---------------------------------------------------------------------------------------------- report content
def test_every_section_and_plot_of_a_treated_cohort(treated_html: str) -> None:
    ids = {attrs.get("id") for _, attrs in tags(treated_html)}
    assert set(SECTIONS) <= ids
    found = images(treated_html)
    assert sorted(found) == sorted(PLOTS)
    for name, blob in found.items():
        width, height = png_size(blob)
        assert width >= 600 and height >= 250 and len(blob) > 15_000, name
        pixels = imread(io.BytesIO(blob))
        assert pixels.shape[:2] == (height, width) and float(np.std(pixels[..., :3])) > 0.05, name
    assert 'id="ae-table"' in treated_html and 'id="crs-icans"' in treated_html


def test_report_is_self_contained(treated_html: str) -> None:
    assert "<script" not in treated_html.lower() and "<link" not in treated_html.lower()
    assert "url(" not in treated_html and "@import" not in treated_html
    for tag, attrs in tags(treated_html):
        if "src" in attrs:
            assert (attrs["src"] or "").startswith("data:image/png;base64,"), tag
        if "href" in attrs:
            assert (attrs["href"] or "").startswith("#"), attrs["href"]


def _resolve(key: str, assess: dict[str, Any], prescreen: dict[str, Any]) -> Any:
    """The expected value of a report ``data-key``, computed from the CLI documents alone."""
    results = prescreen["results"]
    if key == "asOf":
        return assess["asOf"]
    if key == "prescreen.screened":
        return len(results)
    if key == "prescreen.notScreened":
        return len(prescreen["notScreened"])
    if key.startswith("prescreen.notScreened."):
        return sum(1 for n in prescreen["notScreened"] if n["reason"] == key.removeprefix("prescreen.notScreened."))
    if key.startswith("prescreen.status."):
        return sum(1 for r in results if r["status"] == key.removeprefix("prescreen.status."))
    if key.startswith("criteria."):
        cid, what = key.removeprefix("criteria.").rsplit(".", 1)
        verdicts = [r["criteria"][cid]["result"] for r in results]
        return verdicts.count("unknown") if what == "unknown" else verdicts.count(
            "not-met" if cid.startswith("inc-") else "met")
    if key.startswith("patients."):
        return _patient_value(key.removeprefix("patients."), assess["patients"])
    node: Any = assess
    for part in key.split("."):
        node = node[part]
    return node


def _patient_value(rest: str, patients: list[dict[str, Any]]) -> Any:
    (p,) = [p for p in patients if rest.startswith(p["patient"] + ".")]
    path = rest.removeprefix(p["patient"] + ".").split(".")
    if path[0] in ("crs", "icans"):
        term = {"crs": "Cytokine release syndrome", "icans": "Immune effector cell-associated neurotoxicity syndrome"}
        grades = [e["grade"] for e in p["adverseEvents"] if e["term"] == term[path[0]]]
        return max((g for g in grades if g is not None), default=None if grades else 0)
    if path[0] == "kinetics":
        return p["kinetics"][".".join(path[1:-1])][path[-1]]
    return p[path[0]]


def _expected_keys(assess: dict[str, Any]) -> set[str]:
    cohort = assess["cohort"]
    keys = {"cohort.infused", "cohort.orr.rate", "cohort.orr.ci95", "cohort.orr.responders", "cohort.orr.n",
            "cohort.adverseEvents.events", "cohort.adverseEvents.patients", "prescreen.screened",
            "prescreen.notScreened", "cohort.cir.12months.estimate", "cohort.cir.12months.ci95",
            "cohort.cir.24months.estimate"}
    keys |= {f"cohort.bestResponse.{k}" for k in cohort["bestResponse"]}
    by_term = cohort["adverseEvents"]["byTermAndGrade"]
    keys |= {f"cohort.adverseEvents.byTermAndGrade.{t}.{g}" for t, gs in by_term.items() for g in gs}
    for p in assess["patients"]:
        ref = p["patient"]
        keys |= {f"patients.{ref}.{k}" for k in ("cellsPerKg", "doseWithinProtocol", "bestResponse", "relapseDate",
                                                  "weightKg", "crs.worst", "icans.worst")}
        keys |= {f"patients.{ref}.kinetics.{c}.{m}" for c in p["kinetics"]
                 for m in ("cmax", "tmaxDay", "auc0to28", "lastDetectedDay")}
    keys |= {f"criteria.{c}.{w}" for c in load_trial().criterion_ids if c != "exc-investigator"
             for w in ("excluding", "unknown")}
    return keys


def _check_numbers(html: str, source: Path, as_of: str) -> dict[str, Any]:
    args = (str(source), "--as-of", as_of, "--site-map", str(SITE_MAP))
    assess, prescreen = bridge_json("assess", *args), bridge_json("prescreen", *args)
    shown = data_values(html)
    missing = _expected_keys(assess) - set(shown)
    assert not missing, sorted(missing)[:10]
    for key, value in shown.items():
        assert value == _resolve(key, assess, prescreen), key
    return assess


def test_numbers_equal_the_assess_and_prescreen_commands(treated_file: Path, treated_html: str) -> None:
    assess = _check_numbers(treated_html, treated_file, AS_OF.isoformat())
    cohort = assess["cohort"]
    assert (cohort["infused"], cohort["orr"]["responders"]) == (4, 3)  # the fixture's design, not the engine's echo
    assert cohort["cir"]["12months"]["estimate"] == pytest.approx(1 / 3, abs=1e-6)
    assert f"{pct(cohort['orr']['rate'])}" in treated_html and interval(cohort["orr"]["ci95"]) in treated_html


@pytest.mark.slow
@pytest.mark.skipif(not TREATED_SAMPLE.exists(), reason="samples/treated not generated")
def test_the_treated_sample_report(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli_app, ["report", str(TREATED_SAMPLE), "--out", str(out), "--as-of", "2026-12-31",
                                          "--site-map", str(SITE_MAP)])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert sorted(images(html)) == sorted(PLOTS)
    _check_numbers(html, TREATED_SAMPLE, "2026-12-31")


def test_the_prescreen_sample_report_has_every_section(tmp_path: Path) -> None:
    doc = gather(read_source(str(PRESCREEN_SAMPLE)), RuleOptions(as_of=date(2026, 6, 15)),
                 load_code_map(SITE_MAP), "bundle.json")
    html = render_report(doc)
    ids = {attrs.get("id") for _, attrs in tags(html)}
    assert set(SECTIONS) <= ids
    assert sorted(images(html)) == ["criteria", "funnel"]
    missing = {attrs["data-plot-missing"] for _, attrs in tags(html) if "data-plot-missing" in attrs}
    assert missing == {"dose", "swimmer", "response", "cir", "kinetics"}
    shown = data_values(html)
    assert (shown["prescreen.screened"], shown["prescreen.status.candidate"]) == (56, 15)  # samples/README.md totals
    assert (shown["prescreen.status.potential-candidate"], shown["prescreen.status.ineligible"]) == (21, 20)
    assert shown["cohort.infused"] == 0 and shown["cohort.orr.rate"] is None and "n/e" in html


# ---------------------------------------------------------------------------------------------- the data adapter
def test_cir_curve_agrees_with_the_cohort_summary(treated_doc: dict[str, Any]) -> None:
    cir, summary = treated_doc["cir"], treated_doc["assessment"]["cohort"]["cir"]
    assert [(s["patient"], s["event"]) for s in cir["subjects"]] == [
        ("Patient/t01", "relapse"), ("Patient/t02", "censored"), ("Patient/t04", "death")]
    assert [s["days"] for s in cir["subjects"]] == [163, 389, 284]  # relapse 180-17; visit 406-17; death 305-21
    at_12 = [s for s in cir["curve"] if s["day"] <= 365.25][-1]
    assert at_12["estimate"] == pytest.approx(summary["12months"]["estimate"], abs=1e-6)
    assert [at_12["low"], at_12["high"]] == pytest.approx(summary["12months"]["ci95"], abs=1e-6)
    assert cir["definedUntilDay"] == 389 and summary["24months"]["estimate"] is None
    estimates = [s["estimate"] for s in cir["curve"]]
    assert estimates == sorted(estimates) and cir["curve"][-1]["death"] == pytest.approx(1 / 3)


def test_kinetic_series_and_follow_up(treated_doc: dict[str, Any]) -> None:
    series = treated_doc["kineticSeries"]
    assert series["Patient/t01"]["car-t-copies"][0] == [0, 0.0, "<"]  # below LOD kept as 0 with its comparator
    assert [p[0] for p in series["Patient/t01"]["car-t-copies"]] == [0, 4, 7, 10, 14, 21, 28, 60]
    assert "car-t-percent" not in series["Patient/t03"] and series["Patient/t03"]["car-t-copies"][-1] == [28, 0.0, "<"]
    fu = treated_doc["followUp"]
    assert fu["Patient/t03"]["deathDay"] == (date(2026, 8, 1) - (DAY0 + timedelta(days=40))).days
    assert fu["Patient/t02"] == {"lastFollowUpDay": 406, "deathDay": None}
    assert "Patient/t05" not in fu  # never infused


# ---------------------------------------------------------------------------------------------- rendering from JSON
def _minimal_doc(patient: str = "Patient/x1") -> dict[str, Any]:
    verdicts: dict[str, dict[str, Any]] = {
        c: {"result": "met" if c.startswith("inc-") else "not-met", "evidence": [], "reason": "r"}
        for c in load_trial().criterion_ids}
    verdicts["inc-ecog"] = {"result": "unknown", "evidence": [], "reason": "no ECOG"}
    verdicts["exc-investigator"] = {"result": "unknown", "evidence": [], "reason": "investigator judgement"}
    cohort = {"infused": 0, "orr": {"responders": 0, "n": 0, "rate": None, "ci95": None},
              "bestResponse": dict.fromkeys(("CR", "CRi", "MLFS", "PR", "NR", "NE"), 0),
              "adverseEvents": {"events": 0, "patients": 0, "byTermAndGrade": {}},
              "cir": {"12months": {"estimate": None, "ci95": None}, "24months": {"estimate": None, "ci95": None}}}
    return {"study": "NCT04762485", "asOf": "2026-06-15", "ruleset": "r", "source": "<b>src</b>",
            "prescreen": {"asOf": "2026-06-15", "organFunctionReading": "organ-function",
                          "results": [{"patient": patient, "status": "potential-candidate", "criteria": verdicts}]},
            "assessment": {"asOf": "2026-06-15", "comparators": "record", "patients": [], "cohort": cohort},
            "followUp": {}, "cir": {}, "kineticSeries": {}}


def test_rendering_escapes_everything_from_the_data() -> None:
    html = render_report(_minimal_doc())
    assert "<b>src</b>" not in html and "&lt;b&gt;src&lt;/b&gt;" in html
    doc = _minimal_doc()
    doc["assessment"]["patients"] = [{"patient": "Patient/<img src=x onerror=alert(1)>", "dayZero": "2026-01-01",
                                      "infusions": [], "weightKg": 50, "cellsPerKg": 1e6, "doseWithinProtocol": True,
                                      "baselineMarrowBlasts": None, "assessments": [], "bestResponse": "NE",
                                      "remissionDate": None, "relapseDate": None, "adverseEvents": [], "kinetics": {}}]
    html = render_report(doc)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_document_without_its_parts_is_an_input_error() -> None:
    with pytest.raises(InputError, match="assessment"):
        render_report({"prescreen": {"results": []}})


def test_write_report_to_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot write the report"):
        write_report(_minimal_doc(), tmp_path / "no" / "such" / "dir" / "r.html")


def test_blockers_count_excluding_and_unknown_and_skip_the_investigator() -> None:
    doc = _minimal_doc()["prescreen"]
    second = json.loads(json.dumps(doc["results"][0]))
    second["criteria"]["inc-age"]["result"] = "not-met"
    second["criteria"]["exc-hiv"]["result"] = "met"
    second["criteria"]["exc-pregnancy"]["result"] = "unknown"
    doc["results"].append(second)
    rows = {r["criterion"]: r for r in blockers(doc)}
    assert "exc-investigator" not in rows and len(rows) == len(load_trial().criterion_ids) - 1
    assert (rows["inc-ecog"]["excluding"], rows["inc-ecog"]["unknown"]) == (0, 2)
    assert (rows["inc-age"]["excluding"], rows["exc-hiv"]["excluding"], rows["exc-pregnancy"]["unknown"]) == (1, 1, 1)
    assert rows["exc-hiv"]["unknown"] == 0 and rows["inc-diagnosis"] == {
        "criterion": "inc-diagnosis", "kind": "inclusion", "excluding": 0, "unknown": 0}
    assert [r["criterion"] for r in blockers(doc)][0] == "inc-ecog"  # most frequent first


def test_syndrome_rows_worst_grade_none_and_ungraded() -> None:
    crs = "Cytokine release syndrome"
    patients = [{"patient": "Patient/a", "adverseEvents": [{"term": crs, "grade": 1}, {"term": crs, "grade": 3}]},
                {"patient": "Patient/b", "adverseEvents": [{"term": crs, "grade": None}]},
                {"patient": "Patient/c", "adverseEvents": []}]
    rows = syndrome_rows(patients)
    assert [r["crs"]["worst"] for r in rows] == [3, None, 0] and [r["icans"]["worst"] for r in rows] == [0, 0, 0]


def test_number_formatting() -> None:
    assert (pct(0.75), pct(None), pct(0), pct(1)) == ("75.0 %", "n/e", "0.0 %", "100.0 %")
    assert (num(5000000.0), num(2.5), num(None), num(True), num(12345.678)) == ("5 000 000", "2.5", "–", "yes",
                                                                               "1.23e+04")
    assert (interval([0.19412, 0.993691]), interval(None), interval([0.1])) == ("19.4–99.4 %", "n/e", "n/e")


def test_plots_are_none_without_data() -> None:
    assert plots.funnel_png({"results": []}) is None and plots.criteria_png([]) is None
    assert plots.dose_png([{"patient": "Patient/a", "cellsPerKg": None}]) is None
    assert plots.swimmer_png([], {}) is None and plots.response_png({"orr": {"n": 0}}) is None
    assert plots.cir_png({"curve": [], "subjects": []}) is None and plots.kinetics_png({}, []) is None


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_writes_the_report(tmp_path: Path, treated_file: Path) -> None:
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli_app, ["report", str(treated_file), "--out", str(out), "--as-of", "2026-12-31",
                                          "--site-map", str(SITE_MAP)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 100_000 and "report written to" in result.output


def test_cli_options_reach_the_report_and_problems_are_listed(tmp_path: Path) -> None:
    bundle = treated_bundle()
    bundle["entry"].append({"resource": {"resourceType": "Observation", "id": "bad", "status": "final",
                                         "code": {"text": "x"}, "valueQuantity": {"value": "NOT-A-NUMBER"}}})
    source, out = tmp_path / "b.json", tmp_path / "r.html"
    source.write_text(json.dumps(bundle), encoding="utf-8")
    result = CliRunner().invoke(cli_app, ["report", str(source), "--out", str(out), "--as-of", "2026-12-31",
                                          "--site-map", str(SITE_MAP), "--comparators", "eln"])
    assert result.exit_code == 0, result.output
    assert "1 resource(s) skipped" in result.output and "NOT-A-NUMBER" not in result.output
    assert "response comparators: eln" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(("args", "code"), [
    (["report", "/no/such/bundle.json", "--out", "{out}"], 3),
    (["report", "{src}", "--out", "{tmp}/missing-dir/r.html", "--as-of", "2026-12-31"], 2),
    (["report", "{src}", "--out", "{out}", "--patient", "p1"], 2),
    (["report", "{src}", "--out", "{out}", "--as-of", "31/12/2026"], 2),
])
def test_cli_errors_have_documented_exit_codes(tmp_path: Path, treated_file: Path, args: list[str],
                                                code: int) -> None:
    filled = [a.format(out=tmp_path / "r.html", src=treated_file, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli_app, filled)
    assert result.exit_code == code, result.output
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------------------------------- coordinator page
TOKEN = "ui-test-token-0123456789"
NOW = 1_781_500_000.0  # 2026-06-15, a fixed clock


def _screening(pid: str, status: str, updated: float, **results: str) -> dict[str, Any]:
    criteria = {c: {"result": "met" if c.startswith("inc-") else "not-met", "evidence": [f"Patient/{pid}"],
                    "reason": f"reason of {c}"} for c in load_trial().criterion_ids}
    for cid, result in results.items():
        criteria[cid.replace("_", "-")]["result"] = result
    return coordinator.screening_view(f"Patient/{pid}", status, criteria, "2026-06-15", updated, "rules-x")


def _data() -> coordinator.MemoryData:
    rows = [_screening("c-old", "candidate", NOW - 500), _screening("c-new", "candidate", NOW - 10),
            _screening("i1", "ineligible", NOW - 100, inc_age="not-met"),
            _screening("u1", "potential-candidate", NOW - 50, inc_ecog="unknown")]
    rows[0]["criteria"]["inc-ecog"]["evidence"] = ["Observation/c-old-ecog", "javascript:alert(1)"]
    assessment = {"patient": "Patient/c-old", "dayZero": "2026-03-10", "cellsPerKg": 5e6, "doseWithinProtocol": True,
                  "infusions": [{"date": "2026-03-10", "cells": 3e8, "evidence": "MedicationAdministration/m1"}],
                  "assessments": [{"date": "2026-03-27", "day": 17, "response": "MLFS",
                                   "evidence": ["Observation/bm"]}],
                  "adverseEvents": [{"term": "Cytokine release syndrome", "grade": 3, "onset": "2026-03-12",
                                     "evidence": ["Condition/crs"]}],
                  "bestResponse": "MLFS", "remissionDate": "2026-03-27", "relapseDate": None}
    return coordinator.MemoryData(rows, {"Patient/c-old": assessment})


def _client(settings: Settings | None = None, data: Any = None, now: float = NOW) -> TestClient:
    app = FastAPI()
    settings = settings or Settings(api_token=TOKEN, ehr_base_url="https://ehr.example.org/fhir/")
    app.include_router(ui_router(settings, data if data is not None else _data(), clock=lambda: now))
    return TestClient(app, follow_redirects=False)


def _login(client: TestClient, token: str = TOKEN) -> Any:
    return client.post("/ui/login", content=f"token={token}",
                       headers={"content-type": "application/x-www-form-urlencoded"})


@pytest.fixture
def signed_in() -> Iterator[TestClient]:
    client = _client()
    assert _login(client).status_code == 303
    yield client


def test_pages_need_a_session() -> None:
    client = _client()
    for path in ("/ui", "/ui/", "/ui/patients/c-new"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    login = client.get("/ui/login")
    assert login.status_code == 200 and 'name="token" type="password"' in login.text and "<script" not in login.text


def test_login_sets_a_strict_httponly_cookie_and_never_puts_the_token_in_a_url() -> None:
    client = _client()
    wrong = _login(client, "not-the-token")
    assert wrong.status_code == 401 and "not accepted" in wrong.text and "set-cookie" not in wrong.headers
    ok = _login(client)
    assert ok.status_code == 303 and ok.headers["location"] == "/ui"
    cookie = ok.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/ui" in cookie and f"Max-Age={SESSION_SECONDS}" in cookie and "Secure" not in cookie
    assert TOKEN not in cookie and TOKEN not in ok.headers["location"]
    page = client.get("/ui")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    out = client.post("/ui/logout", content=f"csrf={csrf.group(1)}",
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert out.status_code == 303 and 'Max-Age=0' in out.headers["set-cookie"]


def test_the_cookie_is_secure_over_https() -> None:
    client = TestClient(_client().app, base_url="https://bridge.example", follow_redirects=False)
    assert "Secure" in _login(client).headers["set-cookie"]


def test_bearer_token_is_accepted_instead_of_a_cookie() -> None:
    client = _client()
    assert client.get("/ui", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/ui", headers={"authorization": "Bearer nope"}).status_code == 303
    assert client.get("/ui", headers={"authorization": f"Basic {TOKEN}"}).status_code == 303


def test_sessions_expire() -> None:
    now = [NOW]
    app = FastAPI()
    app.include_router(ui_router(Settings(api_token=TOKEN), _data(), clock=lambda: now[0]))
    client = TestClient(app, follow_redirects=False)
    assert _login(client).status_code == 303
    now[0] = NOW + SESSION_SECONDS
    assert client.get("/ui").status_code == 200
    now[0] = NOW + SESSION_SECONDS + 1
    assert client.get("/ui").status_code == 303


@given(st.text(min_size=1, max_size=60, alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF,
                                                                 exclude_characters=';,\\"')))
def test_a_made_up_session_never_signs_in(value: str) -> None:
    client = _client()
    answer = client.get("/ui", headers={"cookie": f"{COOKIE}={value}".encode("latin-1")})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"


def test_without_a_configured_token_the_page_is_disabled() -> None:
    client = _client(Settings(api_token=None))
    for answer in (client.get("/ui"), client.get("/ui/login"), _login(client, "anything")):
        assert answer.status_code == 503 and "api_token" in answer.text


def test_queue_groups_by_status_newest_first(signed_in: TestClient) -> None:
    page = signed_in.get("/ui").text
    order = [a["data-patient"] for _, a in tags(page) if a.get("data-patient")]
    assert order == ["c-new", "c-old", "u1", "i1"]
    groups = [a["id"] for _, a in tags(page) if (a.get("id") or "").startswith("status-")]
    assert groups == ["status-candidate", "status-potential-candidate", "status-ineligible"]
    assert re.search(r'data-patient="i1">.*?inc-age', page, re.S)
    only = signed_in.get("/ui", params={"status": "ineligible"}).text
    assert [a["data-patient"] for _, a in tags(only) if a.get("data-patient")] == ["i1"]
    bogus = signed_in.get("/ui", params={"status": "<x>"}).text
    assert len([a for _, a in tags(bogus) if a.get("data-patient")]) == 4 and "<x>" not in bogus


def test_patient_page_shows_every_verdict_with_linked_evidence(signed_in: TestClient) -> None:
    answer = signed_in.get("/ui/patients/c-old")
    assert answer.status_code == 200
    page = answer.text
    rows = {a["data-criterion"]: a["data-result"] for _, a in tags(page) if a.get("data-criterion")}
    assert list(rows) == list(load_trial().criterion_ids) and rows["inc-age"] == "met" and rows["exc-hiv"] == "not-met"
    assert "reason of inc-cardiac" in page and 'id="ruleset">rules-x' in page and 'id="as-of">2026-06-15' in page
    links = [a["href"] for t, a in tags(page) if t == "a" and (a.get("href") or "").startswith("https://")]
    assert "https://ehr.example.org/fhir/Observation/c-old-ecog" in links
    assert "https://ehr.example.org/fhir/Patient/c-old" in links
    assert not any("javascript" in (a.get("href") or "") for _, a in tags(page))  # not a reference: shown as text
    assert "javascript:alert(1)" in page and "<script" not in page


def test_treated_patient_has_an_assessment_timeline(signed_in: TestClient) -> None:
    page = signed_in.get("/ui/patients/c-old").text
    timeline = page[page.index('id="timeline"'):]
    kinds = re.findall(r"<td>(infusion|marrow assessment|adverse event)</td>", timeline)
    assert kinds == ["infusion", "adverse event", "marrow assessment"]  # by date: day 0, day 2, day 17
    assert "<td>17</td>" in timeline and "Cytokine release syndrome, grade 3" in timeline
    assert "5 ×10⁶ cells/kg (within protocol)" in page and 'id="best-response">MLFS' in page
    assert 'id="timeline"' not in signed_in.get("/ui/patients/c-new").text


def test_without_an_ehr_url_evidence_is_plain_text() -> None:
    client = _client(Settings(api_token=TOKEN))
    _login(client)
    page = client.get("/ui/patients/c-old").text
    assert "Observation/c-old-ecog" in page and "https://" not in page and "not links" in page


def test_unknown_or_malformed_patient_ids_are_not_found(signed_in: TestClient) -> None:
    assert signed_in.get("/ui/patients/nobody").status_code == 404
    assert signed_in.get("/ui/patients/a%20b").status_code == 404
    assert signed_in.get("/ui/patients/" + "x" * 65).status_code == 404


def test_security_headers_and_the_style_hash(signed_in: TestClient) -> None:
    answer = signed_in.get("/ui/patients/c-old")
    h = answer.headers
    assert h["cache-control"] == "no-store" and h["referrer-policy"] == "no-referrer"
    assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    (style,) = re.findall(r"<style>(.*?)</style>", answer.text, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in h["content-security-policy"]
    assert "default-src 'none'" in h["content-security-policy"] and "script-src" not in h["content-security-policy"]


def test_store_data_reads_the_state_store(tmp_path: Path) -> None:
    from bridge.state import ScreeningRecord
    from bridge.state.sqlite_state import SqliteState as SqliteStore

    store = SqliteStore(tmp_path / "state.sqlite3")
    try:
        verdicts = [{"criterion": "inc-age", "result": "met", "evidence": ["Patient/s1"], "reason": "age 40"},
                    {"criterion": "inc-ecog", "result": "unknown", "evidence": [], "reason": "no ECOG"}]
        store.save_screening(ScreeningRecord("s1", "potential-candidate", verdicts, "2026-06-15", NOW))
        client = _client(data=store)
        _login(client)
        assert [a["data-patient"] for _, a in tags(client.get("/ui").text) if a.get("data-patient")] == ["s1"]
        page = client.get("/ui/patients/s1").text
        rows = {a["data-criterion"]: a["data-result"] for _, a in tags(page) if a.get("data-criterion")}
        assert rows == {"inc-age": "met", "inc-ecog": "unknown"}
        assert "not recorded with this screening" in page  # the store keeps no rule-set version
    finally:
        store.close()


def test_criteria_map_accepts_both_shapes() -> None:
    listed = [{"criterion": "inc-age", "result": "met", "evidence": [], "reason": "x"}, {"result": "met"}, "junk"]
    assert coordinator.criteria_map(listed) == {"inc-age": {"result": "met", "evidence": [], "reason": "x"}}
    assert coordinator.criteria_map({"inc-age": {"result": "met"}, "bad": 1}) == {"inc-age": {"result": "met"}}
    assert coordinator.criteria_map(None) == {}
    assert coordinator.evidence_link("Observation/a.b-1", "https://e/fhir") == "https://e/fhir/Observation/a.b-1"
    assert coordinator.evidence_link("Observation/a/../b", "https://e/fhir") is None
    assert coordinator.evidence_link("Observation/a", None) is None
