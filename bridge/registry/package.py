"""Registry packages: one FHIR R4 ``Bundle`` (type collection) per patient and submission time point.

``build_packages(assessment, records, context, kinds)`` takes the ``bridge assess --format json`` document
(a dict, issue #5 contract), the raw resources of each patient (``sources.collect_records``) and the site's
context (secret, centre) and returns the packages of every consenting patient, the patients skipped with the
reason, and nothing else. Contents per time point (see ``timepoints``):

- every package: the de-identified ``Patient`` and the ``ResearchSubject`` (study by identifier);
- ``infusion-<n>``: that infusion's ``MedicationAdministration`` (cells, cells/kg) and the age at infusion;
- follow-ups: the infusions up to the window's end, the best response since infusion (as of the window's
  end), relapse yes/no, the AEs with onset in the window (grade, severity, grading system) and the survival
  status at the window's end (or at death).

Every package is checked (``registry.validate.package_issues``) with the identifying values of its patient's
raw resources, so nothing identifying can be written or sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from bridge.errors import InputError, Issue, ValidationFailed
from bridge.normalize.fhirpath import partial_date
from bridge.registry import resources as R
from bridge.registry.consent import consent_decision
from bridge.registry.deid import identifying_values
from bridge.registry.pseudonym import centre_label, pseudonym
from bridge.registry.sources import PatientRecords
from bridge.registry.timepoints import KINDS, Death, Timepoint, due_follow_ups, infusion_timepoints
from bridge.registry.validate import package_issues
from bridge.trial import Trial

Json = dict[str, Any]
RESPONSE_ORDER = ("CR", "CRi", "MLFS", "PR", "NR", "NE")


@dataclass(frozen=True)
class Context:
    """The site's side of a package: the pseudonym secret and the centre label (``rc_<CCN>``)."""

    secret: str
    centre: str
    trial: Trial | None = None  # the trial the packages are for (None: the shipped one)

    def __post_init__(self) -> None:
        centre_label(self.centre)
        pseudonym("check", self.secret)  # ConfigError now rather than per patient


@dataclass(frozen=True)
class Package:
    """One package. ``patient`` (the local ``Patient/<id>``) and ``guard`` stay at the site."""

    id: str
    patient: str
    pseudonym: str
    timepoint: str
    bundle: Json
    guard: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def key(self) -> str:
        return package_key(self.bundle)


@dataclass(frozen=True)
class SkippedPatient:
    patient: str
    reason: str


@dataclass
class BuildResult:
    packages: list[Package] = field(default_factory=list)
    skipped: list[SkippedPatient] = field(default_factory=list)


def package_key(bundle: Json) -> str:
    """The idempotency key: SHA-256 of the canonical JSON (sorted keys, no spaces) of the package."""
    canonical = json.dumps(bundle, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------- the course


@dataclass(frozen=True)
class Infused:
    when: date
    cells: float | None
    evidence: str | None


@dataclass(frozen=True)
class Assessed:
    when: date
    day: int
    response: str


@dataclass(frozen=True)
class Event:
    term: str
    grade: int | None
    onset: date


@dataclass(frozen=True)
class Course:
    """The parts of one patient's assessment a package reports (parsed and checked)."""

    patient: str
    day0: date
    infusions: tuple[Infused, ...]
    weight_kg: float | None
    assessments: tuple[Assessed, ...]
    relapse: date | None
    events: tuple[Event, ...]

    def day(self, when: date) -> int:
        return (when - self.day0).days


def _req(value: Any, path: str) -> date:
    """A required YYYY-MM-DD date of the assessment document; ``InputError`` naming ``path`` otherwise."""
    try:
        if isinstance(value, str):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise InputError(f"assessment document: {path} is missing or not a YYYY-MM-DD date",
                     [Issue("invalid", "missing or not a YYYY-MM-DD date", (path,))])


def _opt(value: Any, path: str) -> date | None:
    return None if value is None else _req(value, path)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _grade(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5 else None


def _list(doc: Json, key: str) -> list[Json]:
    value = doc.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _infusions(doc: Json, path: str) -> tuple[Infused, ...]:
    found = [Infused(_req(i.get("date"), f"{path}.infusions[{n}].date"), _number(i.get("cells")),
                     i.get("evidence") if isinstance(i.get("evidence"), str) else None)
             for n, i in enumerate(_list(doc, "infusions"))]
    return tuple(sorted(found, key=lambda x: x.when))


def _assessments(doc: Json, path: str, day0: date) -> tuple[Assessed, ...]:
    dates = [(_req(a.get("date"), f"{path}.assessments[{n}].date"), str(a.get("response")))
             for n, a in enumerate(_list(doc, "assessments"))]
    return tuple(Assessed(when, (when - day0).days, response) for when, response in dates)


def _events(doc: Json, path: str) -> tuple[Event, ...]:
    return tuple(Event(str(e.get("term")), _grade(e.get("grade")), _req(e.get("onset"),
                                                                        f"{path}.adverseEvents[{n}].onset"))
                 for n, e in enumerate(_list(doc, "adverseEvents")))


def patient_ref(doc: Json, path: str) -> str:
    """``patients[i].patient`` (``Patient/<id>``), or ``InputError`` naming the path."""
    patient = doc.get("patient")
    if not isinstance(patient, str) or not patient.startswith("Patient/") or patient == "Patient/":
        raise InputError(f"assessment document: {path}.patient must be 'Patient/<id>'",
                         [Issue("invalid", "must be 'Patient/<id>'", (f"{path}.patient",))])
    return patient


def parse_course(doc: Json, path: str) -> Course:
    """One ``patients[i]`` entry of the assessment document; ``InputError`` with the path when malformed."""
    patient = patient_ref(doc, path)
    day0 = _req(doc.get("dayZero"), f"{path}.dayZero")
    return Course(patient, day0, _infusions(doc, path), _number(doc.get("weightKg")),
                  _assessments(doc, path, day0), _opt(doc.get("relapseDate"), f"{path}.relapseDate"),
                  _events(doc, path))


# ---------------------------------------------------------------------------------------------- contents


def _death(records: PatientRecords, course: Course, as_of: date) -> Death:
    """Death as of ``as_of``: a deceasedDateTime (earliest day of a partial one) or deceasedBoolean."""
    source = records.patient or {}
    died = partial_date(source.get("deceasedDateTime"))
    if died is not None:
        when = died.earliest()
        return Death(True, course.day(when)) if when <= as_of else Death()
    return Death(source.get("deceasedBoolean") is True, None)


def _codings(administration: Json | None) -> list[Json]:
    concept = (administration or {}).get("medicationCodeableConcept")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    out = []
    for c in codings if isinstance(codings, list) else []:
        system, code = (c.get("system"), c.get("code")) if isinstance(c, dict) else (None, None)
        if isinstance(system, str) and system.startswith(("http://", "https://", "urn:oid:")) \
                and isinstance(code, str) and 0 < len(code) <= 64:
            out.append({"system": system, "code": code})
    return out


def _infusion(frame: R.Frame, n: int, inf: Infused, course: Course, records: PatientRecords) -> Json:
    per_kg = inf.cells / course.weight_kg if inf.cells is not None and course.weight_kg else None
    source = records.administration(inf.evidence) if inf.evidence else None
    return R.medication_administration(frame, n, inf.when, inf.cells, per_kg, _codings(source))


def _best(course: Course, last_day: int) -> tuple[str, date | None]:
    seen = [a for a in course.assessments if a.day <= last_day and a.response in RESPONSE_ORDER]
    if not seen:
        return "NE", None
    best = min(seen, key=lambda a: (RESPONSE_ORDER.index(a.response), a.when))
    return best.response, best.when


def _survival(frame: R.Frame, tp: Timepoint, death: Death, latest: bool) -> Json:
    end = tp.last_date(frame.day0)
    if death.day is not None and death.day <= tp.last_day:
        return R.survival(frame, "dead", frame.day0 + timedelta(days=death.day))
    if death.dead and death.day is None:
        return R.survival(frame, "dead", None) if latest else R.survival(frame, "unknown", end)
    return R.survival(frame, "alive", end)


def _dead_by(tp: Timepoint, death: Death, latest: bool) -> bool:
    return (death.day is not None and death.day <= tp.last_day) or (death.dead and death.day is None and latest)


def _follow_up(frame: R.Frame, tp: Timepoint, course: Course, records: PatientRecords, death: Death,
               latest: bool) -> list[Json]:
    out = [_infusion(frame, n, inf, course, records) for n, inf in enumerate(course.infusions, start=1)
           if course.day(inf.when) <= tp.last_day]
    category, when = _best(course, tp.last_day)
    out.append(R.best_response(frame, category, when or tp.last_date(frame.day0)))
    relapsed = course.relapse is not None and course.day(course.relapse) <= tp.last_day
    out.append(R.relapse(frame, relapsed, course.relapse if relapsed else tp.last_date(frame.day0)))
    events = [e for e in course.events if tp.covers(course.day(e.onset))]
    out += [R.adverse_event(frame, n, e.term, e.grade, e.onset) for n, e in enumerate(events, start=1)]
    out.append(_survival(frame, tp, death, latest))
    return out


def _infusion_contents(frame: R.Frame, tp: Timepoint, course: Course, records: PatientRecords) -> list[Json]:
    n = tp.infusion or 1
    inf = course.infusions[n - 1]
    age = R.age_at_infusion(frame, n, records.patient, inf.when)
    return [_infusion(frame, n, inf, course, records), *([age] if age else [])]


def _bundle(frame: R.Frame, tp: Timepoint, contents: list[Json], subject_status: str, source: Json | None,
            as_of: date, dead: bool) -> Json:
    people = [R.patient(frame, source, as_of, dead), R.research_subject(frame, subject_status)]
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in [*people, *contents]]
    return {"resourceType": "Bundle", "id": frame.package_id,
            "meta": {"security": [{"system": R.CENTRE_SYSTEM, "code": frame.centre}],
                     "tag": [{"system": R.TIMEPOINT_SYSTEM, "code": tp.code}]},
            "identifier": {"system": R.PACKAGE_SYSTEM, "value": frame.package_id},
            "type": "collection", "entry": entries}


# ---------------------------------------------------------------------------------------------- assembly


def _guard(course: Course, records: PatientRecords, doc: Json) -> frozenset[str]:
    source = records.patient or {}
    allowed = [a[k] for a in source.get("address") or [] if isinstance(a, dict)
               for k in ("state", "country") if isinstance(a.get(k), str)]
    found = identifying_values([records.patient, *records.consents, *records.administrations, doc], allowed)
    refs = [course.patient, *(i.evidence or "" for i in course.infusions), *_evidence(doc)]
    found.update(r.split("/", 1)[1] for r in refs if "/" in r and len(r.split("/", 1)[1]) >= 3)
    return frozenset(found)


def _evidence(doc: Json) -> list[str]:
    refs: list[str] = []
    for key in ("assessments", "adverseEvents"):
        for item in _list(doc, key):
            refs += [e for e in item.get("evidence") or [] if isinstance(e, str)]
    return refs


def _timepoints(course: Course, as_of: date, death: Death, kinds: Collection[str]) -> list[Timepoint]:
    points = infusion_timepoints([course.day(i.when) for i in course.infusions]) if "infusion" in kinds else []
    return points + [tp for tp in due_follow_ups(course.day0, as_of, death) if tp.kind in kinds]


@dataclass(frozen=True)
class _Patient:
    """One patient's inputs to every package of a run."""

    course: Course
    records: PatientRecords
    pseudonym: str
    death: Death
    follow_ups: tuple[Timepoint, ...]
    as_of: date


def _package(p: _Patient, tp: Timepoint, context: Context, guard: frozenset[str]) -> Package:
    frame = R.Frame(p.pseudonym, context.centre, p.course.day0, f"{p.pseudonym}-{tp.code}", context.trial)
    if tp.kind == "infusion":
        contents, status, dead = _infusion_contents(frame, tp, p.course, p.records), "on-study-intervention", False
    else:
        latest = tp == p.follow_ups[-1]
        contents = _follow_up(frame, tp, p.course, p.records, p.death, latest)
        dead = _dead_by(tp, p.death, latest)
        status = "off-study" if dead else "follow-up"
    bundle = _bundle(frame, tp, contents, status, p.records.patient, p.as_of, dead)
    return Package(frame.package_id, p.course.patient, p.pseudonym, tp.code, bundle, guard)


def patient_packages(doc: Json, path: str, records: PatientRecords, context: Context, as_of: date,
                     kinds: Collection[str] = KINDS) -> list[Package]:
    """The due packages of one patient (consent is the caller's business)."""
    course = parse_course(doc, path)
    death = _death(records, course, as_of)
    p = _Patient(course, records, pseudonym(course.patient.removeprefix("Patient/"), context.secret), death,
                 tuple(due_follow_ups(course.day0, as_of, death)), as_of)
    guard = _guard(course, records, doc)
    return [_package(p, tp, context, guard) for tp in _timepoints(course, as_of, death, kinds)]


def build_packages(assessment: Json, records: Mapping[str, PatientRecords], context: Context,
                   kinds: Collection[str] = KINDS) -> BuildResult:
    """The packages of every assessed patient whose research consent is in force; the others as skipped."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise InputError(f"unknown time point kind(s): {', '.join(unknown)} (use {', '.join(KINDS)})")
    as_of = _req(assessment.get("asOf"), "asOf")
    result = BuildResult()
    patients = assessment.get("patients")
    if not isinstance(patients, list):
        raise InputError("assessment document: 'patients' must be a list",
                         [Issue("invalid", "must be a list", ("patients",))])
    for i, doc in enumerate(patients):
        _one(doc, f"patients[{i}]", records, context, as_of, kinds, result)
    return result


def _one(doc: Any, path: str, records: Mapping[str, PatientRecords], context: Context, as_of: date,
         kinds: Collection[str], result: BuildResult) -> None:
    if not isinstance(doc, dict):
        raise InputError(f"assessment document: {path} must be an object",
                         [Issue("invalid", "must be an object", (path,))])
    ref = patient_ref(doc, path)
    rec = records.get(ref)
    if rec is None or rec.patient is None:
        result.skipped.append(SkippedPatient(ref, "no Patient resource in the source"))
        return
    decision = consent_decision(rec.consents, as_of)
    if not decision.allowed:
        result.skipped.append(SkippedPatient(ref, decision.reason))
        return
    result.packages.extend(patient_packages(doc, path, rec, context, as_of, kinds))


def check_packages(packages: list[Package]) -> None:
    """Validate every package (profile, R4 schema, codes, de-identification guard); all problems at once."""
    issues: list[Issue] = []
    for p in packages:
        issues += [Issue(i.code, f"{p.id}: {i.diagnostics}", i.expression, i.severity)
                   for i in package_issues(p.bundle, p.guard)]
    if issues:
        failed = len({i.diagnostics.split(":", 1)[0] for i in issues})
        raise ValidationFailed(f"{failed} registry package(s) fail validation: {len(issues)} problem(s)", issues)


__all__ = ["RESPONSE_ORDER", "BuildResult", "Context", "Course", "Package", "SkippedPatient", "build_packages",
           "check_packages", "package_key", "parse_course", "patient_packages", "patient_ref"]
