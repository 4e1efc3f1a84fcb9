"""A running OCPP central system on a free loopback port, recording into a FakeContext."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.ocpp.driver import OcppDriver
from drivers.ocpp.simulator import SimCharger, SimConfig
from edged.model import ConnectionSpec, DeviceSpec
from tests.conftest import free_port
from tests.fakes import FakeContext

__all__ = ["Central", "central", "charger", "running", "wait_until"]


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
    ctx: FakeContext
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
    ctx = FakeContext()
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
