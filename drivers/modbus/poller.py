"""Polling one device: run its read plan, decode the points, disable refused points.

The read plan starts as the coalesced plan of the profile. When a coalesced request is
refused with an exception, it is split in halves and retried until the refused points
are isolated; those are disabled (one warning each) and the working sub-requests
replace the refused one, so later polls do not repeat the search.

``DevicePoller`` is the device's poller on the shared runner (``edged.polling``): the
runner schedules it, keeps its state and backoff; a device whose every point was
refused is retired.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from drivers.modbus.errors import ExceptionResponse
from drivers.modbus.planner import Request, Span, Table, plan
from drivers.modbus.settings import DeviceSettings
from drivers.modbus.tcp import TcpLink
from edged.polling import Retired

if TYPE_CHECKING:  # pymodbus (RTU) is loaded only when a serial connection opens
    from drivers.modbus.link import Link

log = logging.getLogger(__name__)

ReadFn = Callable[[Table, int, int, int], Awaitable[list[int]]]
"""read(table, start, count, unit) -> registers; raises the driver's errors."""


@functools.lru_cache(maxsize=256)
def _first_plan(spans: tuple[Span, ...], max_registers: int, max_gap: int) -> tuple[Request, ...]:
    """The coalesced plan of a profile, shared by the devices that use it (requests are
    immutable; a device that refines its plan builds its own list)."""
    return tuple(plan(spans, max_registers, max_gap))


class DevicePoller:
    """The read plan and disabled points of one device."""

    __slots__ = ("bus", "device", "device_id", "disabled", "plan", "poll_interval", "spans")

    def __init__(self, device: DeviceSettings, bus: str = "") -> None:
        self.device = device
        self.bus = bus
        self.device_id = device.id
        self.poll_interval = device.poll_interval
        prof = device.profile
        self.spans = prof.spans
        self.plan: list[Request] = list(_first_plan(self.spans, prof.max_registers, prof.max_gap))
        self.disabled: set[int] = set()

    @property
    def active(self) -> bool:
        """False once every point of the device has been disabled."""
        return bool(self.plan)

    async def read(self, link: Link | TcpLink, offline: bool) -> dict[str, float]:
        """One poll over the link (the runner's entry point); ``Retired`` once nothing is left."""
        values = await self.poll(link.read)
        if not self.plan:
            log.error(
                "all points disabled device=%s bus=%s; it is no longer polled",
                self.device.id,
                self.bus,
            )
            raise Retired("every point was refused")
        return values

    async def poll(self, read: ReadFn) -> dict[str, float]:
        """Read every enabled point once; canonical quantity -> value."""
        values: dict[str, float] = {}
        refined: list[Request] = []
        for req in self.plan:
            await self._run(req, read, values, refined)
        self.plan = refined
        return values

    async def _run(
        self, req: Request, read: ReadFn, values: dict[str, float], refined: list[Request]
    ) -> None:
        try:
            regs = await read(req.table, req.start, req.count, self.device.unit)
        except ExceptionResponse as exc:
            if len(req.points) == 1:
                self._disable(req.points[0], exc.code)
                return
            before = len(self.disabled)
            found: list[Request] = []
            half = len(req.points) // 2
            for part in (req.points[:half], req.points[half:]):
                for sub in self._plan(part):
                    await self._run(sub, read, values, found)
            if len(self.disabled) > before:
                # Re-join what the search split apart, keeping clear of the refused points.
                found = self._plan([i for r in found for i in r.points])
            refined.extend(found)
            return
        refined.append(req)
        points = self.device.profile.points
        for i in req.points:
            p = points[i]
            off = p.register - req.start
            v = p.value(regs[off : off + self.spans[i].count])
            # A meter reports NaN/inf for "not available"; such a value is skipped, not sent.
            if math.isfinite(v):
                values[p.quantity] = v

    def _plan(self, points: Sequence[int]) -> list[Request]:
        prof = self.device.profile
        avoid = {
            (self.spans[i].table, r)
            for i in self.disabled
            for r in range(self.spans[i].start, self.spans[i].end)
        }
        return plan(self.spans, prof.max_registers, prof.max_gap, only=points, avoid=avoid)

    def _disable(self, index: int, code: int) -> None:
        p = self.device.profile.points[index]
        self.disabled.add(index)
        log.warning(
            "point disabled device=%s quantity=%s table=%s register=%d code=%d "
            "reason=exception response; the rest of the device keeps polling",
            self.device.id,
            p.quantity,
            p.table,
            p.register,
            code,
        )
