"""Load profiles: 15-minute rows from counter readings, gaps, restarts, kill -9, export CSV."""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest

from edged.cli import main as edged_main
from edged.energystore import EnergyStore, Row, read_rows
from edged.export import COLUMNS
from edged.loadprofile import LoadProfile
from edged.model import Sample

DAY = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
STEP = 10.0


def counter(i: int, seed: int = 1) -> float:
    """A meter's register at reading i: whole Wh, rising by a pseudo-random amount."""
    rnd = random.Random(seed)
    return float(sum(rnd.randint(0, 40) for _ in range(i)))


class Day:
    """Readings every 10 s of two points (grid import, pv export with power)."""

    def __init__(self, store: EnergyStore) -> None:
        self.store = store
        self.profile = LoadProfile()
        self.rnd = random.Random(7)
        self.grid = 5_000_000.0
        self.pv = 12_345.0
        self.seen: list[tuple[float, float, float]] = []

    def read(self, ts: float) -> None:
        self.grid += self.rnd.randint(0, 30)
        self.pv += self.rnd.randint(0, 15)
        power = float(self.rnd.randint(100, 9000))
        self.seen.append((ts, self.grid, self.pv))
        self.profile.add(
            Sample(
                "grid", ts, MappingProxyType({"energy_import": self.grid, "power_active": power})
            )
        )
        self.profile.add(Sample("pv1", ts, MappingProxyType({"energy_export": self.pv})))

    def save(self) -> None:
        rows, readings = self.profile.take_dirty()
        self.store.save((), rows, readings)

    def last_before(self, ts: float) -> tuple[float, float]:
        last = [(g, p) for t, g, p in self.seen if t < ts]
        return last[-1]


def run_day(store: EnergyStore, outage: tuple[float, float] | None = None) -> Day:
    day = Day(store)
    ts = DAY - 60
    n = 0
    while ts < DAY + 86400 + 60:
        if outage is None or not (outage[0] <= ts < outage[1]):
            day.read(ts)
        else:
            # The meter keeps counting while nobody reads it.
            day.grid += day.rnd.randint(0, 30)
            day.pv += day.rnd.randint(0, 15)
        n += 1
        if n % 50 == 0:
            day.save()
        ts += STEP
    day.save()
    return day


def rows_of(rows: list[Row], point: str) -> list[Row]:
    return [r for r in rows if r.point == point]


def test_a_simulated_day_has_96_intervals_that_add_up_to_the_counter(tmp_path: Path) -> None:
    store = EnergyStore(tmp_path / "energy.sqlite")
    day = run_day(store)
    rows = read_rows(store.path, DAY, DAY + 86400)
    for point, col in (("grid", 0), ("pv1", 1)):
        mine = rows_of(rows, point)
        assert len(mine) == 96
        assert [r.start for r in mine] == [DAY + 900 * k for k in range(96)]
        assert {r.status for r in mine} == {"ok"}
        diff = day.last_before(DAY + 86400)[col] - day.last_before(DAY)[col]
        assert sum(r.energy for r in mine) == diff
    # Peak demand: the highest power sample of the interval.
    first = rows_of(rows, "grid")[0]
    powers = [r.peak for r in rows_of(rows, "grid")]
    assert all(p is not None and 100 <= p <= 9000 for p in powers)
    assert first.peak is not None
    assert rows_of(rows, "pv1")[0].peak is None


def test_a_40_minute_outage_gives_incomplete_intervals_and_loses_nothing(tmp_path: Path) -> None:
    store = EnergyStore(tmp_path / "energy.sqlite")
    down, up = DAY + 10 * 3600 + 450, DAY + 10 * 3600 + 450 + 2400  # 10:07:30 - 10:47:30
    day = run_day(store, (down, up))
    rows = read_rows(store.path, DAY, DAY + 86400)
    grid = rows_of(rows, "grid")
    by_start = {r.start: r for r in grid}
    assert by_start[DAY + 36000].status == "incomplete"  # 10:00, left at 10:07:20
    assert DAY + 36000 + 900 not in by_start  # 10:15 and 10:30 were not seen at all:
    assert DAY + 36000 + 1800 not in by_start  # no made-up rows for them
    gap = [r for r in grid if r.status == "gap"]
    assert len(gap) == 1
    assert gap[0].start == down - STEP and gap[0].end == up  # the readings around it
    assert gap[0].energy > 0
    assert by_start[DAY + 36000 + 2700].status == "incomplete"  # 10:45, first read 10:47:30
    assert by_start[DAY + 36000 + 3600].status == "ok"  # 11:00
    assert len([r for r in grid if r.status == "ok"]) == 96 - 4
    diff = day.last_before(DAY + 86400)[0] - day.last_before(DAY)[0]
    assert sum(r.energy for r in grid) == diff


def test_a_restart_resumes_the_open_interval_exactly(tmp_path: Path) -> None:
    path = tmp_path / "energy.sqlite"
    store = EnergyStore(path)
    lp = LoadProfile()
    values = [counter(i) for i in range(200)]
    for i in range(0, 57):
        lp.add(Sample("m", DAY + i * STEP, MappingProxyType({"energy_import": values[i]})))
        if i % 10 == 0:
            rows, readings = lp.take_dirty()
            store.save((), rows, readings)
    # Readings 51..56 were never written: the daemon died. A new one restores from the store.
    store.close()
    store = EnergyStore(path)
    readings, open_rows = store.open_state()
    lp = LoadProfile(readings=readings, open_rows=open_rows)
    for i in range(60, 200):
        lp.add(Sample("m", DAY + i * STEP, MappingProxyType({"energy_import": values[i]})))
    rows, readings = lp.take_dirty()
    store.save((), rows, readings)
    all_rows = read_rows(path, DAY - 900, DAY + 86400)
    assert sum(r.energy for r in all_rows) == values[199] - values[0]
    # The 90 s the daemon was down lie within the gap tolerance: the interval is still whole.
    assert [r.status for r in all_rows][1] == "ok"


CHILD = """
import sys, time
from types import MappingProxyType
from edged.energystore import EnergyStore
from edged.loadprofile import LoadProfile
from edged.model import Sample
from tests.test_loadprofile import DAY, STEP, counter
store = EnergyStore(__import__("pathlib").Path(sys.argv[1]))
lp = LoadProfile()
for i in range(100000):
    value = counter(i % 400) + (i // 400) * 1000000
    lp.add(Sample("m", DAY + i * STEP, MappingProxyType({"energy_import": value})))
    rows, readings = lp.take_dirty()
    store.save((), rows, readings)
"""


def test_kill_9_mid_interval_keeps_the_books_exact(tmp_path: Path) -> None:
    path = tmp_path / "energy.sqlite"
    root = Path(__file__).parent.parent
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=root)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.3)
            if path.exists():
                db = sqlite3.connect(path)
                try:
                    n = db.execute("SELECT COUNT(*) FROM profile").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
                db.close()
                if n >= 3:
                    break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    store = EnergyStore(path)
    readings, open_rows = store.open_state()
    reading = readings[("m", "energy_import")]
    rows = read_rows(path, 0, 1e12)
    # What the store holds is consistent: its rows add up to the reading it stored.
    assert sum(r.energy for r in rows) == reading.value - counter(0)
    assert len(open_rows) == 1
    # A restarted daemon books on from there, to the last Wh.
    i0 = round((reading.ts - DAY) / STEP)
    lp = LoadProfile(readings=readings, open_rows=open_rows)
    last = 0.0
    for i in range(i0 + 3, i0 + 300):
        last = counter(i % 400) + (i // 400) * 1000000
        lp.add(Sample("m", DAY + i * STEP, MappingProxyType({"energy_import": last})))
    r2, rd2 = lp.take_dirty()
    store.save((), r2, rd2)
    rows = read_rows(path, 0, 1e12)
    # Resets of the child's counter (every 400 readings it jumps up, never down) aside,
    # the sum is the counter's own difference.
    assert sum(r.energy for r in rows) == last - counter(0)


def test_retention_and_size_cap_drop_the_oldest_and_count(tmp_path: Path) -> None:
    store = EnergyStore(tmp_path / "energy.sqlite")
    rows = [
        Row("m", "energy_import", DAY + 900 * k, DAY + 900 * (k + 1), 1.0, None, "ok")
        for k in range(3000)
    ]
    store.save((), rows, ())
    assert store.prune(DAY + 900 * 100, 1 << 40) == 100
    assert store.dropped() == 100
    dropped = store.prune(0, 160 * 1024)
    assert dropped > 0
    left = read_rows(store.path, 0, 1e12)
    assert len(left) == 2900 - dropped
    assert left[0].start == DAY + 900 * (100 + dropped)  # the oldest went first
    assert store.dropped() == 100 + dropped


def test_edged_export_csv_loads_with_the_documented_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = EnergyStore(tmp_path / "energy.sqlite")
    day = run_day(store, (DAY + 36450, DAY + 38850))
    store.close()
    out = tmp_path / "day.csv"
    assert (
        edged_main(
            [
                "export",
                "--store",
                str(store.path),
                "--from",
                "2026-11-02",
                "--to",
                "2026-11-03",
                "--points",
                "grid",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    reader = csv.DictReader(io.StringIO(out.read_text()))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    table = list(reader)
    assert {r["point"] for r in table} == {"grid"}
    assert sum(float(r["energy_wh"]) for r in table) == (
        day.last_before(DAY + 86400)[0] - day.last_before(DAY)[0]
    )
    assert {r["status"] for r in table} == {"ok", "incomplete", "gap"}
    assert table[0]["start"] == "2026-11-02T00:00:00.000Z"
    assert table[0]["end"] == "2026-11-02T00:15:00.000Z"
    assert all(r["peak_w"] for r in table if r["status"] != "gap")
    # The monthly report sums the same rows.
    capsys.readouterr()
    assert edged_main(["report", "--store", str(store.path), "--month", "2026-11"]) == 0
    lines = capsys.readouterr().out.splitlines()
    grid = next(line.split() for line in lines if line.startswith("grid "))
    rows = read_rows(store.path, DAY - 86400, DAY + 2 * 86400, ["grid"])
    grid_rows = [r for r in rows if r.quantity == "energy_import"]
    assert float(grid[2]) == round(sum(r.energy for r in grid_rows) / 1000, 3)  # kWh
    assert int(grid[-1]) == 1  # one gap


def test_a_point_silent_longer_than_its_gap_leaves_its_interval_incomplete() -> None:
    lp = LoadProfile()
    lp.set_gaps({"fast": 10.0})
    # Readings every 5 s from 23:59:55, but none between 00:00:05 and 00:00:30.
    times = [-5.0, *(float(t) for t in range(0, 910, 5) if not 5 < t < 30)]
    for dev in ("fast", "slow"):
        for ts in times:
            lp.add(Sample(dev, DAY + ts, MappingProxyType({"energy_import": ts})))
    rows, _ = lp.take_dirty()
    first = {r.point: r for r in rows if r.start == DAY}
    assert first["fast"].status == "incomplete"  # 25 s of silence at a 10 s gap
    assert first["slow"].status == "ok"  # no gap at the default 300 s
    assert first["fast"].energy == first["slow"].energy == 900.0  # the energy is all there


GAPS_CONFIG = """
[gateway]
id = "gw"
data_dir = "{tmp}"

[licensing]
directory = "{tmp}"

[features]
virtual_meters = true

[connections.bus]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = 15020

[connections.cps]
driver = "ocpp"
port = 19000

[[devices]]
id = "m1"
connection = "bus"
address = 1
profile = "eastron_sdm630"
poll_interval = 0.5
cloud_licence = "professional"

[[devices]]
id = "m2"
connection = "bus"
address = 2
profile = "eastron_sdm630"
poll_interval = 60
cloud_licence = "professional"

[[devices]]
id = "cp"
connection = "cps"
cloud_licence = "professional"

[[virtual_meters]]
id = "v"
sources = ["m1", "m2"]
cloud_licence = "professional"
"""


def test_gaps_follow_the_poll_interval(tmp_path: Path) -> None:
    from edged import config as configmod
    from edged.energy import gaps
    from edged.provisioning import provision

    main = tmp_path / "edged.toml"
    main.write_text(GAPS_CONFIG.replace("{tmp}", str(tmp_path)))
    got = gaps(provision(configmod.load(main), licence_dir=tmp_path))
    assert got == {"m1": 10.0, "m2": 185.0, "cp": 300.0, "v": 185.0}
