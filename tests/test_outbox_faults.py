"""Outbox bounds under faults, with a real mosquitto: the limit holds at every moment and
a clean stop after an outage drops nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from edged.app import Daemon
from edged.outbox import Outbox
from edged.uplink import Uplink
from tests.conftest import Broker, free_port, subscribe
from tests.daemon import write_config
from tests.test_tiers_e2e import FakeClock, aligned_start, feed, until
from tests.uplink_helpers import (
    Received,
    durable_subscriber,
    mqtt_config,
    persistent_broker_conf,
    record,
    wait_until,
)


async def test_depth_never_exceeds_max_records(broker: Broker, tmp_path: Path) -> None:
    # The subscriber's session outlives the outage, so what the uplink sends the moment the
    # broker is back is queued for it rather than racing its subscription.
    broker.extra_conf = persistent_broker_conf(tmp_path)
    broker.stop()
    broker.start()
    async with durable_subscriber(broker.port, "edged/gw1/#") as got:
        broker.stop()  # an outage: nothing leaves, the bound must drop the oldest
        await _fill_during_outage_then_drain(broker, tmp_path, got)


async def _fill_during_outage_then_drain(broker: Broker, tmp_path: Path, got: Received) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_records=100, max_bytes=100_000_000)
    await box.open()
    up = Uplink(mqtt_config(broker.port), "gw1", box)
    task = asyncio.create_task(up.run())
    try:
        depths = []
        for i in range(20):
            box.put_many(record(f"m{j % 5}", i * 100 + j) for j in range(100))
            depths.append(box.stats().depth)  # before the writer took them
            await asyncio.sleep(0.005)
            depths.append(box.stats().depth)
        await box.flush()
        depths.append(box.stats().depth)
        assert max(depths) == 100 and depths[-1] == 100
        assert box.stats().dropped == 1900
        broker.start()
        await wait_until(lambda: box.stats().depth == 0, 30, "the outbox to drain")
        await wait_until(lambda: got.count_unique() == 100, 30, "100 records at the subscriber")
        # The newest 100 arrived: 20 per device, the last seqs each device was given.
        assert sorted(got.unique()["m0"]) == list(range(381, 401))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await box.close()


@pytest.mark.slow
async def test_clean_stop_after_an_outage_drops_nothing(broker: Broker, tmp_path: Path) -> None:
    body = f"""
[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = {free_port()}

[outbox]
max_records = 10
"""
    for dev in ("cp1", "cp2"):
        body += f"""
[[devices]]
id = "{dev}"
connection = "chargers"
cloud_licence = "professional"
"""
    cfg = write_config(tmp_path, body, mqtt_port=broker.port, capacity=10)
    text = cfg.read_text()
    # A long reconnect backoff: when SIGTERM comes the broker is back but the uplink waits.
    assert "backoff_initial = 0.2\nbackoff_max = 1.0" in text
    cfg.write_text(text.replace("backoff_initial = 0.2", "backoff_initial = 60.0").replace(
        "backoff_max = 1.0", "backoff_max = 60.0"
    ))  # fmt: skip
    broker.stop()
    f0 = aligned_start()
    clock = FakeClock(f0)
    daemon = Daemon(cfg, clock=clock)
    task = asyncio.create_task(daemon.run())
    stopped = False
    try:
        # The devices are applied after the uplink starts: samples fed before would be
        # dropped as unknown, so wait for both.
        await until(
            lambda: (
                daemon.uplink is not None
                and daemon.uplink.stats().last_error is not None
                and daemon.provisioning is not None
            ),
            "the first connect to fail and the devices to be applied",
        )
        # Twelve 1 s windows per device: eleven close (22 records into an outbox of 10),
        # the twelfth is open when the daemon stops.
        for k in range(12):
            for n, dev in enumerate(("cp1", "cp2")):
                feed(daemon, clock, dev, f0 + k + 0.5, 1000.0 + k, 10.0 * n + k)
        outbox = daemon.outbox
        assert outbox is not None
        await until(lambda: outbox.stats().written == 22, "22 records written")
        before = outbox.stats()
        assert (before.depth, before.dropped) == (10, 12)
        broker.start()
        async with subscribe(broker.port, "edged/gw-test/#") as col:
            daemon.stop()  # what SIGTERM does
            await asyncio.wait_for(task, 20)
            stopped = True
            # Everything held at the stop, and the two open windows, reached the broker.
            await col.wait_for(lambda c: len(c.records()) == 12, timeout=20)
        for dev in ("cp1", "cp2"):
            assert [r.seq for r in col.records(dev)] == list(range(7, 13))
    finally:
        if not stopped:
            daemon.stop()
            await asyncio.wait_for(task, 20)
    db = sqlite3.connect(tmp_path / "data" / "outbox.sqlite")
    try:
        (dropped,) = db.execute("SELECT value FROM counters WHERE name='dropped'").fetchone()
        (left,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
    finally:
        db.close()
    assert (dropped, left) == (12, 0)
