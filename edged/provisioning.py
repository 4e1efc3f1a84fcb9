"""From a loaded configuration to what runs: drivers configured, devices admitted, intervals.

``provision`` validates everything a start or a reload needs without touching a device:
each connection's driver validates its own keys once into frozen settings, two
connections may not share one bus, tier features and publish intervals are worked out,
and the device-capacity licence admits devices in configuration order.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged import api, tiers
from edged.actions import config as actions_config
from edged.config import Config
from edged.energyconfig import check_export
from edged.licensing import enforcement
from edged.model import DeviceSpec, Source

log = logging.getLogger("edged.provisioning")


@dataclass(frozen=True)
class Connection:
    """One configured connection: its driver and the settings it runs with.

    ``settings`` cover the connection's admitted devices only: an unlicensed device is
    validated like any other but never handed to the driver.
    """

    driver: api.AnyDriver
    settings: Any


@dataclass(frozen=True)
class Provisioning:
    """A validated configuration and everything derived from it."""

    config: Config
    connections: Mapping[str, Connection]
    admitted: tuple[DeviceSpec, ...]
    unlicensed: tuple[DeviceSpec, ...]
    intervals: Mapping[str, float]
    warnings: tuple[str, ...]
    licence_used: int
    licence_total: int


def provision(
    config: Config, *, licence_dir: Path | None = None, now: float | None = None
) -> Provisioning:
    """Validate everything a start needs; raise ConfigError naming file and key."""
    connections: dict[str, Connection] = {}
    endpoints: dict[str, str] = {}
    by_conn: dict[str, list[DeviceSpec]] = {name: [] for name in config.connections}
    for dev in config.devices:
        by_conn[dev.connection].append(dev)
    for name, conn in config.connections.items():
        drv = api.get(conn.driver, Source(conn.source.file, f"{conn.source.key}.driver"))
        settings = drv.configure(conn, by_conn[name])
        ep = settings.endpoint
        if ep in endpoints:
            raise conn.source.error(
                "",
                f"uses the same bus {ep} as connection {endpoints[ep]!r}: one bus, one "
                "connection (put all its devices on that connection)",
            )
        endpoints[ep] = name
        connections[name] = Connection(drv, settings)
    tiers.check_features(config)
    actions_config.check(config.actions, _describer(config, connections))
    check_export(
        config.cloud.features.get("auto_export", False), config.export, str(config.files[0])
    )
    intervals, warnings = tiers.publish_intervals(config)
    result = enforcement.admit(
        config, licence_dir or config.licensing.directory, now if now is not None else time.time()
    )
    if result.clock_warning:
        log.warning("licence clock: %s", result.clock_warning)
    if log.isEnabledFor(logging.DEBUG):
        for dev in result.admitted:
            log.debug(
                "device admitted device=%s driver=%s cloud_licence=%s interval=%g",
                dev.id,
                dev.driver,
                dev.cloud_licence.value,
                intervals.get(dev.id, 0.0),
            )
        for dev in result.unlicensed:
            log.debug(
                "device not admitted device=%s reason=capacity used=%d total=%d",
                dev.id,
                result.used,
                result.total,
            )
    prov = Provisioning(
        config,
        connections,
        result.admitted,
        result.unlicensed,
        intervals,
        tuple(warnings),
        result.used,
        result.total,
    )
    return _admitted_only(prov, set(config.connections), reuse=True)


def _describer(config: Config, connections: Mapping[str, Connection]) -> actions_config.Describe:
    """What each device's driver says it serves and takes (for checking the rules)."""
    devices = {d.id: d for d in config.devices}

    def describe(device_id: str) -> tuple[str, api.DeviceInfo | None] | None:
        dev = devices.get(device_id)
        if dev is None:
            return None
        conn = connections[dev.connection]
        if not isinstance(conn.driver, api.Describes):
            return dev.driver, None
        return dev.driver, conn.driver.describe(conn.settings, device_id)

    return describe


def readmit(prov: Provisioning, result: enforcement.AdmissionResult) -> Provisioning:
    """The provisioning after a licence change: new admitted devices, settings to match."""
    return with_admitted(
        prov,
        result.admitted,
        result.unlicensed,
        used=result.used,
        total=result.total,
    )


def with_admitted(
    prov: Provisioning,
    admitted: tuple[DeviceSpec, ...],
    unlicensed: tuple[DeviceSpec, ...],
    *,
    used: int | None = None,
    total: int | None = None,
) -> Provisioning:
    """The same configuration with another set of admitted devices (settings to match)."""
    before = {d.id for d in prov.admitted}
    after = {d.id for d in admitted}
    changed = {
        d.connection for d in (*prov.admitted, *admitted) if (d.id in before) != (d.id in after)
    }
    updated = dataclasses.replace(
        prov,
        admitted=admitted,
        unlicensed=unlicensed,
        licence_used=prov.licence_used if used is None else used,
        licence_total=prov.licence_total if total is None else total,
    )
    return _admitted_only(updated, changed)


def _admitted_only(prov: Provisioning, names: set[str], *, reuse: bool = False) -> Provisioning:
    """Configure the named connections for their admitted devices.

    ``provision`` configured every connection with all its devices, so a mistake on an
    unlicensed device is still an error; a connection runs its admitted devices only.
    With ``reuse`` the settings of a connection whose devices are all admitted are kept.
    """
    connections = dict(prov.connections)
    for name in sorted(names):
        conn = prov.config.connections[name]
        admitted = [d for d in prov.admitted if d.connection == name]
        if reuse and len(admitted) == sum(1 for d in prov.config.devices if d.connection == name):
            continue
        drv = connections[name].driver
        connections[name] = Connection(drv, drv.configure(conn, admitted))
    return dataclasses.replace(prov, connections=connections)
