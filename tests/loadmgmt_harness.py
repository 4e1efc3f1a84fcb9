"""A closed loop for load management: real daemon, simulated grid meters and chargers.

The grid meter (and the sub-circuit's meter) are Modbus simulators served in this process;
their per-phase currents are, at every moment, a base-load profile plus what the simulated
chargers really draw (``SimCharger.drawn_current()``). The chargers are OCPP simulators
(1.6J and 2.0.1) in this process that connect to a real ``edged run`` (a child process,
Professional licences, a real mosquitto). So what edged decides is what the meter sees a
charger response delay later, as on site.

Used by ``tests/test_loadmgmt_e2e.py`` and ``bench/loadmgmt.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drivers.modbus import profile as modbus_profiles
from drivers.modbus.simulator import Meter, Simulator
from drivers.ocpp.simulator import Fleet, SimCharger, SimConfig
from tests.daemon import Proc, start_daemon, write_config

PHASES = (1, 2, 3)


@dataclass(frozen=True)
class ChargerSpec:
    """One simulated charger and where it is installed."""

    id: str
    circuit: str
    version: str = "1.6"
    phases: int = 3
    phase: int = 1
    max_current: float = 16.0
    """The charger's maximum (config) and the car's (simulator)."""
    car_max: float | None = None
    """A car that takes less than the charger could give (None: the charger's maximum)."""

    @property
    def takes(self) -> float:
        """The most the car on this charger draws."""
        return self.max_current if self.car_max is None else self.car_max


@dataclass(frozen=True)
class CircuitSpec:
    """A circuit with a meter of its own."""

    name: str
    limit: float
    parent: str | None
    meter_unit: int


MAIN = CircuitSpec("main", 63.0, None, 1)
GARAGE = CircuitSpec("garage", 32.0, "main", 2)

TEN = (
    ChargerSpec("cp01", "main", "1.6", 3, 1, 32),
    ChargerSpec("cp02", "main", "2.0.1", 3, 1, 16),
    ChargerSpec("cp03", "main", "1.6", 1, 1, 32),
    ChargerSpec("cp04", "main", "2.0.1", 1, 2, 16),
    ChargerSpec("cp05", "main", "1.6", 1, 3, 32),
    ChargerSpec("cp06", "main", "2.0.1", 3, 1, 32, car_max=10),
    ChargerSpec("cp07", "garage", "1.6", 3, 1, 16),
    ChargerSpec("cp08", "garage", "2.0.1", 3, 1, 32, car_max=12),
    ChargerSpec("cp09", "garage", "2.0.1", 1, 1, 16),
    ChargerSpec("cp10", "garage", "1.6", 1, 2, 32),
)
"""Ten chargers, mixed 1- and 3-phase, both OCPP versions, on a 63 A main and a 32 A garage;
two cars take less than their charger could give."""


@dataclass
class Settings:
    """The knobs a test or the bench turns."""

    safe_current: float = 6.0
    min_current: float = 6.0
    stale_after: float = 3.0
    lease: float = 20.0
    min_interval: float = 5.0
    dead_band: float = 1.0
    raise_delay: float = 3.0
    margin: float = 1.0
    profile_delay: float = 2.0
    meter_interval: float = 1.0
    """Seconds between two meter values from a charger."""
    poll_interval: float = 0.5
    """How often edged reads the grid meters."""


@dataclass
class Harness:
    """The meters, the chargers and the daemon of one closed loop."""

    tmp: Path
    mqtt_port: int
    chargers: tuple[ChargerSpec, ...] = TEN
    circuits: tuple[CircuitSpec, ...] = (MAIN, GARAGE)
    settings: Settings = field(default_factory=Settings)
    base: dict[str, list[float]] = field(default_factory=dict)
    """Base load per circuit and phase (A), not counting the garage in main: set at will."""
    sims: dict[str, SimCharger] = field(default_factory=dict)
    daemon: Proc | None = None
    meters: dict[str, Meter] = field(default_factory=dict)
    modbus: Simulator | None = None
    modbus_port: int = 0
    ocpp_port: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    fleet: Fleet | None = None
    observers: list[Callable[[float], None]] = field(default_factory=list)

    # -- what the meters see -------------------------------------------------------------

    def below(self, circuit: str) -> list[str]:
        """The circuit and every circuit under it."""
        names = [circuit]
        for c in self.circuits:
            if c.parent == circuit:
                names.extend(self.below(c.name))
        return names

    def total(self, circuit: str) -> tuple[float, float, float]:
        """What flows through a circuit now, per phase: base loads plus charger draws."""
        amps = [0.0, 0.0, 0.0]
        inside = self.below(circuit)
        for name in inside:
            for i, a in enumerate(self.base.get(name, [0.0, 0.0, 0.0])):
                amps[i] += a
        for spec in self.chargers:
            sim = self.sims.get(spec.id)
            if spec.circuit in inside and sim is not None:
                for i, a in enumerate(sim.drawn_current()):
                    amps[i] += a
        return (amps[0], amps[1], amps[2])

    def _update_meters(self) -> None:
        for c in self.circuits:
            meter = self.meters.get(c.name)
            if meter is None:
                continue
            l1, l2, l3 = self.total(c.name)
            meter.fixed.update(
                current_l1=l1,
                current_l2=l2,
                current_l3=l3,
                power_active=230.0 * (l1 + l2 + l3),
            )

    async def _follow(self) -> None:
        """Keep the meters equal to base load + real charger draw; call the observers."""
        while True:
            self._update_meters()
            now = time.monotonic()
            for observe in self.observers:
                observe(now)
            await asyncio.sleep(0.1)

    # -- lifecycle ------------------------------------------------------------------------

    def config(self) -> str:
        """The daemon's configuration body (below write_config's head)."""
        s = self.settings
        lines = [
            "[features]",
            "load_management = true",
            "",
            "[load_management]",
            f"min_current = {s.min_current}",
            f"safe_current = {s.safe_current}",
            f"stale_after = {s.stale_after}",
            f"lease = {s.lease}",
            f"min_interval = {s.min_interval}",
            f"dead_band = {s.dead_band}",
            f"raise_delay = {s.raise_delay}",
            "",
            "[connections.panel]",
            'driver = "modbus"',
            'transport = "tcp"',
            'host = "127.0.0.1"',
            f"port = {self.modbus_port}",
            "",
            "[connections.chargers]",
            'driver = "ocpp"',
            'host = "127.0.0.1"',
            f"port = {self.ocpp_port}",
            "",
        ]
        for c in self.circuits:
            lines += [
                "[[devices]]",
                f'id = "meter-{c.name}"',
                'connection = "panel"',
                f"address = {c.meter_unit}",
                'profile = "eastron_sdm630"',
                f"poll_interval = {s.poll_interval}",
                'cloud_licence = "professional"',
                "",
            ]
        for ch in self.chargers:
            lines += [
                "[[devices]]",
                f'id = "{ch.id}"',
                'connection = "chargers"',
                'medium = "ev_charger"',
                'cloud_licence = "professional"',
                f'ocpp_version = "{ch.version}"',
                "",
            ]
        for c in self.circuits:
            lines += [
                "[[circuits]]",
                f'name = "{c.name}"',
                f"max_current = {c.limit}",
                f'meter = "meter-{c.name}"',
                f"margin = {s.margin}",
            ]
            if c.parent:
                lines.append(f'parent = "{c.parent}"')
            lines.append("chargers = [")
            for ch in self.chargers:
                if ch.circuit != c.name:
                    continue
                phase = f', phase = "L{ch.phase}"' if ch.phases == 1 else ""
                lines.append(
                    f'  {{ device = "{ch.id}", phases = {ch.phases}{phase}, '
                    f"max_current = {ch.max_current} }},"
                )
            lines += ["]", ""]
        return "\n".join(lines)

    async def start_meters(self) -> None:
        """Serve the circuit meters (again, on the same port after ``stop_meters``)."""
        path = modbus_profiles.resolve("eastron_sdm630", Path.cwd())
        assert path is not None
        prof = modbus_profiles.load(path)
        if not self.meters:
            self.meters = {c.name: Meter(prof, unit=c.meter_unit) for c in self.circuits}
            self._update_meters()
        self.modbus = Simulator()
        self.modbus_port = await self.modbus.add_tcp(list(self.meters.values()), self.modbus_port)

    async def stop_meters(self) -> None:
        """The grid meters go away (connections dropped, port closed)."""
        if self.modbus is not None:
            await self.modbus.stop()
            self.modbus = None

    async def start(self) -> None:
        """Meters, daemon, chargers; returns when every charger has booted."""
        from tests.conftest import free_port

        await self.start_meters()
        self.ocpp_port = free_port()
        self.start_daemon(first=True)
        configs = [
            SimConfig(
                url=f"ws://127.0.0.1:{self.ocpp_port}",
                charge_point_id=ch.id,
                version=ch.version,
                interval=self.settings.meter_interval,
                max_power_w=100_000.0,
                auto_start=False,
                phases=ch.phases,
                phase=ch.phase,
                max_current=ch.takes,
                profile_delay=self.settings.profile_delay,
            )
            for ch in self.chargers
        ]
        self.fleet = Fleet(configs, say=lambda text: None)
        for sim in self.fleet.chargers:
            self.sims[sim.config.charge_point_id] = sim
        self._tasks.append(asyncio.create_task(self.fleet.run()))
        self._tasks.append(asyncio.create_task(self._follow()))
        await self.wait(lambda: all(s.booted.is_set() for s in self.sims.values()), 60)

    def start_daemon(self, *, first: bool = False) -> None:
        """``edged run`` on the harness's configuration (written on the first start)."""
        cfg = self.tmp / "edged.toml"
        if first:
            cfg = write_config(
                self.tmp,
                self.config(),
                mqtt_port=self.mqtt_port,
                capacity=1 + len(self.circuits) + len(self.chargers),
            )
        self.daemon = start_daemon(cfg, self.tmp / "edged.log")
        self.daemon.wait_for("edged started", 30)

    def kill_daemon(self) -> None:
        """``kill -9`` the daemon: nothing renews the leases any more."""
        assert self.daemon is not None
        self.daemon.proc.kill()
        self.daemon.proc.wait(10)

    async def stop(self) -> None:
        """Stop everything this harness started."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self.daemon is not None:
            await asyncio.to_thread(self.daemon.stop)
        await self.stop_meters()

    # -- asking ---------------------------------------------------------------------------

    async def wait(self, predicate: Callable[[], bool], timeout: float = 30.0) -> float:
        """Poll until the predicate holds; return how long it took (fail after timeout)."""
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                log = self.daemon.text()[-4000:] if self.daemon is not None else ""
                raise AssertionError(f"timed out after {timeout} s; daemon log tail:\n{log}")
            await asyncio.sleep(0.1)
        return time.monotonic() - start

    def limits(self) -> dict[str, float | None]:
        """Each charger's composite limit now (A per phase; None: no profile)."""
        return {cid: sim.composite_limit() for cid, sim in self.sims.items()}

    def profile_requests(self) -> int:
        """SetChargingProfile requests the chargers received so far."""
        return sum(
            1
            for sim in self.sims.values()
            for action, _ in sim.received
            if action == "SetChargingProfile"
        )

    def only_default_left(self, cid: str) -> bool:
        """True when the charger's limit comes from its stack level 0 profile alone."""
        sim = self.sims[cid]
        now = time.monotonic()
        valid = [p for p in sim.profiles.values() if p.valid(now)]
        return bool(valid) and all(p.stack_level == 0 for p in valid)
