"""How big the outbox must be to ride out an uplink outage of a stated length.

A site's records arrive at a known rate: one per metering point per publish interval (the
tier's windows). An outbox that must keep every record of an outage of ``hours`` needs
``rate * hours * 3600`` records and that many times the bytes of one record. The operator
states the outage (``[outbox] outage_hours``, 24 by default: a night and a day without the
cloud); the limits follow from the site, so a 50-meter Professional site and a 5-meter
Basic one both get what they need, and ``check-config`` says how long the outbox lasts.

The byte limit is clamped: below ``MIN_MB`` the outbox would be too small to be useful
for even a tiny site, above ``MAX_MB`` it would fill the flash of a small gateway. An
explicit ``max_mb`` or ``max_records`` wins over the derived value. Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edged.model import Reading, Record

DEFAULT_OUTAGE_HOURS = 24.0
MIN_MB = 16
MAX_MB = 1024
_MB = 1024 * 1024


@dataclass(frozen=True)
class OutboxSize:
    """The effective limits and what they mean for this site."""

    max_records: int
    max_bytes: int
    records_per_second: float
    record_bytes: int
    derived: bool
    """True when no explicit limit was configured (the limits follow from the outage)."""

    @property
    def lasts_seconds(self) -> float:
        """How long an outage the outbox keeps every record of (inf for an idle site)."""
        if self.records_per_second <= 0:
            return math.inf
        fits = min(self.max_records, self.max_bytes // max(1, self.record_bytes))
        return fits / self.records_per_second


ROW_OVERHEAD = 64
"""SQLite bytes per outbox row beyond the payload (row id, sequence, key, page slack)."""

_TYPICAL = (
    "energy_import",
    "energy_export",
    "power_active",
    "voltage_l1",
    "voltage_l2",
    "voltage_l3",
    "current_l1",
    "frequency",
)


def typical_record_bytes(encode: Callable[[Record], bytes]) -> int:
    """The payload bytes of a typical record (an electricity meter's eight values) plus the
    row's overhead, measured with the encoder in force rather than assumed."""
    ts = 1_800_000_000.0
    values = {name: Reading(last=12345.678, ts=ts) for name in _TYPICAL}
    return len(encode(Record("meter-0001", ts, 60.0, values))) + ROW_OVERHEAD


def site_rate(intervals: Iterable[float]) -> float:
    """Records per second of a site: one per metering point per publish interval."""
    return sum(1.0 / i for i in intervals if i > 0)


def size_for(
    *,
    rate: float,
    record_bytes: int,
    outage_hours: float = DEFAULT_OUTAGE_HOURS,
    max_records: int | None = None,
    max_mb: int | None = None,
) -> OutboxSize:
    """The outbox limits for a site producing ``rate`` records/s of ``record_bytes`` each."""
    needed = max(1, math.ceil(rate * outage_hours * 3600))
    derived_bytes = min(max(needed * record_bytes, MIN_MB * _MB), MAX_MB * _MB)
    derived = max_mb is None and max_records is None
    max_bytes = max_mb * _MB if max_mb is not None else derived_bytes
    if max_records is None:
        # The byte bound governs; the record bound is only a backstop it never undercuts.
        max_records = max(needed, max_bytes // max(1, record_bytes))
    return OutboxSize(
        max_records=max_records,
        max_bytes=max_bytes,
        records_per_second=rate,
        record_bytes=record_bytes,
        derived=derived,
    )


def describe(size: OutboxSize, outage_hours: float) -> tuple[str, str | None]:
    """A line for `check-config` and a warning when the outbox lasts less than the outage."""
    lasts = size.lasts_seconds
    line = (
        f"outbox: {size.max_bytes // _MB} MiB, up to {size.max_records:,} records; at this "
        f"site's {size.records_per_second:.3g} records/s (~{size.record_bytes} bytes each) it "
        f"keeps {_human(lasts)} of uplink outage"
    )
    warning = None
    if lasts < outage_hours * 3600:
        need_mb = math.ceil(size.records_per_second * outage_hours * 3600 * size.record_bytes / _MB)
        warning = (
            f"the outbox keeps only {_human(lasts)} of this site's records, less than "
            f"outage_hours = {outage_hours:g}; older records are dropped (and counted) after "
            f"that: set [outbox] max_mb = {need_mb} (and max_records) if the disk allows"
        )
    return line, warning


def _human(seconds: float) -> str:
    if math.isinf(seconds):
        return "any length"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
