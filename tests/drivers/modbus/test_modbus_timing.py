"""Tick grid and backoff, with injected numbers instead of sleeping."""

from __future__ import annotations

import pytest

from edged.timing import Backoff, next_tick, phase_of


def test_grid_does_not_drift_and_skips_missed_ticks() -> None:
    assert next_tick(0.25, 1.0, 10.0) == 10.25
    assert next_tick(0.25, 1.0, 10.25) == 11.25  # strictly after now
    # A poll that overran by 3.4 intervals resumes on the grid, without a burst.
    assert next_tick(0.25, 1.0, 13.65) == 14.25
    ticks = []
    now = 0.0
    for _ in range(1000):
        now = next_tick(0.1, 0.5, now + 0.013)  # polls take 13 ms
        ticks.append(now)
    assert ticks[-1] == pytest.approx(0.1 + 0.5 * 999)  # the 1000th tick, on the grid


def test_phase_is_stable_and_within_the_interval() -> None:
    assert phase_of("meter-1", 2.0) == phase_of("meter-1", 2.0)
    assert all(0 <= phase_of(f"m{i}", 2.0) < 2.0 for i in range(100))
    assert len({phase_of(f"m{i}", 1.0) for i in range(100)}) > 90


def test_backoff_grows_caps_and_jitters() -> None:
    b = Backoff(initial=0.5, maximum=8.0, jitter=0.5, rand=lambda: 0.0)
    assert [b.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next() == 0.5
    j = Backoff(initial=1.0, maximum=8.0, jitter=0.5, rand=lambda: 1.0)
    assert j.next() == 0.5  # jitter takes up to half off
