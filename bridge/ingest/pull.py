"""Pull source: fetch, per patient, only what the criteria need from the EHR through search.

``$everything`` is not assumed. For one patient: the Patient (read), its Conditions, its Observations with
the mapped codes (default tables + site map), its Encounters and, for the assessment, its
MedicationAdministrations. Without patient ids, the admitted patients are those with an inpatient Encounter
that is in progress / arrived, or that started within ``recent_days`` before the as-of date.
Items come out in the reader format (``Entry(resource, where)``), so everything downstream is the same as
for a file: a pull gives the same verdicts, reasons and evidence as the same resources read from disk.

The look-back. Observations of most concepts are fetched with ``date=ge<as-of − lookback_days>``: every
rule that reads them has a window shorter than the look-back (``LOOKBACK_DAYS``, lengthened for a trial with a
longer window). The concepts a criterion reads at any age — its block declares them (``Trial.any_age_concepts``:
a positive HBsAg, HCV RNA or HIV test, an HBV DNA above the threshold, a refractory or CNS finding decide however
old they are; an out-of-window pregnancy test is still named as evidence) — are fetched without a date,
otherwise an old positive test would vanish from the pull and flip an exclusion. No list is kept here:
``tests/unit/test_pull.py`` checks the trial's declarations against the rules themselves.

Search parameters are trusted to narrow, never to decide: a server may ignore one it does not support and
return more, so the admitted-patient query re-checks class, status and start date on every Encounter.
The code tables keep codes normalised to upper case while the rules match codes case-insensitively; a
server matches tokens case-sensitively, so each code is sent upper-case and, when it has letters, lower-case
too. A record spelling a local code in mixed case ("Fc-Cd7") is found in a file but not by a pull.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from typing import Any

from bridge.client import FhirClient
from bridge.errors import ServerRejected
from bridge.ingest.readers import Entry, Item
from bridge.normalize.fhirpath import local_date, ref_id
from bridge.normalize.mappings import CodeMap
from bridge.trial import Trial, load_trial

INPATIENT_CLASSES = ("IMP", "ACUTE", "NONAC")
ADMITTED_STATUSES = ("in-progress", "arrived")
CODES_PER_QUERY = 40
LOOKBACK_DAYS = 730


def prescreen_lookback(trial: Trial | None = None) -> int:
    """The pre-screen look-back: ``LOOKBACK_DAYS``, or longer than the trial's longest window if that is longer."""
    longest = max((trial or load_trial()).windows().values(), default=0)
    return max(LOOKBACK_DAYS, longest + 1)


def _tokens(cmap: CodeMap, any_age: bool, trial: Trial | None) -> list[str]:
    """``system|code`` tokens of the mapped observation codes of one kind (any-age or windowed), sorted."""
    wanted = (trial or load_trial()).any_age_concepts()
    tokens: set[str] = set()
    for (system, code), concept in cmap.observations.items():
        if (concept in wanted) == any_age:
            tokens.update(f"{system}|{spelling}" for spelling in (code, code.lower()))
    return sorted(tokens)


def _code_params(cmap: CodeMap, any_age: bool = False, trial: Trial | None = None) -> list[str]:
    """The ``code`` parameter values (comma-separated tokens), chunked to keep URLs short."""
    tokens = _tokens(cmap, any_age, trial)
    return [",".join(tokens[i:i + CODES_PER_QUERY]) for i in range(0, len(tokens), CODES_PER_QUERY)]


def observation_queries(patient_id: str, cmap: CodeMap, as_of: date, lookback_days: int | None = LOOKBACK_DAYS,
                        trial: Trial | None = None) -> list[dict[str, str]]:
    """The Observation searches of one patient: windowed codes with ``date=ge…``, the trial's any-age codes
    without. ``lookback_days=None`` (the assessment: follow-up may be years long) fetches every mapped result."""
    windowed_codes, any_age_codes = _code_params(cmap, False, trial), _code_params(cmap, True, trial)
    if lookback_days is None:
        return [{"patient": patient_id, "code": codes} for codes in windowed_codes + any_age_codes]
    since = (as_of - timedelta(days=lookback_days)).isoformat()
    windowed = [{"patient": patient_id, "code": codes, "date": f"ge{since}"} for codes in windowed_codes]
    return windowed + [{"patient": patient_id, "code": codes} for codes in any_age_codes]


def _entries(resources: Iterable[dict[str, Any]], where: str) -> Iterator[Item]:
    for i, res in enumerate(resources):
        yield Entry(res, f"{where} #{i}")


def _unique(resources: Iterable[dict[str, Any]], seen: set[str]) -> Iterator[dict[str, Any]]:
    """Each resource once across overlapping searches (a server ignoring ``code`` or ``date`` repeats them)."""
    for res in resources:
        key = f"{res.get('resourceType')}/{res.get('id')}"
        if res.get("id") is None or key not in seen:
            seen.add(key)
            yield res


def fetch_patient(client: FhirClient, patient_id: str, cmap: CodeMap, as_of: date,
                  lookback_days: int | None = LOOKBACK_DAYS, medications: bool = False,
                  trial: Trial | None = None) -> Iterator[Item]:
    """Every resource of one patient that a criterion of ``trial`` (default: the shipped one) or the assessment
    can use."""
    patient = _patient(client, patient_id)
    if patient is not None:  # a patient known only from subject references is listed as not screened
        yield Entry(patient, f"Patient/{patient_id}")
    yield from _entries(client.search("Condition", {"patient": patient_id}, matches_only=True),
                        f"Condition?patient={patient_id}")
    seen: set[str] = set()
    for params in observation_queries(patient_id, cmap, as_of, lookback_days, trial):
        found = client.search("Observation", params, matches_only=True)
        yield from _entries(_unique(found, seen), f"Observation?patient={patient_id}")
    yield from _entries(client.search("Encounter", {"patient": patient_id}, matches_only=True),
                        f"Encounter?patient={patient_id}")
    if medications:
        yield from _entries(client.search("MedicationAdministration", {"patient": patient_id}, matches_only=True),
                            f"MedicationAdministration?patient={patient_id}")


def _patient(client: FhirClient, patient_id: str) -> dict[str, Any] | None:
    """The Patient resource, or None when the server has none (404 / 410): the patient's other resources are
    still read, and RULES.md §2 makes it ``no-patient-resource`` — never a failed run."""
    try:
        return client.read("Patient", patient_id).resource
    except ServerRejected as exc:
        if exc.status in (404, 410):
            return None
        raise


def admission_queries(as_of: date, recent_days: int = 7) -> list[dict[str, str]]:
    """Inpatient Encounters in progress / arrived, and inpatient Encounters of the last ``recent_days``."""
    classes = ",".join(INPATIENT_CLASSES)
    since = (as_of - timedelta(days=recent_days)).isoformat()
    return [{"class": classes, "status": ",".join(ADMITTED_STATUSES)}, {"class": classes, "date": f"ge{since}"}]


def admitted_patients(client: FhirClient, as_of: date, recent_days: int = 7) -> list[str]:
    """Ids of patients with an active, or recently started, inpatient Encounter."""
    ids: set[str] = set()
    for params in admission_queries(as_of, recent_days):
        for enc in client.search("Encounter", params, matches_only=True):
            pid = ref_id(enc.get("subject"), "Patient")
            if pid and is_admission(enc, as_of, recent_days):
                ids.add(pid)
    return sorted(ids)


def is_admission(enc: dict[str, Any], as_of: date, recent_days: int = 7) -> bool:
    """Re-checked here, because a server may ignore a search parameter it does not support (and ``date=ge``
    matches any period still open or ending after the date): inpatient class, and in progress / arrived or
    started within ``recent_days`` up to the as-of date."""
    klass = enc.get("class")
    if not isinstance(klass, dict) or klass.get("code") not in INPATIENT_CLASSES:
        return False
    if enc.get("status") in ADMITTED_STATUSES:
        return True
    period = enc.get("period")
    start = local_date(period.get("start")) if isinstance(period, dict) else None
    return start is not None and as_of - timedelta(days=recent_days) <= start <= as_of


def infused_patients(client: FhirClient, cmap: CodeMap) -> list[str]:
    """Ids of patients with a MedicationAdministration of a mapped product (the CAR-T cells)."""
    tokens = sorted(f"{system}|{code}" for (system, code), concept in cmap.observations.items()
                    if cmap.concepts[concept].kind == "product")
    ids: set[str] = set()
    if tokens:
        for admin in client.search("MedicationAdministration", {"code": ",".join(tokens)}, matches_only=True):
            pid = ref_id(admin.get("subject"), "Patient")
            if pid:
                ids.add(pid)
    return sorted(ids)


def pull(client: FhirClient, cmap: CodeMap, as_of: date, patient_ids: Iterable[str] | None = None,
         medications: bool = False, trial: Trial | None = None) -> Iterator[Item]:
    """The items of the named patients; when none are named, the admitted patients (pre-screen) or the
    patients with a product administration (``medications=True``: the assessment, fetched without look-back).
    Which patients were infused is re-decided by the rules from the fetched data."""
    if patient_ids:
        ids = list(patient_ids)
    else:
        ids = infused_patients(client, cmap) if medications else admitted_patients(client, as_of)
    lookback = None if medications else prescreen_lookback(trial)
    for pid in ids:
        yield from fetch_patient(client, pid, cmap, as_of, lookback, medications=medications, trial=trial)


__all__ = ["LOOKBACK_DAYS", "admission_queries", "admitted_patients", "fetch_patient", "infused_patients",
           "is_admission", "observation_queries", "prescreen_lookback", "pull"]
