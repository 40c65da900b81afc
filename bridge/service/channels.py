"""Notification channels and their secrets.

Every subscription the bridge creates gets its own *channel*: the endpoint ``{public}/notify/{channel}`` and
a secret the EHR sends back in the subscription's ``channel.header`` as ``Authorization: Bearer <secret>``.

* The default channel (``/notify``, also ``/notify/default``) uses ``Settings.webhook_secret`` itself —
  what an administrator types into a subscription made by hand.
* A named channel's secret is derived: ``HMAC-SHA256(webhook_secret, "cd7-bridge channel <name>")`` in hex.
  The service needs only the one configured secret to check any channel, no secret is stored in the state
  database, and one subscription's secret reveals nothing about another's.

Comparison is in constant time (``hmac.compare_digest``). Without a configured ``webhook_secret`` every
notification is refused: the service fails closed.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from bridge.errors import InputError, Issue

DEFAULT_CHANNEL = "default"
CHANNEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-_.]{0,63}$")
SECRET_HEADER = "Authorization"  # noqa: S105 - a header name, not a secret


def check_channel(name: str) -> str:
    if not CHANNEL.fullmatch(name):
        message = "a channel name is 1-64 letters, digits, '-', '_' or '.'"
        raise InputError(message, issues=[Issue("value", message, ("channel",))])
    return name


def channel_secret(master: str, channel: str) -> str:
    """The secret the EHR must present on ``channel``."""
    if channel == DEFAULT_CHANNEL:
        return master
    mac = hmac.new(master.encode("utf-8"), f"cd7-bridge channel {channel}".encode(), hashlib.sha256)
    return mac.hexdigest()


def channel_header(master: str, channel: str) -> str:
    """The ``channel.header`` entry of a Subscription that notifies ``channel``."""
    return f"{SECRET_HEADER}: Bearer {channel_secret(master, channel)}"


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def secret_matches(master: str | None, channel: str, presented: str | None) -> bool:
    """Constant-time check of a presented secret; always False without a configured master secret."""
    if not master or presented is None:
        return False
    expected = channel_secret(master, channel).encode("utf-8")
    return hmac.compare_digest(expected, presented.encode("utf-8"))


def token_matches(configured: str | None, presented: str | None) -> bool:
    """Constant-time bearer token check (the read-only FHIR API's ``api_token``); False when not configured."""
    if not configured or presented is None:
        return False
    return hmac.compare_digest(configured.encode("utf-8"), presented.encode("utf-8"))


def classic_subscription_id(channel: str) -> str:
    """The store's id for a classic subscription (its notifications do not name the Subscription)."""
    return f"channel/{channel}"


__all__ = [
    "DEFAULT_CHANNEL",
    "SECRET_HEADER",
    "bearer",
    "channel_header",
    "channel_secret",
    "check_channel",
    "classic_subscription_id",
    "secret_matches",
    "token_matches",
]
