"""The consent gate: only patients whose most recent research Consent is in force are packaged."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from bridge.ingest.readers import Entry
from bridge.registry.consent import consent_decision, is_research_consent
from bridge.registry.package import build_packages
from bridge.registry.sources import collect_records
from tests.unit.test_registry_fixtures import (
    CONTEXT,
    administration,
    assessment,
    consent,
    patient_doc,
    records,
    rich_patient,
)

Json = dict[str, Any]
AS_OF = date(2026, 6, 15)
TREATMENT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]}
PRIVACY = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]


def test_an_active_research_consent_lets_the_patient_through() -> None:
    decision = consent_decision([consent()], AS_OF)
    assert (decision.allowed, decision.consent) == (True, "Consent/consent-zel-01")


@pytest.mark.parametrize(("consents", "reason"), [
    ([], "no research Consent"),
    ([consent(status="inactive")], "research Consent/consent-zel-01 is inactive"),
    ([consent(status="rejected")], "research Consent/consent-zel-01 is rejected"),
    ([consent(scope=TREATMENT, category=PRIVACY)], "no research Consent"),
    ([consent(status="draft")], "no research Consent"),
    ([consent(status="entered-in-error")], "no research Consent"),
    ([consent(provision={"type": "deny"})], "research Consent/consent-zel-01 denies (provision.type deny)"),
    ([consent(provision={"type": "permit", "period": {"start": "2025-01-01", "end": "2026-06-14"}})],
     "research Consent/consent-zel-01: provision.period does not cover the as-of date"),
    ([consent(provision={"period": {"start": "2026-06-16"}})],
     "research Consent/consent-zel-01: provision.period does not cover the as-of date"),
    ([consent(when="2026-06-16")], "research Consent/consent-zel-01 is dated after the as-of date"),
])
def test_refusals_and_their_reasons(consents: list[Json], reason: str) -> None:
    decision = consent_decision(consents, AS_OF)
    assert (decision.allowed, decision.reason) == (False, reason)


def test_period_boundaries_are_inclusive() -> None:
    on_end = consent(provision={"period": {"start": "2026-06-15", "end": "2026-06-15"}})
    assert consent_decision([on_end], AS_OF).allowed
    month = consent(provision={"period": {"end": "2026-06"}})  # a partial end date covers its whole month
    assert consent_decision([month], AS_OF).allowed


def test_scope_or_category_makes_it_a_research_consent() -> None:
    assert is_research_consent(consent(category=PRIVACY))
    assert is_research_consent(consent(scope=TREATMENT))
    assert not is_research_consent(consent(scope=TREATMENT, category=PRIVACY))


def test_the_most_recent_research_consent_decides() -> None:
    given = consent(cid="c-2025", when="2025-01-01")
    withdrawn = consent(cid="c-2026", status="inactive", when="2026-03-01")
    decision = consent_decision([given, withdrawn], AS_OF)
    assert (decision.allowed, decision.consent) == (False, "Consent/c-2026")
    regiven = consent(cid="c-2026b", when="2026-05-01")
    assert consent_decision([given, withdrawn, regiven], AS_OF).allowed
    # a newer draft is not a decision: the active one stands
    assert consent_decision([given, consent(cid="draft", status="draft", when="2026-06-01")], AS_OF).allowed


def test_a_treatment_consent_does_not_hide_a_research_one() -> None:
    newer_treatment = consent(cid="treat", status="inactive", when="2026-05-01", scope=TREATMENT, category=PRIVACY)
    assert consent_decision([consent(), newer_treatment], AS_OF).allowed


def test_build_lists_the_skipped_patients_with_the_reason() -> None:
    docs = [patient_doc(), patient_doc(pid="pt-b", mid="ma-b"), patient_doc(pid="pt-c", mid="ma-c"),
            patient_doc(pid="pt-d", mid="ma-d")]
    res = (rich_patient(), consent(), administration(),
           rich_patient("pt-b"), consent("pt-b", "consent-b", status="inactive"), administration("pt-b", "ma-b"),
           rich_patient("pt-c"), administration("pt-c", "ma-c"),
           consent("pt-d", "consent-d"))
    built = build_packages(assessment(*docs), records(*res), CONTEXT, ["infusion"])
    assert {p.patient for p in built.packages} == {"Patient/pt-zel-001"}
    assert [(s.patient, s.reason) for s in built.skipped] == [
        ("Patient/pt-b", "research Consent/consent-b is inactive"),
        ("Patient/pt-c", "no research Consent"),
        ("Patient/pt-d", "no Patient resource in the source")]


def test_consent_is_judged_on_the_assessment_date() -> None:
    ended = consent(provision={"period": {"end": "2026-12-31"}})
    built = build_packages(assessment(as_of="2027-02-01"), records(rich_patient(), ended, administration()),
                           CONTEXT)
    assert built.packages == [] and "provision.period" in built.skipped[0].reason


def test_consent_references_by_full_url_are_resolved() -> None:
    url = "urn:uuid:3f1e4c2a-0000-4000-8000-000000000001"
    patient = {k: v for k, v in rich_patient().items() if k != "id"}
    entries = [Entry(patient, "e0", url), Entry({**consent(), "patient": {"reference": url}}, "e1")]
    found = collect_records(entries)
    assert list(found) == [f"Patient/{url.removeprefix('urn:uuid:')}"]
    assert len(found[f"Patient/{url.removeprefix('urn:uuid:')}"].consents) == 1
