"""A new charger list applied to the running central system (reload without a restart)."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from drivers.ocpp.driver import REMOVED, hash_password
from drivers.ocpp.simulator import SimCharger
from edged.errors import ConfigError
from edged.model import ConnectionSpec, DeviceSpec, DeviceState
from tests.drivers.ocpp.ocpp_helpers import Central, central, charger, running, wait_until


def conn_of(cs: Central, **settings: object) -> ConnectionSpec:
    """The connection spec the central system runs with."""
    return ConnectionSpec(
        name="cs", driver="ocpp", settings={"host": "127.0.0.1", "port": cs.port, **settings}
    )


async def refused_with(cs: Central, cp: str) -> int:
    """The HTTP status a WebSocket upgrade for this charge point id gets."""
    with pytest.raises(InvalidStatus) as e:
        async with connect(f"{cs.url}/{cp}", subprotocols=[Subprotocol("ocpp1.6")]):
            pass
    return e.value.response.status_code


def live_update(cs: Central, conn: ConnectionSpec, devices: list[DeviceSpec]) -> bool:
    """What the supervisor does on reload: configure the new list, hand it over live."""
    try:
        settings = cs.driver.configure(conn, devices)
    except ConfigError:
        return False
    return cs.driver.update(settings)


async def meter_values_keep_arriving(cs: Central, device_id: str, more: int = 3) -> None:
    """At least ``more`` further samples of the device reach the context."""
    seen = len(cs.ctx.samples_of(device_id))
    await wait_until(lambda: len(cs.ctx.samples_of(device_id)) >= seen + more)


async def test_adding_a_charger_leaves_the_connected_ones_alone() -> None:
    two = [charger("ev1", "CP-1"), charger("ev2", "CP-2")]
    async with central(two) as cs:
        sim1, sim2 = cs.sim("CP-1", interval=0.05), cs.sim("CP-2", interval=0.05)
        async with running(sim1) as task1, running(sim2) as task2:
            await wait_until(lambda: sim1.booted.is_set() and sim2.booted.is_set())
            ws1, ws2 = sim1.connection, sim2.connection
            sessions = dict(cs.driver._sessions)
            assert await refused_with(cs, "CP-3") == 404

            assert live_update(cs, conn_of(cs), [*two, charger("ev3", "CP-3")]) is True

            sim3 = cs.sim("CP-3", interval=0.05)
            async with running(sim3):
                await wait_until(lambda: sim3.booted.is_set())
                await meter_values_keep_arriving(cs, "ev3")
            await meter_values_keep_arriving(cs, "ev1")
            await meter_values_keep_arriving(cs, "ev2")
            # Same sockets on both sides: nobody was disconnected or reconnected.
            assert sim1.connection is ws1 and sim2.connection is ws2
            assert not task1.done() and not task2.done()
            assert cs.driver._sessions["ev1"] is sessions["ev1"]
            assert cs.driver._sessions["ev2"] is sessions["ev2"]
            states = [(d, s) for d, s, _ in cs.ctx.states if d in ("ev1", "ev2")]
            assert states == [("ev1", DeviceState.ONLINE), ("ev2", DeviceState.ONLINE)] or (
                states == [("ev2", DeviceState.ONLINE), ("ev1", DeviceState.ONLINE)]
            )
            assert set(cs.driver.status()) == {"ev1", "ev2", "ev3"}


async def test_removing_a_charger_closes_only_its_session() -> None:
    two = [charger("ev1", "CP-1"), charger("ev2", "CP-2")]
    async with central(two) as cs:
        sim1, sim2 = cs.sim("CP-1", interval=0.05), cs.sim("CP-2", interval=0.05)
        async with running(sim1) as task1, running(sim2) as task2:
            await wait_until(lambda: sim1.booted.is_set() and sim2.booted.is_set())
            ws1, ws2 = sim1.connection, sim2.connection
            assert ws2 is not None
            session1 = cs.driver._sessions["ev1"]

            assert live_update(cs, conn_of(cs), [two[0]]) is True

            await wait_until(task2.done)
            assert ws2.close_code == 1000
            assert ws2.close_reason == REMOVED
            assert cs.ctx.last_state("ev2") is DeviceState.OFFLINE
            assert ("ev2", DeviceState.OFFLINE, REMOVED) in cs.ctx.states
            assert await refused_with(cs, "CP-2") == 404
            assert "ev2" not in cs.driver.status()

            await meter_values_keep_arriving(cs, "ev1")
            assert sim1.connection is ws1 and not task1.done()
            assert cs.driver._sessions["ev1"] is session1
            assert cs.ctx.last_state("ev1") is DeviceState.ONLINE


async def test_a_new_password_applies_at_the_next_connection() -> None:
    old, new = hash_password("old-secret"), hash_password("new-secret")
    async with central([charger("ev1", "CP-1", password_hash=old)]) as cs:
        sim = cs.sim("CP-1", interval=0.05, password="old-secret")
        async with running(sim) as task:
            await wait_until(sim.booted.is_set)
            ws = sim.connection

            assert live_update(cs, conn_of(cs), [charger("ev1", "CP-1", password_hash=new)])

            await meter_values_keep_arriving(cs, "ev1")
            assert sim.connection is ws and not task.done()
        again = cs.sim("CP-1", password="old-secret")
        with pytest.raises(InvalidStatus) as e:
            await again.run()
        assert e.value.response.status_code == 401
        renewed = cs.sim("CP-1", password="new-secret")
        async with running(renewed):
            await wait_until(renewed.booted.is_set)


async def test_a_change_to_the_listening_socket_is_refused() -> None:
    devices = [charger("ev1", "CP-1")]
    async with central(devices) as cs:
        assert live_update(cs, conn_of(cs, max_message_size=4096), devices) is False
        assert live_update(cs, conn_of(cs, port=cs.port % 65535 + 1), devices) is False


async def test_an_invalid_charger_list_is_refused() -> None:
    devices = [charger("ev1", "CP-1")]
    async with central(devices) as cs:
        twice: list[DeviceSpec] = [*devices, charger("ev2", "CP-1")]
        assert live_update(cs, conn_of(cs), twice) is False
        sim: SimCharger = cs.sim("CP-1")
        async with running(sim):
            await wait_until(sim.booted.is_set)
