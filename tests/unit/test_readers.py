"""Readers and bad input: one clear line naming file, entry and element path; nothing silently dropped."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bridge.errors import SourceUnreadable
from bridge.ingest.readers import Entry, Skipped, read_bundle_bytes, read_source, read_stdin
from bridge.normalize.mappings import load_code_map
from bridge.normalize.patients import assemble

CMAP = load_code_map()


def obs(oid: str, pid: str = "p1", value: object = 1.2, unit: str = "mg/dL", **extra: object) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1975-2"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-06-10",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            **extra}


def bundle(*resources: dict, btype: str = "collection") -> dict:
    return {"resourceType": "Bundle", "type": btype, "entry": [{"resource": r} for r in resources]}


def write(tmp_path: Path, doc: object, name: str = "b.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("btype", ["collection", "searchset", "transaction", "batch"])
def test_every_bundle_type_is_read(tmp_path: Path, btype: str) -> None:
    path = write(tmp_path, bundle({"resourceType": "Patient", "id": "p1"}, obs("o1"), btype=btype))
    patients, report = assemble(read_source(str(path)), CMAP)
    assert [p.patient_id for p in patients] == ["p1"]
    assert [f.concept for f in patients[0].facts] == ["bilirubin-total"]
    assert report.read == 2 and report.used == 2 and not report.skipped


def test_transaction_with_urn_uuid_references(tmp_path: Path) -> None:
    doc = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b6b1f3e-0000-4000-8000-000000000001",
         "resource": {**obs("x"), "subject": {"reference": "urn:uuid:0b6b1f3e-0000-4000-8000-000000000002"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:0b6b1f3e-0000-4000-8000-000000000002",
         "resource": {"resourceType": "Patient", "gender": "female"}, "request": {"method": "POST", "url": "Patient"}},
    ]}
    del doc["entry"][0]["resource"]["id"]
    patients, report = assemble(read_source(str(write(tmp_path, doc))), CMAP)
    assert [p.patient_id for p in patients] == ["0b6b1f3e-0000-4000-8000-000000000002"]
    assert len(patients[0].facts) == 1 and not report.skipped


def test_stdin_bundle() -> None:
    data = json.dumps(bundle({"resourceType": "Patient", "id": "p9"})).encode()
    items = list(read_stdin(io.BytesIO(data)))
    assert isinstance(items[0], Entry) and items[0].where == "<stdin> entry 0"


def test_not_json_is_unreadable_with_position(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('{"resourceType": "Bundle", "entry": [')
    with pytest.raises(SourceUnreadable) as info:
        list(read_source(str(p)))
    assert "bad.json" in str(info.value) and "not JSON" in str(info.value) and info.value.exit_code == 3


def test_missing_file_and_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreadable):
        read_source(str(tmp_path / "nope.json"))
    with pytest.raises(SourceUnreadable, match="no \\*.ndjson"):
        list(read_source(str(tmp_path)))


def test_entry_without_resource_type_is_skipped_and_reported(tmp_path: Path) -> None:
    doc = bundle({"resourceType": "Patient", "id": "p1"}, {"id": "x"}, obs("o1"))
    patients, report = assemble(read_source(str(write(tmp_path, doc))), CMAP)
    assert len(patients[0].facts) == 1
    assert [(s.where, s.expression) for s in report.skipped] == [
        (f"{tmp_path / 'b.json'} entry 1", "Bundle.entry[1].resource.resourceType")]


def test_resource_failing_the_model_is_skipped_with_path_and_no_value(tmp_path: Path) -> None:
    bad = obs("o2", value="SECRET-123")
    doc = bundle({"resourceType": "Patient", "id": "p1"}, bad, obs("o1"))
    patients, report = assemble(read_source(str(write(tmp_path, doc))), CMAP)
    assert [f.source for f in patients[0].facts] == ["Observation/o1"]
    (skip,) = report.skipped
    assert skip.where.endswith("entry 1") and skip.expression == "Observation.valueQuantity.value"
    assert "SECRET" not in " ".join(report.lines())


def test_unknown_unit_makes_value_unusable_and_is_reported(tmp_path: Path) -> None:
    doc = bundle({"resourceType": "Patient", "id": "p1"}, obs("o1", value=7.77, unit="mmol/mol"))
    patients, report = assemble(read_source(str(write(tmp_path, doc))), CMAP)
    (fact,) = patients[0].facts
    assert fact.value is None and "mmol/mol" in (fact.problem or "")
    assert report.warnings and "7.77" not in report.warnings[0]
    assert "Observation/o1 Observation.valueQuantity.code" in report.warnings[0]


def test_ndjson_streams_and_skips_bad_lines(tmp_path: Path) -> None:
    d = tmp_path / "export"
    d.mkdir()
    (d / "Patient.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "p1"}) + "\n\n")
    (d / "Observation.ndjson").write_text(json.dumps(obs("o1")) + "\n{not json\n" + json.dumps(obs("o2")) + "\n")
    (d / "notes.txt").write_text("ignored")
    items = list(read_source(str(d)))
    assert [type(i).__name__ for i in items] == ["Entry", "Skipped", "Entry", "Entry"]
    skipped = [i for i in items if isinstance(i, Skipped)]
    assert skipped[0].where == "Observation.ndjson line 2"
    patients, report = assemble(iter(items), CMAP)
    assert len(patients[0].facts) == 2 and len(report.skipped) == 1


def test_newest_version_wins_whatever_the_order(tmp_path: Path) -> None:
    v1 = obs("o1", value=5.0, status="preliminary", meta={"versionId": "1"})
    v2 = obs("o1", value=1.0, status="amended", meta={"versionId": "2"})
    for order in ((v1, v2), (v2, v1)):
        patients, _ = assemble(read_bundle_bytes(json.dumps(bundle(*order)).encode(), "x"), CMAP)
        (fact,) = patients[0].facts
        assert fact.status == "amended" and fact.value is not None and fact.value.value == 1.0  # type: ignore[union-attr]


def test_entered_in_error_observations_give_no_facts() -> None:
    doc = bundle(obs("o1", status="entered-in-error"), obs("o2", status="cancelled"))
    patients, _ = assemble(read_bundle_bytes(json.dumps(doc).encode(), "x"), CMAP)
    assert patients[0].facts == []


def test_coding_selected_by_system_not_position() -> None:
    o = obs("o1")
    o["code"]["coding"].insert(0, {"system": "http://hospital.example.org/lab", "code": "TBIL"})
    patients, _ = assemble(read_bundle_bytes(json.dumps(bundle(o)).encode(), "x"), CMAP)
    assert [f.concept for f in patients[0].facts] == ["bilirubin-total"]


def test_the_item_types_are_the_models_and_normalize_does_not_import_ingest() -> None:
    """Layers: the reader items are domain types (``bridge.model``), so normalize never depends on ingest."""
    import ast

    import bridge.ingest.readers as readers
    import bridge.model as model

    assert (readers.Entry, readers.Skipped, readers.NonClinical) == (model.Entry, model.Skipped, model.NonClinical)
    normalize = Path(model.__file__).parent / "normalize"
    imported = {node.module for path in normalize.glob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module}
    assert imported and not {m for m in imported if m.startswith("bridge.ingest")}
