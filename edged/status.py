"""The status service: one picture of the daemon for `edged status`, and the metrics gauges.

It reads what the other parts keep (device states from the supervisor, live values,
the windows' drop counts, outbox and uplink statistics, the provisioning) and never
changes any of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edged import tiers
from edged.actions.engine import Engine
from edged.live import LiveValues
from edged.metrics import Metrics
from edged.model import DeviceState, Tier, iso, unit_of
from edged.outbox import Outbox
from edged.provisioning import Provisioning
from edged.supervisor import Supervisor
from edged.uplink import Uplink
from edged.virtual import VirtualMeters
from edged.windows import Windows

if TYPE_CHECKING:  # the server (pymodbus server, aiohttp) is loaded only when configured
    from edged.modbus_server.server import ModbusServer


class StatusService:
    """Status replies and gauges, read from the running parts."""

    def __init__(
        self,
        supervisor: Supervisor,
        live: LiveValues,
        windows: Windows,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.supervisor = supervisor
        self.live = live
        self.windows = windows
        self.metrics = metrics
        self.clock = clock
        self.provisioning: Provisioning | None = None
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.actions: Engine | None = None
        self._tier_gauges_for: Provisioning | None = None
        self._dropped_before = 0
        self._device_ids: frozenset[str] = frozenset()
        self.modbus_server: ModbusServer | None = None
        self.virtual: VirtualMeters | None = None
        self.circuits: Callable[[], list[dict[str, Any]]] | None = None
        """Load management's circuits (edged.loadmgmt), when it runs."""

    def status(self, *, values: bool = False, device: str | None = None) -> dict[str, Any]:
        """A JSON-ready picture of the daemon; with ``values`` each device's live values."""
        prov = self.provisioning
        now = self.clock()
        devices = []
        for dev_id, st in self.supervisor.devices.items():
            if device is not None and dev_id != device:
                continue
            entry: dict[str, Any] = {
                "id": dev_id,
                "driver": st.spec.driver,
                "connection": st.spec.connection,
                "state": st.state.value,
                "cloud_licence": st.spec.cloud_licence.value,
                "interval": prov.intervals.get(dev_id)
                if prov and st.state is not DeviceState.UNLICENSED
                else None,
                "last_sample_age": None
                if st.last_sample is None
                else round(now - st.last_sample, 1),
                "last_error": st.last_error,
                "labels": dict(st.spec.labels),
            }
            if values or device is not None:
                entry["values"] = {
                    name: {
                        "value": lv.value,
                        "unit": unit_of(name),
                        "ts": iso(lv.ts),
                        "age": round(now - lv.ts, 1),
                    }
                    for name, lv in sorted(self.live.of(dev_id).items())
                }
            devices.append(entry)
        if self.virtual is not None:
            devices.extend(_virtual_entries(self, now, values, device))
        out: dict[str, Any] = {
            "gateway": prov.config.gateway.id if prov else None,
            "devices": devices,
        }
        if prov is not None:
            out["licence"] = {"used": prov.licence_used, "total": prov.licence_total}
            out["tier"] = tiers.tier_status(prov.config)
        circuits = self.circuits() if self.circuits is not None else []
        if circuits:
            out["circuits"] = circuits
        if self.outbox is not None:
            s = self.outbox.stats()
            out["outbox"] = {
                "depth": s.depth,
                "bytes": s.bytes,
                "dropped": s.dropped,
                "oldest_age": None if s.oldest is None else round(now - s.oldest, 1),
                "disk_error": s.disk_error,
            }
        if self.uplink is not None:
            u = self.uplink.stats()
            out["uplink"] = {
                "connected": u.connected,
                "published": u.published,
                "acked": u.acked,
                "reconnects": u.reconnects,
                "last_error": u.last_error,
            }
        if self.actions is not None and self.actions.rules:
            out["actions"] = self.actions.status()
        if self.modbus_server is not None:
            out["modbus_server"] = self.modbus_server.status()
        return out

    def attach_outbox(self, outbox: Outbox) -> None:
        """Read this outbox from now on; its drops before this process count as history."""
        self.outbox = outbox
        self._dropped_before = outbox.stats().dropped

    def refresh_gauges(self) -> None:
        """Copy the pipeline's state into the metrics gauges and counters."""
        dropped = self.windows.counts()
        for what in ("late", "nonfinite", "unknown"):
            self.metrics.advance("throttle_dropped", dropped[what], reason=what)
        if self.outbox is not None:
            s = self.outbox.stats()
            self.metrics.set_gauge("outbox_depth", s.depth)
            self.metrics.set_gauge("outbox_bytes", s.bytes)
            self.metrics.advance("outbox_dropped", s.dropped - self._dropped_before)
            self.metrics.set_gauge(
                "outbox_oldest_age", 0.0 if s.oldest is None else max(0.0, self.clock() - s.oldest)
            )
        if self.uplink is not None:
            u = self.uplink.stats()
            self.metrics.set_gauge("uplink_connected", 1.0 if u.connected else 0.0)
            self.metrics.advance("uplink_published", u.published)
            self.metrics.advance("uplink_acked", u.acked)
        self._device_series()
        prov = self.provisioning
        if prov is not None:
            self.metrics.set_gauge("licence_capacity", prov.licence_total)
            self.metrics.set_gauge("licence_used", prov.licence_used)
            if self._tier_gauges_for is not prov:
                self._set_tier_gauges(prov)
        counts = {s: 0 for s in DeviceState}
        for st in self.supervisor.devices.values():
            counts[st.state] += 1
        for state, n in counts.items():
            self.metrics.set_gauge("devices", n, state=state.value)

    def _device_series(self) -> None:
        """Per-device up and last-sample age: one series each, bounded by the device count."""
        devices = self.supervisor.devices
        ids = frozenset(devices)
        if ids != self._device_ids:
            # Devices that left the configuration leave the exposition too.
            self.metrics.clear_gauge("device_up")
            self.metrics.clear_gauge("device_last_sample_age")
            self._device_ids = ids
        now = self.clock()
        for dev_id, st in devices.items():
            driver = st.spec.driver
            up = 1.0 if st.state is DeviceState.ONLINE else 0.0
            self.metrics.set_gauge("device_up", up, device=dev_id, driver=driver)
            if st.last_sample is not None:
                self.metrics.set_gauge(
                    "device_last_sample_age",
                    max(0.0, now - st.last_sample),
                    device=dev_id,
                    driver=driver,
                )

    def _set_tier_gauges(self, prov: Provisioning) -> None:
        """Account tier, interval in force and each device's cloud licence (1 = the current)."""
        status = tiers.tier_status(prov.config)
        for tier in Tier:
            self.metrics.set_gauge(
                "account_tier",
                1.0 if tier.value == status["account_tier"] else 0.0,
                tier=tier.value,
            )
        self.metrics.set_gauge("account_tier_interval", float(status["interval"]))
        # One series per device (its current tier): a gateway may carry a thousand meters.
        self.metrics.clear_gauge("device_cloud_licence")
        for dev in prov.config.devices:
            self.metrics.set_gauge(
                "device_cloud_licence", 1.0, device=dev.id, tier=dev.cloud_licence.value
            )
        # Labels as series of their own: the set of label keys differs between devices,
        # and one series per device and label keeps the count bounded by the configuration.
        self.metrics.clear_gauge("device_label")
        for dev in prov.config.devices:
            for key, value in sorted(dev.labels.items()):
                self.metrics.set_gauge("device_label", 1.0, device=dev.id, key=key, value=value)
        self._tier_gauges_for = prov


def _virtual_entries(
    svc: StatusService, now: float, values: bool, device: str | None
) -> list[dict[str, Any]]:
    """Status lines of the virtual meters (state ``stale`` with the reason, or ``online``)."""
    assert svc.virtual is not None
    prov = svc.provisioning
    tiers_of = {v.id: v.cloud_licence.value for v in prov.config.virtual_meters} if prov else {}
    out: list[dict[str, Any]] = []
    for vs in svc.virtual.status():
        if device is not None and vs.id != device:
            continue
        entry: dict[str, Any] = {
            "id": vs.id,
            "driver": "virtual",
            "connection": None,
            "state": "stale" if vs.stale else "online",
            "cloud_licence": tiers_of.get(vs.id),
            "interval": svc.windows.interval(vs.id),
            "last_sample_age": None if vs.last_sample is None else round(now - vs.last_sample, 1),
            "last_error": vs.reason or None,
            "sources": list(vs.sources),
        }
        if values or device is not None:
            entry["values"] = {
                name: {
                    "value": lv.value,
                    "unit": unit_of(name),
                    "ts": iso(lv.ts),
                    "age": round(now - lv.ts, 1),
                }
                for name, lv in sorted(svc.live.of(vs.id).items())
            }
        out.append(entry)
    return out
