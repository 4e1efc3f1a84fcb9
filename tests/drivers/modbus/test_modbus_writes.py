"""Writes: the simulator takes coils and holding registers on the wire, and the driver writes
declared registers and coils over the link that polls the device, never anything else."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus import frame, profile
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.simulator import Meter, Simulator
from edged.api import DeviceInfo, SetChargingLimit, WriteRegister
from edged.errors import ConfigError, DriverError
from tests.drivers.modbus.helpers import conn, dev
from tests.fakes import FakeContext


def _meter(unit: int = 1) -> Meter:
    return Meter(profile.load(profile.shipped()["eastron_sdm630"]), unit=unit)


async def _until(predicate: object, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_simulator_takes_coil_and_register_writes_from_a_pymodbus_client() -> None:
    meter = _meter(unit=3)
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await client.connect()
        try:
            assert not (await client.write_coil(7, True, device_id=3)).isError()
            assert not (await client.write_coils(20, [True, False, True], device_id=3)).isError()
            assert not (await client.write_register(100, 0xBEEF, device_id=3)).isError()
            assert not (await client.write_registers(200, [1, 2, 3], device_id=3)).isError()
            coils = await client.read_coils(20, count=3, device_id=3)
            back = await client.read_holding_registers(200, count=3, device_id=3)
        finally:
            client.close()
    assert meter.coils == {7: True, 20: True, 21: False, 22: True}
    assert coils.bits[:3] == [True, False, True]
    assert back.registers == [1, 2, 3]
    assert meter.written[100] == 0xBEEF
    assert meter.writes[0] == ("coil", 7, (1,))


async def test_driver_writes_declared_coil_and_register_while_polling() -> None:
    meter = _meter()
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        driver = ModbusDriver()
        settings = driver.configure(
            conn(host="127.0.0.1", port=port),
            [
                dev(
                    "relay",
                    "eastron_sdm630",
                    poll_interval=0.1,
                    settings={"writable_coils": [0, 1], "writable_registers": [300, 301]},
                )
            ],
        )
        info = driver.describe(settings, "relay")
        assert isinstance(info, DeviceInfo)
        assert info.writable_coils == {0, 1}
        assert info.quantities is not None and "power_active" in info.quantities
        ctx = FakeContext()
        task = asyncio.create_task(driver.run(settings, ctx))
        try:
            await _until(lambda: len(ctx.samples_of("relay")) >= 2)
            result = await driver.command(WriteRegister("relay", 1, coil=True))
            assert result == {"device": "relay", "coil": 1, "value": True}
            await driver.command(WriteRegister("relay", 300, values=(7, 8)))
            assert meter.coils == {1: True}
            assert meter.written == {300: 7, 301: 8}
            # Polling goes on over the same connection after the writes.
            before = len(ctx.samples_of("relay"))
            await _until(lambda: len(ctx.samples_of("relay")) >= before + 2)
            with pytest.raises(DriverError, match="not in its writable_coils"):
                await driver.command(WriteRegister("relay", 5, coil=True))
            with pytest.raises(DriverError, match=r"register 302 .* writable_registers"):
                await driver.command(WriteRegister("relay", 301, values=(1, 2)))
            with pytest.raises(DriverError, match="not a command a Modbus device takes"):
                await driver.command(SetChargingLimit("relay", 6))
            assert meter.coils == {1: True}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_writable_addresses_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"writable_coils: address 70000 is outside 0-65535"):
        ModbusDriver().configure(
            conn(host="127.0.0.1", port=1502),
            [dev("m", "eastron_sdm630", settings={"writable_coils": [70000]})],
        )
    with pytest.raises(ConfigError, match=r"writable_registers: expected an array"):
        ModbusDriver().configure(
            conn(host="127.0.0.1", port=1502),
            [dev("m", "eastron_sdm630", settings={"writable_registers": "1"})],
        )


async def test_driver_writes_over_rtu_between_polls() -> None:
    meter = _meter(unit=4)
    async with Simulator() as sim:
        path = await sim.add_rtu_pty([meter])
        driver = ModbusDriver()
        settings = driver.configure(
            # A pty keeps no even parity on this kernel: 8N1.
            conn(transport="rtu", device=path, baudrate=19200, parity="N", timeout=0.5),
            [
                dev(
                    "io",
                    "eastron_sdm630",
                    address=4,
                    poll_interval=0.1,
                    settings={"writable_coils": [2], "writable_registers": [10, 11, 12]},
                )
            ],
        )
        ctx = FakeContext()
        task = asyncio.create_task(driver.run(settings, ctx))
        try:
            await _until(lambda: len(ctx.samples_of("io")) >= 2)
            await driver.command(WriteRegister("io", 10, values=(1, 2, 3)))
            await driver.command(WriteRegister("io", 2, coil=True))
            await driver.command(WriteRegister("io", 12, values=(9,)))
            before = len(ctx.samples_of("io"))
            await _until(lambda: len(ctx.samples_of("io")) >= before + 2)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert meter.written == {10: 1, 11: 2, 12: 9}
    assert meter.coils == {2: True}
    assert meter.writes == [("holding", 10, (1, 2, 3)), ("coil", 2, (1,)), ("holding", 12, (9,))]


async def test_malformed_writes_get_exception_replies() -> None:
    meter = _meter(unit=1)
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def ask(tid: int, pdu: bytes) -> bytes:
            writer.write(frame.mbap(tid, 1, pdu))
            await writer.drain()
            head = await asyncio.wait_for(reader.readexactly(7), 5)
            return await asyncio.wait_for(reader.readexactly(head[5] - 1), 5)

        try:
            # A coil value other than 0xFF00 / 0x0000.
            assert await ask(1, bytes((5, 0, 1, 0x12, 0x34))) == bytes((0x85, 3))
            # Byte count disagrees with the register count.
            assert await ask(2, bytes((16, 0, 1, 0, 2, 2, 0, 1))) == bytes((0x90, 3))
            # A truncated write.
            assert await ask(3, bytes((6, 0))) == bytes((0x86, 3))
            # Past the end of the address space.
            assert await ask(4, bytes((15, 0xFF, 0xFF, 0, 2, 1, 3))) == bytes((0x8F, 2))
            # The meter still answers a good write afterwards.
            assert await ask(5, bytes((6, 0, 7, 0, 42))) == bytes((6, 0, 7, 0, 42))
        finally:
            writer.close()
            await writer.wait_closed()
    assert meter.written == {7: 42}
    assert meter.coils == {}
