"""The query parameters of the ``/fhir`` API, parsed strictly into typed values (FHIR R4 search, RESTful API).

What each resource type can be searched by is data (``SEARCH_PARAMS``, shared with the CapabilityStatement);
what a request says is parsed here, before anything is read:

* search parameters (``Criterion``): ``token`` (``code``, ``system|code``, ``|code``, ``system|``; on a code,
  a Coding, a CodeableConcept or an Identifier), ``reference`` (``id``, ``Type/id``, an absolute URL; a bare
  id of a parameter that may reference any type matches that id of any type) and ``date`` (``_lastUpdated``
  with the prefixes ``eq ne gt lt ge le sa eb``); a comma is OR inside one parameter, a repeated parameter is
  AND; ``\\,`` ``\\|`` ``\\$`` ``\\\\`` escape;
* result parameters: ``_count`` and ``_offset`` (ASCII digits only: ``'²'.isdigit()`` is true, ``int('²')``
  fails), ``_sort``, ``_summary``, ``_elements``, ``_total`` (and fhirpy's ``_totalMethod``), ``_since``;
* ``_format`` and the ``Accept`` header (``negotiate``): JSON or nothing, and ``_pretty``.

Every problem is an ``InputError`` naming the parameter (400 OperationOutcome with ``issue.expression``);
an unknown parameter, a modifier or a repeated result parameter is one too — never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any, Literal, cast

from bridge.errors import InputError, Issue
from bridge.fhirmodels import model_class

ParamType = Literal["token", "reference", "date", "uri", "string"]
Summary = Literal["true", "false", "text", "data", "count"]
Items = Sequence[tuple[str, str]]

SPEC = "http://hl7.org/fhir/SearchParameter"
DEFAULT_COUNT, MAX_COUNT = 100, 1000
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9]*", re.ASCII)
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?"
                   r"(Z|[+-]\d{2}:\d{2})?)?)?)?", re.ASCII)
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


@dataclass(frozen=True)
class SearchParam:
    """One search parameter: ``path`` is the element it reads, dotted through backbone elements
    (``entity.what``), optionally spelled with the resource type first (``AdverseEvent.study``); ``id`` and
    ``meta.lastUpdated`` for ``_id`` and ``_lastUpdated``. ``target`` is the referenced type (a bare id means
    that type; empty: any type, and a bare id matches that id of any type); ``system`` the implicit code system of a
    ``code`` element (so ``system|code`` matches it)."""

    name: str
    type: ParamType
    path: str
    definition: str
    documentation: str
    target: str = ""
    system: str = ""


COMMON_PARAMS = (
    SearchParam("_id", "token", "id", f"{SPEC}/Resource-id", "the logical id"),
    SearchParam("_lastUpdated", "date", "meta.lastUpdated", f"{SPEC}/Resource-lastUpdated",
                "when this server last changed the resource (eq ne gt lt ge le sa eb)"),
)
_OBSERVATION_STATUS = "http://hl7.org/fhir/observation-status"
SEARCH_PARAMS: dict[str, tuple[SearchParam, ...]] = {
    "ResearchStudy": (
        SearchParam("identifier", "token", "identifier", f"{SPEC}/ResearchStudy-identifier", "business identifier"),
        SearchParam("status", "token", "status", f"{SPEC}/ResearchStudy-status", "the study's status",
                    system="http://hl7.org/fhir/research-study-status"),
    ),
    "ResearchSubject": (
        SearchParam("study", "reference", "study", f"{SPEC}/ResearchSubject-study", "the ResearchStudy",
                    target="ResearchStudy"),
        SearchParam("patient", "reference", "individual", f"{SPEC}/ResearchSubject-patient", "the Patient",
                    target="Patient"),
        SearchParam("individual", "reference", "individual", f"{SPEC}/ResearchSubject-individual",
                    "the Patient (same as patient)", target="Patient"),
        SearchParam("status", "token", "status", f"{SPEC}/ResearchSubject-status",
                    "the pre-screening status (candidate, potential-candidate, ineligible, ...)",
                    system="http://hl7.org/fhir/research-subject-status"),
        SearchParam("identifier", "token", "identifier", f"{SPEC}/ResearchSubject-identifier",
                    "business identifier"),
    ),
    # response assessments: code response-assessment / best-overall-response, the response as value-concept
    "Observation": (
        SearchParam("patient", "reference", "subject", f"{SPEC}/clinical-patient", "the Patient", target="Patient"),
        SearchParam("subject", "reference", "subject", f"{SPEC}/Observation-subject",
                    "the Patient (the bridge's Observations are about patients)", target="Patient"),
        SearchParam("focus", "reference", "focus", f"{SPEC}/Observation-focus",
                    "what the Observation is about besides the subject: the ResearchStudy (Type/id)"),
        SearchParam("code", "token", "code", f"{SPEC}/clinical-code",
                    "the assessment (response-assessment, best-overall-response)"),
        SearchParam("category", "token", "category", f"{SPEC}/Observation-category", "the category (exam)"),
        SearchParam("value-concept", "token", "valueCodeableConcept", f"{SPEC}/Observation-value-concept",
                    "the response (CR, CRi, MLFS, PR, NR, NE, relapse)"),
        SearchParam("status", "token", "status", f"{SPEC}/Observation-status", "the status (final, ...)",
                    system=_OBSERVATION_STATUS),
        SearchParam("derived-from", "reference", "derivedFrom", f"{SPEC}/Observation-derived-from",
                    "the results the assessment was made from", target="Observation"),
        SearchParam("identifier", "token", "identifier", f"{SPEC}/clinical-identifier", "business identifier"),
    ),
    "AdverseEvent": (
        SearchParam("subject", "reference", "subject", f"{SPEC}/AdverseEvent-subject", "the Patient",
                    target="Patient"),
        # spelled with the type: the read API narrows a path of plain "study" on the store's ResearchSubject
        # column, which an AdverseEvent's list of studies does not fill
        SearchParam("study", "reference", "AdverseEvent.study", f"{SPEC}/AdverseEvent-study", "the ResearchStudy",
                    target="ResearchStudy"),
        SearchParam("event", "token", "event", f"{SPEC}/AdverseEvent-event", "the adverse event term"),
        SearchParam("severity", "token", "severity", f"{SPEC}/AdverseEvent-severity", "mild, moderate or severe"),
        SearchParam("actuality", "token", "actuality", f"{SPEC}/AdverseEvent-actuality", "actual or potential",
                    system="http://hl7.org/fhir/adverse-event-actuality"),
    ),
    "Provenance": (
        SearchParam("target", "reference", "target", f"{SPEC}/Provenance-target",
                    "what the Provenance is about (Type/id; any version of it)"),
        SearchParam("entity", "reference", "entity.what", f"{SPEC}/Provenance-entity",
                    "an input the activity used (Type/id)"),
    ),
    # the bridge's own conformance resources (profiles/, bridge.publish.conformance): found by canonical url
    **{rtype: (
        SearchParam("url", "uri", "url", f"{SPEC}/conformance-url", "the canonical URL (exact)"),
        SearchParam("name", "string", "name", f"{SPEC}/conformance-name",
                    "the computer-friendly name (starts with, case-insensitive)"),
        SearchParam("status", "token", "status", f"{SPEC}/conformance-status", "draft, active or retired",
                    system="http://hl7.org/fhir/publication-status"),
        SearchParam("version", "token", "version", f"{SPEC}/conformance-version", "the business version"),
    ) for rtype in ("StructureDefinition", "CodeSystem", "ValueSet")},
}
SERVED_TYPES = tuple(SEARCH_PARAMS)
# (name, type, documentation) of the parameters that shape results rather than select them
RESULT_PARAMS = (
    ("_count", "number", f"page size, {DEFAULT_COUNT} by default, at most {MAX_COUNT}; 0: the total only"),
    ("_offset", "number", "how many matches to skip (paging)"),
    ("_sort", "special", "_id, _lastUpdated or a token or reference parameter of the type; '-' descending"),
    ("_summary", "token", "true, false, text, data or count"),
    ("_elements", "special", "top-level elements to return (comma-separated)"),
    ("_total", "token", "none, estimate or accurate (the total is always exact)"),
    ("_totalMethod", "token", "count, estimate or none: the same as _total, as fhirpy sends it"),
    ("_format", "token", "json, application/json or application/fhir+json; any other format: 406"),
    ("_pretty", "token", "true: indented JSON"),
)
FORMAT_PARAMS = frozenset({"_format", "_pretty"})
JSON_TYPES = {"application/fhir+json": "application/fhir+json", "application/json+fhir": "application/fhir+json",
              "application/json": "application/json", "json": "application/fhir+json"}
FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})


def problem(name: str, message: str, code: str = "invalid") -> InputError:
    """A 400 naming the parameter ``name`` (its path in ``issue.expression``)."""
    return InputError(message, issue_code=code, issues=[Issue(code, message, (name,))])


@dataclass(frozen=True)
class Criterion:
    """One search parameter as given: ``values`` are ORed; criteria are ANDed. A token value is
    ``(system, code)`` with ``None`` for "any system" and ``""`` for "no system" / "any code"; a reference
    value is ``Type/id``; a date value is ``(prefix, start, end)`` in epoch seconds, end excluded."""

    param: SearchParam
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Paging:
    count: int = DEFAULT_COUNT
    offset: int = 0


@dataclass(frozen=True)
class Shape:
    """How each returned resource is shaped: ``summary`` (``None``: whole) or ``elements``."""

    summary: Summary | None = None
    elements: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchQuery:
    criteria: tuple[Criterion, ...] = ()
    paging: Paging = field(default_factory=Paging)
    sort: tuple[tuple[str, bool], ...] = ()  # (key, descending)
    shape: Shape = field(default_factory=Shape)
    total: bool = True


# ------------------------------------------------------------------------------------------ values


def split_escaped(value: str, sep: str) -> list[str]:
    """``value`` split on ``sep`` where not escaped with a backslash; escapes kept for ``unescape``."""
    parts: list[str] = []
    current, escaped = "", False
    for char in value:
        if escaped:
            current, escaped = current + "\\" + char, False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped else ""))
    return parts


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def non_negative(name: str, raw: str, maximum: int) -> int:
    """An ASCII decimal ``0 <= n``, capped at ``maximum``; anything else (signs, spaces, ``²``, ``٣``) is 400."""
    if not _DIGITS.fullmatch(raw):
        raise problem(name, f"{name} must be a non-negative integer in ASCII digits")
    digits = raw.lstrip("0") or "0"
    return maximum if len(digits) > 18 else min(int(digits), maximum)  # past 18 digits: beyond any cap


def _token(name: str, raw: str) -> tuple[str | None, str]:
    parts = split_escaped(raw, "|")
    if len(parts) > 2:
        raise problem(name, f"{name}: a token is code, system|code, |code or system| (one '|')")
    if len(parts) == 1:
        return None, unescape(parts[0])
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise problem(name, f"{name}: '|' alone names neither a system nor a code")
    return system, code


_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}", re.ASCII)


def _reference(param: SearchParam, raw: str) -> str:
    """``id``, ``Type/id``, ``[base]/Type/id`` (``_history`` cut) -> ``Target/id``. For a parameter that may
    reference any type, ``Type/id`` stays as it is and a bare ``id`` stays bare (it matches that id of any
    type)."""
    parts = unescape(raw).split("/_history/")[0].rstrip("/").split("/")
    if not parts[-1]:
        raise problem(param.name, f"{param.name}: an empty reference")
    if not param.target:
        if len(parts) == 1:
            return parts[0]
        if not _TYPE_NAME.fullmatch(parts[-2]):
            raise problem(param.name, f"{param.name}: {parts[-2]!r} is not a resource type (give Type/id or id)")
        return f"{parts[-2]}/{parts[-1]}"
    if len(parts) > 1 and parts[-2] != param.target:
        raise problem(param.name, f"the {param.name} parameter must reference a {param.target}")
    return f"{param.target}/{parts[-1]}"


def date_range(name: str, raw: str) -> tuple[float, float]:
    """The instants a FHIR date/dateTime of any precision covers, [start, end) in epoch seconds (UTC when no
    zone is given)."""
    m = _DATE.fullmatch(raw)
    if not m:
        raise problem(name, f"{name}: not a FHIR date or dateTime (YYYY[-MM[-DD[Thh:mm[:ss[.s]][zone]]]])")
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    try:
        start = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                         int(second or 0), tzinfo=_zone(zone))
    except ValueError:
        raise problem(name, f"{name}: not a valid date") from None
    step = _precision(month, day, minute, second, fraction)
    begin = start.timestamp() + (float(fraction) if fraction else 0.0)
    end = _add_months(start, step).timestamp() if isinstance(step, int) else begin + step.total_seconds()
    return begin, end


def _zone(zone: str | None) -> timezone:
    if zone in (None, "Z"):
        return UTC
    sign = 1 if zone[0] == "+" else -1
    return timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))


def _precision(month: str | None, day: str | None, minute: str | None, second: str | None,
               fraction: str | None) -> int | timedelta:
    """Months (an int) for a year or month, else the width of the last given unit."""
    if month is None:
        return 12
    if day is None:
        return 1
    if minute is None:
        return timedelta(days=1)
    if second is None:
        return timedelta(minutes=1)
    return timedelta(seconds=10 ** -(len(fraction) - 1)) if fraction else timedelta(seconds=1)


def _add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    if index // 12 > 9999:
        return datetime.max.replace(tzinfo=UTC)
    return start.replace(year=index // 12, month=index % 12 + 1)


def _date(name: str, raw: str) -> tuple[str, float, float]:
    prefix, value = (raw[:2], raw[2:]) if raw[:2].isalpha() else ("eq", raw)
    if prefix == "ap":
        raise problem(name, f"{name}: the ap prefix is not supported")
    if prefix not in DATE_PREFIXES:
        raise problem(name, f"{name}: unknown prefix {prefix!r} (eq ne gt lt ge le sa eb)")
    start, end = date_range(name, value)
    return prefix, start, end


def _values(param: SearchParam, raw: str) -> tuple[Any, ...]:
    alternatives = split_escaped(raw, ",")
    if any(not a for a in alternatives):
        raise problem(param.name, f"{param.name}: an empty value")
    if param.type == "date":
        return tuple(_date(param.name, unescape(a)) for a in alternatives)
    if param.type == "token":
        return tuple(_token(param.name, a) for a in alternatives)
    if param.type in ("uri", "string"):
        return tuple(unescape(a) for a in alternatives)
    return tuple(_reference(param, a) for a in alternatives)


# ------------------------------------------------------------------------------------------ parameters


def _once(items: Items, name: str) -> str | None:
    values = [v for k, v in items if k == name]
    if len(values) > 1:
        raise problem(name, f"give the {name} parameter at most once")
    return values[0] if values else None


def _check_names(items: Items, allowed: set[str], where: str) -> None:
    for name, _ in items:
        if name not in allowed:
            base = name.split(":")[0]
            message = (f"{base}: modifiers are not supported" if ":" in name and base in allowed
                       else f"unknown parameter for {where}: {name}")
            raise problem(name, message)


def search_params(resource_type: str) -> dict[str, SearchParam]:
    return {p.name: p for p in (*COMMON_PARAMS, *SEARCH_PARAMS[resource_type])}


def parse_search(resource_type: str, items: Items) -> SearchQuery:
    """A search on ``resource_type`` (400 for anything it cannot honour)."""
    params = search_params(resource_type)
    result_names = {name for name, _, _ in RESULT_PARAMS}
    _check_names(items, set(params) | result_names, f"{resource_type} search")
    criteria = []
    for name, raw in items:
        if name in params:
            if not raw:
                raise problem(name, f"give the {name} parameter a value")
            criteria.append(Criterion(params[name], _values(params[name], raw)))
    shape = parse_shape(resource_type, items, allow_count=True)
    return SearchQuery(tuple(criteria), parse_paging(items), _sort(params, _once(items, "_sort")), shape,
                       _total(items))


def parse_paging(items: Items) -> Paging:
    count, offset = _once(items, "_count"), _once(items, "_offset")
    return Paging(DEFAULT_COUNT if count is None else non_negative("_count", count, MAX_COUNT),
                  0 if offset is None else non_negative("_offset", offset, 10**18))


def _sort(params: dict[str, SearchParam], raw: str | None) -> tuple[tuple[str, bool], ...]:
    if raw is None:
        return ()
    keys = []
    for part in raw.split(","):
        name = part.removeprefix("-")
        if name not in params:
            raise problem("_sort", f"_sort: cannot sort by {name!r} (_id, _lastUpdated or {', '.join(params)})")
        keys.append((name, part.startswith("-")))
    return tuple(keys)


def _total(items: Items) -> bool:
    total, method = _once(items, "_total"), _once(items, "_totalMethod")
    if total is not None and total not in ("none", "estimate", "accurate"):
        raise problem("_total", "_total must be none, estimate or accurate")
    if method is not None and method not in ("none", "estimate", "count"):
        raise problem("_totalMethod", "_totalMethod must be count, estimate or none")
    if total is not None and method is not None and (total == "none") != (method == "none"):
        raise problem("_total", "_total and _totalMethod disagree")
    return "none" not in (total, method)


@cache
def elements_of(resource_type: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(every top-level element, the summary ones, the mandatory ones) of a type, from its R4B model."""
    every, summary, mandatory = set(), set(), set()
    for f in model_class(resource_type).model_fields.values():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if not extra.get("element_property"):
            continue
        every.add(f.alias)
        if extra.get("summary_element_property"):
            summary.add(f.alias)
        if f.is_required() or extra.get("element_required"):
            mandatory.add(f.alias)
    return frozenset(every), frozenset(summary), frozenset(mandatory)


def parse_shape(resource_type: str, items: Items, allow_count: bool = False) -> Shape:
    summary, elements = _once(items, "_summary"), _once(items, "_elements")
    allowed = ("true", "false", "text", "data", "count") if allow_count else ("true", "false", "text", "data")
    if summary is not None and summary not in allowed:
        raise problem("_summary", f"_summary must be one of {', '.join(allowed)}")
    if summary is not None and elements is not None:
        raise problem("_elements", "give _summary or _elements, not both")
    if elements is None:
        return Shape(None if summary in (None, "false") else cast(Summary, summary))
    known = elements_of(resource_type)[0]
    names = tuple(n.strip().removeprefix(f"{resource_type}.") for n in elements.split(","))
    for name in names:
        if not _ELEMENT.fullmatch(name) or name not in known:
            raise problem("_elements", f"_elements: {resource_type} has no top-level element {name!r}")
    return Shape(None, names)


def parse_read(resource_type: str, items: Items) -> Shape:
    """A read or vread: only ``_summary`` (not count), ``_elements``, ``_format`` and ``_pretty``."""
    _check_names(items, {"_summary", "_elements"} | FORMAT_PARAMS, f"{resource_type} read")
    return parse_shape(resource_type, items)


def parse_history(items: Items) -> tuple[Paging, float | None]:
    """A history: ``_count``, ``_offset``, ``_since`` (an instant: at or after it)."""
    _check_names(items, {"_count", "_offset", "_since"} | FORMAT_PARAMS, "history")
    since = _once(items, "_since")
    return parse_paging(items), None if since is None else date_range("_since", since)[0]


def parse_metadata(items: Items) -> None:
    _check_names(items, {"mode"} | FORMAT_PARAMS, "metadata")
    mode = _once(items, "mode")
    if mode not in (None, "full"):
        raise problem("mode", "mode: only full is served")


# ------------------------------------------------------------------------------------------ format


def pretty(items: Items) -> bool:
    value = _once(items, "_pretty")
    if value not in (None, "true", "false"):
        raise problem("_pretty", "_pretty must be true or false")
    return value == "true"


def _media(raw: str) -> tuple[str, dict[str, str], float]:
    """``type/sub; a=b; q=0.5`` -> (type, parameters, quality)."""
    kind, *rest = raw.split(";")
    params = {}
    for part in rest:
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    try:
        quality = float(params.pop("q", "1"))
    except ValueError:
        quality = 0.0
    return kind.strip().lower(), params, quality


def _json_type(kind: str, params: dict[str, str]) -> str | None:
    if params.get("fhirversion", "4.0") not in FHIR_VERSIONS:
        return None
    return JSON_TYPES.get(kind)


def negotiate(format_param: str | None, accept: str | None) -> str | None:
    """The media type to answer with, or None when the client accepts nothing this server writes (406).

    ``_format`` wins over ``Accept``; within ``Accept`` FHIR JSON is preferred to plain JSON, and ``*/*`` or
    ``application/*`` accept FHIR JSON."""
    if format_param is not None:
        kind, params, _ = _media(format_param)
        return _json_type(kind, params)
    if not accept or not accept.strip():
        return "application/fhir+json"
    offered = [m for m in (_media(r) for r in accept.split(",")) if m[2] > 0]
    found = {_json_type(kind, params) for kind, params, _ in offered if kind != "json"}
    if "application/fhir+json" in found or any(k in ("*/*", "application/*") for k, _, _ in offered):
        return "application/fhir+json"
    return "application/json" if "application/json" in found else None


__all__ = ["COMMON_PARAMS", "DEFAULT_COUNT", "MAX_COUNT", "RESULT_PARAMS", "SEARCH_PARAMS", "SERVED_TYPES",
           "Criterion", "Paging", "SearchParam", "SearchQuery", "Shape", "date_range", "elements_of", "negotiate",
           "non_negative", "parse_history", "parse_metadata", "parse_paging", "parse_read", "parse_search",
           "parse_shape", "pretty", "problem", "search_params", "split_escaped", "unescape"]
