"""The trial as versioned data: a trial file (``trials/*.yaml``) loaded, checked and indexed (issue #13).

A trial file holds the study metadata the ResearchStudy is published from, the eligibility criteria — each with
its id, kind, the record's number and text, any erratum (``applied`` text and ``note``), and the rule building
block it uses with its parameters (``bridge.evaluate.blocks``) — and the assessment numbers (response
thresholds, count window, course, dose range, AE window, CIR time points). The shipped default,
``trials/nct04762485.yaml``, is read with importlib.resources from the package ``bridge.trials``.

``load_trial`` validates a file against ``profiles/trial.schema.json`` and the checks a schema cannot make
(block names and parameters, concept keys against the concept catalogue of ``mappings/``, threshold units,
duplicate ids and numbers, the gate criterion, a ruleset version naming the trial), and raises one
``MappingError`` (exit 4) listing every problem with its path. ``Trial`` answers what the rest of the bridge
asks of a trial: its criteria in file order, which verdict blocks eligibility (``blocking``, the one place that
decides it), which concepts the rules read (``fact_concepts``, ``condition_concepts``, ``gate_concepts``), the
labels and texts, and ``digest``, the sha256 of the loaded content, so one version string never names two
different rule sets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

from bridge import yamlload
from bridge.config import ResponseThresholds
from bridge.errors import Issue, MappingError, SourceUnreadable
from bridge.evaluate.blocks import Reads, block_reads, param_issues, windows
from bridge.normalize.mappings import load_code_map, schema_issues

DEFAULT_FILE = "nct04762485.yaml"
SCHEMA_FILE = "trial.schema.json"

Kind = Literal["inclusion", "exclusion"]


def _frozen(value: Any) -> Any:
    """Loaded YAML made read-only: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class Criterion:
    """One eligibility criterion of a trial file."""

    id: str
    kind: Kind
    number: int
    text: str  # the record's words, verbatim
    applied: str | None  # the text evaluated where the record has an erratum
    note: str | None  # why
    block: str
    params: Mapping[str, Any]
    advisory: bool  # shown, never counted in the automated status
    label: str
    switchable: bool = False  # organ_function_reading literal evaluates the record's text

    @property
    def exclude(self) -> bool:
        """True for an exclusion (``Group.characteristic.exclude``)."""
        return self.kind == "exclusion"

    def applied_text(self, organ_reading: str = "organ-function") -> str:
        """The text the bridge evaluates under ``organ_reading``: the record's text unless an erratum applies."""
        if self.applied is None or (self.switchable and organ_reading == "literal"):
            return self.text
        return self.applied

    def __hash__(self) -> int:  # params is a mapping (unhashable): hash what names the criterion
        return hash((self.id, self.kind, self.number, self.block))


@dataclass(frozen=True, eq=False)
class Trial:
    """A loaded, checked trial file. Equal when id, ruleset version and content digest are."""

    id: str
    ruleset_version: str
    digest: str  # sha256 hex of the canonical JSON of the loaded content
    source: str  # the file name
    study: Mapping[str, Any]
    criteria: tuple[Criterion, ...]
    assessment: Mapping[str, Any]
    gate: str = ""  # the criterion whose diagnosis the population path requires

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trial) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def _key(self) -> tuple[str, str, str]:
        return self.id, self.ruleset_version, self.digest

    # ------------------------------------------------------------------ criteria
    @cached_property
    def _by_id(self) -> dict[str, Criterion]:
        return {c.id: c for c in self.criteria}

    def criterion(self, cid: str) -> Criterion:
        """The criterion with this id; ``KeyError`` for an id not in the trial."""
        return self._by_id[cid]

    @property
    def criterion_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.criteria)

    @property
    def inclusions(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.criteria if c.kind == "inclusion")

    @property
    def exclusions(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.criteria if c.kind == "exclusion")

    @property
    def advisory(self) -> frozenset[str]:
        return frozenset(c.id for c in self.criteria if c.advisory)

    def blocking(self, cid: str, result: str) -> bool:
        """Does this verdict make the patient ineligible: an inclusion not met or an exclusion met, never an
        advisory criterion. The one place this is decided."""
        c = self.criterion(cid)
        if c.advisory:
            return False
        return result == ("not-met" if c.kind == "inclusion" else "met")

    def counted(self, cid: str) -> bool:
        """Does the criterion count in the automated status (False for an advisory one)?"""
        return not self.criterion(cid).advisory

    def label(self, cid: str) -> str:
        return self.criterion(cid).label

    # ------------------------------------------------------------------ concepts
    @cached_property
    def _reads(self) -> dict[str, Reads]:
        return {c.id: block_reads(c.block, c.params) for c in self.criteria}

    def reads(self, cid: str) -> Reads:
        """The concepts one criterion reads (``Reads.facts`` is what ``decide`` weighs)."""
        return self._reads[cid]

    def fact_concepts(self) -> frozenset[str]:
        """Every fact concept a criterion reads."""
        return frozenset().union(*(r.facts for r in self._reads.values()))

    def any_age_concepts(self) -> frozenset[str]:
        """The fact concepts a criterion reads however old the result (a pull fetches them without a date)."""
        return frozenset().union(*(r.any_age for r in self._reads.values()))

    def condition_concepts(self) -> frozenset[str]:
        """Every condition concept a criterion reads."""
        return frozenset().union(*(r.conditions for r in self._reads.values()))

    def gate_concepts(self) -> frozenset[str]:
        """The diagnosis concepts of the gate criterion: the population path reports only patients with one."""
        return self._reads[self.gate].gate if self.gate else frozenset()

    def windows(self) -> dict[str, int]:
        """The longest look-back window of each criterion that has one, in days."""
        return {c.id: max(found) for c in self.criteria if (found := windows(c.block, c.params))}

    # ------------------------------------------------------------------ assessment
    def rule_defaults(self) -> dict[str, Any]:
        """The ``RuleOptions`` fields this trial sets (see ``RuleOptions.for_trial``)."""
        a = self.assessment
        r, dose = a["response"], a["dose"]
        return {
            "count_window_days": r["count_window_days"], "course_days": dose["course_days"],
            "dose_range_cells_per_kg": (float(dose["cells_per_kg"]["low"]), float(dose["cells_per_kg"]["high"])),
            "ae_window_days": a["adverse_events"]["window_days"], "cir_months": tuple(a["cir"]["months"]),
            "product": a["product"],
            "response": ResponseThresholds(
                float(r["marrow_blasts_below"]), float(r["anc_above"]), float(r["platelets_above"]),
                float(r["pr_marrow_blasts_max"]), float(r["pr_decrease_percent"]), float(r["crh_anc_above"]),
                float(r["crh_platelets_above"])),
        }

    def summary(self) -> str:
        """What ``bridge trial check`` prints: the trial, its version and digest, and one line per criterion."""
        n_adv = len(self.advisory)
        lines = [f"{self.id} ruleset {self.ruleset_version} ({self.source}, sha256 {self.digest[:12]})",
                 f"{len(self.criteria)} criteria: {len(self.inclusions)} inclusion(s), {len(self.exclusions)} "
                 f"exclusion(s), {n_adv} advisory; gate {self.gate or '-'}"]
        width = max(len(c.id) for c in self.criteria)
        for c in self.criteria:
            flags = " (advisory)" if c.advisory else (" (erratum)" if c.applied else "")
            lines.append(f"  {c.id:<{width}}  {c.kind:<9}  {c.number:>2}  {c.block}{flags}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- loading
def _parse(text: str, label: str) -> Any:
    try:
        return yamlload.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise MappingError(f"trial file {label}: not valid YAML{where}") from None


def digest(data: Any) -> str:
    """sha256 hex of the canonical JSON of loaded content (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _criteria(data: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    items = data.get("criteria")
    return [(i, c) for i, c in enumerate(items) if isinstance(c, dict)] if isinstance(items, list) else []


def _duplicates(data: dict[str, Any], label: str) -> list[Issue]:
    issues: list[Issue] = []
    seen_ids: set[Any] = set()
    seen_numbers: set[tuple[Any, Any]] = set()
    for i, c in _criteria(data):
        cid, number = c.get("id"), (c.get("kind"), c.get("number"))
        if cid in seen_ids:
            issues.append(Issue("invalid", f"duplicate criterion id {cid!r}", (f"{label}:$.criteria[{i}].id",)))
        if number in seen_numbers and None not in number:
            issues.append(Issue("invalid", f"duplicate {number[0]} number {number[1]}",
                                (f"{label}:$.criteria[{i}].number",)))
        seen_ids.add(cid)
        seen_numbers.add(number)
    return issues


def _gate_issues(data: dict[str, Any], label: str) -> list[Issue]:
    gate = data.get("gate")
    found = [c for _, c in _criteria(data) if c.get("id") == gate]
    if not isinstance(gate, str):
        return []
    if not found:
        return [Issue("invalid", f"gate {gate!r} is not a criterion of the file", (f"{label}:$.gate",))]
    c = found[0]
    ok = c.get("kind") == "inclusion" and isinstance(c.get("block"), str)
    try:
        ok = ok and bool(block_reads(c["block"], c.get("params") or {}).gate)
    except (KeyError, TypeError, AttributeError):
        ok = False  # its block is broken: reported at the criterion
    return [] if ok else [Issue("invalid", "the gate must be an inclusion whose block names a required diagnosis "
                                "(e.g. relapsed-refractory-diagnosis)", (f"{label}:$.gate",))]


def semantic_issues(data: Any, label: str) -> list[Issue]:
    """What the schema cannot check; safe on data that also fails the schema (every problem at once)."""
    if not isinstance(data, dict):
        return []
    catalogue = load_code_map().concepts
    issues = _duplicates(data, label)
    for i, c in _criteria(data):
        issues += param_issues(c.get("block"), c.get("params"), f"{label}:$.criteria[{i}]", catalogue)
    issues += _gate_issues(data, label)
    tid, version = data.get("id"), data.get("ruleset_version")
    if isinstance(tid, str) and isinstance(version, str) and not version.startswith(tid):
        issues.append(Issue("invalid", f"ruleset_version must begin with the trial id {tid!r} (it names the trial "
                            "wherever it is written)", (f"{label}:$.ruleset_version",)))
    assessment = data.get("assessment")
    if isinstance(assessment, dict):
        issues += _assessment_issues(assessment, catalogue, label)
    return issues


def _assessment_issues(a: dict[str, Any], catalogue: Mapping[str, Any], label: str) -> list[Issue]:
    issues: list[Issue] = []
    product = a.get("product")
    if isinstance(product, str) and getattr(catalogue.get(product), "kind", None) != "product":
        issues.append(Issue("invalid", f"{product!r} is not a product concept of the catalogue",
                            (f"{label}:$.assessment.product",)))
    dose = a["dose"].get("cells_per_kg") if isinstance(a.get("dose"), dict) else None
    bounds = (dose.get("low"), dose.get("high")) if isinstance(dose, dict) else (None, None)
    if all(isinstance(b, int | float) for b in bounds) and bounds[0] > bounds[1]:  # type: ignore[operator]
        issues.append(Issue("invalid", "low is above high", (f"{label}:$.assessment.dose.cells_per_kg",)))
    r = a.get("response")
    if isinstance(r, dict) and all(isinstance(r.get(k), int | float) for k in ("marrow_blasts_below",
                                                                            "pr_marrow_blasts_max")) \
            and r["pr_marrow_blasts_max"] < r["marrow_blasts_below"]:
        issues.append(Issue("invalid", "pr_marrow_blasts_max is below marrow_blasts_below",
                            (f"{label}:$.assessment.response.pr_marrow_blasts_max",)))
    return issues


def _criterion(raw: dict[str, Any]) -> Criterion:
    return Criterion(raw["id"], raw["kind"], raw["number"], raw["text"], raw.get("applied"), raw.get("note"),
                     raw["block"], _frozen(raw["params"]), bool(raw.get("advisory", False)), raw["label"],
                     bool(raw.get("switchable", False)))


def from_data(data: Any, label: str) -> Trial:
    """A ``Trial`` from loaded content; ``MappingError`` listing every schema and semantic problem."""
    issues = schema_issues(data, SCHEMA_FILE, label) + semantic_issues(data, label)
    if issues:
        raise MappingError(f"trial file {label}: {len(issues)} error(s), first at {issues[0].expression[0]}", issues)
    return Trial(data["id"], data["ruleset_version"], digest(data), label, _frozen(data["study"]),
                 tuple(_criterion(c) for c in data["criteria"]), _frozen(data["assessment"]), data["gate"])


@lru_cache(maxsize=1)
def _default() -> Trial:
    text = resources.files("bridge.trials").joinpath(DEFAULT_FILE).read_text(encoding="utf-8")
    return from_data(_parse(text, DEFAULT_FILE), DEFAULT_FILE)


def load_trial(path: str | Path | None = None) -> Trial:
    """The trial of ``path`` (YAML or JSON), or the shipped default (cached) when None."""
    if path is None:
        return _default()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceUnreadable(f"trial file {p}: cannot read ({exc.strerror})") from None
    return from_data(_parse(text, p.name), p.name)


__all__ = ["DEFAULT_FILE", "Criterion", "Kind", "Trial", "digest", "from_data", "load_trial", "semantic_issues"]
