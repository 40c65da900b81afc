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

Every body is read through the declared models of ``edges`` (strict types, ASCII-only counts); resources are
reduced at once to their ``Digest`` (ids and codes): no body is stored. A non-empty body must say it is FHIR JSON
(415 otherwise) and a whitespace-only body is refused (400). Every problem raises an ``InputError`` whose issues
carry the element paths (``Bundle.entry[0].resource.parameter[4].valueString``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.errors import InputError, Issue, SourceUnreadable
from bridge.service.channels import classic_subscription_id
from bridge.service.edges import (
    FHIR_ID,
    RESOURCE_TYPE,
    NotificationBundle,
    Parameter,
    ParametersStatus,
    Reference,
    SubscriptionStatus,
    invalid,
    parameter_value,
    parse,
)
from bridge.service.triggers import Digest, check_identity, digest, reference_parts
from bridge.state import Delivery, InboxEvent

FHIR_JSON = "application/fhir+json"
JSON_MEDIA_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
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
    """A body must be FHIR JSON and say so (415); only an empty body (a ping) may come without a content type."""
    if not body:
        return
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in JSON_MEDIA_TYPES:
        message = "the body must be application/fhir+json" if media else "a body needs Content-Type: " \
                  "application/fhir+json"
        raise InputError(message, issues=[Issue("not-supported", message, ("Content-Type",))])


def check_not_blank(body: bytes) -> None:
    """Whitespace alone is neither an empty notification nor JSON (400): nothing is stored for it."""
    if body and not body.strip():
        message = "the body is only whitespace: send no body at all, or a FHIR resource"
        raise InputError(message, issues=[Issue("structure", message, ("body",))])


def load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        message = f"the body is not valid JSON (at character {exc.pos})"
        raise SourceUnreadable(message, issues=[Issue("structure", message, ("body",))]) from None


def _focus(ref: Reference | None, path: str) -> tuple[str, str]:
    parts = reference_parts(ref.reference) if ref is not None and ref.reference is not None else None
    if parts is None:
        raise invalid(f"{path}.reference", "the focus is not a literal reference to a resource")
    return parts


def _subscription_ref(ref: Reference, path: str) -> str:
    parts = reference_parts(ref.reference) if ref.reference is not None else None
    if parts is None or parts[0] != "Subscription":
        raise invalid(f"{path}.reference", "the subscription is not a reference to a Subscription")
    return f"Subscription/{parts[1]}"


# ------------------------------------------------------------------------------------------ R4 backport


def _notice_from_parts(param: Parameter, path: str) -> Notice:
    number, focus = None, None
    for i, part in enumerate(param.part):
        where = f"{path}.part[{i}]"
        if part.name in ("event-number", "eventNumber"):
            number = parameter_value(part, where)[1]
        elif part.name == "focus":
            vpath, ref = parameter_value(part, where)
            focus = _focus(ref, vpath)
    return Notice(number, focus, path)


def _set_parameter(status: Status, param: Parameter, path: str) -> None:
    name = param.name
    if name == "subscription":
        vpath, ref = parameter_value(param, path)
        status.subscription = _subscription_ref(ref, vpath)
    elif name in ("topic", "status", "type"):
        setattr(status, name, parameter_value(param, path)[1])
    elif name in ("events-since-subscription-start", "eventsSinceSubscriptionStart"):
        status.events_since = parameter_value(param, path)[1]


def status_from_parameters(resource: Json, root: str = STATUS_ROOT) -> Status:
    """The R4 backport SubscriptionStatus (a ``Parameters``)."""
    model: ParametersStatus = parse(ParametersStatus, resource, root)
    status = Status()
    for i, param in enumerate(model.parameter):
        where = f"{root}.parameter[{i}]"
        if param.name in ("notification-event", "notificationEvent"):
            status.notices.append(_notice_from_parts(param, where))
        else:
            _set_parameter(status, param, where)
    if status.subscription is None:
        raise invalid(f"{root}.parameter", "the status names no subscription")
    if status.type is None:
        raise invalid(f"{root}.parameter", "the status has no notification type (handshake, heartbeat, "
                      "event-notification, query-status, query-event)")
    return status


# ------------------------------------------------------------------------------------------ R4B


def status_from_subscription_status(resource: Json, root: str = STATUS_ROOT) -> Status:
    """The R4B ``SubscriptionStatus`` resource."""
    model: SubscriptionStatus = parse(SubscriptionStatus, resource, root)
    status = Status(topic=model.topic, status=model.status, type=model.type,
                    subscription=_subscription_ref(model.subscription, f"{root}.subscription"),
                    events_since=model.eventsSinceSubscriptionStart)
    for i, ev in enumerate(model.notificationEvent):
        path = f"{root}.notificationEvent[{i}]"
        focus = _focus(ev.focus, f"{path}.focus") if ev.focus is not None else None
        status.notices.append(Notice(ev.eventNumber, focus, path))
    return status


# ------------------------------------------------------------------------------------------ Bundles


def _status_of(bundle: NotificationBundle) -> Status:
    head = bundle.entry[0].resource
    if head is None:
        raise invalid(STATUS_ROOT, "the first entry must carry the subscription status resource")
    kind = head.get("resourceType")
    if kind == "Parameters":
        return status_from_parameters(head)
    if kind == "SubscriptionStatus":
        return status_from_subscription_status(head)
    raise invalid(f"{STATUS_ROOT}.resourceType", "the first entry must be a Parameters (R4 backport "
                  "SubscriptionStatus) or a SubscriptionStatus (R4B)")


def _entry_resources(bundle: NotificationBundle) -> dict[tuple[str, str], tuple[Json, str]]:
    """The resources of entries 1.. by (type, id), with their element paths."""
    found: dict[tuple[str, str], tuple[Json, str]] = {}
    for j, entry in enumerate(bundle.entry[1:], start=1):
        if entry.resource is not None:
            path = f"Bundle.entry[{j}].resource"
            found[check_identity(entry.resource, path)] = (entry.resource, path)
    return found


def _legacy_notices(bundle: NotificationBundle, status: Status) -> list[Notice]:
    """Backport STU1 without ``notification-event``: the entries after the status are the events."""
    refs: list[tuple[tuple[str, str] | None, str]] = []
    for j, entry in enumerate(bundle.entry[1:], start=1):
        if entry.resource is not None:
            refs.append((check_identity(entry.resource, f"Bundle.entry[{j}].resource"), f"Bundle.entry[{j}]"))
        elif entry.fullUrl is not None:
            refs.append((reference_parts(entry.fullUrl), f"Bundle.entry[{j}]"))
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


def parse_bundle(channel: str, document: Json) -> Delivery:
    """A topic-based notification Bundle (R4 backport or R4B) -> ``Delivery``."""
    bundle: NotificationBundle = parse(NotificationBundle, document, "Bundle")
    status = _status_of(bundle)
    sub = str(status.subscription)
    events: tuple[InboxEvent, ...] = ()
    if status.type in EVENT_TYPES:
        notices = status.notices or _legacy_notices(bundle, status)
        resources = _entry_resources(bundle)
        bundle_id = bundle.id or bundle.timestamp or uuid.uuid4().hex
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
    if not RESOURCE_TYPE.fullmatch(resource_type):
        raise invalid("type", "the URL does not name a FHIR resource type", "value")
    if not FHIR_ID.fullmatch(resource_id):
        raise invalid("id", "the URL does not carry a valid FHIR id", "value")


def _check_body(body: bytes, content_type: str | None) -> None:
    check_media_type(content_type, body)
    check_not_blank(body)


def parse_put(channel: str, resource_type: str, resource_id: str, body: bytes,
              content_type: str | None = FHIR_JSON) -> Delivery:
    """``PUT {endpoint}/{type}/{id}`` — the classic rest-hook form with the resource as body (an empty body: the
    worker reads the resource from the EHR). ``content_type`` is the request's header, None when it had none."""
    _check_path_ids(resource_type, resource_id)
    _check_body(body, content_type)
    if not body:
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


def parse_post(channel: str, body: bytes, content_type: str | None = FHIR_JSON) -> Delivery:
    """``POST {endpoint}``: an empty ping, a topic notification Bundle, or a resource (``content_type`` as for
    ``parse_put``)."""
    _check_body(body, content_type)
    if not body:
        return _rest_hook(channel, ping_event(channel))
    doc = load_json(body)
    rtype = doc.get("resourceType") if isinstance(doc, dict) else None
    if not isinstance(rtype, str):
        raise invalid("resourceType", "the body is not a FHIR resource (no resourceType)")
    if rtype == "Bundle":
        return parse_bundle(channel, doc)
    return _rest_hook(channel, resource_event(channel, doc, rtype))


__all__ = [
    "FHIR_JSON",
    "JSON_MEDIA_TYPES",
    "Notice",
    "Status",
    "check_media_type",
    "check_not_blank",
    "load_json",
    "parse_bundle",
    "parse_post",
    "parse_put",
    "ping_event",
    "resource_event",
    "status_from_parameters",
    "status_from_subscription_status",
]
