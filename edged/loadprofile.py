"""Load profiles: energy per aligned 15-minute interval and metering point.

For every metering point whose samples carry ``energy_import`` or ``energy_export`` (a
device or a virtual meter), one row per quantity and interval ``[k*900, (k+1)*900)`` UTC.

Rules (docs/zev.md, "Load profiles"):

- **Booking**: the increment between two readings of a counter is booked to the interval
  of the reading that shows it. Over any span the rows therefore add up to the
  difference of the counter readings that close the span, to the last Wh. A counter
  that goes back (reset, rollover, replaced meter) books nothing for that step and is
  re-based, as in ``edged.counters``.
- **Complete or not**: an interval is ``ok`` when the reading before it was at most
  ``gap`` seconds before its first reading and the reading after it at most ``gap``
  seconds after its last (so it was seen whole). ``gap`` is per point (``set_gaps``):
  ``edged.energy`` derives it from the poll interval unless configured. Otherwise it is
  ``incomplete``: the first interval ever read, an interval with a gap inside, the
  interval before and the interval after an outage (device offline, virtual meter
  stale, daemon down).
- **Gaps**: when two readings lie more than ``gap`` seconds apart and in different
  intervals, the energy between them is booked to **one ``gap`` row** whose ``start`` and
  ``end`` are the two readings' times: the energy of the outage, once, never spread over
  intervals the gateway did not see and never dropped. A gap inside one interval books to
  that interval, which is then ``incomplete``.
- **Peak**: the highest ``power_active`` sample in the interval (for ``energy_export``
  rows the highest of ``-power_active``), in W; empty when the point sent no power.
- A sample of a stale virtual meter is not a reading (its counter is frozen).

The interval in progress is kept as an ``open`` row (``partial`` once it cannot be
complete) together with the reading it was
booked up to; both are written in one transaction (``edged.energystore``), so a restart,
even after kill -9, resumes the books exactly where the last commit left them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from edged.energystore import Reading, ReadingKey, Row
from edged.model import Sample

INTERVAL = 900.0
DEFAULT_GAP = 300.0
PROFILED = ("energy_import", "energy_export")


def interval_start(ts: float) -> float:
    """Start of the aligned 15-minute interval holding ``ts``."""
    return math.floor(ts / INTERVAL) * INTERVAL


class _Open:
    """The interval in progress of one point and quantity, and the last reading booked."""

    __slots__ = ("complete", "energy", "peak", "start", "ts", "value")

    def __init__(
        self,
        start: float,
        energy: float,
        peak: float | None,
        complete: bool,
        value: float,
        ts: float,
    ) -> None:
        self.start = start
        self.energy = energy
        self.peak = peak
        self.complete = complete
        self.value = value
        self.ts = ts


class LoadProfile:
    """Books counter readings into 15-minute rows; hands rows to the store when asked."""

    def __init__(
        self,
        gap: float = DEFAULT_GAP,
        readings: Mapping[ReadingKey, Reading] | None = None,
        open_rows: Mapping[ReadingKey, Row] | None = None,
    ) -> None:
        if not 0 < gap <= INTERVAL:
            raise ValueError(f"gap must be within (0, {INTERVAL:g}] s, got {gap!r}")
        self.gap = gap
        self._gaps: dict[str, float] = {}
        self._open: dict[ReadingKey, _Open] = {}
        rows = open_rows or {}
        for key, r in (readings or {}).items():
            row = rows.get(key)
            if row is None:  # never written apart; be safe: a new, incomplete interval
                self._open[key] = _Open(interval_start(r.ts), 0.0, None, False, r.value, r.ts)
            else:
                complete = row.status == "open"
                self._open[key] = _Open(row.start, row.energy, row.peak, complete, r.value, r.ts)
        self._closed: list[Row] = []
        self._dirty: set[ReadingKey] = set()

    def add(self, sample: Sample) -> None:
        """Book the counters of one sample."""
        if sample.attrs and sample.attrs.get("stale"):
            return
        values = sample.values
        power = values.get("power_active")
        if power is not None and not math.isfinite(power):
            power = None
        for q in PROFILED:
            v = values.get(q)
            if v is None or not math.isfinite(v):
                continue
            peak = None if power is None else power if q == "energy_import" else -power
            self._reading((sample.device_id, q), v, sample.timestamp, peak)

    def _reading(self, key: ReadingKey, value: float, ts: float, peak: float | None) -> None:
        op = self._open.get(key)
        if op is None:
            self._open[key] = _Open(interval_start(ts), 0.0, _peak(None, peak), False, value, ts)
            self._dirty.add(key)
            return
        last_ts = op.ts
        if ts <= last_ts:
            return  # an older reading (never book backwards)
        delta = value - op.value if value >= op.value else 0.0
        gap = ts - last_ts > self._gaps.get(key[0], self.gap)
        if op.start <= ts < op.start + INTERVAL:
            op.energy += delta
            if peak is not None and peak > 0 and (op.peak is None or peak > op.peak):
                op.peak = peak
            if gap:
                op.complete = False
            op.value, op.ts = value, ts
        else:
            k = interval_start(ts)
            self._close(key, op, complete=op.complete and not gap)
            if gap:
                self._closed.append(Row(key[0], key[1], last_ts, ts, delta, None, "gap"))
                nxt = _Open(k, 0.0, _peak(None, peak), False, value, ts)
            else:
                nxt = _Open(k, delta, _peak(None, peak), k == op.start + INTERVAL, value, ts)
            self._open[key] = nxt
        self._dirty.add(key)

    def set_gaps(self, gaps: Mapping[str, float]) -> None:
        """Per point: seconds between two readings that make a gap (others: ``gap``)."""
        self._gaps = dict(gaps)

    def _close(self, key: ReadingKey, op: _Open, *, complete: bool) -> None:
        status = "ok" if complete else "incomplete"
        self._closed.append(
            Row(key[0], key[1], op.start, op.start + INTERVAL, op.energy, op.peak, status)
        )

    def take_dirty(self) -> tuple[list[Row], list[tuple[ReadingKey, Reading]]]:
        """Rows closed and open rows changed since the last call, with their readings.

        An open row is written as ``open`` (``partial`` once it cannot be complete): the
        two lists belong together and go into one transaction.
        """
        rows = self._closed
        self._closed = []
        readings: list[tuple[ReadingKey, Reading]] = []
        for key in self._dirty:
            op = self._open[key]
            rows.append(_open_row(key, op))
            readings.append((key, Reading(op.value, op.ts)))
        self._dirty.clear()
        return rows, readings

    def open_rows(self) -> dict[ReadingKey, Row]:
        """The intervals in progress (for tests and status)."""
        return {key: _open_row(key, op) for key, op in self._open.items()}


def _open_row(key: ReadingKey, op: _Open) -> Row:
    status = "open" if op.complete else "partial"
    return Row(key[0], key[1], op.start, op.start + INTERVAL, op.energy, op.peak, status)


def _peak(current: float | None, value: float | None) -> float | None:
    if value is None or value <= 0:
        return current
    return value if current is None or value > current else current
