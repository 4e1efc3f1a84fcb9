"""Turns samples into at most one record per device per publish window.

Windows are aligned to the wall clock: a window of length L starts at a UTC
epoch multiple of L (15-minute windows at :00, :15, :30, :45). A window closes as
soon as it is complete: when a sample of its device lies past its end, or when the
sample's ``next_at`` (from the device's poll schedule) says no further sample can
fall into it. Otherwise it closes once its end plus a small grace has passed (a
device that missed its poll, a charger that speaks when it likes). Each device that
had samples in a window gets exactly one record. Counters publish their last value;
gauges publish mean, min, max and last; ``info`` quantities (``edged.model.LIVE_ONLY``,
such as a charger's ``link_connects``) are live values only and never enter a window. A
sample for a window that has already closed is dropped and counted, so a window can never
produce a second record.

The windows stage does no I/O and keeps no timers: the caller asks ``due(now)`` (or
``next_deadline()`` to know when to ask), which keeps it testable with an
injected clock.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from edged.model import LIVE_ONLY, Reading, Record, Sample, is_counter, iso

log = logging.getLogger(__name__)

DEFAULT_GRACE = 2.0

# Accumulator slots per quantity: one small list, mutated in place, keeps add() cheap.
_LAST, _TS, _SUM, _MIN, _MAX, _COUNT = range(6)
_CLOSED: dict[str, list[float]] = {}
"""The accumulator of every closed window (never written: a closed window takes no sample)."""


class _Window:
    """One device's open window and the running statistics of its quantities."""

    __slots__ = ("acc", "closed", "device", "end", "start")

    def __init__(self, device: _Device, start: float, end: float):
        self.device = device
        self.start = start
        self.end = end
        self.acc: dict[str, list[float]] = {}
        self.closed = False


class _Device:
    """Per-device window state."""

    __slots__ = ("active", "current", "floor", "id", "last_ts", "schedule", "since", "windows")

    def __init__(self, device_id: str, interval: float, since: float):
        self.id = device_id
        # (effective from, interval) in time order; a reload appends an entry that
        # starts at the end of the window open at that moment.
        self.schedule: list[tuple[float, float]] = [(-math.inf, interval)]
        self.windows: dict[float, _Window] = {}
        self.current: _Window | None = None
        self.floor = -math.inf  # end of the newest closed window
        self.last_ts: float | None = None
        self.since = since
        self.active = True


class Windows:
    """Aggregates samples into one record per device and wall-clock-aligned window."""

    def __init__(
        self,
        intervals: Mapping[str, float] | None = None,
        *,
        grace: float = DEFAULT_GRACE,
        clock: Callable[[], float] = time.time,
    ):
        if not math.isfinite(grace) or grace < 0:
            raise ValueError(f"grace must be a non-negative number of seconds, got {grace!r}")
        self._grace = grace
        self._clock = clock
        self._devices: dict[str, _Device] = {}
        self._heap: list[tuple[float, int, _Window]] = []
        self._seq = 0
        self._cutoff = -math.inf
        self._counts = {"samples": 0, "records": 0, "late": 0, "nonfinite": 0, "unknown": 0}
        self._ready: list[Record] = []
        now = clock()
        for device_id, interval in (intervals or {}).items():
            self._devices[device_id] = _Device(device_id, _check_interval(device_id, interval), now)

    @property
    def grace(self) -> float:
        """Seconds a window stays open after its end for late samples."""
        return self._grace

    def counts(self) -> Mapping[str, int]:
        """Counters: samples taken, records made, samples dropped (late, nonfinite, unknown)."""
        return MappingProxyType(dict(self._counts))

    def interval(self, device_id: str, at: float | None = None) -> float | None:
        """The publish interval of a device in force at ``at`` (default now)."""
        dev = self._devices.get(device_id)
        if dev is None or not dev.active:
            return None
        return _entry(dev.schedule, self._clock() if at is None else at)[1]

    def add(self, sample: Sample) -> None:
        """Take one sample into its device's window (dropped and counted if it is too late)."""
        values = sample.values
        if not LIVE_ONLY.isdisjoint(values):
            values = {k: v for k, v in values.items() if k not in LIVE_ONLY}
            if not values:
                return  # live values only: nothing for a record
        dev = self._devices.get(sample.device_id)
        counts = self._counts
        if dev is None or not dev.active:
            counts["unknown"] += 1
            return
        ts = sample.timestamp
        w = dev.current
        if w is None or not (w.start <= ts < w.end):
            w = self._window(dev, ts)
            if w is None:
                counts["late"] += 1
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("sample dropped as late device=%s ts=%s", dev.id, iso(ts))
                return
        counts["samples"] += 1
        acc = w.acc
        taken = False
        for name, value in values.items():
            if not math.isfinite(value):
                counts["nonfinite"] += 1
                continue
            taken = True
            a = acc.get(name)
            if a is None:
                acc[name] = [value, ts, value, value, value, 1]
                continue
            if ts >= a[_TS]:
                a[_LAST] = value
                a[_TS] = ts
            a[_SUM] += value
            if value < a[_MIN]:
                a[_MIN] = value
            elif value > a[_MAX]:
                a[_MAX] = value
            a[_COUNT] += 1
        if taken and (dev.last_ts is None or ts > dev.last_ts):
            dev.last_ts = ts
        # A window no further sample of this device can reach is complete: close it now
        # instead of waiting out the grace.
        horizon = ts if sample.next_at is None else max(ts, sample.next_at)
        if any(o.end <= horizon for o in dev.windows.values()):
            for o in sorted(dev.windows.values(), key=lambda o: o.start):
                if o.end <= horizon:
                    self._close(o, self._ready)

    def has_ready(self) -> bool:
        """True when windows closed early wait to be taken."""
        return bool(self._ready)

    def take_ready(self) -> list[Record]:
        """Records of windows that closed early (complete before their grace); cleared."""
        if not self._ready:
            return []
        ready, self._ready = self._ready, []
        return ready

    def _window(self, dev: _Device, ts: float) -> _Window | None:
        """The open window of ``dev`` that holds ``ts``, opened if needed; None when closed."""
        bounds = _bounds(dev.schedule, ts)
        if bounds is None:
            return None
        start, end = bounds
        if end <= self._cutoff or start < dev.floor:
            return None
        w = dev.windows.get(start)
        if w is None:
            w = _Window(dev, start, end)
            dev.windows[start] = w
            self._seq += 1
            heapq.heappush(self._heap, (end, self._seq, w))
        if dev.current is None or w.start >= dev.current.start:
            dev.current = w
        return w

    def next_deadline(self) -> float | None:
        """When the next open window is due to close (its end plus the grace), or None."""
        heap = self._heap
        while heap and heap[0][2].closed:
            heapq.heappop(heap)
        return heap[0][0] + self._grace if heap else None

    def due(self, now: float | None = None) -> list[Record]:
        """Close every window that ended before ``now`` minus the grace; one record each."""
        cutoff = (self._clock() if now is None else now) - self._grace
        if cutoff > self._cutoff:
            self._cutoff = cutoff
        records: list[Record] = []
        heap = self._heap
        while heap and heap[0][0] <= cutoff:
            _, _, w = heapq.heappop(heap)
            if not w.closed:
                self._close(w, records)
        return records

    def flush(self) -> list[Record]:
        """Close all open windows now (shutdown), so no sample taken is lost."""
        records = self.take_ready()
        while self._heap:
            _, _, w = heapq.heappop(self._heap)
            if not w.closed:
                self._close(w, records)
        return records

    def _close(self, w: _Window, records: list[Record]) -> None:
        w.closed = True
        dev = w.device
        del dev.windows[w.start]
        if w.end > dev.floor:
            dev.floor = w.end
        if dev.current is w:
            dev.current = None
        if not dev.active and not dev.windows:
            self._devices.pop(dev.id, None)
        # A window closed early stays in the heap until its deadline: let its statistics go.
        acc, w.acc = w.acc, _CLOSED
        if not acc:
            return
        values: dict[str, Reading] = {}
        for name, a in acc.items():
            n = int(a[_COUNT])
            if is_counter(name):
                values[name] = _reading(a[_LAST], a[_TS], None, None, None, n)
            else:
                lo, hi = a[_MIN], a[_MAX]
                # Rounding can push sum/n a hair outside [min, max]; the mean never is.
                mean = min(max(a[_SUM] / n, lo), hi)
                values[name] = _reading(a[_LAST], a[_TS], mean, lo, hi, n)
        self._counts["records"] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "window closed device=%s start=%s length=%g quantities=%d samples=%d",
                dev.id,
                iso(w.start),
                w.end - w.start,
                len(values),
                max(r.count for r in values.values()),
            )
        records.append(Record(dev.id, w.start, w.end - w.start, MappingProxyType(values)))

    def set_intervals(self, intervals: Mapping[str, float], now: float | None = None) -> None:
        """Apply new publish intervals (reload): each change takes effect from the next window."""
        at = self._clock() if now is None else now
        for device_id, interval in intervals.items():
            interval = _check_interval(device_id, interval)
            dev = self._devices.get(device_id)
            if dev is None or not dev.active:
                if dev is not None and dev.windows:
                    # Removed then re-added before its last window closed: keep that window.
                    dev.active = True
                    dev.since = at
                    self._reschedule(dev, interval, at)
                else:
                    self._devices[device_id] = _Device(device_id, interval, at)
                continue
            self._reschedule(dev, interval, at)
        for device_id, dev in list(self._devices.items()):
            if device_id not in intervals and dev.active:
                dev.active = False
                if not dev.windows:
                    del self._devices[device_id]
        log.info("publish intervals set devices=%d", len(intervals))

    def _reschedule(self, dev: _Device, interval: float, at: float) -> None:
        sched = dev.schedule
        # A change made before an earlier pending one took effect replaces it.
        while len(sched) > 1 and sched[-1][0] > at:
            sched.pop()
        # Entries that no sample can reach any more (before the cutoff) are dropped.
        while len(sched) > 1 and sched[1][0] <= self._cutoff:
            sched.pop(0)
        if sched[-1][1] == interval:
            return
        bounds = _bounds(sched, at)
        switch = bounds[1] if bounds is not None else at
        for w in dev.windows.values():
            switch = max(switch, w.end)
        sched.append((switch, interval))
        log.info(
            "publish interval change device=%s interval=%g from=%s", dev.id, interval, iso(switch)
        )

    def stale_devices(self, now: float | None = None) -> list[str]:
        """Devices that sent no sample in their last completed window (in config order)."""
        cutoff = (self._clock() if now is None else now) - self._grace
        stale: list[str] = []
        for dev in self._devices.values():
            if not dev.active:
                continue
            bounds = _bounds(dev.schedule, cutoff)
            if bounds is None:
                continue
            interval = _entry(dev.schedule, cutoff)[1]
            previous_start = bounds[0] - interval
            seen = dev.since if dev.last_ts is None else max(dev.last_ts, dev.since)
            if seen < previous_start:
                stale.append(dev.id)
        return stale


def _reading(
    last: float, ts: float, mean: float | None, lo: float | None, hi: float | None, n: int
) -> Reading:
    """``Reading(last, ts, mean, lo, hi, n)``, built in a third of the time.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; at a
    thousand devices and eight quantities that is most of what closing a window costs.
    Filling the instance's ``__dict__`` at once makes the same object (equal, same hash).
    """
    r = _new_object(Reading)
    r.__dict__.update(last=last, ts=ts, mean=mean, min=lo, max=hi, count=n)
    return r


_new_object = object.__new__


def _check_interval(device_id: str, interval: float) -> float:
    if not math.isfinite(interval) or interval <= 0:
        raise ValueError(f"publish interval of {device_id} must be positive, got {interval!r}")
    return float(interval)


def _entry(schedule: list[tuple[float, float]], ts: float) -> tuple[float, float]:
    for i in range(len(schedule) - 1, 0, -1):
        if ts >= schedule[i][0]:
            return schedule[i]
    return schedule[0]


def _bounds(schedule: list[tuple[float, float]], ts: float) -> tuple[float, float] | None:
    """Start and end of the window holding ``ts``; None if it lies before the schedule."""
    i = len(schedule) - 1
    while i > 0 and ts < schedule[i][0]:
        i -= 1
    effective, interval = schedule[i]
    if ts < effective:
        return None
    start = math.floor(ts / interval) * interval
    # Guard against division rounding putting ts just outside its window.
    if start > ts:
        start -= interval
    elif start + interval <= ts:
        start += interval
    end = start + interval
    # The first window after a change may be clipped to start at the change
    # and the last one before it to end there.
    start = max(start, effective)
    if i + 1 < len(schedule):
        end = min(end, schedule[i + 1][0])
    return start, end
