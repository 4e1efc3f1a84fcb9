"""Codec: register decoding for every type and order, scale/offset/unit, round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus import codec
from drivers.modbus.codec import DataType, Order
from drivers.modbus.profile import Point
from edged.errors import DecodeError


@pytest.mark.parametrize(
    ("dtype", "word", "byte", "registers", "value"),
    [
        ("u16", "big", "big", [0x1234], 0x1234),
        ("u16", "big", "little", [0x3412], 0x1234),
        ("i16", "big", "big", [0xFFFE], -2),
        ("u32", "big", "big", [0x0001, 0x0002], 0x00010002),
        ("u32", "little", "big", [0x0002, 0x0001], 0x00010002),
        ("u32", "big", "little", [0x0100, 0x0200], 0x00010002),
        ("u32", "little", "little", [0x0200, 0x0100], 0x00010002),
        ("i32", "big", "big", [0xFFFF, 0xFFFF], -1),
        ("f32", "big", "big", [0x3F80, 0x0000], 1.0),
        ("f32", "little", "big", [0x0000, 0x3F80], 1.0),
        ("f32", "big", "little", [0x803F, 0x0000], 1.0),
        ("f32", "little", "little", [0x0000, 0x803F], 1.0),
        ("u64", "big", "big", [0, 0, 1, 0], 65536),
        ("u64", "little", "big", [0, 1, 0, 0], 65536),
        ("i64", "big", "big", [0xFFFF] * 4, -1),
        ("f64", "big", "big", [0x3FF0, 0, 0, 0], 1.0),
        ("f64", "little", "little", [0, 0, 0, 0xF03F], 1.0),
    ],
)
def test_known_vectors(
    dtype: DataType, word: Order, byte: Order, registers: list[int], value: float
) -> None:
    assert codec.decode(registers, dtype, word, byte) == value
    assert codec.encode(value, dtype, word, byte) == registers


def test_wrong_register_count_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        codec.decode([1], "u32")


_RANGES = {
    "u16": (0, 2**16 - 1),
    "i16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "u64": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
}
orders = st.sampled_from(codec.ORDERS)


@given(st.sampled_from(list(_RANGES)), st.data(), orders, orders)
def test_integer_round_trip(dtype: DataType, data: st.DataObject, word: Order, byte: Order) -> None:
    lo, hi = _RANGES[dtype]
    value = data.draw(st.integers(lo, hi))
    regs = codec.encode(value, dtype, word, byte)
    assert len(regs) == codec.width(dtype)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert codec.decode(regs, dtype, word, byte) == value


@given(st.floats(width=32, allow_nan=False), orders, orders)
def test_f32_round_trip(value: float, word: Order, byte: Order) -> None:
    assert codec.decode(codec.encode(value, "f32", word, byte), "f32", word, byte) == value


@given(st.floats(allow_nan=False), orders, orders)
def test_f64_round_trip(value: float, word: Order, byte: Order) -> None:
    assert codec.decode(codec.encode(value, "f64", word, byte), "f64", word, byte) == value


@given(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2), orders, orders)
def test_register_round_trip_through_f32(regs: list[int], word: Order, byte: Order) -> None:
    value = codec.decode(regs, "f32", word, byte)
    if not math.isnan(value):
        assert codec.encode(value, "f32", word, byte) == regs


def _point(**kw: object) -> Point:
    base: dict[str, object] = dict(
        quantity="energy_import",
        table="holding",
        register=0,
        type="u32",
        word_order="big",
        byte_order="big",
        scale=1.0,
        offset=0.0,
        unit="Wh",
        factor=1.0,
    )
    base.update(kw)
    return Point(**base)  # type: ignore[arg-type]


def test_scale_offset_and_unit_are_applied_in_order() -> None:
    p = _point(scale=0.01, offset=5.0, unit="kWh", factor=1000.0)
    # raw 12345 -> 123.45 kWh + 5 kWh offset -> 128.45 kWh -> 128450 Wh
    assert p.value([0, 12345]) == pytest.approx(128450.0)
    assert p.raw(128450.0) == pytest.approx(12345.0)


@given(st.floats(-1e6, 1e6), st.sampled_from([0.001, 0.1, 1.0, 10.0]), st.floats(-100, 100))
def test_point_value_inverts_raw(value: float, scale: float, offset: float) -> None:
    p = _point(type="f64", scale=scale, offset=offset, factor=1000.0)
    regs = codec.encode(p.raw(value), "f64")
    assert p.value(regs) == pytest.approx(value, rel=1e-9, abs=1e-6)


@given(
    st.sampled_from(codec.TYPES),
    orders,
    orders,
    st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
)
def test_compiled_decoder_agrees_with_decode(
    dtype: DataType, word: Order, byte: Order, regs: list[int]
) -> None:
    regs = regs[: codec.width(dtype)]
    expected = codec.decode(regs, dtype, word, byte)
    got = codec.decoder(dtype, word, byte)(regs)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


@pytest.mark.parametrize("regs", [[1], [1, 2, 3], [0x10000, 0], [-1, 0]])
def test_compiled_decoder_refuses_what_decode_refuses(regs: list[int]) -> None:
    with pytest.raises(DecodeError):
        codec.decoder("u32", "little", "big")(regs)


def _value_by_the_formula(p: Point, regs: list[int]) -> float:
    """What ``Point.value`` computes, written out without its shortcut."""
    raw = codec.decode(regs, p.type, p.word_order, p.byte_order)
    if p.type == "f32":
        raw = codec.f32_digits(raw)
    return float(f"{(raw * p.scale + p.offset) * p.factor:.15g}")


@given(
    st.sampled_from(codec.TYPES),
    orders,
    st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
    st.sampled_from([(1.0, 0.0, 1.0), (0.1, 0.0, 1.0), (1.0, 5.0, 1.0), (1.0, 0.0, 1000.0)]),
)
def test_point_value_shortcut_changes_no_value(
    dtype: DataType, word: Order, regs: list[int], conv: tuple[float, float, float]
) -> None:
    scale, offset, factor = conv
    p = _point(type=dtype, word_order=word, scale=scale, offset=offset, factor=factor)
    regs = regs[: codec.width(dtype)]
    got, expected = p.value(regs), _value_by_the_formula(p, regs)
    assert got == expected or (math.isnan(got) and math.isnan(expected))
    assert type(got) is float
