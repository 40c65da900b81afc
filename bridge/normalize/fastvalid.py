"""A conservative fast path for the R4B model check: ``certainly_valid(resource)`` says True only when the R4B
model (``fhir.resources.R4B``, ``fhir_core``, pydantic) certainly accepts the resource; False means "not sure",
and the caller then validates it the ordinary way, which gives the verdict and reports the skip.

The rules are read from the models themselves (each field's JSON key, cardinality, type, required flag and
choice group), so every element of every type is covered; what is checked is a strict *subset* of what the
models accept:

* no key the model does not know (``extra="forbid"``; only JSON names, no Python field names, no
  ``fhir_comments``, no ``resourceType`` inside an element), the top level's ``resourceType`` its own;
* no null anywhere, no empty object or array; a list where the field repeats, an object where it does not;
* required elements present with a value (a required primitive given only by its ``_element`` is "not sure");
  at most one member of each choice group ``value[x]``, exactly one where the group is required;
* primitives of their JSON type only (the models' lax coercions — ``"5"`` for an integer, ``"1.5"`` for a
  decimal — are "not sure"): ``boolean`` a JSON boolean; ``integer``/``unsignedInt``/``positiveInt`` a JSON
  integer in range; ``decimal`` a JSON number whose text matches the FHIR decimal regex (NaN, infinities and
  integers past 15 digits are "not sure"); ``id`` 1–255 of ``[A-Za-z0-9.-]``; ``code`` printable ASCII words
  separated by single spaces; ``uri``/``canonical`` non-empty printable ASCII without spaces; ``string``,
  ``markdown`` and ``xhtml`` a string holding at least one printable ASCII character (or tab, CR, LF) or
  letter or digit, and encodable as UTF-8; ``date``/``dateTime``/``instant`` the FHIR regex, a real calendar
  day (no 2024-02-30), seconds 00–59 (a leap second is "not sure"), at most 9 fractional digits, and a time
  zone whenever there is a time;
* a repeating primitive (``HumanName.given``) a non-empty array of values, none null;
* a primitive's ``_element`` (non-repeating fields only) an object with an ``id`` or an ``extension``;
  an ``Extension`` has its ``url``;
* any other type (``url``, ``oid``, ``uuid``, ``base64Binary``, ``time``, ``integer64``, a contained
  ``Resource``, an ``Element``), a repeating primitive's ``_element`` list, or a class with a validator of its
  own other than the ones above → "not sure".

``tests/unit/test_fastvalid.py`` checks ``certainly_valid ⇒ R4B valid`` on every sample, generated and corpus
resource and on many thousands of random mutations of them.
"""

from __future__ import annotations

import datetime
import math
import re
import typing
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import orjson

from bridge.fhirmodels import model_class

Check = Callable[[Any], bool]

_PRINTABLE = re.compile(r"[\t\n\r -~]").search
_CODE = re.compile(r"[!-~]+(?: [!-~]+)*").fullmatch
_ID = re.compile(r"[A-Za-z0-9\-.]{1,255}").fullmatch
_URI = re.compile(r"[!-~]+").fullmatch
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?").fullmatch
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_TIME = r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_DATE = re.compile(_YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?").fullmatch
_DATETIME = re.compile(_YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])(" + _TIME + r")?)?)?").fullmatch
_INSTANT = re.compile(_YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])" + _TIME).fullmatch
_INT32 = (-(2**31), 2**31 - 1)
_BIG = 10**15


def _string(v: Any) -> bool:
    if type(v) is not str:
        return False
    if v.isascii():
        return _PRINTABLE(v) is not None
    if _PRINTABLE(v) is None and not any(c.isalnum() for c in v):  # a letter or digit is never white space
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _code(v: Any) -> bool:
    return type(v) is str and _CODE(v) is not None


def _id(v: Any) -> bool:
    return type(v) is str and _ID(v) is not None


def _uri(v: Any) -> bool:
    return type(v) is str and _URI(v) is not None


def _boolean(v: Any) -> bool:
    return type(v) is bool


def _integer(low: int) -> Check:
    high = _INT32[1]

    def check(v: Any) -> bool:
        return type(v) is int and low <= v <= high
    return check


def _decimal(v: Any) -> bool:
    if type(v) is int:
        return -_BIG < v < _BIG
    return type(v) is float and math.isfinite(v) and _DECIMAL(str(v)) is not None


def _real_day(v: str) -> bool:
    """The calendar part of a date/dateTime/instant that matched its regex names a real day."""
    if len(v) < 10:  # a year or a year and month: the regex is the whole check
        return True
    try:
        datetime.date(int(v[0:4]), int(v[5:7]), int(v[8:10]))
    except ValueError:
        return False
    return True


def _date(v: Any) -> bool:
    return type(v) is str and _DATE(v) is not None and _real_day(v)


def _datetime(v: Any) -> bool:
    return type(v) is str and _DATETIME(v) is not None and _real_day(v)


def _instant(v: Any) -> bool:
    return type(v) is str and _INSTANT(v) is not None and _real_day(v)


_PRIMITIVES: dict[str, Check] = {
    "String": _string, "Markdown": _string, "Xhtml": _string, "Code": _code, "Id": _id, "Uri": _uri,
    "Canonical": _uri, "Decimal": _decimal, "Integer": _integer(_INT32[0]), "UnsignedInt": _integer(0),
    "PositiveInt": _integer(1), "Date": _date, "DateTime": _datetime, "Instant": _instant,
}
_OWN_VALIDATORS = {"FHIRPrimitiveExtension"}  # classes whose extra model validator is checked here


class _Schema:
    """One model class's rules: JSON key -> (check, repeats); required keys; choice groups."""

    __slots__ = ("choices", "fields", "name", "required")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, tuple[Check, bool]] = {}
        self.required: tuple[str, ...] = ()
        self.choices: tuple[tuple[frozenset[str], bool], ...] = ()


def _primitive(annotation: Any) -> Check | None:
    if annotation is bool:
        return _boolean
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in typing.get_args(annotation)[1:]:
            check = _PRIMITIVES.get(type(meta).__name__)
            if check is not None and type(meta).__module__ == "fhir_core.types":
                return check
    return None


def _field_check(annotation: Any) -> tuple[Check, bool] | None:
    """The check of a field's type and whether it repeats; None for a type not fast-pathed."""
    from fhir_core.types import FhirBase, FhirElementOrResourceBase  # noqa: TID251 - inspected, not built

    args = [a for a in (typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union
                        or type(annotation).__name__ == "UnionType" else (annotation,)) if a is not type(None)]
    if len(args) != 1:
        return None
    arg, repeats = args[0], False
    if typing.get_origin(arg) is list:
        (arg,) = typing.get_args(arg)
        repeats = True
        if typing.get_origin(arg) is typing.Union or type(arg).__name__ == "UnionType":
            # a repeating primitive (``given``), whose items may be null in the model: here never null (each
            # item must pass the primitive's check); its ``_given`` list of extensions is not fast-pathed
            items = [a for a in typing.get_args(arg) if a is not type(None)]
            check = _primitive(items[0]) if len(items) == 1 else None
            return (check, True) if check is not None else None
    check = _primitive(arg)
    if check is not None:
        return check, repeats
    if isinstance(arg, type) and issubclass(arg, FhirBase) and not issubclass(arg, FhirElementOrResourceBase):
        klass = arg.get_model_klass()
        return _complex(klass), repeats
    return None


def _complex(klass: Any) -> Check:
    resolved: list[_Schema | None] = []

    def check(v: Any) -> bool:
        if type(v) is not dict:
            return False
        if not resolved:
            resolved.append(_schema(klass))
        return _conforms(resolved[0], v)
    check.klass = klass  # type: ignore[attr-defined]
    return check


MEMO_SIZE = 4096  # elements remembered as conforming, per process (their JSON bytes: ~100 KB to ~1 MB)
_MEMO: set[bytes] = set()


def _remembered(klass: Any, check: Check) -> Check:
    """``check`` of a resource's own complex element, its success remembered by the element's exact JSON.

    The answer is a function of the JSON value alone; ``orjson.dumps`` of a JSON-parsed value tells apart every
    value the check tells apart (``1``/``1.0``/``true``, key sets, strings), and raises on what it cannot write
    (a lone surrogate, an integer past 64 bits), which is then checked the ordinary way. Only successes are
    remembered; NaN and infinities, written as ``null``, are never part of one (a null never conforms).
    """
    prefix = f"{klass.__module__}.{klass.__qualname__}".encode() + b"\x00"

    def check_remembered(v: Any) -> bool:
        if type(v) is not dict:
            return False
        try:
            key = prefix + orjson.dumps(v)
        except orjson.JSONEncodeError:
            return check(v)
        if key in _MEMO:
            return True
        if not check(v):
            return False
        if len(_MEMO) >= MEMO_SIZE:
            _MEMO.clear()
        _MEMO.add(key)
        return True
    return check_remembered


@cache
def _schema(klass: Any) -> _Schema | None:
    """The rules of ``klass``, None when it has a validator of its own not checked here."""
    own = {name for name, _ in klass.__pydantic_decorators__.model_validators.items()}
    own -= {"reject_null_complex_elements", "validate_after_model_construction"}
    if own and klass.__name__ not in _OWN_VALIDATORS:
        return None
    if klass.__pydantic_decorators__.field_validators:
        return None
    schema = _Schema(klass.__name__)
    fields: dict[str, tuple[Check, bool]] = {}
    required: list[str] = []
    alias_of: dict[str, str] = {}
    for name, info in klass.model_fields.items():
        key = info.alias or name
        alias_of[name] = key
        if name == "fhir_comments":
            continue
        spec = _field_check(info.annotation)
        if spec is None:
            continue
        fields[key] = spec
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if info.is_required() or extra.get("element_required"):
            required.append(key)
    for name, _ in klass.get_required_fields(None):
        required.append(alias_of[klass.get_alias_mapping()[name]])
    choices = []
    for names in klass.get_one_of_many_fields(None).values():
        first = klass.model_fields[names[0]].json_schema_extra
        choices.append((frozenset(alias_of[n] for n in names), first.get("one_of_many_required") is True))
    schema.fields, schema.required, schema.choices = fields, tuple(dict.fromkeys(required)), tuple(choices)
    return schema


def _conforms(schema: _Schema | None, obj: dict[str, Any]) -> bool:
    if schema is None or not obj:
        return False
    fields = schema.fields
    for key, value in obj.items():
        spec = fields.get(key)
        if spec is None or value is None:
            return False
        check, repeats = spec
        if repeats:
            if type(value) is not list or not value:
                return False
            for item in value:
                if not check(item):
                    return False
        elif not check(value):
            return False
    for key in schema.required:
        if key not in obj:
            return False
    for members, required in schema.choices:
        n = len(members.intersection(obj))
        if n > 1 or (required and n == 0):
            return False
    # FHIRPrimitiveExtension's own validator: an ``_element`` has an id or an extension
    return schema.name != "FHIRPrimitiveExtension" or "id" in obj or "extension" in obj


@cache
def _resource_schema(resource_type: str) -> _Schema | None:
    """A resource type's rules at the top level: its own ``resourceType`` is a known key there."""
    try:
        nested = _schema(model_class(resource_type))
    except Exception:  # noqa: BLE001 - an unknown type: not sure
        return None
    if nested is None:
        return None
    top = _Schema(nested.name)
    top.fields = {key: (_remembered(check.klass, check) if hasattr(check, "klass") else check, repeats)
                  for key, (check, repeats) in nested.fields.items()}
    top.fields["resourceType"] = (resource_type.__eq__, False)
    top.required, top.choices = nested.required, nested.choices
    return top


def prepare(resource_types: Iterable[str]) -> None:
    """Builds the R4B model classes of these resource types and the rules of them and of every element type they
    contain (a forking caller does it once, before the fork; otherwise they are built on first use)."""
    todo = [model_class(rtype) for rtype in resource_types]
    for rtype in resource_types:
        _resource_schema(rtype)
    seen: set[Any] = set()
    while todo:
        klass = todo.pop()
        if klass in seen:
            continue
        seen.add(klass)
        schema = _schema(klass)
        for check, _ in schema.fields.values() if schema is not None else ():
            if hasattr(check, "klass"):
                check(dict.fromkeys(("\x00",)))  # resolves the element's rules (the dict itself never conforms)
                todo.append(check.klass)


def certainly_valid(resource: dict[str, Any]) -> bool:
    """True only when the R4B model certainly accepts ``resource``; False when it may not (not sure)."""
    rtype = resource.get("resourceType")
    if type(rtype) is not str:
        return False
    return _conforms(_resource_schema(rtype), resource)


__all__ = ["MEMO_SIZE", "certainly_valid", "prepare"]
