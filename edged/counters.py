"""Counter arithmetic of virtual meters: energy from the sources' counter increments.

Pure: no I/O, no clock. ``edged.virtual`` keeps one ``Tally`` per source term (device and
quantity of a virtual meter's formula) and persists it; this module says how a tally
moves when a source reports its counter.

The rule, per source:

* the first value ever seen is the baseline; it books nothing (the virtual meter
  counts the energy that flowed while it was configured, from zero);
* a value at or above the last one books the difference, however long ago the last
  one was read: after a gap (source stale, offline, daemon down) the energy shows up
  from the source's own counter the moment it is read again, once and in full;
* a value below the last one (a reset, a rollover, a replaced meter) books **nothing**
  for that step and becomes the new baseline: a new meter's reading is not energy
  that flowed through this site.

A tally is kept as ``banked + (last - base)``: ``base`` is the value at which the
current run of non-decreasing readings began and ``banked`` the energy of the runs
closed by a reset. Within a run the increments telescope, so the total is one
subtraction of two meter readings, never a long sum of small float differences: with
whole-Wh readings (or any readings a float holds exactly) the total is exact.

Why the books stay exact (for a source trace ``v0, v1, …, vn`` as read):

1. ``total`` after step k equals the sum over i ≤ k of ``max(0, vi - v(i-1))`` where the
   step is not a reset, i.e. exactly the increments the source's counter showed us.
   Proof by induction: a non-decreasing step adds ``vi - v(i-1)`` to ``last - base``;
   a reset moves ``last - base`` into ``banked`` and restarts the run at 0.
2. ``total`` never decreases: each step adds a non-negative amount.
3. A restart restores ``(base, banked, last)`` as they were written together; the next
   reading is compared with that ``last``, so an increment is booked exactly once
   whether it arrived before the crash (then ``last`` already holds it) or after
   (then it is booked from the restored ``last``). The persisted state may be older
   than the last reading before the crash: that only delays the booking, because the
   source's own counter still holds the energy. Only the three numbers written in one
   transaction matter; writing a total without its baseline would double count.
4. Energy a source counted and lost to a reset before it was read again is the one
   thing no gateway can recover; it is lost at the source, not in the books.

A virtual counter is ``sum(weight * total)`` over its terms. With non-negative weights it
never decreases (2.). With a negative weight (grid export subtracted from import plus
PV production) one interval's net increment may be negative when the export counter
ticks before the PV counter that feeds it; the net is booked as it is, never clamped,
so the virtual counter always equals the weighted sum of the real increments to the
last Wh (clamping would make it drift upwards).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tally:
    """The books of one source term: ``total = banked + (last - base)``."""

    base: float | None = None
    banked: float = 0.0
    last: float | None = None

    @property
    def total(self) -> float:
        """Energy booked from this source since it was first seen."""
        if self.base is None or self.last is None:
            return self.banked
        return self.banked + (self.last - self.base)


def step(tally: Tally, value: float) -> Tally:
    """The tally after the source reported ``value`` (see the module docstring)."""
    if tally.last is None or tally.base is None:
        return Tally(value, tally.banked, value)
    if value >= tally.last:
        return Tally(tally.base, tally.banked, value)
    # Reset, rollover or a replaced meter: close the run, re-base, book nothing.
    return Tally(value, tally.banked + (tally.last - tally.base), value)


def follow(tally: Tally, value: float) -> Tally:
    """The tally after a source that never resets (another virtual meter) reported ``value``.

    A virtual counter may go down by design (a negative weight), so a lower value is a
    negative increment, not a reset: everything it showed is booked, signed.
    """
    if tally.last is None or tally.base is None:
        return Tally(value, tally.banked, value)
    return Tally(tally.base, tally.banked, value)


def combine(terms: Iterable[tuple[float, Tally]]) -> float:
    """The virtual counter: the weighted sum of the terms' totals."""
    return sum(weight * tally.total for weight, tally in terms)
