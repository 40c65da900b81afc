"""The independent FHIR validator for tests: Medplum's, under Debian's nodejs (``scripts/validate-fhir.mjs``).

``FhirValidator.validate(items)`` sends many resources to one node process (loading the R4 definitions takes
about two seconds, each resource a few milliseconds) and returns one ``Verdict`` per item, in order. An item
is a resource, or ``(resource, [profile url, ...])``; by default each resource is also checked against the
bridge profile it falls under (``bridge.publish.conformance.profile_for``). ``Verdict.errors`` are the
issues of severity error or fatal; ``Verdict.unchecked`` the ValueSets of required bindings it could not
expand offline.

The ``fhir_validator`` fixture (session scope) finds the installation: ``$BRIDGE_VALIDATOR`` (set by
``scripts/test``), else ``<repo>/.validator``, else it runs ``scripts/validator-setup``. Without node or the
packages the tests are skipped with the reason — or fail when ``CI`` is set, so CI never passes by skipping.
Import it into a test module with ``from tests.validator import fhir_validator  # noqa: F401``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.publish.conformance import profile_for

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "validate-fhir.mjs"
SETUP = REPO_ROOT / "scripts" / "validator-setup"
PACKAGES = ("core", "definitions")
Json = dict[str, Any]
Item = Json | tuple[Json, Sequence[str]]


class ValidatorUnavailable(RuntimeError):
    """node or the Medplum packages cannot be found or installed."""


@dataclass(frozen=True)
class Verdict:
    """What the validator said about one resource."""

    issues: list[Json] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Json]:
        return [i for i in self.issues if i.get("severity") in ("error", "fatal")]

    def text(self) -> str:
        return "; ".join(f"{i.get('expression')}: {i.get('message')}" for i in self.errors) or "no errors"


def _installed(folder: Path) -> bool:
    return all((folder / "node_modules" / "@medplum" / p / "package.json").is_file() for p in PACKAGES)


def find_validator(env: dict[str, str] | None = None) -> Path:
    """The installation folder: $BRIDGE_VALIDATOR, else .validator, else built by scripts/validator-setup."""
    env = dict(os.environ) if env is None else env
    if shutil.which("node") is None and not os.access(SETUP, os.X_OK):
        raise ValidatorUnavailable("node is not installed")
    for candidate in (env.get("BRIDGE_VALIDATOR"), str(REPO_ROOT / ".validator")):
        if candidate and _installed(Path(candidate)):
            return Path(candidate)
    try:
        done = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=600,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValidatorUnavailable(f"scripts/validator-setup could not run: {type(exc).__name__}") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not _installed(Path(lines[-1])):
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise ValidatorUnavailable(f"scripts/validator-setup failed (exit {done.returncode}): {tail}")
    return Path(lines[-1])


class FhirValidator:
    """Medplum's validator in a node process per batch."""

    def __init__(self, folder: Path, profiles: Path | None = None) -> None:
        self.folder = folder
        self.profiles = profiles or REPO_ROOT / "profiles"

    def validate(self, items: Iterable[Item], auto_profiles: bool = True) -> list[Verdict]:
        payload = []
        for item in items:
            resource, named = (item[0], list(item[1])) if isinstance(item, tuple) else (item, [])
            auto = profile_for(resource) if auto_profiles else None
            payload.append({"resource": resource, "profiles": [*named, *([auto] if auto and auto not in named
                                                                             else [])]})
        if not payload:
            return []
        done = subprocess.run(
            ["node", str(SCRIPT), "--profiles", str(self.profiles)], input=json.dumps(payload),
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "BRIDGE_VALIDATOR": str(self.folder)},
        )
        if done.returncode != 0:
            raise AssertionError(f"validate-fhir.mjs failed (exit {done.returncode}): {done.stderr[-2000:]}")
        results = json.loads(done.stdout)
        assert len(results) == len(payload)
        return [Verdict(r["issues"], r["unchecked"]) for r in results]

    def validate_one(self, resource: Json, *profiles: str) -> Verdict:
        return self.validate([(resource, profiles)])[0]


@pytest.fixture(scope="session")
def fhir_validator() -> FhirValidator:
    try:
        return FhirValidator(find_validator())
    except ValidatorUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"FHIR validator unavailable in CI: {exc}", pytrace=False)
        pytest.skip(f"FHIR validator unavailable: {exc}")


__all__ = ["FhirValidator", "ValidatorUnavailable", "Verdict", "find_validator", "fhir_validator"]
