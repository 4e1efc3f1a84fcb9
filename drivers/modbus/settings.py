"""Validated connection and device settings of the Modbus driver."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from drivers.modbus import profile as profiles
from drivers.modbus.profile import Profile
from edged.api import Options
from edged.model import ConnectionSpec, DeviceSpec
from edged.profiles import device_profile as find_profile

Transport = Literal["tcp", "rtu"]
PARITIES = ("N", "E", "O")


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """How to reach one Modbus bus or endpoint."""

    transport: Transport
    host: str
    port: int
    device: str
    baudrate: int
    parity: str
    stopbits: int
    bytesize: int
    timeout: float
    retries: int
    frame_gap: float

    @property
    def endpoint(self) -> str:
        """Identity of the physical endpoint (two connections may not share one)."""
        if self.transport == "tcp":
            return f"tcp://{self.host}:{self.port}"
        if "://" in self.device:
            return self.device
        return f"serial://{self.device}"


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """One meter on a connection."""

    id: str
    unit: int
    profile: Profile
    poll_interval: float
    # Holding registers and coils edged may write (actions, ``edged modbus``): nothing else.
    writable_registers: frozenset[int] = frozenset()
    writable_coils: frozenset[int] = frozenset()


def connection(conn: ConnectionSpec) -> ConnectionSettings:
    """Validate the ``[connections.NAME]`` keys of a Modbus connection."""
    o = Options.of(conn)
    transport: Transport = o.choice("transport", ("tcp", "rtu"), "tcp")
    host, port, device = "", 0, ""
    baudrate, parity, stopbits, bytesize = 9600, "E", 1, 8
    if transport == "tcp":
        host = o.str("host")
        if not host:
            raise o.error("host", "must not be empty")
        port = o.int("port", 502, min=1, max=65535)
        default_gap = 0.0
    else:
        device = o.str("device")
        if not device:
            raise o.error("device", "must be a serial device path or a pyserial URL")
        baudrate = o.int("baudrate", 9600, min=300, max=921600)
        parity = o.choice("parity", PARITIES, "E")
        stopbits = o.choice("stopbits", (1, 2), 1)
        bytesize = o.choice("bytesize", (7, 8), 8)
        # Modbus RTU wants 3.5 character times of silence between frames (11 bits each).
        default_gap = max(0.00175, 3.5 * 11 / baudrate)
    timeout = o.float("timeout", 1.0, min=0.01, max=60)
    retries = o.int("retries", 0, min=0, max=10)
    frame_gap = o.float("frame_gap", default_gap, min=0, max=10)
    o.finish()
    return ConnectionSettings(
        transport,
        host,
        port,
        device,
        baudrate,
        parity,
        stopbits,
        bytesize,
        timeout,
        retries,
        frame_gap,
    )


def device(dev: DeviceSpec) -> DeviceSettings:
    """Validate a Modbus device: its unit id and profile (which must exist and be valid)."""
    src = dev.source
    addr = 1 if dev.address is None else dev.address
    if isinstance(addr, bool) or not isinstance(addr, int) or not 1 <= addr <= 247:
        raise src.error("address", f"Modbus unit id must be an integer 1-247, got {addr!r}")
    if not dev.profile:
        near = difflib.get_close_matches("profile", list(dev.settings))
        hint = f"is {near[0]!r} a typo of 'profile'? " if near else ""
        raise src.error(
            "profile",
            f"required key is missing ({hint}a profile name or a "
            f".toml path; shipped: {', '.join(profiles.shipped())})",
        )
    prof = profiles.load(find_profile(dev, profiles.PROTOCOL, profiles.PROFILE_DIR))
    o = Options.of(dev)
    registers = _addresses(o, "writable_registers")
    coils = _addresses(o, "writable_coils")
    o.finish()
    return DeviceSettings(dev.id, addr, prof, dev.poll_interval, registers, coils)


def _addresses(o: Options, key: str) -> frozenset[int]:
    """An optional array of 0-based Modbus addresses (0-65535)."""
    raw = o.raw(key, [])
    if not isinstance(raw, list) or not all(
        isinstance(a, int) and not isinstance(a, bool) for a in raw
    ):
        raise o.error(key, "expected an array of 0-based addresses (integers 0-65535)")
    for a in raw:
        if not 0 <= a <= 0xFFFF:
            raise o.error(key, f"address {a} is outside 0-65535")
    return frozenset(raw) if raw else _NONE


_NONE: frozenset[int] = frozenset()
"""The empty address set, shared by every device that declares nothing writable."""


@dataclass(frozen=True, slots=True)
class ModbusSettings:
    """A validated Modbus connection and the meters on it, as ``configure`` returns them."""

    name: str
    connection: ConnectionSettings
    devices: tuple[DeviceSettings, ...]

    @property
    def endpoint(self) -> str:
        """Identity of the physical endpoint (two connections may not share one)."""
        return self.connection.endpoint


def configure(conn: ConnectionSpec, devs: Sequence[DeviceSpec]) -> ModbusSettings:
    """Validate a connection and its devices, profiles loaded, once."""
    return ModbusSettings(conn.name, connection(conn), tuple(devices(devs)))


def devices(devs: Sequence[DeviceSpec]) -> list[DeviceSettings]:
    """Validate every device of a connection; unit ids must be unique on it."""
    out: list[DeviceSettings] = []
    units: dict[int, str] = {}
    for dev in devs:
        d = device(dev)
        if d.unit in units:
            raise dev.source.error(
                "address",
                f"unit id {d.unit} is already used by device {units[d.unit]!r} on this connection",
            )
        units[d.unit] = d.id
        out.append(d)
    return out
