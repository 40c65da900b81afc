"""Code tables (``mappings/``) and site maps, validated against their JSON Schemas (``profiles/``).

Every table is checked at load time and every error is reported at once (``MappingError`` with one issue per
problem, each with its path). ``CodeMap`` is the loaded, indexed result that the normalizer uses:
observation codes -> concept, condition codes -> concepts (prefix match with exceptions), qualitative
answers -> positive/negative, interpretation codes -> positive/negative/unknown, score answers -> integers,
the concept catalogue (kind, canonical unit) and the plausible range of each concept (RULES.md §3), which a
site map may narrow but never widen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bridge import yamlload
from bridge.errors import Issue, MappingError, SourceUnreadable

OBSERVATION_TABLES = ("loinc.yaml",)
CONDITION_TABLES = ("icd10.yaml", "snomed.yaml", "icd-o-3.yaml")
ICD_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm"})
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
INTERPRETATION_SYSTEMS = frozenset({"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                    "http://hl7.org/fhir/v3/ObservationInterpretation"})


def mappings_dir() -> Path:
    """The packaged code tables (``mappings/`` in the source tree, ``bridge.mappings`` when installed)."""
    return Path(str(resources.files("bridge.mappings")))


def profiles_dir() -> Path:
    """The packaged schemas (``profiles/`` in the source tree, ``bridge.profiles`` when installed)."""
    return Path(str(resources.files("bridge.profiles")))


def norm_code(code: str) -> str:
    """Codes match ignoring case, surrounding spaces and (for ICD) dots."""
    return code.strip().upper()


def icd_key(code: str) -> str:
    return norm_code(code).replace(".", "")


@dataclass(frozen=True)
class ConceptInfo:
    key: str
    kind: str
    unit: str | None = None
    molar: float | None = None


@dataclass(frozen=True)
class Plausible:
    """A concept's plausible range in its canonical unit (``mappings/plausible.yaml``)."""

    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    integer: bool = False

    def holds(self, value: float) -> bool:
        if self.integer and not float(value).is_integer():
            return False
        if self.low is not None and (value < self.low or (self.low_exclusive and value == self.low)):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        low = "" if self.low is None else f"{'>' if self.low_exclusive else ''}{self.low:g}"
        span = f"{low}-{self.high:g}" if self.high is not None else (f">= {low}" if not self.low_exclusive else low)
        return ("integer " if self.integer else "") + span

    def within(self, wider: Plausible) -> bool:
        """Is this range no wider than ``wider`` (a site map may only narrow the default)?"""
        low_ok = wider.low is None or (self.low is not None and (self.low > wider.low or (
            self.low == wider.low and (self.low_exclusive or not wider.low_exclusive))))
        high_ok = wider.high is None or (self.high is not None and self.high <= wider.high)
        return low_ok and high_ok and (self.integer or not wider.integer)


@dataclass(frozen=True)
class PrefixRule:
    prefix: str
    excepts: tuple[str, ...]
    concepts: frozenset[str]

    def matches(self, key: str) -> bool:
        return key.startswith(self.prefix) and not any(key.startswith(e) for e in self.excepts)


@dataclass
class CodeMap:
    """The indexed code tables plus any site map entries."""

    concepts: dict[str, ConceptInfo]
    observations: dict[tuple[str, str], str] = field(default_factory=dict)
    exact_conditions: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    icd_rules: list[PrefixRule] = field(default_factory=list)
    answers: dict[tuple[str, str], bool] = field(default_factory=dict)
    interpretations: dict[str, bool | None] = field(default_factory=dict)
    plausible: dict[str, Plausible] = field(default_factory=dict)
    scores: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    site_units: dict[str, str] = field(default_factory=dict)
    uln: dict[str, float] = field(default_factory=dict)
    lln: dict[str, float] = field(default_factory=dict)

    def observation_concept(self, system: str | None, code: str | None) -> str | None:
        if not system or not code:
            return None
        return self.observations.get((system.strip(), norm_code(code)))

    def condition_concepts(self, system: str | None, code: str | None) -> frozenset[str]:
        if not system or not code:
            return frozenset()
        system = system.strip()
        if system in ICD_SYSTEMS:
            key = icd_key(code)
            found: set[str] = set()
            for rule in self.icd_rules:
                if rule.matches(key):
                    found |= rule.concepts
            return frozenset(found)
        exact = self.exact_conditions.get((system, norm_code(code)))
        if exact:
            return exact
        site = self.observations.get((system, norm_code(code)))
        return frozenset({site}) if site else frozenset()

    def answer(self, system: str | None, code: str | None) -> bool | None:
        if not system or not code:
            return None
        return self.answers.get((system.strip(), norm_code(code)))

    def interpretation(self, system: str | None, code: str | None) -> tuple[bool, bool | None]:
        """(known, reading) of a v3 ObservationInterpretation code: reading True positive, False negative,
        None indeterminate (RULES.md §3 "Qualitative tests"); known False when the code is not in the table."""
        if not code or (system and system.strip() not in INTERPRETATION_SYSTEMS):
            return False, None
        key = norm_code(code)
        return (key in self.interpretations), self.interpretations.get(key)

    def score(self, system: str | None, code: str | None) -> tuple[str, int] | None:
        if not system or not code:
            return None
        return self.scores.get((system.strip(), norm_code(code)))

    def relevant_codes(self) -> set[str]:
        """Every observation code (normalized) of interest: cheap pre-filter for bulk reading."""
        return {code for (_, code) in self.observations}


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceUnreadable(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yamlload.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise MappingError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}{where}") from None


@lru_cache(maxsize=16)
def _validator(schema_name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((profiles_dir() / schema_name).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _path(err: jsonschema.ValidationError) -> str:
    out = "$"
    for p in err.absolute_path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def schema_issues(data: Any, schema_name: str, label: str) -> list[Issue]:
    """Every schema error of ``data`` as an Issue whose expression is ``label:$.path``."""
    errors = sorted(_validator(schema_name).iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [Issue("invalid", e.message if len(e.message) < 200 else e.validator, (f"{label}:{_path(e)}",))
            for e in errors]


def _check(data: Any, schema_name: str, label: str) -> None:
    issues = schema_issues(data, schema_name, label)
    if issues:
        raise MappingError(f"{label}: {len(issues)} schema error(s), first at {issues[0].expression[0]}", issues)


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _load_concepts(directory: Path) -> dict[str, ConceptInfo]:
    data = _read(directory / "concepts.yaml")
    _check(data, "concepts.schema.json", "concepts.yaml")
    return {k: ConceptInfo(k, v["kind"], v.get("unit"), v.get("umol_per_l_per_mg_dl"))
            for k, v in data["concepts"].items()}


def _unknown_concepts(entries: Iterable[tuple[str, str]], concepts: dict[str, ConceptInfo]) -> list[Issue]:
    return [Issue("invalid", f"unknown concept key {key!r}", (where,)) for where, key in entries if key not in concepts]


def _load_observation_table(cmap: CodeMap, directory: Path, name: str) -> list[Issue]:
    data = _read(directory / name)
    _check(data, "code-table.schema.json", name)
    issues = _unknown_concepts(_concept_refs(name, data), cmap.concepts)
    for e in data["entries"]:
        for system in _systems(data):
            cmap.observations[(system, norm_code(e["code"]))] = _as_list(e["concept"])[0]
    return issues


def _concept_refs(name: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    entries = enumerate(data["entries"])
    return [(f"{name}:$.entries[{i}].concept", c) for i, e in entries for c in _as_list(e["concept"])]


def _systems(data: dict[str, Any]) -> list[str]:
    return list(data.get("systems") or [data["system"]])


def _load_condition_table(cmap: CodeMap, directory: Path, name: str) -> list[Issue]:
    data = _read(directory / name)
    _check(data, "code-table.schema.json", name)
    issues = _unknown_concepts(_concept_refs(name, data), cmap.concepts)
    systems = _systems(data)
    for e in data["entries"]:
        concepts = frozenset(_as_list(e["concept"]))
        if set(systems) <= ICD_SYSTEMS:
            excepts = tuple(icd_key(x) for x in e.get("except", ()))
            cmap.icd_rules.append(PrefixRule(icd_key(e["code"]), excepts, concepts))
        else:
            for system in systems:
                cmap.exact_conditions[(system, norm_code(e["code"]))] = concepts
    return issues


def _load_answers(cmap: CodeMap, directory: Path) -> list[Issue]:
    data = _read(directory / "answers.yaml")
    _check(data, "answers.schema.json", "answers.yaml")
    for e in data["entries"]:
        cmap.answers[(e["system"], norm_code(e["code"]))] = bool(e["positive"])
    for e in data.get("interpretations") or []:
        cmap.interpretations[norm_code(e["code"])] = {"positive": True, "negative": False}.get(e["reading"])
    refs = [(f"answers.yaml:$.scores[{i}].concept", e["concept"]) for i, e in enumerate(data["scores"])]
    for e in data["scores"]:
        cmap.scores[(e["system"], norm_code(e["code"]))] = (e["concept"], int(e["score"]))
    return _unknown_concepts(refs, cmap.concepts)


def _range(spec: dict[str, Any]) -> Plausible:
    return Plausible(spec.get("low"), spec.get("high"), bool(spec.get("low_exclusive")), bool(spec.get("integer")))


def _load_plausible(cmap: CodeMap, directory: Path) -> list[Issue]:
    data = _read(directory / "plausible.yaml")
    _check(data, "plausible.schema.json", "plausible.yaml")
    refs = [(f"plausible.yaml:$.ranges.{k}", k) for k in data["ranges"]]
    cmap.plausible.update({k: _range(v) for k, v in data["ranges"].items()})
    return _unknown_concepts(refs, cmap.concepts) + _inverted(data["ranges"], "plausible.yaml:$.ranges")


def _inverted(ranges: dict[str, dict[str, Any]], where: str) -> list[Issue]:
    return [Issue("invalid", "low is above high", (f"{where}.{k}",)) for k, v in ranges.items()
            if v.get("low") is not None and v.get("high") is not None and v["low"] > v["high"]]


def _narrowing_issues(cmap: CodeMap, ranges: dict[str, dict[str, Any]], label: str) -> list[Issue]:
    """A site map's plausible ranges: known concepts, low <= high, and never wider than the default."""
    where = f"{label}:$.plausible"
    issues = _inverted(ranges, where)
    for key, spec in ranges.items():
        default = cmap.plausible.get(key)
        if key in cmap.concepts and default is not None and not _range(spec).within(default):
            issues.append(Issue("invalid", f"wider than the default plausible range {default.describe()} "
                                "(a site map may only narrow it)", (f"{where}.{key}",)))
        elif key in cmap.concepts and default is None:
            issues.append(Issue("invalid", "no default plausible range to narrow for this concept",
                                (f"{where}.{key}",)))
    return issues


@lru_cache(maxsize=4)
def _default_map(directory: str) -> CodeMap:
    path = Path(directory)
    cmap = CodeMap(concepts=_load_concepts(path))
    issues: list[Issue] = []
    for name in OBSERVATION_TABLES:
        issues += _load_observation_table(cmap, path, name)
    for name in CONDITION_TABLES:
        issues += _load_condition_table(cmap, path, name)
    issues += _load_answers(cmap, path)
    issues += _load_plausible(cmap, path)
    if issues:
        raise MappingError(f"mapping tables: {len(issues)} error(s), first at {issues[0].expression[0]}", issues)
    return cmap


def load_code_map(site_map: str | Path | None = None, directory: Path | None = None) -> CodeMap:
    """The default tables, plus a site map when given. Each call returns a fresh, independent CodeMap."""
    base = _default_map(str(directory or mappings_dir()))
    cmap = CodeMap(
        concepts=dict(base.concepts), observations=dict(base.observations),
        exact_conditions=dict(base.exact_conditions), icd_rules=list(base.icd_rules),
        answers=dict(base.answers), scores=dict(base.scores), interpretations=dict(base.interpretations),
        plausible=dict(base.plausible),
    )
    if site_map is not None:
        apply_site_map(cmap, Path(site_map))
    return cmap


def apply_site_map(cmap: CodeMap, path: Path) -> None:
    """Validate a site map (YAML or JSON) and add its codes; every error listed at once."""
    if not path.exists():
        raise SourceUnreadable(f"site map {path}: no such file")
    data = _read(path)
    label = path.name
    issues = schema_issues(data, "site-map.schema.json", label)
    if isinstance(data, dict) and isinstance(data.get("concepts"), dict):
        refs = [(f"{label}:$.concepts.{k}", k) for k in data["concepts"]]
        issues += _unknown_concepts(refs, cmap.concepts)
        for section in ("uln", "lln", "plausible"):
            refs = [(f"{label}:$.{section}.{k}", k) for k in (data.get(section) or {})]
            issues += _unknown_concepts(refs, cmap.concepts)
        if isinstance(data.get("plausible"), dict) and all(isinstance(v, dict) for v in data["plausible"].values()):
            issues += _narrowing_issues(cmap, data["plausible"], label)
    if issues:
        raise MappingError(f"site map {label}: {len(issues)} error(s), first at {issues[0].expression[0]}", issues)
    for concept, entries in data["concepts"].items():
        for e in entries:
            cmap.observations[(e["system"].strip(), norm_code(e["code"]))] = concept
            if "unit" in e:
                cmap.site_units[f"{e['system'].strip()}|{norm_code(e['code'])}"] = e["unit"]
    cmap.uln.update(data.get("uln") or {})
    cmap.lln.update(data.get("lln") or {})
    cmap.plausible.update({k: _range(v) for k, v in (data.get("plausible") or {}).items()})


__all__ = ["CodeMap", "ConceptInfo", "Plausible", "apply_site_map", "icd_key", "load_code_map", "mappings_dir",
           "norm_code", "profiles_dir", "schema_issues"]
