"""UCUM conversion (RULES.md §3 unit pairs) and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import UnitError
from bridge.normalize.units import convert, convertible

PAIRS = [
    (2.0, "mg/dL", "umol/L", 17.1, 34.2),
    (34.2, "umol/L", "mg/dL", 17.1, 2.0),
    (34.2, "µmol/L", "mg/dL", 17.1, 2.0),
    (1.0, "mg/dL", "umol/L", 88.4, 88.4),
    (176.8, "umol/L", "mg/dL", 88.4, 2.0),
    (1.0, "10*3/uL", "10*9/L", None, 1.0),
    (1000, "/uL", "10*9/L", None, 1.0),
    (1000, "/mm3", "10*9/L", None, 1.0),
    (1.0, "10*9/L", "10*3/uL", None, 1.0),
    (40, "IU/L", "U/L", None, 40.0),
    (1.0, "ukat/L", "U/L", None, 60.0),
    (0.55, "1", "%", None, 55.0),
    (0.5, "1", "%", None, 50.0),
    (55, "%", "1", None, 0.55),
    (110.0, "[lb_av]", "kg", None, 49.8951607),
    (50000, "g", "kg", None, 50.0),
    (5, "10*6{cells}", "{cells}", None, 5e6),
    (12, "g/L", "g/dL", None, 1.2),
    (101.3, "[degF]", "Cel", None, 38.5),
]


@pytest.mark.parametrize(("value", "src", "dst", "molar", "expected"), PAIRS)
def test_rules_unit_pairs(value: float, src: str, dst: str, molar: float | None, expected: float) -> None:
    assert convert(value, src, dst, molar) == pytest.approx(expected, rel=1e-9)


def test_exact_thresholds_stay_exact() -> None:
    assert convert(34.2, "umol/L", "mg/dL", 17.1) == 2.0  # exactly 2.0 mg/dL passes "<= 2.0"
    assert convert(0.5, "1", "%") == 50.0


@pytest.mark.parametrize(("src", "dst"), [("mg/dL", "10*9/L"), ("foo", "kg"), ("umol/L", "mg/dL"), ("", "kg"),
                                           ("mmol/mol", "mg/dL")])
def test_unconvertible_units_raise_with_units_only(src: str, dst: str) -> None:
    with pytest.raises(UnitError) as info:
        convert(12345.678, src, dst)
    assert "12345" not in str(info.value)
    assert not convertible(src, dst)


finite = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(finite)
def test_bilirubin_round_trip(x: float) -> None:
    there = convert(x, "mg/dL", "umol/L", 17.1)
    assert convert(there, "umol/L", "mg/dL", 17.1) == pytest.approx(x, rel=1e-9)


@given(finite, st.sampled_from(["10*9/L", "10*3/uL", "/uL", "/mm3", "10*6/mL"]))
def test_count_conversions_agree(x: float, unit: str) -> None:
    canonical = convert(x, unit, "10*9/L")
    assert convert(canonical, "10*9/L", unit) == pytest.approx(x, rel=1e-9)


@given(finite, finite)
def test_conversion_is_linear_and_monotone(a: float, b: float) -> None:
    ca, cb = convert(a, "[lb_av]", "kg"), convert(b, "[lb_av]", "kg")
    assert (a < b) == (ca < cb) or a == b
    assert convert(a + b, "[lb_av]", "kg") == pytest.approx(ca + cb, rel=1e-9)
