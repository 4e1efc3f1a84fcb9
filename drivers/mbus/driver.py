"""The M-Bus driver: one master per bus, polling its meters in turn at their intervals.

A bus carries one exchange at a time, so meters are polled one after the other
in the order their polls fall due. A dead meter costs the others only its own
deadline: after it has been marked offline it gets a single attempt per poll
instead of the retries a live meter gets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drivers.mbus.address import Address, parse_address
from drivers.mbus.mapping import Profile, load_profile, map_telegrams
from drivers.mbus.master import Master
from drivers.mbus.transport import BAUDRATES, PARITIES, LineSettings, Link, LinkSpec
from edged.api import CliCommand, DriverContext, Options, SimulatorCommand
from edged.errors import ConnectionLost, DecodeError, DeviceTimeout
from edged.model import ConnectionSpec, DeviceSpec, DeviceState, Sample
from edged.timing import Backoff, next_tick

log = logging.getLogger(__name__)

PROFILE_DIR = Path(__file__).parent / "profiles"
RECONNECT_MIN = 1.0
RECONNECT_MAX = 60.0


@dataclass(frozen=True)
class BusConfig:
    """Validated connection settings of one M-Bus."""

    link: LinkSpec
    timeout: float | None = None
    retries: int = 2
    frame_gap: float | None = None


@dataclass(frozen=True)
class MeterConfig:
    """Validated settings of one meter on the bus."""

    device_id: str
    address: Address
    poll_interval: float
    profile: Profile | None = None


def parse_connection(conn: ConnectionSpec) -> BusConfig:
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
    return BusConfig(link, timeout, retries, frame_gap)


def resolve_profile(name: str, dev: DeviceSpec) -> Path:
    """A profile path: as given, relative to the config file, or a shipped profile name."""
    candidates = []
    if dev.source.file and not Path(name).is_absolute():
        candidates.append(Path(dev.source.file).parent / name)
    candidates += [Path(name), PROFILE_DIR / name, PROFILE_DIR / f"{name}.toml"]
    for path in candidates:
        if path.is_file():
            return path
    raise dev.source.error("profile", f"no profile file {name!r} (looked in {PROFILE_DIR})")


def parse_device(dev: DeviceSpec) -> MeterConfig:
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
    profile = load_profile(resolve_profile(dev.profile, dev)) if dev.profile else None
    return MeterConfig(dev.id, address, dev.poll_interval, profile)


@dataclass
class _Meter:
    config: MeterConfig
    due: float
    state: DeviceState | None = None
    failures: int = 0
    last_error: str | None = field(default=None)


@dataclass(frozen=True)
class MBusSettings:
    """A validated bus and its meters, as ``configure`` returns them."""

    bus: BusConfig
    meters: tuple[MeterConfig, ...]

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

    async def run(self, settings: MBusSettings, ctx: DriverContext) -> None:
        """Poll the bus until cancelled, reopening the link with backoff when it fails."""
        bus = settings.bus
        loop = asyncio.get_running_loop()
        meters = [_Meter(c, loop.time()) for c in settings.meters]
        backoff = Backoff(initial=RECONNECT_MIN, maximum=RECONNECT_MAX)
        while True:
            try:
                link = await bus.link.open()
            except ConnectionLost as exc:
                log.warning("mbus open failed bus=%s error=%s", bus.link.endpoint, exc)
                for m in meters:
                    self._set_state(ctx, m, DeviceState.OFFLINE, str(exc))
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            try:
                await self._poll_forever(link, bus, meters, ctx)
            except ConnectionLost as exc:
                log.warning("mbus link lost bus=%s error=%s", bus.link.endpoint, exc)
                for m in meters:
                    self._set_state(ctx, m, DeviceState.OFFLINE, str(exc))
            finally:
                await link.close()
            await asyncio.sleep(backoff.next())

    async def _poll_forever(
        self, link: Link, bus: BusConfig, meters: list[_Meter], ctx: DriverContext
    ) -> None:
        loop = asyncio.get_running_loop()
        master = Master(link, retries=bus.retries, timeout=bus.timeout, frame_gap=bus.frame_gap)
        if not meters:
            await asyncio.Event().wait()
        while True:
            meter = min(meters, key=lambda m: m.due)
            wait = meter.due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._poll(master, meter, ctx)
            # Fell behind (slow bus or dead meters)? Missed polls are skipped, the phase kept.
            meter.due = next_tick(meter.due, meter.config.poll_interval, loop.time())

    async def _poll(self, master: Master, meter: _Meter, ctx: DriverContext) -> None:
        loop = asyncio.get_running_loop()
        cfg = meter.config
        rejected_before = master.rejected
        started = loop.time()
        # An offline meter gets one attempt, so it cannot hold up the bus for long.
        retries = 0 if meter.state is DeviceState.OFFLINE else None
        try:
            reading = await master.read(cfg.address, retries)
        except DeviceTimeout as exc:
            self._failed(ctx, meter, f"no answer: {exc}")
        except DecodeError as exc:
            self._failed(ctx, meter, f"rejected answer: {exc}")
        else:
            values = map_telegrams(reading.telegrams, cfg.profile)
            ctx.observe("poll", loop.time() - started, cfg.device_id)
            ctx.count("poll", cfg.device_id)
            meter.failures = 0
            self._set_state(ctx, meter, DeviceState.ONLINE, None)
            if values:
                ctx.sample(Sample(cfg.device_id, self._wall(), values))
            else:
                log.warning("mbus read gave no mapped values device=%s", cfg.device_id)
        finally:
            rejected = master.rejected - rejected_before
            if rejected:
                ctx.count("frame_rejected", cfg.device_id, rejected)

    def _failed(self, ctx: DriverContext, meter: _Meter, error: str) -> None:
        meter.failures += 1
        ctx.count("poll_error", meter.config.device_id)
        log.warning(
            "mbus poll failed device=%s address=%s error=%s",
            meter.config.device_id,
            meter.config.address,
            error,
        )
        self._set_state(ctx, meter, DeviceState.OFFLINE, error)

    @staticmethod
    def _set_state(
        ctx: DriverContext, meter: _Meter, state: DeviceState, error: str | None
    ) -> None:
        if meter.state is not state:
            meter.state = state
            ctx.state(meter.config.device_id, state, error)
