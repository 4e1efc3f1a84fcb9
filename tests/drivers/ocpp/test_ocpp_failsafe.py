"""The charger's own fall-back: the default profile outlives the central system.

The load manager sends a safe TxDefaultProfile at stack level 0 first on every
(re)connection, and higher limits with a duration. When the central system dies the
higher limit lapses and the simulated charger, as a real one, goes back to the default.
"""

from __future__ import annotations

import contextlib

import pytest

from edged.api import SetChargingLimit
from edged.model import DeviceState
from tests.conftest import free_port
from tests.drivers.ocpp.ocpp_helpers import central, charger, running, wait_until


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_charger_falls_back_to_its_default_when_the_central_system_is_gone(
    version: str,
) -> None:
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        async with central([charger("ev1", "CP1")], port=port) as cs:
            sim = cs.sim("CP1", version, interval=10, max_power_w=50_000)
            # The charger outlives the central system: its task ends with this test.
            task = await stack.enter_async_context(running(sim))
            await sim.charging.wait()
            await wait_until(lambda: cs.driver.status()["ev1"]["transaction"] is not None)
            await cs.driver.command(SetChargingLimit("ev1", 6, purpose="default"))
            await cs.driver.command(
                SetChargingLimit("ev1", 14, purpose="tx", stack_level=1, duration=3)
            )
            await wait_until(lambda: sim.drawn_current() == (14.0, 14.0, 14.0))
        # The central system stopped: the charger lost its connection, kept its profiles
        # and, once the 14 A limit lapsed, charges at the 6 A default on its own.
        await wait_until(task.done, within=30)
        assert sim.connection is None
        await wait_until(lambda: sim.drawn_current() == (6.0, 6.0, 6.0), within=30)
        assert [p.purpose for p in sim.profiles.values()] == ["TxDefaultProfile"]
        assert sim.transaction_id is not None
        # Back online (a restarted edged on the same port): the charger reports it is charging.
        async with central([charger("ev1", "CP1")], port=port) as again, running(sim):
            await sim.booted.wait()
            await wait_until(lambda: again.ctx.last_state("ev1") is DeviceState.ONLINE)
            charging = "Charging" if version == "1.6" else "Occupied"
            await wait_until(lambda: again.driver.status()["ev1"]["connectors"] == {"1": charging})
            assert sim.drawn_current() == (6.0, 6.0, 6.0)
