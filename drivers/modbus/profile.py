"""Modbus meter profiles: the Modbus keys of a profile file, validated on load.

A profile (the one format of every protocol, read and found by ``edged.profiles``)
names the quantities a meter serves; for Modbus each ``[[points]]`` table says where
the value lives (table, register, type, word/byte order) and how to turn the raw number
into the canonical value (scale, offset, unit). The optional ``[modbus]`` table holds
the request limits and the default word/byte order. Shipped profiles live in
``drivers/modbus/profiles/``; a device's ``profile`` setting names a profile or a path
to a ``.toml`` file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from drivers.modbus import codec, units
from drivers.modbus.codec import DataType, Order
from drivers.modbus.planner import Span, Table
from edged import profiles
from edged.api import Options
from edged.model import QUANTITIES

PROTOCOL = "modbus"
PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_MAX_REGISTERS = 125
DEFAULT_MAX_GAP = 10
TABLES: tuple[Table, ...] = ("holding", "input")


@dataclass(frozen=True)
class Point:
    """One quantity of a meter: where it is and how to convert it."""

    quantity: str
    table: Table
    register: int
    type: DataType
    word_order: Order
    byte_order: Order
    scale: float
    offset: float
    unit: str
    factor: float

    @property
    def span(self) -> Span:
        """The registers this point occupies."""
        return Span(self.table, self.register, codec.width(self.type))

    @cached_property
    def _decode(self) -> Callable[[Sequence[int]], float]:
        return codec.decoder(self.type, self.word_order, self.byte_order)

    @cached_property
    def _as_read(self) -> bool:
        """True when the canonical value is the raw number itself (no scale, offset or
        unit factor): then the rounding below changes nothing and is skipped."""
        return self.scale == 1 and self.offset == 0 and self.factor == 1 and self.type != "f64"

    def value(self, registers: Sequence[int]) -> float:
        """The canonical value of this point from its raw registers."""
        raw = self._decode(registers)
        if self.type == "f32":
            # A float32 resolves about 7 significant digits: keep those, drop binary noise.
            raw = codec.f32_digits(raw)
            if self._as_read:
                return raw
        elif self._as_read and -(10**15) < raw < 10**15:
            return float(raw)
        value = (raw * self.scale + self.offset) * self.factor
        # 15 significant digits drop the binary noise of decimal scales (2316 * 0.1 gives
        # 231.60000000000002); counters below 10**15 keep every digit.
        return float(f"{value:.15g}")

    def raw(self, canonical: float) -> float:
        """The raw register number that holds a canonical value (inverse of ``value``)."""
        return (canonical / self.factor - self.offset) / self.scale


@dataclass(frozen=True)
class Profile:
    """A validated meter profile."""

    name: str
    manufacturer: str
    model: str
    max_registers: int
    max_gap: int
    points: tuple[Point, ...]
    path: str

    @cached_property
    def spans(self) -> tuple[Span, ...]:
        """The register span of every point, in point order (one tuple that the devices
        sharing this cached profile share)."""
        return tuple(p.span for p in self.points)


def profiles_dir() -> Path:
    """Directory of the shipped profiles."""
    return PROFILE_DIR


def shipped() -> dict[str, Path]:
    """Shipped profile names mapped to their files."""
    return profiles.shipped(PROFILE_DIR)


def resolve(ref: str, base: Path | None = None, profile_dir: Path | None = None) -> Path | None:
    """The file a ``profile`` setting refers to (a profile name or a .toml path), or None.

    A name is looked up in ``profile_dir`` first, then among the shipped profiles; a
    relative path is taken relative to ``base``.
    """
    return profiles.find(ref, PROFILE_DIR, profile_dir=profile_dir, base=base)


def load(path: str | Path) -> Profile:
    """Read and validate a Modbus profile file (cached until the file changes)."""
    return profiles.load(path, PROTOCOL, parse)


def parse(doc: profiles.ProfileFile) -> Profile:
    """Validate the Modbus keys of a profile whose common parts ``edged.profiles`` checked."""
    head = Options(doc.settings, doc.settings_source)
    max_registers = head.int("max_registers", DEFAULT_MAX_REGISTERS, min=1, max=125)
    max_gap = head.int("max_gap", DEFAULT_MAX_GAP, min=0, max=125)
    word_order: Order = head.choice("word_order", codec.ORDERS, "big")
    byte_order: Order = head.choice("byte_order", codec.ORDERS, "big")
    head.finish()
    points = tuple(
        _point(Options(t.data, t.source), t.quantity, word_order, byte_order, max_registers)
        for t in doc.points
    )
    h = doc.header
    return Profile(h.name, h.manufacturer, h.model, max_registers, max_gap, points, doc.file)


def _point(
    o: Options, quantity: str, word_order: Order, byte_order: Order, max_registers: int
) -> Point:
    o.raw("quantity")  # checked by edged.profiles
    q = QUANTITIES[quantity]
    table: Table = o.choice("table", TABLES, "holding")
    dtype: DataType = o.choice("type", codec.TYPES)
    register = o.int("register", min=0, max=0xFFFF)
    if register + codec.width(dtype) > 0x10000:
        raise o.error("register", f"a {dtype} at {register} runs past register 65535")
    if codec.width(dtype) > max_registers:
        raise o.error("type", f"a {dtype} does not fit in max_registers={max_registers}")
    scale = o.float("scale", 1.0)
    if scale == 0:
        raise o.error("scale", "must not be 0")
    offset = o.float("offset", 0.0)
    unit = o.str("unit", q.unit)
    factor = units.factor(unit, q.unit)
    if factor is None:
        known = ", ".join(repr(u) for u in units.accepted(q.unit))
        raise o.error(
            "unit", f"cannot convert {unit!r} into {q.unit!r} for {quantity} (accepted: {known})"
        )
    pt = Point(
        quantity=quantity,
        table=table,
        register=register,
        type=dtype,
        word_order=o.choice("word_order", codec.ORDERS, word_order),
        byte_order=o.choice("byte_order", codec.ORDERS, byte_order),
        scale=scale,
        offset=offset,
        unit=unit,
        factor=factor,
    )
    o.finish()
    return pt
