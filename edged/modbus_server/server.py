"""The Modbus TCP server bound to the live values.

Built on pymodbus's ``ModbusTcpServer`` (listener, connection objects, PDU classes, framer),
with the datastore replaced by ``LiveRegisters``, which computes the registers of a unit on
every read from the live values: the SunSpec map at 40000 and the plain map at 0.

Each connection (``_Session``) frames its requests itself before pymodbus decodes them,
because pymodbus 3.16's server request handler answers only one request per received chunk
(pipelined Modbus TCP requests are dropped), clears its receive buffer whenever it sends
(losing a request that arrived half), and waits forever on a frame with a non-zero protocol
id. Here every complete frame is answered in order; a read of function 3 or 4 goes to
pymodbus's request PDU and the datastore; every other function code gets ILLEGAL FUNCTION
(the server is read-only), a bad count ILLEGAL DATA VALUE; a frame that breaks the MBAP
framing (protocol id, length) closes the connection once the requests before it are
answered. Peers outside the allow-list and connections beyond the limit are closed at once;
so are clients that pipeline more than ``MAX_PENDING`` requests or leave more than
``MAX_UNREAD`` bytes of replies unread, and idle connections after the idle timeout.
Everything is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from edged.live import LiveValues
from edged.modbus_server import plainmap, sunspec
from edged.modbus_server.config import ModbusServerConfig, is_allowed
from edged.model import DeviceSpec, DeviceState

log = logging.getLogger("edged.modbus_server")

ELECTRICITY = frozenset({"electricity", "ev_charger"})
STALE_GRACE = 2.0
"""Slack on top of 1.5 poll intervals before a polled value is stale (the supervisor's rule)."""
UNPOLLED_MAX_AGE = 120.0
"""Age limit for values of points that send when they like (chargers, virtual meters)."""
MAX_PENDING = 32
"""Requests one connection may have waiting; a client that pipelines more is closed."""
SEND_BUFFER = 16 * 1024
"""Kernel send buffer of a client connection (Linux doubles it)."""
MAX_UNREAD = 64 * 1024
"""Bytes of replies a client may leave unread before it is closed."""
_READS = (3, 4)
_MBAP = struct.Struct(">HHHB")

StateOf = Callable[[str], DeviceState | None]
Count = Callable[[str], None]
"""Counts a server event (``requests``, ``refused``, ...) for the metrics."""


@dataclass(frozen=True)
class ServedPoint:
    """A metering point as the server serves it."""

    id: str
    unit: int
    medium: str
    max_age: float

    @property
    def sunspec(self) -> bool:
        """Electricity points also get the SunSpec map."""
        return self.medium in ELECTRICITY


def served_points(
    cfg: ModbusServerConfig,
    devices: Sequence[DeviceSpec],
    virtual: Sequence[tuple[str, str]],
    polled: Callable[[DeviceSpec], bool],
) -> list[ServedPoint]:
    """The points to serve: devices and virtual meters (id, medium) with a unit id."""
    out: list[ServedPoint] = []
    for dev in devices:
        unit = cfg.units.get(dev.id)
        if unit is None:
            continue
        if cfg.max_age is not None:
            age = cfg.max_age
        elif polled(dev):
            age = 1.5 * dev.poll_interval + STALE_GRACE
        else:
            age = UNPOLLED_MAX_AGE
        out.append(ServedPoint(dev.id, unit, dev.medium, age))
    for vid, medium in virtual:
        unit = cfg.units.get(vid)
        if unit is not None:
            out.append(ServedPoint(vid, unit, medium, cfg.max_age or UNPOLLED_MAX_AGE))
    return out


class LiveRegisters(ModbusServerContext):
    """The datastore: registers of every unit computed from the live values on each read."""

    def __init__(
        self,
        live: LiveValues,
        state_of: StateOf,
        *,
        gateway_id: str,
        models: str,
        version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # No super().__init__(): it builds pymodbus's deprecated in-memory stores and warns.
        # The server takes a context with ``old_simulator`` set as it is and asks it only
        # for async_getValues / async_setValues / device_ids.
        self.simdevices = []
        self.old_simulator = True
        self.live = live
        self.state_of = state_of
        self.gateway_id = gateway_id
        self.models = models
        self.version = version
        self.clock = clock
        self.units: dict[int, ServedPoint] = {}
        self._models: dict[str, sunspec.MeterModel] = {}
        self._maps: dict[str, tuple[object, list[int]]] = {}
        self._plain: dict[str, tuple[object, list[int]]] = {}

    def set_points(self, points: Sequence[ServedPoint]) -> None:
        """Serve these points (on start and on reload)."""
        self.units = {p.unit: p for p in points}
        keep = {p.id for p in points}
        self._models = {k: v for k, v in self._models.items() if k in keep}
        self._maps.clear()
        self._plain.clear()

    def device_ids(self) -> list[int]:
        """The unit ids served."""
        return list(self.units)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        """Registers of one unit (the datastore interface pymodbus's request PDUs call)."""
        if func_code not in _READS:
            return ExcCodes.ILLEGAL_FUNCTION
        return self.read(device_id, address, count)

    async def async_setValues(
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        """The server is read-only."""
        return ExcCodes.ILLEGAL_FUNCTION

    def read(self, unit: int, address: int, count: int) -> list[int] | ExcCodes:
        """``count`` registers from ``address`` of a unit, or the exception to answer."""
        point = self.units.get(unit)
        if point is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        end = address + count
        if end <= plainmap.SIZE:
            fresh, age = self.fresh(point)
            return self._plain_map(point, fresh, age)[address:end]
        base = sunspec.BASE_ADDRESS
        if point.sunspec and address >= base:
            fresh, _ = self.fresh(point)
            model = self.model_of(point)
            if end - base <= sunspec.map_size(model):
                regs = self._sunspec_map(point, model, fresh)
                return regs[address - base : end - base]
        return ExcCodes.ILLEGAL_ADDRESS

    def _plain_map(
        self, point: ServedPoint, fresh: Mapping[str, float], age: float | None
    ) -> list[int]:
        key = (None if age is None else int(age), tuple(fresh.items()))
        cached = self._plain.get(point.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        regs = plainmap.registers(point.unit, fresh, age)
        self._plain[point.id] = (key, regs)
        return regs

    def _sunspec_map(
        self, point: ServedPoint, model: sunspec.MeterModel, fresh: Mapping[str, float]
    ) -> list[int]:
        # Encoding is the costly part and the values change once per poll, while several
        # clients read in between: keep the last map per point for the same fresh values.
        key = (model, tuple(fresh.items()))
        cached = self._maps.get(point.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        values = sunspec.meter_values(model, fresh)
        regs = sunspec.device_map(self.identity(point), model, values)
        self._maps[point.id] = (key, regs)
        return regs

    def fresh(self, point: ServedPoint) -> tuple[dict[str, float], float | None]:
        """The values served as fresh, and the age of the newest value (None: never read).

        Fresh means: the device is online (the supervisor's state; virtual meters have none)
        and the value is at most the point's ``max_age`` old.
        """
        values = self.live.of(point.id)
        if not values:
            return {}, None
        now = self.clock()
        newest = max(lv.ts for lv in values.values())
        age = max(0.0, now - newest)
        state = self.state_of(point.id)
        if state is not None and state is not DeviceState.ONLINE:
            return {}, age
        limit = point.max_age
        fresh = {
            name: lv.value
            for name, lv in values.items()
            if now - lv.ts <= limit and math.isfinite(lv.value)
        }
        return fresh, age

    def model_of(self, point: ServedPoint) -> sunspec.MeterModel:
        """The point's meter model: decided by its quantities once it has values, then kept."""
        model = self._models.get(point.id)
        if model is not None:
            return model
        quantities = frozenset(self.live.of(point.id))
        model = sunspec.choose_model(quantities, self.models)
        if quantities:
            self._models[point.id] = model
        return model

    def identity(self, point: ServedPoint) -> sunspec.Identity:
        """The common model of a point: who made it, what it is, which point it is."""
        return sunspec.Identity(
            manufacturer="edged",
            model=f"edged {point.medium} meter",
            options=point.id,
            version=self.version,
            serial=f"{self.gateway_id}/{point.id}",
            device_address=point.unit,
        )


@dataclass
class ServerStats:
    """Counters of the server since start."""

    connections: int = 0
    accepted: int = 0
    refused: int = 0
    busy: int = 0
    requests: int = 0
    exceptions: int = 0
    malformed: int = 0
    overrun: int = 0
    idle_closed: int = 0


class _Session(ServerRequestHandler):
    """One client connection: admission, framing, one request at a time in order."""

    server: EdgedModbusServer

    def __init__(self, owner: EdgedModbusServer) -> None:
        # pymodbus leaves this constructor unannotated.
        super().__init__(owner, None, None, None)  # type: ignore[no-untyped-call]
        self.server = owner
        self._buf = b""
        self._queue: asyncio.Queue[tuple[int, int, bytes] | None] = asyncio.Queue()
        self._reading = True  # False once the stream broke: nothing more is read
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._admitted = False

    # -- connection lifecycle ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the peer (allow-list, connection limit) or close at once."""
        owner = self.server
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        reason = None
        if not is_allowed(host, owner.settings.allow):
            reason = "refused"
        elif owner.stats.connections >= owner.settings.max_connections:
            reason = "busy"
        if reason is not None:
            owner.count(reason)
            owner.active_connections.pop(self.unique_id, None)
            log.debug("modbus client closed peer=%s reason=%s", host, reason)
            if isinstance(transport, asyncio.Transport):
                transport.abort()  # no goodbye: the peer learns nothing but the close
            else:
                transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Replies are at most 260 bytes: a small kernel buffer bounds what a client that
            # does not read can hold there (the transport's own buffer is bounded below).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._admitted = True
        owner.stats.connections += 1
        owner.count("accepted")
        super().connection_made(transport)
        self._worker = asyncio.get_running_loop().create_task(self._serve())
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (pymodbus's own bookkeeping included)."""
        self._stop()
        with contextlib.suppress(Exception):  # pymodbus bookkeeping of a half-set-up session
            super().connection_lost(exc)

    def callback_disconnected(self, exc: Exception | None) -> None:
        """Called by pymodbus for every connection when the listener closes."""
        self._stop()
        super().callback_disconnected(exc)

    def _stop(self) -> None:
        if self._admitted:
            self._admitted = False
            self.server.stats.connections -= 1
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(
            self.server.settings.idle_timeout, self._on_idle
        )

    def _on_idle(self) -> None:
        self.server.count("idle_closed")
        self._close()

    def _close(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.close()

    def send(self, data: bytes, addr: tuple[Any, ...] | None = None) -> None:
        """Write a reply; unlike pymodbus's, this keeps a request that arrived half."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(data)

    # -- framing -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Split the stream into MBAP frames; check each before pymodbus sees it."""
        if not self._admitted or not self._reading:
            return
        self._touch()
        self._buf += data
        while len(self._buf) >= 7:
            tid, pid, length, unit = _MBAP.unpack_from(self._buf)
            if pid != 0 or not 2 <= length <= 254:
                # The rest of the stream cannot be framed: answer what came before, then close.
                self.server.count("malformed")
                self._buf = b""
                self._reading = False
                self._queue.put_nowait(None)
                return
            if len(self._buf) < 6 + length:
                return
            pdu = self._buf[7 : 6 + length]
            self._buf = self._buf[6 + length :]
            if self._queue.qsize() >= MAX_PENDING:
                self.server.count("overrun")
                self._close()
                return
            self._queue.put_nowait((tid, unit, pdu))

    async def _serve(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                self._close()
                return
            tid, unit, pdu = item
            try:
                reply = await self._answer(unit, pdu)
            except Exception:  # a bug here must cost one reply, never the server
                log.exception("modbus request failed unit=%s", unit)
                reply = ExceptionResponse(pdu[0], ExcCodes.DEVICE_FAILURE)
            reply.transaction_id = tid
            reply.dev_id = unit
            if isinstance(reply, ExceptionResponse):
                self.server.count("exceptions")
            transport = self.transport
            if (
                isinstance(transport, asyncio.WriteTransport)
                and transport.get_write_buffer_size() > MAX_UNREAD
            ):
                # A client that sends but does not read would grow this buffer without end.
                self.server.count("overrun")
                transport.abort()
                return
            self.send(self.framer.buildFrame(reply))

    async def _answer(self, unit: int, pdu: bytes) -> ModbusPDU:
        self.server.count("requests")
        function = pdu[0]
        if function not in _READS:
            return ExceptionResponse(function & 0x7F, ExcCodes.ILLEGAL_FUNCTION)
        if len(pdu) != 5:
            self.server.count("malformed")
            return ExceptionResponse(function, ExcCodes.ILLEGAL_VALUE)
        _, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= 125:
            return ExceptionResponse(function, ExcCodes.ILLEGAL_VALUE)
        request = self.server.decoder.decode(pdu)
        if request is None:
            self.server.count("malformed")
            return ExceptionResponse(function, ExcCodes.ILLEGAL_VALUE)
        request.dev_id = unit
        return await request.datastore_update(self.server.context, unit)


class EdgedModbusServer(ModbusTcpServer):
    """pymodbus's TCP server with edged's sessions (admission, framing, counting)."""

    context: LiveRegisters

    def __init__(
        self, registers: LiveRegisters, settings: ModbusServerConfig, count: Count
    ) -> None:
        super().__init__(registers, address=(settings.address, settings.port))
        self.settings = settings
        self.stats = ServerStats()
        self._count = count

    def count(self, event: str) -> None:
        """Count a server event (stats and metrics)."""
        setattr(self.stats, event, getattr(self.stats, event) + 1)
        self._count(event)

    def callback_new_connection(self) -> _Session:
        """A session for a connection the listener accepted."""
        return _Session(self)


class ModbusServer:
    """The running server: start, points on reload, status, stop."""

    def __init__(
        self,
        settings: ModbusServerConfig,
        registers: LiveRegisters,
        count: Count = lambda event: None,
    ) -> None:
        self.settings = settings
        self.registers = registers
        self._count = count
        self._server: EdgedModbusServer | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Listen (``port`` is the bound port afterwards)."""
        server = EdgedModbusServer(self.registers, self.settings, self._count)
        await server.serve_forever(background=True)
        listener = server.transport
        sockets = getattr(listener, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        self._server = server
        log.info(
            "modbus server listening address=%s port=%s units=%d",
            self.settings.address,
            self.port,
            len(self.registers.units),
        )

    def set_points(self, points: Sequence[ServedPoint]) -> None:
        """Serve a new set of points (reload)."""
        self.registers.set_points(points)

    @property
    def stats(self) -> ServerStats:
        """Counters since start."""
        return self._server.stats if self._server is not None else ServerStats()

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture for `edged status`."""
        s = self.stats
        units = {p.id: p.unit for p in self.registers.units.values()}
        line = (
            f"listening on {self.settings.address}:{self.port}, {len(units)} unit(s), "
            f"{s.connections} client(s), {s.requests} requests, {s.exceptions} exceptions, "
            f"{s.refused} refused, {s.busy} over the limit, {s.malformed} malformed"
        )
        return {
            "address": self.settings.address,
            "port": self.port,
            "units": units,
            "connections": s.connections,
            "requests": s.requests,
            "exceptions": s.exceptions,
            "refused": s.refused,
            "busy": s.busy,
            "malformed": s.malformed,
            "overrun": s.overrun,
            "idle_closed": s.idle_closed,
            "line": line,
        }

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # untyped upstream
            self._server = None
