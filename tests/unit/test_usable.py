"""Usable values (RULES.md §3): plausible ranges, qualitative tests, units, reference ranges, undated values —
each read from FHIR JSON through normalize and judged by the eligibility rules in three-valued logic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.errors import MappingError
from bridge.evaluate.eligibility import screen
from bridge.ingest.readers import Entry
from bridge.model import Quantity
from bridge.normalize.mappings import load_code_map
from bridge.normalize.patients import assemble
from tests.factories import OPTS

LOINC = "http://loinc.org"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
CMAP = load_code_map()
_n = 0


def obs(code: str, *, value: dict[str, Any] | None = None, days: int = 2, interp: str | None = None,
        rng: dict[str, Any] | None = None, dated: bool = True, **extra: Any) -> dict[str, Any]:
    global _n
    _n += 1
    res: dict[str, Any] = {"resourceType": "Observation", "id": f"o{_n}", "status": "final",
                           "code": {"coding": [{"system": LOINC, "code": code}]},
                           "subject": {"reference": "Patient/p1"}}
    if dated:
        res["effectiveDateTime"] = f"2026-06-{15 - days:02d}T08:00:00Z"
    if value is not None:
        res["valueQuantity"] = value
    if interp:
        res["interpretation"] = [{"coding": [{"system": V3, "code": interp}]}]
    if rng:
        res["referenceRange"] = [rng]
    res.update(extra)
    return res


def qty(value: float, code: str | None = None, unit: str | None = None, comparator: str | None = None
        ) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value}
    if code is not None:
        out.update(system=UCUM, code=code)
    if unit is not None:
        out["unit"] = unit
    if comparator:
        out["comparator"] = comparator
    return out


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1990-01-01"}


def verdicts(*resources: dict[str, Any], sex: str = "female", cmap: Any = CMAP) -> dict[str, Any]:
    items = [Entry({**PATIENT, "gender": sex}, "t[0]")] + [Entry(r, f"t[{i}]") for i, r in enumerate(resources, 1)]
    patients, report = assemble(items, cmap)
    assert not report.skipped, report.lines()
    (pf,) = patients
    return {v.criterion: v for v in screen(pf, OPTS, cmap.uln).verdicts}


def facts(resource: dict[str, Any]) -> list[Any]:
    patients, _ = assemble([Entry(PATIENT, "t[0]"), Entry(resource, "t[1]")], CMAP)
    return patients[0].facts


# ------------------------------------------------------------------ qualitative tests
HCG = "2106-3"
HBSAG, HBV_DNA, HCV_AB, HCV_RNA, HIV = "5196-1", "29615-2", "16128-1", "11011-4", "56888-1"


@pytest.mark.parametrize(("value", "expected"), [
    (qty(2, "m[IU]/mL"), "not-met"),          # 2 mIU/mL is negative, not "any number above 0"
    (qty(2, unit="mIU/mL"), "not-met"),       # written as text: the same international unit
    (qty(4.9, "[IU]/L"), "not-met"),
    (qty(5, "[IU]/L"), "unknown"),            # equivocal 5-25
    (qty(24.9, "m[IU]/mL"), "unknown"),
    (qty(25, "[IU]/L"), "met"),
    (qty(300, unit="IU/L"), "met"),
    (qty(5, "[IU]/L", comparator="<"), "not-met"),
    (qty(3, "g/L"), "unknown"),               # not an hCG unit: not usable
    (qty(-1, "[IU]/L"), "unknown"),           # implausible
])
def test_hcg_number_read_against_its_cut_offs(value: dict[str, Any], expected: str) -> None:
    assert verdicts(obs(HCG, value=value))["exc-pregnancy"].result == expected


def test_interpretation_is_read_before_the_value() -> None:
    assert verdicts(obs(HCG, value=qty(2, "m[IU]/mL"), interp="POS"))["exc-pregnancy"].result == "met"
    assert verdicts(obs(HCG, value=qty(300, "m[IU]/mL"), interp="NEG"))["exc-pregnancy"].result == "not-met"
    assert verdicts(obs(HCG, value=qty(300, "m[IU]/mL"), interp="IND"))["exc-pregnancy"].result == "unknown"
    assert verdicts(obs(HCG, interp="E"))["exc-pregnancy"].result == "unknown"


def test_coded_answer_is_read_before_a_number() -> None:
    res = obs(HCG, value=qty(300, "m[IU]/mL"))
    res["valueCodeableConcept"] = {"coding": [{"system": LOINC, "code": "LA6577-6"}]}
    del res["valueQuantity"]
    assert verdicts(res)["exc-pregnancy"].result == "not-met"


HCV_NEG = obs(HCV_AB, interp="NEG")


@pytest.mark.parametrize(("value", "expected"), [
    (qty(0.35, "{s_co_ratio}"), "not-met"),   # an index of 0.35 is negative, not positive
    (qty(0.99, "{COI}"), "not-met"),
    (qty(1.0, "{index}"), "met"),
    (qty(12.4, "1"), "met"),
    (qty(0.2), "not-met"),                    # no unit: an index
    (qty(0.2, "[IU]/mL"), "unknown"),         # another unit: not usable
    (qty(-0.1, "{index}"), "unknown"),        # implausible
])
def test_hbsag_index(value: dict[str, Any], expected: str) -> None:
    assert verdicts(obs(HBSAG, value=value), HCV_NEG)["exc-hepatitis"].result == expected


def test_hiv_index_and_interpretations() -> None:
    assert verdicts(obs(HIV, value=qty(0.1, "{s_co_ratio}")))["exc-hiv"].result == "not-met"
    assert verdicts(obs(HIV, value=qty(3.0, "{s_co_ratio}")))["exc-hiv"].result == "met"
    assert verdicts(obs(HIV, interp="A"))["exc-hiv"].result == "met"
    assert verdicts(obs(HIV, interp="N"))["exc-hiv"].result == "not-met"
    assert verdicts(obs(HIV, interp="IND"))["exc-hiv"].result == "unknown"


def test_hcv_rna_number_is_not_usable() -> None:
    ab_pos = obs(HCV_AB, interp="POS")
    v = verdicts(obs(HBSAG, interp="NEG"), ab_pos, obs(HCV_RNA, value=qty(0, "[IU]/mL")))["exc-hepatitis"]
    assert v.result == "unknown"
    v = verdicts(obs(HBSAG, interp="NEG"), ab_pos, obs(HCV_RNA, interp="ND"))["exc-hepatitis"]
    assert v.result == "not-met"


# ------------------------------------------------------------------ HBV DNA units
HBV_CLEAN = (obs(HBSAG, interp="NEG"), obs(HCV_AB, interp="NEG"))


@pytest.mark.parametrize(("value", "interp", "expected"), [
    (qty(2000, "[IU]/mL"), None, "met"),
    (qty(2000, unit="IU/mL"), None, "met"),       # IU as unit text: [IU], not the enzyme unit
    (qty(2, unit="kIU/mL"), None, "met"),
    (qty(500, unit="IU/mL"), None, "not-met"),
    (qty(20000, unit="copies/mL"), None, "unknown"),  # assay-dependent: not usable, never dropped
    (qty(20, unit="copies/mL"), None, "unknown"),
    (None, "DET", "unknown"),                     # detected, not quantified
    (None, "ND", "not-met"),                      # not detected is below the threshold
])
def test_hbv_dna(value: dict[str, Any] | None, interp: str | None, expected: str) -> None:
    v = verdicts(obs(HBV_DNA, value=value, interp=interp), *HBV_CLEAN)["exc-hepatitis"]
    assert v.result == expected
    if expected == "unknown":
        assert v.evidence and all(e.startswith("Observation/") for e in v.evidence)


def test_positive_hbsag_stays_met_beside_an_unconvertible_hbv_dna() -> None:
    v = verdicts(obs(HBSAG, interp="POS"), obs(HBV_DNA, value=qty(10, unit="copies/mL")))["exc-hepatitis"]
    assert v.result == "met"


# ------------------------------------------------------------------ plausibility
LVEF, AST, ALT, BILI, ECOG = "10230-1", "1920-8", "1742-6", "1975-2", "89247-1"


def test_lvef_55_with_unit_1_is_implausible_not_5500_percent() -> None:
    (f,) = facts(obs(LVEF, value=qty(55, "1")))
    assert f.value is None and "plausible" in (f.problem or "") and "55" not in (f.problem or "")
    assert verdicts(obs(LVEF, value=qty(55, "1")))["inc-cardiac"].result == "unknown"
    assert verdicts(obs(LVEF, value=qty(0.55, "1")))["inc-cardiac"].result == "met"


def organ(ast: dict[str, Any], alt: dict[str, Any] | None = None, bili: dict[str, Any] | None = None,
          **kw: Any) -> Any:
    return verdicts(obs(AST, value=ast, **kw), obs(ALT, value=alt or qty(20, "U/L")),
                    obs(BILI, value=bili or qty(0.5, "mg/dL")))["inc-organ-function"]


def test_negative_ast_or_bilirubin_is_not_usable() -> None:
    v = organ(qty(-30, "U/L"))
    assert v.result == "unknown" and "-0.75" not in v.reason and "-30" not in v.reason
    assert organ(qty(30, "U/L"), bili=qty(-0.5, "mg/dL")).result == "unknown"
    assert organ(qty(30, "U/L")).result == "met"


def test_cd7_1e12_percent_is_not_met_nor_met() -> None:
    res = obs("x", value=qty(1e12, "%"))
    res["code"] = {"coding": [{"system": "http://hospital.example.org/lab", "code": "FC-CD7"}]}
    cmap = load_code_map(Path(__file__).parents[2] / "samples" / "site-map.yaml")
    assert verdicts(res, cmap=cmap)["inc-cd7-expression"].result == "unknown"


def test_reference_range_high_zero_never_divides_and_uses_the_default() -> None:
    v = organ(qty(30, "U/L"), rng={"high": qty(0, "U/L")})
    assert v.result == "met"
    assert "configured default" in v.reason and "not usable" in v.reason
    v = organ(qty(30, "U/L"), rng={"high": qty(-5, "U/L")})
    assert v.result == "met"
    v = organ(qty(300, "U/L"), rng={"high": qty(40, "mmol")})  # unconvertible: default 40 -> 7.5x ULN
    assert v.result == "not-met"


def test_newer_implausible_ast_makes_organ_function_unknown_not_met_from_older() -> None:
    old = obs(AST, value=qty(30, "U/L"), days=10)
    new = obs(AST, value=qty(-3, "U/L"), days=1)
    v = verdicts(old, new, obs(ALT, value=qty(20, "U/L")), obs(BILI, value=qty(0.5, "mg/dL")))["inc-organ-function"]
    assert v.result == "unknown" and new["id"] in v.reason


def test_older_implausible_ast_beside_a_newer_usable_one_does_not_matter() -> None:
    old = obs(AST, value=qty(-3, "U/L"), days=10)
    new = obs(AST, value=qty(30, "U/L"), days=1)
    v = verdicts(old, new, obs(ALT, value=qty(20, "U/L")), obs(BILI, value=qty(0.5, "mg/dL")))["inc-organ-function"]
    assert v.result == "met"


@pytest.mark.parametrize("value", [{"valueInteger": 7}, {"valueInteger": -1},
                                   {"valueQuantity": {"value": 2.5}}])
def test_ecog_outside_integer_0_5_is_unknown(value: dict[str, Any]) -> None:
    res = obs(ECOG, **value)
    assert verdicts(res)["inc-ecog"].result == "unknown"


def test_undated_value_is_unknown_not_absent() -> None:
    # an undated ECOG of 4 could be today's: the older ECOG 1 cannot make the criterion met
    old = obs(ECOG, valueInteger=1, days=5)
    undated = obs(ECOG, valueInteger=4, dated=False)
    (f,) = facts(undated)
    assert not f.usable and "no date" in (f.problem or "")
    assert verdicts(old, undated)["inc-ecog"].result == "unknown"


def test_comparator_quantity_is_kept() -> None:
    (f,) = facts(obs(AST, value=qty(5, "U/L", comparator="<")))
    assert f.value == Quantity(5.0, "U/L", "<")


# ------------------------------------------------------------------ site map narrowing
def test_site_map_may_narrow_a_plausible_range(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("concepts: {}\nplausible:\n  ast: {low: 0, high: 5000}\n", encoding="utf-8")
    cmap = load_code_map(site)
    assert cmap.plausible["ast"].high == 5000
    assert organ(qty(6000, "U/L")).result == "not-met"  # default range: usable and high
    v = verdicts(obs(AST, value=qty(6000, "U/L")), obs(ALT, value=qty(20, "U/L")),
                 obs(BILI, value=qty(0.5, "mg/dL")), cmap=cmap)["inc-organ-function"]
    assert v.result == "unknown"


def test_site_map_cannot_widen_and_every_error_is_listed(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("concepts: {}\nplausible:\n  ast: {low: -5, high: 5000}\n  lvef: {high: 150}\n"
                    "  nope: {high: 1}\n  anc: {low: 5, high: 1}\n", encoding="utf-8")
    with pytest.raises(MappingError) as err:
        load_code_map(site)
    where = sorted(e for issue in err.value.issues for e in issue.expression)
    assert where == ["site.yaml:$.plausible.anc", "site.yaml:$.plausible.ast", "site.yaml:$.plausible.lvef",
                     "site.yaml:$.plausible.nope"]


def test_problem_lines_never_hold_the_value() -> None:
    for res in (obs(AST, value=qty(-123.456, "U/L")), obs(LVEF, value=qty(987.654, "1")),
                obs(HBV_DNA, value=qty(4567.89, unit="copies/mL"))):
        (f,) = facts(res)
        assert f.problem and "123" not in f.problem and "987" not in f.problem and "4567" not in f.problem
