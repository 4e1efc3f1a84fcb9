"""A lean Modbus TCP client link: one request in flight, MBAP framing, nothing else.

Why not pymodbus here: a fleet gateway polls a thousand TCP meters a second, and
pymodbus' client (transaction manager, framer, per-request ``wait_for``, transport dump)
costs about twice the CPU of the exchange itself (``bench/modbus_fleet.py --inprocess``,
README "Measured"). The serial (RTU) side, where timing, not CPU, is the limit,
stays on pymodbus (``drivers.modbus.link``).

What makes this correct with so little code:

- one exchange at a time per link (a lock, as the bus needs anyway), so an answer is
  matched by its transaction id, protocol id 0 and unit id against the one request that
  is waiting; anything else (a late answer to a request that timed out, a stray frame)
  is dropped and counted (``frame_rejected``), never taken for the current answer;
- the length field is checked before a frame is taken (2..254 bytes after the unit id,
  the MBAP limits): a peer that sends garbage has its connection closed, since no later
  byte boundary can be trusted, and the runner reopens it;
- the timeout is a timer on the waiting future, not ``asyncio.wait_for``, so a
  cancellation is never swallowed and no task is created per request;
- a reply is checked against the request (function code, byte count, echo of a write)
  before it is believed.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Callable, Sequence

from drivers.modbus.errors import from_exception_code
from drivers.modbus.planner import Table
from drivers.modbus.settings import ConnectionSettings
from edged.errors import ConnectionLost, DecodeError, DeviceTimeout

_MBAP = struct.Struct(">HHHB")
_READ = struct.Struct(">BHH")
_WRITE_ONE = struct.Struct(">BHH")
_WRITE_MANY = struct.Struct(">BHHB")

READ_HOLDING = 3
READ_INPUT = 4
WRITE_COIL = 5
WRITE_REGISTER = 6
WRITE_REGISTERS = 16


RECEIVE_BUFFER = 4096
"""Bytes one read may take (a partial frame, under 260 bytes, is put in front of it)."""

_receive = threading.local()


def _receive_buffer() -> tuple[bytearray, memoryview]:
    """This thread's receive buffer, shared by every connection of its event loop.

    The transport asks for a buffer, receives into it and reports the bytes in one step of
    the loop (``get_buffer``, ``recv_into``, ``buffer_updated``), so no two connections
    ever use it at once; what a connection must keep (a partial frame) it copies out.
    One buffer per thread instead of one per connection: at a thousand meters, a megabyte.
    """
    try:
        pair: tuple[bytearray, memoryview] = _receive.pair
    except AttributeError:
        buf = bytearray(RECEIVE_BUFFER)
        pair = _receive.pair = (buf, memoryview(buf))
    return pair


class _Protocol(asyncio.BufferedProtocol):
    """Frames of one TCP connection; hands the awaited answer to the waiting request.

    A buffered protocol: the transport receives into a buffer this module owns instead of
    allocating a 256 KiB ``bytes`` per read and shrinking it, which at a thousand
    connections polled each second is measurable CPU and heap churn.
    """

    __slots__ = ("lost", "on_stray", "partial", "stray", "transport", "waiting")

    def __init__(self, on_stray: Callable[[], None] | None) -> None:
        self.on_stray = on_stray
        self.transport: asyncio.Transport | None = None
        self.partial = b""
        self.waiting: tuple[int, int, asyncio.Future[bytes]] | None = None
        self.stray = 0
        self.lost: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        buf, view = _receive_buffer()
        n = len(self.partial)
        if n:
            buf[:n] = self.partial
        return view[n:]

    def buffer_updated(self, nbytes: int) -> None:
        buf = _receive_buffer()[0]
        filled = len(self.partial) + nbytes
        pos = 0
        while filled - pos >= 7:
            tid, pid, length, unit = _MBAP.unpack_from(buf, pos)
            if not 2 <= length <= 254:
                self._fail(f"malformed MBAP header (length {length})")
                return
            end = pos + 6 + length
            if filled < end:
                break
            pdu = bytes(buf[pos + 7 : end])
            pos = end
            waiting = self.waiting
            if (
                waiting is not None
                and pid == 0
                and waiting[0] == tid
                and waiting[1] == unit
                and not waiting[2].done()
            ):
                waiting[2].set_result(pdu)
                self.waiting = None
            else:
                self.stray += 1
                if self.on_stray is not None:
                    self.on_stray()
        self.partial = bytes(buf[pos:filled]) if pos < filled else b""

    def _fail(self, why: str) -> None:
        self.lost = why
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = str(exc) if exc is not None else "connection closed by the peer"
        waiting, self.waiting = self.waiting, None
        if waiting is not None and not waiting[2].done():
            waiting[2].set_exception(ConnectionLost(self.lost))


def _expire(fut: asyncio.Future[bytes]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class TcpLink:
    """One Modbus TCP connection; the same interface as ``drivers.modbus.link.Link``."""

    __slots__ = ("_last_io", "_lock", "_on_stray", "_proto", "_tid", "settings")

    def __init__(
        self, settings: ConnectionSettings, on_stray: Callable[[], None] | None = None
    ) -> None:
        self.settings = settings
        self._on_stray = on_stray
        self._proto: _Protocol | None = None
        self._tid = 0
        self._last_io = 0.0
        # Polls and writes share the link: one exchange at a time, in the order asked.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect; raises ConnectionLost when the endpoint cannot be reached."""
        s = self.settings
        loop = asyncio.get_running_loop()
        try:
            connecting = loop.create_connection(lambda: _Protocol(self._on_stray), s.host, s.port)
            _, proto = await asyncio.wait_for(connecting, s.timeout + 1)
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(f"cannot connect to {s.endpoint}: {exc}") from None
        self._proto = proto

    @property
    def connected(self) -> bool:
        """True while the transport is up."""
        p = self._proto
        return p is not None and p.lost is None and p.transport is not None

    @property
    def stray_frames(self) -> int:
        """Frames received that answered no waiting request (late or foreign)."""
        return self._proto.stray if self._proto is not None else 0

    def close(self) -> None:
        """Close the transport."""
        p = self._proto
        if p is not None and p.transport is not None:
            p.transport.close()

    async def read(self, table: Table, start: int, count: int, unit: int) -> list[int]:
        """Registers ``start .. start+count`` of a table of one unit."""
        fc = READ_HOLDING if table == "holding" else READ_INPUT
        async with self._lock:
            pdu = await self._exchange(unit, _READ.pack(fc, start, count))
        if pdu[0] == fc | 0x80 and len(pdu) >= 2:
            raise from_exception_code(pdu[1])
        if pdu[0] != fc or len(pdu) < 2:
            raise DecodeError(f"unit {unit} answered function {pdu[0]} to a read ({fc})")
        if pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
            raise DecodeError(f"asked for {count} registers, got {(len(pdu) - 2) // 2}")
        return list(struct.unpack_from(f">{count}H", pdu, 2))

    async def write(
        self, unit: int, address: int, values: Sequence[int], coil: bool | None
    ) -> None:
        """Write holding registers from ``address`` (``values``), or one coil (``coil``)."""
        if coil is not None:
            request = _WRITE_ONE.pack(WRITE_COIL, address, 0xFF00 if coil else 0)
        elif len(values) == 1:
            request = _WRITE_ONE.pack(WRITE_REGISTER, address, values[0])
        else:
            n = len(values)
            request = _WRITE_MANY.pack(WRITE_REGISTERS, address, n, 2 * n) + struct.pack(
                f">{n}H", *values
            )
        async with self._lock:
            pdu = await self._exchange(unit, request)
        fc = request[0]
        if pdu[0] == fc | 0x80 and len(pdu) >= 2:
            raise from_exception_code(pdu[1])
        # Single writes echo the request; a multiple write echoes address and count.
        if pdu != request[:5]:
            raise DecodeError(f"unit {unit} answered a write with an unexpected reply")

    async def _exchange(self, unit: int, request: bytes) -> bytes:
        """Send one request and return the answer's PDU (retried after a timeout)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        if s.frame_gap:
            wait = self._last_io + s.frame_gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        for _ in range(s.retries + 1):
            proto = self._proto
            if proto is None or proto.transport is None or proto.lost is not None:
                raise ConnectionLost(f"not connected to {s.endpoint}")
            self._tid = tid = (self._tid + 1) & 0xFFFF
            fut: asyncio.Future[bytes] = loop.create_future()
            proto.waiting = (tid, unit, fut)
            proto.transport.write(_MBAP.pack(tid, 0, len(request) + 1, unit) + request)
            timer = loop.call_later(s.timeout, _expire, fut)
            try:
                return await fut
            except TimeoutError:
                continue
            finally:
                timer.cancel()
                if proto.waiting is not None and proto.waiting[2] is fut:
                    proto.waiting = None
                self._last_io = time.monotonic()
        raise DeviceTimeout(f"no answer from unit {unit} within {s.timeout} s")
