"""The pipeline: every sample goes to the stages that work on live values.

Today two stages take each sample: live values (the present, for status and local
consumers) and windows (at most one record per metering point and tier window).
Records leave through ``emit``, which the daemon points at the outbox; the stages
never see the outbox or the uplink.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edged.live import LiveValues
from edged.model import Record, Sample
from edged.windows import Windows

Emit = Callable[[Sequence[Record]], None]


class Pipeline:
    """Samples in; live values kept; windowed records out through ``emit``."""

    def __init__(self, windows: Windows, live: LiveValues, emit: Emit) -> None:
        self.windows = windows
        self.live = live
        self._emit = emit

    def add(self, sample: Sample) -> None:
        """One sample from a driver (non-finite values and late samples: see Windows)."""
        self.live.update(sample)
        self.windows.add(sample)
        ready = self.windows.take_ready()
        if ready:
            self._emit(ready)

    def tick(self, now: float) -> None:
        """Close the windows whose grace has passed and emit their records."""
        records = self.windows.due(now)
        if records:
            self._emit(records)

    def flush(self) -> None:
        """Close every open window (at shutdown) and emit the records."""
        records = self.windows.flush()
        if records:
            self._emit(records)
