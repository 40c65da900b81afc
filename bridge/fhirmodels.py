"""The one adapter for ``fhir.resources``: every FHIR model class enters the bridge here.

The wire format is FHIR R4 4.0.1. No ``fhir.resources`` R4 package exists; ``fhir.resources.R4B`` has the
same shapes for every resource the bridge reads or writes (RULES.md §6), so it is used for parsing and
building. These models do not check required code bindings: ``bridge.publish.validate`` checks our output.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class  # noqa: TID251 - this module is the one allowed adapter
from pydantic import ValidationError

from bridge.errors import InvalidResource, Issue


@cache
def model_class(resource_type: str) -> Any:
    """The R4B model class for a resource type; ``InvalidResource`` for an unknown type."""
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        raise InvalidResource(f"unknown resourceType {resource_type!r}", issue_code="not-supported") from None


def _issue_path(resource_type: str, loc: tuple[Any, ...]) -> str:
    parts = [resource_type]
    for p in loc:
        if isinstance(p, int):
            parts[-1] += f"[{p}]"
        elif p != "__root__":
            parts.append(str(p))
    return ".".join(parts)


def parse_resource(data: dict[str, Any], where: str = "") -> Any:
    """Validate a FHIR JSON dict against its R4B model; errors carry element paths, never values."""
    rtype = data.get("resourceType")
    if not isinstance(rtype, str):
        raise InvalidResource(f"{where}: entry without resourceType".lstrip(": "),
                              [Issue("required", "resourceType is missing", ("resourceType",))])
    cls = model_class(rtype)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        issues = [Issue("structure", str(e.get("type", "invalid")), (_issue_path(rtype, tuple(e.get("loc", ()))),))
                  for e in exc.errors(include_input=False, include_url=False)]
        paths = ", ".join(i.expression[0] for i in issues[:3])
        rid = data.get("id")
        label = f"{rtype}/{rid}" if isinstance(rid, str) else rtype
        prefix = f"{where}: " if where else ""
        raise InvalidResource(f"{prefix}{label} fails the R4B model at {paths}", issues) from None


def to_json(model: Any) -> dict[str, Any]:
    """A model back to FHIR JSON (no None, aliases as on the wire)."""
    out: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out


def build(resource_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Build a resource through its R4B model and return its JSON (a structural check of our output)."""
    return to_json(parse_resource({"resourceType": resource_type, **data}, where="output"))


__all__ = ["build", "model_class", "parse_resource", "to_json"]
