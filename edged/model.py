"""Shared value types that flow between the layers of edged.

Everything here is stdlib-only and immutable. Quantities have one canonical
name and unit; drivers convert into them so nothing downstream guesses units.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from edged.errors import ConfigError

Kind = Literal["counter", "gauge", "info"]
"""``counter``: records carry its last value; ``gauge``: last, mean, min, max;
``info``: a live value only (``edged.live``, local consumers), never in a record (see
``LIVE_ONLY``)."""


@dataclass(frozen=True)
class Quantity:
    """A canonical quantity: its name, unit and whether it is a counter or a gauge."""

    name: str
    unit: str
    kind: Kind
    description: str


def _q(name: str, unit: str, kind: Kind, description: str) -> tuple[str, Quantity]:
    return name, Quantity(name, unit, kind, description)


_PHASED_GAUGES = [
    ("voltage", "V", "phase-to-neutral voltage"),
    ("current", "A", "phase current"),
    ("power_active", "W", "active power"),
    ("power_reactive", "var", "reactive power"),
    ("power_apparent", "VA", "apparent power"),
    ("power_factor", "", "power factor"),
]

QUANTITIES: Mapping[str, Quantity] = MappingProxyType(
    dict(
        [
            _q("energy_import", "Wh", "counter", "active energy imported (delivered to the site)"),
            _q("energy_export", "Wh", "counter", "active energy exported (fed into the grid)"),
            _q("energy_reactive_import", "varh", "counter", "reactive energy imported"),
            _q("energy_reactive_export", "varh", "counter", "reactive energy exported"),
            _q("energy_heat", "Wh", "counter", "thermal energy (heat or cooling)"),
            _q("volume", "m3", "counter", "volume"),
            _q("mass", "kg", "counter", "mass"),
            _q("operating_time", "s", "counter", "operating time"),
            _q("on_time", "s", "counter", "on time"),
            _q("pulses", "", "counter", "pulse count"),
            _q("power_active", "W", "gauge", "total active power"),
            _q("power_reactive", "var", "gauge", "total reactive power"),
            _q("power_apparent", "VA", "gauge", "total apparent power"),
            _q("power_factor", "", "gauge", "total power factor"),
            _q("power_thermal", "W", "gauge", "thermal power"),
            _q("frequency", "Hz", "gauge", "grid frequency"),
            _q("current", "A", "gauge", "total or single-phase current"),
            _q("voltage", "V", "gauge", "voltage"),
            *[
                _q(f"{base}_l{n}", unit, "gauge", f"{desc} L{n}")
                for base, unit, desc in _PHASED_GAUGES
                for n in (1, 2, 3)
            ],
            _q("voltage_l1_l2", "V", "gauge", "line-to-line voltage L1-L2"),
            _q("voltage_l2_l3", "V", "gauge", "line-to-line voltage L2-L3"),
            _q("voltage_l3_l1", "V", "gauge", "line-to-line voltage L3-L1"),
            _q("current_n", "A", "gauge", "neutral current"),
            _q("volume_flow", "m3/h", "gauge", "volume flow"),
            _q("mass_flow", "kg/h", "gauge", "mass flow"),
            _q("flow_temperature", "°C", "gauge", "flow (supply) temperature"),
            _q("return_temperature", "°C", "gauge", "return temperature"),
            _q("temperature_difference", "K", "gauge", "flow minus return temperature"),
            _q("temperature", "°C", "gauge", "temperature"),
            _q("external_temperature", "°C", "gauge", "external temperature"),
            _q("pressure", "bar", "gauge", "pressure"),
            _q("state_of_charge", "%", "gauge", "EV battery state of charge"),
            _q("power_offered", "W", "gauge", "charging power offered to the EV"),
            _q("current_offered", "A", "gauge", "charging current offered to the EV"),
            _q("current_import", "A", "gauge", "charging current (import)"),
            _q("session_active", "", "gauge", "1 while a charging session is open, else 0"),
            # Live only: it restarts at 1 with edged, so as a record counter it would go back.
            _q("link_connects", "", "info", "connections a served device made since start"),
        ]
    )
)


LIVE_ONLY: frozenset[str] = frozenset(n for n, q in QUANTITIES.items() if q.kind == "info")
"""Quantities of kind ``info``: kept in the live values, left out of every record."""


def quantity(name: str) -> Quantity | None:
    """The canonical quantity of that name, or None."""
    return QUANTITIES.get(name)


def unit_of(name: str) -> str:
    """Canonical unit of a quantity; quantities outside the table carry no unit."""
    q = QUANTITIES.get(name)
    return q.unit if q else ""


def is_counter(name: str) -> bool:
    """Counters (energy, volume, ...) publish their last value; everything else is a gauge."""
    q = QUANTITIES.get(name)
    return q is not None and q.kind == "counter"


class Tier(Enum):
    """Cloud licence tier of a metering point, ordered from lowest to highest."""

    BASIC = "basic"
    LIMITED = "limited"
    PROFESSIONAL = "professional"

    @property
    def rank(self) -> int:
        """Order of the tier: a lower rank is a lower tier."""
        return _TIER_RANK[self]


_TIER_RANK = {Tier.BASIC: 0, Tier.LIMITED: 1, Tier.PROFESSIONAL: 2}


class DeviceState(Enum):
    """What the supervisor knows about a device."""

    PROVISIONED = "provisioned"
    ONLINE = "online"
    OFFLINE = "offline"
    STALE = "stale"
    UNLICENSED = "unlicensed"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a piece of configuration came from, for error messages."""

    file: str | None
    key: str

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError for ``key`` below this source's key path."""
        path = f"{self.key}.{key}" if self.key and key else (self.key or key)
        return ConfigError(self.file, path, message)


def _freeze(m: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """One physical connection (a TCP endpoint, a serial port, a listening socket).

    ``settings`` are the driver-specific keys of the ``[connections.NAME]`` table;
    the driver validates them through ``edged.api.Options``.
    """

    name: str
    driver: str
    settings: Mapping[str, Any] = field(default_factory=lambda: _freeze(None))
    source: Source = Source(None, "")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One provisioned device: a meter, a charger or a logical part of an I/O module."""

    id: str
    driver: str
    connection: str
    address: int | str | None = None
    profile: str | None = None
    poll_interval: float = 1.0
    publish_interval: float | None = None
    cloud_licence: Tier = Tier.BASIC
    licence_group: str | None = None
    medium: str = "electricity"
    virtual: bool = False
    labels: Mapping[str, str] = field(default_factory=lambda: _freeze(None))
    settings: Mapping[str, Any] = field(default_factory=lambda: _freeze(None))
    source: Source = Source(None, "")
    # The configured profile directory ([gateway] profile_dir), searched for a ``profile``
    # name before the driver's shipped profiles (see edged.profiles); set with a profile.
    profile_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """Values read from one device at one moment (UTC epoch seconds, wall clock)."""

    device_id: str
    timestamp: float
    values: Mapping[str, float]
    attrs: Mapping[str, str] = field(default_factory=lambda: _freeze(None))
    next_at: float | None = None
    """The earliest wall-clock time the device's next sample can carry, when its poll
    schedule says so (None for devices that speak when they like, such as chargers)."""


@dataclass(frozen=True)
class Reading:
    """One quantity within a record: the last value and, for gauges, the window's statistics."""

    last: float
    ts: float
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    count: int = 1


@dataclass(frozen=True)
class Record:
    """What goes to the cloud for one device and one window."""

    device_id: str
    window_start: float
    window_length: float
    values: Mapping[str, Reading]
    seq: int = 0
    stale: bool = False
    """A virtual meter with a stale source in this window (edged.virtual)."""


# Every quantity of a record usually carries the same timestamp: format each one once.
@functools.lru_cache(maxsize=4096)
def iso(ts: float) -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


SampleSink = Callable[[Sample], None]
