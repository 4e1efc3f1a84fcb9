"""The tick grid of polled devices: drift-free, monotonic, with a stable phase per device.

``edged.polling`` schedules every polled device on it. The reconnect policy (capped,
jittered backoff) is ``edged.reconnect``.
"""

from __future__ import annotations

import math
import zlib


def next_tick(phase: float, interval: float, now: float) -> float:
    """The first grid point ``phase + k * interval`` strictly after ``now``.

    Missed ticks are skipped rather than run late in a burst, and the grid never drifts
    however long a poll took.
    """
    k = math.floor((now - phase) / interval) + 1
    return phase + k * interval


def phase_of(device_id: str, interval: float) -> float:
    """A stable offset within the interval, so many devices do not all poll at once."""
    return (zlib.crc32(device_id.encode()) % 10_000) / 10_000 * interval
