"""The Provenance written beside what the bridge publishes: who (this bridge, its version), under which rules.

Shape (R4 4.0.1)::

    target    the published resources (``ResearchSubject/…``, or ``urn:uuid:…`` inside a transaction)
    recorded  passed in by the caller — builders have no clock; it must carry a time zone (an R4 instant)
    activity  <ACTIVITY_SYSTEM>|<activity>, e.g. prescreen, response-assessment, adverse-event-grading
    policy    <BRIDGE_BASE>/ruleset/<ruleset version> — the rule set the results were computed under; the
              version begins with the trial's id (``bridge.trial`` checks it), so it names the trial too
              (``ruleset_policy``; every builder here and in the publisher takes the ``Trial``)
    reason    v3-ActReason CLINTRCH (clinical trial research)
    agent     type provenance-participant-type ``assembler``, who.display ``cd7-bridge <version>``
    entity    role ``source`` for each input resource (the verdicts' evidence), when given
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bridge import __version__
from bridge.errors import Issue, ValidationFailed
from bridge.fhirmodels import build
from bridge.publish.study import BRIDGE_BASE
from bridge.trial import Trial, load_trial

ACTIVITY_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/activity"
AGENT_DISPLAY = f"cd7-bridge {__version__}"
ACTIVITIES: dict[str, str] = {
    "study-publication": "Publication of the ResearchStudy and its eligibility criteria",
    "prescreen": "Eligibility pre-screen",
    "lifecycle-update": "Research subject lifecycle update",
    "response-assessment": "Response assessment",
    "adverse-event-grading": "Adverse event grading",
    "kinetics": "CAR-T kinetics",
    # the study team's actions (issue #17): written back by bridge.publish.decision, the agent is the person
    "team-judgement": "Investigator's judgement of the investigator-judgement exclusion",
    "team-reviewed": "Reviewed by the study team",
    "team-contacted": "Patient contacted by the study team",
    "team-consented": "Patient consented",
    "team-eligible": "Eligibility confirmed by the investigator",
    "team-screen-failure": "Screen failure recorded by the study team",
    "team-undo": "Study team action taken back",
}

_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_REASON = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "CLINTRCH",
           "display": "clinical trial research"}


def _invalid(path: str, what: str) -> ValidationFailed:
    return ValidationFailed(f"Provenance {what} at {path}", [Issue("required", what, (path,))])


def _recorded(recorded: datetime) -> str:
    if recorded.tzinfo is None or recorded.utcoffset() is None:
        raise _invalid("Provenance.recorded", "needs a time zone (an R4 instant)")
    return recorded.isoformat()


def _activity(activity: str) -> dict[str, Any]:
    if not activity or activity != activity.strip() or " " in activity:
        raise _invalid("Provenance.activity", "is not a code")
    coding = {"system": ACTIVITY_SYSTEM, "code": activity}
    if activity in ACTIVITIES:
        coding["display"] = ACTIVITIES[activity]
    return {"coding": [coding], "text": ACTIVITIES.get(activity, activity)}


def _agent() -> dict[str, Any]:
    return {
        "type": {"coding": [{"system": _PARTICIPANT, "code": "assembler", "display": "Assembler"}]},
        "who": {"display": AGENT_DISPLAY},
    }


def ruleset_policy(trial: Trial | None = None) -> str:
    """The policy URI of a trial's rule set (None: the shipped trial's): ``<BRIDGE_BASE>/ruleset/<ruleset
    version>``, which names the trial too, since a loaded trial's version begins with its id; for a ``Trial``
    built otherwise whose version does not, ``<BRIDGE_BASE>/ruleset/<trial id>/<ruleset version>``."""
    t = trial or load_trial()
    version = t.ruleset_version if t.ruleset_version.startswith(t.id) else f"{t.id}/{t.ruleset_version}"
    return f"{BRIDGE_BASE}/ruleset/{version}"


def provenance(targets: list[str], activity: str, recorded: datetime,
               entities: Iterable[str] = (), trial: Trial | None = None) -> dict[str, Any]:
    """A Provenance for ``targets`` (references) naming this bridge version and the trial's rule set (default:
    the shipped trial's), as R4 JSON."""
    if not targets:
        raise _invalid("Provenance.target", "needs at least one target")
    data = {
        "target": [{"reference": t} for t in targets],
        "recorded": _recorded(recorded),
        "policy": [ruleset_policy(trial)],
        "reason": [{"coding": [_REASON]}],
        "activity": _activity(activity),
        "agent": [_agent()],
        "entity": [{"role": "source", "what": {"reference": e}} for e in entities],
    }
    if not data["entity"]:
        del data["entity"]
    return build("Provenance", data)


__all__ = ["ACTIVITIES", "ACTIVITY_SYSTEM", "AGENT_DISPLAY", "provenance", "ruleset_policy"]
