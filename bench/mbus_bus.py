"""Bus time to read N M-Bus meters, against the line-rate floor.

The simulator paces every byte at the line rate (11 bits per byte) in both
directions, so the floor of one read is (request bytes + response bytes) * 11 /
baud; what the master adds on top is its gaps, the slaves' minimum response
delay and scheduling latency. Run: ``.venv/bin/python bench/mbus_bus.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.mbus import frame as fr
from drivers.mbus.address import Address
from drivers.mbus.master import Master
from drivers.mbus.simulator import Simulator, generated_slaves
from drivers.mbus.transport import transmit_time


async def one_round(master: Master, addresses: list[Address]) -> tuple[float, int]:
    """Read every meter once; bus seconds and bytes that crossed the line."""
    loop = asyncio.get_running_loop()
    nbytes = 0
    started = loop.time()
    for address in addresses:
        reading = await master.read(address)
        for f in reading.frames:
            request = 5  # REQ_UD2 short frame
            nbytes += request + len(fr.encode(f))
        if not isinstance(address, int):
            nbytes += len(fr.encode(fr.LongFrame(fr.SND_UD, 253, fr.CI_SELECT, bytes(8)))) + 1
    return loop.time() - started, nbytes


async def bench(kind: str, meters: int, baud: int, telegrams: int, secondary: bool) -> None:
    sim = Simulator(generated_slaves(meters, telegrams=telegrams), baudrate=baud)
    spec = await sim.serve(kind)
    link = await spec.open()
    try:
        master = Master(link)
        addresses: list[Address] = (
            [s.secondary for s in sim.bus.slaves]
            if secondary
            else [s.primary for s in sim.bus.slaves]
        )
        await one_round(master, addresses)  # link resets (SND_NKE) happen here, not below
        cpu0 = time.process_time()
        elapsed, nbytes = await one_round(master, addresses)
        cpu = time.process_time() - cpu0
    finally:
        await link.close()
        await sim.close()
    floor = transmit_time(nbytes, baud)
    mode = "secondary (select + REQ_UD2)" if secondary else "primary (REQ_UD2)"
    print(
        f"{kind:>3}  {meters} meters x {telegrams} telegram(s), {mode}, {baud} baud:"
        f" bus time {elapsed:.3f} s, line-rate floor {floor:.3f} s ({nbytes} bytes),"
        f" overhead {100 * (elapsed / floor - 1):+.1f} %, CPU {1000 * cpu / meters:.2f} ms/meter"
    )


def main() -> int:
    """Run the benchmark and print each figure with its setup."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meters", type=int, default=20)
    p.add_argument("--baud", type=int, default=2400)
    p.add_argument("--telegrams", type=int, default=1)
    args = p.parse_args()
    print(
        f"setup: simulator and master in one process, Python {platform.python_version()},"
        f" {os.cpu_count()} cores; slave answers paced at 11 bits/byte; master gap 11 bit"
        f" times; request bytes also occupy the simulated line"
    )
    for kind in ("pty", "tcp"):
        asyncio.run(bench(kind, args.meters, args.baud, args.telegrams, secondary=False))
    asyncio.run(bench("pty", args.meters, args.baud, 3, secondary=False))
    asyncio.run(bench("pty", args.meters, args.baud, args.telegrams, secondary=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
