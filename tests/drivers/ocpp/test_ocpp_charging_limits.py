"""Typed charging limits (SetChargingLimit / ClearChargingLimit) on the simulated chargers.

The simulator holds the profiles as a charger does, so these tests see what the charger
would draw: composite limits, lapsing profiles, the car's delay, 1-phase chargers.
"""

from __future__ import annotations

from typing import Any

import pytest

from drivers.ocpp.commands import profile_id
from drivers.ocpp.errors import CommandError
from drivers.ocpp.simulator import SimCharger
from edged.api import ClearChargingLimit, SetChargingLimit
from tests.drivers.ocpp.ocpp_helpers import Central, central, charger, running, wait_until

VERSIONS = ["1.6", "2.0.1"]
MAX_NAME = {"1.6": "ChargePointMaxProfile", "2.0.1": "ChargingStationMaxProfile"}


def _sim(cs: Central, version: str, **kw: Any) -> SimCharger:
    # No power cap below the car's 16 A x 3 phases: the current alone limits it.
    return cs.sim("CP1", version, **{"max_power_w": 50_000.0, **kw})


def _sent(sim: object, action: str) -> list[dict[str, object]]:
    return [args for name, args in sim.received if name == action]  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", VERSIONS)
async def test_limits_map_to_the_three_profile_purposes(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = _sim(cs, version, interval=10)
        async with running(sim):
            await sim.charging.wait()
            await wait_until(lambda: cs.driver.status()["ev1"]["transaction"] is not None)
            res = await cs.driver.command(
                SetChargingLimit("ev1", 10, purpose="default", duration=600.4, phases=3)
            )
            assert res["result"]["status"] == "Accepted"
            res = await cs.driver.command(SetChargingLimit("ev1", 8, purpose="tx", stack_level=1))
            assert res["result"]["status"] == "Accepted"
            res = await cs.driver.command(SetChargingLimit("ev1", 25, purpose="station_max"))
            assert res["result"]["status"] == "Accepted"
            by_purpose = {p.purpose: p for p in sim.profiles.values()}
            assert set(by_purpose) == {"TxDefaultProfile", "TxProfile", MAX_NAME[version]}
            default, tx, cap = (
                by_purpose["TxDefaultProfile"],
                by_purpose["TxProfile"],
                by_purpose[MAX_NAME[version]],
            )
            # The duration is sent in whole seconds, rounded up so a limit never ends early.
            assert default.duration == 601 and default.connector == 0
            assert tx.transaction_id == sim.transaction_id and tx.connector == 1
            assert tx.stack_level == 1 and cap.connector == 0
            sent = _sent(sim, "SetChargingProfile")
            schedule = sent[0]["charging_schedule"]
            first = schedule[0] if isinstance(schedule, list) else schedule
            assert first["charging_schedule_period"] == [  # type: ignore[index]
                {"start_period": 0, "limit": 10, "number_phases": 3}
            ]
            # The running TxProfile (8 A) wins over the default, under the 25 A maximum.
            assert sim.composite_limit() == 8.0
            await wait_until(lambda: sim.drawn_current() == (8.0, 8.0, 8.0))


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_new_limit_replaces_the_old_profile(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = _sim(cs, version, interval=10)
        async with running(sim):
            await sim.charging.wait()
            for limit in (10, 12, 7):
                await cs.driver.command(SetChargingLimit("ev1", limit, stack_level=2))
            assert list(sim.profiles) == [profile_id("tx_default", 2, 0)]
            assert sim.composite_limit() == 7.0
            await cs.driver.command(SetChargingLimit("ev1", 9, stack_level=0))
            # Two stack levels of the same purpose: the higher one holds.
            assert len(sim.profiles) == 2 and sim.composite_limit() == 7.0


@pytest.mark.parametrize("version", VERSIONS)
async def test_tx_limit_without_a_transaction_is_refused_clearly(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = _sim(cs, version, interval=10, auto_start=False)
        async with running(sim):
            await sim.booted.wait()
            with pytest.raises(CommandError, match="TxProfile needs a running transaction"):
                await cs.driver.command(SetChargingLimit("ev1", 10, purpose="tx"))
            assert sim.profiles == {}


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_lapsing_limit_falls_back_to_the_lower_stack_level(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = _sim(cs, version, interval=10)
        async with running(sim):
            await sim.charging.wait()
            await wait_until(lambda: cs.driver.status()["ev1"]["transaction"] is not None)
            await cs.driver.command(SetChargingLimit("ev1", 6, purpose="default"))
            await cs.driver.command(
                SetChargingLimit("ev1", 13, purpose="tx", stack_level=1, duration=1)
            )
            assert sim.composite_limit() == 13.0
            # Nobody renews the 13 A limit: the charger falls back on the 6 A default.
            await wait_until(lambda: sim.composite_limit() == 6.0, within=30)
            await wait_until(lambda: sim.drawn_current() == (6.0, 6.0, 6.0), within=30)


@pytest.mark.parametrize("version", VERSIONS)
async def test_clear_removes_the_profiles(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = _sim(cs, version, interval=10)
        async with running(sim):
            await sim.charging.wait()
            await cs.driver.command(SetChargingLimit("ev1", 10, purpose="default"))
            await cs.driver.command(SetChargingLimit("ev1", 20, purpose="station_max"))
            res = await cs.driver.command(ClearChargingLimit("ev1", purpose="default"))
            assert res["result"]["status"] == "Accepted"
            assert [p.purpose for p in sim.profiles.values()] == [MAX_NAME[version]]
            res = await cs.driver.command(ClearChargingLimit("ev1"))
            assert res["result"]["status"] == "Accepted"
            assert sim.profiles == {} and sim.composite_limit() is None
            await wait_until(lambda: sim.drawn_current() == (16.0, 16.0, 16.0))


@pytest.mark.parametrize("version", VERSIONS)
async def test_one_phase_charger_draws_on_its_phase_and_reports_it(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = _sim(cs, version, interval=0.1, phases=1, phase=2, max_current=32)
        async with running(sim):
            await sim.charging.wait()
            assert sim.drawn_current() == (0.0, 32.0, 0.0)
            await cs.driver.command(SetChargingLimit("ev1", 10.5))
            await wait_until(lambda: sim.drawn_current() == (0.0, 10.5, 0.0))
            await wait_until(
                lambda: (
                    cs.ctx.last_value("ev1", "current_l2") == 10.5
                    and cs.ctx.last_value("ev1", "current_l1") == 0.0
                    and cs.ctx.last_value("ev1", "power_active") == pytest.approx(10.5 * 230)
                )
            )
            # 1-phase: a W limit is per the one phase.
            await cs.driver.command(SetChargingLimit("ev1", 2300, unit="W"))
            await wait_until(lambda: sim.drawn_current() == (0.0, 10.0, 0.0))


@pytest.mark.parametrize("version", VERSIONS)
async def test_below_six_amperes_pauses_and_no_profile_draws_the_maximum(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = _sim(cs, version, interval=10, max_current=20)
        async with running(sim):
            await sim.charging.wait()
            assert sim.drawn_current() == (20.0, 20.0, 20.0)
            await cs.driver.command(SetChargingLimit("ev1", 5.9))
            await wait_until(lambda: sim.drawn_current() == (0.0, 0.0, 0.0))
            assert sim.composite_limit() == 5.9
            await cs.driver.command(SetChargingLimit("ev1", 0))
            assert sim.power_w == 0.0


@pytest.mark.parametrize("version", VERSIONS)
async def test_the_car_follows_a_new_limit_only_after_the_delay(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        # An hour's delay: within this test the car never follows.
        slow = _sim(cs, version, interval=10, profile_delay=3600)
        async with running(slow):
            await slow.charging.wait()
            await cs.driver.command(SetChargingLimit("ev1", 8))
            assert slow.composite_limit() == 8.0
            assert slow.drawn_current() == (16.0, 16.0, 16.0)
        # A short delay: the car follows by itself, without any further message.
        quick = _sim(cs, version, interval=10, profile_delay=0.5)
        async with running(quick):
            await quick.charging.wait()
            await cs.driver.command(SetChargingLimit("ev1", 8))
            await wait_until(lambda: quick.drawn_current() == (8.0, 8.0, 8.0), within=30)


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_charger_that_rejects_profiles_answers_rejected(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = _sim(cs, version, interval=10, reject_profiles=True)
        async with running(sim):
            await sim.charging.wait()
            res = await cs.driver.command(SetChargingLimit("ev1", 8))
            assert res["result"]["status"] == "Rejected"
            assert sim.profiles == {} and sim.drawn_current() == (16.0, 16.0, 16.0)


@pytest.mark.parametrize("version", VERSIONS)
async def test_plug_in_and_unplug(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = _sim(cs, version, interval=10, auto_start=False)
        async with running(sim):
            await sim.booted.wait()
            assert sim.drawn_current() == (0.0, 0.0, 0.0)
            assert await sim.plug_in(id_tag="TAG42")
            status = cs.driver.status()["ev1"]
            assert status["transaction"]["id"] == sim.transaction_id
            assert status["transaction"]["id_tag"] == "TAG42"
            assert sim.drawn_current() == (16.0, 16.0, 16.0)
            await cs.driver.command(SetChargingLimit("ev1", 9, purpose="tx", stack_level=1))
            await sim.unplug()
            assert sim.transaction_id is None and sim.drawn_current() == (0.0, 0.0, 0.0)
            # The transaction's TxProfile ended with it.
            assert sim.profiles == {}
            await wait_until(lambda: cs.driver.status()["ev1"]["transaction"] is None)


async def test_simulator_config_is_checked() -> None:
    from drivers.ocpp.simulator import SimConfig

    with pytest.raises(ValueError, match="phases"):
        SimConfig(url="ws://x", charge_point_id="CP", phases=2)
    with pytest.raises(ValueError, match="phase"):
        SimConfig(url="ws://x", charge_point_id="CP", phases=1, phase=4)
