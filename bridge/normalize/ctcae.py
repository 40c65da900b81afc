"""The CTCAE v5.0 lab-grading table (``mappings/ctcae-v5.yaml``), read and validated with the other mappings.

The table is data in ``mappings/`` checked against ``profiles/ctcae-v5.schema.json`` plus what a schema cannot
say (unique term names, grades once each in ascending order); every problem is reported at once
(``MappingError``, exit 4). Reading it lives here, beside the code tables, so that ``bridge.evaluate.grading``
only grades: it receives the loaded ``LabTerm``s (``packaged_lab_terms`` reads the packaged table once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

from bridge import yamlload
from bridge.errors import Issue, MappingError
from bridge.normalize.mappings import mappings_dir, profiles_dir

CTCAE_V5 = "CTCAE v5.0"
TABLE_FILE = "ctcae-v5.yaml"
SCHEMA_FILE = "ctcae-v5.schema.json"

Direction = Literal["low", "high"]
Basis = Literal["absolute", "lln", "uln", "baseline"]
BaselineState = Literal["normal", "abnormal"]
Op = Literal["<", "<=", ">", ">="]


@dataclass(frozen=True)
class Arm:
    """``value <op> limit x reference``; ``baseline`` restricts the arm to a normal/abnormal baseline."""

    of: Basis
    op: Op
    limit: float
    baseline: BaselineState | None = None


@dataclass(frozen=True)
class GradeRule:
    """One CTCAE grade of a term: its wording and the arms of which any one suffices."""

    grade: int
    ctcae: str
    arms: tuple[Arm, ...]


@dataclass(frozen=True)
class LabTerm:
    """A lab-graded AE term of ``mappings/ctcae-v5.yaml``."""

    term: str
    concept: str
    unit: str
    direction: Direction
    source: str
    grades: tuple[GradeRule, ...]
    grading_system: str = CTCAE_V5

    @property
    def max_grade(self) -> int:
        return max(rule.grade for rule in self.grades)


def load_lab_terms(table: Path | None = None, schema: Path | None = None) -> tuple[LabTerm, ...]:
    """Read and validate a CTCAE table (default: the packaged one); ``MappingError`` lists every problem."""
    table = table or mappings_dir() / TABLE_FILE
    data = _read_yaml(table)
    _check_table(data, _read_schema(schema or profiles_dir() / SCHEMA_FILE), table.name)
    return tuple(_lab_term(raw, data["grading_system"]) for raw in data["terms"])


def _read_yaml(path: Path) -> Any:
    try:
        return yamlload.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"cannot read mapping table {path.name}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise MappingError(f"mapping table {path.name} is not valid YAML{where}") from None


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise MappingError(f"cannot read schema {path.name}") from None
    return schema


def _check_table(data: Any, schema: dict[str, Any], name: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    problems = sorted({(_path(e.absolute_path), e.message) for e in validator.iter_errors(data)})
    if not problems:
        problems = _semantic_problems(data)
    if problems:
        listing = "; ".join(f"{path}: {message}" for path, message in problems)
        issues = [Issue("invalid", message, (f"{name}:{path}",)) for path, message in problems]
        raise MappingError(f"{name} has {len(problems)} problem(s): {listing}", issues=issues)


def _path(parts: Any) -> str:
    """``$.terms[3].grades[0]``, the element-path style of bridge.normalize.mappings."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _semantic_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """What the schema cannot say: unique term names, grades listed once each in ascending order."""
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["terms"]):
        if raw["term"] in seen:
            problems.append((f"$.terms[{i}].term", "duplicate term"))
        seen.add(raw["term"])
        grades = [g["grade"] for g in raw["grades"]]
        if grades != sorted(set(grades)):
            problems.append((f"$.terms[{i}].grades", "grades must be unique and ascending"))
    return problems


def _lab_term(raw: dict[str, Any], system: str) -> LabTerm:
    rules = tuple(
        GradeRule(g["grade"], g["ctcae"], tuple(Arm(**arm) for arm in g["arms"])) for g in raw["grades"]
    )
    return LabTerm(raw["term"], raw["concept"], raw["unit"], raw["direction"], raw["source"], rules, system)


@lru_cache(maxsize=1)
def packaged_lab_terms() -> tuple[LabTerm, ...]:
    """The packaged table, read and checked once."""
    return load_lab_terms()


__all__ = ["CTCAE_V5", "SCHEMA_FILE", "TABLE_FILE", "Arm", "Basis", "BaselineState", "Direction", "GradeRule",
           "LabTerm", "Op", "load_lab_terms", "packaged_lab_terms"]
