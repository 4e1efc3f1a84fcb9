"""Live values: the latest value and its time per metering point and quantity.

Status, the console, control loops and local servers read the present from here
instead of asking a driver. Samples may carry some quantities only (a charger's meter
values, a Modbus point that was disabled), so each quantity keeps its own timestamp.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from edged.model import Sample


@dataclass(frozen=True, slots=True)
class LiveValue:
    """One quantity's latest value and when it was read (UTC epoch seconds).

    Slotted: a gateway keeps one per quantity of every device (8,000 at a thousand
    meters), and without a ``__dict__`` each takes a third of the memory.
    """

    value: float
    ts: float


class LiveValues:
    """The latest value of every quantity of every metering point."""

    def __init__(self) -> None:
        self._points: dict[str, dict[str, LiveValue]] = {}

    def update(self, sample: Sample) -> None:
        """Take the values of a sample (an older sample never overwrites a newer value)."""
        point = self._points.setdefault(sample.device_id, {})
        ts = sample.timestamp
        for name, value in sample.values.items():
            if not math.isfinite(value):
                continue  # a value a meter could not measure is not the present
            prev = point.get(name)
            if prev is None or prev.ts <= ts:
                point[name] = LiveValue(value, ts)

    def of(self, device_id: str) -> Mapping[str, LiveValue]:
        """The latest values of one metering point (empty when it never sent one)."""
        return MappingProxyType(self._points.get(device_id, {}))

    def get(self, device_id: str, quantity: str) -> LiveValue | None:
        """The latest value of one quantity, or None."""
        return self._points.get(device_id, {}).get(quantity)

    def keep_only(self, device_ids: Iterable[str]) -> None:
        """Forget metering points that are no longer configured."""
        keep = set(device_ids)
        for dev in [d for d in self._points if d not in keep]:
            del self._points[dev]
