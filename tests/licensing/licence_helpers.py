"""Constants and a settable clock shared by the licensing tests."""

from __future__ import annotations

from edged.licensing.licence import parse_time
from tools.licensing.demo import TEST_KEY  # the TEST key's private half, defined once

__all__ = ["DAY", "T0", "TEST_KEY", "Clock"]

T0 = parse_time("2026-11-23T12:00:00Z")
DAY = 86400.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now
