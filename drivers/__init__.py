"""The driver protocol and the registry of drivers.

A driver owns one protocol: it validates its own connection and device settings,
and runs one connection (polling the devices behind it in turn, or serving the
devices that connect to it) until cancelled. Built-in drivers are listed here;
third-party drivers register under the entry-point group ``edged.drivers``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

from edged.errors import ConfigError
from edged.model import ConnectionSpec, DeviceSpec, DeviceState, Sample, Source

ENTRY_POINT_GROUP = "edged.drivers"


class DriverContext(Protocol):
    """What a running connection may tell the daemon."""

    def sample(self, sample: Sample) -> None:
        """Hand over one sample (canonical quantities and units)."""

    def state(self, device_id: str, state: DeviceState, error: str | None = None) -> None:
        """Report that a device went online, offline, ..."""

    def count(self, event: str, device_id: str | None = None, n: int = 1) -> None:
        """Count an event (``poll``, ``poll_error``, ``frame_rejected``, ...) for metrics."""

    def observe(self, event: str, seconds: float, device_id: str | None = None) -> None:
        """Record a latency (e.g. ``poll``) for metrics."""


@runtime_checkable
class Driver(Protocol):
    """A protocol driver."""

    name: str
    # Drivers that serve devices instead of polling them (OCPP) set ``polled = False``
    # as a class attribute; the supervisor then never reports their silence as stale.
    #
    # Optional: ``def update(self, connection: ConnectionSpec, devices: Sequence[DeviceSpec])
    # -> bool`` applies a new device list to the running connection; False when it cannot
    # (the supervisor then restarts the connection). Called on reload only when the
    # connection spec itself (driver and settings) is unchanged and only its devices differ;
    # afterwards samples and states of devices no longer on the list are rejected.

    def endpoint(self, connection: ConnectionSpec) -> str:
        """The identity of the physical bus or socket (two connections may not share one)."""

    def check(self, connection: ConnectionSpec, devices: Sequence[DeviceSpec]) -> None:
        """Validate driver-specific settings; raise ConfigError naming file and key."""

    async def run(
        self, connection: ConnectionSpec, devices: Sequence[DeviceSpec], ctx: DriverContext
    ) -> None:
        """Run the connection until cancelled. Must never let one dead device stall others."""


class CommandHandler(Protocol):
    """Optional: drivers that accept commands (e.g. OCPP) expose them through this."""

    async def command(self, device_id: str, name: str, args: Mapping[str, object]) -> object:
        """Run one command against a device and return a JSON-ready result."""


BUILTINS: Mapping[str, str] = {
    "modbus": "drivers.modbus.driver:ModbusDriver",
    "mbus": "drivers.mbus.driver:MBusDriver",
    "ocpp": "drivers.ocpp.driver:OcppDriver",
}


def _load(target: str) -> Callable[[], Driver]:
    module, _, attr = target.partition(":")
    factory: Callable[[], Driver] = getattr(importlib.import_module(module), attr)
    return factory


def available() -> dict[str, str]:
    """Known driver names mapped to their import targets (built-ins win on clashes)."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    found.update(BUILTINS)
    return found


def get(name: str, source: Source | None = None) -> Driver:
    """A new instance of the named driver; an unknown name lists the known ones."""
    targets = available()
    if name not in targets:
        known = ", ".join(sorted(targets))
        src = source or Source(None, "driver")
        raise ConfigError(src.file, src.key, f"unknown driver {name!r} (known: {known})")
    return _load(targets[name])()
