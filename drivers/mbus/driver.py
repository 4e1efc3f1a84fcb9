"""The M-Bus driver: one master per bus, polling its meters in turn at their intervals.

A bus carries one exchange at a time, so meters are polled one after the other in the
order their polls fall due, on the shared polled-connection runner (``edged.polling``).
A dead meter costs the others only its own deadline: after it has been marked offline
it gets a single attempt per poll instead of the retries a live meter gets, and it is
retried with backoff rather than on every tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from drivers.mbus.address import PRIMARY_MAX, Address, parse_address
from drivers.mbus.mapping import PROFILE_DIR, PROTOCOL, Profile, load_profile, map_telegrams
from drivers.mbus.master import Master, header_address
from drivers.mbus.transport import BAUDRATES, PARITIES, LineSettings, LinkSpec
from edged import profiles
from edged.api import (
    CliCommand,
    DriverContext,
    Options,
    ScanEvent,
    ScanFound,
    ScanRequest,
    SimulatorCommand,
)
from edged.errors import DecodeError, DeviceTimeout, EdgedError
from edged.model import ConnectionSpec, DeviceSpec
from edged.polling import PolledConnection
from edged.reconnect import Reconnect

log = logging.getLogger(__name__)

RECONNECT_MIN = 1.0
RECONNECT_MAX = 60.0
FAILURE_REMINDER = 300.0
"""Seconds between two warnings about a meter that keeps failing."""


@dataclass(frozen=True)
class ConnectionSettings:
    """Validated connection settings of one M-Bus."""

    link: LinkSpec
    timeout: float | None = None
    retries: int = 2
    frame_gap: float | None = None


@dataclass(frozen=True)
class DeviceSettings:
    """Validated settings of one meter on the bus."""

    device_id: str
    address: Address
    poll_interval: float
    profile: Profile | None = None


def parse_connection(conn: ConnectionSpec) -> ConnectionSettings:
    """Validate a ``[connections.NAME]`` table with ``driver = "mbus"``."""
    opts = Options.of(conn)
    kind = opts.choice("transport", ("serial", "tcp"), "serial")
    baudrate = opts.choice("baudrate", BAUDRATES, 2400)
    parity = opts.choice("parity", PARITIES, "E")
    settings = LineSettings(baudrate, parity)
    if kind == "serial":
        device = opts.str("device")
        if not device:
            raise opts.error("device", "must name a serial device, e.g. /dev/ttyUSB0")
        link = LinkSpec("serial", settings, device=device)
    else:
        host = opts.str("host")
        port = opts.int("port", min=1, max=65535)
        link = LinkSpec("tcp", settings, host=host, port=port)
    timeout = opts.float("timeout", None, min=0.001, max=60.0)
    retries = opts.int("retries", 2, min=0, max=10)
    frame_gap = opts.float("frame_gap", None, min=0.0, max=10.0)
    opts.finish()
    return ConnectionSettings(link, timeout, retries, frame_gap)


def resolve_profile(dev: DeviceSpec) -> Path:
    """The device's profile file: a path (relative to its config file) or a profile name,
    looked up in the configured profile directory, then among the shipped profiles."""
    return profiles.device_profile(dev, PROTOCOL, PROFILE_DIR)


def parse_device(dev: DeviceSpec) -> DeviceSettings:
    """Validate one ``[[devices]]`` entry of an M-Bus connection."""
    opts = Options.of(dev)
    opts.finish()
    if dev.address is None:
        raise dev.source.error(
            "address", "required: a primary address 0..250 or a 16-hex-digit secondary address"
        )
    try:
        address = parse_address(dev.address)
    except ValueError as exc:
        raise dev.source.error("address", str(exc)) from exc
    profile = load_profile(resolve_profile(dev)) if dev.profile else None
    return DeviceSettings(dev.id, address, dev.poll_interval, profile)


@dataclass(frozen=True)
class MBusSettings:
    """A validated bus and its meters, as ``configure`` returns them."""

    bus: ConnectionSettings
    meters: tuple[DeviceSettings, ...]

    @property
    def endpoint(self) -> str:
        """``serial:///dev/ttyUSB0`` or ``tcp://host:port``."""
        return self.bus.link.endpoint


class MBusDriver:
    """Driver for wired M-Bus meters behind a serial level converter or a TCP converter."""

    name = "mbus"
    polled = True

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall

    def configure(self, connection: ConnectionSpec, devices: Sequence[DeviceSpec]) -> MBusSettings:
        """Validate the connection and every meter on it (profiles loaded)."""
        bus = parse_connection(connection)
        seen: dict[str, str] = {}
        meters = []
        for dev in devices:
            meter = parse_device(dev)
            key = str(meter.address)
            if key in seen:
                raise dev.source.error("address", f"already used by device {seen[key]!r}")
            seen[key] = dev.id
            meters.append(meter)
        return MBusSettings(bus, tuple(meters))

    def cli(self) -> CliCommand:
        """``edged mbus``: scan a bus, read and decode meters."""
        from drivers.mbus import cli

        return CliCommand("M-Bus tools: scan, read, decode", lambda argv, _daemon: cli.main(argv))

    def simulator(self) -> SimulatorCommand:
        """``edged sim mbus``: simulated M-Bus meters on a pseudo-terminal or TCP."""
        from drivers.mbus import simulator

        return SimulatorCommand("simulated M-Bus meters (pty or TCP)", simulator.main)

    async def scan(self, settings: MBusSettings, request: ScanRequest) -> AsyncIterator[ScanEvent]:
        """Primary scan of the bus (``edged.api.Scannable``): each meter as it answers."""
        if not 0 <= request.first <= request.last <= PRIMARY_MAX:
            raise ValueError(
                f"primary addresses are 0-{PRIMARY_MAX} (251-255 are reserved), "
                f"got {request.first}-{request.last}"
            )
        bus = settings.bus
        link = await bus.link.open()
        try:
            master = Master(link, retries=bus.retries, timeout=bus.timeout, frame_gap=bus.frame_gap)
            addresses = range(request.first, request.last + 1)
            for n, address in enumerate(addresses, 1):
                if await master.scan_primary(range(address, address + 1), retries=0):
                    yield ScanEvent(n, len(addresses), await _identify(master, address))
                else:
                    yield ScanEvent(n, len(addresses))
        finally:
            await link.close()

    async def run(self, settings: MBusSettings, ctx: DriverContext) -> None:
        """Poll the bus until cancelled, reopening the link with backoff when it fails."""
        await self.runner(settings, ctx).run()

    def runner(self, settings: MBusSettings, ctx: DriverContext) -> PolledConnection[Master]:
        """The polled-connection runner of one bus (not started)."""
        bus = settings.bus

        async def open_master() -> Master:
            link = await bus.link.open()
            return Master(link, retries=bus.retries, timeout=bus.timeout, frame_gap=bus.frame_gap)

        return PolledConnection(
            bus.link.endpoint,
            bus.link.endpoint,
            open_master,
            _close,
            [MeterPoller(m, ctx) for m in settings.meters],
            ctx,
            reconnect=Reconnect(RECONNECT_MIN, RECONNECT_MAX),
            wall=self._wall,
            logger=log,
        )


class MeterPoller:
    """One meter on the shared runner: a read of all its telegrams, mapped to quantities.

    Counts rejected frames per device; an offline meter gets a single attempt.
    """

    def __init__(
        self,
        config: DeviceSettings,
        ctx: DriverContext,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.device_id = config.device_id
        self.poll_interval = config.poll_interval
        self._clock = clock
        self._warned_at: float | None = None

    async def read(self, master: Master, offline: bool) -> dict[str, float]:
        """Read and map the meter once; DeviceTimeout / DecodeError say why not."""
        cfg = self.config
        rejected_before = master.rejected
        # An offline meter gets one attempt, so it cannot hold up the bus for long.
        retries = 0 if offline else None
        try:
            reading = await master.read(cfg.address, retries)
        except DeviceTimeout as exc:
            raise DeviceTimeout(self._failed(f"no answer: {exc}")) from exc
        except DecodeError as exc:
            raise DecodeError(self._failed(f"rejected answer: {exc}")) from exc
        finally:
            rejected = master.rejected - rejected_before
            if rejected:
                self.ctx.count("frame_rejected", cfg.device_id, rejected)
        self._warned_at = None  # it answered: the next failure is news again
        values = map_telegrams(reading.telegrams, cfg.profile)
        if not values:
            log.warning("mbus read gave no mapped values device=%s", cfg.device_id)
        return values

    def _failed(self, error: str) -> str:
        # One warning when a meter stops answering, then a reminder every few minutes: a
        # missing meter must not fill the journal with a line per poll.
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= FAILURE_REMINDER:
            still = "" if self._warned_at is None else " (still failing)"
            self._warned_at = now
            level = logging.WARNING
        else:
            still, level = " (still failing)", logging.DEBUG
        log.log(
            level,
            "mbus poll failed%s device=%s address=%s error=%s",
            still,
            self.config.device_id,
            self.config.address,
            error,
        )
        return error


async def _identify(master: Master, address: int) -> ScanFound:
    """What a meter that acknowledged its primary address says about itself."""
    try:
        reading = await master.read(address)
    except EdgedError as exc:
        return ScanFound(str(address), {"error": f"answered SND_NKE but not REQ_UD2: {exc}"})
    details: dict[str, str] = {}
    secondary = header_address(reading.frames[0])
    if secondary is not None:
        details["secondary"] = str(secondary)
    header = reading.telegrams[0].header if reading.telegrams else None
    if header is not None:
        details.update(
            id=f"{header.id:08d}",
            manufacturer=header.manufacturer,
            medium=header.medium_name,
            version=str(header.version),
        )
    return ScanFound(str(address), details)


async def _close(master: Master) -> None:
    await master.link.close()
