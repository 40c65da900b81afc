"""Notifications in (classic rest-hook, R4 backport, R4B) -> events; digests and trigger decisions."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bridge.errors import InputError, SourceUnreadable
from bridge.normalize.mappings import CodeMap, load_code_map
from bridge.service.channels import channel_header, channel_secret, secret_matches
from bridge.service.notifications import parse_bundle, parse_post, parse_put
from bridge.service.triggers import Digest, decide, digest, patient_of, version_key
from tests.shared import EXAMPLES

EHR = "http://ehr.example/fhir"
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
ADMISSION_TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/encounter-start"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.fixture(scope="module")
def cmap() -> CodeMap:
    return load_code_map()


def encounter(eid: str = "e1", patient: str = "p1", klass: str = "IMP", status: str = "in-progress",
              version: str | None = "1") -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Encounter", "id": eid, "status": status,
                           "class": {"system": ACT, "code": klass}, "subject": {"reference": f"Patient/{patient}"}}
    if version:
        res["meta"] = {"versionId": version, "lastUpdated": "2026-06-15T08:00:00+08:00"}
    return res


def observation(oid: str = "o1", patient: str = "p1", code: str = "751-8") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "meta": {"versionId": "2"},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"{EHR}/Patient/{patient}"},
            "valueQuantity": {"value": 0.4, "unit": "10*9/L"}}


def status_parameters(ntype: str, since: int, events: list[dict[str, Any]] | None = None,
                      sub: str = "adm1") -> dict[str, Any]:
    """As the R4 backport IG (and the sekmet peer) encode the SubscriptionStatus."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{EHR}/Subscription/{sub}"}},
        {"name": "topic", "valueCanonical": ADMISSION_TOPIC},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": ntype},
        {"name": "events-since-subscription-start", "valueString": str(since)},
    ]
    for ev in events or []:
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(ev["number"])},
                                       {"name": "timestamp", "valueInstant": "2026-06-15T08:00:01Z"}]
        if ev.get("focus"):
            parts.append({"name": "focus", "valueReference": {"reference": f"{EHR}/{ev['focus']}"}})
        params.append({"name": "notification-event", "part": parts})
    return {"resourceType": "Parameters", "id": "st1", "meta": {"profile": [f"{BP}/backport-subscription-status-r4"]},
            "parameter": params}


def backport_bundle(ntype: str, since: int, events: list[dict[str, Any]] | None = None,
                    resources: list[dict[str, Any]] | None = None, sub: str = "adm1") -> dict[str, Any]:
    entries = [{"fullUrl": "urn:uuid:st1", "resource": status_parameters(ntype, since, events, sub)}]
    for r in resources or []:
        entries.append({"fullUrl": f"{EHR}/{r['resourceType']}/{r['id']}", "resource": copy.deepcopy(r),
                        "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                        "response": {"status": "200"}})
    return {"resourceType": "Bundle", "id": "b1", "type": "history", "timestamp": "2026-06-15T08:00:01Z",
            "entry": entries}


def r4b_bundle(ntype: str, since: int, events: list[dict[str, Any]]) -> dict[str, Any]:
    status = {"resourceType": "SubscriptionStatus", "status": "active", "type": ntype,
              "eventsSinceSubscriptionStart": str(since), "topic": ADMISSION_TOPIC,
              "subscription": {"reference": f"{EHR}/Subscription/r4b"},
              "notificationEvent": [{"eventNumber": str(e["number"]),
                                     "focus": {"reference": f"{EHR}/{e['focus']}"}} for e in events]}
    return {"resourceType": "Bundle", "type": "subscription-notification", "entry": [{"resource": status}]}


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def issue_path(exc: pytest.ExceptionInfo[InputError]) -> str:
    return exc.value.issues[0].expression[0]


# ------------------------------------------------------------------------------------------ classic rest-hook


def test_put_with_resource_becomes_one_digested_event() -> None:
    d = parse_put("ward", "Encounter", "e1", raw(encounter()), "application/fhir+json; charset=utf-8")
    assert (d.channel, d.subscription, d.notification, d.kind) == ("ward", "channel/ward", "rest-hook", "classic")
    [ev] = d.events
    assert ev.dedupe_key == "res:Encounter/e1/_history/1"
    assert (ev.kind, ev.resource_type, ev.resource_id, ev.patient_id) == ("resource", "Encounter", "e1", "p1")
    assert ev.payload == {"digest": {"type": "Encounter", "id": "e1", "version": "Encounter/e1/_history/1",
                                     "patient": "p1", "status": "in-progress", "classes": ["IMP"], "codings": []}}


def test_the_digest_keeps_no_value_name_or_identifier() -> None:
    obs = observation() | {"identifier": [{"system": "urn:lab", "value": "LAB-99871"}],
                           "performer": [{"display": "Dr Jane Roe"}]}
    [ev] = parse_put("default", "Observation", "o1", raw(obs)).events
    stored = json.dumps(ev.payload)
    for secret in ("0.4", "LAB-99871", "Jane", "10*9/L"):
        assert secret not in stored


def test_same_version_gives_the_same_key_and_a_new_version_another() -> None:
    one = parse_put("c", "Encounter", "e1", raw(encounter(version="1"))).events[0].dedupe_key
    again = parse_put("c", "Encounter", "e1", raw(encounter(version="1"))).events[0].dedupe_key
    two = parse_put("c", "Encounter", "e1", raw(encounter(version="2"))).events[0].dedupe_key
    assert one == again != two


def test_without_meta_the_content_decides_the_key() -> None:
    a = version_key(encounter(version=None))
    assert a.startswith("Encounter/e1#") and a == version_key(encounter(version=None))
    assert a != version_key(encounter(version=None, status="finished"))


def test_put_checks_url_against_body() -> None:
    with pytest.raises(InputError) as exc:
        parse_put("c", "Encounter", "e2", raw(encounter("e1")))
    assert issue_path(exc) == "Encounter.id"
    with pytest.raises(InputError) as exc:
        parse_put("c", "Condition", "e1", raw(encounter("e1")))
    assert issue_path(exc) == "Condition.resourceType"
    with pytest.raises(InputError) as exc:
        parse_put("c", "encounter", "e1", raw(encounter("e1")))
    assert issue_path(exc) == "type"


@pytest.mark.parametrize(("body", "path"), [
    (b"{not json", "body"),
    (b"[1, 2]", "Encounter"),
    (b'{"id": "e1"}', "Encounter.resourceType"),
    (b'{"resourceType": "Encounter", "id": "bad id!"}', "Encounter.id"),
    (b'{"resourceType": "Encounter", "id": "e1", "subject": "Patient/p1"}', "Encounter.subject"),
])
def test_bad_bodies_name_the_element(body: bytes, path: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_put("c", "Encounter", "e1", body)
    assert issue_path(exc) == path


def test_not_json_is_source_unreadable() -> None:
    with pytest.raises(SourceUnreadable):
        parse_post("c", b"<html>", "application/json")


def test_other_media_types_are_not_supported() -> None:
    with pytest.raises(InputError) as exc:
        parse_post("c", b"<Encounter/>", "application/fhir+xml")
    assert exc.value.issues[0].code == "not-supported"


def test_empty_post_is_a_ping_that_asks_the_ehr() -> None:
    first, second = parse_post("labs", b"", None), parse_post("labs", b"")
    [ev] = first.events
    assert (ev.kind, ev.subscription, ev.payload) == ("query", "channel/labs", {"reason": "ping"})
    assert ev.dedupe_key != second.events[0].dedupe_key  # every ping counts


@pytest.mark.parametrize("body", [b" ", b"  \n", b"\t\r\n"])
def test_a_whitespace_only_body_is_no_ping(body: bytes) -> None:
    for parse in (lambda: parse_post("labs", body), lambda: parse_put("labs", "Encounter", "e1", body)):
        with pytest.raises(InputError) as exc:
            parse()
        assert (exc.value.issues[0].code, issue_path(exc)) == ("structure", "body")


def test_a_body_must_declare_its_media_type() -> None:
    with pytest.raises(InputError) as exc:
        parse_post("c", raw(observation()), None)
    assert (exc.value.issues[0].code, issue_path(exc)) == ("not-supported", "Content-Type")
    with pytest.raises(InputError):
        parse_put("c", "Observation", "o1", raw(observation()), "")
    assert parse_put("c", "Encounter", "e1", b"", None).events[0].resource_id == "e1"  # id-only: no body, no type


def test_a_posted_resource_is_read_like_a_put() -> None:
    [ev] = parse_post("c", raw(observation())).events
    assert (ev.resource_type, ev.resource_id, ev.patient_id) == ("Observation", "o1", "p1")


def test_empty_put_is_an_id_only_event() -> None:
    [ev] = parse_put("c", "Encounter", "e1", b"").events
    assert (ev.resource_type, ev.resource_id, ev.payload) == ("Encounter", "e1", None)


# ------------------------------------------------------------------------------------------ R4 backport, R4B


def test_backport_full_resource_event() -> None:
    bundle = backport_bundle("event-notification", 7, [{"number": 7, "focus": "Encounter/e1"}], [encounter()])
    d = parse_post("adm", raw(bundle), "application/fhir+json")
    assert (d.subscription, d.notification, d.events_since_start, d.topic, d.status, d.kind) == (
        "Subscription/adm1", "event-notification", 7, ADMISSION_TOPIC, "active", "topic")
    [ev] = d.events
    assert (ev.dedupe_key, ev.event_number, ev.kind, ev.patient_id) == ("event:Subscription/adm1:7", 7, "resource",
                                                                       "p1")
    assert ev.payload is not None and ev.payload["digest"]["classes"] == ["IMP"]


def test_backport_id_only_event_has_no_body() -> None:
    bundle = backport_bundle("event-notification", 3, [{"number": 2, "focus": "Encounter/e1"},
                                                       {"number": 3, "focus": "Encounter/e2"}])
    events = parse_bundle("adm", bundle).events
    assert [(e.event_number, e.resource_id, e.payload, e.patient_id) for e in events] == [
        (2, "e1", None, None), (3, "e2", None, None)]


def test_backport_empty_payload_becomes_a_query() -> None:
    [ev] = parse_bundle("adm", backport_bundle("event-notification", 4, [{"number": 4}])).events
    assert (ev.kind, ev.event_number, ev.payload) == ("query", 4, {"reason": "empty-payload"})


@pytest.mark.parametrize("ntype", ["handshake", "heartbeat", "query-status"])
def test_handshake_and_heartbeat_carry_no_events(ntype: str) -> None:
    d = parse_bundle("adm", backport_bundle(ntype, 12))
    assert (d.notification, d.events, d.events_since_start) == (ntype, (), 12)


def test_r4b_subscription_status() -> None:
    d = parse_post("adm", raw(r4b_bundle("event-notification", 9, [{"number": 9, "focus": "Encounter/e9"}])))
    assert (d.subscription, d.events_since_start, d.topic) == ("Subscription/r4b", 9, ADMISSION_TOPIC)
    [ev] = d.events
    assert (ev.dedupe_key, ev.resource_id) == ("event:Subscription/r4b:9", "e9")


def test_backport_stu1_without_notification_events_numbers_the_entries() -> None:
    bundle = backport_bundle("event-notification", 10, [], [encounter("e1"), encounter("e2", "p2")])
    events = parse_bundle("adm", bundle).events
    assert [(e.event_number, e.resource_id, e.patient_id) for e in events] == [(9, "e1", "p1"), (10, "e2", "p2")]


def test_camel_case_parameter_names_are_accepted() -> None:
    bundle = backport_bundle("heartbeat", 5)
    bundle["entry"][0]["resource"]["parameter"][4]["name"] = "eventsSinceSubscriptionStart"
    assert parse_bundle("adm", bundle).events_since_start == 5


def _with_param(bundle: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    bundle["entry"][0]["resource"]["parameter"][index] = {"name": bundle["entry"][0]["resource"]["parameter"][index][
        "name"], **changes}
    return bundle


@pytest.mark.parametrize(("mutate", "path"), [
    (lambda b: b | {"type": "transaction"}, "Bundle.type"),
    (lambda b: b | {"entry": []}, "Bundle.entry"),
    (lambda b: b | {"entry": [{"resource": {"resourceType": "Patient", "id": "x"}}]},
     "Bundle.entry[0].resource.resourceType"),
    (lambda b: _with_param(b, 4, valueString="many"), "Bundle.entry[0].resource.parameter[4].valueString"),
    (lambda b: _with_param(b, 4, valueInteger=-1), "Bundle.entry[0].resource.parameter[4].valueInteger"),
    (lambda b: _with_param(b, 0, valueReference={"reference": "Patient/x"}),
     "Bundle.entry[0].resource.parameter[0].valueReference.reference"),
    (lambda b: _with_param(b, 3, valueCode="bogus"), "Bundle.entry[0].resource.parameter[3].valueCode"),
    (lambda b: _with_param(b, 3, valueCoding={"code": "heartbeat"}), "Bundle.entry[0].resource.parameter[3]"
     ".valueCoding"),
    (lambda b: _with_param(b, 3), "Bundle.entry[0].resource.parameter[3].value[x]"),
])
def test_bad_backport_bundles_name_the_element(mutate: Any, path: str) -> None:
    bundle = mutate(backport_bundle("event-notification", 1, [{"number": 1, "focus": "Encounter/e1"}]))
    with pytest.raises(InputError) as exc:
        parse_post("adm", raw(bundle))
    assert issue_path(exc) == path


def test_bad_focus_and_event_number_name_the_part() -> None:
    bundle = backport_bundle("event-notification", 1, [{"number": 1, "focus": "Encounter/e1"}])
    parts = bundle["entry"][0]["resource"]["parameter"][5]["part"]
    parts[2]["valueReference"] = {"display": "no reference"}
    with pytest.raises(InputError) as exc:
        parse_bundle("adm", bundle)
    assert issue_path(exc) == "Bundle.entry[0].resource.parameter[5].part[2].valueReference.reference"
    parts[2]["valueReference"] = {"reference": "Encounter/e1"}
    parts[0]["valueString"] = "1.5"
    with pytest.raises(InputError) as exc:
        parse_bundle("adm", bundle)
    assert issue_path(exc) == "Bundle.entry[0].resource.parameter[5].part[0].valueString"


def test_a_missing_subscription_is_reported_at_the_parameter_list() -> None:
    bundle = backport_bundle("heartbeat", 1)
    del bundle["entry"][0]["resource"]["parameter"][0]
    with pytest.raises(InputError) as exc:
        parse_bundle("adm", bundle)
    assert issue_path(exc) == "Bundle.entry[0].resource.parameter" and "subscription" in exc.value.message


def test_bad_entry_resource_in_a_full_resource_bundle() -> None:
    bundle = backport_bundle("event-notification", 1, [{"number": 1, "focus": "Encounter/e1"}], [encounter()])
    bundle["entry"][1]["resource"]["id"] = ""
    with pytest.raises(InputError) as exc:
        parse_bundle("adm", bundle)
    assert issue_path(exc) == "Bundle.entry[1].resource.id"


# ------------------------------------------------------------------------------------------ triggers


def test_admission_triggers_and_makes_the_patient_known(cmap: CodeMap) -> None:
    decision = decide(digest(encounter()), cmap, known=False)
    assert (decision.rescreen, decision.known, decision.reason) == ("p1", "p1", "admission")


@pytest.mark.parametrize(("klass", "status", "system"), [
    ("AMB", "in-progress", ACT), ("IMP", "finished", ACT), ("IMP", "planned", ACT), ("IMP", "arrived", "urn:local"),
])
def test_other_encounters_do_not_trigger(cmap: CodeMap, klass: str, status: str, system: str) -> None:
    enc = encounter(klass=klass, status=status)
    enc["class"]["system"] = system
    assert decide(digest(enc), cmap, known=True).rescreen is None


@pytest.mark.parametrize("klass", ["IMP", "ACUTE", "NONAC"])
@pytest.mark.parametrize("status", ["in-progress", "arrived"])
def test_every_inpatient_class_and_status_triggers(cmap: CodeMap, klass: str, status: str) -> None:
    assert decide(digest(encounter(klass=klass, status=status)), cmap, known=False).rescreen == "p1"


def test_mapped_observation_triggers_only_for_a_known_patient(cmap: CodeMap) -> None:
    d = digest(observation(code="751-8"))
    assert decide(d, cmap, known=False).rescreen is None
    assert decide(d, cmap, known=False).reason == "patient-not-known"
    assert decide(d, cmap, known=True).reason == "mapped-observation"
    assert decide(d, cmap, known=True).rescreen == "p1"
    assert decide(digest(observation(code="8867-4")), cmap, known=True).rescreen is None  # heart rate: unmapped


def test_mapped_condition_triggers_for_a_known_patient(cmap: CodeMap) -> None:
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "C92.0"}]}}
    assert decide(digest(cond), cmap, known=True).rescreen == "p1"
    cond["code"]["coding"][0]["code"] = "J45.909"
    assert decide(digest(cond), cmap, known=True).rescreen is None


def test_a_subject_that_is_not_a_patient_triggers_nothing(cmap: CodeMap) -> None:
    obs = observation() | {"subject": {"reference": "Group/g1"}}
    assert decide(digest(obs), cmap, known=True).reason == "no-patient-subject"


def test_patient_of_reference_forms() -> None:
    assert patient_of({"reference": "Patient/p1"}) == "p1"
    assert patient_of({"reference": f"{EHR}/Patient/p1/_history/4"}) == "p1"
    assert patient_of({"reference": "Group/g1"}) is None
    assert patient_of({"identifier": {"value": "x"}}) is None


def test_digest_round_trips_through_json() -> None:
    d = digest(observation())
    assert Digest.from_json(json.loads(json.dumps(d.as_json()))) == d


@pytest.mark.parametrize("prefix", ["encounter-", "condition-", "observation-"])
def test_every_official_example_digests_or_fails_with_a_path(prefix: str, cmap: CodeMap) -> None:
    files = sorted(EXAMPLES.glob(f"{prefix}*.json"))
    assert len(files) >= 10
    for path in files:
        resource = json.loads(path.read_text(encoding="utf-8"))
        if resource.get("resourceType") not in ("Encounter", "Condition", "Observation"):
            continue
        try:
            d = digest(resource)
        except InputError as exc:
            assert exc.issues[0].expression, path.name
            continue
        decide(d, cmap, known=True)
        assert d.resource_id == resource["id"]


# ------------------------------------------------------------------------------------------ channel secrets


def test_channel_secrets() -> None:
    assert channel_secret("master", "default") == "master"
    derived = channel_secret("master", "adm")
    assert len(derived) == 64 and derived != channel_secret("master", "labs") != channel_secret("other", "adm")
    assert secret_matches("master", "adm", derived)
    assert not secret_matches("master", "adm", "master")
    assert not secret_matches(None, "default", "anything")
    assert not secret_matches("master", "adm", None)
    assert channel_header("master", "adm") == f"Authorization: Bearer {derived}"
