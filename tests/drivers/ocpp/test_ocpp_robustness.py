"""Hostile or broken frames never take the central system down (real WebSockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from edged.model import DeviceState
from tests.drivers.ocpp.ocpp_helpers import Central, central, charger, running, wait_until

HEARTBEAT = '[2,"hb-1","Heartbeat",{}]'


@asynccontextmanager
async def raw(cs: Central, cp: str, version: str) -> AsyncIterator[ClientConnection]:
    """A bare WebSocket to the central system, speaking frames by hand."""
    sub = Subprotocol("ocpp1.6" if version == "1.6" else "ocpp2.0.1")
    async with connect(f"{cs.url}/{cp}", subprotocols=[sub], max_size=None) as ws:
        yield ws


async def exchange(ws: ClientConnection, frame: str) -> list[Any]:
    await ws.send(frame)
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert isinstance(reply, list)
    return reply


async def still_serving(ws: ClientConnection) -> None:
    """The session answers a valid Heartbeat after whatever came before."""
    reply = await exchange(ws, HEARTBEAT)
    assert reply[0] == 3 and reply[1] == "hb-1" and "currentTime" in reply[2]


@pytest.mark.parametrize(
    ("version", "code"), [("1.6", "FormationViolation"), ("2.0.1", "RpcFrameworkError")]
)
@pytest.mark.parametrize(
    "frame",
    [
        "this is not json",
        '[2,"a1","Heartbeat",{}',
        '{"not": "an array"}',
        "[]",
        '[2, 17, "Heartbeat", {}]',
        '[2,"a1",["Heartbeat"],{}]',
        '[2,"a1","Heartbeat"]',
        '[2,"a1","Heartbeat",' + "[" * 5000 + "]" * 5000 + "]",
        '[2,"a1","MeterValues",{"connectorId":' + "9" * 5000 + "}]",
        '[2,"a1","Heartbeat",{"x":NaN}]',
        '[2,"a1","Heartbeat",{"x":1e999}]',
    ],
    ids=[
        "not-json",
        "truncated",
        "object",
        "empty",
        "int-id",
        "list-action",
        "short",
        "deep-nesting",
        "huge-int",
        "nan",
        "inf",
    ],
)
async def test_malformed_frames_get_a_callerror_and_the_session_survives(
    version: str, code: str, frame: str
) -> None:
    async with central([charger("ev1", "CP1")]) as cs, raw(cs, "CP1", version) as ws:
        reply = await exchange(ws, frame)
        assert reply[0] == 4
        assert reply[1] in ("a1", "-1")
        assert reply[2] == code
        await still_serving(ws)
        assert cs.ctx.counts[("frame_rejected", "ev1")] == 1


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_unknown_action_and_wrong_types_get_callerrors(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs, raw(cs, "CP1", version) as ws:
        reply = await exchange(ws, '[2,"u1","MakeCoffee",{}]')
        assert reply[:3] == [4, "u1", "NotImplemented"]
        wrong = (
            '[2,"w1","StatusNotification",{"connectorId":"one","errorCode":5,"status":"x"}]'
            if version == "1.6"
            else '[2,"w1","StatusNotification",{"timestamp":1,"connectorStatus":"x",'
            '"evseId":"a","connectorId":1}]'
        )
        reply = await exchange(ws, wrong)
        assert reply[0] == 4 and reply[1] == "w1"
        assert reply[2] in ("TypeConstraintViolation", "FormationViolation", "FormatViolation")
        extra = '[2,"x1","Heartbeat",{"unexpected":{"a":[1,2]}}]'
        reply = await exchange(ws, extra)
        assert reply[0] == 4 and reply[1] == "x1"
        await still_serving(ws)


async def test_unsolicited_results_are_dropped_without_reply() -> None:
    async with central([charger("ev1", "CP1")]) as cs, raw(cs, "CP1", "1.6") as ws:
        await ws.send('[3,"nobody-asked",{}]')
        await ws.send('[4,"nobody-asked","GenericError","",{}]')
        await ws.send('[3,"bad"]')
        await still_serving(ws)


async def test_oversized_message_closes_only_that_connection() -> None:
    devices = [charger("big", "BIG"), charger("ok", "OK")]
    async with central(devices, max_message_size=4096) as cs:
        sim = cs.sim("OK", "1.6", interval=0.05)
        async with running(sim), raw(cs, "BIG", "1.6") as ws:
            await wait_until(lambda: cs.ctx.last_value("ok", "energy_import") is not None)
            await ws.send('[2,"big","DataTransfer",{"vendorId":"' + "x" * 10_000 + '"}]')
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1009
            await wait_until(lambda: cs.ctx.last_state("big") is DeviceState.OFFLINE)
            seen = len(cs.ctx.samples_of("ok"))
            await wait_until(lambda: len(cs.ctx.samples_of("ok")) >= seen + 2)
            assert cs.driver.status()["ok"]["connected"] is True


# Arbitrary JSON-ish values, including the shapes that used to crash the library.
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_actions = st.sampled_from(
    [
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
        "MeterValues",
        "Authorize",
        "StartTransaction",
        "StopTransaction",
        "TransactionEvent",
        "DataTransfer",
        "Nope",
    ]
)
_frames = st.one_of(
    st.text(max_size=60),
    st.builds(lambda a, p: json.dumps([2, "f1", a, p]), _actions, _json),
    st.builds(
        lambda a, p: json.dumps([2, "f1", a, p]),
        _actions,
        st.dictionaries(
            st.sampled_from(
                [
                    "connectorId",
                    "meterValue",
                    "transactionId",
                    "idTag",
                    "status",
                    "errorCode",
                    "chargingStation",
                    "reason",
                    "evseId",
                    "meterStart",
                    "timestamp",
                ]
            ),
            _json,
            max_size=5,
        ),
    ),
    st.builds(lambda v: json.dumps(v), _json),
)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_generated_frames_never_crash_the_server(version: str) -> None:
    async with central([charger("ev1", "CP1")]) as cs, raw(cs, "CP1", version) as ws:
        loop = asyncio.get_running_loop()

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(frame=_frames)
        def check(frame: str) -> None:
            fut = asyncio.run_coroutine_threadsafe(_send_and_probe(ws, frame), loop)
            fut.result(10)

        await asyncio.to_thread(check)
        await still_serving(ws)
        assert cs.driver.status()["ev1"]["connected"] is True


async def _send_and_probe(ws: ClientConnection, frame: str) -> None:
    """Send a generated frame, then a probe; every answer must be well-formed OCPP."""
    await ws.send(frame)
    await ws.send('[2,"probe","Heartbeat",{}]')
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert isinstance(reply, list) and reply[0] in (3, 4)
        if reply[1] == "probe":
            assert reply[0] == 3
            return
