"""Registry submissions (issue #6): de-identified, consent-gated FHIR packages, validated, delivered once.

``sources`` (raw Patient/Consent/MedicationAdministration per patient) -> ``consent`` (the gate) ->
``package`` (+ ``resources``, ``timepoints``, ``deid``, ``pseudonym``) -> ``validate`` -> ``export`` (files)
-> ``outbox`` (SQLite) -> ``submit`` over ``transport`` (OAuth2, retries, idempotency key). See docs/registry.md.
"""
