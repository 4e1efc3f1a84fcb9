"""Wiring of the energy stages: virtual meters, load profile, their store and auto export.

The daemon owns one ``Energy``: it opens the energy store, restores the virtual meters'
books and the load profile's open intervals, hands both stages to the pipeline, writes
what changed once a second (and at once after a source counter went back, so a crash
right after a reset never restores the old meter's baseline), prunes the store, runs
auto export and sets the metrics gauges. Writes run in one worker thread, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from edged.energystore import EnergyStore, ReadingKey, Row, StoreError
from edged.loadprofile import DEFAULT_GAP, INTERVAL, LoadProfile
from edged.metrics import Metrics
from edged.model import DeviceState
from edged.pipeline import Pipeline
from edged.provisioning import Provisioning
from edged.supervisor import Supervisor
from edged.virtual import VirtualMeters, meters_from

if TYPE_CHECKING:
    from edged.config import Config
    from edged.counters import Tally
    from edged.energystore import Reading
    from edged.export import AutoExport

log = logging.getLogger("edged.energy")

FLUSH_TICKS = 5
"""Ticks (of 0.2 s) between two writes of the books."""
PRUNE_EVERY = 3600.0


class Energy:
    """Virtual meters, load profile, store and auto export of one daemon."""

    def __init__(
        self,
        pipeline: Pipeline,
        supervisor: Supervisor,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.clock = clock
        self.virtual = VirtualMeters(pipeline.live, self._state_of)
        self.virtual.on_rebase = self._save_soon
        pipeline.virtual = self.virtual
        self._supervisor = supervisor
        self.store: EnergyStore | None = None
        self.profile: LoadProfile | None = None
        self.exporter: AutoExport | None = None
        self._stored: dict[tuple[str, str, str], Tally] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="energy-store")
        self._pending: set[asyncio.Future[None]] = set()
        self._pruned = 0.0
        self._keep_days = 400
        self._fixed_gap = False
        self._max_bytes = 64 * 1024 * 1024

    def _state_of(self, device_id: str) -> DeviceState | None:
        st = self._supervisor.devices.get(device_id)
        return None if st is None else st.state

    async def open(self, cfg: Config) -> None:
        """Open the store and restore the books (before the first sample)."""
        lp = cfg.load_profile
        if lp is None:
            return
        self._keep_days, self._max_bytes = lp.keep_days, lp.max_bytes
        loop = asyncio.get_running_loop()
        store = await loop.run_in_executor(self._writer, EnergyStore, lp.path)
        self.store = store
        self._stored = await loop.run_in_executor(self._writer, store.tallies)
        readings, rows = await loop.run_in_executor(self._writer, store.open_state)
        self.profile = LoadProfile(lp.gap or DEFAULT_GAP, readings, rows)
        self._fixed_gap = lp.gap is not None
        self.pipeline.profile = self.profile
        if cfg.cloud.features.get("auto_export") and cfg.export is not None:
            from edged.export import AutoExport

            self.exporter = AutoExport(cfg.export, store, self.clock)
            self.exporter.start()

    def apply(self, prov: Provisioning) -> None:
        """Run the configured virtual meters (start and reload)."""
        cfg = prov.config
        polls = {d.id: d.poll_interval for d in cfg.devices}
        meters = meters_from([(v.id, v.compute) for v in cfg.virtual_meters], polls)
        self.virtual.configure(meters, self._stored)
        if self.profile is not None and not self._fixed_gap:
            self.profile.set_gaps(gaps(prov))

    def tick(self, now: float, ticks: int) -> None:
        """Staleness every tick; books written every second; gauges; pruning."""
        self.virtual.tick(now)
        if ticks % FLUSH_TICKS == 0:
            self._save_soon()
            for vs in self.virtual.status():
                self.metrics.set_gauge("virtual_meter_stale", 1.0 if vs.stale else 0.0, meter=vs.id)
        if self.store is not None and now - self._pruned > PRUNE_EVERY:
            self._pruned = now
            self._submit(self._prune, now)

    def _save_soon(self) -> None:
        if self.store is None:
            return
        tallies = self.virtual.take_dirty()
        rows: list[Row] = []
        readings: list[tuple[ReadingKey, Reading]] = []
        if self.profile is not None:
            rows, readings = self.profile.take_dirty()
        if tallies or rows or readings:
            self._submit(self.store.save, tallies, rows, readings)

    def _prune(self, now: float) -> None:
        assert self.store is not None
        dropped = self.store.prune(now - self._keep_days * 86400.0, self._max_bytes)
        if dropped:
            log.warning("load profile rows dropped count=%d (retention or size cap)", dropped)
        self.metrics.set_gauge("load_profile_dropped", float(self.store.dropped()))

    def _submit(self, fn: Callable[..., None], *args: object) -> None:
        fut = asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)
        self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[None]) -> None:
        self._pending.discard(fut)
        exc = fut.exception()
        if exc is not None:
            level = logging.ERROR if isinstance(exc, StoreError) else logging.CRITICAL
            log.log(level, "energy store write failed error=%s", exc)

    async def close(self) -> None:
        """Write what is left and close the store (shutdown)."""
        if self.exporter is not None:
            await self.exporter.stop()
        self._save_soon()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self.store.close)
        self._writer.shutdown(wait=False)


def gaps(prov: Provisioning) -> dict[str, float]:
    """Per metering point, the silence after which its load profile sees a gap.

    A polled device: three poll intervals plus 5 s (at least 10 s, at most one interval),
    so a device that went offline for longer leaves its intervals incomplete. A device
    that speaks when it likes (a charger) gets the default. A virtual meter: the largest
    of its sources'.
    """
    cfg = prov.config
    out: dict[str, float] = {}
    for d in cfg.devices:
        conn = prov.connections.get(d.connection)
        polled = conn is not None and conn.driver.polled
        gap = 3 * d.poll_interval + 5.0 if polled else DEFAULT_GAP
        out[d.id] = min(INTERVAL, max(10.0, gap))
    for v in cfg.virtual_meters:  # config order: a virtual source is defined first or later
        srcs = v.compute.points if v.compute is not None else v.sources
        out[v.id] = max((out.get(p, DEFAULT_GAP) for p in srcs), default=DEFAULT_GAP)
    return out
