"""The derive stage: virtual meters as derived samples computed from their sources.

Every sample of a source (a device or another virtual meter) that a virtual meter reads
produces one derived sample of that virtual meter, timestamped like the source sample.
Derived samples go back into the pipeline, so live values, windows, the load profile,
sequence numbers, topics and status treat a virtual meter like a device.

- **Counters** come from the sources' counter increments (``edged.counters``): one
  ``Tally`` per term, persisted in the energy store. The virtual counter is the weighted
  sum of the tallies' totals.
- **Gauges** combine the sources' live values of the same moment: every term's latest
  value must lie within ``skew`` seconds of the sample that triggers the derivation,
  otherwise the gauge is left out of that sample.
- **Stale**: a source whose supervisor state is offline or stale, that sent no sample
  within ``stale_after`` seconds (default three poll intervals plus 2 s), or whose counter
  was not read since the start makes the virtual meter stale. A stale meter's derived
  samples carry no gauge at all and its counters as they stood when it was last fresh
  (a value once true, never a partial sum); the sample has the attribute ``stale`` and
  every record of a window with a stale sample carries ``stale: true``. The increments
  of all sources are still booked meanwhile, so when the source is back the counter
  catches up from the source's own counter at once, nothing lost or counted twice.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from edged.counters import Tally, combine, follow, step
from edged.live import LiveValues
from edged.model import DeviceState, Record, Sample
from edged.virtualspec import DEFAULT_SKEW, Formula, VirtualDef, order

log = logging.getLogger("edged.virtual")

STALE_ATTRS: Mapping[str, str] = MappingProxyType({"stale": "1"})
STALE_GRACE = 2.0
STALE_KEEP = 2 * 86400.0
"""Seconds stale runs are kept to flag records (longer than any window)."""

StateOf = Callable[[str], DeviceState | None]
TallyKey = tuple[str, str, str]


@dataclass(frozen=True)
class Meter:
    """One virtual meter as the stage runs it."""

    id: str
    compute: VirtualDef
    stale_after: Mapping[str, float]
    """Per source point: seconds without a sample after which it is stale."""


@dataclass
class _State:
    meter: Meter
    frozen: dict[str, float] = field(default_factory=dict)
    stale: bool = True
    reason: str = "no sample yet"
    last_ts: float | None = None
    # Runs of consecutive stale samples as [first, last] sample times (a fresh sample ends
    # a run): a record is stale when its window holds a sample of a run.
    stale_runs: deque[list[float]] = field(default_factory=deque)
    in_run: bool = False


@dataclass(frozen=True)
class VirtualStatus:
    """What status and metrics show for a virtual meter."""

    id: str
    stale: bool
    reason: str
    last_sample: float | None
    sources: tuple[str, ...]


class VirtualMeters:
    """Derives virtual meter samples from source samples; keeps their books."""

    def __init__(self, live: LiveValues, state_of: StateOf | None = None) -> None:
        self.live = live
        self.state_of: StateOf = state_of or (lambda _id: None)
        self._meters: dict[str, _State] = {}
        self._readers: dict[str, list[str]] = {}
        self._tallies: dict[TallyKey, Tally] = {}
        self._dirty: set[TallyKey] = set()
        self._last_seen: dict[str, float] = {}
        self.on_rebase: Callable[[], None] | None = None
        """Called after a source reset re-based a tally: the books must be written now."""

    # -- configuration --------------------------------------------------------------------

    def configure(self, meters: Sequence[Meter], stored: Mapping[TallyKey, Tally]) -> None:
        """Run these meters (dependency order is worked out here); ``stored``: persisted books."""
        defs = {m.id: m for m in meters}
        ordered = order({m.id: m.compute for m in meters})
        old = self._meters
        self._meters = {vid: old.get(vid) or _State(defs[vid]) for vid in ordered}
        for vid in ordered:
            self._meters[vid].meter = defs[vid]
        self._readers = {}
        for vid in ordered:
            for p in defs[vid].compute.points:
                self._readers.setdefault(p, []).append(vid)
        for key, tally in stored.items():
            self._tallies.setdefault(key, tally)

    @property
    def ids(self) -> tuple[str, ...]:
        """The virtual meters in dependency order."""
        return tuple(self._meters)

    # -- the stage ------------------------------------------------------------------------

    def derive(self, sample: Sample) -> list[Sample]:
        """The derived samples of every virtual meter that reads ``sample``'s point."""
        readers = self._readers.get(sample.device_id)
        self._last_seen[sample.device_id] = sample.timestamp
        if not readers:
            return []
        out: list[Sample] = []
        for vid in readers:
            st = self._meters[vid]
            self._book(vid, st.meter.compute.formulas, sample)
            derived = self._sample(st, sample.timestamp)
            if derived is not None:
                out.append(derived)
        return out

    def _book(self, vid: str, formulas: Sequence[Formula], sample: Sample) -> None:
        if sample.attrs.get("stale"):
            return  # a stale virtual source carries frozen counters: nothing new to book
        rebased = False
        for f in formulas:
            if not f.counter:
                continue
            for t in f.terms:
                if t.point != sample.device_id:
                    continue
                value = sample.values.get(t.quantity)
                if value is None or not math.isfinite(value):
                    continue
                key = (vid, t.point, t.quantity)
                old = self._tallies.get(key, Tally())
                virtual_source = t.point in self._meters
                new = follow(old, value) if virtual_source else step(old, value)
                if new == old:
                    continue
                if not virtual_source and old.last is not None and value < old.last:
                    log.warning(
                        "source counter went back virtual=%s source=%s quantity=%s "
                        "from=%s to=%s: booked nothing, re-based",
                        vid,
                        t.point,
                        t.quantity,
                        old.last,
                        value,
                    )
                    rebased = True
                self._tallies[key] = new
                self._dirty.add(key)
        if rebased and self.on_rebase is not None:
            self.on_rebase()

    def _fresh(self, st: _State, now: float) -> str | None:
        """Why the meter is stale now, or None when every source is fresh."""
        m = st.meter
        for p in m.compute.points:
            if p in self._meters:
                if self._meters[p].stale:
                    return f"source {p} is stale"
            else:
                state = self.state_of(p)
                if state in (DeviceState.OFFLINE, DeviceState.STALE, DeviceState.UNLICENSED):
                    return f"source {p} is {state.value}"
            seen = self._last_seen.get(p)
            if seen is None:
                return f"no sample from source {p} yet"
            if now - seen > m.stale_after.get(p, 3.0 + STALE_GRACE):
                return f"no sample from source {p} for {now - seen:.0f} s"
        for f in m.compute.formulas:
            if f.counter:
                for t in f.terms:
                    if self._tallies.get((m.id, t.point, t.quantity), Tally()).last is None:
                        return f"no {t.quantity} from source {t.point} yet"
        return None

    def _sample(self, st: _State, ts: float) -> Sample | None:
        m = st.meter
        why = self._fresh(st, ts)
        self._set_stale(st, why)
        st.last_ts = ts
        values: dict[str, float] = {}
        if why is None:
            st.in_run = False
            for f in m.compute.formulas:
                if f.counter:
                    values[f.quantity] = combine(
                        (t.weight, self._tallies[(m.id, t.point, t.quantity)]) for t in f.terms
                    )
                    st.frozen[f.quantity] = values[f.quantity]
                else:
                    g = self._gauge(f, ts, m.compute.skew)
                    if g is not None:
                        values[f.quantity] = g
            return Sample(m.id, ts, MappingProxyType(values)) if values else None
        if not st.frozen:
            return None  # never fresh since the start: nothing true to publish yet
        runs = st.stale_runs
        if st.in_run and runs:
            runs[-1][1] = max(runs[-1][1], ts)
        else:
            runs.append([ts, ts])
            st.in_run = True
        while runs and runs[0][1] < ts - STALE_KEEP:
            runs.popleft()
        return Sample(m.id, ts, MappingProxyType(dict(st.frozen)), STALE_ATTRS)

    def _gauge(self, f: Formula, ts: float, skew: float) -> float | None:
        total = 0.0
        for t in f.terms:
            lv = self.live.get(t.point, t.quantity)
            if lv is None or abs(lv.ts - ts) > skew:
                return None
            total += t.weight * lv.value
        return total

    def _set_stale(self, st: _State, why: str | None) -> None:
        stale = why is not None
        if stale != st.stale:
            log.info(
                "virtual meter state virtual=%s state=%s%s",
                st.meter.id,
                "stale" if stale else "online",
                f" reason={why!r}" if why else "",
            )
        st.stale = stale
        st.reason = why or ""

    def tick(self, now: float) -> None:
        """Meters whose sources all fell silent get no derivation: mark them stale here."""
        for st in self._meters.values():
            if not st.stale:
                why = self._fresh(st, now)
                if why is not None:
                    self._set_stale(st, why)

    def flag(self, record: Record) -> Record:
        """The record with ``stale`` set when a stale sample fell into its window."""
        st = self._meters.get(record.device_id)
        if st is None or not st.stale_runs:
            return record
        start, end = record.window_start, record.window_start + record.window_length
        if any(first < end and last >= start for first, last in st.stale_runs):
            return replace(record, stale=True)
        return record

    # -- persistence ----------------------------------------------------------------------

    def take_dirty(self) -> list[tuple[TallyKey, Tally]]:
        """Tallies changed since the last call (to write in one transaction)."""
        dirty = [(k, self._tallies[k]) for k in self._dirty]
        self._dirty.clear()
        return dirty

    def tally(self, meter: str, point: str, quantity: str) -> Tally | None:
        """One term's books (for tests and status)."""
        return self._tallies.get((meter, point, quantity))

    # -- status ---------------------------------------------------------------------------

    def is_stale(self, vid: str) -> bool | None:
        """Whether a virtual meter is stale now; None when there is no such meter."""
        st = self._meters.get(vid)
        return None if st is None else st.stale

    def status(self) -> list[VirtualStatus]:
        """Every virtual meter's state."""
        return [
            VirtualStatus(vid, st.stale, st.reason, st.last_ts, st.meter.compute.points)
            for vid, st in self._meters.items()
        ]


def meters_from(
    virtual: Sequence[tuple[str, VirtualDef | None]],
    poll_intervals: Mapping[str, float],
) -> list[Meter]:
    """Stage meters from configured virtual meters and their sources' poll intervals."""
    out: list[Meter] = []
    for vid, d in virtual:
        if d is None:
            continue
        stale_after = {
            p: d.stale_after
            if d.stale_after is not None
            else 3 * poll_intervals.get(p, 1.0) + STALE_GRACE
            for p in d.points
        }
        out.append(Meter(vid, d, MappingProxyType(stale_after)))
    return out


__all__ = ["DEFAULT_SKEW", "STALE_ATTRS", "Meter", "VirtualMeters", "VirtualStatus", "meters_from"]
