"""Bulk Data ``$export`` client against a faked transport (``responses``): kick-off, polling, manifest,
streamed and resumed downloads, error files, OperationOutcome errors, token rules and cancel on interrupt."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from responses import matchers
from typer.testing import CliRunner

from bridge.cli import app
from bridge.client import FhirClient
from bridge.config import Settings
from bridge.errors import ConfigError, ForeignHost, NotFHIR, ServerRejected, TransportError
from bridge.ingest.bulk_client import (
    STATE_FILE,
    BulkExporter,
    ExportRequest,
    ExportState,
    FileRef,
    Manifest,
    file_names,
    since_instant,
)

BASE = "https://ehr.example.org/fhir"
STATUS = f"{BASE}/bulkstatus/job-1"
BUCKET = "https://bucket.example.net/exports"
TOKEN = "tok-bulk-123"
NOW_EPOCH = 1773476813.0  # 2026-03-14T09:26:53+01:00: a fixed, non-UTC "now" for HTTP-date Retry-After
PATIENTS = b'{"resourceType":"Patient","id":"a"}\n{"resourceType":"Patient","id":"b"}\n'
OBS_1 = b'{"resourceType":"Observation","id":"o1"}\n' * 3
OBS_2 = b'{"resourceType":"Observation","id":"o2"}\n'
ERRORS = (b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing",'
          b'"diagnostics":"Patient/x could not be read"},{"severity":"warning","code":"informational"}]}\n')


class FakeTime:
    """A monotonic clock that only moves when someone sleeps; can raise KeyboardInterrupt on a given sleep."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.interrupt_at = interrupt_at

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if self.interrupt_at is not None and len(self.sleeps) == self.interrupt_at:
            raise KeyboardInterrupt
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(fake: FakeTime) -> FhirClient:
    settings = Settings(ehr_token=TOKEN, retries=2, retry_total_seconds=30.0)
    return FhirClient(BASE, settings, sleep=fake.sleep, clock=fake.clock, wall_clock=lambda: NOW_EPOCH)


def manifest(outputs: list[tuple[str, str]], errors: tuple[tuple[str, str], ...] = (),
             token: bool = True) -> dict[str, Any]:
    return {"transactionTime": "2026-03-14T08:00:00Z", "request": f"{BASE}/$export", "requiresAccessToken": token,
            "output": [{"type": t, "url": u} for t, u in outputs],
            "error": [{"type": t, "url": u} for t, u in errors]}


def kick_off(rsps: responses.RequestsMock, status: str = STATUS, **params: str) -> None:
    query = {"_type": "Patient,Encounter,Condition,Observation,MedicationAdministration", **params}
    rsps.get(f"{BASE}/$export", status=202, headers={"Content-Location": status},
             match=[matchers.query_param_matcher(query),
                    matchers.header_matcher({"Accept": "application/fhir+json", "Prefer": "respond-async",
                                             "Authorization": f"Bearer {TOKEN}"})])


def auth_of(call: Any) -> str | None:
    return call.request.headers.get("Authorization")


def url_of(call: Any) -> str:
    return str(call.request.url)


# ---------------------------------------------------------------- the whole protocol


def test_kick_off_poll_with_retry_after_manifest_and_streamed_download(rsps: responses.RequestsMock,
                                                                       tmp_path: Path) -> None:
    kick_off(rsps, _since="2026-01-01T00:00:00Z")
    rsps.get(STATUS, status=202, headers={"Retry-After": "7", "X-Progress": "reading Observation 40%"})
    rsps.get(STATUS, status=202, headers={"Retry-After": "Sat, 14 Mar 2026 08:27:05 GMT"})  # now + 12 s
    rsps.get(STATUS, status=202)  # no Retry-After: the client's own first back-off (1 s)
    rsps.get(STATUS, json=manifest([("Patient", f"{BASE}/files/p.ndjson"), ("Observation", f"{BASE}/files/o1"),
                                    ("Observation", f"{BASE}/files/o2")], (("OperationOutcome", f"{BASE}/files/e"),)))
    for name, body in (("p.ndjson", PATIENTS), ("o1", OBS_1), ("o2", OBS_2), ("e", ERRORS)):
        rsps.get(f"{BASE}/files/{name}", body=body, match=[matchers.header_matcher(
            {"Accept": "application/fhir+ndjson", "Authorization": f"Bearer {TOKEN}"})])
    fake, shown = FakeTime(), list[str]()
    out = tmp_path / "export"
    result = BulkExporter(make_client(fake), out, ExportRequest(since="2026-01-01T00:00:00Z"),
                          progress=shown.append).run()
    assert fake.sleeps == [7.0, 12.0, 1.0]
    assert shown == ["reading Observation 40%", "in progress", "in progress"]
    assert (out / "Patient.ndjson").read_bytes() == PATIENTS
    assert (out / "Observation.001.ndjson").read_bytes() == OBS_1
    assert (out / "Observation.002.ndjson").read_bytes() == OBS_2
    assert (out / "errors" / "OperationOutcome.ndjson").read_bytes() == ERRORS
    assert [f.name for f in result.files] == ["Patient.ndjson", "Observation.001.ndjson", "Observation.002.ndjson"]
    assert result.total_bytes == len(PATIENTS) + len(OBS_1) + len(OBS_2)
    assert result.issues == {"error": 1, "warning": 1}
    assert not list(out.glob("*.part"))
    state = json.loads((out / STATE_FILE).read_text())
    assert state["status_url"] == STATUS and len(state["done"]) == 4
    assert stat.S_IMODE(os.stat(out / STATE_FILE).st_mode) == 0o600


def test_patient_level_export_and_relative_status_url(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    rsps.get(f"{BASE}/Patient/$export", status=202, headers={"Content-Location": "bulkstatus/job-9"},
             match=[matchers.query_param_matcher({"_type": "Observation"})])
    rsps.get(f"{BASE}/bulkstatus/job-9", json=manifest([]))
    result = BulkExporter(make_client(FakeTime()), tmp_path, ExportRequest("patient", ("Observation",))).run()
    assert result.files == []
    assert ExportState.load(tmp_path / STATE_FILE).status_url == f"{BASE}/bulkstatus/job-9"  # type: ignore[union-attr]


def test_rerun_skips_completed_files_without_any_request(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    kick_off(rsps)
    rsps.get(STATUS, json=manifest([("Patient", f"{BASE}/files/p")]))
    rsps.get(f"{BASE}/files/p", body=PATIENTS)
    BulkExporter(make_client(FakeTime()), tmp_path).run()
    calls = len(rsps.calls)
    again = BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert len(rsps.calls) == calls
    assert [(f.name, f.skipped, f.bytes) for f in again.files] == [("Patient.ndjson", True, len(PATIENTS))]


def test_rerun_after_a_failed_poll_resumes_polling_the_same_job(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    kick_off(rsps)
    rsps.get(STATUS, status=500, json={"resourceType": "OperationOutcome",
                                       "issue": [{"severity": "error", "code": "exception"}]})
    with pytest.raises(ServerRejected):
        BulkExporter(make_client(FakeTime()), tmp_path).run()
    rsps.replace(responses.GET, STATUS, json=manifest([]))
    BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert sum(1 for c in rsps.calls if "$export" in url_of(c)) == 1  # no second kick-off


def _prepared(tmp_path: Path, token: bool = True, url: str = f"{BASE}/files/o1") -> None:
    state = ExportState(BASE, ExportRequest().as_json(), STATUS, manifest([("Observation", url)], token=token))
    state.save(tmp_path / STATE_FILE)


def test_partial_file_is_resumed_with_range(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    _prepared(tmp_path)
    (tmp_path / "Observation.ndjson.part").write_bytes(OBS_1[:50])
    rsps.get(f"{BASE}/files/o1", status=206, body=OBS_1[50:],
             headers={"Content-Range": f"bytes 50-{len(OBS_1) - 1}/{len(OBS_1)}"},
             match=[matchers.header_matcher({"Range": "bytes=50-"})])
    result = BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert (tmp_path / "Observation.ndjson").read_bytes() == OBS_1
    assert result.files[0].resumed and not (tmp_path / "Observation.ndjson.part").exists()


def test_partial_file_restarts_when_the_server_ignores_range(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    _prepared(tmp_path)
    (tmp_path / "Observation.ndjson.part").write_bytes(OBS_1[:50])
    rsps.get(f"{BASE}/files/o1", status=200, body=OBS_1)
    result = BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert (tmp_path / "Observation.ndjson").read_bytes() == OBS_1  # not the partial bytes twice
    assert not result.files[0].resumed


def test_partial_file_restarts_on_416(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    _prepared(tmp_path)
    (tmp_path / "Observation.ndjson.part").write_bytes(b"x" * 500)
    rsps.get(f"{BASE}/files/o1", status=416, match=[matchers.header_matcher({"Range": "bytes=500-"})])
    rsps.get(f"{BASE}/files/o1", status=200, body=OBS_1)
    BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert (tmp_path / "Observation.ndjson").read_bytes() == OBS_1


def test_interrupted_stream_keeps_the_part_file_for_a_resume(tmp_path: Path) -> None:
    class Broken:
        def __enter__(self) -> Broken:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def iter_content(self, size: int) -> Iterator[bytes]:
            yield b"half a line"
            raise requests.exceptions.ChunkedEncodingError("connection reset")

    part = tmp_path / "x.ndjson.part"
    with pytest.raises(TransportError, match="rerun to resume"):
        BulkExporter._stream(Broken(), part, "wb", "x.ndjson")  # type: ignore[arg-type]
    assert part.read_bytes() == b"half a line"


# ---------------------------------------------------------------- errors


def test_kick_off_operation_outcome_becomes_server_rejected(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    rsps.get(f"{BASE}/$export", status=400, json={"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "not-supported", "diagnostics": "_type MedicationAdministration not supported",
         "expression": ["_type"]}]}, headers={"Content-Type": "application/fhir+json"})
    with pytest.raises(ServerRejected) as err:
        BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert err.value.status == 400
    assert [(i.code, i.expression) for i in err.value.issues] == [("not-supported", ("_type",))]
    assert not (tmp_path / STATE_FILE).exists() or ExportState.load(tmp_path / STATE_FILE).status_url is None  # type: ignore[union-attr]


def test_failed_export_status_is_reported_with_its_issues(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    kick_off(rsps)
    rsps.get(STATUS, status=404, json={"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "not-found", "diagnostics": "job expired"}]})
    with pytest.raises(ServerRejected, match="404"):
        BulkExporter(make_client(FakeTime()), tmp_path).run()


@pytest.mark.parametrize("doc", [{"output": "nope"}, {"transactionTime": "x"}, [1, 2],
                                 {"output": [{"type": "../../etc/passwd", "url": f"{BASE}/f"}]},
                                 {"output": [{"type": "Patient"}]}])
def test_malformed_manifest_is_not_fhir(rsps: responses.RequestsMock, tmp_path: Path, doc: Any) -> None:
    kick_off(rsps)
    rsps.get(STATUS, json=doc)
    with pytest.raises(NotFHIR):
        BulkExporter(make_client(FakeTime()), tmp_path).run()


def test_status_url_on_another_host_is_refused(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    kick_off(rsps, status="https://evil.example.com/status/1")
    with pytest.raises(ForeignHost):
        BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert not any("evil" in url_of(c) for c in rsps.calls)


def test_polling_gives_up_after_max_wait(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    kick_off(rsps)
    rsps.get(STATUS, status=202, headers={"Retry-After": "120"})
    with pytest.raises(TransportError, match="rerun to resume polling"):
        BulkExporter(make_client(FakeTime()), tmp_path, max_wait_seconds=300).run()


def test_other_parameters_in_the_same_directory_are_refused(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    _prepared(tmp_path)
    with pytest.raises(ConfigError, match="other parameters"):
        BulkExporter(make_client(FakeTime()), tmp_path, ExportRequest(types=("Patient",))).run()


# ---------------------------------------------------------------- where the token goes


def test_token_never_goes_to_a_foreign_file_host(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    _prepared(tmp_path, token=True, url=f"{BUCKET}/o1.ndjson")
    with pytest.raises(ForeignHost, match="requires the access token"):
        BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert all(BUCKET not in url_of(c) for c in rsps.calls)


@pytest.mark.parametrize("url", [f"{BUCKET}/o1.ndjson", f"{BASE}/files/o1"])
def test_files_without_required_token_are_fetched_without_it(rsps: responses.RequestsMock, tmp_path: Path,
                                                             url: str) -> None:
    _prepared(tmp_path, token=False, url=url)
    rsps.get(url, body=OBS_1)
    BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert auth_of(rsps.calls[0]) is None
    assert (tmp_path / "Observation.ndjson").read_bytes() == OBS_1


def test_token_goes_to_files_on_the_configured_origin(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    _prepared(tmp_path, token=True)
    rsps.get(f"{BASE}/files/o1", body=OBS_1)
    BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert auth_of(rsps.calls[0]) == f"Bearer {TOKEN}"


# ---------------------------------------------------------------- cancel on interrupt


def test_interrupt_while_polling_cancels_the_export(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    kick_off(rsps)
    rsps.get(STATUS, status=202, headers={"Retry-After": "5"})
    rsps.delete(STATUS, status=202)
    with pytest.raises(KeyboardInterrupt):
        BulkExporter(make_client(FakeTime(interrupt_at=0)), tmp_path).run()
    deletes = [c for c in rsps.calls if c.request.method == "DELETE"]
    assert len(deletes) == 1 and auth_of(deletes[0]) == f"Bearer {TOKEN}"
    assert ExportState.load(tmp_path / STATE_FILE).cancelled  # type: ignore[union-attr]
    # the next run starts a new export
    rsps.replace(responses.GET, STATUS, json=manifest([]))
    BulkExporter(make_client(FakeTime()), tmp_path).run()
    assert sum(1 for c in rsps.calls if "$export" in url_of(c)) == 2


def test_cli_exits_130_and_cancels_on_interrupt(rsps: responses.RequestsMock, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rsps.get(f"{BASE}/$export", status=202, headers={"Content-Location": STATUS})
    rsps.delete(STATUS, status=202)

    def interrupted(self: BulkExporter, status_url: str) -> Manifest:
        raise KeyboardInterrupt

    monkeypatch.setattr(BulkExporter, "poll", interrupted)
    monkeypatch.setenv("BRIDGE_EHR_TOKEN", TOKEN)
    result = CliRunner().invoke(app, ["bulk-export", BASE, "--out", str(tmp_path / "x"), "--type",
                                      "Observation,Condition", "--since", "2026-01-01"])
    assert result.exit_code == 130
    assert [c.request.method for c in rsps.calls] == ["GET", "DELETE"]
    assert "_type=Observation%2CCondition" in url_of(rsps.calls[0])
    assert "_since=2026-01-01T00%3A00%3A00Z" in url_of(rsps.calls[0])


def test_cli_reports_files_as_json(rsps: responses.RequestsMock, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    kick_off(rsps)
    rsps.get(STATUS, json=manifest([("Patient", f"{BASE}/files/p")]))
    rsps.get(f"{BASE}/files/p", body=PATIENTS)
    monkeypatch.setenv("BRIDGE_EHR_TOKEN", TOKEN)
    result = CliRunner().invoke(app, ["bulk-export", BASE, "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["files"] == [{"name": "Patient.ndjson", "type": "Patient", "bytes": len(PATIENTS), "resumed": False,
                             "skipped": False}]


# ---------------------------------------------------------------- small parts


def test_file_names_number_only_types_with_several_files() -> None:
    refs = (FileRef("Observation", "a"), FileRef("Patient", "b"), FileRef("Observation", "c"))
    assert file_names(refs) == ["Observation.001.ndjson", "Patient.ndjson", "Observation.002.ndjson"]


def test_manifest_without_requires_access_token_assumes_it_is_required() -> None:
    assert Manifest.from_json({"output": []}).requires_access_token is True
    assert Manifest.from_json({"output": [], "requiresAccessToken": False}).requires_access_token is False


@pytest.mark.parametrize(("given", "want"), [("2026-01-01", "2026-01-01T00:00:00Z"),
                                             ("2026-01-01T10:00:00+08:00", "2026-01-01T10:00:00+08:00"),
                                             ("2026-01-01T10:00:00.5Z", "2026-01-01T10:00:00.5Z")])
def test_since_accepts_dates_and_zoned_instants(given: str, want: str) -> None:
    assert since_instant(given) == want


@pytest.mark.parametrize("given", ["2026-01-01T10:00:00", "yesterday", "2026-1-1"])
def test_since_refuses_instants_without_zone(given: str) -> None:
    with pytest.raises(ConfigError):
        since_instant(given)


@pytest.mark.parametrize("types", [(), ("observation",), ("Observation", "../x")])
def test_export_request_checks_type_names(types: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        ExportRequest(types=types)
