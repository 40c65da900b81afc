"""The default ``rescreen(patient_id) -> status`` of the service: pull, screen, publish, record.

Exactly what ``bridge prescreen`` does for one patient, with the EHR as the source: the patient's data is
pulled with the bridge's own credentials (``bridge.ingest.pull.fetch_patient``, what a pull of one named
patient fetches), then normalized and screened as of today (``today`` is injected) by the pipeline's
``screen_one`` — the same load and screen as every command — and the ResearchSubject is published idempotently
(``bridge.publish.publisher.publish_subject``: conditional update on its identifier, skipped when unchanged;
with its Provenance in one transaction Bundle where the EHR's CapabilityStatement offers transactions).

Who is screened (RULES.md §2): a patient without a valid Patient resource (absent, or rejected by validation),
a non-human patient or one deceased on the as-of date is **not screened**: nothing is published, nothing is
saved as a screening, and the patient's earlier screening, if the store holds one, is deleted and the patient
recorded as not screened (``Store.mark_not_screened``) — the coordinator page no longer lists it.
``rescreen`` returns ``not-screened`` (the reason stays in the store, not in the worker's log).

Who gets a ResearchSubject is the one publication policy of ``bridge.publish.policy``, the same as the CLI's
``--publish``: the diagnosis criterion (``inc-diagnosis``) is not ``not-met``, or the patient already has a
ResearchSubject (which is then updated). Every other admitted patient is screened and left alone — no trial
membership is written into the record of a patient without an acute leukaemia; ``rescreen`` returns
``not-published`` for them. The ResearchStudy is published once per process before the first subject. The
store records the screening (coordinator page) and what was published (served read-only at ``/fhir``).

An automated re-screen never overwrites the study team's decision (issue #17): the publisher keeps the one the
EHR's subject carries (``bridge.publish.subject.reviewed_subject``), and when the store's actions add up to a
decision the published subject does not carry (its write-back pending, or racing this re-screen), it is
written back right after (``_keep_decision``) with ``changedSinceReview`` against the new screening.

The trial is the service's ``trial`` setting (``BRIDGE_TRIAL``; default the shipped file: ``from_settings``).
Before its first re-screen publishes or saves anything, the store records the trial version and refuses a changed
file under a ruleset version it already holds (``StoreError``, one line); every saved screening names the trial
id and ruleset version, and the ResearchStudy, the ResearchSubjects and their Provenance are the trial's (its
logical id, ``<trial id>-<patient id>``, its rule set).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from typing import TYPE_CHECKING, Protocol, cast

from bridge.client import FhirClient
from bridge.config import OrganReading, RuleOptions, Settings
from bridge.decisions import decision
from bridge.errors import BridgeError
from bridge.evaluate.eligibility import Screening
from bridge.ingest.pull import fetch_patient
from bridge.model import NotScreened
from bridge.normalize.mappings import CodeMap
from bridge.pipeline import screen_one
from bridge.publish.policy import publishable
from bridge.publish.publisher import Written, find_subject, publish_study, publish_subject
from bridge.publish.study import study_logical_id
from bridge.publish.subject import decision_from_subject, subject_fingerprint, subject_identifier
from bridge.state import PublishedIndex, PublishedRecord, Screenings, TrialVersions, save_prescreen
from bridge.trial import Trial, load_trial

if TYPE_CHECKING:
    from bridge.publish.decision import DecisionState

log = logging.getLogger("bridge.service.rescreen")
NOT_PUBLISHED = "not-published"  # the status returned for an admitted patient without the study's diagnosis
NOT_SCREENED = "not-screened"  # the status returned for a patient RULES.md §2 does not screen


def study_key(trial: Trial | None = None) -> str:
    """The published-index key of the trial's ResearchStudy (``ResearchStudy|<logical id>``)."""
    return f"ResearchStudy|{study_logical_id(trial)}"


class RescreenState(PublishedIndex, Screenings, TrialVersions, Protocol):
    """What the re-screen keeps: the published index, the screenings and the trial versions."""


class PublishingRescreen:
    """``rescreen`` for the worker: one patient from the EHR to a published ResearchSubject."""

    def __init__(self, client: FhirClient, cmap: CodeMap, store: RescreenState,
                 organ_reading: OrganReading = "organ-function", today: Callable[[], date] = date.today,
                 clock: Callable[[], float] = time.time, trial: Trial | None = None) -> None:
        self.client, self.cmap, self.store = client, cmap, store
        self.organ_reading = organ_reading
        self.today, self.clock = today, clock
        self.trial = trial or load_trial()
        self._study_lock = threading.Lock()
        self._study_done = False
        self._trial_lock = threading.Lock()
        self._trial_recorded = False

    @classmethod
    def from_settings(cls, client: FhirClient, cmap: CodeMap, store: RescreenState, settings: Settings
                      ) -> PublishingRescreen:
        """The service's re-screen, for the trial of the ``trial`` setting (default: the shipped file)."""
        return cls(client, cmap, store, trial=load_trial(settings.trial))

    def __call__(self, patient_id: str) -> str:
        self._ensure_trial()
        options = RuleOptions.for_trial(self.trial, self.today(), organ_function_reading=self.organ_reading)
        result = self.screen(patient_id, options)
        if isinstance(result, NotScreened):
            self._save((), [result], options)
            return NOT_SCREENED
        if not publishable(result, self._has_subject):
            return NOT_PUBLISHED
        self._ensure_study()
        written = publish_subject(self.client, result, options, transaction=None, trial=self.trial)
        self._record(patient_id, result, options, written)
        self._keep_decision(patient_id)
        return result.status

    def _has_subject(self, patient_id: str) -> bool:
        """The patient already has a ResearchSubject: recorded here, or found on the EHR by identifier."""
        system, value = subject_identifier(patient_id, self.trial)
        if self.store.get_published(f"ResearchSubject|{system}|{value}") is not None:
            return True
        return find_subject(self.client, patient_id, self.trial) is not None

    def screen(self, patient_id: str, options: RuleOptions) -> Screening | NotScreened:
        """The patient's screening, or why it is not screened (RULES.md §2; a Patient resource that failed
        validation, with nothing else of the patient, leaves no facts at all: no Patient resource)."""
        items = fetch_patient(self.client, patient_id, self.cmap, options.as_of)
        return screen_one(items, patient_id, options, self.cmap, self.trial)

    def _ensure_study(self) -> None:
        with self._study_lock:
            if self._study_done:
                return
            written = publish_study(self.client, self.organ_reading, trial=self.trial)
            self._remember(study_key(self.trial), written)
            self._study_done = True

    def _remember(self, key: str, written: Written) -> None:
        """Record a written resource as the EHR holds it now (read back: the server's id and version)."""
        rtype, _, rid = written.reference.partition("/")
        current = self.store.get_published(key)
        if current is not None and current.version == written.version and current.resource_id == rid:
            return
        resource = self.client.read(rtype, rid).resource
        fingerprint = subject_fingerprint(resource) if rtype == "ResearchSubject" else str(written.version)
        self.store.put_published(PublishedRecord(key, rtype, rid, fingerprint, written.version, resource,
                                                 self.clock()))

    def _ensure_trial(self) -> None:
        """Once per process, before anything is published or saved: the store records this trial version, or
        refuses a changed file under a version it already holds (``StoreError``; the worker keeps the task)."""
        with self._trial_lock:
            if not self._trial_recorded:
                self.store.record_trial(self.trial.id, self.trial.ruleset_version, self.trial.digest)
                self._trial_recorded = True

    def _save(self, screenings: Sequence[Screening], not_screened: Sequence[NotScreened], options: RuleOptions) -> None:
        """``save_prescreen`` naming the trial and its ruleset version."""
        save_prescreen(self.store, screenings, not_screened, options.as_of, self.clock(), trial=self.trial.id,
                       ruleset_version=self.trial.ruleset_version)

    def _keep_decision(self, patient_id: str) -> None:
        """The study team's decision in the store is on the subject just published (the publisher kept the one
        the EHR held): when it is not — its write-back is pending, or ran while this re-screen was writing — it
        is written back now (``bridge.publish.decision``), with ``changedSinceReview`` against this screening.
        A failure leaves the action pending for the worker's retry (``write_back_pending``), never fails the
        re-screen."""
        if not callable(getattr(self.store, "actions", None)):  # a store without the study team's actions
            return
        from bridge.publish.decision import DecisionWriter, team_decision

        state = cast("DecisionState", self.store)
        d = decision(state.actions(self.trial.id, patient_id))
        if d.last is None:
            return
        system, value = subject_identifier(patient_id, self.trial)
        held = self.store.get_published(f"ResearchSubject|{system}|{value}")
        on_subject = decision_from_subject(held.resource) if held is not None else None
        wanted = team_decision(d, self.trial)
        if on_subject is not None and wanted is not None and replace(on_subject, changed=False) == wanted:
            return
        try:
            DecisionWriter(state, self.trial, self.client, self.clock)(d.last.seq)
        except BridgeError as exc:
            log.warning("re-screen: the study team's decision could not be written back (%s); it stays pending",
                        type(exc).__name__)

    def _record(self, patient_id: str, screening: Screening, options: RuleOptions, written: Written) -> None:
        self._save([screening], (), options)
        system, value = subject_identifier(patient_id, self.trial)
        self._remember(f"ResearchSubject|{system}|{value}", written)


__all__ = ["NOT_PUBLISHED", "NOT_SCREENED", "PublishingRescreen", "RescreenState", "study_key"]
