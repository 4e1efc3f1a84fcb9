"""A publishing process for kill -9 tests: outbox + uplink, a steady flow of records.

Usage: python uplink_child.py OUTBOX_PATH BROKER_PORT CYCLE [RATE]

After each flush it prints ``durable <value>`` for every record that is now on
disk, so a line on stdout proves the record was durable before the process died.
Record values are ``CYCLE * 1_000_000 + n`` to tell runs apart.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path

from edged.config import MqttConfig
from edged.model import Reading, Record
from edged.outbox import Outbox
from edged.uplink import Uplink

DEVICES = ("k0", "k1", "k2", "k3")


async def main(path: Path, port: int, cycle: int, rate: float) -> None:
    cfg = MqttConfig(
        "127.0.0.1", port, "3.1.1", "edged-kill9", "edged", None, None, 10, None, 16, 0.05, 0.5
    )
    box = Outbox(path, max_records=1_000_000, max_bytes=1 << 30)
    await box.open()
    up = Uplink(cfg, "gw1", box)
    runner = asyncio.create_task(up.run())
    print("ready", flush=True)
    n = 0
    while not runner.done():
        values = []
        for dev in DEVICES:
            value = cycle * 1_000_000 + n
            n += 1
            box.put(
                Record(
                    dev,
                    1_700_000_000.0,
                    60.0,
                    {"energy_import": Reading(last=float(value), ts=1_700_000_000.0)},
                )
            )
            values.append(value)
        await box.flush()
        sys.stdout.write("".join(f"durable {v}\n" for v in values))
        sys.stdout.flush()
        await asyncio.sleep(len(DEVICES) / rate)


async def kill_cycles(
    path: Path,
    port: int,
    cycles: int,
    rng: random.Random,
    min_life: float = 0.15,
    max_life: float = 0.6,
) -> set[int]:
    """Start this script, SIGKILL it after a random time, repeat; return the durable values."""
    durable: set[int] = set()
    for cycle in range(1, cycles + 1):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            str(path),
            str(port),
            str(cycle),
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), 30)
        if ready != b"ready\n":
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"child did not start: {ready!r}")
        await asyncio.sleep(rng.uniform(min_life, max_life))
        proc.send_signal(signal.SIGKILL)
        out = await proc.stdout.read()
        code = await proc.wait()
        if code != -signal.SIGKILL:
            raise RuntimeError(f"child ended by itself with code {code} in cycle {cycle}")
        lines = out.split(b"\n")[:-1]  # a line cut by the kill has no newline: ignore it
        got = {int(line.split()[1]) for line in lines if line.startswith(b"durable ")}
        if not got:
            raise RuntimeError(f"child reported no durable record in cycle {cycle}")
        durable |= got
    return durable


if __name__ == "__main__":
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 400.0
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), rate))
