"""Register codec: Modbus registers to numbers and back, for every type and word/byte order.

Pure functions without I/O. A register is a 16-bit unsigned integer as the Modbus PDU
carries it; ``byte_order`` says how the two bytes of each register are ordered and
``word_order`` whether the most significant register comes first ("big") or last.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Literal

from edged.errors import DecodeError

DataType = Literal["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"]
Order = Literal["big", "little"]

TYPES: tuple[DataType, ...] = ("u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64")
ORDERS: tuple[Order, ...] = ("big", "little")

_FORMAT: dict[str, str] = {
    "u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i",
    "u64": ">Q", "i64": ">q", "f32": ">f", "f64": ">d",
}  # fmt: skip
_WIDTH: dict[str, int] = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "u64": 4, "i64": 4,
                          "f32": 2, "f64": 4}  # fmt: skip


def width(dtype: DataType) -> int:
    """Number of 16-bit registers a value of this type occupies."""
    return _WIDTH[dtype]


def decode(
    registers: Sequence[int], dtype: DataType, word_order: Order = "big", byte_order: Order = "big"
) -> float:
    """The value held by ``registers`` (exactly ``width(dtype)`` of them)."""
    n = _WIDTH[dtype]
    if len(registers) != n:
        raise DecodeError(f"{dtype} needs {n} registers, got {len(registers)}")
    words = list(registers) if word_order == "big" else list(reversed(registers))
    raw = bytearray()
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise DecodeError(f"register value out of range: {w}")
        hi, lo = w >> 8, w & 0xFF
        raw += bytes((hi, lo)) if byte_order == "big" else bytes((lo, hi))
    value: float = struct.unpack(_FORMAT[dtype], bytes(raw))[0]
    return value


def decoder(
    dtype: DataType, word_order: Order = "big", byte_order: Order = "big"
) -> Callable[[Sequence[int]], float]:
    """``decode`` for one type and order, compiled once: the poller's hot path.

    The registers are packed as 16-bit words in the byte order of the wire (``>H``) or
    swapped (``<H``), in the word order given, then read as the type's big-endian
    format; this is the byte string ``decode`` assembles by hand, so both agree (a
    property test checks it). ``struct`` refuses a word outside 0..65535 or a wrong count.
    """
    n = _WIDTH[dtype]
    words = struct.Struct((">" if byte_order == "big" else "<") + f"{n}H")
    value = struct.Struct(_FORMAT[dtype])
    pack, unpack = words.pack, value.unpack
    reverse = word_order != "big" and n > 1

    def run(registers: Sequence[int]) -> float:
        try:
            raw = pack(*reversed(registers)) if reverse else pack(*registers)
        except struct.error:
            decode(registers, dtype, word_order, byte_order)  # raises the precise error
            raise DecodeError(f"cannot decode {list(registers)} as {dtype}") from None
        result: float = unpack(raw)[0]
        return result

    return run


def f32_digits(value: float) -> float:
    """A float32 value to the 7 significant digits a float32 resolves (230.1, not
    230.10000610351562): the digits beyond only tell neighbouring binary values apart
    (under 0.6 ppm), far below any meter's resolution, and cost bytes on the uplink."""
    return float(f"{value:.7g}") if math.isfinite(value) else value


def encode(
    value: float, dtype: DataType, word_order: Order = "big", byte_order: Order = "big"
) -> list[int]:
    """Registers that hold ``value`` (integers are rounded and clamped to the type's range)."""
    if dtype.startswith("f"):
        raw = struct.pack(_FORMAT[dtype], value)
    else:
        bits = 16 * _WIDTH[dtype]
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if dtype[0] == "i" else (
            0, (1 << bits) - 1)  # fmt: skip
        raw = struct.pack(_FORMAT[dtype], min(max(round(value), lo), hi))
    words = []
    for i in range(0, len(raw), 2):
        a, b = raw[i], raw[i + 1]
        words.append((a << 8) | b if byte_order == "big" else (b << 8) | a)
    return words if word_order == "big" else list(reversed(words))
