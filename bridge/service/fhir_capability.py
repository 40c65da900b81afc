"""The CapabilityStatement of ``/fhir``: exactly what ``fhir_api`` serves, built from the same tables.

The types are those of ``fhir_params.SEARCH_PARAMS``: ResearchStudy, ResearchSubject, Observation (response
assessments), AdverseEvent and Provenance — what the bridge published, or recorded locally with ``--save``.
Per type: read, vread, search-type, history-instance and history-type; versioned with past versions
readable; conditional read by ``If-None-Match`` and ``If-Modified-Since``; every search parameter
(``fhir_params.COMMON_PARAMS`` and ``SEARCH_PARAMS``) with its definition, and every result parameter it
accepts (``_count``, ``_offset``, ``_sort``, ...). JSON only. The security section says what it is: one static
bearer token, not OAuth and not SMART on FHIR.
"""

from __future__ import annotations

from typing import Any

from bridge import __version__
from bridge.publish.conformance import ADVERSE_EVENT_PROFILE, RESPONSE_PROFILE, SUBJECT_PROFILE
from bridge.service.fhir_params import COMMON_PARAMS, RESULT_PARAMS, SEARCH_PARAMS, SERVED_TYPES, SearchParam

CAPABILITY_DATE = "2026-01-01"
INTERACTIONS = ("read", "vread", "search-type", "history-instance", "history-type")
SECURITY = ("A static bearer token: every request except GET/HEAD /metadata needs 'Authorization: Bearer "
            "<token>', the token being the bridge's api_token setting. This is not OAuth and not SMART on FHIR: "
            "there is no authorization server, no token endpoint and no scopes. No CORS headers are sent.")
Json = dict[str, Any]
# the bridge's own profiles of what it publishes (profiles/StructureDefinition-*.json), served under /fhir too
BRIDGE_PROFILES = ((SUBJECT_PROFILE, "ResearchSubject"), (RESPONSE_PROFILE, "Observation"),
                   (ADVERSE_EVENT_PROFILE, "AdverseEvent"))


def _search_param(param: SearchParam) -> Json:
    return {"name": param.name, "definition": param.definition, "type": param.type,
            "documentation": param.documentation}


def _resource(resource_type: str) -> Json:
    params = [_search_param(p) for p in (*COMMON_PARAMS, *SEARCH_PARAMS[resource_type])]
    params += [{"name": name, "type": kind, "documentation": doc} for name, kind, doc in RESULT_PARAMS]
    sorts = ", ".join(["_id", "_lastUpdated", *(p.name for p in SEARCH_PARAMS[resource_type])])
    own = [url for url, rtype in BRIDGE_PROFILES if rtype == resource_type]
    return {"type": resource_type, "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            **({"supportedProfile": own} if own else {}),
            "documentation": f"Read-only. _sort by {sorts} ('-' for descending).",
            "interaction": [{"code": code} for code in INTERACTIONS],
            "versioning": "versioned", "readHistory": True, "updateCreate": False,
            "conditionalRead": "full-support", "searchParam": params}


def capability_statement(base_url: str) -> Json:
    """The CapabilityStatement, ``implementation.url`` being ``base_url`` (the configured public base)."""
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": CAPABILITY_DATE,
        "publisher": "cd7-bridge", "kind": "instance",
        "software": {"name": "cd7-bridge", "version": __version__},
        "implementation": {"description": "cd7-bridge: what the bridge published or recorded (read-only)",
                           "url": base_url},
        "fhirVersion": "4.0.1", "format": ["application/fhir+json", "json"],
        "rest": [{"mode": "server",
                  "documentation": "Comma is OR within a parameter, a repeated parameter is AND; tokens take "
                                   "code, system|code, |code and system|. Unknown parameters, modifiers and "
                                   "bad values are refused (400); formats other than JSON get 406.",
                  "security": {"cors": False, "description": SECURITY},
                  "resource": [_resource(t) for t in SERVED_TYPES]}],
    }


__all__ = ["CAPABILITY_DATE", "INTERACTIONS", "capability_statement"]
