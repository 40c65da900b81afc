"""Checks of a registry package before it is written or sent; every problem at once, with its element path.

1. ``profiles/registry-package.schema.json`` (JSON Schema 2020-12): what a package must hold and must not
   hold beyond FHIR — centre label on every resource, one de-identified Patient, one ResearchSubject, the
   content of its time point, dates as years only, no narrative;
2. the official FHIR R4 JSON Schema and the bridge's code checks (``bridge.publish.validate``);
3. the de-identification guard (``deid.leak_issues``): no date more precise than a year and none of the
   patient's identifying values anywhere.

Messages never repeat a value of the package: they name the rule and the path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from bridge.errors import ConfigError, Issue
from bridge.normalize.mappings import profiles_dir
from bridge.publish.validate import code_issues, element_path, schema_issues
from bridge.registry.deid import leak_issues

PROFILE = profiles_dir() / "registry-package.schema.json"

Json = dict[str, Any]


@cache
def _profile_validator() -> Draft202012Validator:
    try:
        schema = json.loads(PROFILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"registry package schema {PROFILE} cannot be read as JSON") from None
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _message(error: SchemaError) -> str:
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    kind, expected = error.validator, error.validator_value
    if kind == "not":
        return "element not allowed in a registry package"
    if kind in ("contains", "minContains", "maxContains") and described:
        return str(described)
    if kind == "const":
        return f"must be {expected!r}"
    if kind == "pattern":
        return str(described) if described else "value does not have the required form"
    if kind == "enum":
        return str(described) if described else "value is not one of those allowed"
    if kind == "type":
        return f"wrong JSON type (expected {expected})"
    if kind == "minItems":
        return f"must hold at least {expected} item(s)"
    return f"fails the registry package rule '{kind}'"


def _issues_for(error: SchemaError) -> list[Issue]:
    where = element_path("Bundle", error.absolute_path)
    if error.validator == "required":
        return [Issue("required", "missing required element", (f"{where}.{k}",))
                for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
    code = "security" if error.validator == "not" else "invariant"
    return [Issue(code, _message(error), (where,))]


def profile_issues(package: Json) -> list[Issue]:
    """The problems of ``package`` against ``profiles/registry-package.schema.json``."""
    issues: list[Issue] = []
    for error in sorted(_profile_validator().iter_errors(package), key=lambda e: list(map(str, e.absolute_path))):
        issues += _issues_for(error)
    return list(dict.fromkeys(issues))


def package_issues(package: Json, forbidden: Iterable[str] = ()) -> list[Issue]:
    """Every problem of a package: registry profile, R4 JSON Schema, code checks, de-identification guard."""
    issues = profile_issues(package)
    issues += schema_issues(package)
    seen = {i.expression for i in issues}
    issues += [i for i in code_issues(package) if i.expression not in seen]
    issues += leak_issues(package, forbidden)
    return list(dict.fromkeys(issues))


__all__ = ["PROFILE", "package_issues", "profile_issues"]
