"""Both OCPP versions over real WebSockets: boot, transaction, meter values as canonical samples."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edged.api import DriverCommand
from edged.model import DeviceState, Sample
from tests.drivers.ocpp.ocpp_helpers import Central, central, charger, running, wait_until


def periodic(cs: Central) -> list[Sample]:
    """The charger's periodic meter values (not the connection or session samples)."""
    return [s for s in cs.ctx.samples_of("ev1") if s.attrs.get("context") == "Sample.Periodic"]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_charger_boots_transacts_and_meter_values_become_samples(version: str) -> None:
    async with central([charger("ev1", "CP1")], heartbeat_interval=120) as cs:
        sim = cs.sim("CP1", version, interval=0.05)
        async with running(sim):
            await wait_until(lambda: len(periodic(cs)) >= 2)
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
            sample = periodic(cs)[-1]
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
            json.dumps(cs.driver.status())  # JSON-ready for the control socket
        await wait_until(lambda: cs.ctx.last_state("ev1") is DeviceState.OFFLINE)
        assert cs.driver.status()["ev1"]["connected"] is False


@pytest.mark.parametrize(
    ("version", "request_for", "status_of"),
    [
        (
            "1.6",
            lambda tag: {"idTag": tag},
            lambda payload: payload["idTagInfo"]["status"],
        ),
        (
            "2.0.1",
            lambda tag: {"idToken": {"idToken": tag, "type": "ISO14443"}},
            lambda payload: payload["idTokenInfo"]["status"],
        ),
    ],
)
async def test_authorize_uses_the_local_id_tag_list(
    version: str, request_for: Any, status_of: Any
) -> None:
    sub = Subprotocol("ocpp1.6" if version == "1.6" else "ocpp2.0.1")
    async with (
        central([charger("ev1", "CP1")], id_tags=["GOOD"]) as cs,
        connect(f"{cs.url}/CP1", subprotocols=[sub]) as ws,
    ):
        for tag, expected in (("GOOD", "Accepted"), ("STOLEN", "Invalid")):
            await ws.send(json.dumps([2, tag, "Authorize", request_for(tag)]))
            reply = json.loads(await ws.recv())
            assert reply[:2] == [3, tag]
            assert status_of(reply[2]) == expected


async def test_refused_id_tag_starts_no_transaction() -> None:
    async with central([charger("ev1", "CP1")], id_tags=["GOOD"]) as cs:
        sim = cs.sim("CP1", "1.6", interval=0.05, id_tag="STOLEN")
        async with running(sim):
            await wait_until(
                lambda: cs.driver.status()["ev1"]["connectors"].get("1") == "Available"
            )
            await wait_until(lambda: len(cs.ctx.samples_of("ev1")) >= 2)
            assert sim.transaction_id is None
            assert cs.driver.status()["ev1"]["transaction"] is None
            assert cs.ctx.last_value("ev1", "power_active") == 0.0


async def test_stop_transaction_reports_the_final_reading() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = cs.sim("CP1", "1.6", interval=0.05)
        async with running(sim):
            await sim.charging.wait()
            await wait_until(lambda: len(cs.ctx.samples_of("ev1")) >= 2)
            tx = sim.transaction_id
            await cs.driver.command(DriverCommand("ev1", "remote_stop", {}))
            await wait_until(
                lambda: any(
                    s.attrs.get("context") == "Transaction.End" for s in cs.ctx.samples_of("ev1")
                )
            )
            final = next(
                s for s in cs.ctx.samples_of("ev1") if s.attrs.get("context") == "Transaction.End"
            )
            assert final.attrs["transaction_id"] == tx
            assert final.values["energy_import"] == pytest.approx(sim.energy_wh, abs=1.0)
