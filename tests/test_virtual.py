"""Virtual meters: config formulas and errors, the derive stage, stale handling, records."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

from edged import config as configmod
from edged.errors import ConfigError
from edged.live import LiveValues
from edged.model import DeviceState, Record, Sample
from edged.payload import decode, encode
from edged.pipeline import Pipeline
from edged.virtual import VirtualMeters, meters_from
from edged.windows import Windows

EXAMPLE = Path(__file__).parent.parent / "config" / "examples" / "zev-example.toml"

ZEV = """
[gateway]
id = "zev"
data_dir = "{data}"

[features]
virtual_meters = true

[connections.bus]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = 15020

[[devices]]
id = "grid"
connection = "bus"
address = 1
profile = "eastron_sdm630"
cloud_licence = "professional"

[[devices]]
id = "pv1"
connection = "bus"
address = 2
profile = "eastron_sdm630"
cloud_licence = "professional"

[[devices]]
id = "pv2"
connection = "bus"
address = 3
profile = "eastron_sdm630"
cloud_licence = "professional"

[[virtual_meters]]
id = "total"
cloud_licence = "professional"
per_phase = true
skew = 0.5
[virtual_meters.quantities]
energy_import = "grid.energy_import + pv1.energy_export + pv2.energy_export - grid.energy_export"
power_active = "grid.power_active - pv1.power_active - 0.5*pv2.power_active"
"""


def write(tmp: Path, text: str) -> Path:
    main = tmp / "edged.toml"
    main.write_text(textwrap.dedent(text).replace("{data}", str(tmp / "data")))
    return main


def load(tmp: Path, text: str = ZEV) -> configmod.Config:
    return configmod.load(write(tmp, text))


def test_formula_weights_per_source_and_quantity(tmp_path: Path) -> None:
    vm = load(tmp_path).virtual_meters[0]
    assert vm.compute is not None
    f = {f.quantity: f for f in vm.compute.formulas}
    assert [(t.point, t.quantity, t.weight) for t in f["energy_import"].terms] == [
        ("grid", "energy_import", 1.0),
        ("pv1", "energy_export", 1.0),
        ("pv2", "energy_export", 1.0),
        ("grid", "energy_export", -1.0),
    ]
    assert [t.weight for t in f["power_active"].terms] == [1.0, -1.0, -0.5]
    # per_phase: power_active_l1..l3 from the sources' phases.
    assert [(t.point, t.quantity) for t in f["power_active_l2"].terms] == [
        ("grid", "power_active_l2"),
        ("pv1", "power_active_l2"),
        ("pv2", "power_active_l2"),
    ]
    assert vm.sources == ("grid", "pv1", "pv2")
    assert vm.compute.skew == 0.5


def test_the_licence_sheet_example_still_loads_with_summed_sources() -> None:
    cfg = configmod.load(EXAMPLE)
    vm = cfg.virtual_meters[0]
    assert vm.compute is not None
    f = {f.quantity: f for f in vm.compute.formulas}
    assert [t.point for t in f["energy_import"].terms] == list(vm.sources)


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("pv2.energy_export -", "pv3.energy_export -", "quantities.energy_import", "'pv3'"),
        ("pv2.energy_export -", "pv2.energy_out -", "quantities.energy_import", "energy_out"),
        ("pv2.energy_export -", "pv2.power_active -", "quantities.energy_import", "counter"),
        ("pv2.energy_export -", "pv2.energy_export *", "quantities.energy_import", "'+' or '-'"),
        ("energy_import =", "energy_imp =", "quantities.energy_imp", "unknown quantity"),
    ],
)
def test_formula_errors_name_file_line_and_key(
    tmp_path: Path, old: str, new: str, key: str, words: str
) -> None:
    text = ZEV.replace(old, new, 1)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert err.value.key == f"virtual_meters[0].{key}"
    assert err.value.file == str(tmp_path / "edged.toml")
    assert err.value.line is not None
    line = (tmp_path / "edged.toml").read_text().splitlines()[err.value.line - 1]
    assert line.startswith(key.split(".")[-1])
    assert words in str(err.value)


def test_a_cycle_through_virtual_meters_is_an_error(tmp_path: Path) -> None:
    text = ZEV + textwrap.dedent(
        """
        [[virtual_meters]]
        id = "a"
        cloud_licence = "professional"
        [virtual_meters.quantities]
        energy_import = "b.energy_import + grid.energy_import"

        [[virtual_meters]]
        id = "b"
        cloud_licence = "professional"
        [virtual_meters.quantities]
        energy_import = "a.energy_import"
        """
    )
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert "cycle: a -> b -> a" in str(err.value)
    assert err.value.key == "virtual_meters[2].quantities.energy_import"
    assert err.value.line is not None


# --- the derive stage -----------------------------------------------------------------------


def sample(dev: str, ts: float, **values: float) -> Sample:
    return Sample(dev, ts, MappingProxyType(values))


class Rig:
    """A pipeline with windows and the derive stage, records collected."""

    def __init__(self, tmp: Path, interval: float = 10.0) -> None:
        cfg = load(tmp)
        self.states: dict[str, DeviceState] = {}
        self.live = LiveValues()
        self.virtual = VirtualMeters(self.live, self.states.get)
        polls = {d.id: d.poll_interval for d in cfg.devices}
        self.virtual.configure(
            meters_from([(v.id, v.compute) for v in cfg.virtual_meters], polls), {}
        )
        ids = [*(d.id for d in cfg.devices), "total"]
        self.windows = Windows({i: interval for i in ids}, clock=lambda: 0.0)
        self.records: list[Record] = []
        self.pipeline = Pipeline(self.windows, self.live, self.records.extend, self.virtual)

    def read(self, ts: float, grid: tuple[float, float], pv1: float, pv2: float) -> None:
        self.pipeline.add(sample("grid", ts, energy_import=grid[0], energy_export=grid[1]))
        self.pipeline.add(sample("pv1", ts, energy_export=pv1, power_active=-100.0))
        self.pipeline.add(sample("pv2", ts, energy_export=pv2, power_active=-40.0))

    def total(self) -> float:
        lv = self.live.get("total", "energy_import")
        assert lv is not None
        return lv.value


def test_counter_is_the_formula_over_increments_through_resets(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.read(0.0, (1000.0, 400.0), 50.0, 7.0)
    assert rig.total() == 0.0  # the virtual counter starts at zero
    rig.read(1.0, (1010.0, 420.0), 80.0, 17.0)
    assert rig.total() == 10 + 30 + 10 - 20
    # pv2's meter is replaced: it starts again at 0; that step books nothing.
    rig.read(2.0, (1011.0, 440.0), 100.0, 0.0)
    assert rig.total() == 30 + 1 + 20 + 0 - 20
    rig.read(3.0, (1012.0, 440.0), 101.0, 5.0)
    assert rig.total() == 31 + 1 + 1 + 5 - 0


def test_gauges_need_values_of_the_same_moment(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.pipeline.add(sample("grid", 0.0, energy_import=1.0, energy_export=0.0, power_active=500))
    rig.pipeline.add(sample("pv1", 0.2, energy_export=1.0, power_active=-100.0))
    rig.pipeline.add(sample("pv2", 0.4, energy_export=1.0, power_active=-40.0))
    lv = rig.live.get("total", "power_active")
    assert lv is not None and lv.value == 500 + 100 + 20
    # grid's power is now 1.4 s old, beyond the 0.5 s skew: no power in the derived sample.
    rig.pipeline.add(sample("pv1", 1.4, energy_export=2.0, power_active=-100.0))
    lv = rig.live.get("total", "power_active")
    assert lv is not None and lv.ts == 0.4


async def test_stale_source_freezes_counter_drops_gauges_flags_record_then_catches_up(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    for t in range(0, 10):
        rig.read(float(t), (1000.0 + t, 500.0), 100.0 + 2 * t, 10.0 + t)
    before = rig.total()
    assert before == 9 + 18 + 9
    # pv2 goes offline for 20 s; grid and pv1 keep counting.
    rig.states["pv2"] = DeviceState.OFFLINE
    for t in range(10, 30):
        rig.pipeline.add(sample("grid", t, energy_import=1000.0 + t, energy_export=500.0))
        rig.pipeline.add(sample("pv1", t, energy_export=100.0 + 2 * t, power_active=-100.0))
        assert rig.total() == before  # frozen, never a partial sum
        assert rig.live.get("total", "power_active") is None or (
            rig.live.get("total", "power_active").ts < 10  # type: ignore[union-attr]
        )
    status = {s.id: s for s in rig.virtual.status()}["total"]
    assert status.stale and "pv2" in status.reason
    # pv2 is back: its own counter shows what it produced meanwhile, booked at once.
    rig.states["pv2"] = DeviceState.ONLINE
    rig.pipeline.add(sample("pv2", 30.0, energy_export=40.0, power_active=-40.0))
    rig.read(30.0, (1030.0, 500.0), 160.0, 40.0)
    assert rig.total() == 30 + 60 + 30
    assert not {s.id: s for s in rig.virtual.status()}["total"].stale
    rig.pipeline.flush()
    total = {r.window_start: r for r in rig.records if r.device_id == "total"}
    assert not total[0.0].stale
    assert total[10.0].stale and total[20.0].stale
    assert not total[30.0].stale
    # The cloud reads the flag back (record format 2, extras f).
    assert decode(encode(total[10.0]))[0].stale is True
    assert decode(encode(total[0.0]))[0].stale is False and b'"f"' not in encode(total[0.0])
    # The stale windows carry the frozen counter, no gauge.
    assert set(total[10.0].values) == {"energy_import"}


def test_a_silent_source_makes_the_meter_stale(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.read(0.0, (1.0, 0.0), 1.0, 1.0)
    assert not rig.virtual.status()[0].stale
    # pv2 sends nothing for longer than three poll intervals plus the grace.
    for t in range(1, 8):
        rig.pipeline.add(sample("grid", t, energy_import=1.0 + t, energy_export=0.0))
        rig.pipeline.add(sample("pv1", t, energy_export=1.0 + t))
    assert rig.virtual.status()[0].stale
    assert "no sample from source pv2" in rig.virtual.status()[0].reason


def test_tallies_restored_keep_the_books_exact(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.read(0.0, (1000.0, 0.0), 0.0, 0.0)
    rig.read(1.0, (1005.0, 0.0), 3.0, 1.0)
    saved = dict(rig.virtual.take_dirty())
    # The daemon dies; meanwhile the meters count on; a new daemon restores the books.
    rig2 = Rig(tmp_path)
    rig2.virtual.configure(
        meters_from(
            [(v.id, v.compute) for v in load(tmp_path).virtual_meters],
            {"grid": 1.0, "pv1": 1.0, "pv2": 1.0},
        ),
        saved,
    )
    rig2.read(100.0, (1100.0, 0.0), 13.0, 11.0)
    assert rig2.total() == 100 + 13 + 11


def test_status_lists_a_virtual_meter_with_its_state(tmp_path: Path) -> None:
    from edged.control import format_status
    from edged.metrics import Metrics
    from edged.status import StatusService
    from edged.supervisor import Supervisor

    rig = Rig(tmp_path)
    svc = StatusService(Supervisor(Metrics(), lambda s: None), rig.live, rig.windows, Metrics())
    svc.clock = lambda: 10.0
    svc.virtual = rig.virtual
    rig.read(0.0, (1.0, 0.0), 1.0, 1.0)
    rig.states["pv1"] = DeviceState.OFFLINE
    rig.read(1.0, (2.0, 0.0), 2.0, 2.0)
    entry = svc.status(device="total")["devices"][0]
    assert entry["state"] == "stale"
    assert entry["last_error"] == "source pv1 is offline"
    assert entry["values"]["energy_import"]["value"] == 0.0  # frozen at the last fresh value
    text = format_status(svc.status(values=True))
    assert "total" in text and "stale" in text


NESTED = (
    ZEV
    + """
[[virtual_meters]]
id = "community"
cloud_licence = "professional"
[virtual_meters.quantities]
energy_import = "total.energy_import + pv1.energy_import"
"""
)


def test_a_virtual_meter_of_a_virtual_meter_books_its_signed_increments(tmp_path: Path) -> None:
    cfg = load(tmp_path, NESTED)
    live = LiveValues()
    virtual = VirtualMeters(live)
    polls = {d.id: d.poll_interval for d in cfg.devices}
    virtual.configure(meters_from([(v.id, v.compute) for v in cfg.virtual_meters], polls), {})
    ids = [*(d.id for d in cfg.devices), "total", "community"]
    records: list[Record] = []
    windows = Windows({i: 10.0 for i in ids}, clock=lambda: 0.0)
    pipeline = Pipeline(windows, live, records.extend, virtual)

    def read(ts: float, gi: float, ge: float, p1: float, p1i: float, p2: float) -> None:
        pipeline.add(sample("grid", ts, energy_import=gi, energy_export=ge))
        pipeline.add(sample("pv1", ts, energy_export=p1, energy_import=p1i))
        pipeline.add(sample("pv2", ts, energy_export=p2))

    read(0.0, 100.0, 0.0, 0.0, 5.0, 0.0)
    read(1.0, 110.0, 0.0, 0.0, 6.0, 0.0)
    # Export runs ahead of production for a moment: total goes down by 30 Wh.
    read(2.0, 110.0, 30.0, 0.0, 6.0, 0.0)
    read(3.0, 112.0, 40.0, 40.0, 6.0, 5.0)

    def value(point: str) -> float:
        lv = live.get(point, "energy_import")
        assert lv is not None
        return lv.value

    assert value("total") == 12 + 40 + 5 - 40
    # community = total + pv1 import: total's drop is booked as a drop, not as a reset.
    assert value("community") == value("total") + 1
