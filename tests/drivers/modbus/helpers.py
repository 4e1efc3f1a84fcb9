"""Test helpers: a DriverContext that records what a driver reports, and spec builders."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from edged.model import ConnectionSpec, DeviceSpec, DeviceState, Sample, Source


@dataclass
class RecordingContext:
    """Collects samples, state changes, counters and latencies."""

    samples: list[Sample] = field(default_factory=list)
    states: list[tuple[str, DeviceState, str | None]] = field(default_factory=list)
    counts: dict[tuple[str, str | None], int] = field(default_factory=dict)
    observed: list[tuple[str, float, str | None]] = field(default_factory=list)
    sample_times: dict[str, list[float]] = field(default_factory=dict)

    def sample(self, sample: Sample) -> None:
        self.samples.append(sample)
        self.sample_times.setdefault(sample.device_id, []).append(asyncio.get_running_loop().time())

    def state(self, device_id: str, state: DeviceState, error: str | None = None) -> None:
        self.states.append((device_id, state, error))

    def count(self, event: str, device_id: str | None = None, n: int = 1) -> None:
        self.counts[(event, device_id)] = self.counts.get((event, device_id), 0) + n

    def observe(self, event: str, seconds: float, device_id: str | None = None) -> None:
        self.observed.append((event, seconds, device_id))

    def of(self, device_id: str) -> list[Sample]:
        return [s for s in self.samples if s.device_id == device_id]

    def last_state(self, device_id: str) -> DeviceState | None:
        found = [s for d, s, _ in self.states if d == device_id]
        return found[-1] if found else None

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(
                    f"timed out; samples={len(self.samples)} states={self.states[-5:]}"
                )
            await asyncio.sleep(0.01)


def conn(name: str = "bus", file: str | None = None, **settings: Any) -> ConnectionSpec:
    """A Modbus ConnectionSpec with these settings."""
    return ConnectionSpec(
        name, "modbus", MappingProxyType(dict(settings)), Source(file, f"connections.{name}")
    )


def dev(
    id: str,
    profile: str,
    address: int | str | None = 1,
    poll_interval: float = 1.0,
    connection: str = "bus",
    file: str | None = None,
    index: int = 0,
    settings: Mapping[str, Any] | None = None,
) -> DeviceSpec:
    """A Modbus DeviceSpec."""
    return DeviceSpec(
        id=id,
        driver="modbus",
        connection=connection,
        address=address,
        profile=profile,
        poll_interval=poll_interval,
        settings=MappingProxyType(dict(settings or {})),
        source=Source(file, f"devices[{index}]"),
    )
