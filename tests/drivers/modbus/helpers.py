"""Test helpers: Modbus connection and device spec builders (the fake context is tests.fakes)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from edged.model import ConnectionSpec, DeviceSpec, Source


def conn(name: str = "bus", file: str | None = None, **settings: Any) -> ConnectionSpec:
    """A Modbus ConnectionSpec with these settings."""
    return ConnectionSpec(
        name, "modbus", MappingProxyType(dict(settings)), Source(file, f"connections.{name}")
    )


def dev(
    id: str,
    profile: str,
    address: int | str | None = 1,
    poll_interval: float = 1.0,
    connection: str = "bus",
    file: str | None = None,
    index: int = 0,
    settings: Mapping[str, Any] | None = None,
) -> DeviceSpec:
    """A Modbus DeviceSpec."""
    return DeviceSpec(
        id=id,
        driver="modbus",
        connection=connection,
        address=address,
        profile=profile,
        poll_interval=poll_interval,
        settings=MappingProxyType(dict(settings or {})),
        source=Source(file, f"devices[{index}]"),
    )
