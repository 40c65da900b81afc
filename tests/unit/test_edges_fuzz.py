"""Hypothesis-generated notifications, posted authenticated to the real app (issue #14 item 6).

Bodies are drawn from the structure of the specifications — R4 backport ``history`` Bundles with a
``Parameters`` status, R4B ``subscription-notification`` Bundles with a ``SubscriptionStatus``, and the
classic rest-hook resources — and then mutated: any node replaced by JSON of another shape (lists for objects,
objects for strings, numbers in other scripts' digits, huge integers, booleans, null), keys dropped, values
wrapped in lists. Whatever comes, the service never answers 5xx; what it accepts is stored exactly once
(every event key the body yields is in the inbox once, and a second delivery of the same body adds nothing).
Derandomized, so every run tries the same bodies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import Settings
from bridge.errors import InputError
from bridge.service.app import create_app
from bridge.service.edges import NOTIFICATION_TYPES
from bridge.service.notifications import parse_post, parse_put
from bridge.state.sqlite_state import SqliteState

SECRET = "fuzz-webhook-secret-0123456789abcdefgh"
HEADERS = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/fhir+json"}
EHR = "http://ehr.example/fhir"
Json = dict[str, Any]

ids = st.one_of(st.from_regex(r"[A-Za-z0-9\-.]{1,12}", fullmatch=True), st.sampled_from(["", "bad id", "é", "¹²"]))
counts = st.one_of(st.integers(0, 50), st.integers(0, 50).map(str), st.sampled_from(["¹²", "١٢", "-1", "1.5"]))
codes = st.sampled_from(["751-8", "26464-8", "C92.0", "IMP", "AMB", "in-progress", "final", "x"])
systems = st.sampled_from(["http://loinc.org", "http://hl7.org/fhir/sid/icd-10",
                           "http://terminology.hl7.org/CodeSystem/v3-ActCode", "urn:local"])
coding = st.fixed_dictionaries({"system": systems, "code": codes})
reference = st.builds(lambda t, i: {"reference": f"{EHR}/{t}/{i}"}, st.sampled_from(["Patient", "Group"]), ids)
meta = st.fixed_dictionaries({}, optional={"versionId": ids, "lastUpdated": st.just("2026-06-15T08:00:00Z")})


def _resource(kind: str) -> st.SearchStrategy[Json]:
    extra: dict[str, st.SearchStrategy[Any]] = {"meta": meta, "status": codes, "subject": reference}
    if kind == "Encounter":
        extra["class"] = coding
    elif kind in ("Observation", "Condition"):
        extra["code"] = st.fixed_dictionaries({"coding": st.lists(coding, max_size=3)})
    return st.fixed_dictionaries({"resourceType": st.just(kind), "id": ids}, optional=extra)


resources = st.sampled_from(["Encounter", "Observation", "Condition", "Patient"]).flatmap(_resource)


def _event_parts(number: Any, focus: str | None) -> Json:
    parts: list[Json] = [{"name": "event-number", "valueString": number}]
    if focus:
        parts.append({"name": "focus", "valueReference": {"reference": f"{EHR}/{focus}"}})
    return {"name": "notification-event", "part": parts}


@st.composite
def backport_status(draw: st.DrawFn, focus: list[str]) -> Json:
    params: list[Json] = [
        {"name": "subscription", "valueReference": {"reference": f"{EHR}/Subscription/{draw(ids)}"}},
        {"name": "topic", "valueCanonical": "http://example.org/topic/admission"},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": draw(st.sampled_from(NOTIFICATION_TYPES))},
        {"name": "events-since-subscription-start", "valueString": draw(counts)},
    ]
    params += [_event_parts(draw(counts), f) for f in focus]
    return {"resourceType": "Parameters", "parameter": draw(st.permutations(params))}


@st.composite
def r4b_status(draw: st.DrawFn, focus: list[str]) -> Json:
    return {"resourceType": "SubscriptionStatus", "status": "active", "type": draw(st.sampled_from(NOTIFICATION_TYPES)),
            "eventsSinceSubscriptionStart": draw(counts), "topic": "http://example.org/topic/admission",
            "subscription": {"reference": f"{EHR}/Subscription/{draw(ids)}"},
            "notificationEvent": [{"eventNumber": draw(counts), "focus": {"reference": f"{EHR}/{f}"}} for f in focus]}


@st.composite
def bundles(draw: st.DrawFn) -> Json:
    payload = draw(st.lists(resources, max_size=3))
    focus = [f"{r['resourceType']}/{r['id']}" for r in payload]
    r4b = draw(st.booleans())
    status = draw(r4b_status(focus) if r4b else backport_status(focus))
    entries = [{"fullUrl": "urn:uuid:status", "resource": status}]
    entries += [{"fullUrl": f"{EHR}/{f}", "resource": r} for f, r in zip(focus, payload, strict=True)
                if draw(st.booleans())]  # full-resource or id-only
    bundle: Json = {"resourceType": "Bundle", "type": "subscription-notification" if r4b else "history",
                    "entry": entries}
    bundle.update(draw(st.fixed_dictionaries({}, optional={"id": ids, "timestamp": st.just("2026-06-15T08:00:01Z")})))
    return bundle


odd_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(2**63, 2**80), st.floats(allow_nan=False),
              st.text(max_size=8), st.sampled_from(["¹²", "١٢", "１２", "\u0000", "history", "Patient/p1"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, child in children:
        yield from _nodes(child, (*path, key))


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Json]) -> Any:
    doc = draw(documents)
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _nodes(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(["replace", "drop", "wrap"]))
        if how == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif how == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        else:
            parent[path[-1]] = draw(odd_values)
    return doc


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, SqliteState]]:
    store = SqliteState(tmp_path_factory.mktemp("fuzz") / "state.sqlite3")
    with TestClient(create_app(Settings(webhook_secret=SECRET, max_body_bytes=200_000), store)) as client:
        yield client, store
    store.close()


def _keys(body: bytes, put: tuple[str, str] | None) -> list[str] | None:
    """The event keys the body yields, or None when they are not the same on every reading (pings, events
    without number, bundle id or timestamp: each delivery of those is a new event by design)."""
    def read() -> list[str]:
        delivery = parse_put("default", *put, body) if put else parse_post("default", body)
        return [e.dedupe_key for e in delivery.events]

    first = read()
    return first if first == read() else None


def _stored(store: SqliteState) -> list[str]:
    return [e.event.dedupe_key for e in store.inbox_entries()]


def _post(client: TestClient, body: bytes, put: tuple[str, str] | None) -> Any:
    if put:
        return client.put(f"/notify/{put[0]}/{put[1]}", content=body, headers=HEADERS)
    return client.post("/notify", content=body, headers=HEADERS)


def _check(service: tuple[TestClient, SqliteState], doc: Any, put: tuple[str, str] | None) -> None:
    client, store = service
    body = json.dumps(doc, ensure_ascii=False).encode()
    before = set(_stored(store))
    answer = _post(client, body, put)
    assert answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    assert answer.json()["resourceType"] == "OperationOutcome"
    if answer.status_code != 200:
        assert set(_stored(store)) == before  # refused: nothing stored
        return
    stored = _stored(store)
    assert len(stored) == len(set(stored))
    try:
        keys = _keys(body, put)
    except InputError as exc:  # accepted by the app, refused by the parser: impossible
        raise AssertionError(exc.message) from None
    if keys is None:
        return
    assert set(keys) <= set(stored) and len(stored) == len(before | set(keys))
    again = _post(client, body, put)
    assert again.status_code == 200 and "0 new event(s)" in again.json()["issue"][0]["diagnostics"]
    assert len(_stored(store)) == len(stored)


FUZZ = settings(max_examples=250, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(doc=mutated(bundles()))
def test_topic_notifications_never_5xx_and_are_stored_once(service: tuple[TestClient, SqliteState],
                                                           doc: Any) -> None:
    _check(service, doc, None)


@FUZZ
@given(doc=mutated(resources), put=st.booleans())
def test_rest_hook_resources_never_5xx_and_are_stored_once(service: tuple[TestClient, SqliteState], doc: Any,
                                                           put: bool) -> None:
    target = None
    if put and isinstance(doc, dict):
        rtype, rid = doc.get("resourceType"), doc.get("id")
        target = (rtype if isinstance(rtype, str) and rtype.isascii() and rtype.isalpha() else "Encounter",
                  rid if isinstance(rid, str) and rid.isascii() and rid.isalnum() else "e1")
    _check(service, doc, target)


def test_the_fuzzer_reaches_acceptance_and_refusal(service: tuple[TestClient, SqliteState]) -> None:
    """The strategies are not all-refused nor all-accepted: both outcomes are exercised."""
    client, _ = service
    seen: set[int] = set()

    @settings(max_examples=60, derandomize=True, deadline=None, database=None)
    @given(doc=mutated(bundles()))
    def probe(doc: Any) -> None:
        seen.add(client.post("/notify", content=json.dumps(doc).encode(), headers=HEADERS).status_code)

    probe()
    assert {200, 400} <= seen
