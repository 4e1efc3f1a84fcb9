"""The one in-test DriverContext: it records everything a driver reports."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable

from edged.model import DeviceState, Sample


class FakeContext:
    """A DriverContext that keeps samples (with their arrival times), states, counts and
    latencies, and lets a test wait until the driver has reported enough."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        # Event-loop time at which each device's samples arrived, in order.
        self.arrivals: defaultdict[str, list[float]] = defaultdict(list)
        self.states: list[tuple[str, DeviceState, str | None]] = []
        self.counts: Counter[tuple[str, str | None]] = Counter()
        self.observed: list[tuple[str, float, str | None]] = []

    # -- DriverContext ---------------------------------------------------------------------

    def sample(self, sample: Sample) -> None:
        self.samples.append(sample)
        self.arrivals[sample.device_id].append(_now())

    def state(self, device_id: str, state: DeviceState, error: str | None = None) -> None:
        self.states.append((device_id, state, error))

    def count(self, event: str, device_id: str | None = None, n: int = 1) -> None:
        self.counts[(event, device_id)] += n

    def observe(self, event: str, seconds: float, device_id: str | None = None) -> None:
        self.observed.append((event, seconds, device_id))

    # -- queries ---------------------------------------------------------------------------

    def samples_of(self, device_id: str) -> list[Sample]:
        """The samples of one device, in arrival order."""
        return [s for s in self.samples if s.device_id == device_id]

    def last_value(self, device_id: str, quantity: str) -> float | None:
        """The latest value of a quantity of one device, or None."""
        for s in reversed(self.samples):
            if s.device_id == device_id and quantity in s.values:
                return s.values[quantity]
        return None

    def last_state(self, device_id: str) -> DeviceState | None:
        """The latest state reported for one device, or None."""
        found = [s for d, s, _ in self.states if d == device_id]
        return found[-1] if found else None

    async def wait_for(self, predicate: Callable[[], bool], within: float | None = 10.0) -> None:
        """Return once ``predicate()`` holds, checking every 10 ms; fail after ``within``
        seconds (None: wait as long as it takes, e.g. under the caller's own timeout).

        Polling, not waking on each report, on purpose: a test that then cancels the driver
        does so at no particular point of its poll cycle."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while not predicate():
            if deadline is not None and loop.time() > deadline:
                raise AssertionError(
                    f"timed out after {within} s; samples={len(self.samples)} "
                    f"states={self.states[-5:]}"
                )
            await asyncio.sleep(0.01)


def _now() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:  # reported from outside the event loop
        return time.monotonic()
