"""An in-test DriverContext and a running OCPP central system on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.ocpp.driver import OcppDriver
from drivers.ocpp.simulator import SimCharger, SimConfig
from edged.model import ConnectionSpec, DeviceSpec, DeviceState, Sample


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Recorder:
    """A DriverContext that keeps everything the driver reports."""

    samples: list[Sample] = field(default_factory=list)
    states: list[tuple[str, DeviceState, str | None]] = field(default_factory=list)
    counts: Counter[tuple[str, str | None]] = field(default_factory=Counter)

    def sample(self, sample: Sample) -> None:
        self.samples.append(sample)

    def state(self, device_id: str, state: DeviceState, error: str | None = None) -> None:
        self.states.append((device_id, state, error))

    def count(self, event: str, device_id: str | None = None, n: int = 1) -> None:
        self.counts[(event, device_id)] += n

    def observe(self, event: str, seconds: float, device_id: str | None = None) -> None:
        pass

    def samples_of(self, device_id: str) -> list[Sample]:
        return [s for s in self.samples if s.device_id == device_id]

    def last_value(self, device_id: str, quantity: str) -> float | None:
        for s in reversed(self.samples):
            if s.device_id == device_id and quantity in s.values:
                return s.values[quantity]
        return None

    def last_state(self, device_id: str) -> DeviceState | None:
        found = [s for d, s, _ in self.states if d == device_id]
        return found[-1] if found else None


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll a condition on the event loop until it holds (fails the test on timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@dataclass
class Central:
    """A running OcppDriver and what it reported."""

    driver: OcppDriver
    ctx: Recorder
    port: int
    scheme: str = "ws"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def sim(self, cp: str, version: str = "1.6", **kw: Any) -> SimCharger:
        return SimCharger(SimConfig(url=self.url, charge_point_id=cp, version=version, **kw))


def charger(device_id: str, address: str | None = None, **settings: Any) -> DeviceSpec:
    """A charger device spec."""
    return DeviceSpec(
        id=device_id, driver="ocpp", connection="cs", address=address, settings=settings
    )


@contextlib.asynccontextmanager
async def central(
    devices: list[DeviceSpec], scheme: str = "ws", port: int | None = None, **settings: Any
) -> AsyncIterator[Central]:
    """Run an OcppDriver (on a free port unless given) until the block ends."""
    port = port or free_port()
    conn_settings: Mapping[str, Any] = {"host": "127.0.0.1", "port": port, **settings}
    conn = ConnectionSpec(name="cs", driver="ocpp", settings=conn_settings)
    driver = OcppDriver()
    settings = driver.configure(conn, devices)
    ctx = Recorder()
    task = asyncio.create_task(driver.run(settings, ctx))
    await wait_until(lambda: driver.bound_port is not None or task.done())
    if task.done():
        task.result()
    try:
        yield Central(driver, ctx, port, scheme)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running(sim: SimCharger) -> AsyncIterator[asyncio.Task[None]]:
    """Run a simulated charger in the background until the block ends."""
    task = asyncio.create_task(sim.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
