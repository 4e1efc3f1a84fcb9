"""Cloud tier windows end to end: throttle → outbox → uplink → a real mosquitto.

Professional (1 s) runs against the real daemon process and simulated Modbus meters in
real time. Limited (60 s), Basic (900 s) and a tier change at reload run an in-process
``Daemon`` with an injected clock: its devices are chargers on an OCPP listener that no
charger dials, so the only samples are the ones the test feeds through
``Daemon.on_sample`` with timestamps on the injected clock (drivers stamp samples with
the wall clock, which would not line up with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edged.app import Daemon
from edged.model import Record, Sample
from tests.conftest import Broker, Collector, free_port, subscribe, wait_port
from tests.daemon import Proc, modbus_sim_cmd, start_daemon, write_config

pytestmark = pytest.mark.slow

GW = "edged/gw-test"


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait (without blocking the loop) until predicate() is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- Professional: real time, real meters -------------------------------------------------


async def test_professional_publishes_one_aligned_record_per_device_per_second(
    tmp_path: Path, broker: Broker
) -> None:
    sim_port = free_port()
    sim = Proc(
        modbus_sim_cmd(sim_port),
        tmp_path / "sim.log",
    )
    devices = "".join(
        f"""
[[devices]]
id = "p{unit}"
connection = "panel"
address = {unit}
profile = "eastron_sdm630"
poll_interval = 0.25
cloud_licence = "professional"
"""
        for unit in (1, 2)
    )
    body = (
        f"""
[connections.panel]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {sim_port}
timeout = 0.5
"""
        + devices
    )
    cfg = write_config(tmp_path, body, mqtt_port=broker.port, capacity=10)
    try:
        wait_port(sim_port)
        async with subscribe(broker.port, f"{GW}/+") as col:
            daemon = start_daemon(cfg, tmp_path / "daemon.log")
            try:
                await col.wait_for(
                    lambda c: len(c.records("p1")) >= 8 and len(c.records("p2")) >= 8, timeout=25
                )
            finally:
                assert daemon.stop() == 0
    finally:
        sim.stop()
    for dev in ("p1", "p2"):
        # Everything up to the shutdown flush (which closes the open window early).
        recs = col.records(dev)[:8]
        starts = [r.window_start for r in recs]
        assert all(r.window_length == 1.0 for r in recs)
        assert all(s == int(s) for s in starts), starts  # aligned to whole seconds
        assert len(set(starts)) == len(starts), starts  # at most one record per window
        assert starts == sorted(starts)
        span = starts[-1] - starts[0] + 1
        assert len(starts) >= 0.75 * span, starts  # about one per second: few gaps
        counts = [r.values["power_active"].count for r in recs]
        # Polled about 4 times a second, published once: several samples per record.
        assert all(1 <= n <= 8 for n in counts), counts
        assert sum(counts) >= 2 * len(counts), counts
        for r, start in zip(recs, starts, strict=True):
            for q in ("energy_import", "power_active"):
                assert start <= r.values[q].ts < start + 1.0
            p = r.values["power_active"]
            assert p.min is not None and p.mean is not None and p.max is not None
            assert p.min <= p.mean <= p.max
            assert p.min <= p.last <= p.max


# -- Limited, Basic and tier changes: injected clock --------------------------------------


class FakeClock:
    """A wall clock that moves only when the test says so."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def charger_config(tmp_path: Path, broker: Broker, tier: str) -> Path:
    """Two metering points with cloud licence ``tier``, behind an OCPP listener."""
    body = f"""
[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = {free_port()}
"""
    for dev in ("cp1", "cp2"):
        body += f"""
[[devices]]
id = "{dev}"
connection = "chargers"
cloud_licence = "{tier}"
"""
    return write_config(tmp_path, body, mqtt_port=broker.port, capacity=10)


def set_tier(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert text.count(f'cloud_licence = "{old}"') == 2
    cfg.write_text(text.replace(f'cloud_licence = "{old}"', f'cloud_licence = "{new}"'))


def aligned_start() -> float:
    """A quarter-hour boundary a little ahead of the real clock (licences issued now are valid)."""
    return math.ceil(time.time() / 900) * 900 + 900.0


@contextlib.asynccontextmanager
async def running(cfg: Path, clock: FakeClock) -> AsyncIterator[Daemon]:
    """An in-process daemon, started and connected to the broker; stopped on exit."""
    daemon = Daemon(cfg, clock=clock)
    task = asyncio.create_task(daemon.run())

    def up() -> bool:
        if task.done():
            task.result()  # raises what stopped the daemon
            raise AssertionError("daemon exited")
        return daemon.uplink is not None and daemon.uplink.stats().connected

    try:
        await until(up, "daemon started and connected")
        yield daemon
    finally:
        daemon.stop()  # what SIGTERM does
        await asyncio.wait_for(task, 15)


async def tick(daemon: Daemon) -> None:
    """Return once the daemon's tick loop has closed windows against the current clock."""
    # The tick loop stamps last_tick and reads the clock in one step, so a tick stamped
    # after this call saw the clock as it is now.
    seen = daemon.last_tick
    await until(lambda: daemon.last_tick != seen, "a daemon tick")


def feed(
    daemon: Daemon, clock: FakeClock, dev: str, ts: float, energy: float, power: float
) -> None:
    """A sample as a driver would deliver it at ``ts`` on the injected clock."""
    clock.t = max(clock.t, ts)
    daemon.supervisor.on_sample(
        "ocpp", Sample(dev, ts, {"energy_import": energy, "power_active": power})
    )


def published(col: Collector, dev: str) -> list[Record]:
    return col.records(dev)


def ms(ts: float) -> Any:
    """A time as the record carries it (milliseconds)."""
    return pytest.approx(ts, abs=0.0011)


# Samples of one window as (offset into the window as a fraction, energy Wh, power W); the
# fourth is read before the third but delivered after it: "last" is by timestamp.
WINDOW_SAMPLES = [(0.0, 1000.0, 100.0), (0.25, 1010.0, 300.0), (0.5, 1020.0, 50.0)]
NEWEST = (0.99, 1030.0, 250.0)
OUT_OF_ORDER = (0.75, 1025.0, 400.0)


def feed_window(daemon: Daemon, clock: FakeClock, start: float, length: float, k: int) -> None:
    """Feed WINDOW_SAMPLES, NEWEST, OUT_OF_ORDER to cp1 and (scaled by 2) cp2, plus offset k."""
    for frac, energy, power in [*WINDOW_SAMPLES, NEWEST, OUT_OF_ORDER]:
        for dev, scale in (("cp1", 1.0), ("cp2", 2.0)):
            feed(
                daemon,
                clock,
                dev,
                start + frac * length,
                scale * (energy + k),
                scale * (power + k),
            )


def expect_window(rec: Record, start: float, length: float, k: int, scale: float) -> None:
    """The record of a window fed by feed_window: counter last, gauge statistics."""
    assert rec.window_start == start
    assert rec.window_length == length
    newest_ts = start + NEWEST[0] * length
    energy = rec.values["energy_import"]
    assert (energy.last, energy.ts, energy.mean) == (scale * (NEWEST[1] + k), ms(newest_ts), None)
    power = rec.values["power_active"]
    powers = [scale * (p + k) for _, _, p in [*WINDOW_SAMPLES, NEWEST, OUT_OF_ORDER]]
    assert power.last == scale * (NEWEST[2] + k)
    assert power.ts == ms(newest_ts)
    assert power.mean == pytest.approx(sum(powers) / len(powers))
    assert (power.min, power.max, power.count) == (min(powers), max(powers), len(powers))


@pytest.mark.parametrize(("tier", "length"), [("limited", 60.0), ("basic", 900.0)])
async def test_limited_and_basic_publish_one_aggregated_record_per_window(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch, tier: str, length: float
) -> None:
    cfg = charger_config(tmp_path, broker, tier)
    f0 = aligned_start()
    clock = FakeClock(f0)
    async with subscribe(broker.port, f"{GW}/+") as col, running(cfg, clock) as daemon:
        st = daemon.status()
        assert st["tier"]["account_tier"] == tier and st["tier"]["interval"] == length
        assert {d["id"]: d["interval"] for d in st["devices"]} == {"cp1": length, "cp2": length}
        assert daemon.windows is not None

        feed_window(daemon, clock, f0, length, 0)
        clock.t = f0 + length + 0.2  # past the window's end, within the grace
        await tick(daemon)
        assert daemon.windows.counts()["records"] == 0  # nothing says it is complete yet
        # A sample in the next window completes this one: closed at once, not after the grace.
        for dev, scale in (("cp1", 1.0), ("cp2", 2.0)):
            feed(daemon, clock, dev, f0 + length + 0.5, scale * 5000.0, scale * 999.0)
        assert daemon.windows.counts()["records"] == 2
        await col.wait_for(lambda c: all(len(published(c, d)) == 1 for d in ("cp1", "cp2")))
        for dev in ("cp1", "cp2"):  # too late for the closed window: dropped, not re-sent
            feed(daemon, clock, dev, f0 + length - 0.1, 7777.0, 7777.0)
        assert daemon.windows.counts()["late"] == 2

        second = f0 + length
        feed_window(daemon, clock, second, length, 1)
        clock.t = second + length + 2.5
        await tick(daemon)
        await col.wait_for(lambda c: all(len(published(c, d)) == 2 for d in ("cp1", "cp2")))
        await until(lambda: daemon.outbox is not None and daemon.outbox.stats().depth == 0, "sent")

        for dev, scale in (("cp1", 1.0), ("cp2", 2.0)):
            first_rec, second_rec = published(col, dev)
            assert first_rec.device_id == dev and second_rec.seq > first_rec.seq
            expect_window(first_rec, f0, length, 0, scale)
            # The sample at second + 0.5 s belongs to the second window: one more value.
            power = second_rec.values["power_active"]
            assert power.count == len(WINDOW_SAMPLES) + 3
            assert (power.min, power.max) == (scale * 51.0, scale * 999.0)
            assert second_rec.window_start == second and second_rec.window_length == length
            assert second_rec.values["energy_import"].last == scale * (NEWEST[1] + 1)
            assert all(r.window_start % length == 0 for r in published(col, dev))


async def test_tier_change_at_reload_switches_interval_at_next_window_boundary(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = charger_config(tmp_path, broker, "limited")
    f0 = aligned_start()
    clock = FakeClock(f0)
    devs = ("cp1", "cp2")

    def sample(ts: float, energy: float, to: tuple[str, ...] = devs) -> None:
        for dev in to:
            feed(daemon, clock, dev, ts, energy, 100.0)

    async with subscribe(broker.port, f"{GW}/+") as col, running(cfg, clock) as daemon:
        # cp1 has samples in the minute window [f0, f0+60) when the licences change, cp2 has
        # none yet: for both, the window in progress keeps its length.
        sample(f0 + 10, 1.0, ("cp1",))
        sample(f0 + 30, 2.0, ("cp1",))
        # Upgrade to Professional.
        set_tier(cfg, "limited", "professional")
        clock.t = f0 + 30.5
        assert await daemon.reload()
        st = daemon.status()
        assert st["tier"]["account_tier"] == "professional" and st["tier"]["interval"] == 1.0
        sample(f0 + 45, 3.0)  # still the open minute window: it keeps its length
        sample(f0 + 60.2, 4.0)  # from its end on, one-second windows
        sample(f0 + 60.7, 5.0)
        sample(f0 + 61.3, 6.0)
        clock.t = f0 + 64.5
        await tick(daemon)
        await col.wait_for(lambda c: all(len(published(c, d)) == 3 for d in devs))

        # Downgrade to Basic during the second [f0+64, f0+65) (cp1 has a sample in it): the
        # window after it is shortened to end on the quarter hour, then quarter hours again.
        sample(f0 + 64.8, 7.0, ("cp1",))
        set_tier(cfg, "professional", "basic")
        clock.t = f0 + 64.9
        assert await daemon.reload()
        assert daemon.status()["tier"]["interval"] == 900.0
        sample(f0 + 100, 8.0)
        sample(f0 + 800, 9.0)
        sample(f0 + 1000, 10.0)
        sample(f0 + 1500, 11.0)
        clock.t = f0 + 1800 + 2.5
        await tick(daemon)
        await col.wait_for(lambda c: len(published(c, "cp1")) == 6)
        await col.wait_for(lambda c: len(published(c, "cp2")) == 5)
        await until(lambda: daemon.outbox is not None and daemon.outbox.stats().depth == 0, "sent")

        # (window start, length, last energy, number of samples)
        expected = {
            "cp1": [
                (f0, 60.0, 3.0, 3),
                (f0 + 60, 1.0, 5.0, 2),
                (f0 + 61, 1.0, 6.0, 1),
                (f0 + 64, 1.0, 7.0, 1),
                (f0 + 65, 835.0, 9.0, 2),
                (f0 + 900, 900.0, 11.0, 2),
            ],
            "cp2": [
                (f0, 60.0, 3.0, 1),
                (f0 + 60, 1.0, 5.0, 2),
                (f0 + 61, 1.0, 6.0, 1),
                (f0 + 65, 835.0, 9.0, 2),
                (f0 + 900, 900.0, 11.0, 2),
            ],
        }
        for dev in devs:
            got = [
                (
                    r.window_start,
                    r.window_length,
                    r.values["energy_import"].last,
                    r.values["power_active"].count,
                )
                for r in published(col, dev)
            ]
            assert got == expected[dev], dev
