"""Modbus TCP server bench: C clients polling at R Hz against N metering points.

The server (``edged.modbus_server``: pymodbus's TCP server with edged's sessions and the
live-values datastore) runs alone in a child process, with N metering points in its live
values (three-phase electricity meters, every 10th a heat meter), all online, refreshed
once a second as a 1 Hz poll would. The clients run in this process: each keeps one
connection and sends one read every 1/R s, alternating the SunSpec meter model (107
registers at 40070) and the whole plain map (114 registers at 0), walking the unit ids.

Prints the setup, answered requests per second, the server process's CPU in cores
(utime+stime from /proc) with and without the clients, CPU per request, peak RSS and the
reply latency seen by the clients.

    .venv/bin/python bench/modbus_server.py --clients 50 --rate 10 --points 100 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from procstat import cpu_model, cpu_seconds, free_port, status_kb  # noqa: E402

from edged.live import LiveValues  # noqa: E402
from edged.modbus_server import plainmap  # noqa: E402
from edged.modbus_server.config import ModbusServerConfig  # noqa: E402
from edged.modbus_server.server import LiveRegisters, ModbusServer, ServedPoint  # noqa: E402
from edged.model import DeviceState, Sample  # noqa: E402

METER = {
    "energy_import": 1_523_340.0,
    "energy_export": 1000.0,
    "power_active": 2310.5,
    "power_reactive": 462.1,
    "power_apparent": 2356.7,
    "power_factor": 0.98,
    "frequency": 50.01,
    **{f"voltage_l{n}": 230.0 + n / 10 for n in (1, 2, 3)},
    **{f"current_l{n}": 3.3 for n in (1, 2, 3)},
    **{f"power_active_l{n}": 770.0 for n in (1, 2, 3)},
    **{f"voltage_{p}": 399.0 for p in ("l1_l2", "l2_l3", "l3_l1")},
}
HEAT = {"energy_heat": 5e6, "volume": 812.5, "flow_temperature": 61.5, "return_temperature": 40.1}


# -- the server process ---------------------------------------------------------------------


async def serve(port: int, points: int) -> None:
    live = LiveValues()
    served = [
        ServedPoint(f"p{i}", i, "heat" if i % 10 == 0 else "electricity", 10.0)
        for i in range(1, points + 1)
    ]
    registers = LiveRegisters(
        live, lambda _p: DeviceState.ONLINE, gateway_id="gw-bench", models="int", version="bench"
    )
    server = ModbusServer(ModbusServerConfig(port=port, max_connections=1000), registers)
    server.set_points(served)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        now = time.time()
        for p in served:  # what the pipeline does for N points polled at 1 Hz
            live.update(Sample(p.id, now, HEAT if p.medium == "heat" else METER))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await server.close()


# -- the clients --------------------------------------------------------------------------


class Client:
    """One connection sending one read every period (hand-rolled MBAP: a light client)."""

    def __init__(self, index: int, points: int, period: float) -> None:
        self.index = index
        self.points = points
        self.period = period
        self.answered = 0
        self.errors = 0
        self.latencies: list[float] = []

    async def run(self, port: int, until: float, measure_from: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        n = self.index
        next_at = loop.time() + (self.index % 10) * self.period / 10
        tid = 0
        while time.monotonic() < until:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self.period
            n += 1
            tid = (tid + 1) & 0xFFFF
            unit = 1 + n % self.points
            if n % 2 and unit % 10:
                address, count = 40070, 107  # the SunSpec meter model
            else:
                address, count = 0, plainmap.SIZE
            t0 = time.perf_counter()
            writer.write(struct.pack(">HHHBBHH", tid, 0, 6, unit, 3, address, count))
            head = await reader.readexactly(7)
            _, _, length, _ = struct.unpack(">HHHB", head)
            body = await reader.readexactly(length - 1)
            if time.monotonic() >= measure_from:
                self.latencies.append(time.perf_counter() - t0)
                if body[0] & 0x80:
                    self.errors += 1
                else:
                    self.answered += 1
        writer.close()


async def drive(port: int, args: argparse.Namespace, pid: int) -> None:
    period = 1.0 / args.rate
    idle0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(3.0)
    idle_cores = (cpu_seconds(pid) - idle0) / (time.monotonic() - t0)

    clients = [Client(i, args.points, period) for i in range(args.clients)]
    start = time.monotonic()
    measure_from = start + args.warmup
    until = measure_from + args.seconds
    tasks = [asyncio.create_task(c.run(port, until, measure_from)) for c in clients]
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    cpu0, w0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    cpu1, w1 = cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*tasks)

    wall = w1 - w0
    answered = sum(c.answered for c in clients)
    errors = sum(c.errors for c in clients)
    lat = sorted(x for c in clients for x in c.latencies)
    cores = (cpu1 - cpu0) / wall
    rate = answered / wall
    print(
        f"setup: {args.clients} clients x {args.rate:g} Hz, one request per poll (alternating "
        f"the SunSpec meter model, 107 registers, and the plain map, {plainmap.SIZE} registers), "
        f"{args.points} metering points in the live values (refreshed at 1 Hz), server alone "
        f"in one process, {args.seconds:g} s measured after {args.warmup:g} s warm-up"
    )
    print(
        f"machine: {os.cpu_count()} cores ({cpu_model()}), shared with other jobs while "
        f"measuring; Python {platform.python_version()}, pymodbus server"
    )
    target = args.clients * args.rate
    print(f"requests answered: {rate:.0f}/s (target {target:.0f}/s), errors {errors}")
    print(
        f"server CPU: {cores:.3f} cores with the clients, {idle_cores:.3f} idle; "
        f"{(cores - idle_cores) / rate * 1e6 if rate else float('nan'):.0f} us per request"
    )
    print(f"server peak RSS: {status_kb(pid, 'VmHWM') / 1024:.1f} MB")
    if lat:
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        print(f"reply latency at the clients: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rate", type=float, default=10.0, help="polls per client per second")
    ap.add_argument("--points", type=int, default=100, help="metering points (unit ids)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.points > 247:
        ap.error("at most 247 metering points (unit ids)")
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.points))
        return 0
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--points", str(args.points)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with __import__("socket").create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    print("server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        asyncio.run(drive(port, args, child.pid))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
