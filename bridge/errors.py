"""The one exception tree of the bridge.

::

    BridgeError                       every error the bridge raises on purpose
    ├── InputError                    bad input the user can fix          (CLI exit 2)
    │   ├── SourceUnreadable          file missing / unreadable / not JSON (CLI exit 3)
    │   ├── InvalidResource           a resource fails the R4B model or has no resourceType
    │   ├── UnitError                 a unit that cannot be converted
    │   └── MappingError              a mapping table or site map fails its schema (CLI exit 4)
    ├── ConfigError                   configuration is missing or contradictory (CLI exit 5)
    ├── ValidationFailed              our own output fails the R4 JSON Schema or a binding check (CLI exit 6)
    ├── RemoteError                   the FHIR server / registry / token endpoint         (CLI exit 7)
    │   ├── TransportError            timeout, connection refused, retries exhausted
    │   ├── AuthError                 401/403 or a token endpoint refusing us
    │   ├── ServerRejected            4xx/5xx with an OperationOutcome (issues attached)
    │   ├── NotFHIR                   the body is HTML or not FHIR JSON (never dumped)
    │   ├── ForeignHost               a link points outside the configured server (token must not follow)
    │   └── Conflict                  412 / version conflict after the one retry
    └── StoreError                    the state store (inbox/outbox) cannot be used    (CLI exit 8)

Messages carry resource types, ids, file names, entry indexes and element paths — never a
name, an identifier value or a result value. Each error can describe itself as OperationOutcome issues
(``issues``: list of ``Issue``) so the service returns one issue per problem with the element path.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One problem, shaped like an OperationOutcome.issue."""

    code: str  # OperationOutcome issue-type code: invalid, structure, value, not-found, security, ...
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"

    def as_fhir(self) -> dict[str, object]:
        out: dict[str, object] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass
class BridgeError(Exception):
    """Base of every deliberate bridge error. ``message`` must be free of patient data."""

    message: str
    issues: list[Issue] = field(default_factory=list)
    issue_code: str = "exception"
    exit_code: int = 1

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.issues:
            self.issues = [Issue(self.issue_code, self.message)]

    def __str__(self) -> str:
        return self.message

    def operation_outcome(self) -> dict[str, object]:
        return {"resourceType": "OperationOutcome", "issue": [i.as_fhir() for i in self.issues]}


@dataclass
class InputError(BridgeError):
    issue_code: str = "invalid"
    exit_code: int = 2


@dataclass
class SourceUnreadable(InputError):
    issue_code: str = "structure"
    exit_code: int = 3


@dataclass
class InvalidResource(InputError):
    issue_code: str = "structure"


@dataclass
class UnitError(InputError):
    issue_code: str = "value"


@dataclass
class MappingError(InputError):
    issue_code: str = "invalid"
    exit_code: int = 4


@dataclass
class ConfigError(BridgeError):
    issue_code: str = "invalid"
    exit_code: int = 5


@dataclass
class ValidationFailed(BridgeError):
    issue_code: str = "invariant"
    exit_code: int = 6


@dataclass
class RemoteError(BridgeError):
    issue_code: str = "transient"
    exit_code: int = 7
    status: int | None = None


@dataclass
class TransportError(RemoteError):
    issue_code: str = "timeout"


@dataclass
class AuthError(RemoteError):
    issue_code: str = "security"


@dataclass
class ServerRejected(RemoteError):
    issue_code: str = "processing"


@dataclass
class NotFHIR(RemoteError):
    issue_code: str = "structure"


@dataclass
class ForeignHost(RemoteError):
    issue_code: str = "security"


@dataclass
class Conflict(RemoteError):
    issue_code: str = "conflict"


@dataclass
class StoreError(BridgeError):
    issue_code: str = "exception"
    exit_code: int = 8


EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "unexpected error": 1,
    "bad input (resource, unit, option)": 2,
    "source unreadable (missing file, not JSON)": 3,
    "mapping table or site map invalid": 4,
    "configuration error": 5,
    "own output failed validation": 6,
    "remote server / registry error": 7,
    "state store error": 8,
}

__all__ = [
    "EXIT_CODES",
    "AuthError",
    "BridgeError",
    "ConfigError",
    "Conflict",
    "ForeignHost",
    "InputError",
    "InvalidResource",
    "Issue",
    "MappingError",
    "NotFHIR",
    "RemoteError",
    "ServerRejected",
    "SourceUnreadable",
    "StoreError",
    "TransportError",
    "UnitError",
    "ValidationFailed",
]
