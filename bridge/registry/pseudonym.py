"""Keyed pseudonyms and the centre label: who a package is about, without saying who.

``pseudonym(patient_id, secret)`` is HMAC-SHA256 keyed with the site secret (``Settings.pseudonym_secret``)
over the patient's logical id, as 32 lower-case hex digits (128 bits). The same id and secret always give the
same pseudonym, so every submission of a patient carries the same one; another site secret gives unrelated
pseudonyms, and without the secret a pseudonym cannot be traced back (nor recomputed from a guessed id).
A missing or short (< 16 characters) secret is a ``ConfigError``.

``centre_label(code)`` checks the centre number in CIBMTR's ``rc_<CCN>`` style (``Settings.registry_centre``).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from bridge.config import Settings
from bridge.errors import ConfigError

MIN_SECRET_CHARS = 16
PSEUDONYM_HEX_CHARS = 32
_CENTRE = re.compile(r"^rc_[0-9]{1,10}$")


def pseudonym(patient_id: str, secret: str) -> str:
    """The stable keyed pseudonym of a patient id: HMAC-SHA256(secret, id), 32 hex digits."""
    _check_secret(secret)
    digest = hmac.new(secret.encode("utf-8"), patient_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_HEX_CHARS]


def _check_secret(secret: str | None) -> str:
    if not secret:
        raise ConfigError("pseudonym_secret is not configured (set BRIDGE_PSEUDONYM_SECRET); "
                          "registry packages need a site secret for the keyed pseudonym")
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"pseudonym_secret must be at least {MIN_SECRET_CHARS} characters long")
    return secret


def site_secret(settings: Settings) -> str:
    """The configured site secret, or ``ConfigError`` when it is missing or too short."""
    return _check_secret(settings.pseudonym_secret)


def centre_label(code: str) -> str:
    """The centre number as configured (``rc_12345``), or ``ConfigError`` when it is not of that form."""
    if not _CENTRE.match(code or ""):
        raise ConfigError("registry_centre must look like rc_<centre number>, e.g. rc_12345")
    return code


def centre_number(code: str) -> str:
    """``rc_12345`` -> ``12345`` (the CCN the registry's CRID call asks for)."""
    return centre_label(code).removeprefix("rc_")


__all__ = ["MIN_SECRET_CHARS", "PSEUDONYM_HEX_CHARS", "centre_label", "centre_number", "pseudonym", "site_secret"]
