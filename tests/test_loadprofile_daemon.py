"""A simulated day through the daemon with an injected clock: load profiles of devices and a
virtual meter, a 40-minute outage, `edged export` of the day.

The devices are chargers on an OCPP listener that no charger dials, so the only samples are
the ones the test feeds through ``Supervisor.on_sample`` with timestamps on the injected
clock (as in tests/test_tiers_e2e.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edged.app import Daemon
from edged.cli import main as edged_main
from edged.energystore import read_rows
from edged.model import Sample
from tests.conftest import Broker, free_port
from tests.daemon import write_config

pytestmark = pytest.mark.slow

STEP = 150.0
DEVICES = ("cp1", "cp2", "cp3")
RATES = {"cp1": 3.0, "cp2": 2.0, "cp3": 1.0}  # Wh per second of each meter
WEIGHTS = {"cp1": 1.0, "cp2": 1.0, "cp3": -1.0}


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def config(tmp_path: Path, broker: Broker) -> Path:
    body = f"""
[features]
virtual_meters = true
load_profiles = true
auto_export = true

[export]
schedule = "daily"
directory = "{tmp_path / "exports"}"

[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = {free_port()}
"""
    for dev in DEVICES:
        body += f"""
[[devices]]
id = "{dev}"
connection = "chargers"
cloud_licence = "professional"
"""
    body += """
[[virtual_meters]]
id = "total"
cloud_licence = "professional"
stale_after = 200
[virtual_meters.quantities]
energy_import = "cp1.energy_import + cp2.energy_import - cp3.energy_import"
"""
    return write_config(tmp_path, body, mqtt_port=broker.port, capacity=10)


@contextlib.asynccontextmanager
async def running(cfg: Path, clock: FakeClock) -> AsyncIterator[Daemon]:
    daemon = Daemon(cfg, clock=clock)
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + 30
    while daemon.uplink is None or not daemon.uplink.stats().connected:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "daemon did not start"
        await asyncio.sleep(0.05)
    try:
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 20)


async def test_a_simulated_day_through_the_daemon(tmp_path: Path, broker: Broker) -> None:
    cfg = config(tmp_path, broker)
    day = math.ceil(time.time() / 86400) * 86400.0
    clock = FakeClock(day - 300)
    counters = {dev: 1_000_000.0 * (i + 1) for i, dev in enumerate(DEVICES)}
    last_before: dict[tuple[str, float], float] = {}
    outage = (day + 10 * 3600 + 450, day + 10 * 3600 + 450 + 2400)  # cp2: 10:07:30-10:47:30
    async with running(cfg, clock) as daemon:
        ts = day - 300
        while ts < day + 86400 + 300:
            clock.t = ts
            for dev in DEVICES:
                counters[dev] += RATES[dev] * STEP
                if dev == "cp2" and outage[0] <= ts < outage[1]:
                    continue  # unread meanwhile; the meter counts on
                daemon.supervisor.on_sample(
                    "ocpp",
                    Sample(dev, ts, {"energy_import": counters[dev], "power_active": 1000.0}),
                )
            for edge in (day, day + 86400):
                if ts < edge:
                    for dev in DEVICES:
                        last_before[(dev, edge)] = counters[dev]
            ts += STEP
            if int(ts / STEP) % 40 == 0:
                await asyncio.sleep(0.25)  # let the daemon tick and write its books
        # Auto export, as its schedule runs it once the day is over (and its books written).
        await asyncio.sleep(1.5)
        clock.t = day + 86400 + 600
        exporter = daemon.energy.exporter
        assert exporter is not None
        # The day before (enabled in its last minutes) and the simulated day, each once.
        assert await exporter.run_once() == 2
        assert await exporter.run_once() == 0
    path = tmp_path / "data" / "energy.sqlite"
    rows = read_rows(path, day, day + 86400)
    for dev in DEVICES:
        mine = [r for r in rows if r.point == dev]
        diff = last_before[(dev, day + 86400)] - last_before[(dev, day)]
        assert math.isclose(sum(r.energy for r in mine), diff, abs_tol=1e-6)
        if dev != "cp2":
            assert len(mine) == 96 and {r.status for r in mine} == {"ok"}
    cp2 = [r for r in rows if r.point == "cp2"]
    assert [r.status for r in cp2].count("gap") == 1
    assert [r.status for r in cp2].count("incomplete") == 2
    assert len([r for r in cp2 if r.status == "ok"]) == 92
    # The virtual meter: stale while cp2 was away, its energy booked to one gap row;
    # over the day its rows add up to the formula over the real meters.
    total = [r for r in rows if r.point == "total"]
    expect = sum(
        w * (last_before[(dev, day + 86400)] - last_before[(dev, day)])
        for dev, w in WEIGHTS.items()
    )
    assert math.isclose(sum(r.energy for r in total), expect, abs_tol=1e-6)
    assert [r.status for r in total].count("gap") == 1
    assert len([r for r in total if r.status == "ok"]) == 92
    # The CSV of that day loads in Python's csv module with the documented columns.
    out = tmp_path / "day.csv"
    start = time.strftime("%Y-%m-%d", time.gmtime(day))
    end = time.strftime("%Y-%m-%d", time.gmtime(day + 86400))
    assert edged_main(["export", "-c", str(cfg), "--from", start, "--to", end, "-o", str(out)]) == 0
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len([r for r in table if r["point"] == "cp1"]) == 96
    assert math.isclose(
        sum(float(r["energy_wh"]) for r in table if r["point"] == "total"), expect, abs_tol=1e-3
    )
    exported = (tmp_path / "exports" / f"loadprofile-{start}.csv").read_text()
    assert exported == out.read_text()
