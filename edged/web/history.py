"""The last hour of every metering point's live values, sampled once a minute, in memory.

Compact on purpose (a gateway may carry a thousand meters with eight values each): one
array of sample times per device and one array of 32-bit floats per quantity.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Callable, Iterable

from edged.live import LiveValues

INTERVAL = 60.0
POINTS = 60


class _Series:
    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times = array("d")
        self.values: dict[str, array[float]] = {}


class History:
    """Samples of the live values, ``POINTS`` per device at ``INTERVAL`` seconds."""

    def __init__(
        self,
        live: LiveValues,
        devices: Callable[[], Iterable[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = live
        self._devices = devices
        self._clock = clock
        self._series: dict[str, _Series] = {}

    def sample(self) -> None:
        """Take one sample of every device's live values."""
        now = self._clock()
        ids = set(self._devices())
        for gone in [d for d in self._series if d not in ids]:
            del self._series[gone]
        for dev in ids:
            values = self._live.of(dev)
            if not values:
                continue
            s = self._series.setdefault(dev, _Series())
            n = len(s.times)
            s.times.append(now)
            for name, lv in values.items():
                arr = s.values.setdefault(name, array("f", [math.nan] * n))
                arr.append(lv.value)
            for arr in s.values.values():
                if len(arr) < n + 1:
                    arr.append(math.nan)  # not measured this time
            if len(s.times) > POINTS:
                del s.times[0]
                for arr in s.values.values():
                    del arr[0]

    def of(self, device: str) -> dict[str, list[list[float | None]]]:
        """Per quantity, ``[time, value]`` pairs oldest first (value None where missing),
        ending with the live value of now."""
        s = self._series.get(device)
        out: dict[str, list[list[float | None]]] = {}
        if s is not None:
            for name, arr in sorted(s.values.items()):
                out[name] = [
                    [t, None if math.isnan(v) else float(v)]
                    for t, v in zip(s.times, arr, strict=True)
                ]
        for name, lv in self._live.of(device).items():
            points = out.setdefault(name, [])
            if not points or (points[-1][0] or 0.0) < lv.ts:
                points.append([lv.ts, lv.value])
        return dict(sorted(out.items()))

    async def run(self) -> None:
        """Sample once a minute until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(INTERVAL)
