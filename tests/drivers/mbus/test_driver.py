"""The M-Bus driver and record mapping, run against the simulator over a pty and TCP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from drivers.mbus import telegram as tg
from drivers.mbus.address import SecondaryAddress, manufacturer_value
from drivers.mbus.driver import PROFILE_DIR, MBusDriver, parse_connection
from drivers.mbus.mapping import convert, load_profile, map_telegrams, parse_profile
from drivers.mbus.simulator import HeatMeter, Simulator, Slave
from edged.api import Driver
from edged.errors import ConfigError
from edged.model import QUANTITIES, ConnectionSpec, DeviceSpec, DeviceState, Source
from tests.drivers.mbus import CORPUS
from tests.fakes import FakeContext

FRAMES = CORPUS / "test-frames"
EDG = manufacturer_value("EDG")


def conn(settings: Mapping[str, Any]) -> ConnectionSpec:
    return ConnectionSpec("bus", "mbus", settings, Source("edged.toml", "connections.bus"))


def device(ident: str, address: int | str, interval: float = 0.2, **kw: Any) -> DeviceSpec:
    return DeviceSpec(
        ident,
        "mbus",
        "bus",
        address,
        poll_interval=interval,
        source=Source("edged.toml", f"devices[{ident}]"),
        **kw,
    )


def meter(primary: int, ident: int, telegrams: int = 1) -> tuple[Slave, HeatMeter]:
    return Slave.generated(primary, SecondaryAddress(f"{ident:08d}", EDG, 1, 4), telegrams)


async def run_until(
    driver: Driver,
    connection: ConnectionSpec,
    devices: list[DeviceSpec],
    ctx: FakeContext,
    done: Callable[[], bool],
    limit: float = 10.0,
) -> None:
    task = asyncio.create_task(driver.run(driver.configure(connection, devices), ctx))
    waiter = asyncio.create_task(ctx.wait_for(done, within=None))
    try:
        async with asyncio.timeout(limit):
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the driver died: show why
            raise AssertionError("driver run() returned")
    finally:
        for t in (task, waiter):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def serve(slaves: list[Slave], kind: str) -> tuple[Simulator, ConnectionSpec]:
    sim = Simulator(slaves, baudrate=38400)
    spec = await sim.serve(kind)
    common = {"baudrate": 38400, "parity": "N", "timeout": 0.05}
    if kind == "pty":
        return sim, conn({"transport": "serial", "device": spec.device, **common})
    return sim, conn({"transport": "tcp", "host": spec.host, "port": spec.port, **common})


@pytest.fixture(params=["pty", "tcp"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_run_emits_samples_in_canonical_units(kind: str) -> None:
    (s1, m1), (s2, _) = meter(1, 30000001, telegrams=3), meter(2, 30000002)
    sim, connection = await serve([s1, s2], kind)
    ctx = FakeContext()
    devices = [device("heat-1", 1), device("heat-2", "30000002FFFFFFFF")]
    try:
        await run_until(
            MBusDriver(wall=lambda: 1_700_000_000.0),
            connection,
            devices,
            ctx,
            lambda: all(len(ctx.arrivals[d.id]) >= 2 for d in devices),
        )
    finally:
        await sim.close()
    first = next(s for s in ctx.samples if s.device_id == "heat-1")
    v = first.values
    assert set(v) == {
        "energy_heat",
        "volume",
        "power_thermal",
        "volume_flow",
        "flow_temperature",
        "return_temperature",
    }
    assert all(name in QUANTITIES for name in v)
    # The meter sends Wh, litres, W, l/h and 0.01 °C; canonical units are Wh, m3, W, m3/h, °C.
    step = round((v["energy_heat"] - 1_000_000) / 1234)
    assert step >= 1 and v["energy_heat"] == 1_000_000 + 1234 * step
    assert v["volume"] == pytest.approx((250_000 + 17 * step) / 1000)
    assert v["volume_flow"] == pytest.approx((850 + step % 5) / 1000)
    assert v["flow_temperature"] == pytest.approx((6512 + step % 10) / 100)
    assert v["return_temperature"] == pytest.approx(40.21)
    assert first.timestamp == 1_700_000_000.0
    assert m1.step >= 2
    assert ctx.last_state("heat-1") is DeviceState.ONLINE
    assert ctx.last_state("heat-2") is DeviceState.ONLINE
    assert any(s.device_id == "heat-2" for s in ctx.samples)


async def test_dead_slave_goes_offline_without_holding_up_the_others(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="drivers.mbus.driver")
    (s1, _), (s2, _), (s3, _) = meter(1, 1), meter(2, 2), meter(3, 3)
    s2.dead = True
    sim, connection = await serve([s1, s2, s3], kind)
    ctx = FakeContext()
    interval = 0.3
    devices = [device(f"m{n}", n, interval) for n in (1, 2, 3)]
    try:
        await run_until(
            MBusDriver(),
            connection,
            devices,
            ctx,
            lambda: len(ctx.arrivals["m1"]) >= 5 and len(ctx.arrivals["m3"]) >= 5,
        )
    finally:
        await sim.close()
    assert ctx.last_state("m2") is DeviceState.OFFLINE
    assert ctx.last_state("m1") is DeviceState.ONLINE
    assert ctx.counts[("poll_error", "m2")] >= 2
    assert not any(s.device_id == "m2" for s in ctx.samples)
    # One warning when it stopped answering; the further failures only at debug level.
    failed = [r for r in caplog.records if "mbus poll failed" in r.getMessage()]
    assert len(failed) == ctx.counts[("poll_error", "m2")]
    assert [r.levelno for r in failed if r.levelno >= logging.WARNING] == [logging.WARNING]
    # The dead meter costs at most its own deadline: 3 attempts while still online, 1 after.
    master_deadline = parse_connection(connection)
    assert master_deadline.timeout == 0.05
    own_timeout = 3 * (0.05 + 0.01)
    for name in ("m1", "m3"):
        times = ctx.arrivals[name]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) <= interval + own_timeout + 0.25, (name, gaps)


async def test_rejected_frames_are_counted_per_device() -> None:
    (s1, _) = meter(1, 41)
    sim, connection = await serve([s1], "tcp")
    s1.faults.extend([None, "checksum", None, "garbage"])
    ctx = FakeContext()
    try:
        await run_until(
            MBusDriver(),
            connection,
            [device("m", 1, 0.05)],
            ctx,
            lambda: len(ctx.samples) >= 3,
        )
    finally:
        await sim.close()
    assert ctx.counts[("frame_rejected", "m")] == 2
    assert ctx.counts[("poll", "m")] >= 3
    assert ctx.last_state("m") is DeviceState.ONLINE


async def test_profile_picks_and_renames_records(tmp_path: Path) -> None:
    profile = tmp_path / "heat-due-date.toml"
    profile.write_text(
        '[profile]\nname = "heat-due-date"\nprotocol = "mbus"\nmanufacturer = "any"\n'
        'model = "heat meter"\ndescription = "heat meter, due-date energy"\n'
        '[[points]]\nquantity = "energy_heat"\nstorage = 1\n'
        '[[points]]\nquantity = "temperature"\ndescription = "Flow temperature"\n'
    )
    (s1, _) = meter(1, 51, telegrams=2)
    sim, connection = await serve([s1], "tcp")
    ctx = FakeContext()
    dev = device("m", 1, 0.1, profile=str(profile))
    try:
        await run_until(MBusDriver(), connection, [dev], ctx, lambda: len(ctx.samples) >= 1)
    finally:
        await sim.close()
    values = ctx.samples[0].values
    assert set(values) == {"energy_heat", "temperature"}
    # Storage 1 is 50 kWh below the current register.
    assert (values["energy_heat"] + 50_000 - 1_000_000) % 1234 == 0
    assert 65 < values["temperature"] < 66


# -- settings ----------------------------------------------------------------------------


def test_check_and_endpoint() -> None:
    d = MBusDriver()
    serial = conn({"device": "/dev/ttyUSB0"})
    assert d.configure(serial, []).endpoint == "serial:///dev/ttyUSB0"
    bus = parse_connection(serial)
    assert (bus.link.settings.baudrate, bus.link.settings.parity, bus.retries) == (2400, "E", 2)
    tcp = conn({"transport": "tcp", "host": "10.0.0.5", "port": 10001, "baudrate": 9600})
    assert d.configure(tcp, []).endpoint == "tcp://10.0.0.5:10001"
    d.configure(tcp, [device("a", 5), device("b", "12345678FFFFFFFF")])


@pytest.mark.parametrize(
    ("settings", "address", "key"),
    [
        ({"device": "/dev/x", "parity": "X"}, 1, "parity"),
        ({"transport": "serial"}, 1, "device"),
        ({"transport": "tcp", "host": "h"}, 1, "port"),
        ({"device": "/dev/x", "speed": 1}, 1, "speed"),
        ({"device": "/dev/x", "retries": -1}, 1, "retries"),
        ({"device": "/dev/x"}, 251, "address"),
        ({"device": "/dev/x"}, "12345678", "address"),
    ],
)
def test_bad_settings_name_the_key(settings: dict[str, Any], address: int | str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MBusDriver().configure(conn(settings), [device("a", address)])
    assert caught.value.key.endswith(key)


def test_two_devices_on_one_address_are_refused() -> None:
    with pytest.raises(ConfigError, match="already used"):
        MBusDriver().configure(conn({"device": "/dev/x"}), [device("a", 5), device("b", 5)])


# -- mapping -----------------------------------------------------------------------------


def test_units_convert_into_canonical_ones() -> None:
    assert convert(1.5, "kWh", "Wh") == 1500
    assert convert(12, "l", "m3") == pytest.approx(0.012)
    assert convert(3.6, "MJ", "Wh") == pytest.approx(1000)
    assert convert(2, "kW", "W") == 2000
    assert convert(5, "m3", "Wh") is None
    assert convert("text", "Wh", "Wh") is None


def test_default_mapping_keeps_current_instantaneous_plain_records() -> None:
    t = tg.decode_frame(tg.from_hex((FRAMES / "kamstrup_multical_601.hex").read_text()))
    values = map_telegrams([t])
    assert values == {
        "energy_heat": 37_351_000,
        "volume": pytest.approx(561.08),
        "on_time": 3_546_000,
        "flow_temperature": pytest.approx(101.69),
        "return_temperature": pytest.approx(46.16),
        "temperature_difference": pytest.approx(55.53),
        "power_thermal": 34_700,
        "volume_flow": pytest.approx(0.543),
    }


HEAD = {"name": "p", "protocol": "mbus", "manufacturer": "any", "model": "heat meter"}


def test_profile_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="canonical quantity"):
        parse_profile({"profile": HEAD, "points": [{"quantity": "heat"}]}, "p.toml")
    with pytest.raises(ConfigError) as caught:
        points = [{"quantity": "volume", "storage": "1"}]
        parse_profile({"profile": HEAD, "points": points}, "p.toml")
    assert caught.value.key == "points[0].storage"
    with pytest.raises(ConfigError, match="at least one"):
        parse_profile({"profile": HEAD}, "p.toml")


async def test_lost_converter_marks_meters_offline_and_reconnects() -> None:
    (s1, _) = meter(1, 61)
    sim, connection = await serve([s1], "tcp")
    port = connection.settings["port"]
    ctx = FakeContext()
    task = asyncio.create_task(
        MBusDriver().run(MBusDriver().configure(connection, [device("m", 1, 0.05)]), ctx)
    )
    try:
        async with asyncio.timeout(10):
            await ctx.wait_for(lambda: bool(ctx.samples), within=None)
            await sim.close()
            await ctx.wait_for(lambda: ctx.last_state("m") is DeviceState.OFFLINE, within=None)
            sim = Simulator([meter(1, 61)[0]], baudrate=38400)
            await sim.start_tcp(port=port)
            seen = len(ctx.samples)
            await ctx.wait_for(lambda: len(ctx.samples) > seen, within=None)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.close()
    assert ctx.last_state("m") is DeviceState.ONLINE
    assert [s for _, s, _ in ctx.states].count(DeviceState.OFFLINE) >= 1


def test_every_shipped_profile_loads_and_maps_a_heat_meter() -> None:
    shipped = sorted(PROFILE_DIR.glob("*.toml"))
    assert shipped
    t = tg.decode_frame(tg.from_hex((FRAMES / "kamstrup_multical_601.hex").read_text()))
    for path in shipped:
        profile = load_profile(path)
        values = map_telegrams([t], profile)
        assert set(values) == {p.quantity for p in profile.points}, path.name


def test_device_profile_is_found_by_shipped_name() -> None:
    dev = device("a", 5, profile="heat-meter-billing")
    MBusDriver().configure(conn({"device": "/dev/x"}), [dev])
    with pytest.raises(ConfigError) as caught:
        MBusDriver().configure(conn({"device": "/dev/x"}), [device("a", 5, profile="nope")])
    assert caught.value.key.endswith("profile")
