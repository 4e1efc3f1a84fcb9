"""Virtual counters from source counter increments: resets, gaps, replacements, restarts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from edged.counters import Tally, combine, step


@dataclass
class Meter:
    """A simulated source meter: its register and the energy that really flowed."""

    value: int
    real: int = 0


# One event of a source: energy flows and is read, flows unread (a gap: stale, offline,
# daemon down), the meter resets / rolls over / is replaced (the new reading is lower),
# or the daemon crashes and restarts from what it last committed.
_event = st.one_of(
    st.tuples(st.just("read"), st.integers(0, 5_000)),
    st.tuples(st.just("gap"), st.integers(0, 50_000)),
    st.tuples(st.just("reset"), st.integers(0, 1_000)),
    st.tuples(st.just("commit"), st.just(0)),
    st.tuples(st.just("crash"), st.just(0)),
)
_trace = st.tuples(st.integers(0, 10**9), st.lists(_event, max_size=60))


def _run(
    weights: list[int], traces: list[tuple[int, list[tuple[str, int]]]]
) -> tuple[list[float], list[int]]:
    """Interleave the traces round-robin; return the virtual counter after each read."""
    meters = [Meter(start) for start, _ in traces]
    tallies = [step(Tally(), m.value) for m in meters]  # the first reading is the baseline
    committed = list(tallies)
    # After a restart the daemon publishes nothing until every source was read again.
    unread: set[int] = set()
    seen: list[float] = [combine(zip(weights, tallies, strict=True))]
    longest = max((len(events) for _, events in traces), default=0)
    for i in range(longest):
        for k, (_, events) in enumerate(traces):
            if i >= len(events):
                continue
            kind, n = events[i]
            meter = meters[k]
            if kind in ("read", "gap"):
                meter.value += n
                meter.real += n
                if kind == "read":
                    tallies[k] = step(tallies[k], meter.value)
                    unread.discard(k)
            elif kind == "reset":
                # The reading before the reset is taken: energy a meter counts and loses
                # to a reset before anyone reads it is lost at the source (docstring, 4.).
                tallies[k] = step(tallies[k], meter.value)
                meter.value = min(n, meter.value - 1) if meter.value > 0 else 0
                tallies[k] = step(tallies[k], meter.value)
                unread.discard(k)
                # The store commits a re-basing at once (edged.virtual): a crash right
                # after a reset must not restore the old meter's baseline.
                committed[k] = tallies[k]
            elif kind == "commit":
                committed = list(tallies)
            elif kind == "crash":
                tallies = list(committed)
                unread = set(range(len(meters)))
            if not unread:
                seen.append(combine(zip(weights, tallies, strict=True)))
    # At the end every source is read once more (it came back after its gap).
    for k, meter in enumerate(meters):
        tallies[k] = step(tallies[k], meter.value)
    seen.append(combine(zip(weights, tallies, strict=True)))
    return seen, [m.real for m in meters]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), _trace), min_size=1, max_size=5),
)
def test_positive_weights_never_decrease_and_end_at_the_real_sum(
    sources: list[tuple[int, tuple[int, list[tuple[str, int]]]]],
) -> None:
    weights = [w for w, _ in sources]
    seen, real = _run(weights, [t for _, t in sources])
    assert all(b >= a for a, b in itertools.pairwise(seen))
    assert seen[-1] == sum(w * r for w, r in zip(weights, real, strict=True))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-2, 2), _trace), min_size=1, max_size=5),
)
def test_any_weights_end_at_the_weighted_real_sum(
    sources: list[tuple[int, tuple[int, list[tuple[str, int]]]]],
) -> None:
    weights = [w for w, _ in sources]
    seen, real = _run(weights, [t for _, t in sources])
    assert seen[-1] == sum(w * r for w, r in zip(weights, real, strict=True))


def test_zev_total_consumption_is_import_plus_pv_minus_export() -> None:
    grid_in, grid_out, pv1, pv2 = Tally(), Tally(), Tally(), Tally()
    for gi, go, p1, p2 in [(1000, 500, 70, 9), (1010, 530, 100, 20), (1012, 560, 130, 31)]:
        grid_in, grid_out = step(grid_in, gi), step(grid_out, go)
        pv1, pv2 = step(pv1, p1), step(pv2, p2)
    total = combine([(1, grid_in), (1, pv1), (1, pv2), (-1, grid_out)])
    assert total == (1012 - 1000) + (130 - 70) + (31 - 9) - (560 - 500)


def test_a_reset_books_nothing_and_rebases() -> None:
    t = step(step(step(Tally(), 100), 150), 3)
    assert t.total == 50
    assert step(t, 10).total == 57
