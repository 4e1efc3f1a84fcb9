"""What a virtual meter is made of: formulas over its sources' quantities (config side).

A ``[[virtual_meters]]`` table names, per quantity of the virtual meter, a linear formula
over quantities of other metering points::

    [virtual_meters.quantities]
    energy_import = "grid.energy_import + pv1.energy_export - grid.energy_export"
    power_active = "grid.power_active + pv1.power_active + pv2.power_active"

A term is ``[factor*]point.quantity``; operators stand between spaces (device ids may hold
``-``). A counter is built from counter terms only, a gauge from gauge terms only.
``per_phase = true`` adds ``<gauge>_l1`` … ``_l3`` for every formula over phased gauges
(``power_active``, ``current``, …) when no such formula is given. A table with
``sources`` only (the licence sheet's example) sums ``energy_import`` and
``power_active`` of its sources.

Errors (unknown point or quantity, a cycle through virtual meters, a counter mixed with
a gauge) name file, line and key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from edged.model import QUANTITIES, Source, is_counter

PHASED = ("voltage", "current", "power_active", "power_reactive", "power_apparent")
_FACTOR = re.compile(r"^(?:(?P<f>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\*)?(?P<ref>[^*\s]+)$")
DEFAULT_SKEW = 2.0


@dataclass(frozen=True)
class Term:
    """One source term of a formula: ``weight * point.quantity``."""

    point: str
    quantity: str
    weight: float


@dataclass(frozen=True)
class Formula:
    """One quantity of a virtual meter and the terms it is computed from."""

    quantity: str
    terms: tuple[Term, ...]
    key: str
    """The config key it was defined at (for error messages)."""

    @property
    def counter(self) -> bool:
        """True for an energy (or other) counter, built from increments."""
        return is_counter(self.quantity)


@dataclass(frozen=True)
class VirtualDef:
    """The computation part of a virtual meter."""

    formulas: tuple[Formula, ...]
    skew: float
    stale_after: float | None

    @property
    def points(self) -> tuple[str, ...]:
        """The metering points it reads, in first-use order."""
        seen: dict[str, None] = {}
        for f in self.formulas:
            for t in f.terms:
                seen.setdefault(t.point, None)
        return tuple(seen)


def parse_formula(text: str, quantity: str, src: Source, key: str) -> Formula:
    """``"a.energy_import + 0.5*b.energy_export - c.energy_export"`` into terms."""
    tokens = text.split()
    terms: list[Term] = []
    sign = 1.0
    expect_term = True
    if not tokens:
        raise src.error(key, "empty formula: expected terms like 'grid.energy_import'")
    for tok in tokens:
        if expect_term and not terms and tok == "-" and sign == 1.0:
            sign = -1.0  # a leading minus
            continue
        if expect_term:
            m = _FACTOR.match(tok)
            if m is None or "." not in m.group("ref"):
                raise src.error(
                    key,
                    f"cannot read term {tok!r}: expected [factor*]point.quantity, "
                    "operators between spaces",
                )
            point, _, qname = m.group("ref").rpartition(".")
            if qname not in QUANTITIES:
                raise src.error(key, f"unknown quantity {qname!r} in term {tok!r}")
            if is_counter(qname) != is_counter(quantity):
                what = "counter" if is_counter(quantity) else "gauge"
                raise src.error(
                    key, f"{quantity} is a {what}: term {tok!r} must be a {what} as well"
                )
            factor = float(m.group("f")) if m.group("f") else 1.0
            terms.append(Term(point, qname, sign * factor))
            expect_term = False
        else:
            if tok not in ("+", "-"):
                raise src.error(key, f"expected '+' or '-' between terms, got {tok!r}")
            sign = 1.0 if tok == "+" else -1.0
            expect_term = True
    if expect_term:
        raise src.error(key, "formula ends with an operator")
    return Formula(quantity, tuple(terms), key)


def check(
    virtual: Sequence[tuple[str, VirtualDef, Source, tuple[str, ...]]],
    devices: Mapping[str, Any],
) -> None:
    """Every term names a known metering point; no cycle through virtual meters."""
    defs = {vid: d for vid, d, _, _ in virtual}
    where = {vid: s for vid, _, s, _ in virtual}
    for vid, d, src, listed in virtual:
        for f in d.formulas:
            for t in f.terms:
                if t.point not in devices and t.point not in defs:
                    raise src.error(f.key, f"no device or virtual meter with id {t.point!r}")
                if t.point == vid:
                    raise src.error(f.key, f"virtual meter {vid!r} cannot read itself")
                if listed and t.point not in listed:
                    raise src.error(
                        f.key, f"{t.point!r} is not in this meter's sources ({', '.join(listed)})"
                    )
    # Depth-first search for a cycle through virtual meters.
    state: dict[str, int] = {}

    def visit(vid: str, path: list[str]) -> None:
        state[vid] = 1
        for p in defs[vid].points:
            if p not in defs:
                continue
            if state.get(p) == 1:
                cycle = " -> ".join([*path[path.index(p) :], p]) if p in path else p
                f = next(f for f in defs[vid].formulas if any(t.point == p for t in f.terms))
                raise where[vid].error(f.key, f"virtual meters form a cycle: {cycle}")
            if state.get(p) is None:
                visit(p, [*path, p])
        state[vid] = 2

    for vid in defs:
        if state.get(vid) is None:
            visit(vid, [vid])


def order(virtual: Mapping[str, VirtualDef]) -> list[str]:
    """Virtual meters in dependency order (a meter after the virtual meters it reads)."""
    done: list[str] = []

    def visit(vid: str) -> None:
        if vid in done:
            return
        for p in virtual[vid].points:
            if p in virtual:
                visit(p)
        done.append(vid)

    for vid in virtual:
        visit(vid)
    return done


def frozen_quantities(d: VirtualDef) -> Mapping[str, Formula]:
    """Formulas by quantity (read-only)."""
    return MappingProxyType({f.quantity: f for f in d.formulas})
