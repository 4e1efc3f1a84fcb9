"""One charger's OCPP session on the central system side, for 1.6J and 2.0.1.

Frames are read by ``serve`` rather than the library's ``start`` so each one is
guarded first (see ``frames``). Handlers run one at a time and never await a call
to the charger: charger-bound calls come from ``OcppDriver.command`` in other tasks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from drivers.ocpp import frame, meter
from drivers.ocpp._lib import (
    Call,
    CallError,
    CallResult,
    ChargePoint16,
    ChargePoint201,
    OCPPError,
    on,
    result16,
    result201,
)
from drivers.ocpp.hub import Hub
from drivers.ocpp.state import ChargerStatus, Transaction
from edged.model import Sample, iso

log = logging.getLogger("edged.ocpp")
# The ocpp library logs every frame at INFO; a thousand chargers would flood the journal.
# Frames stay available by lowering this logger's level when debugging a charger.
frame_log = logging.getLogger("edged.ocpp.frames")
frame_log.setLevel(logging.WARNING)


_WARN_REJECTED = 10
# Token types remembered per charger; a public charger sees many cards.
_TOKEN_TYPES_KEPT = 1000
SESSION_ACTIVE = "session_active"
"""1.0 while the charger has an open transaction, else 0.0 (edged.model.QUANTITIES)."""


def _now() -> str:
    return iso(time.time())


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class _Guarded:
    """Shared receive loop; mixed into both versions' ChargePoint classes."""

    version: str
    hub: Hub
    device_id: str
    route_map: dict[str, Any]
    _connection: ServerConnection
    _call_lock: Any
    _response_queue: Any
    _rejected = 0

    # Provided by the ocpp ChargePoint base class this is mixed into.
    _send: Callable[[str], Awaitable[None]]
    _handle_call: Callable[[Any], Awaitable[Any]]

    async def serve(self) -> None:
        """Read, guard and route frames until the connection closes."""
        try:
            async for raw in self._connection:
                self.hub.seen(self.device_id)
                await self._route(raw)
        except ConnectionClosed:
            pass

    async def _route(self, raw: str | bytes) -> None:
        try:
            parsed = frame.parse(raw, self.version)
        except frame.FrameRejected as e:
            self.hub.ctx.count("frame_rejected", self.device_id)
            self._rejected += 1
            # A broken charger can send garbage in a loop: warn a few times, then count only.
            level = logging.WARNING if self._rejected <= _WARN_REJECTED else logging.DEBUG
            log.log(
                level,
                "frame rejected device=%s code=%s reason=%s",
                self.device_id,
                e.code,
                e.description[:200],
            )
            if e.reply:
                await self._send(frame.call_error(e.unique_id, e.code, e.description))
            return
        if parsed.type_id == frame.CALL:
            await self._dispatch(parsed)
        elif self._call_lock.locked():
            # Answers only matter while a call is waiting; dropping the rest keeps a
            # misbehaving charger from filling the queue.
            if parsed.error is None:
                self._response_queue.put_nowait(CallResult(parsed.unique_id, parsed.payload))
            else:
                code, text = parsed.error
                self._response_queue.put_nowait(
                    CallError(parsed.unique_id, code, text, parsed.payload)
                )
        else:
            log.info("unexpected answer dropped device=%s id=%s", self.device_id, parsed.unique_id)

    async def _dispatch(self, parsed: frame.Frame) -> None:
        assert parsed.action is not None
        if parsed.action not in self.route_map or "_on_action" not in self.route_map[parsed.action]:
            self.hub.ctx.count("frame_rejected", self.device_id)
            await self._send(
                frame.call_error(
                    parsed.unique_id,
                    "NotImplemented",
                    f"action {parsed.action[:64]!r} is not handled",
                )
            )
            return
        msg = Call(parsed.unique_id, parsed.action, parsed.payload)
        try:
            await self._handle_call(msg)
        except OCPPError as e:
            err = msg.create_call_error(e)
            code = frame.error_code(err.error_code, self.version)
            log.warning(
                "call rejected device=%s action=%s code=%s", self.device_id, parsed.action, code
            )
            await self._send(frame.call_error(parsed.unique_id, code, str(err.error_description)))
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("handler failed device=%s action=%s", self.device_id, parsed.action)
            await self._send(
                frame.call_error(parsed.unique_id, "InternalError", "the central system failed")
            )

    state: ChargerStatus

    def _session_active(self) -> float:
        return 1.0 if self.state.transactions else 0.0

    def _deliver(self, samples: list[Sample]) -> None:
        """Hand meter samples on, each saying whether a session is open now."""
        active = self._session_active()
        self.hub.deliver(
            self.device_id,
            [dataclasses.replace(s, values={**s.values, SESSION_ACTIVE: active}) for s in samples],
        )

    def _session_changed(self, timestamp: Any, attrs: dict[str, str]) -> None:
        """A transaction started or stopped: tell the core without waiting for meter values."""
        # The charger's clock, like its meter values, so neither hides the other in live values.
        ts = meter.parse_timestamp(timestamp, time.time())
        sample = Sample(self.device_id, ts, {SESSION_ACTIVE: self._session_active()}, attrs)
        self.hub.deliver(self.device_id, [sample])

    def _update_energy(self, status: ChargerStatus, tx_id: str | None, samples: list[Any]) -> None:
        tx = status.transactions.get(tx_id) if tx_id is not None else status.transaction_on(None)
        if tx is None:
            return
        for s in samples:
            if "energy_import" in s.values:
                tx.energy_wh = s.values["energy_import"]
                if tx.meter_start_wh is None:
                    tx.meter_start_wh = tx.energy_wh


class CentralSession16(_Guarded, ChargePoint16):  # type: ignore[misc]  # ocpp is untyped
    """OCPP 1.6J central system side of one charger."""

    version = "1.6"

    def __init__(self, hub: Hub, device_id: str, connection: ServerConnection):
        status = hub.status(device_id)
        super().__init__(status.charge_point_id, connection, response_timeout=30, logger=frame_log)
        self.hub, self.device_id, self.state = hub, device_id, status

    @on("BootNotification")
    def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, **kw: Any
    ) -> Any:
        """Accept the charger and keep its vendor, model and firmware."""
        st = self.state
        st.vendor, st.model = charge_point_vendor, charge_point_model
        st.firmware = kw.get("firmware_version")
        st.serial = kw.get("charge_point_serial_number") or kw.get("charge_box_serial_number")
        log.info(
            "boot device=%s vendor=%s model=%s firmware=%s",
            self.device_id,
            st.vendor,
            st.model,
            st.firmware,
        )
        return result16.BootNotification(
            current_time=_now(), interval=self.hub.settings.heartbeat_interval, status="Accepted"
        )

    @on("Heartbeat")
    def on_heartbeat(self, **kw: Any) -> Any:
        """Answer with the current time."""
        return result16.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status_notification(self, connector_id: int, status: str, **kw: Any) -> Any:
        """Keep the connector status."""
        self.state.connectors[_int(connector_id)] = status
        return result16.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_tag: str, **kw: Any) -> Any:
        """Check the id tag against the local list."""
        return result16.Authorize(id_tag_info={"status": self._tag_status(id_tag)})

    def _tag_status(self, id_tag: str) -> str:
        return "Accepted" if self.hub.authorize(id_tag) else "Invalid"

    @on("StartTransaction")
    def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kw: Any
    ) -> Any:
        """Open a transaction with a new id (1.6)."""
        tx_id = self.hub.new_transaction_id()
        status = self._tag_status(id_tag)
        if status == "Accepted":
            started = meter.parse_timestamp(timestamp, time.time())
            self.state.transactions[str(tx_id)] = Transaction(
                str(tx_id),
                _int(connector_id),
                started,
                id_tag,
                float(meter_start),
                float(meter_start),
            )
            log.info("transaction started device=%s transaction=%s", self.device_id, tx_id)
            self._session_changed(
                timestamp, {"transaction_id": str(tx_id), "connector": str(_int(connector_id))}
            )
        return result16.StartTransaction(transaction_id=tx_id, id_tag_info={"status": status})

    @on("StopTransaction")
    def on_stop_transaction(
        self, transaction_id: int, meter_stop: int, timestamp: str, **kw: Any
    ) -> Any:
        """Close the transaction; its final reading becomes a sample (1.6)."""
        tx = self.state.transactions.pop(str(transaction_id), None)
        extra = {"transaction_id": str(transaction_id)}
        data = kw.get("transaction_data") or []
        samples = meter.samples(self.device_id, data, extra)
        now = time.time()
        final = meter.samples(
            self.device_id,
            [
                {
                    "timestamp": timestamp,
                    "sampled_value": [{"value": str(meter_stop), "context": "Transaction.End"}],
                }
            ],
            extra,
            now,
        )
        self.hub.deliver(self.device_id, samples + final)
        self._session_changed(timestamp, extra)
        connector = tx.connector if tx else None
        log.info(
            "transaction stopped device=%s transaction=%s connector=%s meter_stop=%s",
            self.device_id,
            transaction_id,
            connector,
            meter_stop,
        )
        id_tag = kw.get("id_tag")
        if id_tag is None:
            return result16.StopTransaction()
        return result16.StopTransaction(id_tag_info={"status": self._tag_status(id_tag)})

    @on("MeterValues")
    def on_meter_values(self, connector_id: int, meter_value: list[Any], **kw: Any) -> Any:
        """Turn the meter values into samples."""
        tx_id = kw.get("transaction_id")
        extra = {"connector": str(_int(connector_id))}
        if tx_id is not None:
            extra["transaction_id"] = str(tx_id)
        samples = meter.samples(self.device_id, meter_value, extra)
        self._update_energy(self.state, str(tx_id) if tx_id is not None else None, samples)
        self._deliver(samples)
        return result16.MeterValues()


class CentralSession201(_Guarded, ChargePoint201):  # type: ignore[misc]  # ocpp is untyped
    """OCPP 2.0.1 central system (CSMS) side of one charging station."""

    version = "2.0.1"

    def __init__(self, hub: Hub, device_id: str, connection: ServerConnection):
        status = hub.status(device_id)
        super().__init__(status.charge_point_id, connection, response_timeout=30, logger=frame_log)
        self.hub, self.device_id, self.state = hub, device_id, status

    @on("BootNotification")
    def on_boot_notification(self, charging_station: dict[str, Any], reason: str, **kw: Any) -> Any:
        """Accept the charger and keep its vendor, model and firmware."""
        st = self.state
        st.vendor = charging_station.get("vendor_name")
        st.model = charging_station.get("model")
        st.firmware = charging_station.get("firmware_version")
        st.serial = charging_station.get("serial_number")
        log.info(
            "boot device=%s vendor=%s model=%s firmware=%s reason=%s",
            self.device_id,
            st.vendor,
            st.model,
            st.firmware,
            reason,
        )
        return result201.BootNotification(
            current_time=_now(), interval=self.hub.settings.heartbeat_interval, status="Accepted"
        )

    @on("Heartbeat")
    def on_heartbeat(self, **kw: Any) -> Any:
        """Answer with the current time."""
        return result201.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status_notification(
        self, connector_status: str, evse_id: int, connector_id: int, **kw: Any
    ) -> Any:
        """Keep the connector status."""
        self.state.connectors[_int(evse_id)] = connector_status
        return result201.StatusNotification()

    def _token_info(self, id_token: dict[str, Any]) -> dict[str, str]:
        tag, kind = str(id_token.get("id_token", "")), id_token.get("type")
        if isinstance(kind, str):
            types = self.state.token_types
            types.pop(tag, None)
            types[tag] = kind
            if len(types) > _TOKEN_TYPES_KEPT:
                del types[next(iter(types))]  # the tag seen longest ago
        ok = self.hub.authorize(tag)
        return {"status": "Accepted" if ok else "Invalid"}

    @on("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **kw: Any) -> Any:
        """Check the id tag against the local list."""
        return result201.Authorize(id_token_info=self._token_info(id_token))

    @on("TransactionEvent")
    def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        **kw: Any,
    ) -> Any:
        """Track the transaction and turn its meter values into samples."""
        tx_id = str(transaction_info.get("transaction_id"))
        evse = kw.get("evse") or {}
        token = kw.get("id_token")
        st = self.state
        opened = False
        if event_type == "Started" or (event_type == "Updated" and tx_id not in st.transactions):
            started = meter.parse_timestamp(timestamp, time.time())
            tag = token.get("id_token") if isinstance(token, dict) else None
            st.transactions[tx_id] = Transaction(tx_id, _int(evse.get("id"), 1), started, tag)
            log.info("transaction started device=%s transaction=%s", self.device_id, tx_id)
            opened = True
        extra = {"transaction_id": tx_id, "trigger": trigger_reason}
        if evse.get("id") is not None:
            extra["evse"] = str(evse.get("id"))
        samples = meter.samples(self.device_id, kw.get("meter_value") or [], extra)
        self._update_energy(st, tx_id, samples)
        if event_type == "Ended":
            # The transaction's last readings are delivered as those of a closed session.
            st.transactions.pop(tx_id, None)
        self._deliver(samples)
        if opened or event_type == "Ended":
            self._session_changed(timestamp, extra)
        if event_type == "Ended":
            log.info(
                "transaction stopped device=%s transaction=%s reason=%s",
                self.device_id,
                tx_id,
                transaction_info.get("stopped_reason"),
            )
        if isinstance(token, dict):
            return result201.TransactionEvent(id_token_info=self._token_info(token))
        return result201.TransactionEvent()

    @on("MeterValues")
    def on_meter_values(self, evse_id: int, meter_value: list[Any], **kw: Any) -> Any:
        """Turn the meter values into samples."""
        samples = meter.samples(self.device_id, meter_value, {"evse": str(_int(evse_id))})
        self._update_energy(self.state, None, samples)
        self._deliver(samples)
        return result201.MeterValues()

    @on("NotifyReport")
    def on_notify_report(self, request_id: int, generated_at: str, seq_no: int, **kw: Any) -> Any:
        """Acknowledge a part of a report asked for with GetBaseReport."""
        log.info(
            "report device=%s request=%s part=%s variables=%d more=%s",
            self.device_id,
            request_id,
            seq_no,
            len(kw.get("report_data") or []),
            bool(kw.get("tbc")),
        )
        return result201.NotifyReport()

    @on("NotifyEvent")
    def on_notify_event(self, **kw: Any) -> Any:
        """Acknowledge a device model event."""
        return result201.NotifyEvent()

    @on("SecurityEventNotification")
    def on_security_event(self, type: str, **kw: Any) -> Any:
        """Log a security event."""
        log.warning("security event device=%s type=%s", self.device_id, type)
        return result201.SecurityEventNotification()


Session = CentralSession16 | CentralSession201


def make_session(hub: Hub, device_id: str, version: str, connection: ServerConnection) -> Session:
    """The session class for the negotiated OCPP version."""
    if version == "1.6":
        return CentralSession16(hub, device_id, connection)
    return CentralSession201(hub, device_id, connection)
