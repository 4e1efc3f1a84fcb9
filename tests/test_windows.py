"""The windows stage: one record per device per wall-clock window, driven by an injected clock."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged import payload
from edged.model import Reading, Record, Sample, is_counter
from edged.tiers import TIER_INTERVALS
from edged.windows import Windows

BASIC = TIER_INTERVALS[next(t for t in TIER_INTERVALS if t.value == "basic")]
LIMITED = TIER_INTERVALS[next(t for t in TIER_INTERVALS if t.value == "limited")]
PROFESSIONAL = TIER_INTERVALS[next(t for t in TIER_INTERVALS if t.value == "professional")]

# 2026-11-23 12:00:00 UTC: a quarter-hour boundary.
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def s(device: str, ts: float, **values: float) -> Sample:
    return Sample(device, ts, values)


def by_device(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        out[r.device_id].append(r)
    return out


def test_basic_windows_are_quarter_hours() -> None:
    clock = FakeClock(T0 + 10)
    th = Windows({"m1": BASIC}, clock=clock)
    for i in range(60):  # one sample per 30 s over 30 minutes, starting at 12:00:10
        th.add(s("m1", T0 + 10 + 30 * i, energy_import=1000.0 + i, power_active=float(i)))
    # The sample at 12:15:10 lies past the first window: it is complete, closed at once.
    (first,) = th.take_ready()
    assert th.due(T0 + 900 + 2.0) == []
    assert first.window_start == T0 and first.window_length == 900
    minute = datetime.fromtimestamp(first.window_start, UTC).minute
    assert minute == 0
    # Samples at 12:00:10 … 12:14:40 → indices 0..29.
    assert first.values["energy_import"].last == 1029.0
    assert first.values["energy_import"].ts == T0 + 10 + 30 * 29
    assert first.values["energy_import"].mean is None
    p = first.values["power_active"]
    assert (p.mean, p.min, p.max, p.last, p.count) == (14.5, 0.0, 29.0, 29.0, 30)
    # Nothing lies past the second window: it waits out the grace like a missed poll.
    assert th.due(T0 + 1800 + 1.9) == []  # still inside the grace
    (second,) = th.due(T0 + 1800 + 2)
    assert datetime.fromtimestamp(second.window_start, UTC).minute == 15
    assert th.due(T0 + 3600) == []
    (back,) = payload.decode(payload.encode(second))
    assert back.window_start == T0 + 900 and back.window_length == 900
    assert back.values["power_active"].count == 30
    assert back == second


def test_limited_windows_one_record_per_minute_at_any_poll_rate() -> None:
    th = Windows({"fast": LIMITED, "slow": LIMITED}, clock=FakeClock(T0))
    records: list[Record] = []
    for tenth in range(0, 3000):  # 5 minutes of 10 Hz polling
        now = T0 + tenth / 10
        records += th.due(now)
        th.add(s("fast", now, power_active=float(tenth % 7)))
        if tenth % 100 == 0:
            th.add(s("slow", now, voltage=230.0))
    records += th.flush()
    per = by_device(records)
    assert [r.window_start - T0 for r in per["fast"]] == [0, 60, 120, 180, 240]
    assert [r.window_start - T0 for r in per["slow"]] == [0, 60, 120, 180, 240]
    assert all(r.window_length == 60 for r in records)
    assert [r.values["power_active"].count for r in per["fast"]] == [600] * 5


def test_professional_windows_are_seconds() -> None:
    th = Windows({"m": PROFESSIONAL}, grace=0.5, clock=FakeClock(T0))
    for k in range(4):
        th.add(s("m", T0 + k + 0.25, power_active=1.0))
        th.add(s("m", T0 + k + 0.75, power_active=3.0))
    records = th.take_ready() + th.due(T0 + 4.5)
    assert [(r.window_start - T0, r.values["power_active"].mean) for r in records] == [
        (0, 2.0),
        (1, 2.0),
        (2, 2.0),
        (3, 2.0),
    ]


def test_late_sample_for_closed_window_is_dropped_and_counted() -> None:
    th = Windows({"m": LIMITED}, clock=FakeClock(T0))
    th.add(s("m", T0 + 5, energy_import=1.0))
    assert len(th.due(T0 + 62)) == 1
    th.add(s("m", T0 + 59, energy_import=2.0))  # belongs to the closed window
    assert th.counts()["late"] == 1
    assert th.due(T0 + 200) == [] and th.flush() == []


def test_late_sample_within_grace_is_taken() -> None:
    th = Windows({"m": LIMITED}, grace=2.0, clock=FakeClock(T0))
    th.add(s("m", T0 + 10, energy_import=5.0))
    assert th.due(T0 + 61) == []  # ended, but nothing says it is complete: the grace holds
    th.add(s("m", T0 + 59.9, energy_import=6.0))  # arrives late, still within the grace
    (r,) = th.due(T0 + 62)
    assert r.values["energy_import"].last == 6.0
    assert r.values["energy_import"].ts == T0 + 59.9
    assert th.counts()["late"] == 0


def test_a_sample_past_the_end_completes_the_window_at_once() -> None:
    th = Windows({"m": LIMITED}, grace=2.0, clock=FakeClock(T0))
    th.add(s("m", T0 + 10, energy_import=5.0))
    assert th.take_ready() == []
    th.add(s("m", T0 + 60.5, energy_import=7.0))  # the next window: the first is complete
    (r,) = th.take_ready()
    assert (r.window_start, r.values["energy_import"].last) == (T0, 5.0)
    th.add(s("m", T0 + 59.9, energy_import=6.0))  # too late for a closed window
    assert th.counts()["late"] == 1
    assert th.due(T0 + 62) == [] and [x.window_start for x in th.flush()] == [T0 + 60]


def test_the_poll_schedule_completes_the_window_without_waiting() -> None:
    th = Windows({"m": PROFESSIONAL}, grace=2.0, clock=FakeClock(T0))
    th.add(Sample("m", T0 + 0.3, {"power_active": 1.0}, next_at=T0 + 0.8))
    assert th.take_ready() == []  # the next poll may still fall into [0, 1)
    th.add(Sample("m", T0 + 0.8, {"power_active": 3.0}, next_at=T0 + 1.3))
    (r,) = th.take_ready()  # no further sample can: closed with its read
    assert (r.window_start, r.values["power_active"].mean) == (T0, 2.0)
    assert th.due(T0 + 3.0) == []


def test_counter_last_is_by_timestamp_not_arrival() -> None:
    th = Windows({"m": LIMITED}, clock=FakeClock(T0))
    th.add(s("m", T0 + 30, energy_import=30.0))
    th.add(s("m", T0 + 20, energy_import=20.0))  # out of order
    (r,) = th.flush()
    assert (r.values["energy_import"].last, r.values["energy_import"].ts) == (30.0, T0 + 30)


def test_non_finite_values_are_dropped_and_counted() -> None:
    th = Windows({"m": LIMITED}, clock=FakeClock(T0))
    th.add(s("m", T0 + 1, power_active=math.nan, voltage=230.0))
    th.add(s("m", T0 + 2, power_active=math.inf))
    th.add(s("m", T0 + 3, power_active=4.0))
    th.add(s("m", T0 + 70, power_active=-math.inf))  # nothing usable in this window
    records = th.flush()
    assert len(records) == 1
    assert records[0].values["power_active"].count == 1
    assert records[0].values["voltage"].mean == 230.0
    assert th.counts()["nonfinite"] == 3
    payload.encode(records[0])  # allow_nan=False would raise on a NaN


def test_flush_closes_open_windows_and_never_duplicates() -> None:
    th = Windows({"a": BASIC, "b": BASIC}, clock=FakeClock(T0))
    th.add(s("a", T0 + 100, energy_import=1.0))
    th.add(s("b", T0 + 200, power_active=2.0))
    assert th.due(T0 + 300) == []
    flushed = th.flush()
    assert sorted(r.device_id for r in flushed) == ["a", "b"]
    th.add(s("a", T0 + 400, energy_import=2.0))  # same window after the flush
    assert th.flush() == [] and th.counts()["late"] == 1


def test_devices_can_arrive_with_the_first_reload() -> None:
    th = Windows(clock=FakeClock(T0))
    th.add(s("a", T0 + 1, power_active=1.0))
    assert th.counts()["unknown"] == 1
    th.set_intervals({"a": LIMITED})
    th.add(s("a", T0 + 2, power_active=2.0))
    (r,) = th.due(T0 + 62)
    assert r.values["power_active"].mean == 2.0


def test_unknown_device_is_counted() -> None:
    th = Windows({"a": LIMITED}, clock=FakeClock(T0))
    th.add(s("ghost", T0, power_active=1.0))
    assert th.counts()["unknown"] == 1 and th.flush() == []


def test_stale_devices() -> None:
    clock = FakeClock(T0 + 10)
    th = Windows({"a": LIMITED, "b": LIMITED, "c": LIMITED}, clock=clock)
    # Before a whole window has passed since start nobody is stale.
    assert th.stale_devices(T0 + 62) == []
    for k in range(3):
        th.add(s("a", T0 + 60 * k + 30, power_active=1.0))
    th.add(s("b", T0 + 30, power_active=1.0))
    records = th.due(T0 + 182)
    assert len([r for r in records if r.device_id == "b"]) == 1
    # Window [120, 180) is the last completed one: b and c sent nothing in it.
    assert th.stale_devices(T0 + 182) == ["b", "c"]
    th.add(s("b", T0 + 185, power_active=1.0))
    assert th.stale_devices(T0 + 190) == ["c"]


def test_tier_upgrade_switches_at_the_next_window_boundary() -> None:
    clock = FakeClock(T0)
    th = Windows({"m": BASIC}, clock=clock)
    records: list[Record] = []
    for k in range(0, 1500, 10):  # 25 minutes at 0.1 Hz; reload at 12:05
        now = T0 + k
        clock.now = now
        if k == 300:
            th.set_intervals({"m": LIMITED})
            assert th.interval("m") == BASIC  # not yet: the open window keeps its length
        records += th.due(now)
        th.add(s("m", now, energy_import=float(k)))
    records += th.flush()
    starts = [(r.window_start - T0, r.window_length) for r in records]
    assert starts[0] == (0, 900)  # the window open at the reload keeps 15 minutes
    assert starts[1:] == [(900 + 60 * i, 60) for i in range(10)]
    assert th.interval("m", T0 + 900) == LIMITED


def test_tier_downgrade_switches_at_the_next_window_boundary() -> None:
    clock = FakeClock(T0)
    th = Windows({"m": LIMITED}, clock=clock)
    records: list[Record] = []
    for k in range(0, 2400, 10):
        now = T0 + k
        clock.now = now
        if k == 90:  # reload mid-window [60, 120)
            th.set_intervals({"m": BASIC})
        records += th.due(now)
        th.add(s("m", now, power_active=float(k)))
    records += th.flush()
    windows = [(r.window_start - T0, r.window_length) for r in records]
    # [0,60) and [60,120) at the old rate, then the rest of the quarter hour, then
    # quarter hours aligned to the wall clock.
    assert windows == [(0, 60), (60, 60), (120, 780), (900, 900), (1800, 900)]


def test_reload_adds_and_removes_devices() -> None:
    th = Windows({"a": LIMITED}, clock=FakeClock(T0))
    th.add(s("a", T0 + 1, power_active=1.0))
    th.set_intervals({"b": LIMITED}, now=T0 + 2)
    th.add(s("b", T0 + 3, power_active=2.0))
    th.add(s("a", T0 + 4, power_active=3.0))  # a is gone from the config
    records = th.due(T0 + 62)
    assert {r.device_id: r.values["power_active"].count for r in records} == {"a": 1, "b": 1}
    assert th.counts()["unknown"] == 1
    assert th.interval("a") is None


def test_rejects_bad_intervals_and_grace() -> None:
    with pytest.raises(ValueError):
        Windows({"a": 0.0})
    with pytest.raises(ValueError):
        Windows({"a": 60.0}, grace=-1)


def test_next_deadline() -> None:
    th = Windows({"a": LIMITED}, grace=2.0, clock=FakeClock(T0))
    assert th.next_deadline() is None
    th.add(s("a", T0 + 30, power_active=1.0))
    assert th.next_deadline() == T0 + 62


# --- properties --------------------------------------------------------------------------------

DEVICES = ("d0", "d1", "d2")
QUANTITY_NAMES = ("energy_import", "volume", "power_active", "voltage_l1")


@st.composite
def streams(draw: st.DrawFn) -> tuple[dict[str, float], float, list[tuple[float, Sample]]]:
    intervals = {d: draw(st.sampled_from([1.0, 60.0, 900.0, 7.5, 300.0])) for d in DEVICES}
    grace = draw(st.sampled_from([0.0, 0.5, 2.0, 5.0]))
    start = T0 + draw(st.floats(0, 3600, allow_nan=False))
    events: list[tuple[float, Sample]] = []
    for d in DEVICES:
        period = draw(st.sampled_from([0.1, 0.5, 1.0, 3.0, 20.0, 61.0, 400.0]))
        n = draw(st.integers(0, 40))
        t = start + draw(st.floats(0, 5))
        for _ in range(n):
            t += period * draw(st.floats(0.5, 1.5))
            delay = draw(st.sampled_from([0.0, 0.0, 0.3, 1.5, 4.0, 10.0]))
            names = draw(st.sets(st.sampled_from(QUANTITY_NAMES), min_size=1))
            values = {
                q: draw(
                    st.one_of(
                        st.floats(-1e6, 1e6, allow_nan=False),
                        st.sampled_from([math.nan, math.inf]),
                    )
                )
                for q in names
            }
            events.append((t + delay, Sample(d, t, values)))
    events.sort(key=lambda e: e[0])
    return intervals, grace, events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_property_one_aligned_record_per_device_window(
    case: tuple[dict[str, float], float, list[tuple[float, Sample]]],
) -> None:
    intervals, grace, events = case
    clock = FakeClock(T0)
    th = Windows(intervals, grace=grace, clock=clock)
    records: list[Record] = []
    accepted: dict[tuple[str, float], list[Sample]] = defaultdict(list)
    cutoff = -math.inf
    # The model: a device's open windows close when their grace has passed or when a
    # sample of the device lies past their end; a sample is late when its window ended
    # before the cutoff or lies before the end of a window of its device already closed.
    open_ends: dict[str, dict[float, float]] = defaultdict(dict)
    floor: dict[str, float] = defaultdict(lambda: -math.inf)

    def close(device: str, upto: float) -> None:
        for begin, end in list(open_ends[device].items()):
            if end <= upto:
                del open_ends[device][begin]
                floor[device] = max(floor[device], end)

    for arrival, sample in events:
        records += th.due(arrival)
        cutoff = max(cutoff, arrival - grace)
        for d in DEVICES:
            close(d, cutoff)
        dev = sample.device_id
        length = intervals[dev]
        start = math.floor(sample.timestamp / length) * length
        late_before = th.counts()["late"]
        th.add(sample)
        records += th.take_ready()
        late = th.counts()["late"] > late_before
        assert late == (start + length <= cutoff or start < floor[dev])
        if not late:
            accepted[(dev, start)].append(sample)
            open_ends[dev][start] = start + length
            close(dev, sample.timestamp)
    records += th.flush()

    keys = [(r.device_id, r.window_start) for r in records]
    assert len(keys) == len(set(keys)), "two records for one device window"
    for r in records:
        length = intervals[r.device_id]
        assert r.window_length == length
        assert r.window_start % length == 0 or math.isclose(
            r.window_start / length, round(r.window_start / length)
        )
    expected = {}
    for key, samples in accepted.items():
        finite = [
            (smp.timestamp, q, v)
            for smp in samples
            for q, v in smp.values.items()
            if math.isfinite(v)
        ]
        if finite:
            expected[key] = finite
    assert set(keys) == set(expected)
    for r in records:
        finite = expected[(r.device_id, r.window_start)]
        for q in {q for _, q, _ in finite}:
            series = [(ts, v) for ts, name, v in finite if name == q]
            reading = r.values[q]
            last_ts = max(ts for ts, _ in series)
            assert reading.ts == last_ts
            assert reading.last in [v for ts, v in series if ts == last_ts]
            assert reading.count == len(series)
            if is_counter(q):
                assert reading.mean is None
            else:
                vals = [v for _, v in series]
                assert reading.min == min(vals) and reading.max == max(vals)
                assert reading.mean is not None
                assert math.isclose(
                    reading.mean, statistics.fmean(vals), rel_tol=1e-9, abs_tol=1e-6
                )
        assert set(r.values) == {q for _, q, _ in finite}
        payload.encode(r)


@settings(max_examples=100, deadline=None)
@given(
    old=st.sampled_from([1.0, 60.0, 900.0, 7.5]),
    new=st.sampled_from([1.0, 60.0, 900.0, 7.5]),
    reload_at=st.floats(1, 3000),
    period=st.sampled_from([0.7, 5.0, 30.0]),
)
def test_property_reload_switches_at_next_window(
    old: float, new: float, reload_at: float, period: float
) -> None:
    clock = FakeClock(T0)
    th = Windows({"m": old}, grace=1.0, clock=clock)
    records: list[Record] = []
    t = T0
    reloaded = False
    switch = math.inf
    while t < T0 + 4000:
        clock.now = t
        if not reloaded and t >= T0 + reload_at:
            th.set_intervals({"m": new})
            reloaded = True
            # The window open at the reload ends where the old interval says.
            switch = (math.floor(t / old) + 1) * old
        records += th.due(t)
        th.add(s("m", t, power_active=1.0))
        records += th.take_ready()
        t += period
    records += th.flush()
    previous_end = -math.inf
    for r in records:
        assert r.window_start >= previous_end - 1e-6, "windows overlap"
        previous_end = r.window_start + r.window_length
        end = r.window_start + r.window_length
        if end <= switch + 1e-6:
            assert math.isclose(r.window_length, old)
        elif r.window_start >= switch - 1e-6:
            # New-length windows, the first one possibly clipped to start at the switch.
            assert r.window_length <= new + 1e-6
            assert math.isclose(end / new, round(end / new), abs_tol=1e-6)
        else:
            raise AssertionError(f"window {r} straddles the switch at {switch}")


def test_interval_change_logs_its_start_as_rfc3339(caplog: pytest.LogCaptureFixture) -> None:
    th = Windows({"m": LIMITED}, clock=FakeClock(T0))
    with caplog.at_level("INFO", logger="edged.windows"):
        th.set_intervals({"m": BASIC}, now=T0 + 10)
    (line,) = [r.getMessage() for r in caplog.records if "interval change" in r.getMessage()]
    assert line.endswith("from=2026-11-23T12:01:00.000Z"), line


async def test_live_only_quantities_reach_the_live_values_never_a_record() -> None:
    from edged.live import LiveValues
    from edged.model import LIVE_ONLY, QUANTITIES
    from edged.pipeline import Pipeline

    # link_connects restarts at 1 with edged: as a record counter it would go backwards.
    assert QUANTITIES["link_connects"].kind == "info" and "link_connects" in LIVE_ONLY
    assert "session_active" not in LIVE_ONLY
    clock = FakeClock(T0)
    windows = Windows({"ev1": 60.0}, clock=clock)
    live = LiveValues()
    records: list[Record] = []
    pipe = Pipeline(windows, live, records.extend)
    pipe.add(s("ev1", T0 + 1, link_connects=1.0))  # a connection: the sample has nothing else
    pipe.add(s("ev1", T0 + 2, link_connects=2.0, session_active=1.0, power_active=7000.0))
    pipe.tick(T0 + 120)
    lv = live.get("ev1", "link_connects")
    assert lv is not None and lv.value == 2.0
    (rec,) = records
    assert set(rec.values) == {"session_active", "power_active"}
    assert rec.values["session_active"].mean == 1.0
    assert "link_connects" not in payload.encode(rec).decode()
    # A window with only link_connects in it makes no record at all.
    pipe.add(s("ev1", T0 + 130, link_connects=3.0))
    pipe.tick(T0 + 300)
    assert len(records) == 1 and windows.counts()["samples"] == 1
    lv = live.get("ev1", "link_connects")
    assert lv is not None and lv.value == 3.0


@given(
    st.floats(allow_nan=False),
    st.floats(allow_nan=False),
    st.one_of(st.none(), st.floats(allow_nan=False)),
    st.integers(1, 10),
)
def test_fast_reading_is_the_same_object_as_the_dataclass_builds(
    last: float, ts: float, stat: float | None, n: int
) -> None:
    from edged.windows import _reading

    fast = _reading(last, ts, stat, stat, stat, n)
    slow = Reading(last=last, ts=ts, mean=stat, min=stat, max=stat, count=n)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.last = 0.0  # type: ignore[misc]
