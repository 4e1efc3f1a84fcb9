"""The driver against the simulator over real TCP sockets and an RTU pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from drivers.modbus import profile
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.simulator import Meter, Simulator
from edged.model import ConnectionSpec, DeviceSpec, DeviceState
from tests.drivers.modbus.helpers import conn, dev
from tests.fakes import FakeContext

# One value per type, each exactly representable in it and in a float.
VALUES = {
    "u16": 4660.0,
    "i16": -1234.0,
    "u32": 305419896.0,
    "i32": -123456789.0,
    "u64": float(2**40 + 12345),
    "i64": -float(2**40 + 5),
    "f32": 1234.5,
    "f64": -9876.54321,
}
QUANTITY_POOL = [
    "voltage_l1",
    "voltage_l2",
    "voltage_l3",
    "current_l1",
    "current_l2",
    "current_l3",
    "power_active_l1",
    "power_active_l2",
    "power_active_l3",
    "power_reactive_l1",
    "power_reactive_l2",
    "power_reactive_l3",
    "power_apparent_l1",
    "power_apparent_l2",
    "power_apparent_l3",
    "power_factor_l1",
    "power_factor_l2",
    "power_factor_l3",
    "voltage_l1_l2",
    "voltage_l2_l3",
    "voltage_l3_l1",
    "current_n",
    "power_active",
    "power_reactive",
    "power_apparent",
    "power_factor",
    "frequency",
    "voltage",
    "current",
    "temperature",
    "pressure",
    "flow_temperature",
]


@contextlib.asynccontextmanager
async def running(
    connection: ConnectionSpec, devices: Sequence[DeviceSpec], ctx: FakeContext
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(
        ModbusDriver().run(ModbusDriver().configure(connection, devices), ctx)
    )
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _types_profile(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    lines = [
        '[profile]\nname = "types"\nprotocol = "modbus"\nmanufacturer = "test"\n'
        'model = "all types"\n'
    ]
    expected: dict[str, float] = {}
    reg = {"holding": 0, "input": 100}
    n = 0
    for dtype, value in VALUES.items():
        for word in ("big", "little"):
            for byte in ("big", "little"):
                q = QUANTITY_POOL[n]
                table = "holding" if n % 2 else "input"
                lines.append(
                    f'[[points]]\nquantity = "{q}"\ntable = "{table}"\n'
                    f'register = {reg[table]}\ntype = "{dtype}"\n'
                    f'word_order = "{word}"\nbyte_order = "{byte}"\n'
                )
                reg[table] += 4
                expected[q] = value
                n += 1
    # Scale, offset and unit conversion on the way: 12345 * 0.01 kWh + 1 kWh -> 124450 Wh.
    lines.append(
        '[[points]]\nquantity = "energy_import"\nregister = 300\ntype = "u32"\n'
        'scale = 0.01\noffset = 1.0\nunit = "kWh"\n'
    )
    expected["energy_import"] = 124450.0
    path = tmp_path / "types.toml"
    path.write_text("\n".join(lines))
    return path, expected


async def test_every_type_and_order_decodes_to_the_right_value(tmp_path: Path) -> None:
    path, expected = _types_profile(tmp_path)
    prof = profile.load(path)
    meter = Meter(prof, unit=7)
    meter.fixed.update(expected)
    ctx = FakeContext()
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        async with running(
            conn(host="127.0.0.1", port=port),
            [dev("t1", str(path), address=7, poll_interval=0.1)],
            ctx,
        ):
            await ctx.wait_for(lambda: len(ctx.samples) >= 1)
    sample = ctx.samples[0]
    assert set(sample.values) == set(expected)
    for q, v in expected.items():
        assert sample.values[q] == pytest.approx(v, rel=1e-12), q
    assert ctx.states[0] == ("t1", DeviceState.ONLINE, None)
    assert ctx.counts[("poll", "t1")] >= 1
    assert any(e == "poll" and d == "t1" and s >= 0 for e, s, d in ctx.observed)


SCATTERED = """
[profile]
name = "scattered"
protocol = "modbus"
manufacturer = "test"
model = "scattered"

[modbus]
max_registers = 15
max_gap = 10

[[points]]
quantity = "voltage_l1"
register = 0
type = "f32"
[[points]]
quantity = "voltage_l2"
register = 5
type = "f32"
[[points]]
quantity = "voltage_l3"
register = 100
type = "u16"
[[points]]
quantity = "current_l1"
register = 110
type = "u16"
[[points]]
quantity = "current_l2"
register = 120
type = "u16"
[[points]]
quantity = "frequency"
register = 3000
type = "f32"
[[points]]
quantity = "energy_import"
table = "input"
register = 7
type = "u32"
[[points]]
quantity = "power_active"
table = "input"
register = 11
type = "i32"
"""


async def test_scattered_registers_are_read_in_the_minimum_number_of_requests(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scattered.toml"
    path.write_text(SCATTERED)
    meter = Meter(profile.load(path), record=True)
    ctx = FakeContext()
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        async with running(
            conn(host="127.0.0.1", port=port), [dev("s1", str(path), poll_interval=0.05)], ctx
        ):
            await ctx.wait_for(lambda: len(ctx.samples) >= 3)
    polls = len(ctx.samples)
    # holding 0..6, holding 100..110, holding 120, holding 3000..3001, input 7..12
    per_poll = [
        ("holding", 0, 7),
        ("holding", 100, 11),
        ("holding", 120, 1),
        ("holding", 3000, 2),
        ("input", 7, 6),
    ]
    assert meter.requests[: len(per_poll)] == per_poll
    assert meter.request_count in (polls * len(per_poll), (polls + 1) * len(per_poll))
    assert len(ctx.samples[-1].values) == 8


async def test_exception_response_disables_only_its_point(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prof = profile.load(profile.shipped()["eastron_sdm630"])
    meter = Meter(prof, record=True)
    meter.faults.refuse("input", [0x46, 0x47])  # frequency
    ctx = FakeContext()
    caplog.set_level(logging.WARNING, logger="drivers.modbus")
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        async with running(
            conn(host="127.0.0.1", port=port),
            [dev("m1", "eastron_sdm630", poll_interval=0.05)],
            ctx,
        ):
            await ctx.wait_for(lambda: len(ctx.samples) >= 4)
            before = meter.request_count
            await ctx.wait_for(lambda: len(ctx.samples) >= 6)
            per_poll_after = (meter.request_count - before) / 2
    every = {p.quantity for p in prof.points}
    for s in ctx.samples:
        assert set(s.values) == every - {"frequency"}
    assert all(st == DeviceState.ONLINE for _, st, _ in ctx.states)
    warnings = [r.getMessage() for r in caplog.records if "point disabled" in r.getMessage()]
    assert len(warnings) == 1
    assert "device=m1 quantity=frequency" in warnings[0]
    assert "register=70" in warnings[0]
    # The search is not repeated: later polls read the rest in as few requests as the
    # profile's limits allow without touching the refused registers.
    assert per_poll_after == 5
    last_poll = meter.requests[-5:]
    assert sorted(last_poll) == [("input", 0, 36), ("input", 52, 12), ("input", 72, 8),
                                 ("input", 200, 6), ("input", 224, 2)]  # fmt: skip


async def test_silent_meter_does_not_delay_another_connection() -> None:
    prof = profile.load(profile.shipped()["bench8"])
    dead, alive = Meter(prof, seed=1), Meter(prof, seed=2)
    dead.faults.silent = True
    ctx = FakeContext()
    async with Simulator() as sim:
        p_dead = await sim.add_tcp([dead])
        p_alive = await sim.add_tcp([alive])
        c_dead = conn("dead", host="127.0.0.1", port=p_dead, timeout=1.0)
        c_alive = conn("alive", host="127.0.0.1", port=p_alive, timeout=0.5)
        async with (
            running(c_dead, [dev("d", "bench8", poll_interval=0.1, connection="dead")], ctx),
            running(c_alive, [dev("a", "bench8", poll_interval=0.1, connection="alive")], ctx),
        ):
            await asyncio.sleep(2.5)
    times = ctx.arrivals["a"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 15  # ~24 expected at 10 Hz
    # Blocked behind the dead meter, gaps would be >= its 1 s timeout; bounds are generous.
    assert max(gaps) < 0.8
    assert sorted(gaps)[len(gaps) // 2] < 0.2
    assert ctx.samples_of("d") == []
    assert ctx.last_state("d") == DeviceState.OFFLINE
    assert ctx.counts[("poll_error", "d")] >= 1


async def test_dead_unit_on_a_shared_connection_does_not_stop_the_others() -> None:
    prof = profile.load(profile.shipped()["bench8"])
    good, bad = Meter(prof, unit=1), Meter(prof, unit=2)
    bad.faults.silent = True
    ctx = FakeContext()
    async with Simulator() as sim:
        port = await sim.add_tcp([good, bad])
        async with running(
            conn(host="127.0.0.1", port=port, timeout=0.2),
            [
                dev("g", "bench8", 1, poll_interval=0.1),
                dev("b", "bench8", 2, poll_interval=0.1, index=1),
            ],
            ctx,
        ):
            await ctx.wait_for(lambda: len(ctx.samples_of("g")) >= 10, within=5)
            bad.faults.silent = False
            await ctx.wait_for(lambda: len(ctx.samples_of("b")) >= 1, within=10)
    assert [st for d, st, _ in ctx.states if d == "b"] == [DeviceState.OFFLINE, DeviceState.ONLINE]
    assert ctx.last_state("g") == DeviceState.ONLINE


async def test_dropped_connection_goes_offline_and_reconnects() -> None:
    meter = Meter(profile.load(profile.shipped()["bench8"]))
    ctx = FakeContext()
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        async with running(
            conn(host="127.0.0.1", port=port, timeout=0.3),
            [dev("m", "bench8", poll_interval=0.05)],
            ctx,
        ):
            await ctx.wait_for(lambda: len(ctx.samples) >= 2)
            meter.faults.drop_connection = True
            await ctx.wait_for(lambda: ctx.last_state("m") == DeviceState.OFFLINE)
            n = len(ctx.samples)
            meter.faults.drop_connection = False
            await ctx.wait_for(lambda: len(ctx.samples) > n + 2, within=10)
    assert [st for _, st, _ in ctx.states] == [
        DeviceState.ONLINE,
        DeviceState.OFFLINE,
        DeviceState.ONLINE,
    ]


async def test_unreachable_endpoint_is_offline_and_retried() -> None:
    ctx = FakeContext()
    async with Simulator() as sim:
        port = await sim.add_tcp([Meter(profile.load(profile.shipped()["bench8"]))])
    # The port is closed now: connecting fails, the device is reported offline.
    async with running(
        conn(host="127.0.0.1", port=port, timeout=0.2),
        [dev("m", "bench8", poll_interval=0.05)],
        ctx,
    ):
        await ctx.wait_for(lambda: ctx.last_state("m") == DeviceState.OFFLINE)
    assert ctx.samples == []


async def test_energy_grows_with_power_over_time() -> None:
    meter = Meter(profile.load(profile.shipped()["bench8"]))
    ctx = FakeContext()
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        async with running(
            conn(host="127.0.0.1", port=port), [dev("m", "bench8", poll_interval=0.1)], ctx
        ):
            await ctx.wait_for(lambda: len(ctx.samples) >= 2)
            first = ctx.samples[-1]
            await asyncio.sleep(1.0)
            last = ctx.samples[-1]
    dt = last.timestamp - first.timestamp
    growth = last.values["energy_import"] - first.values["energy_import"]
    mean_power = (first.values["power_active"] + last.values["power_active"]) / 2
    # f32 of ~1.5 MWh resolves ~0.1 Wh steps; compare with generous slack.
    assert growth == pytest.approx(mean_power * dt / 3600, abs=1.0)
    assert growth >= 0


async def test_rtu_over_a_pseudo_terminal() -> None:
    prof = profile.load(profile.shipped()["carlo_gavazzi_em24"])
    m3, m9 = Meter(prof, unit=3, record=True), Meter(prof, unit=9)
    m9.fixed["power_active"] = 4321.5
    ctx = FakeContext()
    async with Simulator() as sim:
        path = await sim.add_rtu_pty([m3, m9])
        # A pty keeps no even parity on this kernel: 8N1.
        c = conn(transport="rtu", device=path, baudrate=19200, parity="N", timeout=0.5)
        async with running(
            c,
            [
                dev("r3", "carlo_gavazzi_em24", 3, poll_interval=0.1),
                dev("r9", "carlo_gavazzi_em24", 9, poll_interval=0.1, index=1),
            ],
            ctx,
        ):
            await ctx.wait_for(
                lambda: len(ctx.samples_of("r3")) >= 2 and len(ctx.samples_of("r9")) >= 2
            )
    assert ctx.samples_of("r9")[-1].values["power_active"] == pytest.approx(4321.5)
    assert len(ctx.samples_of("r3")[-1].values) == len(prof.points)
    assert m3.requests[0] == ("input", 0, 56)


async def test_serial_port_that_cannot_be_opened_is_offline(tmp_path: Path) -> None:
    ctx = FakeContext()
    c = conn(transport="rtu", device=str(tmp_path / "ttyNOPE"), parity="N", timeout=0.2)
    async with running(c, [dev("r", "bench8", 1, poll_interval=0.1)], ctx):
        await ctx.wait_for(lambda: ctx.last_state("r") == DeviceState.OFFLINE)
    assert ctx.samples == []
    assert "cannot connect" in (ctx.states[-1][2] or "")


async def test_refused_unmapped_register_splits_the_request_and_disables_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "scattered.toml"
    path.write_text(SCATTERED)
    meter = Meter(profile.load(path), record=True)
    meter.faults.refuse("holding", [3])  # inside the gap between the first two points
    ctx = FakeContext()
    caplog.set_level(logging.WARNING, logger="drivers.modbus")
    async with Simulator() as sim:
        port = await sim.add_tcp([meter])
        async with running(
            conn(host="127.0.0.1", port=port), [dev("s1", str(path), poll_interval=0.05)], ctx
        ):
            await ctx.wait_for(lambda: len(ctx.samples) >= 3)
    assert all(len(s.values) == 8 for s in ctx.samples)
    assert not [r for r in caplog.records if "point disabled" in r.getMessage()]
    last = meter.requests[-6:]
    assert ("holding", 0, 2) in last and ("holding", 5, 2) in last
    assert ("holding", 0, 7) not in last
