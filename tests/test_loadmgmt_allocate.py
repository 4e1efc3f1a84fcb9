"""Properties of the fair-share allocator (edged/loadmgmt/allocate.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edged.loadmgmt.allocate import (
    PHASES,
    Allocation,
    Budget,
    CircuitLoad,
    Demand,
    allocate,
    budgets,
    constraints,
)

MIN = 6.0
TOL = 1e-6


@st.composite
def trees(draw: st.DrawFn) -> list[Budget]:
    n = draw(st.integers(1, 4))
    out: list[Budget] = []
    for i in range(n):
        parent = draw(st.sampled_from([None, *[b.name for b in out]])) if out else None
        per_phase = draw(
            st.one_of(
                st.none(),
                st.tuples(*[st.floats(-5, 80, allow_nan=False) for _ in PHASES]),
            )
        )
        power = draw(st.one_of(st.none(), st.floats(-10, 200, allow_nan=False)))
        if per_phase is None and power is None:
            per_phase = (32.0, 32.0, 32.0)
        out.append(Budget(f"c{i}", parent, per_phase, power))
    return out


@st.composite
def sessions(draw: st.DrawFn, circuits: list[Budget]) -> list[Demand]:
    n = draw(st.integers(0, 10))
    out = []
    for i in range(n):
        phases = draw(
            st.sampled_from([frozenset(PHASES), frozenset({1}), frozenset({2}), frozenset({3})])
        )
        out.append(
            Demand(
                f"s{i}",
                draw(st.sampled_from([b.name for b in circuits])),
                phases,
                draw(st.floats(MIN, 32)),
                draw(st.floats(0, 100)),
            )
        )
    return out


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[Budget], list[Demand]]:
    circuits = draw(trees())
    return circuits, draw(sessions(circuits))


def loads(
    circuits: list[Budget], demands: list[Demand], alloc: Allocation
) -> list[tuple[float, float, dict[str, float]]]:
    out = []
    for k in constraints(circuits, demands):
        load = sum(c * alloc.current[sid] for sid, c in k.coef.items())
        out.append((load, k.cap, k.coef))
    return out


@settings(max_examples=400)
@given(problems())
def test_no_circuit_or_phase_over_its_limit(problem: tuple[list[Budget], list[Demand]]) -> None:
    circuits, demands = problem
    alloc = allocate(circuits, demands, MIN)
    for load, cap, _ in loads(circuits, demands, alloc):
        assert load <= cap + TOL or load == 0


@settings(max_examples=400)
@given(problems())
def test_each_session_paused_or_between_minimum_and_its_maximum(
    problem: tuple[list[Budget], list[Demand]],
) -> None:
    circuits, demands = problem
    alloc = allocate(circuits, demands, MIN)
    for d in demands:
        a = alloc.current[d.id]
        assert a == 0 or MIN - TOL <= a <= d.max_current + TOL
        assert (a == 0) == (d.id in alloc.paused)


@settings(max_examples=400)
@given(problems())
def test_fair_no_session_below_another_it_could_take_from(
    problem: tuple[list[Budget], list[Demand]],
) -> None:
    """A running session below its maximum sits in a full constraint where nobody has more."""
    circuits, demands = problem
    alloc = allocate(circuits, demands, MIN)
    tight = [(coef) for load, cap, coef in loads(circuits, demands, alloc) if load >= cap - TOL]
    for d in demands:
        a = alloc.current[d.id]
        if a == 0 or a >= d.max_current - TOL:
            continue
        assert any(
            d.id in coef and all(alloc.current[r] <= a + TOL for r in coef) for coef in tight
        ), f"{d.id} at {a} could take more: {alloc}"


@settings(max_examples=400)
@given(problems())
def test_nobody_paused_when_everyone_fits_at_the_minimum(
    problem: tuple[list[Budget], list[Demand]],
) -> None:
    circuits, demands = problem
    fits = all(
        sum(coef.values()) * MIN <= k_cap + TOL
        for k_cap, coef in ((k.cap, k.coef) for k in constraints(circuits, demands))
        if coef
    )
    alloc = allocate(circuits, demands, MIN)
    if fits:
        assert not alloc.paused
    # A paused session did not fit at the minimum beside those admitted before it.
    for d in demands:
        if d.id not in alloc.paused:
            continue
        before = [
            x
            for x in demands
            if x.id not in alloc.paused and (x.priority, x.id) < (d.priority, d.id)
        ]
        trial = {x.id for x in before} | {d.id}
        assert any(
            load * MIN > k.cap + 1e-12
            for k in constraints(circuits, demands)
            if (load := sum(c for sid, c in k.coef.items() if sid in trial)) > 0
        )


def _raised(circuits: list[Budget], delta: float) -> list[Budget]:
    return [
        Budget(
            b.name,
            b.parent,
            None if b.available is None else tuple(x + delta for x in b.available),  # type: ignore[arg-type]
            None if b.available_power is None else b.available_power + 3 * delta,
        )
        for b in circuits
    ]


@settings(max_examples=400)
@given(problems(), st.floats(0, 40))
def test_more_available_current_never_makes_the_shares_worse(
    problem: tuple[list[Budget], list[Demand]], delta: float
) -> None:
    """Same sessions running: the sorted shares are leximin-larger, the smallest never less."""
    circuits, demands = problem
    before = allocate(circuits, demands, MIN)
    after = allocate(_raised(circuits, delta), demands, MIN)
    if before.paused != after.paused:
        return
    a = sorted(v for v in before.current.values() if v > 0)
    b = sorted(v for v in after.current.values() if v > 0)
    if a:
        assert b[0] >= a[0] - TOL
    for x, y in zip(a, b, strict=True):
        if abs(x - y) > TOL:
            assert y > x, (a, b)
            break


@settings(max_examples=300)
@given(
    st.floats(0, 100),
    st.floats(0, 40),
    st.lists(st.floats(MIN, 32), min_size=1, max_size=10),
)
def test_one_circuit_of_three_phase_sessions_each_share_monotone(
    cap: float, delta: float, maxima: list[float]
) -> None:
    demands = [Demand(f"s{i}", "main", frozenset(PHASES), m, i) for i, m in enumerate(maxima)]
    low = allocate([Budget("main", None, (cap, cap, cap))], demands, MIN)
    high = allocate([Budget("main", None, (cap + delta,) * 3)], demands, MIN)
    # One circuit, same phases: more current never pauses a session that ran...
    assert high.paused <= low.paused
    if high.paused != low.paused:
        return  # ...but a session that starts running takes its share from the others.
    for d in demands:
        assert high.current[d.id] >= low.current[d.id] - TOL


def test_worked_example_nested_circuits_and_phases() -> None:
    """63 A main, 32 A sub: the sub's three 3-phase sessions share 32 A, the rest go to L1."""
    circuits = [Budget("main", None, (63.0,) * 3), Budget("garage", "main", (32.0,) * 3)]
    demands = [
        Demand("g1", "garage", frozenset(PHASES), 16, 1),
        Demand("g2", "garage", frozenset(PHASES), 16, 2),
        Demand("g3", "garage", frozenset(PHASES), 16, 3),
        Demand("m1", "main", frozenset({1}), 32, 4),
        Demand("m2", "main", frozenset({1}), 10, 5),
    ]
    alloc = allocate(circuits, demands, MIN)
    assert alloc.current["g1"] == alloc.current["g2"] == alloc.current["g3"]
    assert abs(alloc.current["g1"] - 32 / 3) < TOL
    # L1 has 63 - 32 = 31 A left: m2 is capped at 10, m1 takes the unused share.
    assert alloc.current["m2"] == 10
    assert abs(alloc.current["m1"] - 21) < TOL


def test_not_enough_for_everyone_pauses_the_latest() -> None:
    demands = [Demand(f"s{i}", "main", frozenset(PHASES), 16, i) for i in range(4)]
    alloc = allocate([Budget("main", None, (20.0,) * 3)], demands, MIN)
    assert alloc.paused == {"s3"}
    assert all(abs(alloc.current[f"s{i}"] - 20 / 3) < TOL for i in range(3))


def test_budgets_subtract_measured_loads_reservations_and_margin() -> None:
    got = budgets(
        [
            CircuitLoad("main", None, 63.0, None, 1.0, None, (0.0, 0.0, 0.0)),
            CircuitLoad("sub", "main", 32.0, 11_040.0, 2.0, (10.0, 5.0, 0.0), (6.0, 0.0, 0.0)),
        ]
    )
    main, sub = got
    # main has no meter: it still carries what the sub measured and reserved.
    assert main.available == (63 - 10 - 6 - 1, 63 - 5 - 1, 63 - 1)
    assert sub.available == (32 - 10 - 6 - 2, 32 - 5 - 2, 32 - 2)
    assert sub.available_power is not None
    assert abs(sub.available_power - (48 - 21 - 6)) < TOL
