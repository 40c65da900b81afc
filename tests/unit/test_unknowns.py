"""bridge.evaluate.unknowns: verdicts over not-usable values (RULES.md §3), on domain facts."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.evaluate.eligibility import screen
from bridge.evaluate.unknowns import decide, substitutes
from bridge.model import Fact, PatientFacts, Quantity, Span
from bridge.normalize.facts import span_of
from bridge.normalize.mappings import load_code_map
from bridge.trial import load_trial
from tests.factories import OPTS, ago, dx, flag, patient, q, score

CMAP = load_code_map()


def unusable(concept: str, days_ago: int | None = 1, source: str = "Observation/bad") -> Fact:
    return Fact(concept, None, ago(days_ago) if days_ago is not None else None, source,
                problem="Observation.valueQuantity.value: outside the plausible range", span=span_of(CMAP, concept))


def candidate() -> PatientFacts:
    return patient(dx("acute-leukemia", "aml", code="C92.02", relapse=True), score("ecog", 1),
                   q("cd7-blast-percent", 80), q("lvef", 60), q("ast", 30, uln=40), q("alt", 30, uln=40),
                   q("bilirubin-total", 0.8), flag("pregnancy-test", False), flag("hbsag", False),
                   flag("hcv-antibody", False), flag("hiv-test", False))


def results(pf: PatientFacts) -> dict[str, str]:
    return {v.criterion: v.result for v in screen(pf, OPTS).verdicts}


def test_substitutes_cover_the_span() -> None:
    assert substitutes(Span("bool")) == [True, False]
    assert substitutes(Span("score", 0, 5)) == [0, 1, 2, 3, 4, 5]
    assert substitutes(Span("quantity", 0, 100, "%")) == [Quantity(0, "%"), Quantity(100, "%")]


def test_no_unusable_facts_is_one_evaluation() -> None:
    calls: list[int] = []

    def rule(pf: PatientFacts) -> object:
        calls.append(1)
        return screen(pf, OPTS).verdict("inc-ecog")

    decide(rule, candidate(), ("ecog",), OPTS.as_of)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_two_sided_score_range_is_unknown() -> None:
    pf = candidate()
    pf.facts.append(unusable("ecog", days_ago=0))
    v = screen(pf, OPTS).verdict("inc-ecog")
    assert v.result == "unknown" and "Observation/bad" in v.evidence and "Observation/bad" in v.reason


def test_or_of_opposite_directions_is_unknown() -> None:
    # LVEF not usable, NYHA III (not-met): LVEF >= 50 would make it met, a low LVEF not-met
    pf = patient(score("nyha-class", 3), unusable("lvef"))
    assert screen(pf, OPTS).verdict("inc-cardiac").result == "unknown"
    pf = patient(score("nyha-class", 2), unusable("lvef"))
    assert screen(pf, OPTS).verdict("inc-cardiac").result == "met"


def test_undated_unusable_counts_as_possibly_today() -> None:
    pf = candidate()
    pf.facts.append(unusable("hiv-test", days_ago=None))
    assert screen(pf, OPTS).verdict("exc-hiv").result == "unknown"


def test_unusable_after_the_as_of_date_is_ignored() -> None:
    pf = candidate()
    pf.facts.append(unusable("ecog", days_ago=-3))
    assert screen(pf, OPTS).verdict("inc-ecog").result == "met"


def test_decided_patient_stays_a_candidate_beside_unusable_values_of_unread_concepts() -> None:
    pf = candidate()
    pf.facts.append(unusable("platelets"))
    assert screen(pf, OPTS).status == "candidate"


ALL_READ = sorted(load_trial().fact_concepts())
DECIDED = [candidate(), patient(dx("acute-leukemia", "aml", code="C92.00"), score("ecog", 4), q("lvef", 30),
                                 score("nyha-class", 4), q("ast", 500, uln=40), flag("hbsag", True),
                                 flag("hiv-test", True), sex="male")]


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from(range(len(DECIDED))),
       added=st.lists(st.tuples(st.sampled_from(ALL_READ), st.one_of(st.none(), st.integers(-5, 200))),
                      min_size=1, max_size=4))
def test_adding_unusable_values_only_keeps_or_unknowns(which: int, added: list[tuple[str, int | None]]) -> None:
    base = DECIDED[which]
    before = results(base)
    pf = replace(base, facts=list(base.facts))
    for n, (concept, days) in enumerate(added):
        pf.facts.append(unusable(concept, days, source=f"Observation/bad{n}"))
    after = results(pf)
    for cid, result in before.items():
        assert after[cid] in (result, "unknown"), (cid, result, after[cid])
