"""The declared shapes of what reaches the service from outside, parsed strictly (issue #14 item 6).

Every body, number and id the service reads from a request goes through one of these pydantic models, in
strict mode: a JSON string is never taken for a number nor a number for a string, a list is never taken for
an object, and a count is either a JSON integer or a string of ASCII digits (``'²'.isdigit()`` is true in
Python, ``int('²')`` fails — so nothing here uses ``isdigit``). Whatever does not fit is an ``InputError``
with one ``OperationOutcome`` issue per problem and the element path (``Bundle.entry[0].resource.type``), which
the app answers with 400 — never a 500, never a number accepted by accident.

::

    NotificationBundle                 a topic notification (R4 backport ``history``, R4B ``subscription-notification``)
    ├── BundleEntry                    fullUrl, resource (a JSON object, read by the models below)
    ├── ParametersStatus / Parameter   the R4 backport SubscriptionStatus; values typed by parameter name (VALUES)
    └── SubscriptionStatus             the R4B resource, with NotificationEvent
    Resource                           what the trigger digest reads of any resource (ids, meta, status, subject)
    ├── EncounterResource              + class (a Coding; a list is tolerated)
    └── CodedResource                  + code (a CodeableConcept) — Observation, Condition

The same models give the OpenAPI schemas of the notification bodies (``openapi_schemas``), so a schema-driven
client (schemathesis) generates bodies of these shapes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError

from bridge.errors import InputError, Issue

RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
ASCII_COUNT = re.compile(r"^[0-9]{1,18}$")  # not \d: it matches every script's digits
MAX_COUNT = 10**18 - 1  # fits SQLite's signed 64-bit INTEGER
NOTIFICATION_TYPES = ("handshake", "heartbeat", "event-notification", "query-status", "query-event")
ISSUE_CODES = {"missing": "required", "literal_error": "value", "string_pattern_mismatch": "value",
               "unsigned": "value", "too_short": "required"}
Json = dict[str, Any]


# ------------------------------------------------------------------------------------------ errors


def element_path(root: str, loc: tuple[Any, ...]) -> str:
    """``root`` followed by a pydantic location: names joined with dots, list indexes as ``[i]``."""
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def model_error(exc: ValidationError, root: str) -> InputError:
    """An ``InputError`` with one issue per validation error at its element path; no input value is quoted."""
    issues = [Issue(ISSUE_CODES.get(e["type"], "structure"), e["msg"], (element_path(root, tuple(e["loc"])),))
              for e in exc.errors(include_url=False, include_input=False, include_context=False)]
    first = issues[0]
    return InputError(f"{first.diagnostics} at {first.expression[0]}", issues=issues)


def invalid(path: str, message: str, code: str = "structure") -> InputError:
    """An ``InputError`` with one issue at ``path`` (the message names elements, never values)."""
    return InputError(message, issues=[Issue(code, message, (path,))])


def parse(model: type[BaseModel] | TypeAdapter[Any], data: Any, root: str) -> Any:
    """``data`` validated against ``model`` (strict), or the ``InputError`` naming every element that is wrong."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data, strict=True)
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise model_error(exc, root) from None


# ------------------------------------------------------------------------------------------ datatypes


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    if isinstance(value, str) and ASCII_COUNT.fullmatch(value):
        return int(value)
    raise PydanticCustomError("unsigned", "expected an unsigned integer (a JSON number or a string of ASCII digits)")


COUNT_SCHEMA = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
                          {"type": "string", "pattern": ASCII_COUNT.pattern}]}
# unsignedInt, integer, or the string form of integer64 (the R4 backport carries counts as valueString)
Count = Annotated[int, PlainValidator(_count, json_schema_input_type=Any), Field(json_schema_extra=COUNT_SCHEMA)]
FhirId = Annotated[str, Field(pattern=FHIR_ID.pattern)]
ResourceType = Annotated[str, Field(pattern=RESOURCE_TYPE.pattern)]
NotificationType = Literal["handshake", "heartbeat", "event-notification", "query-status", "query-event"]


class Model(BaseModel):
    """Strict types for what is read; every other element passes unread."""

    model_config = ConfigDict(strict=True, extra="allow")


class Reference(Model):
    reference: str | None = None


class Coding(Model):
    system: str | None = None
    code: str | None = None


class CodeableConcept(Model):
    coding: list[Coding] = Field(default_factory=list)


class Meta(Model):
    versionId: str | None = None
    lastUpdated: str | None = None


# ------------------------------------------------------------------------------------------ resources


class Resource(Model):
    """What the trigger digest reads of any resource."""

    resourceType: ResourceType
    id: FhirId
    meta: Meta | None = None
    status: str | None = None
    subject: Reference | None = None
    patient: Reference | None = None


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class EncounterResource(Resource):
    """An Encounter: its ``class`` is one Coding in R4 (a list is tolerated, as R5 has it)."""

    classes: Annotated[list[Coding], BeforeValidator(_one_or_many)] = Field(default_factory=list, alias="class")


class CodedResource(Resource):
    """An Observation or a Condition: its ``code`` decides whether it maps to a criterion concept."""

    code: CodeableConcept | None = None


RESOURCE_MODELS: dict[str, type[Resource]] = {"Encounter": EncounterResource, "Observation": CodedResource,
                                              "Condition": CodedResource}


def parse_resource(data: Any, root: str) -> Resource:
    """A resource body read through the model of its type (``Resource`` for types the digest does not look into)."""
    rtype = data.get("resourceType") if isinstance(data, dict) else None
    model = RESOURCE_MODELS.get(rtype, Resource) if isinstance(rtype, str) else Resource
    parsed: Resource = parse(model, data, root)
    return parsed


# ------------------------------------------------------------------------------------------ notifications


VALUE_KEYS = ("valueString", "valueCode", "valueCanonical", "valueUri", "valueReference", "valueUnsignedInt",
              "valueInteger", "valueInteger64", "valueInstant")


def _document_values(schema: dict[str, Any]) -> None:
    """The value[x] elements a notification parameter may carry, for the OpenAPI (they are read by name)."""
    strings = {"type": "string"}
    schema["properties"].update({
        "valueString": strings, "valueCode": strings, "valueCanonical": strings, "valueUri": strings,
        "valueInstant": strings, "valueReference": {"$ref": "#/components/schemas/Reference"},
        "valueUnsignedInt": COUNT_SCHEMA, "valueInteger": COUNT_SCHEMA, "valueInteger64": COUNT_SCHEMA})


class Parameter(Model):
    """One ``Parameters.parameter`` (or ``part``) of the backport status; its ``value[x]`` is typed by its
    ``name`` (``VALUES``) and read from the first ``value…`` element."""

    model_config = ConfigDict(json_schema_extra=_document_values)

    name: str
    part: list[Parameter] = Field(default_factory=list)

    def value(self) -> tuple[str, Any] | None:
        """(element name, value) of the value[x], if any."""
        for key, found in (self.__pydantic_extra__ or {}).items():
            if key.startswith("value"):
                return key, found
        return None


class ParametersStatus(Model):
    """The R4 backport SubscriptionStatus profile of ``Parameters``."""

    resourceType: Literal["Parameters"]
    parameter: list[Parameter]


class NotificationEvent(Model):
    eventNumber: Count | None = None
    focus: Reference | None = None


class SubscriptionStatus(Model):
    """The R4B ``SubscriptionStatus`` resource."""

    resourceType: Literal["SubscriptionStatus"]
    status: str | None = None
    type: NotificationType
    eventsSinceSubscriptionStart: Count | None = None
    notificationEvent: list[NotificationEvent] = Field(default_factory=list)
    subscription: Reference
    topic: str | None = None


class BundleEntry(Model):
    fullUrl: str | None = None
    resource: dict[str, Any] | None = None


class NotificationBundle(Model):
    """A topic-based notification: the status first, then the focus resources (``full-resource``)."""

    resourceType: Literal["Bundle"]
    id: FhirId | None = None
    type: Literal["history", "subscription-notification"]
    timestamp: str | None = None
    entry: list[BundleEntry] = Field(min_length=1)


# the value[x] of each backport parameter the bridge reads, by parameter name (both spellings)
_STRING: TypeAdapter[str] = TypeAdapter(str)
_TYPE: TypeAdapter[str] = TypeAdapter(NotificationType)
_COUNT: TypeAdapter[int] = TypeAdapter(Count)
_REFERENCE: TypeAdapter[Reference] = TypeAdapter(Reference)
VALUES: dict[str, TypeAdapter[Any]] = {
    "subscription": _REFERENCE, "topic": _STRING, "status": _STRING, "type": _TYPE,
    "events-since-subscription-start": _COUNT, "eventsSinceSubscriptionStart": _COUNT,
    "event-number": _COUNT, "eventNumber": _COUNT, "focus": _REFERENCE,
}


def parameter_value(param: Parameter, path: str) -> tuple[str, Any]:
    """(element path, typed value) of a parameter the bridge reads (``VALUES``); no value is an error."""
    found = param.value()
    if found is None:
        raise invalid(f"{path}.value[x]", f"the parameter {param.name} has no value")
    key, raw = found
    return f"{path}.{key}", parse(VALUES[param.name], raw, f"{path}.{key}")


# ------------------------------------------------------------------------------------------ OpenAPI


BODY_MODELS: tuple[type[BaseModel], ...] = (NotificationBundle, ParametersStatus, SubscriptionStatus, Resource,
                                            EncounterResource, CodedResource)
REF = "#/components/schemas/{model}"


def openapi_schemas() -> dict[str, Any]:
    """The component schemas of the notification bodies (``#/components/schemas/<Model>``)."""
    _, top = models_json_schema([(m, "validation") for m in BODY_MODELS], ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    entry = schemas["BundleEntry"]["properties"]
    entry["resource"] = {"anyOf": [{"$ref": REF.format(model=m)} for m in
                                   ("ParametersStatus", "SubscriptionStatus", "EncounterResource", "CodedResource")]}
    return schemas


def request_body(*models: str, required: bool = False) -> dict[str, Any]:
    """An ``openapi_extra`` request body: FHIR JSON of one of ``models``."""
    refs = [{"$ref": REF.format(model=m)} for m in models]
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {"requestBody": {"required": required, "content": {"application/fhir+json": {"schema": schema}}}}


__all__ = [
    "ASCII_COUNT",
    "FHIR_ID",
    "NOTIFICATION_TYPES",
    "RESOURCE_TYPE",
    "BundleEntry",
    "CodeableConcept",
    "CodedResource",
    "Coding",
    "Count",
    "EncounterResource",
    "Meta",
    "NotificationBundle",
    "NotificationEvent",
    "Parameter",
    "ParametersStatus",
    "Reference",
    "Resource",
    "SubscriptionStatus",
    "element_path",
    "invalid",
    "model_error",
    "openapi_schemas",
    "parameter_value",
    "parse",
    "parse_resource",
    "request_body",
]
