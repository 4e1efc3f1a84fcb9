"""Session state reaches the core as samples: session_active and current_offered."""

from __future__ import annotations

import pytest

from edged.live import LiveValues
from edged.model import DeviceState, unit_of
from tests.drivers.ocpp.ocpp_helpers import central, charger, running, wait_until


def _live(samples: list[object]) -> LiveValues:
    live = LiveValues()
    for s in samples:
        live.update(s)  # type: ignore[arg-type]
    return live


def _active(cs: object) -> float | None:
    return cs.ctx.last_value("ev1", "session_active")  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_session_active_follows_the_transaction(version: str) -> None:
    assert unit_of("session_active") == ""
    async with central([charger("ev1", "CP1")]) as cs:
        # Meter values only every minute: the start and stop must be reported on their own.
        sim = cs.sim("CP1", version, interval=60, auto_start=False)
        async with running(sim):
            await sim.booted.wait()
            assert _active(cs) is None
            await sim.plug_in("TAG1")
            await wait_until(lambda: _active(cs) == 1.0)
            await sim.unplug()
            await wait_until(lambda: _active(cs) == 0.0)
            live = _live(cs.ctx.samples_of("ev1"))
            entry = live.get("ev1", "session_active")
            assert entry is not None and entry.value == 0.0


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_meter_values_carry_session_state_and_offered_current(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        sim = cs.sim("CP1", version, interval=0.1, max_current=20, max_power_w=50_000)
        async with running(sim):
            await sim.charging.wait()
            seen = len(cs.ctx.samples_of("ev1"))
            await wait_until(lambda: len(cs.ctx.samples_of("ev1")) > seen + 2)
            last = cs.ctx.samples_of("ev1")[-1]
            assert last.values["session_active"] == 1.0
            assert last.values["current_offered"] == 20.0
            live = _live(cs.ctx.samples_of("ev1"))
            offered = live.get("ev1", "current_offered")
            assert offered is not None and offered.value == 20.0


async def test_reconnection_is_reported_as_device_state() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        first = cs.sim("CP1", "1.6", interval=10)
        async with running(first):
            await first.booted.wait()
            await wait_until(lambda: cs.ctx.last_state("ev1") is DeviceState.ONLINE)
        await wait_until(lambda: cs.ctx.last_state("ev1") is DeviceState.OFFLINE)
        again = cs.sim("CP1", "2.0.1", interval=10)
        async with running(again):
            await again.booted.wait()
            await wait_until(lambda: cs.ctx.last_state("ev1") is DeviceState.ONLINE)
        await wait_until(lambda: cs.ctx.last_state("ev1") is DeviceState.OFFLINE)
        states = [s for dev, s, _ in cs.ctx.states if dev == "ev1"]
        assert states == [
            DeviceState.ONLINE,
            DeviceState.OFFLINE,
            DeviceState.ONLINE,
            DeviceState.OFFLINE,
        ]


async def test_every_connection_is_counted_in_the_live_values() -> None:
    async with central([charger("ev1", "CP1")]) as cs:
        first = cs.sim("CP1", "1.6", interval=10)
        async with running(first):
            await first.booted.wait()
            await wait_until(lambda: cs.ctx.last_value("ev1", "link_connects") == 1.0)
            # A rebooted charger reconnects while its old session still looks open: the state
            # goes offline and online at once, and the counter tells the core it happened.
            second = cs.sim("CP1", "1.6", interval=10)
            async with running(second):
                await second.booted.wait()
                await wait_until(lambda: cs.ctx.last_value("ev1", "link_connects") == 2.0)
                states = [s for dev, s, _ in cs.ctx.states if dev == "ev1"]
                assert states[-2:] == [DeviceState.OFFLINE, DeviceState.ONLINE]
