"""``edged sim ocpp`` options for load management: phases, maximum current, delay, refusal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.ocpp.simulator import main
from edged.api import SetChargingLimit
from tests.drivers.ocpp.ocpp_helpers import Central, central, charger, wait_until

ROOT = Path(__file__).resolve().parents[3]


@contextlib.asynccontextmanager
async def simulator(cs: Central, tmp_path: Path, *args: str) -> AsyncIterator[Path]:
    out = tmp_path / "sim.out"
    with out.open("wb") as fh:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "drivers.ocpp.simulator", "--url", cs.url),
            *("--count", "1", "--prefix", "SIM", "--interval", "0.1", *args),
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        yield out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_one_phase_simulator_follows_a_limit_on_its_phase(
    tmp_path: Path, version: str
) -> None:
    async with central([charger("sim", "SIM0001")]) as cs:
        options = ("--phases", "1", "--phase", "L3", "--max-current", "10")
        async with simulator(
            cs, tmp_path, "--version", version, *options, "--profile-delay", "0.5"
        ):
            last = cs.ctx.last_value
            await wait_until(lambda: last("sim", "current_l3") == 10.0, within=30)
            assert last("sim", "current_l1") == 0.0 and last("sim", "current_l2") == 0.0
            await wait_until(lambda: cs.driver.status()["sim"]["transaction"] is not None)
            res = await cs.driver.command(SetChargingLimit("sim", 8))
            assert res["result"]["status"] == "Accepted"
            await wait_until(lambda: last("sim", "current_l3") == 8.0, within=30)
            assert last("sim", "power_active") == pytest.approx(8 * 230)


async def test_simulator_that_rejects_profiles(tmp_path: Path) -> None:
    async with (
        central([charger("sim", "SIM0001")]) as cs,
        simulator(cs, tmp_path, "--reject-profiles"),
    ):
        await wait_until(lambda: cs.driver.status()["sim"]["transaction"] is not None, 30)
        res = await cs.driver.command(SetChargingLimit("sim", 8))
        assert res["result"]["status"] == "Rejected"


def test_bad_simulator_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--max-current", "0"]) == 2
    assert "--max-current" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--phases", "2"])
