"""``edged sim ocpp`` as a process: chargers connect, deliver samples, and stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from drivers.ocpp.cli import hash_password_main
from drivers.ocpp.passwords import verify_password
from drivers.ocpp.simulator import Fleet, SimConfig, charger_ids
from tests.conftest import free_port
from tests.drivers.ocpp.ocpp_helpers import central, charger, wait_until

ROOT = Path(__file__).resolve().parents[3]


def test_charger_ids() -> None:
    assert charger_ids("CP", 3) == ["CP0001", "CP0002", "CP0003"]
    assert charger_ids("X", 2, start=9999) == ["X09999", "X10000"]


async def test_simulator_main_runs_a_fleet_until_sigterm(tmp_path: Path) -> None:
    devices = [charger(cp.lower(), cp) for cp in charger_ids("SIM", 2)]
    async with central(devices) as cs:
        out = tmp_path / "sim.out"
        with out.open("wb") as fh:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "drivers.ocpp.simulator",
                "--url",
                cs.url,
                "--count",
                "2",
                "--interval",
                "0.1",
                "--prefix",
                "SIM",
                "--version",
                "2.0.1",
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        try:
            await wait_until(
                lambda: all(cs.ctx.last_value(d.id, "energy_import") is not None for d in devices),
                within=20,
            )
            assert all(cs.driver.status()[d.id]["connected"] for d in devices)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 15)
        text = out.read_text()
        assert code == 0, text
        assert "simulating 2 OCPP 2.0.1 charger(s) SIM0001..SIM0002" in text
        assert "SIM0001: boot Accepted" in text
        assert "stopping" in text


def test_hash_password_command_prints_a_usable_hash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret\n"))
    assert hash_password_main([]) == 0
    printed = capsys.readouterr().out.strip()
    assert verify_password("s3cret", printed)
    # what the docs say to do with it: paste it between the quotes of password_hash
    doc = tomllib.loads(f'password_hash = "{printed}"\n')
    assert verify_password("s3cret", doc["password_hash"])


async def test_fleet_reconnects_after_the_central_system_restarts() -> None:
    ids = charger_ids("F", 2)
    devices = [charger(cp.lower(), cp) for cp in ids]
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    fleet = Fleet([SimConfig(url=url, charge_point_id=cp, interval=0.05) for cp in ids])
    task = asyncio.create_task(fleet.run())
    try:
        async with central(devices, port=port) as first:
            await wait_until(
                lambda: all(
                    first.ctx.last_value(d.id, "energy_import") is not None for d in devices
                ),
                within=20,
            )
        await wait_until(lambda: fleet.connected == 0)
        async with central(devices, port=port) as second:
            await wait_until(
                lambda: all(
                    second.ctx.last_value(d.id, "energy_import") is not None for d in devices
                ),
                within=20,
            )
            assert fleet.connected == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
