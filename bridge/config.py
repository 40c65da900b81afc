"""Configuration: the rule options (pure data passed to evaluate) and the service settings.

``RuleOptions`` holds everything a rule may be tuned by — windows, readings, comparators, per-lab defaults —
with the defaults of RULES.md. ``Settings`` holds where things are and how to reach them; it is read from
a YAML/JSON file and ``BRIDGE_*`` environment variables (environment wins) by ``load_settings``, and is
passed in, never read at import time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml

from bridge import yamlload
from bridge.errors import ConfigError

OrganReading = Literal["organ-function", "literal"]
Comparators = Literal["record", "eln"]
CriReading = Literal["operational", "literal"]


@dataclass(frozen=True)
class Windows:
    """Look-back windows in days, counted back from the as-of date (RULES.md §2)."""

    ecog: int = 30
    cd7: int = 30
    cardiac: int = 90
    organ: int = 30
    pregnancy: int = 14
    infection: int = 30
    hepatitis: int = 90
    hiv: int = 90
    cardiac_event: int = 183  # "the recent 6 months"


@dataclass(frozen=True)
class RuleOptions:
    """Everything the pure evaluation layer is told; no clock, no I/O."""

    as_of: date
    organ_function_reading: OrganReading = "organ-function"
    windows: Windows = field(default_factory=Windows)
    hbv_dna_threshold_iu_ml: float = 1000.0
    default_uln: dict[str, float] = field(
        default_factory=lambda: {"ast": 40.0, "alt": 40.0, "bilirubin-total": 1.2, "creatinine": 1.1}
    )
    default_lln: dict[str, float] = field(
        default_factory=lambda: {"anc": 1.8, "platelets": 150.0, "hemoglobin": 12.0}
    )
    comparators: Comparators = "record"
    cri_reading: CriReading = "operational"
    count_window_days: int = 7
    course_days: int = 14
    dose_range_cells_per_kg: tuple[float, float] = (0.5e6, 10e6)
    ae_window_days: int = 365
    relapse_after_transplant_counts: bool = True

    def with_(self, **changes: Any) -> RuleOptions:
        return replace(self, **changes)


@dataclass(frozen=True)
class Settings:
    """Deployment settings. Secrets are only ever held here, read from files or the environment."""

    ehr_base_url: str | None = None
    ehr_token: str | None = field(default=None, repr=False)
    ehr_token_file: str | None = None
    smart_client_id: str | None = None
    smart_key_file: str | None = field(default=None, repr=False)
    smart_key_id: str | None = None
    smart_alg: str = "RS384"
    smart_token_url: str | None = None
    smart_scope: str = "system/*.read system/ResearchStudy.write system/ResearchSubject.write"
    timeout_connect: float = 5.0
    timeout_read: float = 30.0
    retries: int = 4
    retry_total_seconds: float = 60.0
    db_path: str = "bridge-state.sqlite3"
    site_map: str | None = None
    trial: str | None = None  # the trial definition file (same as --trial); None: the shipped NCT04762485 file
    webhook_secret: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 2_000_000
    workers: int = 1
    heartbeat_grace_seconds: float = 120.0
    listen_host: str = "127.0.0.1"  # where server.py / `bridge serve` listen (loopback unless told otherwise)
    listen_port: int = 8080
    registry_url: str | None = None
    registry_token_url: str | None = None
    registry_client_id: str | None = None
    registry_client_secret: str | None = field(default=None, repr=False)
    registry_centre: str = "rc_00000"
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    registry_scope: str | None = None
    registry_crid_path: str = "Patient/$crid-assignment"
    pseudonym_secret: str | None = field(default=None, repr=False)
    log_level: str = "INFO"

    def bearer_token(self) -> str | None:
        if self.ehr_token:
            return self.ehr_token
        if self.ehr_token_file:
            try:
                return Path(self.ehr_token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read ehr_token_file {self.ehr_token_file}: {exc.strerror}") from None
        return None

    def redacted(self) -> dict[str, Any]:
        """The settings for display: every secret replaced by '***'."""
        secret_words = ("token", "secret", "key_file", "password")
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            hidden = any(w in f.name for w in secret_words) and value and not f.name.endswith("_url")
            out[f.name] = "***" if hidden else value
        return out


def _coerce(kind: str, raw: str) -> Any:
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


def load_settings(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Settings from an optional YAML/JSON file, overridden by ``BRIDGE_<FIELD>`` environment variables."""
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get("BRIDGE_CONFIG")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
            loaded = json.loads(text) if str(path).endswith(".json") else yamlload.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read configuration file {path}: {type(exc).__name__}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping")
        values.update(loaded)
    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
    for name, f in known.items():
        raw = env.get(f"BRIDGE_{name.upper()}")
        if raw is not None:
            try:
                values[name] = _coerce(str(f.type).split(" ")[0], raw)
            except ValueError:
                raise ConfigError(f"BRIDGE_{name.upper()} must be a {f.type}") from None
    return Settings(**values)


__all__ = ["Comparators", "CriReading", "OrganReading", "RuleOptions", "Settings", "Windows", "load_settings"]
