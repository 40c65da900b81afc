"""The remembered date readings of ``bridge.normalize.fhirpath`` give what reading the whole string gives."""

from __future__ import annotations

import re
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.model import PartialDate
from bridge.normalize.fhirpath import local_date, partial_date, ref_id

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def _read(text: str) -> PartialDate | None:
    """The reading before it was remembered: the whole (stripped) string."""
    m = _DATE.match(text.strip())
    if not m:
        return None
    year, month, day = (int(g) if g else None for g in m.groups())
    try:
        pd = PartialDate(year or 0, month, day)
        pd.earliest()
    except ValueError:
        return None
    return pd


_STAMPS = st.one_of(
    st.text(max_size=40),
    st.builds(lambda pad, d, rest: pad + d + rest, st.sampled_from(["", " ", "\t", "\u2003"]),
              st.from_regex(r"[0-9٠-٩]{4}(-[0-9]{2}(-[0-9]{2})?)?", fullmatch=True),
              st.sampled_from(["", "T08:19:00+08:00", "T23:59:59.123456789Z", " ", "x", "-", "5"])),
)


@settings(max_examples=600, deadline=None)
@given(_STAMPS)
def test_same_reading_as_the_whole_string(text: str) -> None:
    expected = _read(text)
    assert partial_date(text) == expected
    assert local_date(text) == (expected.earliest() if expected and expected.is_full else None)


def test_stamps_of_one_day() -> None:
    assert local_date("2026-01-08T08:19:00+08:00") == local_date("2026-01-08T23:59:00-05:00") == date(2026, 1, 8)
    assert partial_date("2026-02-30T00:00:00Z") is None
    assert partial_date(" 1980-04") == PartialDate(1980, 4)
    assert local_date(" 1980-04") is None
    assert partial_date(None) is None and local_date(12) is None


def test_relative_references_read_without_splitting() -> None:
    assert ref_id({"reference": "Patient/p1"}, "Patient") == "p1"
    assert ref_id({"reference": "Patient/_history"}, "Patient") is None
    assert ref_id({"reference": "Patient/"}, "Patient") is None
    assert ref_id({"reference": "PatientX/p1"}, "Patient") is None
    assert ref_id({"reference": "Patient/p1/_history/2"}, "Patient") == "p1"
    assert ref_id({"reference": "http://ehr.example/fhir/Patient/p1"}, "Patient") == "p1"
    assert ref_id({"reference": "urn:uuid:1"}, "Patient", {"urn:uuid:1": "Patient/p9"}) == "p9"
