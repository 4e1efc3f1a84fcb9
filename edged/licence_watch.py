"""The licence watcher: takes devices out of service when a licence ends, warns on maintenance.

It re-checks the licences when one expires (and hourly, and when poked after a reload),
hands a changed set of admitted devices to the supervisor, and announces each capacity
change and each maintenance warning once, in the log and as a gateway event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from edged.licensing import enforcement
from edged.licensing.release import RELEASE_DATE, RELEASE_KIND, RELEASE_VERSION
from edged.provisioning import Provisioning, readmit

log = logging.getLogger("edged.app")

Clock = Callable[[], float]
Publish = Callable[[str, dict[str, object]], Awaitable[None]]


class LicenceWatcher:
    """Re-checks licences while the daemon runs."""

    def __init__(
        self,
        current: Callable[[], Provisioning],
        apply: Callable[[Provisioning], Awaitable[None]],
        publish: Publish,
        licence_dir: Callable[[], Path],
        clock: Clock = time.time,
    ) -> None:
        self._current = current
        self._apply = apply
        self._publish = publish
        self._licence_dir = licence_dir
        self._clock = clock
        self._poke = asyncio.Event()
        self._announced: set[tuple[float, int | None]] = set()
        self._release_checked = False

    def poke(self) -> None:
        """Check again now (after a reload)."""
        self._poke.set()

    async def run(self) -> None:
        """Watch until cancelled; a failing check is logged and retried a minute later."""
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep watching: a bad licence dir must not stop the daemon
                log.error("licence check failed error=%s", exc, exc_info=True)
                await asyncio.sleep(60)

    async def check(self) -> None:
        """One licence check, then wait until the next moment anything can change."""
        prov = self._current()
        now = self._clock()
        directory = self._licence_dir()
        result = await asyncio.to_thread(enforcement.admit, prov.config, directory, now)
        if {d.id for d in result.admitted} != {d.id for d in prov.admitted}:
            dropped = sorted({d.id for d in prov.admitted} - {d.id for d in result.admitted})
            added = sorted({d.id for d in result.admitted} - {d.id for d in prov.admitted})
            log.warning(
                "licence capacity changed used=%d capacity=%d taken_out=%s admitted=%s",
                result.used,
                result.total,
                ",".join(dropped) or "-",
                ",".join(added) or "-",
            )
            # Re-read: a reload may have applied a new configuration meanwhile.
            await self._apply(await asyncio.to_thread(readmit, self._current(), result))
            await self._publish(
                "licence_changed",
                {
                    "used": result.used,
                    "capacity": result.total,
                    "taken_out_of_service": dropped,
                    "admitted": added,
                },
            )
        if not self._release_checked:
            self._release_checked = True
            await self._check_release(prov, directory, now)
        maint = await asyncio.to_thread(enforcement.maintenance, prov.config, directory, now)
        if maint.end is not None and (maint.warning_days is not None or maint.ended):
            key = (maint.end, -1 if maint.ended else maint.warning_days)
            if key not in self._announced:
                self._announced.add(key)
                days = maint.days_left(now)
                log.warning(
                    "maintenance licence %s end=%s days_left=%s",
                    "has ended" if maint.ended else "ends soon",
                    time.strftime("%Y-%m-%d", time.gmtime(maint.end)),
                    days,
                )
                await self._publish(
                    "maintenance", {"end": maint.end, "days_left": days, "ended": maint.ended}
                )
        wake = [now + 3600.0]
        if result.next_change is not None:
            wake.append(result.next_change + 0.01)
        if maint.next_warning is not None:
            wake.append(maint.next_warning)
        delay = max(0.05, min(wake) - self._clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poke.wait(), delay)
        self._poke.clear()

    async def _check_release(self, prov: Provisioning, directory: Path, now: float) -> None:
        """Once per start: say so when no licence covers this (feature) release."""
        cov = await asyncio.to_thread(enforcement.release_coverage, prov.config, directory, now)
        if cov.covered:
            return
        log.warning(
            "this release is not covered by a licence version=%s kind=%s released=%s reason=%s",
            RELEASE_VERSION,
            RELEASE_KIND,
            RELEASE_DATE.isoformat(),
            cov.reason,
        )
        await self._publish(
            "release_not_covered",
            {
                "version": RELEASE_VERSION,
                "release_kind": RELEASE_KIND,
                "released": RELEASE_DATE.isoformat(),
                "reason": cov.reason,
            },
        )
