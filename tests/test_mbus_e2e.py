"""M-Bus end to end: `edged sim mbus` over TCP, the real daemon, mosquitto.

The simulator runs as its own process at 2400 baud with line-rate pacing, like an
M-Bus-to-Ethernet converter in front of a bus of heat meters. Three meters are read by
primary address, one by secondary address, and one configured primary address has no
meter behind it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edged.model import Record, unit_of
from tests.conftest import Broker, Collector, subscribe
from tests.daemon import TRUST, Proc, edged, start_daemon, write_config

pytestmark = pytest.mark.slow

GW = "edged/gw-test"
PRIMARY = ("heat-1", "heat-2", "heat-3")
SECONDARY = "heat-4"
LIVE = (*PRIMARY, SECONDARY)
GHOST = "heat-ghost"
GHOST_ADDRESS = 42
EXPECTED_STATES = {**dict.fromkeys(LIVE, "online"), GHOST: "offline"}

# What a generated heat meter of the simulator starts at and adds on every read.
ENERGY_START_WH, ENERGY_STEP_WH = 1_000_000, 1234
VOLUME_START_L, VOLUME_STEP_L = 250_000, 17

# Canonical quantity -> unit, as the generated telegrams carry them (energy in Wh,
# volume in litres, power in W, flow in l/h, temperatures in 0.01 °C).
EXPECTED_UNITS = {
    "energy_heat": "Wh",
    "volume": "m3",
    "power_thermal": "W",
    "volume_flow": "m3/h",
    "flow_temperature": "°C",
    "return_temperature": "°C",
}


@dataclass(frozen=True)
class MBusSim:
    """A running `edged sim mbus`: its TCP port and the addresses it printed."""

    port: int
    secondary: dict[int, str]  # primary address -> secondary address


@pytest.fixture
def mbus_sim(tmp_path: Path) -> Iterator[MBusSim]:
    sim = Proc(
        edged("sim", "mbus", "--tcp-port", "0", "--slaves", "4", "--baud", "2400"),
        tmp_path / "sim.log",
    )
    try:
        sim.wait_for(lambda t: "primary   4" in t, timeout=20)
        text = sim.text()
        where = re.search(r"at 2400 baud on tcp 127\.0\.0\.1:(\d+)", text)
        assert where, text
        secondary = {
            int(p): s for p, s in re.findall(r"primary\s+(\d+)\s+secondary ([0-9A-F]{16})", text)
        }
        assert sorted(secondary) == [1, 2, 3, 4], text
        yield MBusSim(int(where.group(1)), secondary)
    finally:
        assert sim.stop() == 0


def mbus_body(sim: MBusSim) -> str:
    devices = [(dev, str(n + 1)) for n, dev in enumerate(PRIMARY)]
    devices.append((SECONDARY, f'"{sim.secondary[4]}"'))
    devices.append((GHOST, str(GHOST_ADDRESS)))
    return f"""
[connections.plant-room]
driver = "mbus"
transport = "tcp"
host = "127.0.0.1"
port = {sim.port}
baudrate = 2400
timeout = 0.4
""" + "".join(
        f"""
[[devices]]
id = "{dev}"
connection = "plant-room"
address = {address}
poll_interval = 2
cloud_licence = "professional"
"""
        for dev, address in devices
    )


async def status(cfg: Path) -> dict[str, Any]:
    """`edged status --json` of the running daemon, through its control socket."""
    proc = await asyncio.create_subprocess_exec(
        *edged("status", "-c", str(cfg), "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **TRUST},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def status_when(
    cfg: Path, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> dict[str, Any]:
    """The first `edged status --json` that satisfies predicate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        st = await status(cfg)
        if predicate(st):
            return st
        if loop.time() > deadline:
            raise AssertionError(f"status never matched; last: {json.dumps(st, indent=1)}")
        await asyncio.sleep(0.2)


def states(st: dict[str, Any]) -> dict[str, str]:
    return {d["id"]: d["state"] for d in st["devices"]}


def records(col: Collector, dev_id: str) -> list[Record]:
    return col.records(dev_id)


def reads_behind(record: Record) -> int:
    """How many reads of its meter a record's energy value says have happened."""
    energy = record.values["energy_heat"].last
    steps, rest = divmod(round(energy) - ENERGY_START_WH, ENERGY_STEP_WH)
    assert rest == 0, record
    return steps


async def test_heat_meters_publish_canonical_records_and_a_missing_slave_is_offline(
    tmp_path: Path, broker: Broker, mbus_sim: MBusSim
) -> None:
    cfg = write_config(tmp_path, mbus_body(mbus_sim), mqtt_port=broker.port, capacity=10)
    async with subscribe(broker.port, f"{GW}/#") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await col.wait_for(lambda c: all(len(records(c, d)) >= 2 for d in LIVE), timeout=30)
            # Between polls a live meter may briefly read as stale (polled every 2 s, published
            # every 1 s), so wait for a snapshot rather than trusting the first one.
            st = await status_when(cfg, lambda s: states(s) == EXPECTED_STATES)
            ghost = next(d for d in st["devices"] if d["id"] == GHOST)
            assert "no answer" in ghost["last_error"], ghost
            assert ghost["last_sample_age"] is None, ghost
            assert st["licence"] == {"used": 6, "total": 10}  # gateway + 5 configured meters

            # The missing slave does not stop the bus: every live meter keeps publishing.
            counts = {d: len(records(col, d)) for d in LIVE}
            await col.wait_for(
                lambda c: all(len(records(c, d)) >= counts[d] + 2 for d in LIVE), timeout=30
            )
            await status_when(cfg, lambda s: states(s) == EXPECTED_STATES)
        finally:
            assert daemon.stop() == 0

    assert records(col, GHOST) == []
    log = daemon.text()
    assert re.search(
        rf"mbus poll failed device={GHOST} address={GHOST_ADDRESS} error=no answer", log
    ), log[-3000:]
    assert f"device state device={GHOST} state=offline" in log

    for dev in LIVE:
        recs = records(col, dev)
        seqs = [r.seq for r in recs]
        assert seqs == sorted(set(seqs)), (dev, seqs)  # strictly increasing, no duplicates
        for r in recs:
            assert r.device_id == dev and r.window_length == 1.0
            values = r.values
            assert {q: unit_of(q) for q in values} == EXPECTED_UNITS, (dev, r)
            # Counters carry their last value; gauges add mean/min/max over the window.
            assert values["energy_heat"].mean is None and values["volume"].mean is None
            for gauge in ("power_thermal", "volume_flow", "flow_temperature"):
                g = values[gauge]
                assert g.mean is not None and g.min is not None and g.max is not None, gauge
                assert g.min <= g.mean <= g.max, (dev, gauge)
            # Energy and volume come from the same read: both say how many reads were made.
            n = reads_behind(r)
            assert n >= 1
            volume_l = VOLUME_START_L + n * VOLUME_STEP_L
            assert values["volume"].last == pytest.approx(volume_l / 1000), (dev, r)
            assert 5000.0 <= values["power_thermal"].last <= 5600.0
            assert values["volume_flow"].last == pytest.approx(0.85, abs=0.005)
            assert 65.12 - 1e-6 <= values["flow_temperature"].last <= 65.21 + 1e-6
            assert values["return_temperature"].last == pytest.approx(40.21)
        # Each record is a newer read of the meter than the one before.
        reads = [reads_behind(r) for r in recs]
        assert reads == sorted(set(reads)), (dev, reads)
