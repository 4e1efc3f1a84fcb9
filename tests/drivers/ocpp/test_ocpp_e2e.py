"""End to end through the real daemon: a simulated charger's meter values reach the broker as
records, and ``edged ocpp`` commands reach the charger over the control socket."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from drivers.ocpp.simulator import SimCharger, SimConfig
from edged.model import unit_of
from tests.conftest import Broker, free_port, subscribe, wait_port
from tests.daemon import edged, start_daemon, write_config
from tests.drivers.ocpp.ocpp_helpers import running, wait_until

pytestmark = pytest.mark.slow


def ocpp_body(port: int) -> str:
    return f"""
[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = {port}

[[devices]]
id = "ev1"
connection = "chargers"
address = "CP-1"
cloud_licence = "professional"
"""


async def test_meter_values_reach_the_broker_and_commands_reach_the_charger(
    tmp_path: Path, broker: Broker
) -> None:
    port = free_port()
    cfg = write_config(tmp_path, ocpp_body(port), mqtt_port=broker.port, capacity=10)
    async with subscribe(broker.port, "edged/gw-test/ev1") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await asyncio.to_thread(wait_port, port, 20.0)
            sim = SimCharger(
                SimConfig(url=f"ws://127.0.0.1:{port}", charge_point_id="CP-1", interval=0.2)
            )
            async with running(sim):
                await col.wait_for(lambda c: len(c.records()) >= 2, timeout=20)
                record = col.records()[-1]
                assert record.device_id == "ev1"
                # Canonical quantities, in their canonical units (the contract's table).
                assert unit_of("energy_import") == "Wh"
                assert record.values["energy_import"].last > 1_000_000
                assert unit_of("power_active") == "W" and "power_active" in record.values
                assert unit_of("current_l1") == "A" and "current_l1" in record.values

                proc = await asyncio.create_subprocess_exec(
                    *edged(
                        "ocpp", "-c", str(cfg), "set-charging-profile", "ev1", "--limit", "4200"
                    ),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                out, err = await asyncio.wait_for(proc.communicate(), 30)
                assert proc.returncode == 0, err.decode()
                assert json.loads(out)["result"]["status"] == "Accepted"
                await wait_until(lambda: sim.power_w == 4200.0)
                await col.wait_for(
                    lambda c: c.records()[-1].values["power_active"].last == 4200.0,
                    timeout=20,
                )
        finally:
            assert daemon.stop() == 0
