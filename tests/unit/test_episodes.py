"""Tests of bridge.evaluate.episodes: one AE is one episode of a term, at its worst grade."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import InputError
from bridge.evaluate.episodes import Episode, GradedPoint, merge_episodes, within_window

ANC = "Neutrophil count decreased"
PLT = "Platelet count decreased"
CRS = "Cytokine release syndrome"
D0 = date(2021, 3, 10)


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def pt(term: str, n: int, grade: int | None, ref: str) -> GradedPoint:
    return GradedPoint(term, day(n), grade, f"Observation/{ref}")


def test_grade_zero_result_splits_two_episodes() -> None:
    points = [pt(ANC, 1, 2, "a1"), pt(ANC, 3, 3, "a3"), pt(ANC, 5, 0, "a5"), pt(ANC, 9, 1, "a9")]
    assert merge_episodes(points) == [
        Episode(ANC, day(1), day(3), 3, ("Observation/a1", "Observation/a3"), resolved=day(5)),
        Episode(ANC, day(9), day(9), 1, ("Observation/a9",), resolved=None),
    ]


def test_one_episode_worst_grade_and_onset_at_first_graded_point() -> None:
    points = [pt(ANC, 0, 0, "a0"), pt(ANC, 2, 1, "a2"), pt(ANC, 4, 3, "a4"), pt(ANC, 6, 2, "a6")]
    [episode] = merge_episodes(points)
    assert episode.onset == day(2)
    assert episode.end == day(6)
    assert episode.worst_grade == 3
    assert episode.evidence == ("Observation/a2", "Observation/a4", "Observation/a6")
    assert episode.resolved is None


def test_input_order_does_not_matter_and_terms_do_not_mix() -> None:
    points = [
        pt(PLT, 4, 0, "p4"),
        pt(ANC, 3, 4, "a3"),
        pt(PLT, 2, 3, "p2"),
        pt(ANC, 1, 2, "a1"),
        pt(PLT, 6, 1, "p6"),
    ]
    assert merge_episodes(points) == merge_episodes(list(reversed(points)))
    assert [(e.term, e.onset, e.worst_grade, e.resolved) for e in merge_episodes(points)] == [
        (ANC, day(1), 4, None),
        (PLT, day(2), 3, day(4)),
        (PLT, day(6), 1, None),
    ]


def test_same_day_points_are_ordered_by_source() -> None:
    # Observation/a (grade 0) sorts before Observation/b (grade 2): the zero closes nothing
    points = [pt(ANC, 1, 2, "b"), pt(ANC, 1, 0, "a")]
    assert merge_episodes(points) == [Episode(ANC, day(1), day(1), 2, ("Observation/b",))]
    # ... and a zero sorting after a graded point of the same day closes it that day
    points = [pt(ANC, 1, 2, "a"), pt(ANC, 1, 0, "b")]
    assert merge_episodes(points) == [Episode(ANC, day(1), day(1), 2, ("Observation/a",), resolved=day(1))]


def test_ungradable_points_neither_extend_nor_end_an_episode() -> None:
    points = [pt(ANC, 1, 2, "a1"), pt(ANC, 2, None, "a2"), pt(ANC, 3, 1, "a3"), pt(ANC, 8, None, "a8")]
    assert merge_episodes(points) == [Episode(ANC, day(1), day(3), 2, ("Observation/a1", "Observation/a3"))]


def test_only_zero_or_ungradable_points_give_no_episode() -> None:
    assert merge_episodes([pt(ANC, 1, 0, "a1"), pt(ANC, 2, None, "a2")]) == []
    assert merge_episodes([]) == []


def test_max_gap_days_starts_a_new_episode_after_a_long_silence() -> None:
    points = [pt(CRS, 1, 1, "c1"), pt(CRS, 8, 2, "c8"), pt(CRS, 19, 3, "c19")]
    assert len(merge_episodes(points)) == 1  # default: only a grade-0 result ends an episode
    gapped = merge_episodes(points, max_gap_days=7)
    assert [(e.onset, e.end, e.worst_grade, e.resolved) for e in gapped] == [
        (day(1), day(8), 2, None),  # 7 days apart: still one episode
        (day(19), day(19), 3, None),  # 11 days after the last graded point: a new one
    ]


def test_duplicate_sources_are_listed_once() -> None:
    points = [GradedPoint(CRS, day(1), 2, "Condition/x"), GradedPoint(CRS, day(2), 3, "Condition/x")]
    assert merge_episodes(points)[0].evidence == ("Condition/x",)


def test_invalid_grades_and_gaps_are_input_errors() -> None:
    with pytest.raises(InputError):
        GradedPoint(ANC, day(1), 6, "Observation/a")
    with pytest.raises(InputError):
        GradedPoint(ANC, day(1), -1, "Observation/a")
    with pytest.raises(InputError):
        merge_episodes([], max_gap_days=-1)


def test_within_window_keeps_onsets_in_the_closed_interval() -> None:
    episodes = [
        Episode(ANC, day(-1), day(2), 3, ("Observation/before",)),
        Episode(ANC, day(0), day(0), 1, ("Observation/day0",)),
        Episode(PLT, day(365), day(370), 2, ("Observation/last",)),
        Episode(PLT, day(366), day(366), 2, ("Observation/after",)),
    ]
    kept = within_window(episodes, D0)
    assert [e.evidence[0] for e in kept] == ["Observation/day0", "Observation/last"]
    assert [e.evidence[0] for e in within_window(episodes, D0, days=28)] == ["Observation/day0"]


_points = st.lists(
    st.builds(
        GradedPoint,
        term=st.sampled_from([ANC, PLT, CRS]),
        when=st.integers(0, 60).map(day),
        grade=st.one_of(st.none(), st.integers(0, 5)),
        source=st.sampled_from([f"Observation/{i}" for i in range(8)]),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(points=_points, data=st.data())
def test_merge_is_deterministic_and_keeps_every_graded_point(
    points: list[GradedPoint], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(points))
    episodes = merge_episodes(points)
    assert merge_episodes(shuffled) == episodes
    graded = [p for p in points if p.grade]
    for term in {p.term for p in graded}:
        of_term = [e for e in episodes if e.term == term]
        assert max(e.worst_grade for e in of_term) == max(p.grade or 0 for p in graded if p.term == term)
        assert min(e.onset for e in of_term) == min(p.when for p in graded if p.term == term)
    assert all(e.onset <= e.end and 1 <= e.worst_grade <= 5 for e in episodes)
    assert {p.source for p in graded} == {s for e in episodes for s in e.evidence}
