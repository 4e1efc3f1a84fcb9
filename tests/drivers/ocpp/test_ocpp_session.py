"""Both OCPP versions over real WebSockets: boot, transaction, meter values as canonical samples."""

from __future__ import annotations

import pytest
from ocpp_helpers import central, charger, running, wait_until

from edged.model import DeviceState


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_charger_boots_transacts_and_meter_values_become_samples(version: str) -> None:
    async with central([charger("ev1", "CP1")], heartbeat_interval=120) as cs:
        sim = cs.sim("CP1", version, interval=0.05)
        async with running(sim):
            await wait_until(lambda: len(cs.ctx.samples_of("ev1")) >= 3)
            assert cs.ctx.last_state("ev1") is DeviceState.ONLINE
            status = cs.driver.status()["ev1"]
            assert status["connected"] is True
            assert status["ocpp_version"] == version
            assert status["boot"]["vendor"] == "edged"
            assert status["boot"]["model"] == "SimCharger"
            assert status["boot"]["firmware"] == "sim-1.0"
            assert status["connectors"]["1"] in ("Charging", "Occupied")
            tx = status["transaction"]
            assert tx is not None and tx["id"] == sim.transaction_id
            sample = cs.ctx.samples_of("ev1")[-1]
            # The simulator reports energy in kWh (1.6) or Wh x 10^3 (2.0.1): both arrive in Wh.
            assert sample.values["energy_import"] == pytest.approx(sim.energy_wh, abs=1.0)
            assert sample.values["power_active"] == pytest.approx(11000.0)
            assert sample.values["current_l1"] == pytest.approx(11000 / 230 / 3, abs=0.01)
            assert sample.values["voltage_l3"] == pytest.approx(230.0)
            assert 20.0 <= sample.values["state_of_charge"] <= 100.0
            assert sample.attrs["energy_import.measurand"] == "Energy.Active.Import.Register"
            assert sample.attrs["current_l1.phase"] == "L1"
            assert sample.attrs["context"] == "Sample.Periodic"
            assert sample.attrs["transaction_id"] == sim.transaction_id
            await wait_until(lambda: cs.driver.status()["ev1"]["transaction"]["energy_wh"] > 0)
        await wait_until(lambda: cs.ctx.last_state("ev1") is DeviceState.OFFLINE)
        assert cs.driver.status()["ev1"]["connected"] is False
