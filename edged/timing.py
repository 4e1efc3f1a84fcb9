"""Timing shared by the supervisor, the drivers and the uplink.

A drift-free monotonic tick grid for polls, and one capped, jittered exponential
backoff for everything that reconnects (a bus, a connection task, the MQTT session),
so the reconnect policy lives apart from the connections that use it.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable


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


def capped(attempt: int, initial: float, maximum: float, factor: float = 2.0) -> float:
    """The un-jittered delay of an attempt: ``initial * factor**attempt``, at most ``maximum``."""
    return min(maximum, initial * factor ** min(attempt, 64))


def backoff_delay(
    attempt: int, initial: float, maximum: float, rand: Callable[[], float] = random.random
) -> float:
    """Capped exponential backoff with jitter: in [cap/2, cap], cap = initial * 2**attempt."""
    return capped(attempt, initial, maximum) * (0.5 + rand() / 2)


class Backoff:
    """Exponential backoff with jitter, capped at ``maximum`` seconds."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.rand = rand
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt (grows until the cap)."""
        base = capped(self.attempt, self.initial, self.maximum, self.factor)
        self.attempt += 1
        return base * (1 - self.jitter * self.rand())

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self.attempt = 0
