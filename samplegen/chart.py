"""One patient's chart as FHIR R4 resources: the one builder the three generators share.

Each method writes one resource type -- Patient, Encounter, Condition, Observation, MedicationAdministration,
Consent -- in one fixed element order and adds it to the chart. It takes its values ready-made (ids, local
dateTimes, codings, quantities), so what a generator varies stays in the generator: its clock (days before an
as-of date, days after day 0, random minutes), its ids, its defaults and the order it draws random values in
(the population's output depends on that order). ``add`` is where a built resource goes: the chart's list
here, NDJSON lines in the population generator, which overrides it.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from samplegen.kit import (
    ANIMAL,
    CLIN_STATUS,
    COND_CAT,
    HTEST,
    MRN,
    OBS_CAT,
    TZ,
    VER_STATUS,
    GenerationError,
    Json,
    coding,
    concept,
)

SYNTHETIC = "synthetic value"  # the note on a published case's invented values


class Chart:
    """The resources of one patient, in the order built.

    ``pid`` is the Patient's id; the other resources' ids are ``<prefix>-<suffix>`` (``rid``; the prefix is the
    patient id unless given). ``anchor`` is the date ``at`` counts days from. ``tagged`` puts the HTEST security
    tag in every resource's meta; ``published`` marks a published case, whose Observations without a note say
    "synthetic value". ``rng`` is the chart's reproducible source of varying values.
    """

    def __init__(self, pid: str, *, anchor: date | None = None, prefix: str | None = None, tagged: bool = True,
                 published: bool = False, rng: random.Random | None = None) -> None:
        self.pid = pid
        self.anchor = anchor
        self.prefix = prefix or pid
        self.tagged = tagged
        self.published = published
        self.rng = rng if rng is not None else random.Random(pid)  # noqa: S311 - reproducible synthetic values
        self.resources: list[Json] = []

    # -------------------------------------------------------------------- ids, time, envelope
    def rid(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def at(self, day: int, hour: int, minute: int = 0) -> str:
        """The local dateTime ``day`` days after the anchor date (negative: before it)."""
        if self.anchor is None:
            raise GenerationError(f"{self.pid}: the chart has no anchor date")
        return f"{(self.anchor + timedelta(days=day)).isoformat()}T{hour:02d}:{minute:02d}:00{TZ}"

    def subject(self) -> Json:
        return {"reference": f"Patient/{self.pid}"}

    def meta(self, version: int | None = None, updated: str | None = None) -> Json:
        """versionId, lastUpdated and the HTEST tag, each when there is one (may be empty)."""
        meta: Json = {}
        if version is not None:
            meta["versionId"] = str(version)
        if updated:
            meta["lastUpdated"] = updated
        if self.tagged:
            meta["security"] = [HTEST]
        return meta

    def add(self, resource: Json) -> Json:
        self.resources.append(resource)
        return resource

    def _start(self, rtype: str, rid: str, version: int | None = None, updated: str | None = None) -> Json:
        res: Json = {"resourceType": rtype, "id": rid}
        meta = self.meta(version, updated)
        if meta:
            res["meta"] = meta
        return res

    # -------------------------------------------------------------------- resources
    def patient(self, birth: str | None, gender: str, *, mrn: str | None = None, name: str | None = None,
                deceased: str | None = None, animal: Json | None = None, version: int | None = None,
                updated: str | None = None) -> Json:
        """The Patient (id ``pid``); MRN ``SYN-<PID>`` and name ``Synthetic <PID>`` unless given; ``animal``: the
        species of a non-human patient (the patient-animal extension)."""
        res = self._start("Patient", self.pid, version, updated)
        if animal is not None:
            res["extension"] = [{"url": ANIMAL, "extension": [{"url": "species", "valueCodeableConcept": animal}]}]
        res |= {"identifier": [{"system": MRN, "value": mrn or f"SYN-{self.pid.upper()}"}], "active": True,
                "name": [{"text": name or f"Synthetic {self.pid.upper()}"}], "gender": gender}
        if birth:
            res["birthDate"] = birth
        if deceased:
            res["deceasedDateTime"] = deceased
        return self.add(res)

    def encounter(self, rid: str, klass: Json, start: str, end: str | None = None, *, status: str = "finished",
                  kind: Json | None = None, reason: str | None = None, subject: Json | None = None) -> Json:
        """An Encounter of class ``klass`` (a v3 ActCode coding); ``kind`` its type, ``reason`` a text reason."""
        res = self._start("Encounter", rid)
        res |= {"status": status, "class": klass}
        if kind is not None:
            res["type"] = [kind]
        res |= {"subject": subject or self.subject(), "period": {"start": start, **({"end": end} if end else {})}}
        if reason:
            res["reasonCode"] = [concept(text=reason)]
        return self.add(res)

    def condition(self, rid: str, code: Json, *, clinical: str | None = "active", verification: str = "confirmed",
                  category: str = "encounter-diagnosis", onset: str | None = None, abated: str | None = None,
                  recorded: str | None = None, note: str | None = None, subject: Json | None = None,
                  updated: str | None = None) -> Json:
        """A Condition; ``clinical`` None leaves clinicalStatus out (as an entered-in-error one must)."""
        res = self._start("Condition", rid, updated=updated)
        if clinical is not None:
            res["clinicalStatus"] = concept(coding(CLIN_STATUS, clinical))
        res["verificationStatus"] = concept(coding(VER_STATUS, verification))
        res |= {"category": [concept(coding(COND_CAT, category))], "code": code, "subject": subject or self.subject()}
        if onset is not None:
            res["onsetDateTime"] = onset
        if abated is not None:
            res["abatementDateTime"] = abated
        if recorded is not None:
            res["recordedDate"] = recorded
        if note:
            res["note"] = [{"text": note}]
        return self.add(res)

    def observation(self, rid: str, code: Json, value: Json, effective: str, *, status: str = "final",
                    category: str | None = None, encounter: str | None = None, issued: str | None = None,
                    ranges: list[Json] | None = None, note: str | None = None, subject: Json | None = None,
                    version: int | None = None, updated: str | None = None) -> Json:
        """An Observation; ``value`` holds its value[x] or components, ``encounter`` the Encounter's id."""
        res = self._start("Observation", rid, version, updated)
        res["status"] = status
        if category:
            res["category"] = [concept(coding(OBS_CAT, category))]
        res |= {"code": code, "subject": subject or self.subject()}
        if encounter:
            res["encounter"] = {"reference": f"Encounter/{encounter}"}
        res["effectiveDateTime"] = effective
        if issued:
            res["issued"] = issued
        res |= value
        if ranges:
            res["referenceRange"] = ranges
        note = note or (SYNTHETIC if self.published else None)
        if note:
            res["note"] = [{"text": note}]
        return self.add(res)

    def medication(self, rid: str, medication: Json, effective: str, dosage: Json, *, status: str = "completed",
                   reason: str | None = None, encounter: str | None = None, note: str | None = None,
                   subject: Json | None = None) -> Json:
        """A MedicationAdministration; ``reason`` a text statusReason, ``encounter`` the context's id."""
        res = self._start("MedicationAdministration", rid)
        res["status"] = status
        if reason:
            res["statusReason"] = [concept(text=reason)]
        res |= {"medicationCodeableConcept": medication, "subject": subject or self.subject()}
        if encounter:
            res["context"] = {"reference": f"Encounter/{encounter}"}
        res |= {"effectiveDateTime": effective, "dosage": dosage}
        if note:
            res["note"] = [{"text": note}]
        return self.add(res)

    def consent(self, rid: str, when: str, *, active: bool) -> Json:
        """A research Consent, active or withdrawn (inactive)."""
        res = self._start("Consent", rid)
        res |= {"status": "active" if active else "inactive",
                "scope": concept(coding("http://terminology.hl7.org/CodeSystem/consentscope", "research")),
                "category": [concept(coding("http://terminology.hl7.org/CodeSystem/consentcategorycodes",
                                            "research"))],
                "patient": self.subject(), "dateTime": when}
        return self.add(res)
