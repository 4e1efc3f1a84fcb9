"""edged killed with SIGKILL: the chargers fall back on their own default profile.

The real daemon, both OCPP versions, limits sent with ``edged ocpp`` as an installer would.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from drivers.ocpp.simulator import SimCharger, SimConfig
from tests.conftest import Broker, free_port, wait_port
from tests.daemon import run_edged, start_daemon, write_config
from tests.drivers.ocpp.ocpp_helpers import running, wait_until

pytestmark = pytest.mark.slow


def _body(port: int) -> str:
    return f"""
[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = {port}

[[devices]]
id = "ev16"
connection = "chargers"
address = "CP-16"

[[devices]]
id = "ev201"
connection = "chargers"
address = "CP-201"
"""


async def _limit(cfg: Path, device: str, *args: str) -> None:
    code, out, err = await run_edged("ocpp", "-c", str(cfg), "set-charging-profile", device, *args)
    assert code == 0, err
    assert json.loads(out)["result"]["status"] == "Accepted"


async def test_chargers_fall_back_to_their_default_when_edged_is_killed(
    tmp_path: Path, broker: Broker
) -> None:
    port = free_port()
    cfg = write_config(tmp_path, _body(port), mqtt_port=broker.port, capacity=10)
    daemon = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        await asyncio.to_thread(wait_port, port, 20.0)
        url = f"ws://127.0.0.1:{port}"
        sims = {
            device: SimCharger(
                SimConfig(
                    url=url,
                    charge_point_id=cp,
                    version=version,
                    interval=1.0,
                    max_power_w=50_000,
                    profile_delay=0.5,
                )
            )
            for device, cp, version in (("ev16", "CP-16", "1.6"), ("ev201", "CP-201", "2.0.1"))
        }
        async with running(sims["ev16"]) as t16, running(sims["ev201"]) as t201:
            for device, sim in sims.items():
                await asyncio.wait_for(sim.charging.wait(), 30)
                # The safe default first, then a higher limit that lapses unless renewed.
                await _limit(cfg, device, "--limit", "6", "--unit", "A")
                await _limit(
                    cfg,
                    device,
                    *("--limit", "14", "--unit", "A", "--purpose", "tx"),
                    *("--stack-level", "1", "--duration", "30"),
                )
            for sim in sims.values():
                await wait_until(lambda s=sim: s.drawn_current() == (14.0,) * 3, within=30)
            daemon.signal(signal.SIGKILL)
            await wait_until(lambda: t16.done() and t201.done(), within=30)
            for sim in sims.values():
                assert sim.connection is None and sim.transaction_id is not None
                # Nobody renews the 14 A limit: each charger goes back to its 6 A default.
                await wait_until(lambda s=sim: s.drawn_current() == (6.0,) * 3, within=60)
                assert [p.purpose for p in sim.profiles.values()] == ["TxDefaultProfile"]
    finally:
        daemon.stop()
