"""Tests of bridge.evaluate.grading: CTCAE v5.0 lab grades, ASTCT 2019 CRS/ICANS, ICD grades, grade codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import InputError, MappingError
from bridge.evaluate import grading as g
from tests.shared import TRIAL

REPO = Path(__file__).resolve().parents[2]
SHARED_CTCAE = TRIAL / "ctcae-v5-lab-terms.json"

LAB_TERMS = [
    "Neutrophil count decreased",
    "Platelet count decreased",
    "Anemia",
    "Aspartate aminotransferase increased",
    "Alanine aminotransferase increased",
    "Blood bilirubin increased",
    "Creatinine increased",
]


# ------------------------------------------------------------------------------------------- the table


def test_packaged_table_has_the_seven_rules_terms_with_their_concepts() -> None:
    by_term = {t.term: t.concept for t in g.lab_terms()}
    assert by_term == {
        "Neutrophil count decreased": "anc",
        "Platelet count decreased": "platelets",
        "Anemia": "hemoglobin",
        "Aspartate aminotransferase increased": "ast",
        "Alanine aminotransferase increased": "alt",
        "Blood bilirubin increased": "bilirubin-total",
        "Creatinine increased": "creatinine",
    }


def test_table_units_are_the_canonical_units_of_concepts_yaml() -> None:
    concepts = yaml.safe_load((REPO / "mappings" / "concepts.yaml").read_text(encoding="utf-8"))["concepts"]
    for term in g.lab_terms():
        assert concepts[term.concept]["unit"] == term.unit, term.term


def test_every_term_has_a_source_note_and_the_ctcae_grading_system() -> None:
    for term in g.lab_terms():
        assert "CTCAE v5.0" in term.source
        assert term.grading_system == "CTCAE v5.0"


@pytest.mark.skipif(not SHARED_CTCAE.exists(), reason="shared CTCAE extract not beside the repository")
def test_term_names_and_wording_match_the_ctcae_extract() -> None:
    extract = {row["TERM"]: row for row in json.loads(SHARED_CTCAE.read_text(encoding="utf-8"))}
    for term in g.lab_terms():
        row = extract[term.term]
        assert term.direction == {"L": "low", "H": "high"}[row["DIRECTION"]]
        for rule in term.grades:
            assert rule.ctcae == row[f"GRADE_{rule.grade}"], (term.term, rule.grade)


def test_anemia_has_no_lab_grade_4_and_the_others_go_to_4() -> None:
    assert {t.term: t.max_grade for t in g.lab_terms()} == {
        name: 3 if name == "Anemia" else 4 for name in LAB_TERMS
    }


def test_grading_system_covers_every_term() -> None:
    assert {t for t, s in g.GRADING_SYSTEM.items() if s == "CTCAE v5.0"} == set(LAB_TERMS)
    assert g.GRADING_SYSTEM["Cytokine release syndrome"] == "ASTCT 2019"
    assert g.GRADING_SYSTEM["Immune effector cell-associated neurotoxicity syndrome"] == "ASTCT 2019"
    assert g.SYNDROME_TERM == {"crs": g.CRS_TERM, "icans": g.ICANS_TERM}


def test_term_for_and_lab_term_lookup() -> None:
    assert g.term_for("anc") == ["Neutrophil count decreased"]
    assert g.term_for("bilirubin-total") == ["Blood bilirubin increased"]
    assert g.term_for("lvef") == []
    assert g.lab_term("creatinine").term == "Creatinine increased"
    assert g.lab_term("anemia").concept == "hemoglobin"
    with pytest.raises(InputError):
        g.lab_term("Lymphocyte count decreased")


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "ctcae-v5.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _packaged_data() -> dict:
    return yaml.safe_load((REPO / "mappings" / "ctcae-v5.yaml").read_text(encoding="utf-8"))


def test_schema_problems_are_all_reported_at_once_with_paths(tmp_path: Path) -> None:
    data = _packaged_data()
    data["terms"][0]["direction"] = "sideways"
    data["terms"][1]["grades"][1]["arms"][0]["op"] = ">"  # a falling count compared upwards
    del data["terms"][3]["source"]
    data["terms"][6]["grades"][0]["arms"][0]["limit"] = -1
    with pytest.raises(MappingError) as info:
        g.load_lab_terms(_write(tmp_path, data))
    paths = {issue.expression[0] for issue in info.value.issues}
    expected = [
        "$.terms[0].direction",
        "$.terms[1].grades[1].arms[0].op",
        "$.terms[3]",
        "$.terms[6].grades[0].arms[0].limit",
    ]
    assert {f"ctcae-v5.yaml:{path}" for path in expected} <= paths
    assert info.value.exit_code == 4
    for path in expected:
        assert path in info.value.message


def test_semantic_problems_duplicate_term_and_unordered_grades(tmp_path: Path) -> None:
    data = _packaged_data()
    data["terms"][1]["term"] = data["terms"][0]["term"]
    data["terms"][2]["grades"].reverse()
    with pytest.raises(MappingError) as info:
        g.load_lab_terms(_write(tmp_path, data))
    assert [i.expression for i in info.value.issues] == [
        ("ctcae-v5.yaml:$.terms[1].term",),
        ("ctcae-v5.yaml:$.terms[2].grades",),
    ]


def test_unreadable_and_malformed_tables_are_mapping_errors(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read"):
        g.load_lab_terms(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("terms: [\n  - {", encoding="utf-8")
    with pytest.raises(MappingError, match="not valid YAML"):
        g.load_lab_terms(bad)
    with pytest.raises(MappingError, match="has 1 problem"):
        g.load_lab_terms(_write(tmp_path, ["not", "a", "mapping"]))


def test_the_packaged_table_loads_through_the_public_loader() -> None:
    assert [t.term for t in g.load_lab_terms()] == LAB_TERMS


# ------------------------------------------------------------------------------------------- lab grades

# (term/concept, value, lln, uln, baseline, expected grade)
BOUNDARIES = [
    # Neutrophil count decreased, LLN 1.8 x10^9/L
    ("anc", 1.8, 1.8, None, None, 0),
    ("anc", 1.79, 1.8, None, None, 1),
    ("anc", 1.5, 1.8, None, None, 1),
    ("anc", 1.49, 1.8, None, None, 2),
    ("anc", 1.0, 1.8, None, None, 2),
    ("anc", 0.99, 1.8, None, None, 3),
    ("anc", 0.5, 1.8, None, None, 3),
    ("anc", 0.49, 1.8, None, None, 4),
    ("anc", 0.0, 1.8, None, None, 4),
    ("anc", 1.3, 1.2, None, None, 2),  # absolute arm applies whatever the laboratory's LLN
    # Platelet count decreased, LLN 150
    ("platelets", 150.0, 150.0, None, None, 0),
    ("platelets", 149.9, 150.0, None, None, 1),
    ("platelets", 75.0, 150.0, None, None, 1),
    ("platelets", 74.9, 150.0, None, None, 2),
    ("platelets", 50.0, 150.0, None, None, 2),
    ("platelets", 49.9, 150.0, None, None, 3),
    ("platelets", 25.0, 150.0, None, None, 3),
    ("platelets", 24.9, 150.0, None, None, 4),
    # Anemia, LLN 12.0 g/dL; no lab grade 4
    ("hemoglobin", 12.0, 12.0, None, None, 0),
    ("hemoglobin", 11.9, 12.0, None, None, 1),
    ("hemoglobin", 10.0, 12.0, None, None, 1),
    ("hemoglobin", 9.99, 12.0, None, None, 2),
    ("hemoglobin", 8.0, 12.0, None, None, 2),
    ("hemoglobin", 7.99, 12.0, None, None, 3),
    ("hemoglobin", 3.0, 12.0, None, None, 3),
    # AST, normal baseline (unknown), ULN 40 U/L
    ("ast", 40.0, None, 40.0, None, 0),
    ("ast", 40.1, None, 40.0, None, 1),
    ("ast", 120.0, None, 40.0, None, 1),
    ("ast", 120.1, None, 40.0, None, 2),
    ("ast", 200.0, None, 40.0, None, 2),
    ("ast", 200.1, None, 40.0, None, 3),
    ("ast", 800.0, None, 40.0, None, 3),
    ("ast", 800.1, None, 40.0, None, 4),
    # ALT, normal baseline (known, exactly at the ULN still counts as normal)
    ("alt", 40.0, None, 40.0, 40.0, 0),
    ("alt", 40.1, None, 40.0, 40.0, 1),
    ("alt", 120.0, None, 40.0, 20.0, 1),
    ("alt", 120.1, None, 40.0, 20.0, 2),
    ("alt", 200.0, None, 40.0, 20.0, 2),
    ("alt", 200.1, None, 40.0, 20.0, 3),
    ("alt", 800.0, None, 40.0, 20.0, 3),
    ("alt", 800.1, None, 40.0, 20.0, 4),
    # AST, abnormal baseline 60 (> ULN 40): x baseline arms, grade 1 from 1.5 x baseline inclusive
    ("ast", 50.0, None, 40.0, 60.0, 0),
    ("ast", 89.9, None, 40.0, 60.0, 0),
    ("ast", 90.0, None, 40.0, 60.0, 1),
    ("ast", 180.0, None, 40.0, 60.0, 1),
    ("ast", 180.1, None, 40.0, 60.0, 2),
    ("ast", 300.0, None, 40.0, 60.0, 2),
    ("ast", 300.1, None, 40.0, 60.0, 3),
    ("ast", 1200.0, None, 40.0, 60.0, 3),
    ("ast", 1200.1, None, 40.0, 60.0, 4),
    # ALT, abnormal baseline
    ("alt", 90.0, None, 40.0, 60.0, 1),
    ("alt", 1200.1, None, 40.0, 60.0, 4),
    # Blood bilirubin, normal baseline, ULN 1.2 mg/dL (1.5 x 1.2 is 1.7999999999999998 in floating point)
    ("bilirubin-total", 1.2, None, 1.2, None, 0),
    ("bilirubin-total", 1.21, None, 1.2, None, 1),
    ("bilirubin-total", 1.8, None, 1.2, None, 1),
    ("bilirubin-total", 1.81, None, 1.2, None, 2),
    ("bilirubin-total", 3.6, None, 1.2, 1.0, 2),
    ("bilirubin-total", 3.61, None, 1.2, 1.0, 3),
    ("bilirubin-total", 12.0, None, 1.2, 1.0, 3),
    ("bilirubin-total", 12.01, None, 1.2, 1.0, 4),
    # Blood bilirubin, abnormal baseline 2.0 (> ULN 1.2): grade 1 is > 1.0 x baseline
    ("bilirubin-total", 2.0, None, 1.2, 2.0, 0),
    ("bilirubin-total", 2.01, None, 1.2, 2.0, 1),
    ("bilirubin-total", 3.0, None, 1.2, 2.0, 1),
    ("bilirubin-total", 3.01, None, 1.2, 2.0, 2),
    ("bilirubin-total", 6.0, None, 1.2, 2.0, 2),
    ("bilirubin-total", 6.01, None, 1.2, 2.0, 3),
    ("bilirubin-total", 20.0, None, 1.2, 2.0, 3),
    ("bilirubin-total", 20.01, None, 1.2, 2.0, 4),
    # Creatinine, x ULN arms only (no baseline), ULN 1.1 mg/dL
    ("creatinine", 1.1, None, 1.1, None, 0),
    ("creatinine", 1.11, None, 1.1, None, 1),
    ("creatinine", 1.65, None, 1.1, None, 1),
    ("creatinine", 1.66, None, 1.1, None, 2),
    ("creatinine", 3.3, None, 1.1, None, 2),
    ("creatinine", 3.31, None, 1.1, None, 3),
    ("creatinine", 6.6, None, 1.1, None, 3),
    ("creatinine", 6.61, None, 1.1, None, 4),
    # Creatinine "or" arms, baseline 0.5: the x baseline arms apply even below the ULN
    ("creatinine", 0.75, None, 1.1, 0.5, 0),
    ("creatinine", 0.76, None, 1.1, 0.5, 2),
    ("creatinine", 1.5, None, 1.1, 0.5, 2),
    ("creatinine", 1.51, None, 1.1, 0.5, 3),  # baseline arm (G3) beats the ULN arm (G1)
    ("creatinine", 4.0, None, 1.1, 2.0, 3),  # ULN arm (G3) beats the baseline arm (G2)
    ("creatinine", 7.0, None, 1.1, 2.0, 4),  # only the ULN arm reaches grade 4
    ("creatinine", 7.0, None, 1.1, 0.5, 4),
    # By term name as well as by concept key
    ("Neutrophil count decreased", 0.3, 1.8, None, None, 4),
    ("Creatinine increased", 2.0, None, 1.1, None, 2),
]


@pytest.mark.parametrize(("term", "value", "lln", "uln", "baseline", "expected"), BOUNDARIES)
def test_grade_lab_boundaries(
    term: str, value: float, lln: float | None, uln: float | None, baseline: float | None, expected: int
) -> None:
    assert g.grade_lab(term, value, lln, uln, baseline) == expected


@pytest.mark.parametrize(
    ("term", "value", "lln", "uln", "baseline", "expected"),
    [
        # LLN missing: decided by the absolute arms when they give a grade, else ungradable
        ("anc", 1.49, None, None, None, 2),
        ("anc", 0.3, None, None, None, 4),
        ("anc", 1.5, None, None, None, None),
        ("anc", 2.5, None, None, None, None),
        ("platelets", 80.0, None, None, None, None),
        ("hemoglobin", 9.0, None, None, None, 2),
        ("hemoglobin", 11.0, None, None, None, None),
        # ULN missing: AST/ALT/bilirubin and creatinine are always ungradable
        ("ast", 100.0, None, None, None, None),
        ("ast", 1000.0, None, None, 60.0, None),  # baseline known, but is it abnormal? no ULN to tell
        ("alt", 30.0, None, None, None, None),
        ("bilirubin-total", 5.0, None, None, None, None),
        ("creatinine", 2.0, None, None, 0.5, None),
        ("creatinine", 0.5, None, None, None, None),
        # unusable numbers count as missing
        ("anc", 2.5, 0.0, None, None, None),
        ("ast", 100.0, None, -40.0, None, None),
        ("ast", 100.0, None, math.nan, None, None),
        ("anc", None, 1.8, None, None, None),
        ("anc", math.nan, 1.8, None, None, None),
        ("ast", math.inf, None, 40.0, None, None),
        # a baseline of 0 is unusable: treated as unknown (normal) rather than a x0 threshold
        ("creatinine", 1.0, None, 1.1, 0.0, 0),
    ],
)
def test_grade_lab_missing_limits(
    term: str,
    value: float | None,
    lln: float | None,
    uln: float | None,
    baseline: float | None,
    expected: int | None,
) -> None:
    assert g.grade_lab(term, value, lln, uln, baseline) == expected


def test_grade_lab_unknown_term_is_an_input_error() -> None:
    with pytest.raises(InputError):
        g.grade_lab("lvef", 40.0, None, None, None)


_limit = st.floats(min_value=0.01, max_value=1000.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    term=st.sampled_from(LAB_TERMS),
    values=st.tuples(st.floats(0.0, 30000.0), st.floats(0.0, 30000.0)),
    lln=_limit,
    uln=_limit,
    baseline=st.one_of(st.none(), _limit),
)
def test_grade_lab_is_monotone_away_from_normal(
    term: str, values: tuple[float, float], lln: float, uln: float, baseline: float | None
) -> None:
    low, high = sorted(values)
    grade_low = g.grade_lab(term, low, lln, uln, baseline)
    grade_high = g.grade_lab(term, high, lln, uln, baseline)
    assert grade_low is not None and grade_high is not None  # every limit given: always gradable
    max_grade = g.lab_term(term).max_grade
    assert 0 <= grade_low <= max_grade and 0 <= grade_high <= max_grade
    if g.lab_term(term).direction == "low":
        assert grade_low >= grade_high
    else:
        assert grade_low <= grade_high


@pytest.mark.parametrize(
    ("term", "value", "uln", "expected"),
    [
        ("ast", 30.0, 40.0, 0),  # <= ULN: grade 0 over any baseline
        ("ast", 40.0, 40.0, 0),
        ("ast", 50.0, 40.0, None),  # G1 over a normal baseline, G0 over an abnormal one
        ("ast", 160.0, 40.0, None),
        ("ast", 2000.0, 40.0, None),  # G4 over a normal baseline, 1-4 over an abnormal one
        ("bilirubin-total", 1.0, 1.2, 0),
        ("bilirubin-total", 2.0, 1.2, None),
        ("creatinine", 1.0, 1.1, None),  # the x baseline arms could hold for a small enough baseline
        ("anc", 0.4, None, 4),  # not baseline-aware: graded as ever
        ("platelets", 60.0, None, 2),
        ("ast", 160.0, None, None),  # and no ULN: ungradable anyway
    ],
)
def test_grade_lab_with_a_baseline_that_is_not_usable(term: str, value: float, uln: float | None,
                                                      expected: int | None) -> None:
    assert g.grade_lab(term, value, 1.0, uln, None, baseline_unknown=True) == expected
    assert g.grade_lab(term, value, 1.0, uln, 12345.0, baseline_unknown=True) == expected  # the value is ignored


@settings(max_examples=300, deadline=None)
@given(
    term=st.sampled_from(LAB_TERMS),
    value=st.floats(0.0, 30000.0),
    uln=_limit,
    baseline=_limit,
)
def test_an_unknown_baseline_grades_only_what_every_baseline_grades(term: str, value: float, uln: float,
                                                                    baseline: float) -> None:
    unknown = g.grade_lab(term, value, 1.8, uln, None, baseline_unknown=True)
    if unknown is not None:  # decided: then any actual baseline gives the same grade
        assert g.grade_lab(term, value, 1.8, uln, baseline) == unknown
        assert g.grade_lab(term, value, 1.8, uln, None) == unknown


# ------------------------------------------------------------------------------------------- CRS


@pytest.mark.parametrize(
    ("fever", "hypotension", "hypoxia", "expected"),
    [
        (True, "none", "none", 1),
        (True, None, None, 1),
        (True, "no-pressor", "none", 2),
        (True, "none", "low-flow", 2),
        (True, "no-pressor", "low-flow", 2),
        (True, "one-pressor", "none", 3),
        (True, "none", "high-flow", 3),
        (True, "one-pressor", "low-flow", 3),
        (True, "no-pressor", "high-flow", 3),
        (True, "multi-pressor", "none", 4),
        (True, "none", "positive-pressure", 4),
        (True, "no-pressor", "positive-pressure", 4),
        (True, "multi-pressor", "low-flow", 4),
        (False, "none", "none", 0),
        (False, "multi-pressor", "positive-pressure", 0),  # no fever, no CRS by derivation
        (None, "none", "none", None),
        (None, "one-pressor", "high-flow", None),
    ],
)
def test_grade_crs_table(
    fever: bool | None, hypotension: g.Hypotension | None, hypoxia: g.Hypoxia | None, expected: int | None
) -> None:
    assert g.grade_crs(fever, hypotension, hypoxia) == expected


@pytest.mark.parametrize(
    ("fever", "hypotension", "hypoxia", "expected"),
    [
        (False, "one-pressor", "none", 3),
        (None, "none", "positive-pressure", 4),
        (False, "none", "none", 0),
        (True, "none", "low-flow", 2),
    ],
)
def test_grade_crs_established_fever_masked(
    fever: bool | None, hypotension: g.Hypotension, hypoxia: g.Hypoxia, expected: int
) -> None:
    assert g.grade_crs(fever, hypotension, hypoxia, established=True) == expected


def test_grade_crs_rejects_unknown_levels() -> None:
    with pytest.raises(InputError, match="hypotension"):
        g.grade_crs(True, "two-pressors", "none")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="hypoxia"):
        g.grade_crs(True, "none", "ecmo")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("celsius", "expected"),
    [(38.0, True), (39.4, True), (37.95, False), (36.6, False), (None, None), (math.nan, None)],
)
def test_fever_from_temperature(celsius: float | None, expected: bool | None) -> None:
    assert g.fever_from_temperature(celsius) is expected


@pytest.mark.parametrize(
    ("flow", "positive_pressure", "device", "expected"),
    [
        (None, None, None, None),
        (None, False, None, None),
        (0.0, False, None, "none"),
        (2.0, None, None, "low-flow"),
        (6.0, None, None, "low-flow"),
        (6.01, None, None, "high-flow"),
        (15.0, False, None, "high-flow"),
        (None, True, None, "positive-pressure"),
        (3.0, True, None, "positive-pressure"),
        (4.0, None, "facemask", "high-flow"),
        (8.0, None, "nasal-cannula", "high-flow"),
        (2.0, None, "nasal-cannula", "low-flow"),
        (None, None, "blow-by", "low-flow"),
        (None, None, "non-rebreather", "high-flow"),
        (None, None, "venturi-mask", "high-flow"),
        (None, None, "high-flow-nasal-cannula", "high-flow"),
        (None, None, "bipap", "positive-pressure"),
        (None, False, "mechanical-ventilation", "positive-pressure"),
        (None, None, "room-air", "none"),
    ],
)
def test_hypoxia_from_oxygen(
    flow: float | None, positive_pressure: bool | None, device: g.OxygenDevice | None, expected: str | None
) -> None:
    assert g.hypoxia_from_oxygen(flow, positive_pressure, device=device) == expected


def test_hypoxia_from_oxygen_rejects_impossible_input() -> None:
    with pytest.raises(InputError):
        g.hypoxia_from_oxygen(-1.0, None)
    with pytest.raises(InputError):
        g.hypoxia_from_oxygen(None, None, device="ecmo")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hypotension", "pressors", "expected"),
    [
        (True, 0, "no-pressor"),
        (True, None, "no-pressor"),
        (None, 1, "one-pressor"),
        (True, 1, "one-pressor"),
        (False, 2, "multi-pressor"),
        (None, 3, "multi-pressor"),
        (False, 0, "none"),
        (False, None, "none"),
        (None, 0, None),
        (None, None, None),
    ],
)
def test_hypotension_from_vasopressors(
    hypotension: bool | None, pressors: int | None, expected: str | None
) -> None:
    assert g.hypotension_from_vasopressors(hypotension, pressors) == expected


def test_hypotension_from_vasopressors_rejects_negative_counts() -> None:
    with pytest.raises(InputError):
        g.hypotension_from_vasopressors(True, -1)


def test_crs_helpers_compose() -> None:
    hypotension = g.hypotension_from_vasopressors(True, 1)
    hypoxia = g.hypoxia_from_oxygen(4.0, False)
    assert g.grade_crs(g.fever_from_temperature(39.1), hypotension, hypoxia) == 3


# ------------------------------------------------------------------------------------------- ICANS


@pytest.mark.parametrize(
    ("ice", "expected"), [(10, 0), (9, 1), (7, 1), (6, 2), (3, 2), (2, 3), (1, 3), (0, 3)]
)
def test_icans_ice_score(ice: int, expected: int) -> None:
    assert g.grade_icans(ice_score=ice) == expected


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)])
def test_icans_consciousness_code_is_its_grade(code: int, expected: int) -> None:
    assert g.grade_icans(consciousness=code) == expected
    assert code in g.CONSCIOUSNESS_CODES


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"seizure": "none"}, 0),
        ({"seizure": "rapidly-resolving"}, 3),
        ({"seizure": "life-threatening"}, 4),
        ({"motor_weakness": False}, 0),
        ({"motor_weakness": True}, 4),
        ({"cerebral_edema": "none"}, 0),
        ({"cerebral_edema": "focal"}, 3),
        ({"cerebral_edema": "diffuse"}, 4),
        ({"ice_score": 0, "consciousness": 4}, 4),  # ICE 0 because unarousable
        ({"ice_score": 0, "consciousness": 0}, 3),  # ICE 0 but awake (global aphasia)
        ({"ice_score": 3, "seizure": "rapidly-resolving"}, 3),  # ASTCT's own example
        ({"ice_score": 8, "consciousness": 2}, 2),
        ({"ice_score": 5, "cerebral_edema": "diffuse", "motor_weakness": False}, 4),
        (
            {
                "ice_score": 10,
                "consciousness": 0,
                "seizure": "none",
                "motor_weakness": False,
                "cerebral_edema": "none",
            },
            0,
        ),
        ({}, None),
    ],
)
def test_icans_domains_most_severe_wins(kwargs: dict, expected: int | None) -> None:
    assert g.grade_icans(**kwargs) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ice_score": 11},
        {"ice_score": -1},
        {"consciousness": 5},
        {"seizure": "status"},
        {"cerebral_edema": "global"},
    ],
)
def test_icans_rejects_impossible_input(kwargs: dict) -> None:
    with pytest.raises(InputError):
        g.grade_icans(**kwargs)


def test_icans_errors_do_not_carry_the_value() -> None:
    with pytest.raises(InputError) as info:
        g.grade_icans(ice_score=37)
    assert "37" not in info.value.message


# ------------------------------------------------------------------------------------------- ICD-10-CM


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("D89.831", ("crs", 1)),
        ("D89.832", ("crs", 2)),
        ("D89.833", ("crs", 3)),
        ("D89.834", ("crs", 4)),
        ("D89.835", ("crs", 5)),
        ("D89.839", ("crs", None)),
        ("D89.83", ("crs", None)),
        ("G92.01", ("icans", 1)),
        ("G92.02", ("icans", 2)),
        ("G92.03", ("icans", 3)),
        ("G92.04", ("icans", 4)),
        ("G92.05", ("icans", 5)),
        ("G92.00", ("icans", None)),
        ("G92.0", ("icans", None)),
        ("d89.833", ("crs", 3)),
        ("D89833", ("crs", 3)),
        ("d89834", ("crs", 4)),
        ("g92.02", ("icans", 2)),
        ("G9204", ("icans", 4)),
        (" G92.03 ", ("icans", 3)),
        ("D89.830", None),
        ("D89.836", None),
        ("G92.06", None),
        ("G92.8", None),
        ("G92", None),
        ("D89.8", None),
        ("C92.0", None),
        ("", None),
    ],
)
def test_grade_from_icd(code: str, expected: tuple[str, int | None] | None) -> None:
    assert g.grade_from_icd(code) == expected


# ------------------------------------------------------------------------------------------- codes


def test_grade_codes_are_the_nci_thesaurus_codes_of_rules_section_5() -> None:
    assert {grade: c.code for grade, c in g.GRADE_CODES.items()} == {
        1: "C41338",
        2: "C41339",
        3: "C41340",
        4: "C41337",
        5: "C48275",
    }
    assert [g.GRADE_CODES[i].tag for i in range(1, 6)] == ["[V]", "[V]", "[R]", "[R]", "[R]"]
    assert g.grade_code(3).display == "Grade 3 Severe Adverse Event"
    assert g.NCIT_SYSTEM == "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"


@pytest.mark.parametrize(
    ("grade", "severity"), [(1, "mild"), (2, "moderate"), (3, "severe"), (4, "severe"), (5, "severe")]
)
def test_severity_for(grade: int, severity: str) -> None:
    assert g.severity_for(grade) == severity


@pytest.mark.parametrize("grade", [0, 6, -1])
def test_grade_outside_1_to_5_has_no_code_or_severity(grade: int) -> None:
    with pytest.raises(InputError):
        g.severity_for(grade)
    with pytest.raises(InputError):
        g.grade_code(grade)


def test_public_api() -> None:
    for name in g.__all__:
        assert hasattr(g, name), name
