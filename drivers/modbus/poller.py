"""Polling one device: run its read plan, decode the points, disable refused points.

The read plan starts as the coalesced plan of the profile. When a coalesced request is
refused with an exception, it is split in halves and retried until the refused points
are isolated; those are disabled (one warning each) and the working sub-requests
replace the refused one, so later polls do not repeat the search.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

from drivers.modbus.errors import ExceptionResponse
from drivers.modbus.planner import Request, Table, plan
from drivers.modbus.settings import DeviceSettings

log = logging.getLogger(__name__)

ReadFn = Callable[[Table, int, int, int], Awaitable[list[int]]]
"""read(table, start, count, unit) -> registers; raises the driver's errors."""


class DevicePoller:
    """The read plan and disabled points of one device."""

    def __init__(self, device: DeviceSettings) -> None:
        self.device = device
        prof = device.profile
        self.spans = prof.spans
        self.plan: list[Request] = plan(self.spans, prof.max_registers, prof.max_gap)
        self.disabled: set[int] = set()

    @property
    def active(self) -> bool:
        """False once every point of the device has been disabled."""
        return bool(self.plan)

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
            half = len(req.points) // 2
            prof = self.device.profile
            for part in (req.points[:half], req.points[half:]):
                for sub in plan(self.spans, prof.max_registers, 0, only=part):
                    await self._run(sub, read, values, refined)
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
