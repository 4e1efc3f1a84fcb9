"""Simulated M-Bus slaves on a pseudo-terminal or a TCP port.

Slaves answer from real frames (``.hex`` files) or generated ones whose values
change, with primary and secondary addressing, FCB-driven multi-telegram answers,
collisions when several slaves answer at once (their bit streams are wire-ANDed,
so the master sees garbage), injected faults, and line-rate pacing: a request
of N bytes occupies the line for N*11/baud seconds before the slave may answer,
and an answer is written in small chunks timed to the same rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import tty
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from drivers.mbus import frame as fr
from drivers.mbus.address import SecondaryAddress, manufacturer_value
from drivers.mbus.transport import LineSettings, LinkSpec, byte_time

log = logging.getLogger(__name__)

FAULTS = ("garbage", "checksum", "silence")
HEADER_CIS = (fr.CI_RESPONSE_LONG, fr.CI_RESPONSE_LONG_MSB)
DIF_MORE_FOLLOWS = 0x1F


# -- telegram building -------------------------------------------------------------------


def bcd(value: int, nbytes: int) -> bytes:
    """``value`` as packed BCD, least significant byte first."""
    digits = f"{value:0{nbytes * 2}d}"[-nbytes * 2 :]
    return bytes(int(digits[i : i + 2], 16) for i in range(len(digits) - 2, -1, -2))


def variable_header(
    address: SecondaryAddress, access: int, status: int = 0, signature: int = 0
) -> bytes:
    """The 12-byte long header of a variable data structure (CI 0x72)."""
    return address.to_bytes() + bytes((access & 0xFF, status, signature & 0xFF, signature >> 8))


def record(dif: int, vif: int, value: int) -> bytes:
    """One data record with an integer value (DIF 0x01..0x04, 0x06, 0x07)."""
    sizes = {0x01: 1, 0x02: 2, 0x03: 3, 0x04: 4, 0x06: 6, 0x07: 8}
    size = sizes[dif & 0x0F]
    return bytes((dif, vif)) + (value % (1 << (8 * size))).to_bytes(size, "little")


def with_id(data: bytes, ci: int, address: SecondaryAddress) -> bytes:
    """Telegram user data with the header's id, manufacturer, version and medium replaced."""
    if ci in HEADER_CIS and len(data) >= 8:
        return address.to_bytes() + data[8:]
    if ci in (fr.CI_RESPONSE_FIXED, fr.CI_RESPONSE_FIXED_MSB) and len(data) >= 4:
        return address.to_bytes()[:4] + data[4:]
    return data


def header_of(ci: int, data: bytes) -> SecondaryAddress | None:
    """The secondary address a telegram carries, if its header has one."""
    if ci in HEADER_CIS and len(data) >= 8:
        return SecondaryAddress.from_header(data[:8])
    return None


def read_hex(path: str | Path) -> fr.LongFrame:
    """A long frame from a ``.hex`` file (space-separated or run-together hex bytes)."""
    text = Path(path).read_text(encoding="utf-8")
    frame = fr.parse(bytes.fromhex("".join(text.split())))
    if not isinstance(frame, fr.LongFrame):
        raise ValueError(f"{path}: not a long frame with user data")
    return frame


@dataclass
class HeatMeter:
    """Generated telegrams of a heat meter whose energy and volume grow on every read."""

    address: SecondaryAddress
    telegrams: int = 1
    energy_wh: int = 1_000_000
    volume_l: int = 250_000
    step: int = 0

    def next(self) -> list[tuple[int, bytes]]:
        """The telegrams of one full read, values advanced since the previous one."""
        self.step += 1
        self.energy_wh += 1234
        self.volume_l += 17
        power_w = 5000 + 100 * (self.step % 7)
        records = [
            record(0x04, 0x03, self.energy_wh),  # energy, Wh
            record(0x04, 0x13, self.volume_l),  # volume, litres
            record(0x04, 0x2B, power_w),  # power, W
            record(0x04, 0x3B, 850 + self.step % 5),  # volume flow, l/h
            record(0x02, 0x59, 6512 + self.step % 10),  # flow temperature, 0.01 °C
            record(0x02, 0x5D, 4021),  # return temperature, 0.01 °C
            record(0x44, 0x03, self.energy_wh - 50_000),  # storage 1: energy at due date
        ]
        parts: list[list[bytes]] = [[] for _ in range(self.telegrams)]
        for i, rec in enumerate(records):
            parts[min(i * self.telegrams // len(records), self.telegrams - 1)].append(rec)
        out = []
        for n, recs in enumerate(parts):
            body = b"".join(recs)
            if n + 1 < self.telegrams:
                body += bytes((DIF_MORE_FOLLOWS,))
            out.append((fr.CI_RESPONSE_LONG, variable_header(self.address, self.step) + body))
        return out


# -- slaves ------------------------------------------------------------------------------


TelegramSource = Callable[[], list[tuple[int, bytes]]]


@dataclass
class Slave:
    """One simulated meter: its addresses, its telegrams and its link-layer state."""

    primary: int
    secondary: SecondaryAddress
    source: TelegramSource
    dead: bool = False  # never answers at all
    faults: deque[str | None] = field(default_factory=deque)  # one per answer; None: none
    selected: bool = False
    answered: int = 0
    _last_fcb: bool | None = None
    _last_answer: bytes | None = None
    _pending: list[tuple[int, bytes]] = field(default_factory=list)

    @classmethod
    def from_frames(
        cls,
        primary: int,
        frames: Sequence[fr.LongFrame],
        secondary: SecondaryAddress | None = None,
    ) -> Slave:
        """A slave that answers with these frames in turn (its id rewritten to ``secondary``)."""
        found = header_of(frames[0].ci, frames[0].data)
        address = secondary or found or SecondaryAddress(f"{primary:08d}", 0, 0, 0)
        telegrams = [(f.ci, with_id(f.data, f.ci, address)) for f in frames]
        return cls(primary, address, lambda: list(telegrams))

    @classmethod
    def generated(
        cls, primary: int, secondary: SecondaryAddress, telegrams: int = 1
    ) -> tuple[Slave, HeatMeter]:
        """A slave with a generated heat meter behind it."""
        meter = HeatMeter(secondary, telegrams)
        return cls(primary, secondary, meter.next), meter

    def reset(self) -> None:
        """Link-layer reset: restart the telegram sequence, forget the FCB."""
        self._last_fcb = None
        self._last_answer = None
        self._pending = []

    def addressed(self, wire: int) -> bool:
        """True when a frame to ``wire`` is meant for this slave."""
        return wire == self.primary or (wire == fr.ADDR_NETWORK_LAYER and self.selected)

    def handle(self, frame: fr.Frame) -> bytes | None:
        """The answer to one frame (None: stay silent)."""
        if isinstance(frame, fr.ShortFrame):
            return self._short(frame)
        if isinstance(frame, fr.LongFrame):
            return self._long(frame)
        return None

    def _short(self, frame: fr.ShortFrame) -> bytes | None:
        function = frame.control & ~(fr.FCB | fr.FCV)
        if function == fr.SND_NKE & ~(fr.FCB | fr.FCV):
            if frame.address == fr.ADDR_BROADCAST:
                self.reset()
                return None
            if not self.addressed(frame.address):
                return None
            self.reset()
            if frame.address == fr.ADDR_NETWORK_LAYER:
                self.selected = False
            return self._answer(fr.encode(fr.AckFrame()))
        if function == fr.REQ_UD2 & ~(fr.FCB | fr.FCV):
            if not (self.addressed(frame.address) or frame.address == fr.ADDR_BROADCAST_REPLY):
                return None
            fcb = bool(frame.control & fr.FCB)
            repeat = bool(frame.control & fr.FCV) and fcb == self._last_fcb
            if not (repeat and self._last_answer is not None):
                if not self._pending:
                    self._pending = self.source()
                ci, data = self._pending.pop(0)
                long = fr.LongFrame(fr.RSP_UD, self.primary, ci, data)
                self._last_answer = fr.encode(long)
            self._last_fcb = fcb
            return self._answer(self._last_answer)
        return None

    def _long(self, frame: fr.LongFrame) -> bytes | None:
        function = frame.control & ~fr.FCB
        if function != fr.SND_UD:
            return None
        if frame.address == fr.ADDR_NETWORK_LAYER and frame.ci == fr.CI_SELECT:
            if len(frame.data) != 8:
                return None
            mask = SecondaryAddress.from_header(frame.data)
            self.selected = mask.matches(self.secondary)
            if not self.selected:
                return None
            self.reset()
            return self._answer(fr.encode(fr.AckFrame()))
        if self.addressed(frame.address):
            return self._answer(fr.encode(fr.AckFrame()))
        return None

    def _answer(self, data: bytes) -> bytes | None:
        if self.dead:
            return None
        fault = self.faults.popleft() if self.faults else None
        if fault == "silence":
            return None
        self.answered += 1
        if fault == "garbage":
            return bytes(random.randrange(256) for _ in range(max(len(data), 3)))
        if fault == "checksum" and len(data) > 2:
            return data[:-2] + bytes(((data[-2] + 1) & 0xFF,)) + data[-1:]
        return data


# -- collisions --------------------------------------------------------------------------


def _uart_bits(data: bytes) -> list[int]:
    bits: list[int] = []
    for b in data:
        payload = [(b >> i) & 1 for i in range(8)]
        bits += [0, *payload, sum(payload) & 1, 1]
    return bits


def collide(answers: Sequence[bytes]) -> bytes:
    """What the master receives when several slaves answer at once.

    Slaves start a few bit times apart; a space (0) from any slave dominates the
    line, so the streams are ANDed bit by bit and decoded again by a UART.
    """
    streams = [[1] * (1 + 3 * i) + _uart_bits(a) for i, a in enumerate(answers)]
    length = max(len(s) for s in streams) + 11
    line = [1] * length
    for s in streams:
        for i, bit in enumerate(s):
            line[i] &= bit
    out = bytearray()
    i = 0
    while i < length - 10:
        if line[i] == 0:
            out.append(sum(line[i + 1 + k] << k for k in range(8)))
            i += 11
        else:
            i += 1
    result = bytes(out)
    # The combination must never read as one slave's clean answer.
    if any(result.startswith(a) for a in answers):
        result = bytes((result[0] ^ 0x81,)) + result[1:]
    return result


# -- the bus -----------------------------------------------------------------------------


@dataclass
class SimBus:
    """All slaves on one simulated bus, and the line timing they share."""

    slaves: list[Slave]
    baudrate: int = 2400
    pace: bool = True
    noise: bool = False
    requests: int = 0

    def answer(self, frame: fr.Frame) -> bytes | None:
        """The bytes on the line after ``frame``: one answer, a collision, or nothing."""
        self.requests += 1
        answers = [a for s in self.slaves if (a := s.handle(frame)) is not None]
        if not answers:
            return None
        if len(answers) == 1:
            return answers[0]
        return collide(answers)

    def slave(self, primary: int) -> Slave:
        """The slave with that primary address."""
        return next(s for s in self.slaves if s.primary == primary)


class _Line:
    """One master's side of the bus: parse requests, pace answers, inject noise."""

    def __init__(self, bus: SimBus, write: Callable[[bytes], None]) -> None:
        self.bus = bus
        self._write = write
        self._buf = b""
        self._free_at = 0.0  # when the bytes sent so far have left the (simulated) line
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._serve()), asyncio.create_task(self._noise())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def received(self, data: bytes) -> None:
        self._inbox.put_nowait(data)

    def _bt(self) -> float:
        return byte_time(self.bus.baudrate) if self.bus.pace else 0.0

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self._inbox.get()
            # The master's bytes occupy the line before the slave has them all.
            self._free_at = max(self._free_at, loop.time()) + len(data) * self._bt()
            self._buf += data
            while self._buf:
                result = fr.scan(self._buf)
                if isinstance(result, fr.Incomplete):
                    break
                if isinstance(result, fr.Invalid):
                    self._buf = self._buf[max(result.skip, 1) :]
                    continue
                self._buf = self._buf[result.end :]
                answer = self.bus.answer(result.frame)
                if answer is not None:
                    # A slave waits at least 11 bit times before it answers.
                    await self._send(answer, self._free_at + self._bt())

    async def _send(self, data: bytes, start: float) -> None:
        loop = asyncio.get_running_loop()
        bt = self._bt()
        if bt == 0:
            self._write(data)
            return
        chunk = max(1, int(0.01 / bt))  # about 10 ms of line time per write
        start = max(start, loop.time())
        for i in range(0, len(data), chunk):
            delay = start + i * bt - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._write(data[i : i + chunk])
        self._free_at = start + len(data) * bt
        await asyncio.sleep(max(0.0, self._free_at - loop.time()))

    async def _noise(self) -> None:
        rng = random.Random(7)
        while True:
            if not self.bus.noise:
                await asyncio.sleep(0.01)
                continue
            n = max(1, int(0.01 / byte_time(self.bus.baudrate)))
            self._write(rng.randbytes(n))
            await asyncio.sleep(n * byte_time(self.bus.baudrate))


class Simulator:
    """Serves one simulated bus on a pseudo-terminal and/or TCP ports."""

    def __init__(self, slaves: list[Slave], baudrate: int = 2400, pace: bool = True) -> None:
        self.bus = SimBus(slaves, baudrate, pace)
        self._lines: list[_Line] = []
        self._servers: list[asyncio.Server] = []
        self._fds: list[int] = []
        self._readers: list[int] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start_pty(self) -> str:
        """Open a pseudo-terminal pair; returns the device path a master opens."""
        loop = asyncio.get_running_loop()
        controller, device = os.openpty()
        tty.setraw(device)  # otherwise the line discipline echoes and rewrites bytes
        os.set_blocking(controller, False)
        self._fds += [controller, device]
        path = os.ttyname(device)

        def write(data: bytes) -> None:
            # A full pty buffer means nobody reads the line: the bytes are lost, as on a bus.
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(controller, data)

        line = _Line(self.bus, write)

        def readable() -> None:
            try:
                data = os.read(controller, 4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EIO while no master has the device open
                return
            if data:
                line.received(data)

        loop.add_reader(controller, readable)
        self._readers.append(controller)
        line.start()
        self._lines.append(line)
        log.info("mbus sim serving pty=%s slaves=%d", path, len(self.bus.slaves))
        return path

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on a TCP port like an M-Bus-to-Ethernet converter; returns the port."""

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = _Line(self.bus, writer.write)
            line.start()
            self._lines.append(line)
            self._writers.append(writer)
            try:
                while data := await reader.read(4096):
                    line.received(data)
            except ConnectionError:
                pass
            finally:
                await line.stop()
                writer.close()

        server = await asyncio.start_server(client, host, port)
        self._servers.append(server)
        bound: int = server.sockets[0].getsockname()[1]
        log.info("mbus sim serving tcp=%s:%d slaves=%d", host, bound, len(self.bus.slaves))
        return bound

    async def serve(self, kind: str, parity: str = "N") -> LinkSpec:
        """Start serving on a new pty (``"pty"``) or TCP port (``"tcp"``); how a master gets there.

        A pty cannot hold even parity, so pty specs default to 8N1.
        """
        settings = LineSettings(self.bus.baudrate, parity)
        if kind == "pty":
            return LinkSpec("serial", settings, device=await self.start_pty())
        if kind == "tcp":
            return LinkSpec("tcp", settings, host="127.0.0.1", port=await self.start_tcp())
        raise ValueError(f"kind must be 'pty' or 'tcp', got {kind!r}")

    async def close(self) -> None:
        """Stop serving and release the pty and sockets."""
        loop = asyncio.get_running_loop()
        for server in self._servers:
            server.close()
        for line in self._lines:
            await line.stop()
        for writer in self._writers:
            writer.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
        for fd in self._readers:
            loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._servers, self._lines, self._fds, self._readers = [], [], [], []
        self._writers = []

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- building buses ----------------------------------------------------------------------

SIM_MANUFACTURER = manufacturer_value("EDG")
MEDIUM_HEAT = 0x04


def generated_slaves(count: int, first_id: int = 10_000_000, telegrams: int = 1) -> list[Slave]:
    """``count`` generated heat meters at primary addresses 1.. with consecutive ids."""
    out = []
    for n in range(count):
        address = SecondaryAddress(f"{first_id + n:08d}", SIM_MANUFACTURER, 1, MEDIUM_HEAT)
        out.append(Slave.generated(n + 1, address, telegrams)[0])
    return out


def slaves_from_dir(directory: Path, count: int | None = None) -> list[Slave]:
    """One slave per ``.hex`` frame in ``directory`` (ids made unique where they clash)."""
    files = sorted(directory.glob("*.hex"))
    out: list[Slave] = []
    seen: set[str] = set()
    for path in files:
        try:
            frame = read_hex(path)
        except (ValueError, fr.FrameError) as exc:
            log.warning("mbus sim skipped file=%s error=%s", path, exc)
            continue
        primary = len(out) + 1
        address = header_of(frame.ci, frame.data) or SecondaryAddress(f"{primary:08d}", 0, 0, 0)
        if str(address) in seen or "F" in address.id or not address.id.isdigit():
            address = replace(address, id=f"{90_000_000 + primary:08d}")
        seen.add(str(address))
        out.append(Slave.from_frames(primary, [frame], address))
        if count is not None and len(out) >= count:
            break
    return out


def main(argv: list[str]) -> int:
    """``edged sim mbus``: serve simulated M-Bus slaves until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="edged sim mbus", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp-port", type=int, help="listen on this TCP port (0: any free one)")
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to bind")
    parser.add_argument("--slaves", type=int, default=None, help="number of slaves (default 5)")
    parser.add_argument("--frames", type=Path, help="directory of .hex frames to answer with")
    parser.add_argument("--telegrams", type=int, default=1, help="telegrams per generated read")
    parser.add_argument("--baud", type=int, default=2400, help="line rate to pace answers at")
    parser.add_argument("--no-pace", action="store_true", help="answer as fast as possible")
    args = parser.parse_args(argv)
    if args.frames is not None:
        if not args.frames.is_dir():
            parser.error(f"--frames: {args.frames} is not a directory")
        slaves = slaves_from_dir(args.frames, args.slaves)
        if not slaves:
            parser.error(f"--frames: no usable .hex frames in {args.frames}")
    else:
        slaves = generated_slaves(args.slaves or 5, telegrams=args.telegrams)
    return asyncio.run(_serve(slaves, args))


async def _serve(slaves: list[Slave], args: argparse.Namespace) -> int:
    sim = Simulator(slaves, args.baud, pace=not args.no_pace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.pty:
        where = f"pty {await sim.start_pty()}"
    else:
        where = f"tcp {args.host}:{await sim.start_tcp(args.host, args.tcp_port)}"
    sys.stdout.write(f"mbus simulator: {len(slaves)} slaves at {args.baud} baud on {where}\n")
    for s in slaves:
        sys.stdout.write(f"  primary {s.primary:3d}  secondary {s.secondary}\n")
    sys.stdout.flush()
    await stop.wait()
    await sim.close()
    return 0
