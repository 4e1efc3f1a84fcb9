"""The Modbus driver: polls the meters behind one TCP endpoint or RTU bus.

One pymodbus client per connection, run on the shared polled-connection runner
(``edged.polling``): the devices behind it are polled in turn, never concurrently, each
on its own drift-free tick grid. A device that stops answering goes offline and is
retried with backoff; a dropped connection (or, on TCP, one on which no device answers)
is reopened with capped, jittered backoff; a point the device refuses is disabled and
the rest keeps working (``drivers.modbus.poller``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from drivers.modbus import settings as cfg
from drivers.modbus.link import Link
from drivers.modbus.poller import DevicePoller
from drivers.modbus.settings import ConnectionSettings, ModbusSettings
from edged.api import CliCommand, DriverContext, SimulatorCommand
from edged.model import ConnectionSpec, DeviceSpec
from edged.polling import PolledConnection
from edged.reconnect import Reconnect

log = logging.getLogger(__name__)

RECONNECT_MIN = 0.5
"""First delay (s) before reopening a lost connection."""
RECONNECT_MAX = 30.0
"""Longest delay (s) between attempts to reopen a connection."""


class ModbusDriver:
    """Modbus TCP / RTU polling driver."""

    name = "modbus"
    polled = True

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall

    def configure(
        self, connection: ConnectionSpec, devices: Sequence[DeviceSpec]
    ) -> ModbusSettings:
        """Validate connection keys, device keys and that every profile exists and is valid."""
        return cfg.configure(connection, devices)

    async def run(self, settings: ModbusSettings, ctx: DriverContext) -> None:
        """Poll the devices of this connection until cancelled."""
        await self.runner(settings, ctx).run()

    def runner(self, settings: ModbusSettings, ctx: DriverContext) -> PolledConnection[Link]:
        """The polled-connection runner of one connection (not started)."""
        conn = settings.connection
        return PolledConnection(
            settings.name,
            conn.endpoint,
            lambda: _open(conn),
            _close,
            [DevicePoller(d, settings.name) for d in settings.devices],
            ctx,
            reconnect=Reconnect(RECONNECT_MIN, RECONNECT_MAX),
            # A TCP peer that answers nobody is treated as a dead link and reopened.
            reopen_when_all_silent=conn.transport == "tcp",
            wall=self._wall,
            logger=log,
        )

    def cli(self) -> CliCommand:
        """``edged modbus read|scan``: one-shot reads and a unit-id scan."""
        from drivers.modbus import cli

        return CliCommand("read a Modbus meter or scan a bus for unit ids", cli.main)

    def simulator(self) -> SimulatorCommand:
        """``edged sim modbus``: simulated meters over Modbus TCP or RTU."""
        from drivers.modbus import simulator

        return SimulatorCommand("simulated Modbus TCP/RTU meters", simulator.main)


async def _open(settings: ConnectionSettings) -> Link:
    link = Link(settings)
    try:
        await link.open()
    except BaseException:
        link.close()
        raise
    return link


async def _close(link: Link) -> None:
    link.close()
