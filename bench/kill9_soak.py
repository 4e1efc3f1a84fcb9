"""kill -9 soak: a publishing process is killed repeatedly; no durable record may be lost.

    python bench/kill9_soak.py [--cycles 100] [--seed 1]
    python bench/kill9_soak.py --flap 60     # broker restarted every 3 s instead

Starts mosquitto on a free loopback port and a QoS 1 subscriber, then runs
tests/uplink_child.py (outbox + uplink + a steady flow of records) and SIGKILLs it
after a random 0.15-0.6 s, --cycles times. The child prints a record as durable
only after Outbox.flush() returned. Finally the leftover backlog is drained in this
process and every durable record must have reached the subscriber, with per-device
sequence numbers in order after de-duplication.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from outbox_drain import free_port, start_broker
from uplink_child import kill_cycles  # type: ignore[import-not-found,unused-ignore]

from edged.config import MqttConfig
from edged.model import Reading, Record
from edged.outbox import Outbox
from edged.payload import decode
from edged.uplink import Uplink


async def soak(cycles: int, seed: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="edged-kill9-"))
    port = free_port()
    broker: subprocess.Popen[bytes] = start_broker(workdir, port)
    got: list[Record] = []
    try:
        async with aiomqtt.Client("127.0.0.1", port, identifier="kill9-sub") as sub:
            await sub.subscribe("edged/gw1/+", qos=1)

            async def pump() -> None:
                async for msg in sub.messages:
                    topic = str(msg.topic)
                    if topic.endswith(("/status", "/events")):
                        continue
                    if isinstance(msg.payload, bytes):
                        got.extend(decode(msg.payload))

            pumper = asyncio.create_task(pump())
            t0 = time.perf_counter()
            path = workdir / "outbox.sqlite"
            durable = await kill_cycles(path, port, cycles, random.Random(seed))
            box = Outbox(path, max_records=1_000_000, max_bytes=1 << 30)
            await box.open()
            cfg = MqttConfig(
                "127.0.0.1",
                port,
                "3.1.1",
                "edged-kill9",
                "edged",
                None,
                None,
                10,
                None,
                16,
                0.05,
                0.5,
            )
            await Uplink(cfg, "gw1", box).drain(30.0)
            left = box.stats().depth
            await box.close()
            deadline = time.monotonic() + 20
            values: set[int] = set()
            while time.monotonic() < deadline:
                values = {int(r.values["energy_import"].last) for r in got}
                if durable <= values:
                    break
                await asyncio.sleep(0.1)
            pumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumper
        missing = durable - values
        seen: set[tuple[str, int]] = set()
        per_device: dict[str, list[int]] = {}
        for r in got:
            key = (r.device_id, r.seq)
            if key not in seen:
                seen.add(key)
                per_device.setdefault(r.device_id, []).append(r.seq)
        ordered = all(s == list(range(1, len(s) + 1)) for s in per_device.values())
        print(
            f"setup: {cycles} kill -9 cycles, child lives 0.15-0.6 s at ~400 records/s, "
            f"4 devices, local mosquitto, QoS 1, seed {seed}"
        )
        print(
            f"result: {len(durable)} durable records reported, {len(missing)} missing, "
            f"{len(got)} records received ({len(seen)} unique), outbox left {left}, "
            f"order per device {'kept' if ordered else 'BROKEN'}, "
            f"{time.perf_counter() - t0:.1f} s"
        )
        return 0 if not missing and ordered and left == 0 else 1
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def flap(seconds: float, period: float = 3.0, rate: float = 300.0) -> int:
    """Steady flow while mosquitto restarts every ``period`` s; the backlog must drain."""
    workdir = Path(tempfile.mkdtemp(prefix="edged-flap-"))
    port = free_port()
    broker = start_broker(workdir, port)
    box = Outbox(workdir / "outbox.sqlite", max_records=1_000_000, max_bytes=1 << 30)
    await box.open()
    cfg = MqttConfig(
        "127.0.0.1", port, "3.1.1", "edged-flap", "edged", None, None, 10, None, 16, 0.05, 0.5
    )
    up = Uplink(cfg, "gw1", box)
    runner = asyncio.create_task(up.run())
    loop = asyncio.get_running_loop()
    put = 0
    samples: list[tuple[float, int, int]] = []
    t0 = loop.time()
    try:
        while loop.time() - t0 < seconds:
            end = loop.time() + period
            while loop.time() < end:
                for _ in range(int(rate * 0.01)):
                    box.put(
                        Record(
                            f"d{put % 10}",
                            1_700_000_000.0,
                            60.0,
                            {"energy_import": Reading(float(put), 1_700_000_000.0)},
                        )
                    )
                    put += 1
                await asyncio.sleep(0.01)
            broker.terminate()
            broker.wait()
            broker = start_broker(workdir, port)
            samples.append((loop.time() - t0, rss_kb(), len(os.listdir("/proc/self/fd"))))
        await box.flush()
        deadline = loop.time() + 30
        while box.stats().depth > 0 and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        st, us = box.stats(), up.stats()
        print(
            f"setup: mosquitto restarted every {period:.0f} s for {seconds:.0f} s, "
            f"{rate:.0f} records/s, max_inflight 16, backoff 0.05-0.5 s"
        )
        print(
            f"result: {put} records put, {us.acked} acked, outbox left {st.depth}, "
            f"{us.reconnects} reconnects, uplink task alive: {not runner.done()}"
        )
        print("rss_kb/fds over time: " + ", ".join(f"{t:.0f}s={r}/{f}" for t, r, f in samples))
        warm = samples[len(samples) // 4 :]
        growth = max(r for _, r, _ in warm) - warm[0][1]
        print(f"rss growth after warm-up: {growth} kB")
        return 0 if st.depth == 0 and us.acked >= put and not runner.done() else 1
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await box.close()
        broker.terminate()
        broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kill9_soak", description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--flap",
        type=float,
        metavar="SECONDS",
        help="instead: restart the broker every 3 s for this long under flow",
    )
    a = p.parse_args(argv)
    if a.flap:
        return asyncio.run(flap(a.flap))
    return asyncio.run(soak(a.cycles, a.seed))


if __name__ == "__main__":
    sys.exit(main())
