"""Configuration: the rule options (pure data passed to evaluate) and the service settings.

``RuleOptions`` holds everything a rule may be tuned by — readings, comparators, per-lab defaults — and the
assessment numbers of the trial (``RuleOptions.for_trial``; by default the shipped trial's). The criteria's
own windows and thresholds are in the trial file (``bridge.trial``). ``Settings`` holds where things are and
how to reach them; it is read from a YAML/JSON file and ``BRIDGE_*`` environment variables (environment wins)
by ``load_settings``, and is passed in, never read at import time.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml

from bridge import yamlload
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.trial import Trial

OrganReading = Literal["organ-function", "literal"]
Comparators = Literal["record", "eln"]
CriReading = Literal["operational", "literal"]


@dataclass(frozen=True)
class ResponseThresholds:
    """The response thresholds of a trial's assessment section (RULES.md §4), in canonical units (% of cells,
    10*9/L). ``marrow_blasts`` is both the CR/CRi/MLFS bound (below) and the relapse bound (at or above)."""

    marrow_blasts: float
    anc: float
    platelets: float
    pr_marrow_blasts_max: float
    pr_decrease_percent: float
    crh_anc: float
    crh_platelets: float


def _trial_default(name: str) -> Any:
    """A rule default taken from the shipped default trial (read on first use, once)."""
    from bridge.trial import load_trial  # here, not at import: bridge.trial imports this module

    return load_trial().rule_defaults()[name]


def _from_trial(name: str) -> Any:
    return field(default_factory=lambda: _trial_default(name))


@dataclass(frozen=True)
class RuleOptions:
    """Everything the pure evaluation layer is told; no clock, no I/O.

    The assessment numbers (count window, course, dose range, AE window, response thresholds, CIR time points,
    the product) default to the shipped trial's; ``RuleOptions.for_trial`` takes them from another trial.
    Windows and thresholds of the eligibility criteria live in the trial's criteria, not here.
    """

    as_of: date
    organ_function_reading: OrganReading = "organ-function"
    default_uln: dict[str, float] = field(
        default_factory=lambda: {"ast": 40.0, "alt": 40.0, "bilirubin-total": 1.2, "creatinine": 1.1}
    )
    default_lln: dict[str, float] = field(
        default_factory=lambda: {"anc": 1.8, "platelets": 150.0, "hemoglobin": 12.0}
    )
    comparators: Comparators = "record"
    cri_reading: CriReading = "operational"
    count_window_days: int = _from_trial("count_window_days")
    course_days: int = _from_trial("course_days")
    dose_range_cells_per_kg: tuple[float, float] = _from_trial("dose_range_cells_per_kg")
    ae_window_days: int = _from_trial("ae_window_days")
    relapse_after_transplant_counts: bool = True
    response: ResponseThresholds = _from_trial("response")
    cir_months: tuple[int, ...] = _from_trial("cir_months")
    product: str = _from_trial("product")

    def with_(self, **changes: Any) -> RuleOptions:
        return replace(self, **changes)

    @classmethod
    def for_trial(cls, trial: Trial, as_of: date, **changes: Any) -> RuleOptions:
        """Options whose assessment numbers are ``trial``'s (``changes`` override any field)."""
        return cls(as_of=as_of, **{**trial.rule_defaults(), **changes})


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
    # the state on PostgreSQL (issue #15: several replicas on one database), a libpq URL such as
    # postgresql://bridge:<password>@db.example:5432/bridge; None: the SQLite file db_path. A secret (it can
    # carry the password): never in a repr, and shown by redacted() with the password as ***
    db_url: str | None = field(default=None, repr=False)
    site_map: str | None = None
    trial: str | None = None  # the trial definition file (same as --trial); None: the shipped NCT04762485 file
    webhook_secret: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    # the study team (issue #17): a YAML list of {name, role, password_hash | token_sha256}; None: the coordinator
    # page is read-only behind api_token (bridge.service.users)
    users_file: str | None = None
    max_body_bytes: int = 2_000_000
    workers: int = 1
    heartbeat_grace_seconds: float = 120.0
    # how long a patient's re-screen waits after the first request, so a burst of events is one re-screen
    rescreen_delay_seconds: float = 0.5
    listen_host: str = "127.0.0.1"  # where server.py / `bridge serve` listen (loopback unless told otherwise)
    listen_port: int = 8080
    # the service as clients reach it; /fhir URLs (fullUrl, paging links) start with it. None: http://listen_host:port
    public_base_url: str | None = None
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
    # where the site hosts a swagger-ui-dist copy (swagger-ui-bundle.js, swagger-ui.css); None: /docs is off
    docs_assets_url: str | None = None

    def bearer_token(self) -> str | None:
        if self.ehr_token:
            return self.ehr_token
        if self.ehr_token_file:
            try:
                return Path(self.ehr_token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read ehr_token_file {self.ehr_token_file}: {exc.strerror}") from None
        return None

    def state_location(self) -> str:
        """Where the state is, for ``bridge.state.open_state`` / ``open_outbox``: ``db_url`` when set (PostgreSQL),
        else the SQLite file ``db_path``."""
        return self.db_url or self.db_path

    def state_display(self) -> str:
        """The state's location for messages: ``db_url`` with its password as ``***``, else ``db_path``."""
        return redact_url(self.db_url) or self.db_path

    def redacted(self) -> dict[str, Any]:
        """The settings for display: every secret replaced by '***'."""
        secret_words = ("token", "secret", "key_file", "password")
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            hidden = any(w in f.name for w in secret_words) and value and not f.name.endswith("_url")
            out[f.name] = "***" if hidden else value
        out["db_url"] = redact_url(self.db_url)
        return out


def redact_url(url: str | None) -> str | None:
    """``url`` with any password replaced by ``***`` (``postgresql://bridge:***@db/bridge``), also one given as
    a ``password=`` query parameter."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


MIN_SECRET_BYTES = 32
SERVICE_SECRETS = ("webhook_secret", "api_token")


def check_service_secrets(settings: Settings) -> None:
    """Refuse (``ConfigError``, exit 5) every configured service secret shorter than ``MIN_SECRET_BYTES`` bytes
    of UTF-8, naming them all at once; an unset one is allowed (that side of the service stays closed). A
    configured ``users_file`` is read and checked here too, every problem listed (``bridge.service.users``)."""
    short = [name for name in SERVICE_SECRETS
             if getattr(settings, name) is not None and len(str(getattr(settings, name)).encode()) < MIN_SECRET_BYTES]
    problems = [f"{', '.join(short)} must be at least {MIN_SECRET_BYTES} bytes long "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"] if short else []
    if settings.users_file:
        from bridge.service.users import load_users  # argon2 loads only when a users file is configured

        try:
            load_users(settings.users_file)
        except ConfigError as exc:
            problems.append(exc.message)
    if problems:
        raise ConfigError("; ".join(problems))


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


__all__ = ["MIN_SECRET_BYTES", "SERVICE_SECRETS", "Comparators", "CriReading", "OrganReading", "ResponseThresholds",
           "RuleOptions", "Settings", "check_service_secrets", "load_settings", "redact_url"]
