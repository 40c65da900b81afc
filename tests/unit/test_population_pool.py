"""``without_gc``: a worker's task runs with the cyclic collector paused, and it is running again after."""

from __future__ import annotations

import gc

import pytest

from bridge.population.pool import Pool, without_gc


def _collector_state(_: object) -> bool:
    return gc.isenabled()


def _fails(_: object) -> None:
    raise ValueError("boom")


def test_paused_during_the_task_and_resumed_after() -> None:
    assert gc.isenabled()
    assert without_gc(_collector_state, 1) is False
    assert gc.isenabled()


def test_resumed_after_a_task_that_raises() -> None:
    with pytest.raises(ValueError, match="boom"):
        without_gc(_fails, 1)
    assert gc.isenabled()


def test_left_paused_when_it_was_paused() -> None:
    gc.disable()
    try:
        assert without_gc(_collector_state, 1) is False
        assert not gc.isenabled()
    finally:
        gc.enable()


class _State:
    def prepare(self) -> None:
        """Nothing to build."""


@pytest.mark.parametrize("processes", [1, 2])
def test_the_pool_runs_tasks_without_the_collector(processes: int) -> None:
    assert list(Pool(_State(), processes).map(_collector_state, [1, 2, 3])) == [False, False, False]
    assert gc.isenabled()
