"""Code tables and site maps: schema-validated at load time, every error listed at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bridge.errors import MappingError, SourceUnreadable
from bridge.normalize.mappings import load_code_map, mappings_dir

ICD = "http://hl7.org/fhir/sid/icd-10"
ICD_CM = "http://hl7.org/fhir/sid/icd-10-cm"


def test_every_entry_names_system_code_display_and_source() -> None:
    for path in mappings_dir().glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        for entry in data.get("entries", []):
            assert entry.get("code") and entry.get("display") and entry.get("source"), (path.name, entry)
            assert entry.get("system") or data.get("system") or data.get("systems"), (path.name, entry)


@pytest.mark.parametrize(("system", "code", "expected"), [
    (ICD, "C92.000", {"acute-leukemia", "aml"}),
    (ICD_CM, " c92.02 ", {"acute-leukemia", "aml"}),
    (ICD_CM, "C83.50", {"acute-leukemia", "t-lbl"}),
    (ICD_CM, "D80.1", set()),
    (ICD_CM, "D80.0", {"primary-immunodeficiency"}),
    (ICD_CM, "D84.821", set()),
    (ICD_CM, "D84.9", {"immunodeficiency-review"}),
    (ICD_CM, "I80.0", set()),
    (ICD_CM, "I80.10", {"thrombosis"}),
    (ICD_CM, "A41.9", {"sepsis"}),
    (ICD_CM, "B18.1", {"hepatitis-active"}),
    (ICD_CM, "B34.9", {"infection"}),
    ("http://snomed.info/sct", "91861009", {"acute-leukemia", "aml"}),
    ("http://example.org/other", "C92.0", set()),
])
def test_condition_codes(system: str, code: str, expected: set[str]) -> None:
    assert set(load_code_map().condition_concepts(system, code)) == expected


def test_site_map_adds_local_codes(tmp_path: Path) -> None:
    cmap = load_code_map(Path("samples/site-map.yaml"))
    assert cmap.observation_concept("http://hospital.example.org/lab", "fc-cd7") == "cd7-blast-percent"
    assert load_code_map().observation_concept("http://hospital.example.org/lab", "FC-CD7") is None


def test_site_map_errors_are_all_listed(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text(yaml.safe_dump({"concepts": {
        "cd7-blast-pct": [{"system": "http://h/lab", "code": "X"}],
        "anc": [{"system": "http://h/lab"}],
        "platelets": [{"system": "http://h/lab", "code": "P", "colour": "red"}],
    }, "uln": {"astt": 40}}))
    with pytest.raises(MappingError) as info:
        load_code_map(bad)
    paths = {e for i in info.value.issues for e in i.expression}
    assert {"site.yaml:$.concepts.cd7-blast-pct", "site.yaml:$.concepts.anc[0]", "site.yaml:$.concepts.platelets[0]",
            "site.yaml:$.uln.astt"} <= paths
    assert info.value.exit_code == 4


def test_site_map_not_yaml_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("concepts: [unclosed\n")
    with pytest.raises(MappingError, match="not valid YAML"):
        load_code_map(bad)
    with pytest.raises(SourceUnreadable):
        load_code_map(tmp_path / "none.yaml")


def test_json_site_map(tmp_path: Path) -> None:
    p = tmp_path / "site.json"
    p.write_text('{"concepts": {"nyha-class": [{"system": "http://h/c", "code": "NY"}]}}')
    assert load_code_map(p).observation_concept("http://h/c", "NY") == "nyha-class"


def test_broken_default_table_reports_every_error(tmp_path: Path) -> None:
    d = tmp_path / "mappings"
    shutil.copytree(mappings_dir(), d)
    data = yaml.safe_load((d / "loinc.yaml").read_text())
    data["entries"][0]["concept"] = "no-such-concept"
    data["entries"][1]["concept"] = "another-unknown"
    (d / "loinc.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(MappingError) as info:
        load_code_map(directory=d)
    assert len(info.value.issues) == 2
    data["entries"][2].pop("display")
    (d / "loinc.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(MappingError, match="schema error"):
        load_code_map(directory=d)
