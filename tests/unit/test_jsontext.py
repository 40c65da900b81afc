"""``bridge.jsontext.indented`` writes exactly what ``json.dumps(indent=2, ensure_ascii=False)`` writes."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.jsontext import indented

_LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2 ** 80), max_value=2 ** 80)
           | st.floats() | st.floats(min_value=-1e-3, max_value=1e-3) | st.text())
_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                       | st.dictionaries(st.text(), inner, max_size=4), max_leaves=30)


def _expected(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_same_text_as_json_dumps(value: Any) -> None:
    assert indented(value) == _expected(value)


def test_the_awkward_values() -> None:
    for value in [math.nan, math.inf, -math.inf, 1e-05, 1e16, -0.0, 5e-324, "\u2028\x00\"\\é\ud800", {}, [], (),
                  {"a": {}, "b": [[], {}], "c": [1, [2, {"d": None}]]}, {"": ""}, 2 ** 70, True, False, None]:
        assert indented(value) == _expected(value), value


class _Colour(enum.IntEnum):
    RED = 1


class _Text(str):
    pass


def test_anything_else_is_written_by_json_dumps() -> None:
    for value in [{1: "int key"}, {None: 1, True: 2, 1.5: 3}, [_Colour.RED], {"k": _Text("sub")}, {"x": [_Text("a")]}]:
        assert indented(value) == _expected(value)


def test_what_json_dumps_refuses_is_refused() -> None:
    for value in [{"set": {1, 2}}, [object()]]:
        try:
            _expected(value)
        except TypeError:
            pass
        else:  # pragma: no cover - the standard library would have to change
            raise AssertionError("json.dumps accepted it")
        try:
            indented(value)
        except TypeError:
            continue
        raise AssertionError("indented accepted what json.dumps refuses")


def test_a_screening_document() -> None:
    doc = {"patient": "Patient/p1", "status": "potentially-eligible",
           "criteria": {"inc-age": {"result": "met", "reason": "age 34 on 2026-12-05", "evidence": ["Patient/p1"]},
                        "exc-hbv": {"result": "unknown", "reason": "HBV DNA 1.2e-05 IU/mL", "evidence": []}}}
    assert indented(doc) == _expected(doc)
