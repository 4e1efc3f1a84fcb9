"""Device state rules of the supervisor that need no processes."""

from __future__ import annotations

import asyncio

from drivers.modbus.driver import ModbusDriver
from drivers.ocpp.driver import OcppDriver
from edged.metrics import Metrics
from edged.model import DeviceSpec, DeviceState
from edged.supervisor import STALE_GRACE, DeviceStatus, Running, Supervisor


async def _daemon_with(driver: object, poll: float) -> tuple[Supervisor, DeviceStatus]:
    daemon = Supervisor(Metrics(), lambda sample: None)
    task = asyncio.create_task(asyncio.sleep(0))
    daemon.connections["bus"] = Running(None, task, driver)  # type: ignore[arg-type]
    spec = DeviceSpec(id="m", driver="x", connection="bus", poll_interval=poll)
    st = DeviceStatus(spec, DeviceState.ONLINE, last_sample=1000.0)
    await task
    return daemon, st


async def test_slow_polled_meter_is_not_stale_between_its_polls() -> None:
    daemon, st = await _daemon_with(ModbusDriver(), poll=60.0)
    # a per-second window without a sample is normal for a meter polled every minute
    assert not daemon.overdue(st, 1000.0 + 59.0)
    assert not daemon.overdue(st, 1000.0 + 60.0 * 1.5 + STALE_GRACE - 0.1)
    assert daemon.overdue(st, 1000.0 + 60.0 * 1.5 + STALE_GRACE + 0.1)


async def test_served_chargers_are_never_stale() -> None:
    daemon, st = await _daemon_with(OcppDriver(), poll=1.0)
    assert not daemon.overdue(st, 1000.0 + 3600.0)
