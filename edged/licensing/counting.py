"""Counting rules: how many capacity units a configuration uses, and what is licensed when.

- the gateway always counts 1, also with no devices configured (a pure router/pass-through
  gateway refuses nothing, so it runs without any licence, but the count still shows it);
- every device counts 1; devices that share a ``licence_group`` (one I/O module showing
  up as several logical devices) count 1 together;
- devices are admitted in config order until the capacity is used; the rest are
  unlicensed;
- capacity is the sum of all valid capacity and trial licences, each id once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edged.licensing.licence import Licence
from edged.model import DeviceSpec

DAY = 86400.0


@dataclass(frozen=True)
class Admission:
    """Which devices are licensed: ids in config order, units used and units licensed."""

    admitted: tuple[str, ...]
    unlicensed: tuple[str, ...]
    used: int
    total: int


def _unit(dev: DeviceSpec) -> tuple[str, str]:
    # Tuples keep group names and device ids in separate namespaces. edged.config refuses a
    # group that is not one module; the connection and address in the key make sure that
    # devices built any other way never share a unit across connections or addresses.
    if dev.licence_group:
        return ("group", f"{dev.licence_group}\0{dev.connection}\0{dev.address!r}")
    return ("device", dev.id)


def units_needed(devices: Sequence[DeviceSpec]) -> int:
    """Capacity units needed to admit every device (the gateway included, always 1)."""
    return 1 + len({_unit(d) for d in devices})


def plan_admission(devices: Sequence[DeviceSpec], capacity: int) -> Admission:
    """Admit devices in config order until ``capacity`` units are used."""
    used = 1  # the gateway itself, always
    if capacity < 2:
        return Admission((), tuple(d.id for d in devices), used, capacity)
    admitted_units: set[tuple[str, str]] = set()
    refused_units: set[tuple[str, str]] = set()
    admitted: list[str] = []
    unlicensed: list[str] = []
    for dev in devices:
        unit = _unit(dev)
        if unit in admitted_units:
            admitted.append(dev.id)
        elif unit not in refused_units and used < capacity:
            used += 1
            admitted_units.add(unit)
            admitted.append(dev.id)
        else:
            # A group refused once stays refused, so one module is never half-provisioned.
            refused_units.add(unit)
            unlicensed.append(dev.id)
    return Admission(tuple(admitted), tuple(unlicensed), used, capacity)


@dataclass(frozen=True)
class CapacityWindow:
    """Licensed capacity at a moment, and when (epoch seconds) it next changes, if ever."""

    capacity: int
    next_change: float | None


def _unique(licences: Iterable[Licence]) -> list[Licence]:
    seen: dict[str, Licence] = {}
    for lic in licences:
        seen.setdefault(lic.id, lic)
    return list(seen.values())


def capacity_at(licences: Iterable[Licence], now: float) -> CapacityWindow:
    """Sum of capacity and trial licences valid at ``now``; ``licences`` must be verified."""
    total = 0
    changes: list[float] = []
    for lic in _unique(licences):
        if lic.kind not in ("capacity", "trial"):
            continue
        if lic.valid_until is not None and lic.issued > now:
            # A time-limited licence counts from its issue time (its period starts there).
            changes.append(lic.issued)
            continue
        if lic.expired_at(now):
            continue
        total += lic.capacity
        if lic.valid_until is not None:
            changes.append(lic.valid_until)
    return CapacityWindow(total, min(changes) if changes else None)


@dataclass(frozen=True)
class MaintenanceStatus:
    """Maintenance at a moment: its end, whether it has ended, the warning due and the next."""

    end: float | None
    ended: bool
    warning_days: int | None
    next_warning: float | None

    def days_left(self, now: float) -> int | None:
        """Days until the end, rounded up (0 once ended), or None without maintenance."""
        if self.end is None:
            return None
        return math.ceil((self.end - now) / DAY) if now < self.end else 0


def maintenance_at(
    licences: Iterable[Licence], now: float, warn_days: Sequence[int]
) -> MaintenanceStatus:
    """The latest maintenance end and the warning threshold (from ``warn_days``) due at ``now``.

    ``warning_days`` is the smallest threshold already reached, so a caller that remembers
    the (end, warning_days) pairs it has announced warns once per threshold.
    """
    ends = [
        lic.valid_until
        for lic in _unique(licences)
        if lic.kind == "maintenance" and lic.valid_until is not None and lic.issued <= now
    ]
    if not ends:
        return MaintenanceStatus(None, False, None, None)
    end = max(ends)
    if now >= end:
        return MaintenanceStatus(end, True, None, None)
    reached = [d for d in warn_days if end - d * DAY <= now]
    upcoming = [end - d * DAY for d in warn_days if end - d * DAY > now]
    return MaintenanceStatus(
        end, False, min(reached) if reached else None, min(upcoming) if upcoming else end
    )
