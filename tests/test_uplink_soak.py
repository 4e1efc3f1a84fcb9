"""Crash and restart soaks of the uplink: kill -9 of the publisher, a flapping broker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import resource
from pathlib import Path

import pytest

from edged.outbox import Outbox
from edged.uplink import Uplink
from tests.conftest import Broker, subscribe
from tests.uplink_child import kill_cycles
from tests.uplink_helpers import mqtt_config, record, wait_until

pytestmark = pytest.mark.slow


async def drain_rest(path: Path, port: int) -> None:
    """Open the outbox in this process and publish whatever the killed children left."""
    box = Outbox(path, max_records=1_000_000, max_bytes=1 << 30)
    await box.open()
    up = Uplink(mqtt_config(port, client_id="edged-kill9"), "gw1", box)
    await up.drain(20.0)
    assert box.stats().depth == 0
    await box.close()


async def test_kill9_of_the_publisher_loses_no_durable_record(
    broker: Broker, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.sqlite"
    async with subscribe(broker.port, "edged/gw1/+") as col:
        durable = await kill_cycles(path, broker.port, 20, random.Random(7))
        await drain_rest(path, broker.port)

        def values() -> set[int]:
            return {int(r.values["energy_import"].last) for r in col.records()}

        await col.wait_for(lambda c: durable <= values(), timeout=20)
        # Order per device survives the crashes: after de-duplication by (device, seq) the
        # sequence numbers arrive increasing and without gaps.
        seen: set[tuple[str, int]] = set()
        per_device: dict[str, list[int]] = {}
        for r in col.records():
            key = (r.device_id, r.seq)
            if key not in seen:
                seen.add(key)
                per_device.setdefault(r.device_id, []).append(r.seq)
        for dev, seqs in per_device.items():
            assert seqs == list(range(1, len(seqs) + 1)), dev
    assert len(durable) > 100


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


async def test_broker_restarting_every_few_seconds(broker: Broker, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_records=1_000_000, max_bytes=1 << 30)
    await box.open()
    up = Uplink(mqtt_config(broker.port, backoff_initial=0.05, backoff_max=0.3), "gw1", box)
    runner = asyncio.create_task(up.run())
    put = 0
    samples: list[tuple[int, int, int]] = []
    try:
        loop = asyncio.get_running_loop()
        for restart in range(8):
            end = loop.time() + 2.0
            while loop.time() < end:
                for d in ("a", "b", "c"):
                    box.put(record(d, put))
                    put += 1
                await asyncio.sleep(0.005)
            broker.stop()
            await asyncio.sleep(0.2)
            broker.start()
            gc.collect()
            samples.append((rss_kb(), open_fds(), len(asyncio.all_tasks())))
            assert not runner.done(), f"uplink died after restart {restart}"
        # Not stuck: after the last restart the session comes back and new records go out.
        await wait_until(lambda: up.stats().connected, 10, "reconnect after the last restart")
        for i in range(100):
            box.put(record("z", i))
            put += 1
        await box.flush()
        await wait_until(lambda: box.stats().depth == 0, 20, "drain after the last restart")
        assert up.stats().reconnects >= 8
        assert up.stats().acked >= put
        # No leak: descriptors and tasks flat, RSS within a generous band after warm-up.
        rss, fds, tasks = zip(*samples, strict=True)
        assert max(fds[2:]) <= fds[1] + 2, fds
        assert max(tasks[2:]) <= tasks[1] + 2, tasks
        assert max(rss[2:]) - rss[1] < 15_000, rss
        async with subscribe(broker.port, "edged/gw1/status") as col:
            await col.wait_for(lambda c: len(c.messages) == 1)
            assert col.messages[0][1] == b"online"
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await box.close()
