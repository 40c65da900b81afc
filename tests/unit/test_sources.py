"""One way in (``bridge.ingest.sources.open_source``): a file, ``-``, a directory and a FHIR base URL give the
same patients to every command; ``--patient`` with anything but a URL is a clear error before reading.

The server is faked at the transport seam (``responses``): it answers each search with the sample patient's
resources of that type, ignoring the other parameters (as a server may), so a pull of one patient must give
exactly the verdicts and assessment of the same resources read from a file.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from typer.testing import CliRunner

from bridge.cli import app as cli_app
from bridge.config import RuleOptions, Settings
from bridge.errors import InputError, SourceUnreadable
from bridge.ingest.readers import read_source
from bridge.ingest.sources import is_url, open_source
from bridge.model import Entry
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import assess, assess_loaded, load_patients, prescreen, prescreen_items

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
SITE_MAP = SAMPLES / "site-map.yaml"
CMAP = load_code_map(SITE_MAP)
BASE = "https://ehr.example.org/fhir"
FHIR = {"Content-Type": "application/fhir+json"}


def resources_of(bundle: Path, pid: str) -> list[dict[str, Any]]:
    """The sample's resources of one patient: its Patient and everything whose subject is it."""
    doc = json.loads(bundle.read_text(encoding="utf-8"))
    out = []
    for entry in doc["entry"]:
        r = entry["resource"]
        if (r["resourceType"] == "Patient" and r["id"] == pid) or \
                (r.get("subject") or {}).get("reference") == f"Patient/{pid}":
            out.append(r)
    return out


def write_bundle(path: Path, resources: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": r} for r in resources]}))
    return path


def serve(rsps: responses.RequestsMock, resources: list[dict[str, Any]]) -> None:
    """A server holding ``resources``: reads by id, and searches answered with every resource of the type."""
    def read(request: Any) -> tuple[int, dict[str, str], str]:
        rtype, rid = urlsplit(request.url).path.split("/")[-2:]
        found = [r for r in resources if (r["resourceType"], r["id"]) == (rtype, rid)]
        return (200, FHIR, json.dumps(found[0])) if found else (404, FHIR, json.dumps(
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}))

    def search(request: Any) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        rtype = parts.path.split("/")[-1]
        assert "patient" in parse_qs(parts.query) or rtype == "MedicationAdministration"
        entries = [{"resource": r, "search": {"mode": "match"}} for r in resources if r["resourceType"] == rtype]
        return 200, FHIR, json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": entries})

    rsps.add_callback(responses.GET, re.compile(rf"{re.escape(BASE)}/[A-Za-z]+/[^/?]+$"), callback=read)
    rsps.add_callback(responses.GET, re.compile(rf"{re.escape(BASE)}/[A-Za-z]+(\?.*)?$"), callback=search)


# ---------------------------------------------------------------------------------------------- dispatch


def test_a_url_is_pulled_and_everything_else_is_read() -> None:
    assert is_url("https://ehr.example.org/fhir") and is_url("http://localhost:8080/fhir")
    assert not any(is_url(s) for s in ("-", "samples/prescreen/ndjson", "bundle.json", "ftp://x"))


@pytest.mark.parametrize("source", [SAMPLES / "prescreen" / "bundle.json", SAMPLES / "prescreen" / "ndjson"])
def test_a_file_or_directory_gives_the_readers_items(source: Path) -> None:
    opened = list(open_source(str(source), CMAP, date(2026, 6, 15)))
    assert opened == list(read_source(str(source))) and len(opened) > 100


def test_an_unreadable_file_raises_before_iteration(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreadable, match="no such file"):
        open_source(str(tmp_path / "missing.json"), CMAP, date(2026, 6, 15))


def test_patients_need_a_url(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="only from a FHIR base URL") as raised:
        open_source(str(tmp_path / "missing.json"), CMAP, date(2026, 6, 15), patients=["p01"])
    assert not isinstance(raised.value, SourceUnreadable)  # checked before anything is read
    with pytest.raises(InputError, match="only from a FHIR base URL"):
        prescreen(str(SAMPLES / "prescreen" / "ndjson"), RuleOptions(as_of=date(2026, 6, 15)), CMAP,
                  patients=["p01"])


# ---------------------------------------------------------------------------------------------- a pull


def test_a_pull_is_lazy_and_names_where_each_resource_came_from(rsps: responses.RequestsMock) -> None:
    serve(rsps, resources_of(SAMPLES / "prescreen" / "bundle.json", "p01"))
    items = open_source(BASE, CMAP, date(2026, 6, 15), Settings(retries=0), patients=["p01"])
    assert len(rsps.calls) == 0  # nothing is sent before the items are read
    pulled = list(items)
    assert isinstance(pulled[0], Entry) and pulled[0].where == "Patient/p01"
    assert urlsplit(rsps.calls[0].request.url).path == "/fhir/Patient/p01"
    assert not [c for c in rsps.calls if "MedicationAdministration" in str(c.request.url)]  # pre-screen: none


def test_a_pulled_patient_is_screened_as_from_a_file(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    resources = resources_of(SAMPLES / "prescreen" / "bundle.json", "p01")
    serve(rsps, resources)
    options = RuleOptions(as_of=date(2026, 6, 15))
    pulled = prescreen(BASE, options, CMAP, settings=Settings(retries=0), patients=["p01"])
    read = prescreen_items(read_source(str(write_bundle(tmp_path / "p01.json", resources))), options, CMAP)
    assert [s.patient for s in pulled.screenings] == ["Patient/p01"]
    assert pulled.as_json() == read.as_json()


def test_a_pulled_patient_is_assessed_as_from_a_file(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    resources = resources_of(SAMPLES / "treated" / "bundle.json", "cao2022")
    serve(rsps, resources)
    options = RuleOptions(as_of=date(2026, 12, 31))
    pulled = assess(BASE, options, CMAP, settings=Settings(retries=0), patients=["cao2022"])
    assert any("MedicationAdministration" in str(c.request.url) for c in rsps.calls)  # the infusions are fetched
    loaded, _ = load_patients(read_source(str(write_bundle(tmp_path / "t.json", resources))), CMAP)
    read = assess_loaded(loaded, options, CMAP)
    assert [a.patient for a in pulled.assessments] == ["Patient/cao2022"]
    assert pulled.as_json() == read.as_json()


# ---------------------------------------------------------------------------------------------- the commands


@pytest.mark.parametrize("command", [["prescreen"], ["assess"], ["report", "--out", "{tmp}/r.html"]])
def test_patient_with_a_file_is_a_bad_parameter(tmp_path: Path, command: list[str]) -> None:
    args = [*command, str(SAMPLES / "prescreen" / "bundle.json"), "--patient", "p01"]
    result = CliRunner().invoke(cli_app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert "--patient needs a FHIR base URL as SOURCE" in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_registry_export_refuses_a_url_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("pseudonym_secret: s3cret-value-long-enough-for-a-site\nregistry_centre: rc_12345\n")
    result = CliRunner().invoke(cli_app, ["registry", "export", BASE, "--out", str(tmp_path / "out"),
                                          "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "a pull does not fetch the Consent resources" in result.stderr
