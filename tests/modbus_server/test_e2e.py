"""End to end: the daemon polls simulated Modbus meters; a SunSpec client and a plain
pymodbus client read edged's Modbus TCP server; a stopped simulator's values go stale."""

from __future__ import annotations

import asyncio
import signal
import struct
from pathlib import Path

import pytest

from edged.modbus_server import plainmap
from tests.conftest import Broker
from tests.modbus_server.e2e import client, decode, read, scan, start, until
from tests.modbus_server.test_server import sunspec_alliance_scan

pytestmark = pytest.mark.slow

# SunSpec point → canonical quantity (and the factor from canonical to SunSpec units).
POINTS = {
    "W": ("power_active", 1.0),
    "WphA": ("power_active_l1", 1.0),
    "WphC": ("power_active_l3", 1.0),
    "VA": ("power_apparent", 1.0),
    "VAR": ("power_reactive", 1.0),
    "PhVphA": ("voltage_l1", 1.0),
    "PhVphB": ("voltage_l2", 1.0),
    "PhVphAB": ("voltage_l1_l2", 1.0),
    "AphA": ("current_l1", 1.0),
    "AphC": ("current_l3", 1.0),
    "Hz": ("frequency", 1.0),
    "PF": ("power_factor", 100.0),
    "PFphB": ("power_factor_l2", 100.0),
    "TotWhImp": ("energy_import", 1.0),
    "TotWhExp": ("energy_export", 1.0),
}


def close_enough(got: float, want: float, sf: int) -> bool:
    """Within half a unit of the scale factor, plus the float32 the meter profile uses."""
    return abs(got - want) <= 10.0**sf / 2 + 1e-6 * abs(want) + 1e-6


async def test_sunspec_client_and_plain_map_read_the_simulated_meters(
    tmp_path: Path, broker: Broker
) -> None:
    daemon, grid_sim, pv_sim, meters, port = await start(tmp_path, broker.port)
    try:
        c = None

        async def fresh() -> bool:
            nonlocal c
            c = c or await client(port)
            g = await read(c, 0, 2, 1)
            p = await read(c, 0, 2, 5)
            return g[1] == p[1] == plainmap.STATUS_FRESH

        await until(fresh, "both meters served fresh", daemon)
        assert c is not None

        for point, unit in (("grid", 1), ("pv", 5)):
            models = await scan(c, unit)
            assert list(models) == [1, 203], models.keys()
            common = decode(1, models[1])
            assert common["Mn"] == "edged"
            assert common["SN"] == f"gw-test/{point}"
            assert common["Opt"] == point
            assert common["DA"] == unit
            m = decode(203, models[203])
            want = meters[point].fixed
            for name, (quantity, factor) in POINTS.items():
                got = m[name]
                assert got is not None, name
                sf = m["_sf"][name]
                assert close_enough(got, want[quantity] * factor, sf), (
                    point,
                    name,
                    got,
                    want[quantity] * factor,
                    sf,
                )
            assert close_enough(m["A"], sum(want[f"current_l{n}"] for n in (1, 2, 3)), -2)
            assert m["TotVAhImp"] is None  # not a canonical quantity: not implemented
            assert m["Evt"] == 0

            # the plain map, read by a plain pymodbus client
            regs = await read(c, 0, plainmap.SIZE, unit)
            assert (
                regs[0] == plainmap.VERSION and regs[3] == len(plainmap.ORDER) and regs[4] == unit
            )
            for quantity in ("power_active", "voltage_l1", "energy_import", "frequency"):
                at = plainmap.ADDRESS[quantity]
                (got,) = struct.unpack(">f", struct.pack(">2H", *regs[at : at + 2]))
                assert got == pytest.approx(want[quantity], rel=1e-6), quantity
            at = plainmap.ADDRESS["volume"]  # not a quantity of this meter
            assert regs[at : at + 2] == [0x7FC0, 0]

        # the SunSpec Alliance's own client (pysunspec2) finds the same
        found = await asyncio.to_thread(sunspec_alliance_scan, port, 1)
        assert found["models"] == [1, 203] and found["serial"] == "gw-test/grid"
        want = meters["grid"].fixed
        assert close_enough(found["W"], want["power_active"], 0)
        assert close_enough(found["TotWhImp"], want["energy_import"], 0)

        # the virtual meter (unit 2: the next free id after grid=1; pv took 5) is served like
        # a device: its power is the sum of its sources' (sources only: energy and power)
        async def site_fresh() -> bool:
            assert c is not None
            return (await read(c, 0, 2, 2))[1] == plainmap.STATUS_FRESH

        await until(site_fresh, "the virtual meter to be served fresh", daemon)
        regs = await read(c, 0, plainmap.SIZE, 2)
        at = plainmap.ADDRESS["power_active"]
        (site_w,) = struct.unpack(">f", struct.pack(">2H", *regs[at : at + 2]))
        both = meters["grid"].fixed["power_active"] + meters["pv"].fixed["power_active"]
        assert site_w == pytest.approx(both, rel=1e-6)
        assert {201, 203} & set(await scan(c, 2))  # a meter model, by the quantities it has

        # a stopped simulator: its meter goes stale, the other stays fresh
        await pv_sim.stop()

        async def pv_stale() -> bool:
            assert c is not None
            return (await read(c, 0, 2, 5))[1] == plainmap.STATUS_STALE

        await until(pv_stale, "the stopped meter to be served as stale", daemon)

        async def site_stale() -> bool:
            assert c is not None
            return (await read(c, 0, 2, 2))[1] == plainmap.STATUS_STALE

        # a virtual meter with a stale source is stale too, never a made-up value
        await until(site_stale, "the virtual meter to follow its stale source", daemon)
        m = decode(203, (await scan(c, 5))[203])
        assert all(m[name] is None for name in POINTS), m
        assert m["Evt"] is None
        regs = await read(c, 0, plainmap.SIZE, 5)
        at = plainmap.ADDRESS["power_active"]
        assert regs[at : at + 2] == [0x7FC0, 0]
        grid = decode(203, (await scan(c, 1))[203])
        assert grid["W"] is not None
        assert (await read(c, 0, 2, 1))[1] == plainmap.STATUS_FRESH

        # unit ids change on reload, without a restart of the server
        cfg = tmp_path / "edged.toml"
        cfg.write_text(cfg.read_text().replace("units = { pv = 5 }", "units = { pv = 7 }"))
        daemon.signal(signal.SIGHUP)

        async def moved() -> bool:
            assert c is not None
            gone = await c.read_holding_registers(0, count=2, device_id=5)
            return gone.isError() and gone.exception_code == 0x0B

        await until(moved, "unit 5 to be gone after the reload", daemon)
        assert decode(1, (await scan(c, 7))[1])["SN"] == "gw-test/pv"
        assert "takes effect at the next restart" not in daemon.text()
        c.close()
    finally:
        assert daemon.stop() == 0
        await grid_sim.stop()
        await pv_sim.stop()
    log = daemon.text()
    assert "modbus server listening" in log
