"""Charger-bound commands through OcppDriver.command(), answered by the simulator."""

from __future__ import annotations

import pytest

from drivers.ocpp.errors import ChargerNotConnected, CommandError, UnknownCharger
from edged.api import DriverCommand
from edged.model import DeviceState
from tests.drivers.ocpp.ocpp_helpers import central, charger, running, wait_until


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_charging_profile_changes_the_simulated_power(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = cs.sim("CP1", version, interval=0.05)
        async with running(sim):
            await sim.charging.wait()
            assert sim.power_w == 11000.0
            res = await cs.driver.command(
                DriverCommand("ev1", "set_charging_profile", {"limit": 5520, "unit": "W"})
            )
            assert res["result"]["status"] == "Accepted"
            assert sim.power_w == pytest.approx(5520.0)
            await wait_until(
                lambda: cs.ctx.last_value("ev1", "power_active") == pytest.approx(5520)
            )
            # A current limit on the station maximum profile caps it further: 7 A x 230 V x 3.
            res = await cs.driver.command(
                DriverCommand(
                    "ev1", "set_charging_profile", {"limit": 7, "unit": "A", "purpose": "max"}
                )
            )
            assert res["result"]["status"] == "Accepted"
            await wait_until(
                lambda: cs.ctx.last_value("ev1", "power_active") == pytest.approx(7 * 230 * 3)
            )


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_remote_stop_and_start(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = cs.sim("CP1", version, interval=0.05)
        async with running(sim):
            await sim.charging.wait()
            await wait_until(lambda: cs.driver.status()["ev1"]["transaction"] is not None)
            res = await cs.driver.command(DriverCommand("ev1", "remote_stop", {}))
            assert res["result"]["status"] == "Accepted"
            await wait_until(lambda: cs.driver.status()["ev1"]["transaction"] is None)
            await wait_until(lambda: sim.transaction_id is None)
            res = await cs.driver.command(DriverCommand("ev1", "remote_start", {"id_tag": "CARD7"}))
            assert res["result"]["status"] == "Accepted"
            await wait_until(lambda: cs.driver.status()["ev1"]["transaction"] is not None)
            assert cs.driver.status()["ev1"]["transaction"]["id"] == sim.transaction_id


async def test_configuration_reset_and_trigger_in_1_6() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = cs.sim("CP1", "1.6", interval=10)
        async with running(sim):
            await sim.booted.wait()
            res = await cs.driver.command(
                DriverCommand(
                    "ev1", "change_configuration", {"key": "HeartbeatInterval", "value": "60"}
                )
            )
            assert res["result"]["status"] == "Accepted"
            res = await cs.driver.command(
                DriverCommand("ev1", "get_configuration", {"keys": ["HeartbeatInterval", "Nope"]})
            )
            assert res["result"]["configuration_key"] == [
                {"key": "HeartbeatInterval", "readonly": False, "value": "60"}
            ]
            assert res["result"]["unknown_key"] == ["Nope"]
            assert (await cs.driver.command(DriverCommand("ev1", "reset", {"type": "hard"})))[
                "result"
            ] == {"status": "Accepted"}
            before = sim.meter_values_sent
            res = await cs.driver.command(
                DriverCommand("ev1", "trigger_message", {"message": "MeterValues"})
            )
            assert res["result"]["status"] == "Accepted"
            await wait_until(lambda: sim.meter_values_sent > before)
            with pytest.raises(CommandError, match=r"not available in OCPP 1\.6"):
                await cs.driver.command(
                    DriverCommand("ev1", "get_variables", {"variables": ["A.B"]})
                )


async def test_variables_in_2_0_1() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = cs.sim("CP1", "2.0.1", interval=10)
        async with running(sim):
            await sim.booted.wait()
            res = await cs.driver.command(
                DriverCommand(
                    "ev1", "set_variables", {"values": {"OCPPCommCtrlr.HeartbeatInterval": "90"}}
                )
            )
            assert res["result"]["set_variable_result"][0]["attribute_status"] == "Accepted"
            assert sim.configuration["HeartbeatInterval"] == "90"
            res = await cs.driver.command(
                DriverCommand(
                    "ev1", "get_variables", {"variables": ["OCPPCommCtrlr.HeartbeatInterval"]}
                )
            )
            assert res["result"]["get_variable_result"][0]["attribute_value"] == "90"
            res = await cs.driver.command(DriverCommand("ev1", "reset", {"type": "soft"}))
            assert res["result"]["status"] == "Accepted"


async def test_commands_to_absent_chargers_and_bad_arguments_fail_clearly() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        with pytest.raises(ChargerNotConnected, match="not connected"):
            await cs.driver.command(DriverCommand("ev1", "reset", {}))
        with pytest.raises(UnknownCharger):
            await cs.driver.command(DriverCommand("ghost", "reset", {}))
        sim = cs.sim("CP1", "1.6", interval=10)
        async with running(sim):
            await sim.booted.wait()
            with pytest.raises(CommandError, match="limit"):
                await cs.driver.command(DriverCommand("ev1", "set_charging_profile", {"unit": "W"}))
            with pytest.raises(CommandError, match="unknown command"):
                await cs.driver.command(DriverCommand("ev1", "make_coffee", {}))
            # The simulator refuses to stop a transaction it does not have.
            res = await cs.driver.command(
                DriverCommand("ev1", "remote_stop", {"transaction_id": 424242})
            )
            assert res["result"]["status"] == "Rejected"
            with pytest.raises(CommandError, match="integer"):
                await cs.driver.command(
                    DriverCommand("ev1", "remote_stop", {"transaction_id": "abc"})
                )


async def test_reconnecting_charger_replaces_its_session() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        first = cs.sim("CP1", "1.6", interval=0.05)
        async with running(first) as first_task:
            await first.booted.wait()
            second = cs.sim("CP1", "2.0.1", interval=0.05)
            async with running(second):
                await second.charging.wait()
                # The old connection is closed by the server; the new one owns the charger.
                await wait_until(first_task.done)
                await wait_until(lambda: cs.driver.status()["ev1"]["ocpp_version"] == "2.0.1")
                assert cs.driver.status()["ev1"]["connected"] is True
                assert cs.ctx.last_state("ev1") is DeviceState.ONLINE
                res = await cs.driver.command(
                    DriverCommand("ev1", "set_charging_profile", {"limit": 5000})
                )
                assert res["ocpp_version"] == "2.0.1"
                assert second.power_w == 5000.0
                seen = len(cs.ctx.samples_of("ev1"))
                await wait_until(lambda: len(cs.ctx.samples_of("ev1")) > seen + 1)
                assert cs.ctx.last_state("ev1") is DeviceState.ONLINE
