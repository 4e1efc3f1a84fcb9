"""End to end: a real daemon (Limited tier), a real broker, a simulated Modbus meter whose
grid power the test drives, a simulated OCPP charger and a simulated Modbus relay.

"Grid import above 5000 W for 5 s" limits the charger to 6 A and switches the relay's coil;
the rule clears with hysteresis only once the power falls to 4000 W or below; the firing
and the clearing are on the events topic; `edged status` shows the rule.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from drivers.modbus import profile
from drivers.modbus.simulator import Meter, Simulator
from drivers.ocpp.simulator import SimCharger, SimConfig
from tests.conftest import Broker, Collector, free_port, subscribe, wait_port
from tests.daemon import run_edged, start_daemon, write_config
from tests.drivers.ocpp.ocpp_helpers import running, wait_until

pytestmark = pytest.mark.slow

LIMIT_A = 6.0
RAISED_A = 16.0


def body(modbus_port: int, ocpp_port: int) -> str:
    return f"""
[connections.meters]
driver = "modbus"
host = "127.0.0.1"
port = {modbus_port}
timeout = 2.0

[connections.chargers]
driver = "ocpp"
host = "127.0.0.1"
port = {ocpp_port}

[[devices]]
id = "grid"
connection = "meters"
address = 1
profile = "eastron_sdm630"
poll_interval = 0.5
cloud_licence = "limited"

[[devices]]
id = "heatpump"
connection = "meters"
address = 2
profile = "eastron_sdm630"
poll_interval = 0.5
cloud_licence = "limited"
writable_coils = [0]

[[devices]]
id = "ev1"
connection = "chargers"
address = "CP-1"
medium = "ev_charger"
cloud_licence = "limited"

[[actions]]
name = "limit-ev"

[actions.when]
point = "grid"
quantity = "power_active"
above = 5000
for = 5
clear = 4000

[[actions.then]]
charger = "ev1"
limit = 6

[[actions.then]]
event = "grid_import_high"

[[actions.on_clear]]
charger = "ev1"
limit = 16

[[actions.on_clear]]
event = "grid_import_normal"

[[actions]]
name = "heatpump-block"

[actions.when]
point = "grid"
quantity = "power_active"
above = 5000
clear = 4000

[[actions.then]]
modbus_write = "heatpump"
coil = 0
value = true

[[actions.on_clear]]
modbus_write = "heatpump"
coil = 0
value = false
"""


def action_events(col: Collector, rule: str) -> list[dict[str, object]]:
    return [e for e in col.json("/events") if e.get("kind") == "action" and e.get("rule") == rule]


async def test_grid_import_limits_the_charger_and_switches_a_coil_with_hysteresis(
    tmp_path: Path, broker: Broker
) -> None:
    grid = Meter(profile.load(profile.shipped()["eastron_sdm630"]), unit=1)
    heatpump = Meter(profile.load(profile.shipped()["eastron_sdm630"]), unit=2)
    grid.fixed["power_active"] = 1000.0
    ocpp_port = free_port()
    async with Simulator() as sim, subscribe(broker.port, "edged/gw-test/events") as col:
        modbus_port = await sim.add_tcp([grid, heatpump])
        cfg = write_config(
            tmp_path, body(modbus_port, ocpp_port), mqtt_port=broker.port, capacity=10
        )
        code, out, err = await run_edged("check-config", "-c", str(cfg))
        assert code == 0, err
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        try:
            await asyncio.to_thread(wait_port, ocpp_port, 30.0)
            charger = SimCharger(
                SimConfig(url=f"ws://127.0.0.1:{ocpp_port}", charge_point_id="CP-1", interval=1.0)
            )
            async with running(charger):
                await wait_until(charger.booted.is_set, within=30)
                await wait_until(lambda: grid.request_count >= 4, within=30)
                assert charger.composite_limit() is None

                grid.fixed["power_active"] = 6000.0
                # Held for 5 s before it fires: nothing reaches the charger in the first 3 s.
                await asyncio.sleep(3.0)
                assert charger.composite_limit() is None
                await wait_until(lambda: charger.composite_limit() == LIMIT_A, within=30)
                await wait_until(lambda: heatpump.coils.get(0) is True, within=30)
                await col.wait_for(lambda c: len(action_events(c, "limit-ev")) >= 1, timeout=30)
                fired = action_events(col, "limit-ev")[0]
                assert fired["transition"] == "fired"
                assert fired["event"] == "grid_import_high"
                assert fired["value"] == 6000.0 and fired["above"] == 5000.0

                # Inside the hysteresis band: stays limited.
                grid.fixed["power_active"] = 4500.0
                await asyncio.sleep(3.0)
                assert charger.composite_limit() == LIMIT_A and len(charger.profiles) == 1
                assert heatpump.coils[0] is True
                assert len(action_events(col, "limit-ev")) == 1

                grid.fixed["power_active"] = 3000.0
                await wait_until(lambda: charger.composite_limit() == RAISED_A, within=30)
                assert len(charger.profiles) == 1  # the same profile, replaced
                await wait_until(lambda: heatpump.coils.get(0) is False, within=30)
                await col.wait_for(lambda c: len(action_events(c, "limit-ev")) >= 2, timeout=30)
                cleared = action_events(col, "limit-ev")[1]
                assert cleared["transition"] == "cleared"
                assert cleared["event"] == "grid_import_normal"
                assert cleared["value"] == 3000.0
                assert [w[:2] for w in heatpump.writes] == [("coil", 0), ("coil", 0)]

                code, out, err = await run_edged("status", "-c", str(cfg), "--json")
                assert code == 0, err
                rules = {r["name"]: r for r in json.loads(out)["actions"]}
                assert rules["limit-ev"]["state"] == "idle"
                assert (rules["limit-ev"]["fired"], rules["limit-ev"]["cleared"]) == (1, 1)
                assert rules["limit-ev"]["failed"] == 0
                assert rules["heatpump-block"]["last_value"] == 3000.0
                code, out, err = await run_edged("status", "-c", str(cfg))
                assert code == 0, err
                assert "limit-ev        idle since" in out, out
                assert "fired 1, cleared 1, failed 0" in out

                # A reload takes a changed rule (it starts idle) and keeps an unchanged one.
                cfg.write_text(
                    cfg.read_text().replace("above = 5000\nfor = 5", "above = 5500\nfor = 5")
                )
                code, out, err = await run_edged("reload", "-c", str(cfg))
                assert code == 0, err + out
                code, out, err = await run_edged("status", "-c", str(cfg), "--json")
                rules = {r["name"]: r for r in json.loads(out)["actions"]}
                assert rules["limit-ev"]["condition"]["above"] == 5500.0
                assert rules["limit-ev"]["fired"] == 0
                assert rules["heatpump-block"]["fired"] == 1
            log = daemon.text()
            assert "action fired rule=limit-ev" in log and "value=6000" in log
            assert "action cleared rule=limit-ev" in log
        finally:
            assert daemon.stop() == 0
