"""The Modbus driver: polls the meters behind one TCP endpoint or RTU bus.

One pymodbus client per connection; the devices behind it are polled in turn, never
concurrently, each on its own drift-free tick grid. A device that stops answering goes
offline and is retried with backoff; a dropped connection is reopened with capped,
jittered backoff; a point the device refuses is disabled and the rest keeps working.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Sequence

from drivers.modbus import settings as cfg
from drivers.modbus.link import Link
from drivers.modbus.poller import DevicePoller
from drivers.modbus.settings import ConnectionSettings, ModbusSettings
from edged.api import DriverContext, SimulatorCommand
from edged.errors import ConnectionLost, DecodeError, TransientError
from edged.model import ConnectionSpec, DeviceSpec, DeviceState, Sample
from edged.timing import Backoff, next_tick, phase_of

log = logging.getLogger(__name__)


class ModbusDriver:
    """Modbus TCP / RTU polling driver."""

    name = "modbus"
    polled = True

    def configure(
        self, connection: ConnectionSpec, devices: Sequence[DeviceSpec]
    ) -> ModbusSettings:
        """Validate connection keys, device keys and that every profile exists and is valid."""
        return cfg.configure(connection, devices)

    async def run(self, settings: ModbusSettings, ctx: DriverContext) -> None:
        """Poll the devices of this connection until cancelled."""
        pollers = [DevicePoller(d) for d in settings.devices]
        runner = ConnectionRunner(settings.name, settings.connection, pollers, ctx)
        await runner.run()

    def simulator(self) -> SimulatorCommand:
        """``edged sim modbus``: simulated meters over Modbus TCP or RTU."""
        from drivers.modbus import simulator

        return SimulatorCommand("simulated Modbus TCP/RTU meters", simulator.main)


class ConnectionRunner:
    """The poll loop of one connection."""

    def __init__(
        self,
        name: str,
        settings: ConnectionSettings,
        pollers: Sequence[DevicePoller],
        ctx: DriverContext,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.settings = settings
        self.pollers = list(pollers)
        self.ctx = ctx
        self.wall = wall
        self.states: dict[str, DeviceState] = {}
        self.backoff = Backoff()
        self.device_backoff = {p.device.id: Backoff(maximum=60.0) for p in self.pollers}
        self.silent: set[str] = set()

    async def run(self) -> None:
        """Connect, poll until the link breaks, back off, reconnect; until cancelled."""
        if not self.pollers:
            await asyncio.Event().wait()
        while True:
            link = Link(self.settings)
            try:
                await link.open()
                log.info("connected bus=%s endpoint=%s", self.name, self.settings.endpoint)
                await self._poll_until_broken(link)
            except ConnectionLost as exc:
                self._all_offline(str(exc))
            finally:
                link.close()
            delay = self.backoff.next()
            log.info("reconnecting bus=%s in=%.2fs", self.name, delay)
            await asyncio.sleep(delay)

    async def _poll_until_broken(self, link: Link) -> None:
        now = time.monotonic()
        heap: list[tuple[float, int]] = []
        for i, p in enumerate(self.pollers):
            interval = p.device.poll_interval
            heapq.heappush(heap, (next_tick(phase_of(p.device.id, interval), interval, now), i))
        self.silent.clear()
        while heap:
            due, i = heapq.heappop(heap)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            poller = self.pollers[i]
            ok = await self._poll(poller, link)
            if not poller.active:
                continue
            interval = poller.device.poll_interval
            now = time.monotonic()
            nxt = next_tick(phase_of(poller.device.id, interval), interval, now)
            if not ok:
                # A device that does not answer is retried with backoff, not every tick.
                pause = self.device_backoff[poller.device.id].next()
                nxt = next_tick(phase_of(poller.device.id, interval), interval, now + pause)
            heapq.heappush(heap, (nxt, i))
            if self.settings.transport == "tcp" and self._all_silent():
                # A TCP peer that answers nobody is treated as a dead link and reopened.
                raise ConnectionLost(f"no device answers on {self.settings.endpoint}")
        await asyncio.Event().wait()

    async def _poll(self, poller: DevicePoller, link: Link) -> bool:
        dev = poller.device
        t0 = time.monotonic()
        ts = self.wall()
        try:
            values = await poller.poll(link.read)
        except ConnectionLost:
            self.ctx.count("poll_error", dev.id)
            raise
        except (TransientError, DecodeError) as exc:
            self.ctx.count("poll_error", dev.id)
            self.silent.add(dev.id)
            self._set_state(dev.id, DeviceState.OFFLINE, str(exc))
            return False
        elapsed = time.monotonic() - t0
        self.silent.discard(dev.id)
        self.device_backoff[dev.id].reset()
        self.backoff.reset()
        self.ctx.count("poll", dev.id)
        self.ctx.observe("poll", elapsed, dev.id)
        if not poller.active:
            log.error(
                "all points disabled device=%s bus=%s; it is no longer polled", dev.id, self.name
            )
            self._set_state(dev.id, DeviceState.OFFLINE, "every point was refused")
            return True
        self._set_state(dev.id, DeviceState.ONLINE, None)
        if values:
            self.ctx.sample(Sample(dev.id, ts, values))
        return True

    def _all_silent(self) -> bool:
        active = [p.device.id for p in self.pollers if p.active]
        return bool(active) and all(d in self.silent for d in active)

    def _set_state(self, device_id: str, state: DeviceState, error: str | None) -> None:
        if self.states.get(device_id) == state:
            return
        self.states[device_id] = state
        if state == DeviceState.OFFLINE:
            log.warning("device offline device=%s bus=%s error=%s", device_id, self.name, error)
        else:
            log.info("device %s device=%s bus=%s", state.value, device_id, self.name)
        self.ctx.state(device_id, state, error)

    def _all_offline(self, error: str) -> None:
        for p in self.pollers:
            self._set_state(p.device.id, DeviceState.OFFLINE, error)
