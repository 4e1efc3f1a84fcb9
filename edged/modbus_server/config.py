"""The ``[modbus_server]`` section: where the server listens, who may connect, unit ids.

The server runs when ``[features] modbus_server = true`` (a Professional feature, checked by
``edged.tiers``); this section only configures it. Unit ids: ``units = {point = unit}``
gives a metering point its unit id; every other metering point gets the lowest free unit id
from 1 upwards, in config order (devices, then virtual meters).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from edged.api import Options
from edged.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORT = 5020
"""Not 502: binding below 1024 needs a capability the packaged unit does not grant."""
MAX_UNIT = 247
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class ModbusServerConfig:
    """Validated ``[modbus_server]`` settings (unit ids resolved for every metering point)."""

    address: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    allow: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in DEFAULT_ALLOW)
    max_connections: int = 16
    idle_timeout: float = 60.0
    models: str = "int"
    max_age: float | None = None
    units: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def listener(self) -> ModbusServerConfig:
        """The settings only a restart applies: all but the unit ids (those apply on reload)."""
        return dataclasses.replace(self, units=MappingProxyType({}))


def parse(o: Options, points: Sequence[str]) -> ModbusServerConfig:
    """Read the section; ``points`` are the metering point ids in config order."""
    address = o.str("address", "127.0.0.1")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise o.error(
            "address",
            f"expected an IP address to listen on (e.g. 127.0.0.1 or ::), got {address!r}",
        ) from None
    port = o.int("port", DEFAULT_PORT, min=1, max=65535)
    raw_allow = o.raw("allow", list(DEFAULT_ALLOW))
    if not isinstance(raw_allow, list) or not all(isinstance(a, str) for a in raw_allow):
        raise o.error("allow", 'expected an array of addresses or networks ("192.0.2.0/24")')
    allow: list[Network] = []
    for entry in raw_allow:
        try:
            allow.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise o.error(
                "allow", f'{entry!r} is not an IP address or network ("192.0.2.7", "10.0.0.0/8")'
            ) from None
    max_connections = o.int("max_connections", 16, min=1, max=1000)
    idle_timeout = o.float("idle_timeout", 60.0, min=1.0, max=86400.0)
    models = o.choice("models", ("int", "float"), "int")
    max_age = o.float("max_age", None, min=0.1, max=86400.0)
    units = _units(o, points)
    o.finish()
    return ModbusServerConfig(
        address=address,
        port=port,
        allow=tuple(allow),
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        models=models,
        max_age=max_age,
        units=MappingProxyType(units),
    )


def _units(o: Options, points: Sequence[str]) -> dict[str, int]:
    raw = o.raw("units", {})
    if not isinstance(raw, dict):
        raise o.error("units", "expected a table of metering point = unit id")
    known = set(points)
    # The file that set ``units`` (a drop-in may), for errors on one of its keys.
    file = o.error("units", "").file
    section = o.error("units", "").key.rsplit(".", 1)[0]

    def error(point: str, message: str) -> ConfigError:
        return ConfigError(file, f"{section}.units.{point}", message)

    taken: dict[int, str] = {}
    units: dict[str, int] = {}
    for point, unit in raw.items():
        if point not in known:
            raise error(point, f"no metering point {point!r} (devices and virtual meters)")
        if isinstance(unit, bool) or not isinstance(unit, int) or not 1 <= unit <= MAX_UNIT:
            raise error(point, f"expected a unit id from 1 to {MAX_UNIT}, got {unit!r}")
        if unit in taken:
            raise error(point, f"unit id {unit} is already given to {taken[unit]!r}")
        taken[unit] = point
        units[point] = unit
    free = (u for u in range(1, MAX_UNIT + 1) if u not in taken)
    for point in points:
        if point in units:
            continue
        unit = next(free, None)
        if unit is None:
            break  # more than 247 metering points: the rest are not served (documented)
        units[point] = unit
    return {p: units[p] for p in points if p in units}


def is_allowed(host: str, allow: Sequence[Network]) -> bool:
    """True when a peer address is in one of the allowed networks."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in allow)
