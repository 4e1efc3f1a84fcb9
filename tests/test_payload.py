"""Record format 2: what the cloud reads back is what the gateway recorded."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import f32_digits
from edged import payload
from edged.model import Reading, Record, Sample
from edged.payload import PayloadError
from edged.windows import Windows

T = 1_796_055_069.0
BENCH8 = {
    "energy_import": 1234568.0,
    "power_active": 2345.679,
    "voltage_l1": 231.2346,
    "voltage_l2": 229.8765,
    "voltage_l3": 230.5556,
    "current_l1": 3.398765,
    "current_l2": 3.412346,
    "frequency": 50.01234,
}


def one_sample(device: str, seq: int, start: float, values: dict[str, float]) -> Record:
    """A 1 s window with one read: gauges have mean = min = max = value, as Windows makes."""
    readings = {
        q: Reading(v, start + 0.123, count=1)
        if q.startswith("energy")
        else Reading(v, start + 0.123, v, v, v, 1)
        for q, v in values.items()
    }
    return Record(device, start, 1.0, MappingProxyType(readings), seq)


def test_single_sample_record_round_trips_without_statistics() -> None:
    rec = one_sample("m0001", 4711, T, BENCH8)
    data = payload.encode(rec)
    doc = json.loads(data)
    assert doc["v"] == 2 and doc["k"] == [sorted(BENCH8)] and doc["w"] == [[1, int(T)]]
    # device, seq, read time in ms into the window, values: no statistics, no extras.
    assert doc["r"] == [[0, 0, ["m0001", 4711, 123, [BENCH8[q] for q in sorted(BENCH8)]]]]
    assert payload.decode(data) == [rec]


def test_statistics_offsets_and_clipped_windows_round_trip() -> None:
    start = T + 65.5  # a window clipped by a tier change: not aligned to its length
    rec = Record(
        "grid",
        start,
        834.5,
        MappingProxyType(
            {
                "energy_import": Reading(1523340.0, start + 800.25, count=800),
                "power_active": Reading(2310.5, start + 800.0, 2250.125, 1980.0, 2415.25, 800),
                "voltage": Reading(230.0, start + 10.0, 230.0, 230.0, 230.0, 1),
            }
        ),
        7,
    )
    data = payload.encode(rec)
    (extras,) = [r[4] for run in json.loads(data)["r"] for r in run[2:]]
    assert extras["o"] == [0, -250, -790250] and extras["n"] == [800, 800, 1]
    assert extras["a"] == [None, 2250.125, None]
    assert payload.decode(data) == [rec]


def test_several_devices_share_one_message_and_keep_their_seq() -> None:
    recs = [one_sample(f"m{i}", 10 + i, T + (i % 2), BENCH8) for i in range(5)]
    other = one_sample("x", 1, T, {"power_active": 5.0})
    parts = [(payload.shape(r), payload.fragment(r)) for r in [*recs, other]]
    data = payload.message(parts)
    doc = json.loads(data)
    assert len(doc["k"]) == 2 and len(doc["w"]) == 2  # names and windows listed once each
    # Runs of records sharing names and window: T, T+1, T, T+1, T, then x at T.
    assert [run[:2] for run in doc["r"]] == [[0, 0], [0, 1], [0, 0], [0, 1], [0, 0], [1, 0]]
    assert payload.decode(data) == [*recs, other]
    assert data.count(b'"voltage_l1"') == 1


def test_seq_given_to_fragment_wins() -> None:
    rec = one_sample("m", 0, T, {"power_active": 1.0})
    (back,) = payload.decode(payload.message([(payload.shape(rec), payload.fragment(rec, 9))]))
    assert back.seq == 9


def test_version_1_bodies_still_read() -> None:
    v1 = (
        b'{"device":"grid","seq":3,"ts":"2026-11-23T12:15:00.000Z","window":900,"values":'
        b'{"energy_import":{"value":15.0,"unit":"Wh","ts":"2026-11-23T12:29:59.120Z"},'
        b'"power_active":{"value":2.5,"unit":"W","ts":"2026-11-23T12:29:59.120Z",'
        b'"mean":2.25,"min":1.0,"max":3.0,"n":900}}}'
    )
    (rec,) = payload.decode(v1)
    assert (rec.device_id, rec.seq, rec.window_length) == ("grid", 3, 900.0)
    assert rec.values["power_active"].count == 900 and rec.values["energy_import"].last == 15.0


@pytest.mark.parametrize(
    "data",
    [b"nope", b"[]", b'{"v":3,"k":[],"w":[],"r":[]}', b'{"v":2,"k":[],"w":[],"r":[[0,0,[1]]]}'],
)
def test_malformed_messages_raise_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError):
        payload.decode(data)


def test_non_finite_values_are_refused() -> None:
    rec = one_sample("m", 1, T, {"power_active": math.nan})
    with pytest.raises(ValueError):
        payload.fragment(rec)


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_values_keep_seven_significant_digits(x: float) -> None:
    got = f32_digits(x)
    assert got == float(f"{got:.7g}")  # no more than 7 significant digits
    # Within half a unit of the 7th significant digit of the float32 the meter sent.
    assert got == pytest.approx(x, rel=5.1e-7, abs=1e-45)
    back = struct.unpack(">f", struct.pack(">f", got))[0]
    assert back == pytest.approx(x, rel=6e-7, abs=1e-45)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 0.999),
            st.floats(-1e6, 1e6, width=32),
            st.floats(0, 1e9, width=32),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_windows_records_read_back_as_recorded(
    samples: list[tuple[float, float, float]],
) -> None:
    # Whatever a window holds (one sample, two, several), the reader gets back what the
    # windows stage recorded: last values, statistics (or the other sample) and counts.
    windows = Windows({"m": 1.0}, clock=lambda: T)
    for offset, power, energy in samples:
        windows.add(Sample("m", T + offset, {"power_active": power, "energy_import": energy}))
    (rec,) = windows.flush()
    (back,) = payload.decode(payload.encode(rec))
    assert (back.device_id, back.window_start, back.window_length) == ("m", T, 1.0)
    for name, reading in rec.values.items():
        got = back.values[name]
        assert got.ts == pytest.approx(reading.ts, abs=0.0011)
        assert (got.last, got.count, got.min, got.max) == (
            reading.last,
            reading.count,
            reading.min,
            reading.max,
        )
        if reading.mean is not None and reading.count > 2:
            assert got.mean == pytest.approx(reading.mean, rel=5e-7)
        else:
            assert got.mean == reading.mean


def test_stale_records_carry_the_stale_flag() -> None:
    @dataclasses.dataclass(frozen=True)
    class StaleRecord(Record):
        stale: bool = True

    base = one_sample("v1", 3, T, {"power_active": 1.5})
    rec = StaleRecord(base.device_id, base.window_start, 1.0, base.values, 3)
    data = payload.encode(rec)
    (run,) = json.loads(data)["r"]
    assert run[2][4] == {"f": ["stale"]}
    (back,) = payload.decode(data)
    assert back.values == rec.values and getattr(back, "stale", True) is True
    assert b'"f"' not in payload.encode(base)  # no flags, no extras
