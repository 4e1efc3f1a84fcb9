"""The polled-connection runner that every polling driver (Modbus, M-Bus) runs on.

A driver gives it how to open and close its link (a TCP client, a serial port, a bus
master) and one poller per device; the runner does the rest, the same way for every
protocol:

- it opens the link under the reconnect policy (``edged.reconnect``) and reopens it with
  capped, jittered backoff when it is lost; meanwhile every device is OFFLINE;
- it polls each device on its own drift-free tick grid with a stable phase
  (``edged.timing``), one exchange at a time on the link, in the order polls fall due;
- a device whose read fails goes OFFLINE with its error and is retried with its own
  backoff, not every tick, so it costs its neighbours at most its own deadline; the
  poller is told the device is offline and may try less hard (M-Bus: no retries);
- ``ctx.state`` is called only when a device's state changes (with one log line);
- it counts ``poll`` and ``poll_error`` per device and observes the ``poll`` latency;
- a sample's timestamp is the wall clock when the answer arrived, for every driver;
- optionally (Modbus TCP) a link on which no device answers is treated as dead and
  reopened, since a gateway that answers nobody usually has lost its serial side.

A poller's ``read`` raises ``ConnectionLost`` when the link failed, ``TransientError``
(``DeviceTimeout``, ...) or ``DecodeError`` when only its device failed, and ``Retired``
when the device has nothing left to read (it goes OFFLINE and is no longer polled).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from edged.api import DriverContext
from edged.errors import ConnectionLost, DecodeError, DriverError, TransientError
from edged.model import DeviceState, Sample
from edged.reconnect import Reconnect, ReconnectState
from edged.timing import next_tick, phase_of

log = logging.getLogger(__name__)

LINK_INITIAL = 0.5
"""Default first delay (s) before reopening a lost link."""
LINK_MAX = 30.0
"""Default longest delay (s) between attempts to reopen a link."""
DEVICE_INITIAL = 0.5
"""First extra pause (s) before an offline device is tried again."""
DEVICE_MAX = 60.0
"""Longest pause (s) between attempts on an offline device."""

L = TypeVar("L")
L_contra = TypeVar("L_contra", contravariant=True)


class Retired(DriverError):
    """Raised by ``Poller.read`` when the device has nothing left to read.

    The exchange still counts as a poll; the device goes OFFLINE with this message and
    is not polled again on this connection (e.g. the meter refused every point).
    """


class Poller(Protocol[L_contra]):
    """One device on a polled connection, as the runner sees it."""

    @property
    def device_id(self) -> str:
        """The device's id."""

    @property
    def poll_interval(self) -> float:
        """Seconds between polls."""

    async def read(self, link: L_contra, offline: bool) -> Mapping[str, float]:
        """Read the device once over ``link``: canonical quantity -> value.

        ``offline`` is True while the device is OFFLINE (its last read failed, or the link
        was lost); a poller may then try less hard so a dead device delays nobody.
        """


class _Slot:
    """The runner's view of one device: schedule, state and backoff."""

    __slots__ = ("backoff", "error", "interval", "phase", "poller", "retired", "silent", "state")

    def __init__(self, poller: Poller[Any], backoff: Reconnect) -> None:
        self.poller = poller
        self.interval = poller.poll_interval
        self.phase = phase_of(poller.device_id, self.interval)
        self.backoff = backoff
        self.state: DeviceState | None = None
        self.error: str | None = None
        self.silent = False
        self.retired = False


def _device_backoff() -> Reconnect:
    return Reconnect(DEVICE_INITIAL, DEVICE_MAX)


def _honour_cancel() -> None:
    """Raise CancelledError when this task was cancelled but the cancellation was lost.

    On Python 3.11 ``asyncio.wait_for`` (used inside pymodbus and the drivers' links)
    returns the inner result instead of raising when the answer and the cancellation
    arrive in the same loop step; the task would then poll on forever and a reload or
    shutdown waiting for it would hang.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class PolledConnection(Generic[L]):
    """Runs one polled connection until cancelled (see the module docstring).

    ``open()`` returns an open link or raises ``ConnectionLost``; ``close(link)`` closes
    it. ``reconnect`` is the link's policy (default 0.5 s … 30 s), ``device_backoff``
    makes each device's (default 0.5 s … 60 s). ``wall`` is the clock of sample
    timestamps, ``logger`` the driver's logger for the runner's lines.
    """

    __slots__ = (
        "_by_id",
        "_close",
        "_open",
        "_slots",
        "ctx",
        "endpoint",
        "log",
        "name",
        "reconnect",
        "reopen_when_all_silent",
        "wall",
    )

    def __init__(
        self,
        name: str,
        endpoint: str,
        open: Callable[[], Awaitable[L]],
        close: Callable[[L], Awaitable[None]],
        pollers: Sequence[Poller[L]],
        ctx: DriverContext,
        *,
        reconnect: Reconnect | None = None,
        device_backoff: Callable[[], Reconnect] = _device_backoff,
        reopen_when_all_silent: bool = False,
        wall: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self._open = open
        self._close = close
        self.ctx = ctx
        self.reconnect = reconnect if reconnect is not None else Reconnect(LINK_INITIAL, LINK_MAX)
        self.reopen_when_all_silent = reopen_when_all_silent
        self.wall = wall
        self.log = logger if logger is not None else log
        self._slots = [_Slot(p, device_backoff()) for p in pollers]
        self._by_id = {s.poller.device_id: s for s in self._slots}

    # -- what status may ask ------------------------------------------------------------------

    @property
    def link_state(self) -> ReconnectState:
        """The link's reconnect state."""
        return self.reconnect.state

    def state_of(self, device_id: str) -> DeviceState | None:
        """A device's last reported state (None before its first poll)."""
        slot = self._by_id.get(device_id)
        return slot.state if slot is not None else None

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Open, poll until the link breaks, back off, reopen; until cancelled."""
        if not self._slots:
            await asyncio.Event().wait()
        rc = self.reconnect
        while True:
            error = "link closed"
            rc.connecting()
            try:
                link = await self._open()
            except ConnectionLost as exc:
                _honour_cancel()
                error = str(exc)
                self.log.warning(
                    "open failed bus=%s endpoint=%s error=%s", self.name, self.endpoint, error
                )
                self._all_offline(error)
            else:
                try:
                    _honour_cancel()
                    rc.connected()
                    self.log.info("connected bus=%s endpoint=%s", self.name, self.endpoint)
                    await self._poll_until_broken(link)
                except ConnectionLost as exc:
                    error = str(exc)
                    self.log.warning(
                        "link lost bus=%s endpoint=%s error=%s", self.name, self.endpoint, error
                    )
                    self._all_offline(error)
                finally:
                    await self._close(link)
            _honour_cancel()
            delay = rc.failed(error)
            self.log.info("reconnecting bus=%s in=%.2fs", self.name, delay)
            await asyncio.sleep(delay)

    async def _poll_until_broken(self, link: L) -> None:
        loop = asyncio.get_running_loop()
        slots = self._slots
        now = loop.time()
        heap: list[tuple[float, int]] = []
        for i, s in enumerate(slots):
            s.silent = False
            if not s.retired:
                heap.append((next_tick(s.phase, s.interval, now), i))
        heapq.heapify(heap)
        while heap:
            due, i = heapq.heappop(heap)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            slot = slots[i]
            ok = await self._poll(slot, link)
            _honour_cancel()
            if slot.retired:
                continue
            now = loop.time()
            if not ok:
                # A device that does not answer is retried with backoff, not every tick.
                now += slot.backoff.failed(slot.error)
            heapq.heappush(heap, (next_tick(slot.phase, slot.interval, now), i))
            if not ok and self.reopen_when_all_silent and self._all_silent():
                raise ConnectionLost(f"no device answers on {self.endpoint}")
        await asyncio.Event().wait()

    async def _poll(self, slot: _Slot, link: L) -> bool:
        """One read of one device; False when the device (not the link) failed."""
        poller: Poller[L] = slot.poller
        dev = poller.device_id
        ctx = self.ctx
        t0 = time.monotonic()
        try:
            values = await poller.read(link, slot.state is DeviceState.OFFLINE)
        except ConnectionLost:
            ctx.count("poll_error", dev)
            raise
        except Retired as exc:
            ctx.count("poll", dev)
            ctx.observe("poll", time.monotonic() - t0, dev)
            slot.retired = True
            self._set_state(slot, DeviceState.OFFLINE, str(exc))
            return True
        except (TransientError, DecodeError) as exc:
            ctx.count("poll_error", dev)
            slot.silent = True
            error = str(exc)
            self._set_state(slot, DeviceState.OFFLINE, error)
            slot.error = error
            return False
        # The answer is in: this is the moment the values describe.
        ts = self.wall()
        mono = asyncio.get_running_loop().time()
        ctx.count("poll", dev)
        ctx.observe("poll", time.monotonic() - t0, dev)
        slot.silent = False
        backoff = slot.backoff
        if backoff.state is not ReconnectState.CONNECTED:
            backoff.connected()
            backoff.reset()
        if self.reconnect.failures:
            self.reconnect.reset()  # the link works: a later loss starts from the initial delay
        if slot.state is not DeviceState.ONLINE:
            self._set_state(slot, DeviceState.ONLINE, None)
        if values:
            # The next poll is sent at the next grid point at the earliest (later when the
            # bus is busy or the device fails), so no later sample can carry an earlier time:
            # the windows stage may close a window as soon as this one lies past its end.
            next_at = ts + (next_tick(slot.phase, slot.interval, mono) - mono)
            ctx.sample(Sample(dev, ts, values, next_at=next_at))
        return True

    def _all_silent(self) -> bool:
        live = [s for s in self._slots if not s.retired]
        return bool(live) and all(s.silent for s in live)

    def _set_state(self, slot: _Slot, state: DeviceState, error: str | None) -> None:
        if slot.state is state:
            return
        slot.state = state
        slot.error = error
        dev = slot.poller.device_id
        if state is DeviceState.OFFLINE:
            self.log.warning("device offline device=%s bus=%s error=%s", dev, self.name, error)
        else:
            self.log.info("device %s device=%s bus=%s", state.value, dev, self.name)
        self.ctx.state(dev, state, error)

    def _all_offline(self, error: str) -> None:
        for s in self._slots:
            self._set_state(s, DeviceState.OFFLINE, error)
