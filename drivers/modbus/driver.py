"""The Modbus driver: polls the meters behind one TCP endpoint or RTU bus.

One client per connection (TCP: ``drivers.modbus.tcp``; RTU: pymodbus), run on the
shared polled-connection runner (``edged.polling``): the devices behind it are polled in
turn, never concurrently, each on its own drift-free tick grid. A device that stops
answering goes offline and is retried with backoff; a dropped connection (or, on TCP,
one on which no device answers) is reopened with capped, jittered backoff; a point the
device refuses is disabled and the rest keeps working (``drivers.modbus.poller``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from drivers.modbus import settings as cfg
from drivers.modbus.poller import DevicePoller
from drivers.modbus.settings import ConnectionSettings, DeviceSettings, ModbusSettings
from drivers.modbus.tcp import TcpLink
from edged.api import (
    CliCommand,
    Command,
    DeviceInfo,
    DriverContext,
    SimulatorCommand,
    WriteRegister,
)
from edged.errors import ConnectionLost, DriverError
from edged.model import ConnectionSpec, DeviceSpec
from edged.polling import PolledConnection
from edged.reconnect import Reconnect

if TYPE_CHECKING:  # pymodbus (RTU) is loaded only when a serial connection opens
    from drivers.modbus.link import Link

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
        # The link the running connection polls over: writes go through it, never a second
        # connection to the same device (one driver instance serves one connection).
        self._link: Link | TcpLink | None = None
        self._devices: dict[str, DeviceSettings] = {}

    def configure(
        self, connection: ConnectionSpec, devices: Sequence[DeviceSpec]
    ) -> ModbusSettings:
        """Validate connection keys, device keys and that every profile exists and is valid."""
        return cfg.configure(connection, devices)

    async def run(self, settings: ModbusSettings, ctx: DriverContext) -> None:
        """Poll the devices of this connection until cancelled."""
        await self.runner(settings, ctx).run()

    def runner(
        self, settings: ModbusSettings, ctx: DriverContext
    ) -> PolledConnection[Link | TcpLink]:
        """The polled-connection runner of one connection (not started)."""
        conn = settings.connection
        self._devices = {d.id: d for d in settings.devices}
        links = _Links(self, conn, ctx)
        return PolledConnection(
            settings.name,
            conn.endpoint,
            links.open,
            links.close,
            [DevicePoller(d, settings.name) for d in settings.devices],
            ctx,
            reconnect=Reconnect(RECONNECT_MIN, RECONNECT_MAX),
            # A TCP peer that answers nobody is treated as a dead link and reopened.
            reopen_when_all_silent=conn.transport == "tcp",
            wall=self._wall,
            logger=log,
        )

    def describe(self, settings: ModbusSettings, device_id: str) -> DeviceInfo | None:
        """The quantities of the device's profile and the registers and coils it may write."""
        for d in settings.devices:
            if d.id == device_id:
                return DeviceInfo(
                    quantities=frozenset(p.quantity for p in d.profile.points),
                    commands=frozenset({WriteRegister}),
                    writable_registers=d.writable_registers,
                    writable_coils=d.writable_coils,
                )
        return None

    async def command(self, command: Command) -> dict[str, object]:
        """Write a declared holding register or coil over the link that polls the device."""
        if not isinstance(command, WriteRegister):
            raise DriverError(f"{type(command).__name__} is not a command a Modbus device takes")
        dev = self._devices.get(command.device_id)
        if dev is None:
            raise DriverError(f"{command.device_id!r} is not a Modbus device of this connection")
        _check_writable(dev, command)
        link = self._link
        if link is None or not link.connected:
            raise ConnectionLost(f"device {dev.id!r}: the connection is not open")
        await link.write(dev.unit, command.address, command.values, command.coil)
        what = "coil" if command.coil is not None else "register"
        value: object = command.coil if command.coil is not None else list(command.values)
        log.info(
            "modbus write device=%s unit=%d %s=%d value=%s",
            dev.id,
            dev.unit,
            what,
            command.address,
            value,
        )
        return {"device": dev.id, what: command.address, "value": value}

    def cli(self) -> CliCommand:
        """``edged modbus read|scan``: one-shot reads and a unit-id scan."""
        from drivers.modbus import cli

        return CliCommand("read a Modbus meter or scan a bus for unit ids", cli.main)

    def simulator(self) -> SimulatorCommand:
        """``edged sim modbus``: simulated meters over Modbus TCP or RTU."""
        from drivers.modbus import simulator

        return SimulatorCommand("simulated Modbus TCP/RTU meters", simulator.main)


class _Links:
    """Opens and closes the link of one runner; the driver writes over the open one.

    A small object rather than closures: a gateway runs a thousand of these.
    """

    __slots__ = ("_conn", "_ctx", "_driver")

    def __init__(self, driver: ModbusDriver, conn: ConnectionSettings, ctx: DriverContext):
        self._driver = driver
        self._conn = conn
        self._ctx = ctx

    async def open(self) -> Link | TcpLink:
        link = await _open(self._conn, self._rejected)
        self._driver._link = link
        return link

    async def close(self, link: Link | TcpLink) -> None:
        if self._driver._link is link:
            self._driver._link = None
        await _close(link)

    def _rejected(self) -> None:
        self._ctx.count("frame_rejected")


def _check_writable(dev: DeviceSettings, command: WriteRegister) -> None:
    """Only registers and coils the device's configuration declares writable are written."""
    if command.coil is not None:
        if command.values:
            raise DriverError("a coil write takes a state, not register values")
        if command.address not in dev.writable_coils:
            raise DriverError(
                f"coil {command.address} of device {dev.id!r} is not in its writable_coils"
            )
        return
    if not 1 <= len(command.values) <= 123:
        raise DriverError("a register write takes 1-123 values")
    if any(not 0 <= v <= 0xFFFF for v in command.values):
        raise DriverError("register values are 16-bit words (0-65535)")
    span = range(command.address, command.address + len(command.values))
    missing = [r for r in span if r not in dev.writable_registers]
    if missing:
        raise DriverError(
            f"register {missing[0]} of device {dev.id!r} is not in its writable_registers"
        )


async def _open(settings: ConnectionSettings, on_stray: Callable[[], None]) -> Link | TcpLink:
    # TCP on the lean client (the fleet's hot path); serial lines on pymodbus.
    link: Link | TcpLink
    if settings.transport == "tcp":
        link = TcpLink(settings, on_stray)
    else:
        from drivers.modbus.link import Link

        link = Link(settings)
    try:
        await link.open()
    except BaseException:
        link.close()
        raise
    return link


async def _close(link: Link | TcpLink) -> None:
    link.close()
