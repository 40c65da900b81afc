"""Pull source: fetch, per patient, only what the criteria need from the EHR through search.

``$everything`` is not assumed. For one patient: the Patient (read), its Conditions, its Observations with
the mapped codes (default tables + site map) dated within the look-back, its Encounters and, for the
assessment, its MedicationAdministrations. Without patient ids, the admitted patients are those with an
inpatient Encounter that is in progress / arrived, or that started within ``recent_days`` of the as-of date.
Items come out in the reader format (``Entry(resource, where)``), so everything downstream is the same as
for a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from typing import Any

from bridge.client import FhirClient
from bridge.ingest.readers import Entry, Item
from bridge.normalize.mappings import CodeMap

INPATIENT_CLASSES = ("IMP", "ACUTE", "NONAC")
CODES_PER_QUERY = 40


def _code_params(cmap: CodeMap) -> list[str]:
    """``system|code`` tokens of every mapped observation code, in stable order, chunked for URL length."""
    tokens = sorted(f"{system}|{code}" for (system, code) in cmap.observations)
    return [",".join(tokens[i:i + CODES_PER_QUERY]) for i in range(0, len(tokens), CODES_PER_QUERY)]


def _entries(resources: Iterable[dict[str, Any]], where: str) -> Iterator[Item]:
    for i, res in enumerate(resources):
        yield Entry(res, f"{where} #{i}")


def fetch_patient(client: FhirClient, patient_id: str, cmap: CodeMap, as_of: date,
                  lookback_days: int = 730, medications: bool = False) -> Iterator[Item]:
    """Every resource of one patient that a criterion (or the assessment) can use."""
    yield Entry(client.read("Patient", patient_id).resource, f"Patient/{patient_id}")
    since = (as_of - timedelta(days=lookback_days)).isoformat()
    yield from _entries(client.search("Condition", {"patient": patient_id}, matches_only=True),
                        f"Condition?patient={patient_id}")
    for codes in _code_params(cmap):
        params = {"patient": patient_id, "code": codes, "date": f"ge{since}"}
        yield from _entries(client.search("Observation", params, matches_only=True),
                            f"Observation?patient={patient_id}")
    yield from _entries(client.search("Encounter", {"patient": patient_id}, matches_only=True),
                        f"Encounter?patient={patient_id}")
    if medications:
        yield from _entries(client.search("MedicationAdministration", {"patient": patient_id}, matches_only=True),
                            f"MedicationAdministration?patient={patient_id}")


def admitted_patients(client: FhirClient, as_of: date, recent_days: int = 7) -> list[str]:
    """Ids of patients with an active, or recently started, inpatient Encounter."""
    ids: set[str] = set()
    queries = [{"class": ",".join(INPATIENT_CLASSES), "status": "in-progress,arrived"},
               {"class": ",".join(INPATIENT_CLASSES), "date": f"ge{(as_of - timedelta(days=recent_days)).isoformat()}"}]
    for params in queries:
        for enc in client.search("Encounter", params, matches_only=True):
            ref = (enc.get("subject") or {}).get("reference", "")
            if isinstance(ref, str) and ref.startswith("Patient/") and _is_inpatient(enc):
                ids.add(ref.split("/", 1)[1])
    return sorted(ids)


def _is_inpatient(enc: dict[str, Any]) -> bool:
    """Re-checked here: a server may ignore a search parameter it does not support."""
    klass = enc.get("class")
    return isinstance(klass, dict) and klass.get("code") in INPATIENT_CLASSES


def pull(client: FhirClient, cmap: CodeMap, as_of: date, patient_ids: Iterable[str] | None = None,
         medications: bool = False) -> Iterator[Item]:
    ids = list(patient_ids) if patient_ids else admitted_patients(client, as_of)
    for pid in ids:
        yield from fetch_patient(client, pid, cmap, as_of, medications=medications)


__all__ = ["admitted_patients", "fetch_patient", "pull"]
