"""Byte links to an M-Bus: a serial level converter or an M-Bus-to-Ethernet converter.

Both kinds end in the same ``Link``: a buffer that collects received bytes and an
event that wakes a reader, so the master can wait for bytes against a deadline of
its own and throw away stale input before each request. Timing rules of the
line (EN 13757-2) live here too, because every deadline derives from the baud rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import serial_asyncio_fast

from edged.errors import ConnectionLost

log = logging.getLogger(__name__)

BITS_PER_BYTE = 11  # start + 8 data + parity + stop; 8N1 lines are timed the same way
MAX_FRAME_BYTES = 261  # a long frame with 252 data bytes
PARITIES = ("E", "N", "O")
BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)


def byte_time(baudrate: int) -> float:
    """Seconds one byte occupies on the line."""
    return BITS_PER_BYTE / baudrate


def transmit_time(nbytes: int, baudrate: int) -> float:
    """Seconds ``nbytes`` occupy on the line."""
    return nbytes * byte_time(baudrate)


def response_timeout(baudrate: int) -> float:
    """Longest a slave may take to start answering: 330 bit times + 50 ms (EN 13757-2)."""
    return 330 / baudrate + 0.050


def idle_gap(baudrate: int) -> float:
    """Silence after which a started answer counts as finished (garbled if not yet a frame)."""
    # A slave sends a frame without pauses; converters and schedulers add jitter, hence the floor.
    return max(0.05, 10 * byte_time(baudrate))


@dataclass(frozen=True)
class LineSettings:
    """Character framing and speed of the bus."""

    baudrate: int = 2400
    parity: str = "E"

    def pyserial_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``serial.Serial`` (8 data bits, 1 stop bit, no flow control)."""
        return {
            "baudrate": self.baudrate,
            "bytesize": 8,
            "parity": self.parity,
            "stopbits": 1,
            "xonxoff": False,
            "rtscts": False,
            "dsrdtr": False,
        }


class _Collector(asyncio.Protocol):
    """Appends every received byte to a buffer and wakes whoever waits for bytes."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.arrived = asyncio.Event()
        self.closed: BaseException | None = None
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = exc or ConnectionLost("connection closed by peer")
        self.arrived.set()


class Link:
    """One open byte stream to the bus."""

    def __init__(
        self,
        transport: asyncio.BaseTransport,
        collector: _Collector,
        settings: LineSettings,
        endpoint: str,
    ) -> None:
        self._transport = transport
        self._collector = collector
        self.settings = settings
        self.endpoint = endpoint

    @property
    def transport(self) -> asyncio.BaseTransport:
        """The asyncio transport underneath (the pyserial object is its ``serial`` extra)."""
        return self._transport

    @property
    def closed(self) -> bool:
        """True once the peer or the port went away."""
        return self._collector.closed is not None or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        """Queue bytes for sending; the transport writes them without blocking the loop."""
        self._raise_if_closed()
        assert isinstance(self._transport, asyncio.WriteTransport)
        self._transport.write(data)

    def take(self) -> bytes:
        """All bytes received so far, removing them from the buffer."""
        data = bytes(self._collector.buffer)
        self._collector.buffer.clear()
        self._collector.arrived.clear()
        return data

    def discard_input(self) -> int:
        """Drop stale input (a late answer, noise) before a new request; returns the count."""
        return len(self.take())

    async def wait_bytes(self, within: float) -> bool:
        """Wait until bytes are buffered or ``within`` seconds pass; False when none came."""
        self._raise_if_closed()
        if self._collector.buffer:
            return True
        if within <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._collector.arrived.wait(), within)
        self._raise_if_closed()
        return bool(self._collector.buffer)

    def _raise_if_closed(self) -> None:
        if self._collector.closed is not None:
            raise ConnectionLost(f"{self.endpoint}: {self._collector.closed}")

    async def close(self) -> None:
        """Close the stream and wait until the transport let go of the port or socket."""
        if not self._transport.is_closing():
            self._transport.close()
        # Let connection_lost run so the serial port or socket is really released.
        for _ in range(50):
            if self._collector.closed is not None:
                break
            await asyncio.sleep(0.001)


async def open_serial(device: str, settings: LineSettings) -> Link:
    """Open a serial port (a device path or a pyserial URL) as a Link."""
    loop = asyncio.get_running_loop()
    collector = _Collector()
    try:
        transport, _ = await serial_asyncio_fast.create_serial_connection(
            loop, lambda: collector, device, **settings.pyserial_kwargs()
        )
    except (OSError, ValueError) as exc:
        raise ConnectionLost(f"serial://{device}: cannot open: {exc}") from exc
    log.info(
        "mbus serial open device=%s baud=%d parity=%s", device, settings.baudrate, settings.parity
    )
    return Link(transport, collector, settings, f"serial://{device}")


async def open_tcp(
    host: str, port: int, settings: LineSettings, connect_within: float = 5.0
) -> Link:
    """Connect to an M-Bus-to-Ethernet converter (transparent TCP) as a Link."""
    loop = asyncio.get_running_loop()
    collector = _Collector()
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: collector, host, port), connect_within
        )
    except (OSError, TimeoutError) as exc:
        raise ConnectionLost(f"tcp://{host}:{port}: cannot connect: {exc}") from exc
    log.info("mbus tcp open host=%s port=%d", host, port)
    return Link(transport, collector, settings, f"tcp://{host}:{port}")


@dataclass(frozen=True)
class LinkSpec:
    """Where the bus is: a serial device or a TCP converter, with the line settings."""

    kind: str  # "serial" or "tcp"
    settings: LineSettings = LineSettings()
    device: str = ""
    host: str = ""
    port: int = 0

    @property
    def endpoint(self) -> str:
        """``serial:///dev/ttyUSB0`` or ``tcp://host:port``."""
        if self.kind == "serial":
            return f"serial://{self.device}"
        return f"tcp://{self.host}:{self.port}"

    async def open(self) -> Link:
        """Open the link this spec describes."""
        if self.kind == "serial":
            return await open_serial(self.device, self.settings)
        return await open_tcp(self.host, self.port, self.settings)


def parse_tcp(text: str) -> tuple[str, int]:
    """``host:port`` split into its parts; ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)
