"""The server over real TCP with pymodbus's client: maps, staleness, read-only, limits."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from pymodbus.client import AsyncModbusTcpClient
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from edged.control import format_status
from edged.live import LiveValues
from edged.modbus_server import plainmap
from edged.modbus_server.config import ModbusServerConfig
from edged.modbus_server.server import LiveRegisters, ModbusServer, ServedPoint
from edged.model import DeviceState, Sample

GRID = {
    "power_active": 2310.5,
    "voltage_l1": 230.1,
    "voltage_l2": 231.0,
    "voltage_l3": 229.5,
    "current_l1": 3.3,
    "current_l2": 3.2,
    "current_l3": 3.1,
    "energy_import": 1523340.0,
    "frequency": 50.01,
}


@dataclass
class Rig:
    live: LiveValues
    states: dict[str, DeviceState]
    server: ModbusServer
    events: list[str] = field(default_factory=list)
    now: list[float] = field(default_factory=lambda: [time.time()])

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    async def client(self) -> AsyncModbusTcpClient:
        c = AsyncModbusTcpClient("127.0.0.1", port=self.port, timeout=5, retries=0)
        assert await c.connect()
        return c


async def make_rig(**settings: object) -> Rig:
    live = LiveValues()
    states: dict[str, DeviceState] = {"grid": DeviceState.ONLINE, "heat": DeviceState.ONLINE}
    now = [time.time()]
    registers = LiveRegisters(
        live,
        states.get,
        gateway_id="gw-test",
        models=str(settings.pop("models", "int")),
        version="0.1.0",
        clock=lambda: now[0],
    )
    cfg = ModbusServerConfig(port=0, **settings)  # type: ignore[arg-type]
    events: list[str] = []
    server = ModbusServer(cfg, registers, events.append)
    server.set_points(
        [
            ServedPoint("grid", 1, "electricity", 5.0),
            ServedPoint("heat", 2, "heat", 5.0),
            ServedPoint("site", 3, "electricity", 120.0),
        ]
    )
    await server.start()
    live.update(Sample("grid", now[0], GRID))
    live.update(Sample("heat", now[0], {"energy_heat": 5_000_000.0, "flow_temperature": 61.5}))
    return Rig(live, states, server, events, now)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = await make_rig()
    yield r
    await r.server.close()


def f32(regs: list[int], at: int) -> float:
    return float(struct.unpack(">f", struct.pack(">2H", regs[at], regs[at + 1]))[0])


async def test_sunspec_and_plain_map_over_tcp(rig: Rig) -> None:
    c = await rig.client()
    rr = await c.read_holding_registers(40000, count=125, device_id=1)
    assert not rr.isError()
    regs = rr.registers
    assert regs[:4] == [0x5375, 0x6E53, 1, 66]
    assert regs[70:72] == [203, 105]
    w_sf = regs[70 + 22]
    assert regs[70 + 18] * 10 ** (w_sf - 0x10000 if w_sf & 0x8000 else w_sf) == pytest.approx(
        2310.5, abs=0.5
    )
    # function 4 reads the same registers
    ir = await c.read_input_registers(40000, count=4, device_id=1)
    assert ir.registers == regs[:4]
    plain = await c.read_holding_registers(0, count=plainmap.SIZE, device_id=2)
    assert plain.registers[1] == plainmap.STATUS_FRESH
    assert f32(plain.registers, plainmap.ADDRESS["flow_temperature"]) == 61.5
    assert f32(plain.registers, plainmap.ADDRESS["energy_heat"]) == 5_000_000.0
    # a heat meter has no SunSpec map
    heat = await c.read_holding_registers(40000, count=2, device_id=2)
    assert heat.isError() and heat.exception_code == 2
    c.close()


async def test_writes_and_other_functions_are_refused(rig: Rig) -> None:
    c = await rig.client()
    for reply in (
        await c.write_register(0, 1, device_id=1),
        await c.write_registers(40000, [1, 2], device_id=1),
        await c.write_coil(0, True, device_id=1),
        await c.read_coils(0, count=8, device_id=1),
        await c.diag_read_diagnostic_register(device_id=1),
    ):
        assert reply.isError() and reply.exception_code == 1, reply
    # still served afterwards, unchanged
    rr = await c.read_holding_registers(0, count=2, device_id=1)
    assert rr.registers == [plainmap.VERSION, plainmap.STATUS_FRESH]
    unknown = await c.read_holding_registers(0, count=2, device_id=99)
    assert unknown.isError() and unknown.exception_code == 0x0B
    beyond = await c.read_holding_registers(100, count=20, device_id=1)
    assert beyond.isError() and beyond.exception_code == 2
    c.close()
    assert rig.server.stats.exceptions == 7


async def test_stale_device_and_old_values_are_not_served(rig: Rig) -> None:
    c = await rig.client()
    rig.states["grid"] = DeviceState.OFFLINE
    rr = await c.read_holding_registers(40000, count=125, device_id=1)
    assert rr.registers[70 + 18] == 0x8000  # W not implemented
    assert rr.registers[70 + 46 : 70 + 48] == [0, 0]  # TotWhImp not implemented
    plain = await c.read_holding_registers(0, count=plainmap.SIZE, device_id=1)
    assert plain.registers[1] == plainmap.STATUS_STALE
    at = plainmap.ADDRESS["power_active"]
    assert plain.registers[at : at + 2] == [0x7FC0, 0]
    # online again but the values are older than the point's max age (5 s)
    rig.states["grid"] = DeviceState.ONLINE
    rig.now[0] += 6.0
    plain = await c.read_holding_registers(0, count=plainmap.SIZE, device_id=1)
    assert plain.registers[1] == plainmap.STATUS_STALE
    assert plain.registers[2] == 6  # age of the newest value
    assert plain.registers[at : at + 2] == [0x7FC0, 0]
    # a fresh sample makes it fresh again
    rig.live.update(Sample("grid", rig.now[0], {"power_active": 100.0}))
    plain = await c.read_holding_registers(0, count=plainmap.SIZE, device_id=1)
    assert plain.registers[1] == plainmap.STATUS_FRESH
    assert f32(plain.registers, at) == 100.0
    # a virtual meter that never sent anything: stale, never read
    site = await c.read_holding_registers(0, count=3, device_id=3)
    assert site.registers[1:3] == [plainmap.STATUS_STALE, 0xFFFF]
    c.close()


async def test_pipelined_requests_are_all_answered_in_order(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
    frames = [struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, 0, 2) for tid in range(1, 11)]
    stream = b"".join(frames)
    writer.write(stream + frames[0][:5])  # ten requests and the start of an eleventh
    await writer.drain()
    replies = [await asyncio.wait_for(reader.readexactly(13), 10) for _ in range(10)]
    assert [struct.unpack(">H", r[:2])[0] for r in replies] == list(range(1, 11))
    writer.write(frames[0][5:])  # the rest of the eleventh arrives later
    await writer.drain()
    last = await asyncio.wait_for(reader.readexactly(13), 10)
    assert last[:2] == b"\x00\x01" and last[7:9] == b"\x03\x04"
    writer.close()


async def closed_without_reply(reader: asyncio.StreamReader) -> bool:
    """True when the server closed the connection (FIN or RST) without sending anything."""
    try:
        return await asyncio.wait_for(reader.read(100), 20) == b""
    except ConnectionResetError:
        return True


async def wait_for(pred: Callable[[], bool], what: str) -> None:
    for _ in range(600):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_allow_list_closes_other_peers_at_once() -> None:
    r = await make_rig(allow=(ipaddress.ip_network("192.0.2.0/24"),))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 2))
        assert await closed_without_reply(reader)
        writer.close()
        assert r.server.stats.refused == 1 and r.server.stats.requests == 0
        assert "refused" in r.events
    finally:
        await r.server.close()


async def test_connections_are_bounded() -> None:
    r = await make_rig(max_connections=2)
    try:
        first = await r.client()
        second = await r.client()
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        assert await closed_without_reply(reader)
        writer.close()
        assert r.server.stats.busy == 1
        # the two admitted clients are served
        assert not (await first.read_holding_registers(0, count=2, device_id=1)).isError()
        assert not (await second.read_holding_registers(0, count=2, device_id=1)).isError()
        second.close()
        await wait_for(lambda: r.server.stats.connections == 1, "a slot to free")
        third = await r.client()
        assert not (await third.read_holding_registers(0, count=2, device_id=1)).isError()
        first.close()
        third.close()
    finally:
        await r.server.close()


async def test_idle_connections_are_closed() -> None:
    r = await make_rig(idle_timeout=1.0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        assert await closed_without_reply(reader)
        writer.close()
        assert r.server.stats.idle_closed == 1
        assert r.server.stats.connections == 0
    finally:
        await r.server.close()


async def test_float_models() -> None:
    r = await make_rig(models="float")
    try:
        c = await r.client()
        rr = await c.read_holding_registers(40070, count=30, device_id=1)
        assert rr.registers[:2] == [213, 124]
        assert f32(rr.registers, 28) == pytest.approx(2310.5)  # W
        c.close()
    finally:
        await r.server.close()


async def test_status_line(rig: Rig) -> None:
    c = await rig.client()
    await c.read_holding_registers(0, count=2, device_id=1)
    status = rig.server.status()
    assert status["units"] == {"grid": 1, "heat": 2, "site": 3}
    assert status["requests"] == 1 and status["connections"] == 1
    assert "3 unit(s), 1 client(s), 1 requests" in status["line"]
    c.close()


def test_edged_status_text_has_a_modbus_line() -> None:
    text = format_status({"gateway": "gw", "modbus_server": {"line": "listening on x:1"}})
    assert "modbus   listening on x:1" in text.splitlines()


def sunspec_alliance_scan(port: int, unit: int) -> dict[str, object]:
    """What pysunspec2, the SunSpec Alliance's own client, finds on one unit id."""
    device = SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=5)
    try:
        device.scan()
        meter = device.models[203][0]
        return {
            "models": sorted(k for k in device.models if isinstance(k, int)),
            "base": device.base_addr,
            "serial": device.common[0].SN.cvalue,
            "W": meter.W.cvalue,
            "PhVphB": meter.PhVphB.cvalue,
            "AphA": meter.AphA.cvalue,
            "Hz": meter.Hz.cvalue,
            "TotWhImp": meter.TotWhImp.cvalue,
            "TotVAhImp": meter.TotVAhImp.cvalue,
        }
    finally:
        device.close()


async def test_the_sunspec_alliance_client_finds_and_reads_the_meter(rig: Rig) -> None:
    found = await asyncio.to_thread(sunspec_alliance_scan, rig.port, 1)
    assert found["models"] == [1, 203]
    assert found["base"] == 40000
    assert found["serial"] == "gw-test/grid"
    assert found["W"] == pytest.approx(2310.5, abs=0.5)
    assert found["PhVphB"] == pytest.approx(231.0, abs=0.05)
    assert found["AphA"] == pytest.approx(3.3, abs=0.005)
    assert found["Hz"] == pytest.approx(50.01, abs=0.005)
    assert found["TotWhImp"] == pytest.approx(1523340.0, abs=0.5)
    assert found["TotVAhImp"] is None  # not implemented


async def test_a_client_that_never_reads_its_replies_is_closed(rig: Rig) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", rig.port))
    request = struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, plainmap.SIZE)  # 237-byte replies
    sent = 0
    try:
        for _ in range(20_000):  # a few requests at a time, never reading a reply
            if rig.server.stats.overrun:
                break
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, request * 4), 5)
            except (ConnectionError, TimeoutError):
                break
            sent += 4
            await asyncio.sleep(0.002)
        await wait_for(lambda: rig.server.stats.overrun == 1, "the reader-less client closed")
    finally:
        sock.close()
    # the replies waiting for it were bounded (64 KiB buffered + a small kernel buffer)
    assert rig.server.stats.requests * 237 < 1_000_000
    await wait_for(lambda: rig.server.stats.connections == 0, "the connection to be gone")
    c = await rig.client()
    assert not (await c.read_holding_registers(0, count=2, device_id=1)).isError()
    c.close()
