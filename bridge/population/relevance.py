"""Which resources the population path keeps: the trial's concepts, taken as data.

A patient is a *candidate* when one of their Conditions is coded with a gate concept of the trial (a condition
without which every patient is ineligible: acute leukaemia in the shipped trial). Of a candidate's resources, the
Patient is kept, and an Observation or a Condition when any of its codings (any position, any component) maps to
a concept some criterion reads. The sets come from the trial (``TrialConcepts``, a ``bridge.trial.Trial``).
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.normalize.fhirpath import codings, ref_id
from bridge.normalize.mappings import CodeMap


class TrialConcepts(Protocol):
    """What the population path reads of a trial (``bridge.trial.Trial``)."""

    def fact_concepts(self) -> Set[str]: ...

    def condition_concepts(self) -> Set[str]: ...

    def gate_concepts(self) -> Set[str]: ...


@dataclass(frozen=True)
class Concepts:
    """The trial's concept sets as the workers use them (built once in the parent, inherited on fork)."""

    facts: frozenset[str]  # observation concepts some criterion reads
    conditions: frozenset[str]  # condition concepts some criterion reads, the gate ones included
    gate: frozenset[str]  # a Condition with one of these makes its patient a candidate

    @classmethod
    def of(cls, trial: TrialConcepts) -> Concepts:
        gate = frozenset(trial.gate_concepts())
        return cls(frozenset(trial.fact_concepts()), frozenset(trial.condition_concepts()) | gate, gate)


def default_trial() -> TrialConcepts:
    """The trial screened when none is given: the shipped definition (``bridge.trial.load_trial()``)."""
    from bridge.trial import load_trial  # the trial loader (YAML, schema) only when the population path runs

    return load_trial()


class Codes(Protocol):
    """What the two code checks read: a ``CodeMap``, or ``CachedCodes`` in front of one."""

    def condition_concepts(self, system: str | None, code: str | None) -> frozenset[str]: ...

    def observation_concept(self, system: str | None, code: str | None) -> str | None: ...


class CachedCodes:
    """A ``CodeMap`` whose answers are remembered per (system, code): the same few codes recur on every line."""

    def __init__(self, cmap: CodeMap, limit: int = 1 << 16) -> None:
        self.cmap, self.limit = cmap, limit
        self._memo: dict[tuple[str | None, str | None], frozenset[str]] = {}
        self._observations: dict[tuple[str | None, str | None], str | None] = {}

    def condition_concepts(self, system: str | None, code: str | None) -> frozenset[str]:
        key = (system, code)
        found = self._memo.get(key)
        if found is None:
            found = self.cmap.condition_concepts(system, code)
            if len(self._memo) < self.limit:
                self._memo[key] = found
        return found

    def observation_concept(self, system: str | None, code: str | None) -> str | None:
        key = (system, code)
        try:
            return self._observations[key]
        except KeyError:
            found = self.cmap.observation_concept(system, code)
            if len(self._observations) < self.limit:
                self._observations[key] = found
            return found


def patient_of(resource: dict[str, Any]) -> str | None:
    """The patient a resource belongs to, as the normalizer reads it (``facts._subject`` without aliases)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    return ref_id(resource.get("subject"), "Patient") or ref_id(resource.get("patient"), "Patient")


def is_gate_condition(resource: dict[str, Any], cmap: Codes, concepts: Concepts) -> bool:
    """Is this Condition coded (any coding) with a gate concept: does it make its subject a candidate?"""
    return any(cmap.condition_concepts(s, c) & concepts.gate for s, c in codings(resource.get("code")))


def relevant(resource: dict[str, Any], cmap: Codes, concepts: Concepts) -> bool:
    """Could this resource change an eligibility verdict? Any coding (any position, any component) counts."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return True
    if rtype == "Condition":
        return any(cmap.condition_concepts(s, c) & concepts.conditions for s, c in codings(resource.get("code")))
    if rtype != "Observation":
        return False
    facts, concept_of = concepts.facts, cmap.observation_concept
    if _any_fact(resource.get("code"), facts, concept_of):
        return True
    components = resource.get("component")
    if isinstance(components, list):
        for comp in components:
            if isinstance(comp, dict) and _any_fact(comp.get("code"), facts, concept_of):
                return True
    return False


def _any_fact(concept: Any, facts: frozenset[str], concept_of: Callable[[str | None, str | None], str | None]
              ) -> bool:
    """Does any coding of ``concept`` map to one of ``facts``? ``codings``' reading, its common shape — a
    ``coding`` list of objects with string ``system`` and ``code`` — read without the generator."""
    if type(concept) is dict:
        coding = concept.get("coding")
        if type(coding) is list:
            for c in coding:
                if type(c) is dict:
                    system, code = c.get("system"), c.get("code")
                    if type(system) is not str or type(code) is not str:
                        break  # an unusual coding: codings() reads the whole concept
                    if concept_of(system, code) in facts:
                        return True
            else:
                return False
    return any(concept_of(s, c) in facts for s, c in codings(concept))


__all__ = ["CachedCodes", "Codes", "Concepts", "TrialConcepts", "default_trial", "is_gate_condition", "patient_of",
           "relevant"]
