"""The pipeline: every sample goes to the stages that work on live values.

Each sample goes to live values (the present, for status and local consumers), windows
(at most one record per metering point and tier window), the load profile (energy per
15-minute interval, when one is wired) and the derive stage (virtual meters), whose
derived samples take the same path as a device's.
Records leave through ``emit``, which the daemon points at the outbox; the stages
never see the outbox or the uplink.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from edged.live import LiveValues
from edged.loadprofile import LoadProfile
from edged.model import Record, Sample
from edged.virtual import VirtualMeters
from edged.windows import Windows

Emit = Callable[[Sequence[Record]], None]

EMIT_BATCH = 0.05
"""Seconds records of windows completed by a read wait to leave together: the outbox
writes one transaction per batch, not one per record."""


class Pipeline:
    """Samples in; live values kept; windowed records out through ``emit``."""

    def __init__(
        self,
        windows: Windows,
        live: LiveValues,
        emit: Emit,
        virtual: VirtualMeters | None = None,
        profile: LoadProfile | None = None,
    ) -> None:
        self.windows = windows
        self.live = live
        self.virtual = virtual
        self.profile = profile
        self._out = emit
        self._batch: asyncio.TimerHandle | None = None

    def _emit(self, records: Sequence[Record]) -> None:
        virtual = self.virtual
        self._out(records if virtual is None else [virtual.flag(r) for r in records])

    def add(self, sample: Sample) -> None:
        """One sample from a driver (non-finite values and late samples: see Windows)."""
        self.live.update(sample)
        self.windows.add(sample)
        if self.profile is not None:
            self.profile.add(sample)
        if self.virtual is not None:
            for derived in self.virtual.derive(sample):
                self.add(derived)
        if self._batch is None and self.windows.has_ready():
            self._batch = asyncio.get_running_loop().call_later(EMIT_BATCH, self._emit_ready)

    def _emit_ready(self) -> None:
        self._batch = None
        ready = self.windows.take_ready()
        if ready:
            self._emit(ready)

    def tick(self, now: float) -> None:
        """Close the windows whose grace has passed and emit their records."""
        records = self.windows.take_ready() + self.windows.due(now)
        if records:
            self._emit(records)

    def flush(self) -> None:
        """Close every open window (at shutdown) and emit the records."""
        if self._batch is not None:
            self._batch.cancel()
            self._batch = None
        records = self.windows.flush()
        if records:
            self._emit(records)
