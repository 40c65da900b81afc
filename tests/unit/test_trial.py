"""The trial as data (issue #13): the shipped trial file, the ``Trial`` API, and the loader's checks.

The loader must list every problem of a file at once, each with its path: schema errors (a missing text, a bad
kind) and what only the semantic checks see (an unknown block or parameter, an unknown concept key, a unit that
is not the concept's canonical unit, duplicate ids, a gate that is not a diagnosis inclusion, a version that
does not name the trial).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import ResponseThresholds, RuleOptions
from bridge.errors import MappingError, SourceUnreadable
from bridge.evaluate import eligibility as E
from bridge.evaluate.blocks import BLOCKS, Context, run_block
from bridge.model import Fact, Quantity
from bridge.trial import DEFAULT_FILE, Trial, from_data, load_trial
from tests.factories import AS_OF, OPTS, ago, patient, q

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "trials" / DEFAULT_FILE
RULES_ORDER = ("inc-diagnosis", "inc-age", "inc-ecog", "inc-cd7-expression", "inc-cardiac", "inc-organ-function",
               "exc-pregnancy", "exc-congenital-immunodeficiency", "exc-cns-leukemia", "exc-active-infection",
               "exc-hepatitis", "exc-hiv", "exc-thrombosis", "exc-cardiac-event", "exc-investigator")

# What the rules read before the trial became data (the hand lists of eligibility.py, bulk.py and pull.py): the
# trial's blocks must declare exactly these for the shipped trial.
FORMER_RULE_CONCEPTS = {
    "inc-diagnosis": ("refractory-disease",), "inc-ecog": ("ecog",), "inc-cd7-expression": ("cd7-blast-percent",),
    "inc-cardiac": ("lvef", "nyha-class"), "inc-organ-function": ("alt", "ast", "bilirubin-total"),
    "exc-pregnancy": ("lactation-status", "pregnancy-status", "pregnancy-test"),
    "exc-cns-leukemia": ("cns-involvement",), "exc-active-infection": ("body-temperature",),
    "exc-hepatitis": ("hbsag", "hbv-dna", "hcv-antibody", "hcv-rna"), "exc-hiv": ("hiv-test",),
}
FORMER_ANY_AGE = {"hbsag", "hbv-dna", "hcv-antibody", "hcv-rna", "hiv-test", "refractory-disease", "cns-involvement",
                  "pregnancy-status", "lactation-status", "pregnancy-test"}
FORMER_ELIGIBILITY_CONCEPTS = {
    "acute-leukemia", "refractory-disease", "ecog", "cd7-blast-percent", "lvef", "nyha-class", "ast", "alt",
    "bilirubin-total", "pregnancy", "lactation", "pregnancy-status", "lactation-status", "pregnancy-test",
    "primary-immunodeficiency", "immunodeficiency-review", "cns-involvement", "sepsis", "infection", "neutropenia",
    "fever", "body-temperature", "hepatitis-active", "hbsag", "hbv-dna", "hcv-antibody", "hcv-rna",
    "hiv-infection", "hiv-test", "thrombosis", "myocardial-infarction", "old-myocardial-infarction",
    "severe-arrhythmia",
}


def shipped_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    return data


def variant(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(shipped_data())
    change(data)
    return data


def crit(data: dict[str, Any], cid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in data["criteria"] if c["id"] == cid)
    return found


def problems(data: Any) -> dict[str, str]:
    """{path: message} of the MappingError that loading ``data`` must raise."""
    with pytest.raises(MappingError) as info:
        from_data(data, "t.yaml")
    assert info.value.exit_code == 4
    return {i.expression[0]: i.diagnostics for i in info.value.issues}


# ---------------------------------------------------------------------------------------------- the shipped trial
def test_the_shipped_trial() -> None:
    t = load_trial()
    assert (t.id, t.ruleset_version, t.source) == ("NCT04762485", "NCT04762485-rules/2026-11", DEFAULT_FILE)
    assert t.criterion_ids == RULES_ORDER
    assert t.inclusions == RULES_ORDER[:6] and t.exclusions == RULES_ORDER[6:]
    assert [c.number for c in t.criteria] == [*range(1, 7), *range(1, 10)]
    assert t.advisory == {"exc-investigator"} and t.gate == "inc-diagnosis"
    assert t.gate_concepts() == {"acute-leukemia"}
    assert all(c.label and c.text for c in t.criteria)
    assert load_trial() is t  # the default is read once


def test_digest_is_the_sha256_of_the_canonical_json_and_equality_follows_it() -> None:
    t = load_trial()
    canonical = json.dumps(shipped_data(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert t.digest == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    again = load_trial(SHIPPED)
    assert again is not t and again == t and hash(again) == hash(t)
    changed = from_data(variant(lambda d: crit(d, "inc-age")["params"].update(max=66)), "t.yaml")
    assert changed.ruleset_version == t.ruleset_version and changed.digest != t.digest and changed != t


def test_the_blocks_declare_what_the_former_hand_lists_held() -> None:
    t = load_trial()
    assert {c.id: tuple(sorted(t.reads(c.id).facts)) for c in t.criteria if t.reads(c.id).facts} == \
        FORMER_RULE_CONCEPTS
    assert t.any_age_concepts() == FORMER_ANY_AGE
    assert t.fact_concepts() | t.condition_concepts() == FORMER_ELIGIBILITY_CONCEPTS
    assert t.windows() == {"inc-ecog": 30, "inc-cd7-expression": 30, "inc-cardiac": 90, "inc-organ-function": 30,
                           "exc-pregnancy": 14, "exc-active-infection": 30, "exc-hepatitis": 90, "exc-hiv": 90,
                           "exc-cardiac-event": 183}


@pytest.mark.parametrize(("cid", "result", "blocking"), [
    ("inc-age", "not-met", True), ("inc-age", "met", False), ("inc-age", "unknown", False),
    ("exc-hiv", "met", True), ("exc-hiv", "not-met", False), ("exc-hiv", "unknown", False),
    ("exc-investigator", "met", False), ("exc-investigator", "unknown", False),
])
def test_blocking_is_decided_by_kind_and_never_for_an_advisory_criterion(cid: str, result: str,
                                                                         blocking: bool) -> None:
    t = load_trial()
    assert t.blocking(cid, result) is blocking
    assert t.counted(cid) is (cid != "exc-investigator")
    with pytest.raises(KeyError):
        t.blocking("inc-unknown", "not-met")


def test_summary_names_every_criterion_with_its_kind_and_block() -> None:
    t = load_trial()
    text = t.summary()
    assert text.splitlines()[0].startswith("NCT04762485 ruleset NCT04762485-rules/2026-11 (nct04762485.yaml")
    for c in t.criteria:
        assert re.search(rf"^\s+{re.escape(c.id)}\s+{c.kind}\s+{c.number}\s+{re.escape(c.block)}", text, re.M), c.id
    assert "(advisory)" in text and "15 criteria" in text


def test_rule_options_take_the_assessment_numbers_from_the_trial() -> None:
    t, options = load_trial(), RuleOptions(as_of=AS_OF)
    assert options.response == ResponseThresholds(5.0, 1.0, 100.0, 25.0, 50.0, 0.5, 50.0)
    assert (options.count_window_days, options.course_days, options.ae_window_days) == (7, 14, 365)
    assert options.dose_range_cells_per_kg == (0.5e6, 10e6) and options.cir_months == (12, 24)
    assert options.product == "cd7-car-t-product"
    assert RuleOptions.for_trial(t, AS_OF) == options
    assert RuleOptions.for_trial(t, AS_OF, course_days=3).course_days == 3


def test_no_layer_below_the_trial_names_the_shipped_trial() -> None:
    """Nothing under normalize, evaluate, publish or report names NCT04762485: ids, texts and docstrings all
    come from the Trial."""
    named = {str(p.relative_to(ROOT)) for folder in ("normalize", "evaluate", "publish", "report")
             for p in (ROOT / "bridge" / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".j2")
             and "nct04762485" in p.read_text(encoding="utf-8").lower()}
    assert named == set()


def test_the_former_module_level_trial_names_are_gone() -> None:
    """The compatibility names derived from the shipped trial are gone: callers take a ``Trial``."""
    import importlib

    gone = {"bridge": ("STUDY_ID", "RULESET_VERSION"),
            "bridge.evaluate.eligibility": ("CRITERIA", "INCLUSIONS", "EXCLUSIONS", "ADVISORY", "RULE_CONCEPTS"),
            "bridge.publish.criteria": ("CRITERIA", "CRITERION_IDS"),
            "bridge.publish.study": ("CRITERIA_SYSTEM", "STUDY_LOGICAL_ID", "SECONDARY_ID", "CONDITIONS", "NOTES"),
            "bridge.publish.provenance": ("RULESET_POLICY",), "bridge.ingest.pull": ("ANY_AGE_CONCEPTS",),
            "bridge.pipeline": ("CRITERIA",)}
    for module, names in gone.items():
        loaded = importlib.import_module(module)
        assert [n for n in names if hasattr(loaded, n)] == [], module


# ---------------------------------------------------------------------------------------------- blocks on facts
def _creatinine(*facts: Fact, site_uln: dict[str, float] | None = None) -> str:
    params = {"concept": "creatinine", "label": "creatinine", "window_days": 30, "comparator": "<=",
              "uln_multiple": 1.5}
    return run_block("quantity-threshold", patient(*facts), Context(OPTS, site_uln or {}), params).result


def _crea(value: float, uln: float | None = None, days_ago: int = 1) -> Fact:
    return Fact("creatinine", Quantity(value, "mg/dL"), ago(days_ago), "Observation/c",
                ref_high=Quantity(uln, "mg/dL") if uln is not None else None)


def test_a_multiple_of_the_uln() -> None:
    assert _creatinine(_crea(1.65)) == "met"  # 1.5 x the configured default 1.1
    assert _creatinine(_crea(1.66)) == "not-met"
    assert _creatinine(_crea(1.9, uln=1.3)) == "met"  # the reference range wins
    assert _creatinine(_crea(1.5), site_uln={"creatinine": 0.9}) == "not-met"  # then the site's default
    assert _creatinine(_crea(1.0, days_ago=31)) == "unknown"  # outside the window
    assert _creatinine(Fact("creatinine", Quantity(2.0, "mg/dL", "<"), ago(1), "Observation/c")) == "unknown"
    assert _creatinine() == "unknown"


def test_any_of_and_all_of_are_three_valued() -> None:
    lvef = {"block": "quantity-threshold", "params": {"concept": "lvef", "label": "LVEF", "window_days": 90,
                                                       "comparator": ">=", "value": 50.0, "unit": "%"}}
    cd7 = {"block": "quantity-threshold", "params": {"concept": "cd7-blast-percent", "label": "CD7", "window_days": 30,
                                                      "comparator": ">", "value": 30.0, "unit": "%"}}
    ctx = Context(OPTS)

    def both(block: str, *facts: Fact) -> str:
        return run_block(block, patient(*facts), ctx, {"of": (lvef, cd7)}).result

    assert both("all-of", q("lvef", 60), q("cd7-blast-percent", 40)) == "met"
    assert both("all-of", q("lvef", 60)) == "unknown"
    assert both("all-of", q("lvef", 40)) == "not-met"
    assert both("any-of", q("lvef", 60)) == "met"
    assert both("any-of", q("lvef", 40)) == "unknown"
    assert both("any-of", q("lvef", 40), q("cd7-blast-percent", 20)) == "not-met"


def test_every_block_is_declared_and_runs_on_an_empty_patient() -> None:
    t = load_trial()
    used = {c.block for c in t.criteria} | {b["block"] for c in t.criteria for b in c.params.get("of", ())}
    assert used <= set(BLOCKS)
    for c in t.criteria:
        out = run_block(c.block, patient(), Context(OPTS), c.params)
        assert out.result in ("met", "not-met", "unknown") and out.reason


# ---------------------------------------------------------------------------------------------- the loader
def test_every_error_is_listed_at_once_with_its_path() -> None:
    def breaks(d: dict[str, Any]) -> None:
        del crit(d, "inc-age")["text"]  # schema: a missing text
        crit(d, "inc-ecog")["kind"] = "inclusive"  # schema: a bad kind
        crit(d, "inc-cd7-expression")["params"]["concept"] = "cd7-percent"  # unknown concept
        crit(d, "inc-cd7-expression")["params"]["unit"] = "1"  # no unit check against an unknown concept
        crit(d, "exc-hiv")["block"] = "hiv-magic"  # unknown block
        crit(d, "exc-thrombosis")["params"]["colour"] = "red"  # unknown parameter
        crit(d, "exc-hepatitis")["params"]["hbv_dna_above"]["unit"] = "{copies}/mL"  # not the canonical unit
        crit(d, "inc-organ-function")["params"]["window_days"] = -1  # not a window
        del crit(d, "exc-cardiac-event")["params"]["window_label"]  # missing parameter
        d["criteria"][14]["id"] = "exc-hiv"  # a duplicate id
        d["ruleset_version"] = "rules/2027-01"  # does not name the trial

    found = problems(variant(breaks))
    expected = {
        "t.yaml:$.criteria[1]": "'text' is a required property",
        "t.yaml:$.criteria[2].kind": "is not one of",
        "t.yaml:$.criteria[3].params.concept": "unknown concept key 'cd7-percent'",
        "t.yaml:$.criteria[11].block": "unknown block 'hiv-magic'",
        "t.yaml:$.criteria[12].params.colour": "unknown parameter 'colour'",
        "t.yaml:$.criteria[10].params.hbv_dna_above.unit": "is not the canonical unit '[IU]/mL'",
        "t.yaml:$.criteria[5].params.window_days": "whole number of days",
        "t.yaml:$.criteria[13].params.window_label": "missing parameter 'window_label'",
        "t.yaml:$.criteria[14].id": "duplicate criterion id 'exc-hiv'",
        "t.yaml:$.ruleset_version": "must begin with the trial id",
    }
    for path, message in expected.items():
        assert path in found and message in found[path], (path, found.get(path))
    assert len(found) == len(expected)


def test_an_unknown_block_names_the_known_ones() -> None:
    found = problems(variant(lambda d: crit(d, "inc-age").update(block="age-within")))
    message = found["t.yaml:$.criteria[1].block"]
    assert "unknown block 'age-within'" in message and "age-between" in message


def test_unknown_concepts_are_found_in_nested_blocks_and_records() -> None:
    def breaks(d: dict[str, Any]) -> None:
        crit(d, "inc-cardiac")["params"]["of"][1]["params"]["concept"] = "nyha"
        crit(d, "inc-organ-function")["params"]["uln_limits"][0]["concept"] = "sgot"
        crit(d, "exc-pregnancy")["params"]["conditions"][1] = "breastfeeding"

    found = problems(variant(breaks))
    assert found == {
        "t.yaml:$.criteria[4].params.of[1].params.concept": "unknown concept key 'nyha'",
        "t.yaml:$.criteria[5].params.uln_limits[0].concept": "unknown concept key 'sgot'",
        "t.yaml:$.criteria[6].params.conditions[1]": "unknown concept key 'breastfeeding'",
    }


def test_concept_kinds_thresholds_and_the_gate_are_checked() -> None:
    def breaks(d: dict[str, Any]) -> None:
        crit(d, "inc-ecog")["params"]["concept"] = "lvef"  # a quantity where a score is read
        crit(d, "inc-cd7-expression")["params"]["uln_multiple"] = 2  # both a value and a multiple of the ULN
        d["gate"] = "inc-age"  # no diagnosis to require
        d["assessment"]["product"] = "ecog"

    found = problems(variant(breaks))
    assert set(found) == {"t.yaml:$.criteria[2].params.concept", "t.yaml:$.criteria[3].params", "t.yaml:$.gate",
                          "t.yaml:$.assessment.product"}
    assert "is a score" not in found["t.yaml:$.criteria[2].params.concept"]
    assert "not a score" in found["t.yaml:$.criteria[2].params.concept"]


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreadable) as missing:
        load_trial(tmp_path / "absent.yaml")
    assert missing.value.exit_code == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed\n", encoding="utf-8")
    with pytest.raises(MappingError, match="bad.yaml: not valid YAML at line"):
        load_trial(bad)
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(MappingError, match="bad.yaml: 1 error"):
        load_trial(bad)


def test_a_json_trial_file_loads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "trial.json"
    path.write_text(json.dumps(shipped_data()), encoding="utf-8")
    assert load_trial(path) == load_trial()


def test_criterion_texts_and_errata() -> None:
    t = load_trial()
    organ, thrombosis = t.criterion("inc-organ-function"), t.criterion("exc-thrombosis")
    assert organ.switchable and organ.applied_text("literal") == organ.text != organ.applied_text()
    assert not thrombosis.switchable and thrombosis.applied_text("literal") == thrombosis.applied
    assert [c.id for c in t.criteria if c.note] == ["inc-organ-function", "exc-thrombosis"]
    assert t.criterion("inc-age").applied_text() == "Age 12-65 years."
    assert isinstance(t, Trial) and t.criterion("exc-investigator").advisory


def test_screening_uses_the_trial_given() -> None:
    younger = from_data(variant(lambda d: crit(d, "inc-age")["params"].update(min=50)), "t.yaml")
    pf = patient()  # born 1990: 36 on the as-of date
    assert E.screen(pf, OPTS).verdict("inc-age").result == "met"
    v = E.screen(pf, OPTS, trial=younger).verdict("inc-age")
    assert (v.result, v.reason) == ("not-met", f"age 36 on {date(2026, 6, 15)}, outside 50-65")
