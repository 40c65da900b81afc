"""Three-valued evaluation over not-usable values (RULES.md §3 "Usable values").

A not-usable value (unconvertible unit, implausible, undated, equivocal) is an *unknown* value, never an absent
one. A verdict is ``met`` or ``not-met`` only when it would be the same whatever that value held; otherwise it is
``unknown`` and the reason names the resource.

How: a rule is evaluated in several *worlds*. The first leaves the not-usable facts out (as if they were absent
or erroneous). The others put each not-usable fact back with a value from the end points of where it may lie
(``Fact.span``: its concept's plausible range, every score of a score's range, positive and negative for a
qualitative result), an undated one on the as-of date. Every rule building block (``bridge.evaluate.blocks``) is
monotone in each of its quantities (one threshold per comparison), so the range's ends reach every answer an
interior value could give; every score of a range is tried because score rules are two-sided (e.g. ECOG 0-2). The
not-usable facts of one concept take the same value in a world (a rule reads the latest of a concept, or whether
any crosses a threshold, for which that is exact), so a rule over *k* concepts with not-usable values is evaluated
``1 + product(options)`` times — usually once, since most patients have none. Which concepts a criterion reads is
what its block declares (``Trial.reads``), never a list kept beside the rules.

Because the first world is always among them, adding a not-usable value can only keep a verdict or make it
``unknown``: it can never turn ``met`` into ``not-met`` or the reverse.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import date

from bridge.model import Fact, PatientFacts, Quantity, Span, Verdict

MAX_WORLDS = 4096  # beyond this many combinations the verdict is unknown without enumerating them


def substitutes(span: Span | None) -> list[Quantity | int | bool]:
    """The values a not-usable fact is tried with: the span's ends (every integer for a score)."""
    if span is None or span.kind == "bool":
        return [True, False]
    if span.kind == "score":
        return list(range(int(span.low), int(span.high) + 1))
    return [Quantity(span.low, span.unit), Quantity(span.high, span.unit)]


def unusable_facts(pf: PatientFacts, concepts: Iterable[str], as_of: date) -> dict[str, list[Fact]]:
    """The not-usable facts of ``concepts`` that could count on ``as_of`` (undated, or dated on or before it)."""
    wanted = frozenset(concepts)
    out: dict[str, list[Fact]] = {}
    for f in pf.facts:
        if f.concept in wanted and not f.usable and (f.when is None or f.when <= as_of):
            out.setdefault(f.concept, []).append(f)
    return out


def _world(pf: PatientFacts, drop: set[int], put_back: list[Fact]) -> PatientFacts:
    kept = [f for f in pf.facts if id(f) not in drop]
    return replace(pf, facts=kept + put_back)


def _placed(facts: list[Fact], value: Quantity | int | bool, as_of: date) -> list[Fact]:
    return [replace(f, value=value, when=f.when or as_of, problem=None, span=None) for f in facts]


def _why(facts: Iterable[Fact]) -> str:
    return ", ".join(f"{f.source} ({f.problem or 'no value'})" for f in facts)


def decide(rule: Callable[[PatientFacts], Verdict], pf: PatientFacts, concepts: Iterable[str],
           as_of: date) -> Verdict:
    """``rule(pf)`` in three-valued logic over the not-usable facts of ``concepts`` (see the module docstring)."""
    unusable = unusable_facts(pf, concepts, as_of)
    if not unusable:
        return rule(pf)
    drop = {id(f) for facts in unusable.values() for f in facts}
    base = rule(_world(pf, drop, []))
    keys = sorted(unusable)
    options = [substitutes(unusable[k][0].span) for k in keys]
    total = 1
    for opts in options:
        total *= len(opts)
    if total > MAX_WORLDS:
        return _unknown(base, [f for k in keys for f in unusable[k]])
    results: dict[tuple[int, ...], str] = {}
    for choice in itertools.product(*(range(len(o)) for o in options)):
        put_back = [placed for n, i in enumerate(choice) for placed in _placed(unusable[keys[n]], options[n][i], as_of)]
        results[choice] = rule(_world(pf, drop, put_back)).result
    if all(r == base.result for r in results.values()):
        return base
    deciding = [k for n, k in enumerate(keys) if _varies(results, n)]
    return _unknown(base, [f for k in deciding or keys for f in unusable[k]])


def _varies(results: dict[tuple[int, ...], str], position: int) -> bool:
    """Does changing only the value at ``position`` change some world's result (or differ from the base)?"""
    groups: dict[tuple[int, ...], set[str]] = {}
    for choice, result in results.items():
        groups.setdefault(choice[:position] + choice[position + 1:], set()).add(result)
    return any(len(found) > 1 for found in groups.values())


def _unknown(base: Verdict, facts: list[Fact]) -> Verdict:
    refs = tuple(dict.fromkeys([*base.evidence, *(f.source for f in facts)]))
    reason = f"{base.reason} (from the usable values alone); unknown: not-usable value(s) could change the " \
             f"result: {_why(facts)}"
    return Verdict(base.criterion, "unknown", reason, refs)


__all__ = ["MAX_WORLDS", "decide", "substitutes", "unusable_facts"]
