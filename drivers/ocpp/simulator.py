"""Simulated OCPP charge points (1.6J and 2.0.1) built on the ``ocpp`` package's client side.

Each simulated charger boots, reports its connector status, starts a transaction
and sends meter values at a fixed interval. Its charging power follows the
charging profiles it is sent, so load management can be seen working. Used by the
tests and the fleet benchmark, and started by ``edged sim ocpp``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import random
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from drivers.ocpp._lib import (
    ChargePoint16,
    ChargePoint201,
    after,
    call16,
    call201,
    on,
    result16,
    result201,
)
from drivers.ocpp.settings import SUBPROTOCOLS, VERSIONS
from edged.model import iso

log = logging.getLogger("edged.ocpp.sim")
# The ocpp library logs every frame at INFO; keep that out of the simulator's output.
frame_log = logging.getLogger("edged.ocpp.sim.frames")
frame_log.setLevel(logging.WARNING)

# Messages a TriggerMessage may ask the simulated charger for (both OCPP versions).
TRIGGERABLE = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification")

NOMINAL_VOLTAGE = 230.0
PHASES = 3
BATTERY_WH = 60_000.0


@dataclass(frozen=True)
class SimConfig:
    """How a simulated charger behaves."""

    url: str
    charge_point_id: str
    version: str = "1.6"
    interval: float = 10.0
    password: str | None = None
    max_power_w: float = 11_000.0
    id_tag: str = "SIMTAG"
    auto_start: bool = True
    ssl: ssl.SSLContext | None = None
    vendor: str = "edged"
    model: str = "SimCharger"


def _now() -> str:
    return iso(time.time())


class SimCharger:
    """One simulated charger: its electrical state and its OCPP session."""

    def __init__(self, config: SimConfig, say: Callable[[str], None] | None = None):
        if config.version not in VERSIONS:
            raise ValueError(f"unsupported OCPP version {config.version!r}")
        self.config = config
        self.say = say or (lambda text: log.info("%s", text))
        self.energy_wh = 1_000_000.0
        self.limits_w: dict[str, float] = {}
        """Active charging limits by profile purpose, in W."""
        self.transaction_id: str | None = None
        self.meter_values_sent = 0
        self.booted = asyncio.Event()
        self.charging = asyncio.Event()
        self.connection: ClientConnection | None = None
        self.configuration: dict[str, str] = {
            "HeartbeatInterval": "300",
            "MeterValueSampleInterval": str(int(config.interval)),
        }
        self._cp: Any = None
        self._seq = -1
        """TransactionEvent sequence number (2.0.1)."""
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- electrical model ------------------------------------------------------------------

    @property
    def power_w(self) -> float:
        """Power drawn now: the car's maximum, capped by every active charging limit."""
        if self.transaction_id is None:
            return 0.0
        return min([self.config.max_power_w, *self.limits_w.values()])

    def apply_limit(self, purpose: str, limit: float, unit: str, phases: int | None) -> None:
        """Take a charging profile's first period as the limit for its purpose."""
        watts = limit * NOMINAL_VOLTAGE * (phases or PHASES) if unit == "A" else limit
        self.limits_w[purpose] = max(0.0, watts)
        self.say(
            f"{self.config.charge_point_id}: limit {purpose} {limit} {unit} -> {self.power_w:.0f} W"
        )

    @property
    def soc(self) -> float:
        """The car's state of charge, %."""
        return min(100.0, 20.0 + (self.energy_wh - 1_000_000.0) / BATTERY_WH * 100.0)

    # -- session ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if self.config.password is None:
            return {}
        token = f"{self.config.charge_point_id}:{self.config.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(token).decode()}

    async def run(self) -> None:
        """Connect once and run the session until the connection closes."""
        cfg = self.config
        url = cfg.url.rstrip("/") + "/" + cfg.charge_point_id
        async with connect(
            url,
            subprotocols=[Subprotocol(SUBPROTOCOLS[cfg.version])],
            additional_headers=self._headers(),
            ssl=cfg.ssl,
            open_timeout=30,
            ping_interval=None,
        ) as ws:
            self.connection = ws
            cls = _SimSession16 if cfg.version == "1.6" else _SimSession201
            self._cp = cls(cfg.charge_point_id, ws, self)
            flow = asyncio.create_task(self._flow())
            flow.add_done_callback(self._flow_ended)
            try:
                await self._cp.start()
            except ConnectionClosed:
                pass
            finally:
                await _cancel(flow)
                for task in list(self._tasks):
                    task.cancel()
                self.booted.clear()
                self.connection = None

    def _flow_ended(self, task: asyncio.Task[None]) -> None:
        # A refused boot or a timed-out call ends the flow; reconnecting starts it over.
        if task.cancelled() or task.exception() is None:
            return
        self.say(f"{self.config.charge_point_id}: {task.exception()!r}; closing the connection")
        if self.connection is not None:
            self.spawn(self.connection.close())

    async def close(self) -> None:
        """Close the WebSocket (the charger goes away)."""
        if self.connection is not None:
            await self.connection.close()

    def spawn(self, coro: Any) -> None:
        """Run a charger-initiated exchange outside the handler that asked for it."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, payload: Any) -> Any:
        return await self._cp.call(payload, suppress=False)

    async def _flow(self) -> None:
        cfg = self.config
        boot = await self.boot()
        self.say(f"{cfg.charge_point_id}: boot {boot.status}, heartbeat {boot.interval} s")
        self.booted.set()
        await self.status_notification("Available")
        if cfg.auto_start:
            await self.start_transaction(cfg.id_tag)
        heartbeat = max(1.0, float(boot.interval))
        next_heartbeat = time.monotonic() + heartbeat
        while True:
            await asyncio.sleep(cfg.interval)
            self.energy_wh += self.power_w * cfg.interval / 3600.0
            await self.send_meter_values()
            if time.monotonic() >= next_heartbeat:
                next_heartbeat += heartbeat
                await self._call(self._v.Heartbeat())

    @property
    def _v(self) -> Any:
        return call16 if self.config.version == "1.6" else call201

    async def boot(self) -> Any:
        """Send a BootNotification."""
        cfg = self.config
        if cfg.version == "1.6":
            return await self._call(
                call16.BootNotification(
                    charge_point_vendor=cfg.vendor,
                    charge_point_model=cfg.model,
                    firmware_version="sim-1.0",
                    charge_point_serial_number=cfg.charge_point_id,
                )
            )
        return await self._call(
            call201.BootNotification(
                charging_station={
                    "vendor_name": cfg.vendor,
                    "model": cfg.model,
                    "firmware_version": "sim-1.0",
                    "serial_number": cfg.charge_point_id,
                },
                reason="PowerUp",
            )
        )

    async def status_notification(self, status: str) -> None:
        """Report the connector status (1.6 names; mapped for 2.0.1)."""
        if self.config.version == "1.6":
            await self._call(
                call16.StatusNotification(
                    connector_id=1, error_code="NoError", status=status, timestamp=_now()
                )
            )
            return
        mapped = {"Charging": "Occupied", "Preparing": "Occupied"}.get(status, status)
        await self._call(
            call201.StatusNotification(
                timestamp=_now(), connector_status=mapped, evse_id=1, connector_id=1
            )
        )

    def _sampled(self) -> list[dict[str, Any]]:
        power = self.power_w
        amps = power / NOMINAL_VOLTAGE / PHASES
        offered = min([self.config.max_power_w, *self.limits_w.values()])
        if self.config.version == "1.6":
            values: list[dict[str, Any]] = [
                {
                    "value": f"{self.energy_wh / 1000:.3f}",
                    "measurand": "Energy.Active.Import.Register",
                    "unit": "kWh",
                    "context": "Sample.Periodic",
                    "location": "Outlet",
                },
                {
                    "value": f"{power:.1f}",
                    "measurand": "Power.Active.Import",
                    "unit": "W",
                    "context": "Sample.Periodic",
                },
                {
                    "value": f"{offered / NOMINAL_VOLTAGE / PHASES:.1f}",
                    "measurand": "Current.Offered",
                    "unit": "A",
                    "context": "Sample.Periodic",
                },
                {
                    "value": f"{self.soc:.1f}",
                    "measurand": "SoC",
                    "unit": "Percent",
                    "context": "Sample.Periodic",
                    "location": "EV",
                },
            ]
            for n in (1, 2, 3):
                values.append(
                    {
                        "value": f"{amps:.2f}",
                        "measurand": "Current.Import",
                        "phase": f"L{n}",
                        "unit": "A",
                        "context": "Sample.Periodic",
                    }
                )
                values.append(
                    {
                        "value": f"{NOMINAL_VOLTAGE:.1f}",
                        "measurand": "Voltage",
                        "phase": f"L{n}-N",
                        "unit": "V",
                        "context": "Sample.Periodic",
                    }
                )
            return values
        values = [
            {
                "value": round(self.energy_wh / 1000, 3),
                "measurand": "Energy.Active.Import.Register",
                "unit_of_measure": {"unit": "Wh", "multiplier": 3},
                "context": "Sample.Periodic",
            },
            {
                "value": round(power, 1),
                "measurand": "Power.Active.Import",
                "unit_of_measure": {"unit": "W"},
                "context": "Sample.Periodic",
            },
            {
                "value": round(offered, 1),
                "measurand": "Power.Offered",
                "unit_of_measure": {"unit": "W"},
                "context": "Sample.Periodic",
            },
            {
                "value": round(self.soc, 1),
                "measurand": "SoC",
                "unit_of_measure": {"unit": "Percent"},
                "context": "Sample.Periodic",
            },
        ]
        for n in (1, 2, 3):
            values.append(
                {
                    "value": round(amps, 2),
                    "measurand": "Current.Import",
                    "phase": f"L{n}",
                    "unit_of_measure": {"unit": "A"},
                    "context": "Sample.Periodic",
                }
            )
            values.append(
                {
                    "value": NOMINAL_VOLTAGE,
                    "measurand": "Voltage",
                    "phase": f"L{n}-N",
                    "unit_of_measure": {"unit": "V"},
                    "context": "Sample.Periodic",
                }
            )
        return values

    async def send_meter_values(self) -> None:
        """Send one set of meter values (in the transaction when one runs)."""
        entry = {"timestamp": _now(), "sampled_value": self._sampled()}
        if self.config.version == "1.6":
            tx = int(self.transaction_id) if self.transaction_id else None
            await self._call(
                call16.MeterValues(connector_id=1, meter_value=[entry], transaction_id=tx)
            )
        elif self.transaction_id is not None:
            await self._call(self._tx_event("Updated", "MeterValuePeriodic", [entry]))
        else:
            await self._call(call201.MeterValues(evse_id=1, meter_value=[entry]))
        self.meter_values_sent += 1

    def _tx_event(self, event: str, trigger: str, meter_value: list[Any] | None) -> Any:
        self._seq += 1
        info: dict[str, Any] = {"transaction_id": self.transaction_id}
        if event == "Ended":
            info["stopped_reason"] = "Remote"
        return call201.TransactionEvent(
            event_type=event,
            timestamp=_now(),
            trigger_reason=trigger,
            seq_no=self._seq,
            transaction_info=info,
            meter_value=meter_value,
            evse={"id": 1, "connector_id": 1},
            id_token={"id_token": self.config.id_tag, "type": "ISO14443"}
            if event == "Started"
            else None,
        )

    async def start_transaction(self, id_tag: str) -> None:
        """Plug in and start charging."""
        if self.transaction_id is not None:
            return
        await self.status_notification("Preparing")
        if self.config.version == "1.6":
            res = await self._call(
                call16.StartTransaction(
                    connector_id=1,
                    id_tag=id_tag,
                    meter_start=round(self.energy_wh),
                    timestamp=_now(),
                )
            )
            if res.id_tag_info.get("status") != "Accepted":
                self.say(f"{self.config.charge_point_id}: id tag {id_tag} refused")
                await self.status_notification("Available")
                return
            self.transaction_id = str(res.transaction_id)
        else:
            self.transaction_id = f"{self.config.charge_point_id}-{int(time.time() * 1000)}"
            first = dict(self._sampled()[0], context="Transaction.Begin")
            entry = {"timestamp": _now(), "sampled_value": [first]}
            await self._call(self._tx_event("Started", "Authorized", [entry]))
        await self.status_notification("Charging")
        self.charging.set()
        self.say(f"{self.config.charge_point_id}: transaction {self.transaction_id} started")

    async def stop_transaction(self) -> None:
        """Stop charging and unplug."""
        tx = self.transaction_id
        if tx is None:
            return
        if self.config.version == "1.6":
            await self._call(
                call16.StopTransaction(
                    meter_stop=round(self.energy_wh),
                    timestamp=_now(),
                    transaction_id=int(tx),
                    reason="Remote",
                )
            )
        else:
            await self._call(self._tx_event("Ended", "RemoteStop", None))
        self.transaction_id = None
        self.charging.clear()
        await self.status_notification("Available")
        self.say(f"{self.config.charge_point_id}: transaction {tx} stopped")


async def _cancel(task: asyncio.Task[Any]) -> None:
    # Python 3.11's wait_for (inside ocpp's call()) can swallow a cancellation that
    # arrives just as the answer does; repeat until the task really ended.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()


class _SimSession16(ChargePoint16):  # type: ignore[misc]  # ocpp is untyped
    def __init__(self, cp_id: str, ws: ClientConnection, sim: SimCharger):
        super().__init__(cp_id, ws, response_timeout=30, logger=frame_log)
        self.sim = sim

    @on("SetChargingProfile")
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: Any, **kw: Any
    ) -> Any:
        schedule = cs_charging_profiles["charging_schedule"]
        period = schedule["charging_schedule_period"][0]
        self.sim.apply_limit(
            cs_charging_profiles["charging_profile_purpose"],
            float(period["limit"]),
            schedule["charging_rate_unit"],
            period.get("number_phases"),
        )
        return result16.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **kw: Any) -> Any:
        purpose = kw.get("charging_profile_purpose")
        if purpose:
            self.sim.limits_w.pop(purpose, None)
        else:
            self.sim.limits_w.clear()
        return result16.ClearChargingProfile(status="Accepted")

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, **kw: Any) -> Any:
        return result16.RemoteStartTransaction(status="Accepted")

    @after("RemoteStartTransaction")
    def after_remote_start(self, id_tag: str, **kw: Any) -> None:
        self.sim.spawn(self.sim.start_transaction(id_tag))

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id: int, **kw: Any) -> Any:
        ok = str(transaction_id) == self.sim.transaction_id
        return result16.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @after("RemoteStopTransaction")
    def after_remote_stop(self, transaction_id: int, **kw: Any) -> None:
        if str(transaction_id) == self.sim.transaction_id:
            self.sim.spawn(self.sim.stop_transaction())

    @on("GetConfiguration")
    def on_get_configuration(self, **kw: Any) -> Any:
        conf = self.sim.configuration
        keys = kw.get("key") or list(conf)
        known = [{"key": k, "readonly": False, "value": conf[k]} for k in keys if k in conf]
        unknown = [k for k in keys if k not in conf]
        return result16.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str, **kw: Any) -> Any:
        if key not in self.sim.configuration:
            return result16.ChangeConfiguration(status="NotSupported")
        self.sim.configuration[key] = value
        return result16.ChangeConfiguration(status="Accepted")

    @on("Reset")
    def on_reset(self, type: str, **kw: Any) -> Any:
        return result16.Reset(status="Accepted")

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, **kw: Any) -> Any:
        ok = requested_message in TRIGGERABLE
        return result16.TriggerMessage(status="Accepted" if ok else "NotImplemented")

    @after("TriggerMessage")
    def after_trigger_message(self, requested_message: str, **kw: Any) -> None:
        _triggered(self.sim, requested_message)


class _SimSession201(ChargePoint201):  # type: ignore[misc]  # ocpp is untyped
    def __init__(self, cp_id: str, ws: ClientConnection, sim: SimCharger):
        super().__init__(cp_id, ws, response_timeout=30, logger=frame_log)
        self.sim = sim

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id: int, charging_profile: Any, **kw: Any) -> Any:
        schedule = charging_profile["charging_schedule"][0]
        period = schedule["charging_schedule_period"][0]
        self.sim.apply_limit(
            charging_profile["charging_profile_purpose"],
            float(period["limit"]),
            schedule["charging_rate_unit"],
            period.get("number_phases"),
        )
        return result201.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **kw: Any) -> Any:
        self.sim.limits_w.clear()
        return result201.ClearChargingProfile(status="Accepted")

    @on("RequestStartTransaction")
    def on_request_start(self, id_token: dict[str, Any], remote_start_id: int, **kw: Any) -> Any:
        return result201.RequestStartTransaction(status="Accepted")

    @after("RequestStartTransaction")
    def after_request_start(self, id_token: dict[str, Any], **kw: Any) -> None:
        self.sim.spawn(self.sim.start_transaction(str(id_token.get("id_token"))))

    @on("RequestStopTransaction")
    def on_request_stop(self, transaction_id: str, **kw: Any) -> Any:
        ok = transaction_id == self.sim.transaction_id
        return result201.RequestStopTransaction(status="Accepted" if ok else "Rejected")

    @after("RequestStopTransaction")
    def after_request_stop(self, transaction_id: str, **kw: Any) -> None:
        if transaction_id == self.sim.transaction_id:
            self.sim.spawn(self.sim.stop_transaction())

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **kw: Any) -> Any:
        results = []
        for item in get_variable_data:
            name = item["variable"]["name"]
            value = self.sim.configuration.get(name)
            entry: dict[str, Any] = {
                "attribute_status": "Accepted" if value is not None else "UnknownVariable",
                "component": item["component"],
                "variable": item["variable"],
            }
            if value is not None:
                entry["attribute_value"] = value
            results.append(entry)
        return result201.GetVariables(get_variable_result=results)

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **kw: Any) -> Any:
        results = []
        for item in set_variable_data:
            name = item["variable"]["name"]
            known = name in self.sim.configuration
            if known:
                self.sim.configuration[name] = item["attribute_value"]
            results.append(
                {
                    "attribute_status": "Accepted" if known else "UnknownVariable",
                    "component": item["component"],
                    "variable": item["variable"],
                }
            )
        return result201.SetVariables(set_variable_result=results)

    @on("Reset")
    def on_reset(self, type: str, **kw: Any) -> Any:
        return result201.Reset(status="Accepted")

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, **kw: Any) -> Any:
        ok = requested_message in TRIGGERABLE
        return result201.TriggerMessage(status="Accepted" if ok else "NotImplemented")

    @after("TriggerMessage")
    def after_trigger_message(self, requested_message: str, **kw: Any) -> None:
        _triggered(self.sim, requested_message)


def _triggered(sim: SimCharger, message: str) -> None:
    if message == "BootNotification":
        sim.spawn(sim.boot())
    elif message == "Heartbeat":
        sim.spawn(sim._call(sim._v.Heartbeat()))
    elif message == "MeterValues":
        sim.spawn(sim.send_meter_values())
    elif message == "StatusNotification":
        sim.spawn(sim.status_notification("Charging" if sim.transaction_id else "Available"))


class Fleet:
    """N simulated chargers that reconnect with backoff until stopped."""

    def __init__(
        self,
        configs: list[SimConfig],
        say: Callable[[str], None] | None = None,
        connect_concurrency: int = 50,
    ):
        self.chargers = [SimCharger(c, say) for c in configs]
        self.say = say or (lambda text: log.info("%s", text))
        self._gate = asyncio.Semaphore(connect_concurrency)

    @property
    def connected(self) -> int:
        """How many chargers have booted on an open connection."""
        return sum(1 for c in self.chargers if c.booted.is_set())

    async def _keep(self, charger: SimCharger) -> None:
        delay = 1.0
        while True:
            try:
                async with self._gate:
                    runner = asyncio.create_task(charger.run())
                    # Hold the connect slot only until the charger booted or failed.
                    waiter = asyncio.create_task(charger.booted.wait())
                    await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                await runner
                delay = 1.0
                self.say(f"{charger.config.charge_point_id}: disconnected, reconnecting")
            except InvalidStatus as e:
                self.say(
                    f"{charger.config.charge_point_id}: refused with HTTP {e.response.status_code}"
                )
                delay = min(delay * 2, 60.0)
            except (OSError, ConnectionClosed, TimeoutError, InvalidHandshake) as e:
                self.say(f"{charger.config.charge_point_id}: connection failed: {e}")
                delay = min(delay * 2, 30.0)
            except Exception as e:
                # One charger's surprise must not end the whole fleet.
                log.exception("simulated charger failed cp=%s", charger.config.charge_point_id)
                self.say(f"{charger.config.charge_point_id}: failed: {e!r}")
                delay = min(delay * 2, 60.0)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))

    async def run(self) -> None:
        """Run every charger until cancelled."""
        async with asyncio.TaskGroup() as group:
            for charger in self.chargers:
                group.create_task(self._keep(charger))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edged sim ocpp",
        description="Simulated OCPP charge points that connect to a central system.",
    )
    p.add_argument(
        "--url",
        default="ws://127.0.0.1:9000",
        help="central system URL (the charge point id is appended)",
    )
    p.add_argument("--count", type=int, default=1, help="number of chargers")
    p.add_argument("--version", choices=VERSIONS, default="1.6", help="OCPP version")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between meter values")
    p.add_argument("--password", default=None, help="Basic auth password (security profile 1/2)")
    p.add_argument(
        "--prefix", default="CP", help="charge point ids are PREFIX0001, PREFIX0002, ..."
    )
    p.add_argument("--start", type=int, default=1, help="number of the first charger")
    p.add_argument(
        "--max-power", type=float, default=11_000.0, help="charging power in W before limits"
    )
    p.add_argument("--cafile", default=None, help="CA certificate to trust for wss:// URLs")
    p.add_argument("--quiet", action="store_true", help="print only a summary line every 10 s")
    return p


def charger_ids(prefix: str, count: int, start: int = 1) -> list[str]:
    """The charge point ids the simulator uses: PREFIX0001 ..."""
    width = max(4, len(str(start + count - 1)))
    return [f"{prefix}{n:0{width}d}" for n in range(start, start + count)]


def main(argv: list[str]) -> int:
    """``edged sim ocpp``: run simulated chargers until SIGINT or SIGTERM."""
    args = _parser().parse_args(argv)
    if args.count < 1 or args.interval <= 0:
        sys.stderr.write("edged sim ocpp: --count must be >= 1 and --interval > 0\n")
        return 2
    tls: ssl.SSLContext | None = None
    if args.url.startswith("wss://"):
        tls = ssl.create_default_context(cafile=args.cafile)

    def say(text: str) -> None:
        if not args.quiet:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    configs = [
        SimConfig(
            url=args.url,
            charge_point_id=cp,
            version=args.version,
            interval=args.interval,
            password=args.password,
            max_power_w=args.max_power,
            ssl=tls,
        )
        for cp in charger_ids(args.prefix, args.count, args.start)
    ]
    sys.stdout.write(
        f"simulating {args.count} OCPP {args.version} charger(s) {configs[0].charge_point_id}.."
        f"{configs[-1].charge_point_id} -> {args.url}, meter values every {args.interval} s\n"
    )
    sys.stdout.flush()
    return asyncio.run(_run_until_signal(Fleet(configs, say)))


async def _run_until_signal(fleet: Fleet) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(fleet.run())

    async def report() -> None:
        while True:
            await asyncio.sleep(10)
            sent = sum(c.meter_values_sent for c in fleet.chargers)
            sys.stdout.write(
                f"connected {fleet.connected}/{len(fleet.chargers)}, meter values sent {sent}\n"
            )
            sys.stdout.flush()

    reporter = asyncio.create_task(report())
    await stop.wait()
    sys.stdout.write("stopping\n")
    for task in (runner, reporter):
        task.cancel()
    for task in (runner, reporter):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
