"""Reloading the real daemon with one more charger keeps the connected chargers connected."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from drivers.ocpp.simulator import SimCharger, SimConfig
from tests.conftest import Broker, free_port, subscribe, wait_port
from tests.daemon import start_daemon, write_config
from tests.drivers.ocpp.ocpp_helpers import running, wait_until

pytestmark = pytest.mark.slow


def charger_device(device_id: str, cp: str) -> str:
    return f"""
[[devices]]
id = "{device_id}"
connection = "chargers"
address = "{cp}"
cloud_licence = "professional"
"""


async def test_a_charger_added_at_reload_leaves_the_connected_one_alone(
    tmp_path: Path, broker: Broker
) -> None:
    port = free_port()
    body = f"""
[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = {port}
""" + charger_device("ev1", "CP-1")
    cfg = write_config(tmp_path, body, mqtt_port=broker.port, capacity=10)
    url = f"ws://127.0.0.1:{port}"
    async with subscribe(broker.port, "edged/gw-test/+") as col:
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await asyncio.to_thread(wait_port, port, 20.0)
            sim1 = SimCharger(SimConfig(url=url, charge_point_id="CP-1", interval=0.2))
            async with running(sim1) as task1:
                await col.wait_for(lambda c: len(c.records("ev1")) >= 2, timeout=20)
                ws1 = sim1.connection

                with cfg.open("a") as fh:
                    fh.write(charger_device("ev2", "CP-2"))
                daemon.signal(signal.SIGHUP)
                await asyncio.to_thread(
                    daemon.wait_for, "updated connection connection=chargers devices=2"
                )
                before = len(col.records("ev1"))

                sim2 = SimCharger(SimConfig(url=url, charge_point_id="CP-2", interval=0.2))
                async with running(sim2):
                    await col.wait_for(lambda c: len(c.records("ev2")) >= 1, timeout=20)
                await col.wait_for(lambda c: len(c.records("ev1")) >= before + 2, timeout=20)

                assert sim1.connection is ws1
                assert not task1.done()
                await wait_until(lambda: "charger connected device=ev2" in daemon.text())
                log = daemon.text()
                assert "stopping connection" not in log
                assert log.count("charger connected device=ev1 ") == 1
                assert "charger disconnected device=ev1" not in log
        finally:
            assert daemon.stop() == 0
