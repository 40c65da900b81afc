"""Notifications in: classic R4 rest-hook, R4 backport topic-based and R4B SubscriptionStatus -> ``Delivery``.

Accepted shapes (``channel`` is the bridge-side channel the request came in on, see ``channels``):

* ``PUT /notify[/{channel}]/{type}/{id}`` with the resource (classic rest-hook with a payload): one
  ``resource`` event, de-duplicated on the resource version (``meta.versionId``, else ``lastUpdated``, else a
  hash of the content).
* ``POST /notify[/{channel}]`` with an empty body (classic rest-hook without payload): one ``query`` event —
  the worker asks the EHR what changed since its last query on that channel.
* ``POST`` of a resource (an EHR that posts the resource instead of putting it): as the ``PUT`` form.
* ``POST`` of a ``history`` Bundle (R4 backport) or ``subscription-notification`` Bundle (R4B) whose first
  entry is the status — ``Parameters`` (backport ``SubscriptionStatus`` profile) or ``SubscriptionStatus``:
  ``handshake`` / ``heartbeat`` / ``query-status`` carry no events; ``event-notification`` / ``query-event``
  carry one event per notification event, de-duplicated on (subscription, event number). Payload content
  ``full-resource`` -> the focus resource is digested from its entry; ``id-only`` -> a ``resource`` event
  without body (the worker reads it from the EHR with its own credentials); ``empty`` -> a ``query`` event.

Resources are reduced at once to their ``Digest`` (ids and codes): no body is stored. Every problem raises an
``InputError`` whose issue carries the element path (``Bundle.entry[0].resource.parameter[4].valueString``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.errors import InputError, Issue, SourceUnreadable
from bridge.service.channels import classic_subscription_id
from bridge.service.triggers import FHIR_ID, RESOURCE_TYPE, Digest, check_identity, digest, invalid, reference_parts
from bridge.state import Delivery, InboxEvent

JSON_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
NOTIFICATION_BUNDLE_TYPES = frozenset({"history", "subscription-notification"})
NOTIFICATION_TYPES = frozenset({"handshake", "heartbeat", "event-notification", "query-status", "query-event"})
EVENT_TYPES = frozenset({"event-notification", "query-event"})
STATUS_ROOT = "Bundle.entry[0].resource"
Json = dict[str, Any]


@dataclass
class Notice:
    """One notification event as read from the status: its number and focus (``Type/id``), if any."""

    number: int | None
    focus: tuple[str, str] | None
    path: str


@dataclass
class Status:
    """The subscription status at the head of a topic notification, whatever its R4 / R4B encoding."""

    subscription: str | None = None
    topic: str | None = None
    status: str | None = None
    type: str | None = None
    events_since: int | None = None
    notices: list[Notice] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ body checks


def check_media_type(content_type: str | None, body: bytes) -> None:
    """A body must be FHIR JSON; an empty body may come without a content type."""
    media = (content_type or "").split(";")[0].strip().lower()
    if body.strip() and media and media not in JSON_MEDIA_TYPES:
        message = "the body must be application/fhir+json"
        raise InputError(message, issues=[Issue("not-supported", message, ("Content-Type",))])


def load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        message = f"the body is not valid JSON (at character {exc.pos})"
        raise SourceUnreadable(message, issues=[Issue("structure", message, ("body",))]) from None


def _unsigned(value: Any, path: str) -> int:
    """An event count or number: unsignedInt, integer, or the string form of integer64."""
    if isinstance(value, bool):
        raise invalid(path, "expected an unsigned integer")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    raise invalid(path, "expected an unsigned integer")


def _focus(node: Any, path: str) -> tuple[str, str]:
    ref = node.get("reference") if isinstance(node, dict) else None
    parts = reference_parts(ref) if isinstance(ref, str) else None
    if parts is None:
        raise invalid(f"{path}.reference", "the focus is not a literal reference to a resource")
    return parts


def _subscription_ref(node: Any, path: str) -> str:
    ref = node.get("reference") if isinstance(node, dict) else None
    parts = reference_parts(ref) if isinstance(ref, str) else None
    if parts is None or parts[0] != "Subscription":
        raise invalid(f"{path}.reference", "the subscription is not a reference to a Subscription")
    return f"Subscription/{parts[1]}"


# ------------------------------------------------------------------------------------------ R4 backport


def _value(param: Json, path: str) -> tuple[str, Any]:
    for key, value in param.items():
        if key.startswith("value"):
            return f"{path}.{key}", value
    return f"{path}.value[x]", None


def _named(items: Any, path: str, element: str) -> Iterator[tuple[str, str, Json]]:
    """(name, path, item) of each ``parameter`` / ``part`` entry, checking the shape."""
    if not isinstance(items, list):
        raise invalid(f"{path}.{element}", f"{element} must be a list")
    for i, item in enumerate(items):
        where = f"{path}.{element}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise invalid(f"{where}.name", f"every {element} needs a name")
        yield item["name"], where, item


def _notice_from_parts(param: Json, path: str) -> Notice:
    number, focus = None, None
    for name, where, part in _named(param.get("part", []), path, "part"):
        vpath, value = _value(part, where)
        if name in ("event-number", "eventNumber"):
            number = _unsigned(value, vpath)
        elif name == "focus":
            focus = _focus(value, vpath)
    return Notice(number, focus, path)


def _set_parameter(status: Status, name: str, vpath: str, value: Any) -> None:
    if name == "subscription":
        status.subscription = _subscription_ref(value, vpath)
    elif name == "topic":
        status.topic = value if isinstance(value, str) else None
    elif name == "status":
        status.status = value if isinstance(value, str) else None
    elif name == "type":
        status.type = value if isinstance(value, str) else None
    elif name in ("events-since-subscription-start", "eventsSinceSubscriptionStart"):
        status.events_since = _unsigned(value, vpath)


def status_from_parameters(resource: Json, root: str = STATUS_ROOT) -> Status:
    """The R4 backport SubscriptionStatus (a ``Parameters``)."""
    status = Status()
    for name, where, param in _named(resource.get("parameter"), root, "parameter"):
        if name in ("notification-event", "notificationEvent"):
            status.notices.append(_notice_from_parts(param, where))
        else:
            _set_parameter(status, name, *_value(param, where))
    return status


# ------------------------------------------------------------------------------------------ R4B


def status_from_subscription_status(resource: Json, root: str = STATUS_ROOT) -> Status:
    """The R4B ``SubscriptionStatus`` resource."""
    status = Status(topic=resource.get("topic") if isinstance(resource.get("topic"), str) else None,
                    status=resource.get("status") if isinstance(resource.get("status"), str) else None,
                    type=resource.get("type") if isinstance(resource.get("type"), str) else None)
    if "subscription" in resource:
        status.subscription = _subscription_ref(resource["subscription"], f"{root}.subscription")
    if "eventsSinceSubscriptionStart" in resource:
        status.events_since = _unsigned(resource["eventsSinceSubscriptionStart"],
                                        f"{root}.eventsSinceSubscriptionStart")
    events = resource.get("notificationEvent", [])
    if not isinstance(events, list):
        raise invalid(f"{root}.notificationEvent", "notificationEvent must be a list")
    for i, ev in enumerate(events):
        status.notices.append(_r4b_notice(ev, f"{root}.notificationEvent[{i}]"))
    return status


def _r4b_notice(ev: Any, path: str) -> Notice:
    if not isinstance(ev, dict):
        raise invalid(path, "a notificationEvent must be an object")
    number = _unsigned(ev["eventNumber"], f"{path}.eventNumber") if "eventNumber" in ev else None
    focus = _focus(ev["focus"], f"{path}.focus") if "focus" in ev else None
    return Notice(number, focus, path)


# ------------------------------------------------------------------------------------------ Bundles


def _status_of(bundle: Json) -> Status:
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise invalid("Bundle.entry", "a notification Bundle starts with its subscription status entry")
    head = entries[0].get("resource")
    if not isinstance(head, dict):
        raise invalid(STATUS_ROOT, "the first entry must carry the subscription status resource")
    kind = head.get("resourceType")
    if kind == "Parameters":
        status = status_from_parameters(head)
    elif kind == "SubscriptionStatus":
        status = status_from_subscription_status(head)
    else:
        raise invalid(f"{STATUS_ROOT}.resourceType", "the first entry must be a Parameters (R4 backport "
                      "SubscriptionStatus) or a SubscriptionStatus (R4B)")
    _check_status(status)
    return status


def _check_status(status: Status) -> None:
    where = f"{STATUS_ROOT}.parameter"
    if status.subscription is None:
        raise invalid(where, "the status names no subscription")
    if status.type not in NOTIFICATION_TYPES:
        raise invalid(where, "the status has no notification type (handshake, heartbeat, event-notification, "
                      "query-status, query-event)")


def _entry_resources(bundle: Json) -> dict[tuple[str, str], tuple[Json, str]]:
    """The resources of entries 1.. by (type, id), with their element paths."""
    found: dict[tuple[str, str], tuple[Json, str]] = {}
    for j, entry in enumerate(bundle["entry"][1:], start=1):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is not None:
            path = f"Bundle.entry[{j}].resource"
            found[check_identity(resource, path)] = (resource, path)
    return found


def _legacy_notices(bundle: Json, status: Status) -> list[Notice]:
    """Backport STU1 without ``notification-event``: the entries after the status are the events."""
    refs: list[tuple[tuple[str, str] | None, str]] = []
    for j, entry in enumerate(bundle["entry"][1:], start=1):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            refs.append((check_identity(resource, f"Bundle.entry[{j}].resource"), f"Bundle.entry[{j}]"))
        elif isinstance(url, str):
            refs.append((reference_parts(url), f"Bundle.entry[{j}]"))
    last = status.events_since
    if not refs:
        return [Notice(last, None, STATUS_ROOT)]
    first = None if last is None else last - len(refs) + 1
    return [Notice(None if first is None else first + i, ref, path) for i, (ref, path) in enumerate(refs)]


def _event_key(subscription: str, notice: Notice, bundle_id: str) -> str:
    if notice.number is not None:
        return f"event:{subscription}:{notice.number}"
    focus = "/".join(notice.focus) if notice.focus else "-"
    return f"event:{subscription}:{focus}:{bundle_id}"


def _topic_event(channel: str, subscription: str, notice: Notice, bundle_id: str,
                 resources: dict[tuple[str, str], tuple[Json, str]]) -> InboxEvent:
    key = _event_key(subscription, notice, bundle_id)
    if notice.focus is None:
        return InboxEvent(key, "query", channel, subscription, notice.number, payload={"reason": "empty-payload"})
    rtype, rid = notice.focus
    body = resources.get(notice.focus)
    dig = digest(body[0], body[1]) if body else None
    return InboxEvent(key, "resource", channel, subscription, notice.number, rtype, rid,
                      dig.patient_id if dig else None, {"digest": dig.as_json()} if dig else None)


def parse_bundle(channel: str, bundle: Json) -> Delivery:
    """A topic-based notification Bundle (R4 backport or R4B) -> ``Delivery``."""
    if bundle.get("type") not in NOTIFICATION_BUNDLE_TYPES:
        raise invalid("Bundle.type", "a notification Bundle has type history (R4 backport) or "
                      "subscription-notification (R4B)")
    status = _status_of(bundle)
    sub = str(status.subscription)
    events: tuple[InboxEvent, ...] = ()
    if status.type in EVENT_TYPES:
        notices = status.notices or _legacy_notices(bundle, status)
        resources = _entry_resources(bundle)
        bundle_id = str(bundle.get("id") or bundle.get("timestamp") or uuid.uuid4().hex)
        events = tuple(_topic_event(channel, sub, n, bundle_id, resources) for n in notices)
    return Delivery(channel, sub, str(status.type), events, status.events_since, status.topic, status.status)


# ------------------------------------------------------------------------------------------ rest-hook


def resource_event(channel: str, resource: Json, root: str) -> InboxEvent:
    dig: Digest = digest(resource, root)
    return InboxEvent(f"res:{dig.version_key}", "resource", channel, classic_subscription_id(channel),
                      resource_type=dig.resource_type, resource_id=dig.resource_id, patient_id=dig.patient_id,
                      payload={"digest": dig.as_json()})


def ping_event(channel: str) -> InboxEvent:
    """An empty rest-hook notification: something matching the criteria changed; ask the EHR what."""
    return InboxEvent(f"ping:{channel}:{uuid.uuid4().hex}", "query", channel, classic_subscription_id(channel),
                      payload={"reason": "ping"})


def _rest_hook(channel: str, event: InboxEvent) -> Delivery:
    return Delivery(channel, classic_subscription_id(channel), "rest-hook", (event,))


def _check_path_ids(resource_type: str, resource_id: str) -> None:
    if not RESOURCE_TYPE.match(resource_type):
        raise invalid("type", "the URL does not name a FHIR resource type", "value")
    if not FHIR_ID.match(resource_id):
        raise invalid("id", "the URL does not carry a valid FHIR id", "value")


def parse_put(channel: str, resource_type: str, resource_id: str, body: bytes,
              content_type: str | None = None) -> Delivery:
    """``PUT {endpoint}/{type}/{id}`` — the classic rest-hook form with the resource as body."""
    _check_path_ids(resource_type, resource_id)
    check_media_type(content_type, body)
    if not body.strip():
        key = f"res:{resource_type}/{resource_id}@{uuid.uuid4().hex}"
        event = InboxEvent(key, "resource", channel, classic_subscription_id(channel), None, resource_type,
                           resource_id)
        return _rest_hook(channel, event)
    resource = load_json(body)
    found = check_identity(resource, resource_type)
    if found[0] != resource_type:
        raise invalid(f"{resource_type}.resourceType", "the body's resourceType differs from the URL's type")
    if found[1] != resource_id:
        raise invalid(f"{resource_type}.id", "the body's id differs from the id in the URL")
    return _rest_hook(channel, resource_event(channel, resource, resource_type))


def parse_post(channel: str, body: bytes, content_type: str | None = None) -> Delivery:
    """``POST {endpoint}``: an empty ping, a topic notification Bundle, or a resource."""
    check_media_type(content_type, body)
    if not body.strip():
        return _rest_hook(channel, ping_event(channel))
    doc = load_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        raise invalid("resourceType", "the body is not a FHIR resource (no resourceType)")
    if doc["resourceType"] == "Bundle":
        return parse_bundle(channel, doc)
    return _rest_hook(channel, resource_event(channel, doc, doc["resourceType"]))


__all__ = [
    "JSON_MEDIA_TYPES",
    "Notice",
    "Status",
    "check_media_type",
    "load_json",
    "parse_bundle",
    "parse_post",
    "parse_put",
    "ping_event",
    "resource_event",
    "status_from_parameters",
    "status_from_subscription_status",
]
