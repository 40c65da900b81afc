"""Eligibility (RULES.md §2): a trial's criteria, each met / not-met / unknown with evidence and a reason.

Pure: ``PatientFacts``, ``RuleOptions`` and a ``Trial`` in, ``Verdict``s out. No FHIR, no I/O, no clock. Each
criterion of the trial file names a rule building block (``bridge.evaluate.blocks``) and its parameters; this
module runs them in the file's order, through ``decide`` (``bridge.evaluate.unknowns``) over the not-usable
values of the fact concepts each block declares, and derives the overall status. For an exclusion, ``met`` means
the excluding condition is present. ``trial=None`` is the shipped default trial (``bridge.trial.load_trial``);
the criterion ids, their kinds and the concepts they read are the ``Trial``'s to say (``criterion_ids``,
``inclusions``, ``exclusions``, ``advisory``, ``reads``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from bridge.config import RuleOptions
from bridge.evaluate.blocks import Context, completed_years, run_block
from bridge.evaluate.unknowns import decide
from bridge.model import PatientFacts, Verdict
from bridge.trial import Criterion, Trial, load_trial


@dataclass(frozen=True)
class Screening:
    patient: str
    status: str
    verdicts: tuple[Verdict, ...]

    def verdict(self, criterion: str) -> Verdict:
        return next(v for v in self.verdicts if v.criterion == criterion)


def _verdict(c: Criterion, ctx: Context, pf: PatientFacts) -> Verdict:
    out = run_block(c.block, pf, ctx, c.params)
    return Verdict(c.id, out.result, out.reason, tuple(dict.fromkeys(e for e in out.evidence if e)))


def evaluate_criterion(cid: str, pf: PatientFacts, options: RuleOptions, site_uln: Mapping[str, float] | None = None,
                       trial: Trial | None = None) -> Verdict:
    """One criterion's verdict as its block gives it (without ``decide``'s weighing of not-usable values)."""
    t = trial or load_trial()
    return _verdict(t.criterion(cid), Context(options, site_uln or {}), pf)


def inc_age(pf: PatientFacts, options: RuleOptions, trial: Trial | None = None) -> Verdict:
    """The age criterion alone (kept for callers of the former per-criterion functions)."""
    return evaluate_criterion("inc-age", pf, options, trial=trial)


def overall_status(verdicts: tuple[Verdict, ...], trial: Trial | None = None) -> str:
    """ineligible / candidate / potential-candidate (RULES.md §2), advisory criteria ignored."""
    t = trial or load_trial()
    counted = [v for v in verdicts if t.counted(v.criterion)]
    if any(t.blocking(v.criterion, v.result) for v in counted):
        return "ineligible"
    wanted = {"inclusion": "met", "exclusion": "not-met"}
    if all(v.result == wanted[t.criterion(v.criterion).kind] for v in counted):
        return "candidate"
    return "potential-candidate"


def screen(pf: PatientFacts, options: RuleOptions, site_uln: Mapping[str, float] | None = None,
           trial: Trial | None = None) -> Screening:
    """Every criterion of ``trial`` (default: the shipped one) for one patient, in the file's order."""
    t = trial or load_trial()
    ctx = Context(options, site_uln or {})
    vs = tuple(decide(partial(_verdict, c, ctx), pf, t.reads(c.id).facts, options.as_of) for c in t.criteria)
    return Screening(pf.ref, overall_status(vs, t), vs)


__all__ = ["Screening", "completed_years", "evaluate_criterion", "inc_age", "overall_status", "screen"]
