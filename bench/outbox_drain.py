"""Drain rate of an outbox backlog into a local mosquitto, and CPU at a steady flow.

    python bench/outbox_drain.py [--records 1000000] [--devices 1000] [--inflight 16]
                                 [--steady-rate 1000] [--steady-seconds 10]

Starts its own mosquitto on a free loopback port (QoS 1, no persistence), fills an
outbox with a backlog while the broker is unreachable, then measures how fast the
uplink drains it (records/s, CPU of this process including the writer thread), and
finally the CPU this process uses for a steady flow of --steady-rate records/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procstat import free_port

from edged.config import MqttConfig
from edged.model import Reading, Record
from edged.outbox import Outbox
from edged.uplink import Uplink

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def start_broker(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_inflight_messages 0\nmax_queued_messages 0\nuser root\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def make_record(device: str, value: float) -> Record:
    return Record(
        device,
        1_700_000_000.0,
        60.0,
        {
            "energy_import": Reading(last=value, ts=1_700_000_000.0),
            "power_active": Reading(
                last=value, ts=1_700_000_000.0, mean=value, min=0.0, max=value, count=60
            ),
        },
    )


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def bench(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    port = free_port()
    cfg = MqttConfig(
        "127.0.0.1",
        port,
        "3.1.1",
        "edged-bench",
        "edged",
        None,
        None,
        30,
        None,
        args.inflight,
        0.05,
        0.5,
    )
    box = Outbox(
        workdir / "outbox.sqlite",
        max_records=args.records + 10,
        max_bytes=1 << 34,
        max_pending=args.chunk * 2,
    )
    await box.open()
    devices = [f"meter-{n:04d}" for n in range(args.devices)]
    t0, c0 = time.perf_counter(), cpu()
    for start in range(0, args.records, args.chunk):
        # As the daemon does: one put_many per batch of records (one lock, one wake-up).
        box.put_many(
            make_record(devices[n % len(devices)], float(n))
            for n in range(start, min(args.records, start + args.chunk))
        )
        await box.flush()
    fill_s, fill_cpu = time.perf_counter() - t0, cpu() - c0
    size = box.stats().bytes
    print(
        f"setup: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cpus, mosquitto on loopback, QoS 1, MQTT 3.1.1, "
        f"max_inflight={args.inflight}, {args.devices} devices, "
        f"payload {size // max(1, args.records)} B/record, synchronous=normal"
    )
    print(
        f"fill:  {args.records} records in {fill_s:.1f} s "
        f"({args.records / fill_s:,.0f} records/s, {fill_cpu / args.records * 1e6:.1f} us CPU "
        "each)"
    )

    broker = start_broker(workdir, port)
    up = Uplink(cfg, "bench", box)
    try:
        t0, c0 = time.perf_counter(), cpu()
        runner = asyncio.create_task(up.run())
        while box.stats().depth > 0:  # noqa: ASYNC110 (polling is the measurement)
            await asyncio.sleep(0.05)
        drain_s, drain_cpu = time.perf_counter() - t0, cpu() - c0
        print(
            f"drain: {args.records} records in {drain_s:.1f} s = "
            f"{args.records / drain_s:,.0f} records/s "
            f"({drain_cpu / args.records * 1e6:.1f} us CPU per record, this process)"
        )

        # Steady state: a paced flow; the uplink keeps up, so CPU is the cost per record.
        rate, seconds = args.steady_rate, args.steady_seconds
        loop = asyncio.get_running_loop()
        t0, c0 = time.perf_counter(), cpu()
        began = loop.time()
        sent = 0
        tick = 0.01
        while loop.time() - began < seconds:
            due = int((loop.time() - began) * rate)
            while sent < due:
                box.put(make_record(devices[sent % len(devices)], float(sent)))
                sent += 1
            await asyncio.sleep(tick)
        await box.flush()
        while box.stats().depth > 0:  # noqa: ASYNC110 (polling is the measurement)
            await asyncio.sleep(0.01)
        wall, used = time.perf_counter() - t0, cpu() - c0
        per_k = used / wall / (sent / wall / 1000)
        print(
            f"steady: {sent / wall:,.0f} records/s for {wall:.1f} s: {used / wall * 100:.1f} % "
            f"of one core = {per_k * 100:.1f} % of a core per 1,000 records/s "
            f"(outbox write + MQTT publish + ack, this process)"
        )
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    finally:
        await box.close()
        broker.terminate()
        broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="outbox_drain", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--inflight", type=int, default=16)
    p.add_argument("--chunk", type=int, default=20_000)
    p.add_argument("--steady-rate", type=int, default=1000)
    p.add_argument("--steady-seconds", type=float, default=10.0)
    asyncio.run(bench(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
