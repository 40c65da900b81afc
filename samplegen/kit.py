"""What the synthetic FHIR data generators share: code systems, codings and quantities, the answer codes the
mappings read, the check of every resource against the R4B models and the official R4 JSON Schema, and the
layout the samples are written in (one Bundle, one NDJSON file per type, the hand-written intent).

The shape of each resource (Patient, Encounter, Condition, Observation, MedicationAdministration, Consent) is
built in one place, ``samplegen.chart``; this module holds the values those resources are made of.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft6Validator

from bridge.errors import InvalidResource
from bridge.fhirmodels import parse_resource
from bridge.publish.validate import DEFAULT_SCHEMA, SCHEMA_ENV

Json = dict[str, Any]

BASE_URL = "http://hospital.example.org/fhir"
TZ = "+08:00"  # the sample hospital is in Suzhou; dates are compared as written (local)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LAB = "http://hospital.example.org/lab"
CLINICAL = "http://hospital.example.org/clinical"
CARDIO = "http://hospital.example.org/cardio"
PHARMACY = "http://hospital.example.org/pharmacy"
MRN = "http://hospital.example.org/mrn"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CAT = "http://terminology.hl7.org/CodeSystem/condition-category"
CLIN_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ANIMAL = "http://hl7.org/fhir/StructureDefinition/patient-animal"


class GenerationError(Exception):
    """A generated resource is invalid, or the hand-written intent is inconsistent."""


def coding(system: str, code: str, display: str | None = None) -> Json:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(*codings: Json, text: str | None = None) -> Json:
    """A CodeableConcept; no ``coding`` element when there is none (FHIR JSON has no empty arrays)."""
    out: Json = {"coding": list(codings)} if codings else {}
    if text:
        out["text"] = text
    return out


def qty(value: float, code: str, unit: str | None = None, comparator: str | None = None) -> Json:
    out: Json = {"value": value}
    if comparator:
        out["comparator"] = comparator
    out.update({"unit": unit or code, "system": UCUM, "code": code})
    return out


HTEST = coding(ACT_REASON, "HTEST", "test health data")  # the security tag every sample resource carries

# answer codes (mappings/answers.yaml)
POS_LA, NEG_LA = coding(LOINC, "LA6576-8", "Positive"), coding(LOINC, "LA6577-6", "Negative")
POS_SCT, NEG_SCT = coding(SNOMED, "10828004", "Positive"), coding(SNOMED, "260385009", "Negative")
PRESENT, ABSENT = coding(SNOMED, "52101004", "Present"), coding(SNOMED, "2667000", "Absent")

# encounter classes (v3 ActCode), with the display the samples write
INPATIENT, AMBULATORY = coding(ACT_CODE, "IMP", "inpatient encounter"), coding(ACT_CODE, "AMB", "ambulatory")
CART_CD7 = coding(PHARMACY, "CART-CD7", "Humanized CD7 CAR-T cells")  # the trial's product, as the site codes it


# ------------------------------------------------------------------------------------------ validation
def schema_file(given: str | None) -> Path:
    path = Path(given or os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA)
    if not path.is_file():
        raise GenerationError(f"FHIR R4 JSON Schema not found at {path} (use --schema or {SCHEMA_ENV})")
    return path


@cache
def _definitions(path: str) -> Json:
    with open(path, encoding="utf-8") as fh:
        definitions: Json = json.load(fh)["definitions"]
    return definitions


@cache
def _validator(path: str, rtype: str) -> Draft6Validator:
    return Draft6Validator({"$ref": f"#/definitions/{rtype}", "definitions": _definitions(path)})


def validate(resource: Json, schema: Path) -> None:
    """R4B model and official R4 JSON Schema; raise GenerationError naming every failing element path."""
    label = f"{resource['resourceType']}/{resource['id']}"
    try:
        parse_resource(resource, label)
    except InvalidResource as exc:  # its message carries element paths only
        raise GenerationError(f"{label} fails the R4B model: {exc}") from None
    errors = sorted(_validator(str(schema), resource["resourceType"]).iter_errors(resource), key=str)
    if errors:
        paths = ["/".join(map(str, e.absolute_path)) or "(root)" for e in errors]
        raise GenerationError(f"{label} fails the R4 JSON Schema at {paths}")


# ------------------------------------------------------------------------------------------ writing
def dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def _full_url(resource: Json, versions: dict[tuple[str, str], list[str | None]]) -> Json:
    """The entry's fullUrl, except for the versions of one resource that no versionId tells apart: a Bundle's
    fullUrls must be unique unless their meta.versionId differ (FHIR R4 invariant bdl-7), so those go without."""
    found = versions[(resource["resourceType"], resource["id"])]
    if len(found) > 1 and len(set(found)) < len(found):
        return {}
    return {"fullUrl": f"{BASE_URL}/{resource['resourceType']}/{resource['id']}"}


def bundle(resources: list[Json], bundle_id: str, stamp: str) -> Json:
    """The collection Bundle of the samples, tagged HTEST, with ``stamp`` as its timestamp."""
    versions: dict[tuple[str, str], list[str | None]] = {}
    for r in resources:
        versions.setdefault((r["resourceType"], r["id"]), []).append(r.get("meta", {}).get("versionId"))
    entries = [{**_full_url(r, versions), "resource": r} for r in resources]
    return {"resourceType": "Bundle", "id": bundle_id, "meta": {"security": [HTEST]},
            "type": "collection", "timestamp": stamp, "entry": entries}


def write(out: Path, doc: Json, intent: Json, types: Iterable[str]) -> list[Path]:
    """``bundle.json``, ``intent.json`` and ``ndjson/<type>.ndjson`` (the Bundle's resources, by type)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "ndjson").mkdir(exist_ok=True)
    written = [out / "bundle.json", out / "intent.json"]
    written[0].write_text(dumps(doc), encoding="utf-8")
    written[1].write_text(dumps(intent), encoding="utf-8")
    resources = [e["resource"] for e in doc["entry"]]
    for rtype in types:
        lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in resources
                 if r["resourceType"] == rtype]
        path = out / "ndjson" / f"{rtype}.ndjson"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        written.append(path)
    return written
