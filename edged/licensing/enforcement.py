"""Hooks for the supervisor: which devices may run now, and when that changes.

The supervisor calls :func:`admit` on start and on every reload, schedules another call
at ``next_change`` (a trial's end), and calls :func:`maintenance` to announce the
configured warnings before maintenance ends. Both do blocking file I/O; run them in a
thread from the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edged.licensing.counting import CapacityWindow, MaintenanceStatus
from edged.licensing.keys import KeyRing
from edged.licensing.release import (
    RELEASE_DATE,
    RELEASE_KIND,
    RELEASE_VERSION,
    Coverage,
    covers,
)
from edged.licensing.store import LicenceStore
from edged.model import DeviceSpec


class LicensingSettings(Protocol):
    """The ``[licensing]`` section as edged.config provides it."""

    @property
    def warn_days(self) -> tuple[int, ...]: ...

    @property
    def clock_tolerance(self) -> float: ...


class GatewaySettings(Protocol):
    """The ``[gateway]`` section: its data directory keeps a copy of the licence history."""

    @property
    def data_dir(self) -> Path: ...


class LicensedConfig(Protocol):
    """The parts of a loaded config that licensing needs."""

    @property
    def devices(self) -> tuple[DeviceSpec, ...]: ...

    @property
    def gateway(self) -> GatewaySettings: ...

    @property
    def licensing(self) -> LicensingSettings: ...


@dataclass(frozen=True)
class AdmissionResult:
    """Devices admitted and unlicensed (config order), units used and licensed, next change."""

    admitted: tuple[DeviceSpec, ...]
    unlicensed: tuple[DeviceSpec, ...]
    used: int
    total: int
    next_change: float | None
    clock_warning: str | None


def open_store(
    directory: Path,
    now: float,
    tolerance: float = 3600.0,
    *,
    install_code: str | None = None,
    keys: KeyRing | None = None,
    history: Sequence[Path] = (),
) -> LicenceStore:
    """A store that evaluates at ``now`` (the supervisor's clock).

    ``history``: directories keeping another copy of the licence history (the data dir).
    """
    return LicenceStore(
        directory, install_code, lambda: now, keys=keys, tolerance=tolerance, history=history
    )


def capacity(directory: Path, now: float, tolerance: float = 3600.0) -> CapacityWindow:
    """Licensed capacity at ``now`` and the next moment it changes (None: never)."""
    return open_store(directory, now, tolerance).capacity()


def admit_devices(
    devices: Sequence[DeviceSpec],
    directory: Path,
    now: float,
    tolerance: float = 3600.0,
    *,
    install_code: str | None = None,
    keys: KeyRing | None = None,
    history: Sequence[Path] = (),
) -> AdmissionResult:
    """Which of ``devices`` are licensed at ``now``."""
    store = open_store(
        directory, now, tolerance, install_code=install_code, keys=keys, history=history
    )
    gate = store.admission(devices)
    adm = gate.admission
    admitted = set(adm.admitted)
    return AdmissionResult(
        tuple(d for d in devices if d.id in admitted),
        tuple(d for d in devices if d.id not in admitted),
        adm.used,
        adm.total,
        gate.window.next_change,
        gate.clock_warning,
    )


def admit(config: LicensedConfig, directory: Path, now: float) -> AdmissionResult:
    """Which configured devices are licensed at ``now`` (licences read from ``directory``)."""
    return admit_devices(
        config.devices,
        directory,
        now,
        config.licensing.clock_tolerance,
        history=(config.gateway.data_dir,),
    )


def release_coverage(config: LicensedConfig, directory: Path, now: float) -> Coverage:
    """Whether the installed licences cover this running release (RELEASE_VERSION/KIND)."""
    store = open_store(
        directory, now, config.licensing.clock_tolerance, history=(config.gateway.data_dir,)
    )
    return covers(RELEASE_VERSION, RELEASE_DATE, RELEASE_KIND, store.evaluate().genuine())


def maintenance(config: LicensedConfig, directory: Path, now: float) -> MaintenanceStatus:
    """Maintenance end and the warning due at ``now`` for ``[licensing] warn_days``."""
    store = open_store(
        directory, now, config.licensing.clock_tolerance, history=(config.gateway.data_dir,)
    )
    return store.maintenance(config.licensing.warn_days)
