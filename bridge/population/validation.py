"""R4B validation with the resource's complex elements remembered: the same answer, most of the work done once.

``fhir_core`` validates a nested complex element — a ``code``, a ``subject``, a ``referenceRange`` item — as
its field's type says (``FhirBase._validate``): ``model_klass.model_validate(value)`` on the element's JSON,
standalone, then the same checks on the instance it returns; given an instance of that class instead of the
JSON, it skips the first step and runs the same checks. The parent's own checks look at list items that are
null (kept as they are here) and at the instances. So validating a resource whose elements were replaced by
the instances ``model_klass.model_validate`` returned for exactly their JSON is the same computation, with the
elements' part remembered.

In a lab-dense export most of a result's elements recur line after line (the analyte's ``code``, its
``category`` and ``referenceRange``, the patient's ``subject``, the visit's ``encounter``): remembering them
divides the cost of validating a result by ~3.

Only a *success* is taken from here. Whenever an element fails, or anything unexpected happens, the caller
validates the resource the ordinary way (``PatientAssembler.validated``), which produces the skip report —
reason and element path — exactly as the per-patient path does. Elements are remembered by their class and
their exact JSON bytes (``orjson.dumps``: key order kept, ``1`` and ``1.0`` and ``true`` told apart), only for
fields whose type is a plain complex type (not ``Resource``/``Element``, which dispatch on their content, nor
primitive extensions), in a table of bounded size per process (measured on a lab-dense export: 256 elements
cut the CPU of population mode by ~20 % for ~4 MB; 2048 cost ~30 MB and gained nothing more).
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

import orjson

from bridge.fhirmodels import model_class

MEMO_SIZE = 256  # remembered elements per process (a few KB each; more costs memory and gains nothing measurable)
SEEN_SIZE = 2048  # elements seen once (their key only)
_MEMO: dict[tuple[type, bytes], Any] = {}
_SEEN: set[tuple[type, bytes]] = set()
Fields = dict[str, tuple[type, bool]]  # JSON key -> (element class, is a list)


def _element_class(annotation: Any) -> tuple[type, bool] | None:
    """The complex element class of a field's type and whether the field is a list; None for anything else."""
    from fhir_core.types import FhirBase, FhirElementOrResourceBase  # noqa: TID251 - inspected, not built

    is_list = False
    for arg in typing.get_args(annotation) or (annotation,):
        if typing.get_origin(arg) is list:
            is_list, arg = True, typing.get_args(arg)[0]
        if isinstance(arg, type) and issubclass(arg, FhirBase) and not issubclass(arg, FhirElementOrResourceBase):
            klass = arg.get_model_klass()
            if klass.__name__ in ("FHIRPrimitiveExtension", "Resource", "Element"):
                return None
            return klass, is_list
    return None


@cache
def element_fields(resource_type: str) -> Fields:
    """The fields of a resource type whose elements may be remembered, by their JSON key."""
    cls = model_class(resource_type)
    found: Fields = {}
    for name, info in cls.model_fields.items():
        spec = _element_class(info.annotation)
        if spec is not None:
            found[info.alias or name] = spec
    return found


def _instance(klass: type, value: dict[str, Any]) -> Any:
    """``klass.model_validate(value)``, remembered by the exact JSON of ``value`` from its second sighting on
    (raises as it does); ``value`` itself the first time (a unique element — a ``meta`` with its own timestamp
    — is not worth an instance)."""
    key = (klass, orjson.dumps(value))
    found = _MEMO.get(key)
    if found is not None:
        return found
    if key not in _SEEN:
        if len(_SEEN) >= SEEN_SIZE:
            _SEEN.clear()
        _SEEN.add(key)
        return value
    found = klass.model_validate(value)  # type: ignore[attr-defined]
    if len(_MEMO) >= MEMO_SIZE:
        _MEMO.clear()
    _MEMO[key] = found
    return found


def valid(resource: dict[str, Any]) -> bool:
    """True when ``resource`` passes its R4B model, its complex elements remembered; False when it may not (the
    caller then validates it the ordinary way, which reports why)."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return False
    try:
        fields = element_fields(rtype)
        data = dict(resource)
        for key, value in resource.items():
            spec = fields.get(key)
            if spec is None:
                continue
            klass, is_list = spec
            if is_list and isinstance(value, list):
                data[key] = [_instance(klass, item) if isinstance(item, dict) else item for item in value]
            elif not is_list and isinstance(value, dict):
                data[key] = _instance(klass, value)
        model_class(rtype).model_validate(data)
    except Exception:  # noqa: BLE001 - any doubt: the ordinary validation decides and reports
        return False
    return True


__all__ = ["MEMO_SIZE", "element_fields", "valid"]
