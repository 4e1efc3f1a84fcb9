"""Sharing the available current of nested circuits among charging sessions (pure).

Input: circuits (a forest: each names its parent) with the current left for the chargers
on each phase and, optionally, as a power budget; and the sessions that want current, each
on one leaf of the tree, drawing on one or three phases, with a maximum and a priority.
Output: one current per session (amperes per phase it uses), either 0 (paused) or between
the minimum charging current and the session's maximum.

Every circuit gives linear constraints over the session currents ``a``: per phase ``p``,
``sum(a[s] for s below the circuit using p) <= available[p]``; for a power budget,
``sum(a[s] * phases(s)) <= available_power`` (in phase-amperes). A session below a circuit
is in that circuit's constraints and in those of every ancestor, so nested limits all hold
when every constraint holds.

The algorithm and why the result is right:

1. *Admission.* Sessions are taken in priority order (earliest session first); one is
   admitted when all admitted sessions, itself included, fit every constraint at the minimum
   current. So the admitted sessions at the minimum are feasible, and a session is paused
   only when it would not fit at the minimum next to those admitted before it.
2. *Water-filling.* All admitted sessions start at the minimum (feasible by 1) and rise
   together at the same rate (a common level ``t``). The level stops at the first event:
   a session reaches its maximum (it is frozen there) or a constraint becomes tight (every
   session still rising in it is frozen at ``t``). Then the others rise on.
   - *Within limits:* between events every load grows linearly and none passes its
     capacity, because ``t`` stops at the first capacity reached; a tight constraint's
     members are all frozen, so its load never grows again.
   - *Between minimum and maximum, or 0:* admitted sessions start at the minimum and only
     rise, never past their maximum; the others get 0.
   - *Fair (max-min):* a session frozen below its maximum is in a constraint that became
     tight at its level; everyone else in it was frozen earlier at a lower or equal level
     or now at the same one. Giving it more would take from someone who has no more than
     it. Unused share (a session capped at its maximum) stays with the others, who rise on.
   - *Monotone:* for the same admitted sessions, the result is the leximin-largest point
     of the feasible set; more available current makes that set larger, so the sorted
     allocation never gets worse and the smallest share never shrinks. (A single session
     can get less: a 3-phase session that gets more on L1..L3 may leave less for a
     1-phase session on L1. Admission is greedy, so which sessions run may change too.)
   - *Terminates:* every event freezes at least one session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

EPS = 1e-9
PHASES = (1, 2, 3)


@dataclass(frozen=True)
class Budget:
    """The current a circuit has left for the chargers below it.

    ``available`` is per phase L1..L3 in A (None: no per-phase limit); ``available_power``
    is in phase-amperes (watts / nominal voltage; None: no power limit). Either may be
    negative when other loads already exceed the limit: then everything below pauses.
    """

    name: str
    parent: str | None = None
    available: tuple[float, float, float] | None = None
    available_power: float | None = None


@dataclass(frozen=True)
class Demand:
    """A charging session that wants current."""

    id: str
    circuit: str
    phases: frozenset[int] = frozenset(PHASES)
    max_current: float = 32.0
    priority: float = 0.0
    """Lower goes first when not every session fits (the session's start time)."""


@dataclass(frozen=True)
class Allocation:
    """Current per session (A per phase it uses); ``paused``: sessions that got 0."""

    current: Mapping[str, float]
    paused: frozenset[str] = field(default_factory=frozenset)


@dataclass
class _Constraint:
    cap: float
    coef: dict[str, float]  # session id -> phase-amperes per ampere of its current


def constraints(budgets: Sequence[Budget], demands: Sequence[Demand]) -> list[_Constraint]:
    """The linear constraints of the circuit tree over the given sessions."""
    by_name = {b.name: b for b in budgets}
    members: dict[str, list[Demand]] = {b.name: [] for b in budgets}
    for d in demands:
        for name in _lineage(d.circuit, by_name):
            members[name].append(d)
    out: list[_Constraint] = []
    for b in budgets:
        below = members[b.name]
        if b.available is not None:
            for p, cap in zip(PHASES, b.available, strict=True):
                out.append(_Constraint(cap, {d.id: 1.0 for d in below if p in d.phases}))
        if b.available_power is not None:
            out.append(_Constraint(b.available_power, {d.id: float(len(d.phases)) for d in below}))
    return out


def _lineage(circuit: str, by_name: Mapping[str, Budget]) -> list[str]:
    """The circuit and its ancestors (the config refuses cycles; guard anyway)."""
    seen: list[str] = []
    name: str | None = circuit
    while name is not None and name in by_name and name not in seen:
        seen.append(name)
        name = by_name[name].parent
    return seen


def allocate(
    budgets: Sequence[Budget], demands: Sequence[Demand], min_current: float
) -> Allocation:
    """Fair shares for the sessions: each 0 or within [min_current, its max]; limits hold."""
    wanting = [d for d in demands if d.max_current >= min_current - EPS and d.phases]
    cons = constraints(budgets, wanting)
    admitted: list[Demand] = []
    for d in sorted(wanting, key=lambda d: (d.priority, d.id)):
        trial = {x.id for x in admitted} | {d.id}
        # A constraint no trial session is in says nothing about them (even if it is
        # already over its capacity: that is load the sessions cannot change).
        if all(
            load * min_current <= k.cap + EPS
            for k in cons
            if (load := sum(c for sid, c in k.coef.items() if sid in trial)) > 0
        ):
            admitted.append(d)
    current = _fill(admitted, constraints(budgets, admitted), min_current)
    paused = frozenset(d.id for d in demands if d.id not in current)
    result = {d.id: current.get(d.id, 0.0) for d in demands}
    return Allocation(result, paused)


def _fill(
    admitted: Sequence[Demand], cons: Sequence[_Constraint], start: float
) -> dict[str, float]:
    """Progressive filling from ``start`` (feasible for every admitted session)."""
    cons = [k for k in cons if k.coef]
    frozen: dict[str, float] = {}
    rising = {d.id: d for d in admitted}
    t = start
    while rising:
        # The first event: a session reaching its maximum or a constraint its capacity.
        t_next = min(d.max_current for d in rising.values())
        for k in cons:
            rate = sum(c for sid, c in k.coef.items() if sid in rising)
            if rate <= 0:
                continue
            fixed = sum(c * frozen[sid] for sid, c in k.coef.items() if sid in frozen)
            t_next = min(t_next, max(t, (k.cap - fixed) / rate))
        t = t_next
        for sid, d in list(rising.items()):
            if d.max_current <= t + EPS:
                frozen[sid] = min(d.max_current, t)
                del rising[sid]
        for k in cons:
            members = [sid for sid in k.coef if sid in rising]
            if not members:
                continue
            load = sum(c * frozen.get(sid, t) for sid, c in k.coef.items())
            if load >= k.cap - EPS:
                for sid in members:
                    frozen[sid] = t
                    del rising[sid]
    return frozen


@dataclass(frozen=True)
class CircuitLoad:
    """What is known about one circuit before sharing (input of ``budgets``).

    ``base`` is the measured load that is not a controlled charger, per phase (None when
    the circuit has no meter); ``reserved`` is charger current on this circuit that cannot
    be controlled (a charger that refused a profile, is offline or held at the safe
    current), per phase.
    """

    name: str
    parent: str | None = None
    max_current: float | None = None
    max_power: float | None = None
    margin: float = 0.0
    base: tuple[float, float, float] | None = None
    reserved: tuple[float, float, float] = (0.0, 0.0, 0.0)


def budgets(loads: Sequence[CircuitLoad], voltage: float = 230.0) -> list[Budget]:
    """Budgets from limits, measured other loads and reservations.

    A circuit without a meter still carries what its measured sub-circuits measured (the
    nearest measured circuits below it), and every reservation below it.
    """
    children: dict[str | None, list[CircuitLoad]] = {}
    for c in loads:
        children.setdefault(c.parent, []).append(c)

    def below(c: CircuitLoad, seen: frozenset[str]) -> tuple[list[float], list[float]]:
        base = [0.0, 0.0, 0.0]
        reserved = list(c.reserved)
        for child in children.get(c.name, []):
            if child.name in seen:
                continue
            cb, cr = below(child, seen | {child.name})
            reserved = [a + b for a, b in zip(reserved, cr, strict=True)]
            base = [a + b for a, b in zip(base, cb, strict=True)]
        if c.base is not None:
            base = list(c.base)
        return base, reserved

    out = []
    for c in loads:
        base, reserved = below(c, frozenset({c.name}))
        used = [b + r for b, r in zip(base, reserved, strict=True)]
        available = None
        if c.max_current is not None:
            lim = c.max_current
            available = (
                lim - used[0] - c.margin,
                lim - used[1] - c.margin,
                lim - used[2] - c.margin,
            )
        power = None
        if c.max_power is not None:
            power = c.max_power / voltage - sum(used) - 3 * c.margin
        out.append(Budget(c.name, c.parent, available, power))
    return out
