"""``samplegen.population``: the export's shape as parameters (issue #16) — leukaemia share, results per candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from samplegen.population import DENSE_PANEL, LEUKEMIA_DX, write_population

DENSE_CODES = {row[0] for row in DENSE_PANEL} | {"14631-6"}  # bilirubin in umol/L, as the generator writes 30 %
LEUKEMIA_CODES = {code for _, code, _, _ in LEUKEMIA_DX}


def lines(directory: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in (directory / name).read_bytes().splitlines():
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue  # the generator's rare truncated line
    return out


def subject(res: dict[str, Any]) -> str:
    ref: str = res["subject"]["reference"]
    return ref.rsplit("/", 1)[-1]


def leukemic(directory: Path) -> set[str]:
    return {subject(c) for c in lines(directory, "Condition.ndjson")
            if any(cd.get("code") in LEUKEMIA_CODES for cd in c["code"]["coding"])}


@pytest.mark.parametrize("results", [10, 90, 150, 7])
def test_each_candidate_has_the_results_asked_for(tmp_path: Path, results: int) -> None:
    write_population(60, tmp_path, seed=4, leukemia_rate=0.3, defects=False, results_per_candidate=results)
    candidates = leukemic(tmp_path)
    assert len(candidates) > 5
    dense: dict[str, int] = {}
    for obs in lines(tmp_path, "Observation.ndjson"):
        if any(cd.get("code") in DENSE_CODES for cd in obs["code"]["coding"]):
            dense[subject(obs)] = dense.get(subject(obs), 0) + 1
    assert {pid: dense.get(pid, 0) for pid in candidates} == dict.fromkeys(candidates, results)


def test_without_results_per_candidate_the_output_is_the_default(tmp_path: Path) -> None:
    """Same seed, same bytes: the parameter draws nothing when absent; with it, the patients before the first
    leukaemia patient are unchanged."""
    write_population(40, tmp_path / "a", seed=5, leukemia_rate=0.2)
    write_population(40, tmp_path / "b", seed=5, leukemia_rate=0.2, results_per_candidate=None)
    write_population(40, tmp_path / "c", seed=5, leukemia_rate=0.2, results_per_candidate=90)
    for name in ("Patient", "Encounter", "Condition", "Observation", "MedicationAdministration"):
        assert (tmp_path / "a" / f"{name}.ndjson").read_bytes() == (tmp_path / "b" / f"{name}.ndjson").read_bytes()
    order = [p["id"] for p in lines(tmp_path / "a", "Patient.ndjson")]
    first = next(i for i, pid in enumerate(order) if pid in leukemic(tmp_path / "a"))
    assert first > 0
    before = set(order[:first])
    same = [o for o in lines(tmp_path / "a", "Observation.ndjson") if subject(o) in before]
    assert same and same == [o for o in lines(tmp_path / "c", "Observation.ndjson") if subject(o) in before]


@pytest.mark.parametrize("rate", [0.001, 0.05])
def test_the_leukaemia_share_is_the_one_asked_for(tmp_path: Path, rate: float) -> None:
    n = 4000
    write_population(n, tmp_path, seed=6, leukemia_rate=rate, defects=False, results_per_candidate=10)
    share = len(leukemic(tmp_path)) / n
    assert rate / 3 <= share <= rate * 2 + 0.002


@pytest.mark.parametrize(("kwargs", "message"), [({"results_per_candidate": 0}, "at least 1"),
                                                 ({"leukemia_rate": 1.5}, "between 0 and 1")])
def test_nonsense_parameters_are_refused(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_population(5, tmp_path, **kwargs)
