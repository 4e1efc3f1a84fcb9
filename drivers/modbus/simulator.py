"""Simulated Modbus meters: serve any profile over loopback TCP or an RTU pseudo-terminal.

Each simulated meter produces plausible values (power drifts around a base load, the
energy counter is the integral of that power, so it grows consistently with time) and
can be told to misbehave: stay silent, answer given registers with an exception code,
or drop the connection. It keeps coils and takes writes (function codes 5, 6, 15, 16):
a written holding register reads back what was written, ``Meter.coils`` holds the coil
states and ``Meter.writes`` lists every write. The TCP and RTU servers are lean asyncio
code (MBAP framing, function codes 1, 3, 4, 5, 6, 15, 16, exception replies) so one
process can serve many meters.

Use it in-process (``Simulator``) or from the command line:
``edged sim modbus --profile eastron_sdm630 --count 3 --port 15020 [--rtu-pty]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import struct
import sys
import time
import tty
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drivers.modbus import codec, frame
from drivers.modbus import profile as profiles
from drivers.modbus.planner import Table
from drivers.modbus.profile import Point, Profile

Clock = Callable[[], float]
_TABLE_OF: dict[int, Table] = {frame.READ_HOLDING: "holding", frame.READ_INPUT: "input"}


@dataclass
class Faults:
    """Misbehaviour injected into one meter (change the fields at any time)."""

    silent: bool = False
    exceptions: dict[tuple[Table, int], int] = field(default_factory=dict)
    drop_connection: bool = False

    def refuse(self, table: Table, registers: Sequence[int], code: int = 2) -> None:
        """Answer any read touching these registers with exception ``code``."""
        for r in registers:
            self.exceptions[(table, r)] = code


class Meter:
    """One simulated meter serving a profile's quantities with plausible values."""

    def __init__(
        self,
        prof: Profile,
        unit: int = 1,
        seed: int = 0,
        clock: Clock = time.time,
        record: bool = False,
    ) -> None:
        self.profile = prof
        self.record = record
        self.unit = unit
        self.clock = clock
        self.faults = Faults()
        self.fixed: dict[str, float] = {}
        # Coil states and holding registers written by a client (they override the profile).
        self.coils: dict[int, bool] = {}
        self.written: dict[int, int] = {}
        self.writes: list[tuple[str, int, tuple[int, ...]]] = []
        """Every write: ("coil" or "holding", address, values; a coil as 1 or 0)."""
        # Every request, when asked to record (tests); a long-running fleet keeps only counts.
        self.requests: list[tuple[Table, int, int]] = []
        self.request_count = 0
        rnd = (zlib.crc32(f"{prof.name}:{unit}:{seed}".encode()) & 0xFFFF) / 0xFFFF
        self._base = 500.0 + 4000.0 * rnd
        self._swing = 0.3 * self._base
        self._period = 300.0 + 600.0 * rnd
        self._t0 = clock()
        self._e0 = 1_000_000.0 * (1 + rnd)
        self._points: dict[Table, list[Point]] = {"holding": [], "input": []}
        for p in prof.points:
            self._points[p.table].append(p)
        for pts in self._points.values():
            pts.sort(key=lambda p: p.register)
        self._cache_t = -1.0
        self._cache: dict[str, float] = {}

    def power(self, t: float) -> float:
        """Total active power (W) at time t."""
        return self._base + self._swing * math.sin(2 * math.pi * (t - self._t0) / self._period)

    def energy(self, t: float) -> float:
        """Imported energy (Wh) at time t: the integral of ``power`` since start."""
        w = 2 * math.pi / self._period
        dt = t - self._t0
        integral = self._base * dt + self._swing / w * (1 - math.cos(w * dt))
        return self._e0 + integral / 3600.0

    def values(self, t: float | None = None) -> dict[str, float]:
        """Canonical values of every quantity at time t (now by default)."""
        t = self.clock() if t is None else t
        if t == self._cache_t:
            return self._cache
        p = self.power(t)
        ripple = math.sin(t / 7.0)
        v = 230.0 + 2.0 * ripple
        i = p / 3 / v
        vals = {
            "energy_import": self.energy(t),
            "energy_export": 1000.0,
            "energy_reactive_import": 0.2 * self.energy(t),
            "energy_reactive_export": 500.0,
            "power_active": p,
            "power_reactive": 0.2 * p,
            "power_apparent": 1.02 * p,
            "power_factor": 0.98,
            "frequency": 50.0 + 0.02 * ripple,
            "current_n": 0.1,
        }
        for n in (1, 2, 3):
            vals[f"voltage_l{n}"] = v + n * 0.1
            vals[f"current_l{n}"] = i
            vals[f"power_active_l{n}"] = p / 3
            vals[f"power_reactive_l{n}"] = 0.2 * p / 3
            vals[f"power_apparent_l{n}"] = 1.02 * p / 3
            vals[f"power_factor_l{n}"] = 0.98
        for pair in ("l1_l2", "l2_l3", "l3_l1"):
            vals[f"voltage_{pair}"] = v * math.sqrt(3)
        vals.update(self.fixed)
        self._cache_t, self._cache = t, vals
        return vals

    def read(self, table: Table, start: int, count: int) -> list[int] | int | None:
        """Registers for a read request, an exception code, or None to stay silent."""
        self.request_count += 1
        if self.record:
            self.requests.append((table, start, count))
        if self.faults.silent:
            return None
        end = start + count
        if self.faults.exceptions:
            for r in range(start, end):
                code = self.faults.exceptions.get((table, r))
                if code is not None:
                    return code
        regs = [0] * count
        vals = self.values()
        for p in self._points[table]:
            w = codec.width(p.type)
            if p.register >= end or p.register + w <= start:
                continue
            words = codec.encode(
                p.raw(vals.get(p.quantity, 0.0)), p.type, p.word_order, p.byte_order
            )
            for k, word in enumerate(words):
                r = p.register + k
                if start <= r < end:
                    regs[r - start] = word
        if table == "holding" and self.written:
            for r in range(start, end):
                if r in self.written:
                    regs[r - start] = self.written[r]
        return regs

    def write_registers(self, start: int, values: Sequence[int]) -> int | None:
        """Take a holding register write; an exception code, or None when it was taken."""
        self.request_count += 1
        if self.faults.silent:
            return -1
        for r in range(start, start + len(values)):
            code = self.faults.exceptions.get(("holding", r))
            if code is not None:
                return code
        for k, v in enumerate(values):
            self.written[start + k] = v
        self.writes.append(("holding", start, tuple(values)))
        return None

    def write_coils(self, start: int, states: Sequence[bool]) -> int | None:
        """Take a coil write; -1 to stay silent, an exception code, or None when taken."""
        self.request_count += 1
        if self.faults.silent:
            return -1
        for k, on in enumerate(states):
            self.coils[start + k] = on
        self.writes.append(("coil", start, tuple(int(s) for s in states)))
        return None


def _serve_write(meter: Meter, pdu: bytes) -> bytes | None:
    """The reply to a write (function 5, 6, 15 or 16), or None to stay silent."""
    function = pdu[0]
    if len(pdu) < 5:
        return frame.exception_reply(function, frame.ILLEGAL_DATA_VALUE)
    start, word = struct.unpack(">HH", pdu[1:5])
    result: int | None
    if function == frame.WRITE_COIL:
        if len(pdu) != 5 or word not in (0, frame.COIL_ON):
            return frame.exception_reply(function, frame.ILLEGAL_DATA_VALUE)
        result = meter.write_coils(start, [word == frame.COIL_ON])
    elif function == frame.WRITE_REGISTER:
        if len(pdu) != 5:
            return frame.exception_reply(function, frame.ILLEGAL_DATA_VALUE)
        result = meter.write_registers(start, [word])
    else:
        count, data = word, pdu[6:]
        nbytes = pdu[5] if len(pdu) > 5 else -1
        limit = frame.MAX_WRITE_COILS if function == frame.WRITE_COILS else frame.MAX_WRITE
        need = (count + 7) // 8 if function == frame.WRITE_COILS else 2 * count
        if not 1 <= count <= limit or nbytes != need or len(data) != need:
            return frame.exception_reply(function, frame.ILLEGAL_DATA_VALUE)
        if start + count > 0x10000:
            return frame.exception_reply(function, frame.ILLEGAL_DATA_ADDRESS)
        if function == frame.WRITE_COILS:
            states = [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
            result = meter.write_coils(start, states)
        else:
            result = meter.write_registers(start, struct.unpack(f">{count}H", data))
        if result is None:
            return pdu[:5]
    if result == -1:
        return None
    if result is not None:
        return frame.exception_reply(function, result)
    return pdu[:5]


def _serve_coil_read(meter: Meter, pdu: bytes) -> bytes | None:
    if len(pdu) != 5:
        return frame.exception_reply(frame.READ_COILS, frame.ILLEGAL_DATA_VALUE)
    start, count = struct.unpack(">HH", pdu[1:5])
    if not 1 <= count <= frame.MAX_READ_COILS:
        return frame.exception_reply(frame.READ_COILS, frame.ILLEGAL_DATA_VALUE)
    if start + count > 0x10000:
        return frame.exception_reply(frame.READ_COILS, frame.ILLEGAL_DATA_ADDRESS)
    meter.request_count += 1
    if meter.faults.silent:
        return None
    return frame.coils_reply([meter.coils.get(start + i, False) for i in range(count)])


_WRITES = frozenset(
    {frame.WRITE_COIL, frame.WRITE_REGISTER, frame.WRITE_COILS, frame.WRITE_REGISTERS}
)


def serve_pdu(meter: Meter, pdu: bytes) -> bytes | None:
    """The response PDU to a request PDU, or None when the meter stays silent."""
    if not pdu:
        return None
    function = pdu[0]
    if function in _WRITES:
        return _serve_write(meter, pdu)
    if function == frame.READ_COILS:
        return _serve_coil_read(meter, pdu)
    table = _TABLE_OF.get(function)
    if table is None:
        return frame.exception_reply(function, frame.ILLEGAL_FUNCTION)
    if len(pdu) != 5:
        return frame.exception_reply(function, frame.ILLEGAL_DATA_VALUE)
    start, count = struct.unpack(">HH", pdu[1:5])
    if not 1 <= count <= frame.MAX_READ:
        return frame.exception_reply(function, frame.ILLEGAL_DATA_VALUE)
    if start + count > 0x10000:
        return frame.exception_reply(function, frame.ILLEGAL_DATA_ADDRESS)
    result = meter.read(table, start, count)
    if result is None:
        return None
    if isinstance(result, int):
        return frame.exception_reply(function, result)
    return frame.read_reply(function, result)


class _TcpSession(asyncio.Protocol):
    """One client connection to a simulated TCP port (MBAP framing)."""

    def __init__(self, meters: dict[int, Meter], sessions: set[_TcpSession]) -> None:
        self.meters = meters
        self.sessions = sessions
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sessions.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sessions.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 7 and self.transport is not None:
            tid, _pid, length, unit = frame.MBAP.unpack_from(self.buf)
            if length < 2 or length > 254:
                self.transport.close()
                return
            if len(self.buf) < 6 + length:
                return
            pdu, self.buf = self.buf[7 : 6 + length], self.buf[6 + length :]
            meter = self.meters.get(unit) or (
                self.meters.get(1) if len(self.meters) == 1 and unit in (0, 255) else None
            )
            if meter is None:
                reply: bytes | None = frame.exception_reply(
                    pdu[0] if pdu else 0, frame.GATEWAY_TARGET_FAILED
                )
            else:
                if meter.faults.drop_connection:
                    self.transport.abort()
                    return
                reply = serve_pdu(meter, pdu)
            if reply is not None:
                self.transport.write(frame.mbap(tid, unit, reply))


class _RtuSlave:
    """A pseudo-terminal serving RTU frames for the meters on one simulated bus."""

    def __init__(self, meters: dict[int, Meter]) -> None:
        self.meters = meters
        self.master, self.slave = os.openpty()
        # Raw mode at once, or the line discipline echoes and mangles binary frames.
        tty.setraw(self.slave)
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.buf = b""
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO while no client holds the slave end open; keep waiting.
            return
        self.buf += data
        while len(self.buf) >= 8:
            # Multiple-write requests carry a byte count; everything else is 8 bytes long.
            size = 8
            if self.buf[1] in (frame.WRITE_COILS, frame.WRITE_REGISTERS):
                if len(self.buf) < 7:
                    return
                size = 9 + self.buf[6]
                if len(self.buf) < size:
                    return
            request = self.buf[:size]
            if frame.crc16(request[:-2]) != int.from_bytes(request[-2:], "little"):
                self.buf = self.buf[1:]  # resynchronise on the next byte
                continue
            self.buf = self.buf[size:]
            meter = self.meters.get(request[0])
            if meter is None or meter.faults.drop_connection:
                continue
            reply = serve_pdu(meter, request[1:-2])
            if reply is not None:
                with contextlib.suppress(OSError):
                    os.write(self.master, frame.with_crc(bytes((request[0],)) + reply))

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass(frozen=True)
class Endpoint:
    """Where a group of simulated meters is served."""

    kind: str
    address: str
    port: int
    units: tuple[int, ...]


class Simulator:
    """A set of simulated meters served over TCP ports and RTU pseudo-terminals."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.meters: list[Meter] = []
        self.endpoints: list[Endpoint] = []
        self._servers: list[asyncio.Server] = []
        self._slaves: list[_RtuSlave] = []
        self._sessions: set[_TcpSession] = set()

    async def add_tcp(self, meters: Sequence[Meter], port: int = 0) -> int:
        """Serve these meters (by unit id) on one TCP port; returns the port."""
        table = {m.unit: m for m in meters}

        def factory() -> _TcpSession:
            return _TcpSession(table, self._sessions)

        server = await asyncio.get_running_loop().create_server(
            factory, self.host, port, reuse_address=True, backlog=1024
        )
        self._servers.append(server)
        self.meters.extend(meters)
        bound: int = server.sockets[0].getsockname()[1]
        self.endpoints.append(Endpoint("tcp", self.host, bound, tuple(table)))
        return bound

    async def add_rtu_pty(self, meters: Sequence[Meter]) -> str:
        """Serve these meters on a new RTU pseudo-terminal; returns the slave path."""
        slave = _RtuSlave({m.unit: m for m in meters})
        self._slaves.append(slave)
        self.meters.extend(meters)
        self.endpoints.append(Endpoint("rtu", slave.path, 0, tuple(m.unit for m in meters)))
        return slave.path

    def drop_connections(self) -> None:
        """Close every open TCP client connection now."""
        for s in list(self._sessions):
            if s.transport is not None:
                s.transport.abort()

    async def stop(self) -> None:
        """Stop serving and release ports and pseudo-terminals."""
        self.drop_connections()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for slave in self._slaves:
            slave.close()
        self._slaves.clear()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _profile(ref: str) -> Profile:
    path = profiles.resolve(ref, Path.cwd())
    if path is None:
        raise SystemExit(
            f"edged sim modbus: no profile {ref!r} (shipped: {', '.join(profiles.shipped())})"
        )
    return profiles.load(path)


async def _serve(args: argparse.Namespace) -> None:
    prof = _profile(args.profile)
    sim = Simulator(args.host)
    out = sys.stdout
    per = max(1, args.units_per_port)
    meters = [Meter(prof, unit=1 + (i % per), seed=i) for i in range(args.count)]
    for g in range(0, len(meters), per):
        port = await sim.add_tcp(meters[g : g + per], 0 if args.port == 0 else args.port + g // per)
        units = ",".join(str(m.unit) for m in meters[g : g + per])
        out.write(f"tcp {args.host}:{port} units {units} profile {prof.name}\n")
    if args.rtu_pty:
        rtu = [Meter(prof, unit=u, seed=1000 + u) for u in range(1, min(args.count, 247) + 1)]
        path = await sim.add_rtu_pty(rtu)
        out.write(f"rtu {path} units 1-{len(rtu)} profile {prof.name} (8N1)\n")
    out.write("ready\n")
    out.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def report() -> None:
        # Benchmarks ask for the request count to measure polls per device per second.
        total = sum(m.request_count for m in sim.meters)
        out.write(f"requests {total} meters {len(sim.meters)} t {time.monotonic():.6f}\n")
        out.flush()

    loop.add_signal_handler(signal.SIGUSR1, report)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str]) -> int:
    """``edged sim modbus``: serve simulated meters until SIGINT or SIGTERM."""
    ap = argparse.ArgumentParser(
        prog="edged sim modbus",
        description="Serve simulated Modbus meters until SIGINT or SIGTERM "
        "(SIGUSR1 prints the number of requests served).",
    )
    ap.add_argument(
        "--profile",
        default="eastron_sdm630",
        help="shipped profile name or path to a .toml profile",
    )
    ap.add_argument("--count", type=int, default=1, help="number of meters")
    ap.add_argument(
        "--port",
        type=int,
        default=15020,
        help="first TCP port (meter groups use consecutive ports; 0 = any free)",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument(
        "--units-per-port",
        type=int,
        default=1,
        help="meters served behind one port as unit ids 1..K",
    )
    ap.add_argument(
        "--rtu-pty",
        action="store_true",
        help="also serve meters (unit ids 1..count) on an RTU pseudo-terminal",
    )
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error("--count must be at least 1")
    if not 1 <= args.units_per_port <= 247:
        ap.error("--units-per-port must be 1-247")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
