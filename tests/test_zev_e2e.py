"""A self-consumption community end to end: simulated meters, the daemon, records at mosquitto.

Grid meter (import and export counters), two PV meters and three apartment meters are
Modbus TCP simulators, each on its own port (so one can be taken away alone). The virtual
meter ``total`` = grid import + PV1 + PV2 production - grid export. The test reads every
record at the broker and checks, at every window, that the virtual counter's increase
equals the formula over the sources' published counters to a millionth of a Wh. One PV
simulator is stopped (its meter keeps counting, as a real meter whose link is down) and
served again: ``total`` is stale meanwhile and afterwards matches the formula exactly.
Then the daemon is killed with SIGKILL and started again: the books continue exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus import profile as profiles
from drivers.modbus.simulator import Meter, Simulator
from edged.model import Record
from tests.conftest import Broker, Collector, free_port, subscribe
from tests.daemon import run_edged, start_daemon, write_config

pytestmark = pytest.mark.slow

GW = "edged/gw-test"
OUTAGE = float(os.environ.get("EDGED_ZEV_OUTAGE", "30"))
"""Seconds PV1's simulator is away: the issue's two minutes shortened for the suite
(``EDGED_ZEV_OUTAGE=120`` runs the full two minutes)."""
FORMULA = {
    ("grid", "energy_import"): 1.0,
    ("pv1", "energy_export"): 1.0,
    ("pv2", "energy_export"): 1.0,
    ("grid", "energy_export"): -1.0,
}


class ZevMeter(Meter):
    """A simulated SDM630 whose export counter runs too (a grid meter or a PV plant)."""

    def __init__(self, prof: Any, seed: int, export_w: float) -> None:
        super().__init__(prof, unit=1, seed=seed)
        self.export_w = export_w

    def values(self, t: float | None = None) -> dict[str, float]:
        t = self.clock() if t is None else t
        vals = dict(super().values(t))
        vals["energy_export"] = 2_000_000.0 + self.export_w * (t - self._t0) / 3600.0
        return vals


def _records(col: Collector, dev: str) -> dict[float, Record]:
    """The records of one metering point by window start (a resent duplicate counts once)."""
    return {r.window_start: r for r in col.records(dev)}


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def check_formula(col: Collector) -> tuple[int, int]:
    """Every fresh ``total`` window against the formula; returns (checked, stale)."""
    sources = {dev: sorted(_records(col, dev).items()) for dev in ("grid", "pv1", "pv2")}
    total = sorted(_records(col, "total").items())
    assert total, "no record of the virtual meter"

    def formula_at(ts: float) -> float:
        f = 0.0
        for (dev, q), w in FORMULA.items():
            last = [r.values[q].last for s, r in sources[dev] if s <= ts]
            f += w * last[-1]
        return f

    fresh = [(ts, r) for ts, r in total if not r.stale]
    ts0, r0 = fresh[0]
    v0, f0 = r0.values["energy_import"].last, formula_at(ts0)
    for ts, r in fresh:
        v = r.values["energy_import"].last
        assert abs((v - v0) - (formula_at(ts) - f0)) < 1e-6, (ts, v - v0, formula_at(ts) - f0)
    return len(fresh), len(total) - len(fresh)


async def test_zev_virtual_total_consumption_end_to_end(tmp_path: Path, broker: Broker) -> None:
    path = profiles.resolve("eastron_sdm630")
    assert path is not None
    prof = profiles.load(path)
    meters = {
        "grid": ZevMeter(prof, 1, export_w=800.0),
        "pv1": ZevMeter(prof, 2, export_w=3000.0),
        "pv2": ZevMeter(prof, 3, export_w=1500.0),
        "apt1": Meter(prof, seed=4),
        "apt2": Meter(prof, seed=5),
        "apt3": Meter(prof, seed=6),
    }
    ports = {dev: free_port() for dev in meters}
    sims: dict[str, Simulator] = {}
    for dev, m in meters.items():
        sims[dev] = Simulator()
        await sims[dev].add_tcp([m], ports[dev])
    body = "[features]\nvirtual_meters = true\nload_profiles = true\n"
    for dev in meters:
        body += f"""
[connections.{dev}]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {ports[dev]}
timeout = 0.5

[[devices]]
id = "{dev}"
connection = "{dev}"
address = 1
profile = "eastron_sdm630"
poll_interval = 0.5
cloud_licence = "professional"
"""
    body += """
[[virtual_meters]]
id = "total"
cloud_licence = "professional"
[virtual_meters.quantities]
energy_import = "grid.energy_import + pv1.energy_export + pv2.energy_export - grid.energy_export"
power_active = "grid.power_active + pv1.power_active + pv2.power_active"
"""
    cfg = write_config(tmp_path, body, mqtt_port=broker.port, capacity=10)
    daemon = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        async with subscribe(broker.port, f"{GW}/+") as col:

            def fresh_after(t: float, n: int = 5) -> bool:
                recs = _records(col, "total").items()
                return sum(1 for ts, r in recs if ts > t and not r.stale) >= n

            await col.wait_for(lambda c: len(_records(c, "total")) >= 10, timeout=40)
            check_formula(col)

            # PV1's link goes away; the meter keeps counting.
            await sims["pv1"].stop()
            down = time.time()
            await col.wait_for(
                lambda c: any(r.stale for r in _records(c, "total").values()), timeout=30
            )
            code, out, _ = await run_edged("status", "-c", str(cfg), "--json", "total")
            assert code == 0
            entry = json.loads(out)["devices"][0]
            assert entry["state"] == "stale" and "pv1" in entry["last_error"]
            await asyncio.sleep(max(0.0, OUTAGE - (time.time() - down)))
            sims["pv1"] = Simulator()
            await sims["pv1"].add_tcp([meters["pv1"]], ports["pv1"])
            back = time.time()
            await col.wait_for(lambda c: fresh_after(back), timeout=120)
            checked, n_stale = check_formula(col)
            assert n_stale >= 3
            # Windows wholly inside the outage: no gauge, the counter as it last was true.
            stale = [r for _, r in sorted(_records(col, "total").items()) if r.stale]
            assert all(set(r.values) == {"energy_import"} for r in stale[1:-1])
            assert len({r.values["energy_import"].last for r in stale[1:-1]}) == 1

            # kill -9 and start again: the books go on from the persisted baselines.
            daemon.signal(signal.SIGKILL)
            daemon.proc.wait()
            killed = time.time()
            daemon = start_daemon(cfg, tmp_path / "daemon2.log")
            await col.wait_for(lambda c: fresh_after(killed), timeout=60)
            after, _ = check_formula(col)
            assert after > checked
            # The store is read while the daemon writes it (read-only, WAL).
            code, out, err = await run_edged(
                "export", "-c", str(cfg), "--from", "2000-01-01", "--to", "2100-01-01"
            )
            assert code == 0, err
            assert {line.split(",")[0] for line in out.splitlines()[1:]} >= {"grid", "total"}
            print(f"ZEV windows checked={after} stale={n_stale} (before kill: {checked})")
    finally:
        daemon.stop()
        for sim in sims.values():
            await sim.stop()
    # The load profile store has rows for the virtual meter as for the devices.
    code, out, err = await run_edged(
        "export", "-c", str(cfg), "--from", "2000-01-01", "--to", "2100-01-01", "--points", "total"
    )
    assert code == 0, err
    assert out.splitlines()[0] == "point,quantity,start,end,energy_wh,peak_w,status"
    assert any(line.startswith("total,energy_import,") for line in out.splitlines()[1:])
