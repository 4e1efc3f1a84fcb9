"""Simulated OCPP charge points (1.6J and 2.0.1) built on the ``ocpp`` package's client side.

Each simulated charger boots, reports its connector status, starts a transaction (unless
``auto_start`` is off) and sends meter values at a fixed interval. It behaves like a real
charger towards smart charging, so load management can be tested in a closed loop:

- it keeps the charging profiles it is sent, per purpose, stack level and connector (a new
  profile with the same id, or the same purpose, stack level and connector, replaces the
  old one), each with its start (when it arrived) and its schedule's ``duration``;
- its composite limit is min(station maximum profile, the running transaction's TxProfile
  with the highest stack level, or else the highest TxDefaultProfile); expired profiles
  drop out on their own, a TxProfile ends with its transaction; profiles survive a lost
  connection, as on a real charger;
- the car draws min(its maximum current, the limit) on its phases (3, or 1 on L1/L2/L3),
  following a change of the limit ``profile_delay`` seconds late; with no profile it draws
  its maximum; a limit below 6 A pauses it (0 A);
- meter values report what it draws: Current.Import per phase, Power.Active.Import,
  Energy.Active.Import.Register, Current.Offered (and Power.Offered in 2.0.1).

In-process API (tests and benches, on the event loop that runs the charger)::

    sim = SimCharger(SimConfig(url, "CP1", version="2.0.1", phases=1, phase=2,
                               max_current=16, profile_delay=2.0, auto_start=False))
    task = asyncio.create_task(sim.run())      # one connection; Fleet reconnects
    await sim.booted.wait()
    await sim.plug_in(id_tag="TAG1")           # Preparing, Authorize, transaction, Charging
    sim.drawn_current()                        # (L1, L2, L3) in A, now
    sim.composite_limit()                      # A per phase from the profiles, or None
    sim.profiles                               # installed profiles by id
    await sim.unplug()                         # transaction ends, Available

``edged sim ocpp`` runs a fleet from the command line (``--phases``, ``--phase``,
``--max-current``, ``--profile-delay`` (2 s there; 0 in ``SimConfig``), ``--reject-profiles``).
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
from drivers.ocpp.sim_profiles import MIN_CURRENT, Profile, composite
from edged.model import iso

log = logging.getLogger("edged.ocpp.sim")
# The ocpp library logs every frame at INFO; keep that out of the simulator's output.
frame_log = logging.getLogger("edged.ocpp.sim.frames")
frame_log.setLevel(logging.WARNING)

# Messages a TriggerMessage may ask the simulated charger for (both OCPP versions).
TRIGGERABLE = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification")

NOMINAL_VOLTAGE = 230.0
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
    phases: int = 3
    """1 or 3: the phases the car charges on."""
    phase: int = 1
    """The phase (1-3, for L1-L3) a 1-phase charger is wired to."""
    max_current: float = 16.0
    """The car's maximum current per phase, A (``max_power_w`` caps it too)."""
    profile_delay: float = 0.0
    """Seconds between a change of the charger's limit and the car drawing the new current."""
    reject_profiles: bool = False
    """Answer SetChargingProfile with Rejected (a charger without smart charging)."""

    def __post_init__(self) -> None:
        if self.phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {self.phases}")
        if self.phase not in (1, 2, 3):
            raise ValueError(f"phase must be 1, 2 or 3, got {self.phase}")
        if self.max_current <= 0 or self.profile_delay < 0:
            raise ValueError("max_current must be > 0 and profile_delay >= 0")


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
        self._profiles: dict[int, Profile] = {}
        # What the profiles and the transaction were at each change, so the car can follow
        # the limit ``profile_delay`` seconds late: (monotonic time, profiles, transaction).
        self._history: list[tuple[float, tuple[Profile, ...], str | None]] = [
            (float("-inf"), (), None)
        ]
        self._energy_at = time.monotonic()
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
        # Transaction ids of 2.0.1 are the charger's: a clock-seeded counter keeps them unique.
        self._tx_number = int(time.time() * 1000)
        self.available = True
        self.local_list: dict[str, str] = {}
        """The local authorization list: id tag -> status."""
        self.local_list_version = 0
        self.reports_sent = 0
        self.received: list[tuple[str, dict[str, Any]]] = []
        """The requests the central system sent (action, arguments), oldest first."""
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- electrical model ------------------------------------------------------------------

    @property
    def profiles(self) -> dict[int, Profile]:
        """The charging profiles installed now, by id (expired ones are gone)."""
        now = time.monotonic()
        for p in [p for p in self._profiles.values() if not p.valid(now) and p.received <= now]:
            del self._profiles[p.id]
        return dict(self._profiles)

    def composite_limit(self) -> float | None:
        """The charger's limit per phase (A) from the profiles installed now; None: no limit."""
        return composite(self._profiles.values(), time.monotonic(), self.transaction_id)

    def followed_limit(self) -> float | None:
        """The limit the car follows now: the charger's limit ``profile_delay`` seconds ago."""
        at = time.monotonic() - self.config.profile_delay
        profiles, tx = next((p, t) for when, p, t in reversed(self._history) if when <= at)
        return composite(profiles, at, tx)

    def drawn_current(self) -> tuple[float, float, float]:
        """The current the car draws now on L1, L2 and L3, A."""
        cfg = self.config
        if self.transaction_id is None:
            return (0.0, 0.0, 0.0)
        amps = min(cfg.max_current, cfg.max_power_w / (NOMINAL_VOLTAGE * cfg.phases))
        limit = self.followed_limit()
        if limit is not None:
            amps = 0.0 if limit < MIN_CURRENT else min(amps, limit)
        if cfg.phases == 3:
            return (amps, amps, amps)
        drawn = [0.0, 0.0, 0.0]
        drawn[cfg.phase - 1] = amps
        return (drawn[0], drawn[1], drawn[2])

    @property
    def power_w(self) -> float:
        """Power drawn now, W."""
        # Rounded so that a W limit comes back as the same W after the trip through amperes.
        return round(sum(self.drawn_current()) * NOMINAL_VOLTAGE, 3)

    def offered_current(self) -> float:
        """The current per phase the charger offers the car now, A."""
        limit = self.composite_limit()
        return self.config.max_current if limit is None else min(limit, self.config.max_current)

    def _changed(self) -> None:
        now = time.monotonic()
        self._history.append((now, tuple(self._profiles.values()), self.transaction_id))
        # Keep the last state older than the delay: it is what the car follows now.
        horizon = now - self.config.profile_delay
        while len(self._history) > 1 and self._history[1][0] <= horizon:
            del self._history[0]

    def install(
        self,
        profile_id: int,
        purpose: str,
        stack_level: int,
        connector: int,
        schedule: dict[str, Any],
        transaction_id: str | None = None,
    ) -> str:
        """Install a charging profile; the answer's status (Accepted or Rejected)."""
        cfg = self.config
        if cfg.reject_profiles:
            return "Rejected"
        if purpose == "TxProfile" and (
            self.transaction_id is None
            or (transaction_id is not None and transaction_id != self.transaction_id)
        ):
            return "Rejected"
        period = schedule["charging_schedule_period"][0]
        limit = float(period["limit"])
        if schedule["charging_rate_unit"] == "W":
            limit /= NOMINAL_VOLTAGE * cfg.phases
        duration = schedule.get("duration")
        profile = Profile(
            id=profile_id,
            purpose=purpose,
            stack_level=stack_level,
            connector=connector,
            limit_a=max(0.0, limit),
            received=time.monotonic(),
            duration=float(duration) if duration is not None else None,
            transaction_id=transaction_id,
        )
        # A profile replaces the one with its id, and the one with its purpose, stack level
        # and connector.
        for old in list(self._profiles.values()):
            if (old.purpose, old.stack_level, old.connector) == (
                purpose,
                stack_level,
                connector,
            ):
                del self._profiles[old.id]
        self._profiles[profile_id] = profile
        self._changed()
        self.say(
            f"{cfg.charge_point_id}: profile {profile_id} {purpose} level {stack_level} "
            f"{period['limit']} {schedule['charging_rate_unit']}"
            f"{f' for {duration} s' if duration is not None else ''}"
            f" -> limit {self.composite_limit()} A"
        )
        return "Accepted"

    def clear(
        self,
        profile_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
        connector: int | None = None,
    ) -> bool:
        """Remove the profiles that match every criterion given; whether any was removed."""
        gone = [
            p.id
            for p in self._profiles.values()
            if (profile_id is None or p.id == profile_id)
            and (purpose is None or p.purpose == purpose)
            and (stack_level is None or p.stack_level == stack_level)
            and (connector is None or p.connector == connector)
        ]
        for pid in gone:
            del self._profiles[pid]
        if gone:
            self._changed()
            self.say(f"{self.config.charge_point_id}: cleared profiles {gone}")
        return bool(gone)

    def update_local_list(self, version: int, update: str, entries: list[tuple[str, Any]]) -> str:
        """Apply a SendLocalList: (tag, status or None to remove) entries; the answer status."""
        if update == "Differential" and version <= self.local_list_version:
            return "VersionMismatch"
        if update == "Full":
            self.local_list.clear()
        for tag, status in entries:
            if status is None:
                self.local_list.pop(tag, None)
            else:
                self.local_list[tag] = status
        self.local_list_version = version
        return "Accepted"

    def composite_in(self, unit: str | None) -> tuple[str, float]:
        """The composite limit for GetCompositeSchedule: (unit, limit), A unless W is asked."""
        amps = self.offered_current()
        if unit == "W":
            return "W", round(amps * NOMINAL_VOLTAGE * self.config.phases, 1)
        return "A", round(amps, 1)

    def _integrate(self) -> None:
        now = time.monotonic()
        self.energy_wh += self.power_w * (now - self._energy_at) / 3600.0
        self._energy_at = now

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
        # After a lost connection the car may still be charging.
        await self.status_notification("Charging" if self.transaction_id else "Available")
        if cfg.auto_start:
            await self.start_transaction(cfg.id_tag)
        heartbeat = max(1.0, float(boot.interval))
        next_heartbeat = time.monotonic() + heartbeat
        while True:
            await asyncio.sleep(cfg.interval)
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
        """What the charger measures now: energy, power, current per phase, offered current."""
        drawn = self.drawn_current()
        power = sum(drawn) * NOMINAL_VOLTAGE
        offered = self.offered_current()
        v16 = self.config.version == "1.6"

        def value(
            measurand: str, number: float, unit: str, digits: int, **extra: Any
        ) -> dict[str, Any]:
            entry: dict[str, Any] = {"measurand": measurand, "context": "Sample.Periodic"}
            if v16:
                entry.update(value=f"{number:.{digits}f}", unit=unit)
            else:
                entry.update(value=round(number, digits), unit_of_measure={"unit": unit})
            entry.update(extra)
            return entry

        # Energy in kWh (1.6) and Wh x 10^3 (2.0.1), as many chargers write it.
        energy = value("Energy.Active.Import.Register", self.energy_wh / 1000, "kWh", 3)
        if not v16:
            energy["unit_of_measure"] = {"unit": "Wh", "multiplier": 3}
        values = [
            energy,
            value("Power.Active.Import", power, "W", 1),
            value("Current.Offered", offered, "A", 1),
            value("SoC", self.soc, "Percent", 1),
        ]
        if not v16:
            values.append(
                value("Power.Offered", offered * NOMINAL_VOLTAGE * self.config.phases, "W", 1)
            )
        for n, amps in enumerate(drawn, start=1):
            values.append(value("Current.Import", amps, "A", 2, phase=f"L{n}"))
            values.append(value("Voltage", NOMINAL_VOLTAGE, "V", 1, phase=f"L{n}-N"))
        if v16:
            values[0]["location"] = "Outlet"
            values[3]["location"] = "EV"
        return values

    async def send_meter_values(self) -> None:
        """Send one set of meter values (in the transaction when one runs)."""
        self._integrate()
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

    def _tx_event(
        self,
        event: str,
        trigger: str,
        meter_value: list[Any] | None,
        id_tag: str | None = None,
        reason: str = "Remote",
        remote_start_id: int | None = None,
    ) -> Any:
        self._seq += 1
        info: dict[str, Any] = {"transaction_id": self.transaction_id}
        if event == "Ended":
            info["stopped_reason"] = reason
        if remote_start_id is not None:
            info["remote_start_id"] = remote_start_id
        return call201.TransactionEvent(
            event_type=event,
            timestamp=_now(),
            trigger_reason=trigger,
            seq_no=self._seq,
            transaction_info=info,
            meter_value=meter_value,
            evse={"id": 1, "connector_id": 1},
            id_token={"id_token": id_tag or self.config.id_tag, "type": "ISO14443"}
            if event == "Started"
            else None,
        )

    async def notify_report(self, request_id: int) -> None:
        """Send the report a GetBaseReport asked for (2.0.1): the configuration, one part."""
        data = [
            {
                "component": {"name": "OCPPCommCtrlr"},
                "variable": {"name": name},
                "variable_attribute": [{"type": "Actual", "value": value}],
            }
            for name, value in sorted(self.configuration.items())
        ]
        await self._call(
            call201.NotifyReport(
                request_id=request_id, generated_at=_now(), seq_no=0, report_data=data
            )
        )
        self.reports_sent += 1

    async def authorize(self, id_tag: str) -> bool:
        """Ask the central system whether an id tag may charge."""
        if self.config.version == "1.6":
            res = await self._call(call16.Authorize(id_tag=id_tag))
            return bool(res.id_tag_info.get("status") == "Accepted")
        res = await self._call(call201.Authorize(id_token={"id_token": id_tag, "type": "ISO14443"}))
        return bool(res.id_token_info.get("status") == "Accepted")

    async def plug_in(self, id_tag: str | None = None) -> bool:
        """A car arrives and its driver presents a tag: Preparing, Authorize, transaction.

        True when the transaction started (False: the tag was refused, or one runs already).
        """
        return await self.start_transaction(id_tag or self.config.id_tag, authorize=True)

    async def unplug(self) -> None:
        """The car leaves: the transaction ends and the connector is Available again."""
        await self.stop_transaction(reason="EVDisconnected")

    async def start_transaction(
        self, id_tag: str, *, authorize: bool = False, remote_start_id: int | None = None
    ) -> bool:
        """Plug in and start charging; True when the transaction started."""
        if self.transaction_id is not None:
            return False
        await self.status_notification("Preparing")
        if authorize and not await self.authorize(id_tag):
            self.say(f"{self.config.charge_point_id}: id tag {id_tag} not authorized")
            await self.status_notification("Available")
            return False
        self._integrate()
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
                return False
            self.transaction_id = str(res.transaction_id)
        else:
            self._tx_number += 1
            self.transaction_id = f"{self.config.charge_point_id}-{self._tx_number}"
            first = dict(self._sampled()[0], context="Transaction.Begin")
            entry = {"timestamp": _now(), "sampled_value": [first]}
            trigger = "RemoteStart" if remote_start_id is not None else "Authorized"
            await self._call(
                self._tx_event("Started", trigger, [entry], id_tag, remote_start_id=remote_start_id)
            )
        self._changed()
        await self.status_notification("Charging")
        self.charging.set()
        self.say(f"{self.config.charge_point_id}: transaction {self.transaction_id} started")
        return True

    async def stop_transaction(self, reason: str = "Remote") -> None:
        """Stop charging and unplug."""
        tx = self.transaction_id
        if tx is None:
            return
        self._integrate()
        # The car stops drawing at once; the transaction's TxProfiles end with it.
        self.transaction_id = None
        for pid in [p.id for p in self._profiles.values() if p.purpose == "TxProfile"]:
            del self._profiles[pid]
        self._changed()
        self.charging.clear()
        if self.config.version == "1.6":
            await self._call(
                call16.StopTransaction(
                    meter_stop=round(self.energy_wh),
                    timestamp=_now(),
                    transaction_id=int(tx),
                    reason=reason,
                )
            )
        else:
            trigger = "RemoteStop" if reason == "Remote" else "EVDeparted"
            self.transaction_id = tx
            event = self._tx_event("Ended", trigger, None, reason=reason)
            self.transaction_id = None
            await self._call(event)
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
        p = cs_charging_profiles
        self.sim.received.append(("SetChargingProfile", {"connector_id": connector_id, **p}))
        tx = p.get("transaction_id")
        status = self.sim.install(
            p["charging_profile_id"],
            p["charging_profile_purpose"],
            p["stack_level"],
            connector_id,
            p["charging_schedule"],
            str(tx) if tx is not None else None,
        )
        return result16.SetChargingProfile(status=status)

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **kw: Any) -> Any:
        self.sim.received.append(("ClearChargingProfile", kw))
        found = self.sim.clear(
            kw.get("id"),
            kw.get("charging_profile_purpose"),
            kw.get("stack_level"),
            kw.get("connector_id"),
        )
        return result16.ClearChargingProfile(status="Accepted" if found else "Unknown")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, connector_id: int, duration: int, **kw: Any) -> Any:
        unit, limit = self.sim.composite_in(kw.get("charging_rate_unit"))
        return result16.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=_now(),
            charging_schedule={
                "duration": duration,
                "charging_rate_unit": unit,
                "charging_schedule_period": [{"start_period": 0, "limit": limit}],
            },
        )

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

    @on("ChangeAvailability")
    def on_change_availability(self, connector_id: int, type: str, **kw: Any) -> Any:
        self.sim.received.append(
            ("ChangeAvailability", {"connector_id": connector_id, "type": type})
        )
        self.sim.available = type == "Operative"
        # A running transaction finishes first, as the specification asks.
        scheduled = self.sim.transaction_id is not None and not self.sim.available
        return result16.ChangeAvailability(status="Scheduled" if scheduled else "Accepted")

    @on("UnlockConnector")
    def on_unlock_connector(self, connector_id: int, **kw: Any) -> Any:
        self.sim.received.append(("UnlockConnector", {"connector_id": connector_id}))
        return result16.UnlockConnector(status="Unlocked" if connector_id == 1 else "NotSupported")

    @on("ClearCache")
    def on_clear_cache(self, **kw: Any) -> Any:
        self.sim.received.append(("ClearCache", kw))
        return result16.ClearCache(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **kw: Any) -> Any:
        self.sim.received.append(("DataTransfer", {"vendor_id": vendor_id, **kw}))
        if vendor_id != self.sim.config.vendor:
            return result16.DataTransfer(status="UnknownVendorId")
        return result16.DataTransfer(status="Accepted", data=kw.get("data"))

    @on("SendLocalList")
    def on_send_local_list(self, list_version: int, update_type: str, **kw: Any) -> Any:
        self.sim.received.append(("SendLocalList", {"list_version": list_version, **kw}))
        entries = [
            (e["id_tag"], (e.get("id_tag_info") or {}).get("status"))
            for e in kw.get("local_authorization_list") or []
        ]
        status = self.sim.update_local_list(list_version, update_type, entries)
        return result16.SendLocalList(status=status)

    @on("GetLocalListVersion")
    def on_get_local_list_version(self, **kw: Any) -> Any:
        return result16.GetLocalListVersion(list_version=self.sim.local_list_version)

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
        self.sim.received.append(("TriggerMessage", {"requested_message": requested_message, **kw}))
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
        p = charging_profile
        self.sim.received.append(("SetChargingProfile", {"evse_id": evse_id, **p}))
        status = self.sim.install(
            p["id"],
            p["charging_profile_purpose"],
            p["stack_level"],
            evse_id,
            p["charging_schedule"][0],
            p.get("transaction_id"),
        )
        return result201.SetChargingProfile(status=status)

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **kw: Any) -> Any:
        self.sim.received.append(("ClearChargingProfile", kw))
        criteria = kw.get("charging_profile_criteria") or {}
        found = self.sim.clear(
            kw.get("charging_profile_id"),
            criteria.get("charging_profile_purpose"),
            criteria.get("stack_level"),
            criteria.get("evse_id"),
        )
        return result201.ClearChargingProfile(status="Accepted" if found else "Unknown")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, duration: int, evse_id: int, **kw: Any) -> Any:
        unit, limit = self.sim.composite_in(kw.get("charging_rate_unit"))
        return result201.GetCompositeSchedule(
            status="Accepted",
            schedule={
                "evse_id": evse_id,
                "duration": duration,
                "schedule_start": _now(),
                "charging_rate_unit": unit,
                "charging_schedule_period": [{"start_period": 0, "limit": limit}],
            },
        )

    @on("RequestStartTransaction")
    def on_request_start(self, id_token: dict[str, Any], remote_start_id: int, **kw: Any) -> Any:
        self.sim.received.append(
            ("RequestStartTransaction", {"id_token": id_token, "remote_start_id": remote_start_id})
        )
        return result201.RequestStartTransaction(status="Accepted")

    @after("RequestStartTransaction")
    def after_request_start(
        self, id_token: dict[str, Any], remote_start_id: int, **kw: Any
    ) -> None:
        self.sim.spawn(
            self.sim.start_transaction(
                str(id_token.get("id_token")), remote_start_id=remote_start_id
            )
        )

    @on("RequestStopTransaction")
    def on_request_stop(self, transaction_id: str, **kw: Any) -> Any:
        ok = transaction_id == self.sim.transaction_id
        return result201.RequestStopTransaction(status="Accepted" if ok else "Rejected")

    @after("RequestStopTransaction")
    def after_request_stop(self, transaction_id: str, **kw: Any) -> None:
        if transaction_id == self.sim.transaction_id:
            self.sim.spawn(self.sim.stop_transaction())

    @on("ChangeAvailability")
    def on_change_availability(self, operational_status: str, **kw: Any) -> Any:
        self.sim.received.append(
            ("ChangeAvailability", {"operational_status": operational_status, **kw})
        )
        self.sim.available = operational_status == "Operative"
        scheduled = self.sim.transaction_id is not None and not self.sim.available
        return result201.ChangeAvailability(status="Scheduled" if scheduled else "Accepted")

    @on("UnlockConnector")
    def on_unlock_connector(self, evse_id: int, connector_id: int, **kw: Any) -> Any:
        self.sim.received.append(
            ("UnlockConnector", {"evse_id": evse_id, "connector_id": connector_id})
        )
        if (evse_id, connector_id) != (1, 1):
            return result201.UnlockConnector(status="UnknownConnector")
        if self.sim.transaction_id is not None:
            return result201.UnlockConnector(status="OngoingAuthorizedTransaction")
        return result201.UnlockConnector(status="Unlocked")

    @on("ClearCache")
    def on_clear_cache(self, **kw: Any) -> Any:
        self.sim.received.append(("ClearCache", kw))
        return result201.ClearCache(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **kw: Any) -> Any:
        self.sim.received.append(("DataTransfer", {"vendor_id": vendor_id, **kw}))
        if vendor_id != self.sim.config.vendor:
            return result201.DataTransfer(status="UnknownVendorId")
        return result201.DataTransfer(status="Accepted", data=kw.get("data"))

    @on("GetBaseReport")
    def on_get_base_report(self, request_id: int, report_base: str, **kw: Any) -> Any:
        self.sim.received.append(
            ("GetBaseReport", {"request_id": request_id, "report_base": report_base})
        )
        return result201.GetBaseReport(status="Accepted")

    @after("GetBaseReport")
    def after_get_base_report(self, request_id: int, **kw: Any) -> None:
        self.sim.spawn(self.sim.notify_report(request_id))

    @on("SendLocalList")
    def on_send_local_list(self, version_number: int, update_type: str, **kw: Any) -> Any:
        self.sim.received.append(("SendLocalList", {"version_number": version_number, **kw}))
        entries = [
            (e["id_token"]["id_token"], (e.get("id_token_info") or {}).get("status"))
            for e in kw.get("local_authorization_list") or []
        ]
        status = self.sim.update_local_list(version_number, update_type, entries)
        return result201.SendLocalList(status=status)

    @on("GetLocalListVersion")
    def on_get_local_list_version(self, **kw: Any) -> Any:
        return result201.GetLocalListVersion(version_number=self.sim.local_list_version)

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
        self.sim.received.append(("TriggerMessage", {"requested_message": requested_message, **kw}))
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
    p.add_argument(
        "--phases", type=int, choices=(1, 3), default=3, help="phases the car charges on"
    )
    p.add_argument(
        "--phase",
        choices=("L1", "L2", "L3"),
        default="L1",
        help="the phase a 1-phase charger is wired to",
    )
    p.add_argument(
        "--max-current", type=float, default=16.0, help="the car's maximum current per phase, A"
    )
    p.add_argument(
        "--profile-delay",
        type=float,
        default=2.0,
        help="seconds the car takes to follow a new limit (default: 2)",
    )
    p.add_argument(
        "--reject-profiles",
        action="store_true",
        help="answer SetChargingProfile with Rejected (no smart charging)",
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
    if args.max_current <= 0 or args.profile_delay < 0:
        sys.stderr.write("edged sim ocpp: --max-current must be > 0 and --profile-delay >= 0\n")
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
            phases=args.phases,
            phase=int(args.phase[1]),
            max_current=args.max_current,
            profile_delay=args.profile_delay,
            reject_profiles=args.reject_profiles,
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
