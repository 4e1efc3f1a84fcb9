"""The M-Bus master against the simulator over a real pseudo-terminal and a real TCP socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.mbus import frame as fr
from drivers.mbus.address import (
    WILDCARD,
    SecondaryAddress,
    manufacturer_code,
    manufacturer_value,
    parse_address,
)
from drivers.mbus.master import GarbledReply, LineNoise, Master, NoReply, Probe
from drivers.mbus.simulator import Simulator, Slave, generated_slaves
from drivers.mbus.transport import LineSettings, Link, LinkSpec, open_serial
from edged.errors import DecodeError, DeviceTimeout

EDG = manufacturer_value("EDG")
HEAT = 0x04


def heat(ident: int, primary: int, telegrams: int = 1) -> Slave:
    return Slave.generated(primary, SecondaryAddress(f"{ident:08d}", EDG, 1, HEAT), telegrams)[0]


@dataclass
class Bus:
    sim: Simulator
    link: Link
    master: Master


@pytest.fixture(params=["pty", "tcp"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def open_bus(
    slaves: list[Slave],
    kind: str,
    baud: int = 38400,
    answer_within: float = 0.04,
    idle: float = 0.03,
) -> Bus:
    sim = Simulator(slaves, baudrate=baud)
    spec = await sim.serve(kind)
    link = await spec.open()
    return Bus(sim, link, Master(link, timeout=answer_within, idle=idle))


@pytest.fixture
async def small_bus(kind: str) -> AsyncIterator[Bus]:
    bus = await open_bus(
        [heat(12345670, 1, telegrams=3), heat(12345671, 2), heat(55500001, 3)], kind
    )
    yield bus
    await bus.link.close()
    await bus.sim.close()


# -- addresses ---------------------------------------------------------------------------


def test_secondary_address_round_trips_and_encodes_like_a_select() -> None:
    a = SecondaryAddress.parse("12345678A5110104")
    assert str(a) == "12345678A5110104"
    assert a.to_bytes() == bytes.fromhex("78563412 11A5 01 04")
    assert SecondaryAddress.from_header(a.to_bytes()) == a
    assert parse_address("7") == 7 and parse_address(250) == 250
    with pytest.raises(ValueError):
        parse_address(251)
    with pytest.raises(ValueError):
        parse_address("1234567X00000000")


def test_wildcards_match_nibbles_of_the_id_and_whole_bytes_elsewhere() -> None:
    meter = SecondaryAddress("12345678", 0x1234, 0x01, 0x04)
    assert WILDCARD.matches(meter)
    assert SecondaryAddress("1234FFFF").matches(meter)
    assert SecondaryAddress("F2345678", 0x1234, 0xFF, 0x04).matches(meter)
    assert not SecondaryAddress("1235FFFF").matches(meter)
    assert not SecondaryAddress("FFFFFFFF", 0x12F4).matches(meter)
    assert not SecondaryAddress("12345678", 0x1234, 0x01, 0x07).matches(meter)
    assert manufacturer_code(manufacturer_value("KAM")) == "KAM"


# -- reads -------------------------------------------------------------------------------


async def test_multi_telegram_meter_returns_all_telegrams_in_order(small_bus: Bus) -> None:
    reading = await small_bus.master.read(1)
    telegrams = reading.telegrams
    assert [t.more_follows for t in telegrams] == [True, True, False]
    quantities = [[(r.quantity, r.storage) for r in t.records] for t in telegrams]
    assert quantities == [
        [("energy_heat", 0), ("volume", 0), ("power_thermal", 0)],
        [("volume_flow", 0), ("flow_temperature", 0)],
        [("return_temperature", 0), ("energy_heat", 1)],
    ]
    # The next read starts again at the first telegram, with fresh values.
    again = await small_bus.master.read(1)
    assert [len(t.records) for t in again.telegrams] == [3, 2, 2]
    before, after = telegrams[0].records[0].value, again.telegrams[0].records[0].value
    assert isinstance(before, int) and isinstance(after, int) and after > before


async def test_lost_answer_is_retried_with_the_same_fcb_so_no_telegram_is_skipped(
    small_bus: Bus,
) -> None:
    await small_bus.master.read(1)
    slave = small_bus.sim.bus.slave(1)
    # The slave takes the second request but its answer is lost on the line: the master must
    # repeat with the same FCB and get that same telegram again, not the third one.
    slave.faults.extend([None, "silence"])
    reading = await small_bus.master.read(1)
    assert [len(t.records) for t in reading.telegrams] == [3, 2, 2]
    assert [t.more_follows for t in reading.telegrams] == [True, True, False]


async def test_bad_checksum_is_rejected_counted_and_retried(small_bus: Bus) -> None:
    await small_bus.master.read(2)
    small_bus.sim.bus.slave(2).faults.append("checksum")
    before = small_bus.master.rejected
    reading = await small_bus.master.read(2)
    assert len(reading.telegrams) == 1
    assert small_bus.master.rejected == before + 1


async def test_garbage_without_retries_is_a_garbled_reply(small_bus: Bus) -> None:
    await small_bus.master.read(2)
    small_bus.sim.bus.slave(2).faults.append("garbage")
    with pytest.raises(GarbledReply):
        await small_bus.master.read(2, retries=0)


async def test_dead_slave_raises_no_reply_after_its_retries(small_bus: Bus) -> None:
    small_bus.sim.bus.slave(3).dead = True
    requests = small_bus.sim.bus.requests
    with pytest.raises(NoReply):
        await small_bus.master.read(3)
    assert small_bus.sim.bus.requests - requests == 3  # SND_NKE tried 1 + 2 retries


async def test_read_by_secondary_address_selects_then_uses_253(small_bus: Bus) -> None:
    reading = await small_bus.master.read(SecondaryAddress.parse("55500001FFFFFFFF"))
    assert reading.telegrams[0].header is not None
    assert reading.telegrams[0].header.id == 55500001
    assert reading.frames[0].address == 3  # the slave still signs with its primary address


async def test_select_probe_tells_nothing_single_and_collision(small_bus: Bus) -> None:
    m = small_bus.master
    assert await m.probe(SecondaryAddress.parse("12345670FFFFFFFF")) is Probe.SINGLE
    assert await m.probe(SecondaryAddress("1234567F")) is Probe.COLLISION
    assert await m.probe(SecondaryAddress("99999999")) is Probe.NOTHING
    assert await m.probe(SecondaryAddress("55500001", manufacturer_value("KAM"))) is Probe.NOTHING


async def test_reading_a_wildcard_that_matches_several_meters_says_so(small_bus: Bus) -> None:
    with pytest.raises(GarbledReply, match="matches several meters"):
        await small_bus.master.read(SecondaryAddress("1234567F"), retries=0)


# -- scans -------------------------------------------------------------------------------


async def test_secondary_scan_finds_every_slave_of_a_crowded_bus(kind: str) -> None:
    idents = [12345600 + n for n in range(20)] + [12945600, 12345699, 70000001]
    slaves = [heat(ident, n + 1) for n, ident in enumerate(idents)]
    bus = await open_bus(slaves, kind)
    try:
        found = await bus.master.scan_secondary()
    finally:
        await bus.link.close()
        await bus.sim.close()
    assert sorted(str(a) for a in found) == sorted(str(s.secondary) for s in slaves)


async def test_secondary_scan_below_a_given_mask(small_bus: Bus) -> None:
    found = await small_bus.master.scan_secondary(SecondaryAddress("1234567F"))
    assert sorted(a.id for a in found) == ["12345670", "12345671"]


async def test_primary_scan_finds_slaves_and_reports_shared_addresses(kind: str) -> None:
    slaves = generated_slaves(4)
    slaves[3].primary = 2  # two meters on primary address 2: their answers collide
    bus = await open_bus(slaves, kind)
    try:
        found = await bus.master.scan_primary(range(0, 8))
    finally:
        await bus.link.close()
        await bus.sim.close()
    assert found == [1, 2, 3]


# -- deadlines ---------------------------------------------------------------------------


async def test_noise_on_the_line_ends_in_a_timeout_within_the_deadline(kind: str) -> None:
    bus = await open_bus(generated_slaves(2), kind, baud=9600, answer_within=0.1, idle=0.05)
    try:
        await bus.master.read(1)
        bus.sim.bus.noise = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        # The outer guard turns a hang into a failure; the master must end well before it.
        async with asyncio.timeout(20):
            with pytest.raises(DeviceTimeout) as caught:
                await bus.master.read(1, retries=1)
        elapsed = loop.time() - started
    finally:
        await bus.link.close()
        await bus.sim.close()
    assert isinstance(caught.value, LineNoise)
    limit = 2 * bus.master.deadline(5)
    assert elapsed <= limit * 1.5 + 0.3, (elapsed, limit)


async def test_serial_link_passes_8e1_to_pyserial() -> None:
    settings = LineSettings(2400, "E")
    assert settings.pyserial_kwargs() | {} == {
        "baudrate": 2400,
        "bytesize": 8,
        "parity": "E",
        "stopbits": 1,
        "xonxoff": False,
        "rtscts": False,
        "dsrdtr": False,
    }
    # pyserial's socket:// URL runs the serial code path against the simulator's TCP port.
    sim = Simulator(generated_slaves(1), baudrate=2400, pace=False)
    port = await sim.start_tcp()
    link = await open_serial(f"socket://127.0.0.1:{port}", settings)
    try:
        serial = link.transport.get_extra_info("serial")
        assert (serial.baudrate, serial.parity, serial.bytesize, serial.stopbits) == (
            2400,
            "E",
            8,
            1,
        )
        reading = await Master(link).read(1)
        assert reading.frames[0].control == fr.RSP_UD
    finally:
        await link.close()
        await sim.close()


async def test_pty_link_is_8n1_and_reads() -> None:
    sim = Simulator(generated_slaves(1), baudrate=9600)
    spec = await sim.serve("pty")
    assert isinstance(spec, LinkSpec) and spec.settings.parity == "N"
    link = await spec.open()
    try:
        assert link.transport.get_extra_info("serial").parity == "N"
        assert len((await Master(link).read(1)).telegrams) == 1
    finally:
        await link.close()
        await sim.close()


fault_lists = st.lists(st.sampled_from([None, "garbage", "checksum", "silence"]), max_size=8)


@settings(max_examples=25, deadline=None)
@given(faults=fault_lists)
def test_faulty_answers_never_yield_missing_or_reordered_telegrams(
    faults: list[str | None],
) -> None:
    async def scenario() -> None:
        slave = heat(24680001, 1, telegrams=3)
        sim = Simulator([slave], pace=False)
        spec = await sim.serve("tcp")
        link = await spec.open()
        try:
            master = Master(link, timeout=0.02, idle=0.02)
            first = await master.read(1)
            slave.faults.extend(faults)
            try:
                reading = await master.read(1)
            except (DeviceTimeout, DecodeError):
                return
            shape = [(len(t.records), t.more_follows) for t in reading.telegrams]
            assert shape == [(len(t.records), t.more_follows) for t in first.telegrams]
            access = {t.header.access_number for t in reading.telegrams if t.header}
            assert len(access) == 1  # all three telegrams come from one and the same read
        finally:
            await link.close()
            await sim.close()

    asyncio.run(scenario())
