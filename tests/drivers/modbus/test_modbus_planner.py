"""Coalescing planner: scattered registers are read in the minimum number of requests."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.planner import Span, plan


def test_scattered_registers_minimum_requests() -> None:
    spans = [
        Span("holding", 0, 2),
        Span("holding", 5, 2),  # gap 3: one request 0..7
        Span("holding", 30, 2),
        Span("holding", 33, 1),  # one request 30..34
        Span("holding", 200, 1),  # alone
        Span("holding", 1000, 4),  # alone
        Span("input", 0, 2),
        Span("input", 5, 2),  # other table: its own request
    ]
    reqs = plan(spans, max_registers=125, max_gap=10)
    assert [(r.table, r.start, r.count) for r in reqs] == [
        ("holding", 0, 7),
        ("holding", 30, 4),
        ("holding", 200, 1),
        ("holding", 1000, 4),
        ("input", 0, 7),
    ]
    assert sorted(i for r in reqs for i in r.points) == list(range(len(spans)))


def test_max_registers_and_max_gap_split_requests() -> None:
    spans = [Span("holding", 100, 1), Span("holding", 110, 1), Span("holding", 120, 1)]
    assert [(r.start, r.count) for r in plan(spans, 15, 10)] == [(100, 11), (120, 1)]
    assert [(r.start, r.count) for r in plan(spans, 125, 8)] == [(100, 1), (110, 1), (120, 1)]
    assert [(r.start, r.count) for r in plan(spans, 125, 9)] == [(100, 21)]


def test_only_plans_the_chosen_points() -> None:
    spans = [Span("holding", 0, 2), Span("holding", 2, 2), Span("holding", 4, 2)]
    assert [r.points for r in plan(spans, 125, 10, only=[0, 2])] == [(0, 2)]
    assert [r.points for r in plan(spans, 125, 0, only=[0, 2])] == [(0,), (2,)]


def _feasible(spans: list[Span], lo: int, hi: int, max_registers: int, max_gap: int) -> bool:
    if hi - lo > max_registers:
        return False
    inside = sorted((s.start, s.end) for s in spans if lo <= s.start and s.end <= hi)
    covered_to = lo
    for a, b in inside:
        if a - covered_to > max_gap:
            return False
        covered_to = max(covered_to, b)
    return covered_to == hi


def _brute_force_minimum(spans: list[Span], max_registers: int, max_gap: int) -> int:
    windows = {(a.start, b.end) for a in spans for b in spans if a.start < b.end}
    windows = {w for w in windows if _feasible(spans, *w, max_registers, max_gap)}
    for k in range(1, len(spans) + 1):
        for combo in itertools.combinations(windows, k):
            if all(any(lo <= s.start and s.end <= hi for lo, hi in combo) for s in spans):
                return k
    raise AssertionError("no cover")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from([1, 2, 4])), min_size=1, max_size=5),
    st.integers(4, 20),
    st.integers(0, 6),
)
def test_greedy_plan_is_minimal_and_valid(
    raw: list[tuple[int, int]], max_registers: int, max_gap: int
) -> None:
    spans = [Span("holding", a, n) for a, n in raw]
    reqs = plan(spans, max_registers, max_gap)
    for r in reqs:
        assert r.count <= max_registers
        mine = [spans[i] for i in r.points]
        assert all(r.start <= s.start and s.end <= r.end for s in mine)
        assert _feasible(mine, r.start, r.end, max_registers, max_gap)
    assert sorted(i for r in reqs for i in r.points) == list(range(len(spans)))
    assert len(reqs) == _brute_force_minimum(spans, max_registers, max_gap)


def test_avoided_registers_are_never_read_over() -> None:
    spans = [Span("input", 0, 2), Span("input", 4, 2), Span("input", 8, 2)]
    reqs = plan(spans, 125, 10, avoid={("input", 6)})
    assert [(r.start, r.count) for r in reqs] == [(0, 6), (8, 2)]
    assert [(r.start, r.count) for r in plan(spans, 125, 10, avoid={("holding", 6)})] == [(0, 10)]
